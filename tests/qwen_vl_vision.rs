//! Qwen2.5-VL's vision tower against Hugging Face's on a tiny random checkpoint
//! (`tests/fixtures/qwen_vl/make_vision_fixtures.py`): two images at once, a windowed and a
//! full-attention block, the merger; Qwen3-VL's tower with its DeepStack taps; and every weight
//! of both receives a gradient.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use curric::model::qwen25_vision::{Config, VisionTower};

fn config() -> Config {
    Config {
        depth: 2,
        hidden_size: 32,
        num_heads: 2,
        intermediate_size: 48,
        out_hidden_size: 24,
        patch_size: 14,
        spatial_merge_size: 2,
        temporal_patch_size: 2,
        window_size: 112,
        fullatt_block_indexes: vec![1],
        rms_norm_eps: 1e-6,
    }
}

/// Sets every variable the tower created to the checkpoint tensor of its name.
fn load_weights(varmap: &candle_nn::VarMap, t: &std::collections::HashMap<String, Tensor>) {
    for (name, var) in varmap.data().lock().unwrap().iter() {
        var.set(&t[name]).unwrap();
    }
}

/// Every variable received a finite, non-zero gradient.
fn assert_every_var_has_a_gradient(
    vars: &std::collections::HashMap<String, candle_core::Var>,
    grads: &candle_core::backprop::GradStore,
) {
    for (name, var) in vars.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
}

fn load() -> (std::collections::HashMap<String, Tensor>, Vec<[usize; 3]>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qwen_vl/vision.safetensors"
    );
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let g = t["input.grid_thw"].to_vec2::<i64>().unwrap();
    let grids = g
        .iter()
        .map(|r| [r[0] as usize, r[1] as usize, r[2] as usize])
        .collect();
    (t, grids)
}

#[test]
fn embeddings_match_hugging_face() {
    let (t, grids) = load();
    let vb = VarBuilder::from_tensors(t.clone(), DType::F32, &Device::Cpu);
    let tower = VisionTower::new(&config(), vb).unwrap();
    let got = tower.forward(&t["input.pixel_values"], &grids).unwrap();
    let (diff, scale) = max_diff(&got, &t["output.embeds"]);
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "max |Δ| {diff} (max |y| {scale})"
    );
}

#[test]
fn every_weight_gets_a_gradient() {
    let (t, grids) = load();
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let tower = VisionTower::new(&config(), vb).unwrap();
    load_weights(&varmap, &t);
    let y = tower.forward(&t["input.pixel_values"], &grids).unwrap();
    let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    assert_eq!(
        vars.len(),
        30,
        "patch embedding, 2 × 12 block tensors, 5 merger tensors"
    );
    assert_every_var_has_a_gradient(&vars, &grads);
}

fn max_diff(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims());
    let d = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let s = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (d, s)
}

fn qwen3() -> (
    curric::model::qwen3_vision::Config,
    std::collections::HashMap<String, Tensor>,
    Vec<[usize; 3]>,
) {
    let cfg = curric::model::qwen3_vision::Config {
        flavour: curric::model::qwen3_vision::Flavour::Qwen3Vl,
        depth: 3,
        hidden_size: 32,
        num_heads: 2,
        intermediate_size: 48,
        out_hidden_size: 24,
        patch_size: 16,
        spatial_merge_size: 2,
        temporal_patch_size: 2,
        num_position_embeddings: 16,
        deepstack_visual_indexes: vec![0, 1],
    };
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qwen_vl/vision3.safetensors"
    );
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let grids = t["input.grid_thw"]
        .to_vec2::<i64>()
        .unwrap()
        .iter()
        .map(|r| [r[0] as usize, r[1] as usize, r[2] as usize])
        .collect();
    (cfg, t, grids)
}

/// Qwen3-VL: interpolated learned positions, LayerNorm/GELU blocks, the merger and both
/// DeepStack taps.
#[test]
fn qwen3_embeddings_and_deepstack_features_match_hugging_face() {
    let (cfg, t, grids) = qwen3();
    let vb = VarBuilder::from_tensors(t.clone(), DType::F32, &Device::Cpu);
    let tower = curric::model::qwen3_vision::VisionTower::new(&cfg, vb).unwrap();
    let out = tower.forward(&t["input.pixel_values"], &grids).unwrap();
    let mut pairs = vec![("embeds", out.embeds.clone(), t["output.embeds"].clone())];
    for (i, d) in out.deepstack.iter().enumerate() {
        pairs.push((
            "deepstack",
            d.clone(),
            t[&format!("output.deepstack.{i}")].clone(),
        ));
    }
    assert_eq!(pairs.len(), 3);
    for (name, got, want) in pairs {
        let (d, s) = max_diff(&got, &want);
        assert!(d <= 1e-4 * s.max(1.0), "{name}: max |Δ| {d} (max |y| {s})");
    }
}

#[test]
fn every_qwen3_weight_gets_a_gradient() {
    let (cfg, t, grids) = qwen3();
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let tower = curric::model::qwen3_vision::VisionTower::new(&cfg, vb).unwrap();
    load_weights(&varmap, &t);
    let out = tower.forward(&t["input.pixel_values"], &grids).unwrap();
    let mut loss = out.embeds.sqr().unwrap().sum_all().unwrap();
    for d in &out.deepstack {
        loss = (loss + d.sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    let expected = t
        .keys()
        .filter(|k| !k.starts_with("input.") && !k.starts_with("output."))
        .count();
    assert_eq!(
        vars.len(),
        expected,
        "every checkpoint tensor is a weight of the tower"
    );
    assert_every_var_has_a_gradient(&vars, &grads);
}
