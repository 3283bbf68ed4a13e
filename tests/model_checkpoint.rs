//! Checkpoints: round trips, loud failures, HF-style Qwen2 directories (sharded, bf16), the
//! local HF cache, and agreement with candle-transformers' `qwen2` on the same weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use curric::model::{checkpoint, tokenizer, ModelError, Policy, PolicyInput, VlmConfig};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn inputs() -> Vec<PolicyInput> {
    let img = std::sync::Arc::new(image::RgbImage::from_fn(48, 48, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 5) as u8, 100])
    }));
    vec![
        PolicyInput {
            image: Some(img),
            prompt: "<image> Which shape is in the top row?".into(),
        },
        PolicyInput {
            image: None,
            prompt: "What is 12 + 30?".into(),
        },
    ]
}

fn logits(p: &Policy) -> Tensor {
    let c = vec![p.encode("\\boxed{42}").unwrap(); 2];
    p.completion_logits(&inputs(), &c).unwrap().0
}

fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn save_load_round_trip_gives_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::tiny("nano", 5, &Device::Cpu).unwrap();
    p.save(dir.path()).unwrap();
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let q = Policy::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(q.config(), p.config());
    assert_eq!(q.num_params(), p.num_params());
    assert_eq!(max_abs_diff(&logits(&p), &logits(&q)), 0.0);
}

fn expect_err(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> ModelError {
    let mut t = tensors(dir);
    edit(&mut t);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    Policy::load(dir, &Device::Cpu).unwrap_err()
}

#[test]
fn loading_fails_loudly_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = Policy::tiny("nano", 5, &Device::Cpu).unwrap();
    p.save(dir.path()).unwrap();
    let original = tensors(dir.path());

    let name = "model.layers.1.mlp.up_proj.weight";
    let e = expect_err(dir.path(), |t| {
        t.remove(name);
    });
    assert!(
        matches!(&e, ModelError::MissingTensor { name: n, .. } if n == name),
        "{e}"
    );
    assert!(e.to_string().contains(name));

    candle_core::safetensors::save(&original, dir.path().join("model.safetensors")).unwrap();
    let name = "visual.pos_embed";
    let e = expect_err(dir.path(), |t| {
        t.insert(
            name.into(),
            Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert!(
        matches!(&e, ModelError::ShapeMismatch { name: n, found, .. } if n == name && found == &[4, 64]),
        "{e}"
    );

    candle_core::safetensors::save(&original, dir.path().join("model.safetensors")).unwrap();
    let e = expect_err(dir.path(), |t| {
        t.insert(
            "model.layers.9.mlp.up_proj.weight".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert!(
        e.to_string().contains("model.layers.9.mlp.up_proj.weight"),
        "{e}"
    );

    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = Policy::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(
        e.to_string().contains("model.safetensors.index.json"),
        "{e}"
    );
}

/// A text-only HF Qwen2 config, as transformers writes it (untied head, GQA 4:2).
const QWEN2_CONFIG: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "model_type": "qwen2",
  "hidden_act": "silu",
  "hidden_size": 32,
  "intermediate_size": 64,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "max_position_embeddings": 128,
  "max_window_layers": 2,
  "rms_norm_eps": 1e-6,
  "rope_theta": 1000000.0,
  "sliding_window": 128,
  "use_sliding_window": false,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "vocab_size": VOCAB,
  "eos_token_id": 2
}"#;

/// Writes a tiny random HF-style Qwen2 checkpoint: bf16 weights in two shards plus an index.
fn write_hf_checkpoint(dir: &Path) {
    let tok = tokenizer::build(&[]);
    let text = QWEN2_CONFIG.replace("VOCAB", &tok.get_vocab_size(true).to_string());
    let cfg = VlmConfig::from_json(&text).unwrap();
    assert!(cfg.vision.is_none());
    let src = Policy::random(cfg, tok.clone(), 11, &Device::Cpu).unwrap();
    // Larger-than-init weights so the comparison exercises real activations.
    let mut shards: [HashMap<String, Tensor>; 2] = [HashMap::new(), HashMap::new()];
    let mut weight_map = serde_json::Map::new();
    for (i, (name, var)) in src.named_vars().into_iter().enumerate() {
        let t = (var.as_tensor() * 10.0).unwrap();
        let t = if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
            var.as_tensor().clone()
        } else {
            t
        };
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        weight_map.insert(name.clone(), file.into());
        shards[i % 2].insert(name, t.to_dtype(DType::BF16).unwrap());
    }
    for (i, s) in shards.iter().enumerate() {
        let f = dir.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        candle_core::safetensors::save(s, f).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), text).unwrap();
    tok.save(dir.join("tokenizer.json"), false).unwrap();
}

#[test]
fn hf_qwen2_checkpoint_loads_and_matches_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    write_hf_checkpoint(dir.path());
    let p = Policy::load(dir.path(), &Device::Cpu).unwrap();
    assert!(p.vlm().unwrap().visual.is_none());
    assert_eq!(p.eos_token(), 2);

    // Same weights (bf16 → f32) in candle-transformers' qwen2.
    let (_, _, weights) = checkpoint::read_dir(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let ct_cfg: candle_transformers::models::qwen2::Config = serde_json::from_str(&text).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let mut reference = candle_transformers::models::qwen2::Model::new(&ct_cfg, vb).unwrap();

    let ids = p
        .encode("What is 3 + 4? <think> 3 + 4 = 7 </think> \\boxed{7}")
        .unwrap();
    let n = ids.len();
    let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
    let ours = p.decoder().forward_ids(&ids).unwrap();
    let hidden = reference.forward(&ids, 0, None).unwrap();
    let theirs = hidden
        .broadcast_matmul(&weights["lm_head.weight"].t().unwrap())
        .unwrap();
    let scale = theirs
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(scale > 0.1, "degenerate logits");
    let d = max_abs_diff(&ours, &theirs);
    assert!(d <= 1e-4, "max abs diff vs candle-transformers qwen2: {d}");

    // A text policy scores text prompts.
    let lp = p
        .token_logprobs(&inputs()[1..], &[p.encode("\\boxed{42}").unwrap()])
        .unwrap();
    assert_eq!(lp.logp.dims(), &[1, 5]);
}

#[test]
fn model_ids_resolve_in_the_local_hf_cache_only() {
    let cache_dir = tempfile::tempdir().unwrap();
    let repo = cache_dir.path().join("models--curric--tiny-qwen2");
    let snap = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    write_hf_checkpoint(&snap);
    let cache = hf_hub::Cache::new(cache_dir.path().to_path_buf());
    let dir = checkpoint::resolve("curric/tiny-qwen2", &cache).unwrap();
    assert_eq!(dir, snap);
    Policy::load(&dir, &Device::Cpu).unwrap();
    let e = checkpoint::resolve("curric/absent", &cache).unwrap_err();
    assert!(matches!(e, ModelError::NotFound(_)), "{e}");
}

#[test]
fn preset_sizes() {
    let mut last = 0;
    for (name, lo, hi) in [
        ("nano", 300_000, 700_000),
        ("micro", 1_500_000, 2_500_000),
        ("small", 5_000_000, 7_000_000),
        ("base", 17_000_000, 23_000_000),
    ] {
        let p = Policy::tiny(name, 0, &Device::Cpu).unwrap();
        let n = p.num_params();
        println!("{name}: {n} parameters");
        assert!(n > last && (lo..hi).contains(&n), "{name}: {n}");
        last = n;
    }
    assert!(matches!(
        Policy::tiny("huge", 0, &Device::Cpu),
        Err(ModelError::UnknownPreset(_))
    ));
}

/// `curric bench --model` on a text-only checkpoint: its prompts carry no image (a plain
/// Qwen2 decoder rejects one), and it prints one row for the directory.
#[test]
fn bench_measures_a_text_only_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("qwen2-text");
    std::fs::create_dir(&ckpt).unwrap();
    write_hf_checkpoint(&ckpt);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_curric"))
        .args(["bench", "--quick", "--prompts", "2", "--group", "2"])
        .args(["--new-tokens", "4", "--model"])
        .arg(&ckpt)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("qwen2-text"))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(
        !stdout.contains("nano"),
        "presets are not measured with --model: {stdout}"
    );
}
