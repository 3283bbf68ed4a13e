//! Whole Qwen-VL models against Hugging Face on tiny random checkpoints written by
//! `tests/fixtures/qwen_vl/make_qwen_vl.py`: prompt ids through the checkpoint's chat template,
//! M-RoPE position ids, pixel patches, every layer's hidden states, logits, the masked loss and
//! the gradient of every parameter, greedy generation with a KV cache; and loading both tensor
//! layouts.

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen_vl")
}

/// The fixtures' tokenizer starts from the built-in one, so the tiny checkpoints read the
/// built-in suite's words; the script reads this file.
#[test]
fn fixture_tokenizer_is_the_builtin_one() {
    let tok = curric::model::tokenizer::build(&curric::data::suite::vocabulary());
    let text = tok.to_string(true).unwrap();
    let path = fixtures().join("builtin_tokenizer.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use curric::model::mrope::rope_index;
use curric::model::qwen_vl_image::ImageProcessorConfig;
use curric::model::{Policy, PolicyInput, SamplingParams};

#[path = "support/shared_prompt.rs"]
mod shared_prompt;

const FAMILIES: [&str; 3] = ["qwen2_5_vl", "qwen3_vl", "qwen2_vl"];

struct Reference {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
    input: PolicyInput,
}

impl Reference {
    fn ids(&self, key: &str) -> Vec<u32> {
        self.meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    fn grids(&self) -> Vec<[usize; 3]> {
        self.tensors["input.grid_thw"]
            .to_vec2::<i64>()
            .unwrap()
            .iter()
            .map(|r| [r[0] as usize, r[1] as usize, r[2] as usize])
            .collect()
    }
}

fn checkpoint(family: &str) -> PathBuf {
    fixtures().join(format!("tiny_{family}"))
}

fn reference(family: &str) -> Reference {
    let dir = fixtures();
    let tensors = candle_core::safetensors::load(
        dir.join(format!("{family}.reference.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{family}.reference.json"))).unwrap(),
    )
    .unwrap();
    let img = image::open(dir.join(format!("{family}_image.png")))
        .unwrap()
        .to_rgb8();
    let question = meta["messages"][0]["content"][1]["text"].as_str().unwrap();
    let input = PolicyInput {
        image: Some(Arc::new(img)),
        prompt: format!("<image>{question}"),
    };
    Reference {
        tensors,
        meta,
        input,
    }
}

fn load(family: &str) -> Policy {
    Policy::load(&checkpoint(family), &Device::Cpu).unwrap()
}

/// Largest absolute difference, and the largest magnitude of `want`.
fn max_diff(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims());
    let scalar = |t: Tensor| t.max_all().unwrap().to_scalar::<f32>().unwrap();
    (
        scalar((got - want).unwrap().abs().unwrap()),
        scalar(want.abs().unwrap()),
    )
}

#[test]
fn chat_template_and_image_tokens_give_hugging_faces_ids() {
    for family in FAMILIES {
        let r = reference(family);
        let p = load(family);
        assert_eq!(
            p.chat_prompt(&r.input).unwrap(),
            r.meta["prompt_text"].as_str().unwrap(),
            "{family}"
        );
        assert_eq!(
            p.prompt_ids(&r.input).unwrap(),
            r.ids("prompt_ids"),
            "{family}"
        );
        let answer = r.meta["answer"].as_str().unwrap();
        let mut ids = p.encode(answer).unwrap();
        ids.push(p.eos_token());
        assert_eq!(ids, r.ids("answer_ids"), "{family}");
    }
}

#[test]
fn position_ids_and_patches_are_exact() {
    for family in FAMILIES {
        let r = reference(family);
        let dir = checkpoint(family);
        let pre = std::fs::read_to_string(dir.join("preprocessor_config.json")).unwrap();
        let proc = ImageProcessorConfig::from_json(&pre).unwrap();
        let patches = proc.preprocess(r.input.image.as_ref().unwrap()).unwrap();
        assert_eq!([patches.grid_thw], r.grids()[..], "{family}");
        let want: Vec<f32> = r.tensors["input.pixel_values"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(patches.values, want, "{family}: pixel patches");

        let full: Vec<u32> = [r.ids("prompt_ids"), r.ids("answer_ids")].concat();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let image_token = cfg["image_token_id"].as_u64().unwrap() as u32;
        let got = rope_index(&full, image_token, &r.grids(), 2).unwrap();
        let want = r.tensors["input.position_ids"].to_vec2::<i64>().unwrap();
        for (axis, (g, w)) in got.positions.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{family}: axis {axis}");
        }
    }
}

#[test]
fn image_features_hidden_states_and_logits_match_hugging_face() {
    for family in FAMILIES {
        let r = reference(family);
        let p = load(family);
        let pre =
            std::fs::read_to_string(checkpoint(family).join("preprocessor_config.json")).unwrap();
        let proc = ImageProcessorConfig::from_json(&pre).unwrap();
        let patches = proc.preprocess(r.input.image.as_ref().unwrap()).unwrap();
        let pixels = Tensor::from_vec(
            patches.values.clone(),
            (patches.rows(), patches.row_len),
            &Device::Cpu,
        )
        .unwrap();
        let f = p
            .qwen_vl()
            .unwrap()
            .encode_images(&pixels, &[patches.grid_thw])
            .unwrap();
        let (d, s) = max_diff(&f.embeds, &r.tensors["output.image_embeds"]);
        assert!(
            d <= 1e-5 * s.max(1.0),
            "{family}: image embeds |Δ| {d} (max {s})"
        );
        let taps = r
            .tensors
            .keys()
            .filter(|k| k.starts_with("output.deepstack."))
            .count();
        assert_eq!(f.deepstack.len(), taps, "{family}");
        for (i, ds) in f.deepstack.iter().enumerate() {
            let (d, s) = max_diff(ds, &r.tensors[&format!("output.deepstack.{i}")]);
            assert!(
                d <= 1e-5 * s.max(1.0),
                "{family}: deepstack {i} |Δ| {d} (max {s})"
            );
        }

        let (layers, logits, width) = p
            .trace(std::slice::from_ref(&r.input), &[r.ids("answer_ids")])
            .unwrap();
        assert_eq!(width, r.ids("prompt_ids").len());
        for (i, h) in layers.iter().enumerate() {
            let (d, s) = max_diff(
                &h.squeeze(0).unwrap(),
                &r.tensors[&format!("output.layer.{i}")],
            );
            assert!(
                d <= 1e-4 * s.max(1.0),
                "{family}: layer {i} |Δ| {d} (max {s})"
            );
        }
        let (d, s) = max_diff(&logits.squeeze(0).unwrap(), &r.tensors["output.logits"]);
        assert!(d <= 1e-4 * s.max(1.0), "{family}: logits |Δ| {d} (max {s})");
        eprintln!("{family}: logits max |Δ| {d:.2e} of max |logit| {s:.1}");
    }
}

/// The loss over the answer tokens, as Hugging Face's causal-LM loss computes it, and the
/// gradient of every parameter.
#[test]
fn loss_and_every_gradient_match_hugging_face() {
    for family in FAMILIES {
        let r = reference(family);
        let p = load(family);
        let lp = p
            .token_logprobs(std::slice::from_ref(&r.input), &[r.ids("answer_ids")])
            .unwrap();
        let n = lp.mask.sum_all().unwrap().to_scalar::<f32>().unwrap();
        let loss = (lp.logp.sum_all().unwrap().neg().unwrap() / n as f64).unwrap();
        let want = r.meta["loss"].as_f64().unwrap() as f32;
        let got = loss.to_scalar::<f32>().unwrap();
        assert!(
            ((got - want) / want).abs() <= 1e-4,
            "{family}: loss {got} vs {want}"
        );
        let grads = loss.backward().unwrap();
        let vars = p.named_trainable_vars();
        assert_eq!(vars.len(), p.named_vars().len());
        let mut worst = (0f32, String::new());
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{family}: {name} has no gradient"));
            let want = r
                .tensors
                .get(&format!("grad.{name}"))
                .unwrap_or_else(|| panic!("{family}: no reference gradient for {name}"));
            let (d, s) = max_diff(g, want);
            assert!(s > 0.0, "{family}: {name}: zero reference gradient");
            assert!(
                d <= 1e-4 * s,
                "{family}: {name}: gradient |Δ| {d} (max {s})"
            );
            if d / s > worst.0 {
                worst = (d / s, name.clone());
            }
        }
        let params = r.tensors.keys().filter(|k| k.starts_with("grad.")).count();
        assert_eq!(vars.len(), params, "{family}: parameter count");
        eprintln!(
            "{family}: worst relative gradient |Δ| {:.2e} ({})",
            worst.0, worst.1
        );
    }
}

#[test]
fn greedy_generation_with_the_kv_cache_matches_hugging_face() {
    for family in FAMILIES {
        let r = reference(family);
        let p = load(family);
        let params = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: 16,
        };
        let want = r.ids("generated");
        // Alone, and in a batch with a longer text-only prompt (padding, rows leaving the
        // batch): a row's tokens do not depend on its neighbours.
        let other = PolicyInput {
            image: None,
            prompt: "What is 3 plus 4 ? Think step by step and put the answer in \\boxed{}.".into(),
        };
        let out = p
            .sample(std::slice::from_ref(&r.input), &params, &[0], true)
            .unwrap();
        assert_eq!(out[0].tokens, want, "{family}: alone");
        let batch = [r.input.clone(), other.clone(), r.input.clone()];
        let out = p.sample(&batch, &params, &[1, 2, 3], true).unwrap();
        assert_eq!(out[0].tokens, want, "{family}: in a batch");
        assert_eq!(out[2].tokens, want, "{family}: in a batch");
        let uncached = p.sample(&batch, &params, &[1, 2, 3], false).unwrap();
        assert_eq!(uncached, out, "{family}: with and without the cache");
        let alone = p.sample(&[other], &params, &[0], true).unwrap();
        assert_eq!(alone[0].tokens, out[1].tokens, "{family}: text-only row");
    }
}

/// The checkpoint's files with its tensors replaced by `tensors` (one file, or `shards`
/// files with an index), in a new directory.
fn copy_with(
    family: &str,
    tensors: &HashMap<String, Tensor>,
    shards: usize,
    config: Option<serde_json::Value>,
) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(checkpoint(family)).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            continue;
        }
        std::fs::copy(&path, out.path().join(path.file_name().unwrap())).unwrap();
    }
    if let Some(c) = config {
        std::fs::write(out.path().join("config.json"), c.to_string()).unwrap();
    }
    if shards <= 1 {
        candle_core::safetensors::save(tensors, out.path().join("model.safetensors")).unwrap();
        return out;
    }
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (s, chunk) in names.chunks(names.len().div_ceil(shards)).enumerate() {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
        let part: HashMap<String, Tensor> = chunk
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&part, out.path().join(&file)).unwrap();
        for n in chunk {
            map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        out.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    out
}

fn file_tensors(family: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(checkpoint(family).join("model.safetensors"), &Device::Cpu)
        .unwrap()
}

fn answer_logits(p: &Policy, r: &Reference) -> Tensor {
    p.completion_logits(std::slice::from_ref(&r.input), &[r.ids("answer_ids")])
        .unwrap()
        .0
}

/// Qwen2(.5)-VL's fixtures are saved flat (`visual.*`, `model.layers.*`), Qwen3-VL's nested
/// (`model.visual.*`, `model.language_model.*`); each loads from the other layout too, and
/// from bf16 shards.
#[test]
fn both_tensor_layouts_and_bf16_shards_load() {
    use curric::model::qwen_vl::Layout;
    for family in FAMILIES {
        let r = reference(family);
        let want = answer_logits(&load(family), &r);
        let t = file_tensors(family);
        let layout = Layout::of(t.keys());
        assert_eq!(
            layout,
            if family != "qwen3_vl" {
                Layout::Flat
            } else {
                Layout::Nested
            }
        );
        let other = match layout {
            Layout::Flat => Layout::Nested,
            Layout::Nested => Layout::Flat,
        };
        let renamed: HashMap<String, Tensor> = t
            .iter()
            .map(|(k, v)| (other.from_model(&layout.to_model(k)), v.clone()))
            .collect();
        assert!(renamed
            .keys()
            .all(|k| !t.contains_key(k) || k == "lm_head.weight"));
        let dir = copy_with(family, &renamed, 1, None);
        let p = Policy::load(dir.path(), &Device::Cpu).unwrap();
        let (d, _) = max_diff(&answer_logits(&p, &r), &want);
        assert_eq!(d, 0.0, "{family}: the other layout");

        let bf16: HashMap<String, Tensor> = t
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dtype(candle_core::DType::BF16).unwrap()))
            .collect();
        let dir = copy_with(family, &bf16, 3, None);
        let p = Policy::load(dir.path(), &Device::Cpu).unwrap();
        let (d, s) = max_diff(&answer_logits(&p, &r), &want);
        // bf16 keeps 8 bits of mantissa: weights move by up to 0.4 %.
        assert!(d <= 0.05 * s, "{family}: bf16 shards |Δ| {d} (max {s})");
        eprintln!("{family}: bf16 weights move the logits by {d:.2e} of {s:.1}");
    }
}

/// Released Qwen2.5-VL files keep the decoder's fields at the top level with
/// `rope_scaling.type = "mrope"`; newer files nest them and may name the rotary settings
/// `rope_parameters`. All read the same.
#[test]
fn both_config_layouts_read_the_same() {
    let r = reference("qwen2_5_vl");
    let want = answer_logits(&load("qwen2_5_vl"), &r);
    let text = std::fs::read_to_string(checkpoint("qwen2_5_vl").join("config.json")).unwrap();
    let nested: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut flat = nested.clone();
    let obj = flat.as_object_mut().unwrap();
    let tc = obj.remove("text_config").unwrap();
    for (k, v) in tc.as_object().unwrap() {
        obj.entry(k.clone()).or_insert(v.clone());
    }
    obj.insert(
        "rope_scaling".into(),
        serde_json::json!({"type": "mrope", "mrope_section": [2, 3, 3]}),
    );
    obj.insert(
        "architectures".into(),
        serde_json::json!(["Qwen2_5_VLForConditionalGeneration"]),
    );
    obj.remove("model_type");
    let dir = copy_with("qwen2_5_vl", &file_tensors("qwen2_5_vl"), 1, Some(flat));
    let p = Policy::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&answer_logits(&p, &r), &want).0,
        0.0,
        "flat config"
    );

    let r = reference("qwen3_vl");
    let want = answer_logits(&load("qwen3_vl"), &r);
    let text = std::fs::read_to_string(checkpoint("qwen3_vl").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tc = v["text_config"].as_object_mut().unwrap();
    let mut rope = tc.remove("rope_scaling").unwrap();
    rope["rope_theta"] = tc.remove("rope_theta").unwrap();
    tc.insert("rope_parameters".into(), rope);
    let dir = copy_with("qwen3_vl", &file_tensors("qwen3_vl"), 1, Some(v));
    let p = Policy::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&answer_logits(&p, &r), &want).0,
        0.0,
        "rope_parameters"
    );
}

/// A missing, extra or mis-shaped tensor is an error naming it as the file names it.
#[test]
fn bad_tensors_are_named() {
    let t = file_tensors("qwen2_5_vl");
    let name = "visual.merger.mlp.0.weight";
    let mut missing = t.clone();
    missing.remove(name);
    let dir = copy_with("qwen2_5_vl", &missing, 1, None);
    let err = Policy::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensor `visual.merger.mlp.0.weight`"),
        "{err}"
    );

    let mut shaped = t.clone();
    shaped.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = copy_with("qwen2_5_vl", &shaped, 1, None);
    let err = Policy::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`model.layers.1.mlp.up_proj.weight` has shape [3, 4]"),
        "{err}"
    );

    let mut extra = t;
    extra.insert(
        "visual.blocks.7.norm1.weight".into(),
        Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = copy_with("qwen2_5_vl", &extra, 1, None);
    let err = Policy::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unexpected tensor `visual.blocks.7.norm1.weight`"),
        "{err}"
    );
}

/// A saved policy is the checkpoint again: its files, its tensor names, its weights.
#[test]
fn save_writes_the_checkpoint_back() {
    for family in FAMILIES {
        let r = reference(family);
        let p = load(family);
        let dir = tempfile::tempdir().unwrap();
        p.save(dir.path()).unwrap();
        for f in [
            "config.json",
            "tokenizer.json",
            "preprocessor_config.json",
            "chat_template.jinja",
        ] {
            assert_eq!(
                std::fs::read(dir.path().join(f)).unwrap(),
                std::fs::read(checkpoint(family).join(f)).unwrap(),
                "{family}: {f}"
            );
        }
        let saved =
            candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let mut a: Vec<_> = saved.keys().collect();
        let orig = file_tensors(family);
        let mut b: Vec<_> = orig.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{family}: tensor names");
        let q = Policy::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(
            max_diff(&answer_logits(&q, &r), &answer_logits(&p, &r)).0,
            0.0
        );
    }
}

/// `freeze = ["visual"]` and `["visual.merger"]` name the tower as checkpoints do.
#[test]
fn freezing_by_the_checkpoints_names() {
    for family in FAMILIES {
        let mut p = load(family);
        let all = p.named_vars().len();
        let tower = p
            .named_vars()
            .iter()
            .filter(|(n, _)| n.starts_with("model.visual."))
            .count();
        let merger = p
            .named_vars()
            .iter()
            .filter(|(n, _)| n.starts_with("model.visual.merger."))
            .count();
        assert!(tower > merger && merger > 0);
        for (prefix, frozen) in [
            ("visual", tower),
            ("model.visual", tower),
            ("visual.merger", merger),
            (
                "language_model",
                all - tower - usize::from(family == "qwen3_vl"),
            ),
        ] {
            p.set_frozen(&[prefix.to_string()]).unwrap();
            assert_eq!(
                p.named_trainable_vars().len(),
                all - frozen,
                "{family}: {prefix}"
            );
        }
        // A frozen tower runs over detached weights: no gradient reaches it, the rest trains.
        let r = reference(family);
        p.set_frozen(&["visual".to_string()]).unwrap();
        let lp = p
            .token_logprobs(std::slice::from_ref(&r.input), &[r.ids("answer_ids")])
            .unwrap();
        let grads = lp.logp.sum_all().unwrap().backward().unwrap();
        for (name, var) in p.named_vars() {
            let has = grads.get(var.as_tensor()).is_some();
            assert_eq!(has, !name.starts_with("model.visual."), "{family}: {name}");
        }
        // The GRPO reference runs over detached weights throughout.
        let reference = p.frozen_copy().unwrap();
        let lp = reference
            .token_logprobs(std::slice::from_ref(&r.input), &[r.ids("answer_ids")])
            .unwrap();
        assert!(!lp.logp.track_op());
        let logits = reference
            .completion_logits(std::slice::from_ref(&r.input), &[r.ids("answer_ids")])
            .unwrap()
            .0;
        assert!(!logits.track_op(), "{family}: the reference built a graph");
    }
}

/// Text alone puts every M-RoPE axis at the same position, which is 1-D RoPE: the decoder's
/// weights under a plain rotary embedding give the same logits.
#[test]
fn a_text_only_prompt_is_one_dimensional_rope() {
    for family in FAMILIES {
        let p = load(family);
        let input = PolicyInput {
            image: None,
            prompt: "What is 3 plus 4 ?".into(),
        };
        let (_, logits, _) = p.trace(std::slice::from_ref(&input), &[vec![]]).unwrap();
        let ids = p.prompt_ids(&input).unwrap();
        let mut cfg = p.config().decoder.clone();
        cfg.mrope = None;
        let tensors: HashMap<String, Tensor> = p
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        let vb =
            candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu);
        let plain = curric::model::qwen2::Decoder::new_at(
            &cfg,
            vb.pp("model").pp("language_model"),
            vb.clone(),
        )
        .unwrap();
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
        let (d, s) = max_diff(&plain.forward_ids(&ids).unwrap(), &logits);
        assert!(d <= 1e-5 * s.max(1.0), "{family}: |Δ| {d}");
    }
}

/// `curric plan` counts parameters from the config alone; on the fixtures every group it
/// counts is exactly the checkpoint's tensors under that name.
#[test]
fn parameter_groups_from_the_config_match_the_checkpoint() {
    use curric::spec::ModelSpec;
    for family in FAMILIES {
        let p = load(family);
        let spec = ModelSpec::Local {
            path: checkpoint(family).display().to_string(),
        };
        let shape = curric::exec::memory::shape_of(&spec).unwrap();
        let vars = p.named_vars();
        let under = |prefix: &str| -> u64 {
            vars.iter()
                .filter(|(n, _)| n.starts_with(&format!("{prefix}.")) || n == prefix)
                .map(|(_, v)| v.elem_count() as u64)
                .sum()
        };
        for (prefix, n) in &shape.groups {
            assert_eq!(*n, under(prefix), "{family}: {prefix}");
        }
        assert_eq!(shape.params(&[]), (p.num_params() as u64, 0), "{family}");
        let (trainable, frozen) = shape.params(&["visual".to_string()]);
        assert_eq!(frozen, under("model.visual"), "{family}");
        assert_eq!(trainable + frozen, p.num_params() as u64);
        // A 448² image within the fixtures' budget of 64 merged tokens.
        assert_eq!(shape.image_tokens, 64, "{family}");
    }
}

/// `dtype = bf16`: weights and activations in bf16, norms, softmax and rotary embeddings in
/// f32, matmuls rounded to bf16 (on the CPU, taken in f32 first). The loss stays within bf16's
/// precision of Hugging Face's f32 loss, every gradient points the same way, and greedy
/// decoding runs.
#[test]
fn bf16_stays_close_to_f32() {
    use candle_core::DType;
    for family in FAMILIES {
        let r = reference(family);
        let p = load(family).with_dtype(DType::BF16).unwrap();
        assert!(p.named_vars().iter().all(|(_, v)| v.dtype() == DType::BF16));
        let lp = p
            .token_logprobs(std::slice::from_ref(&r.input), &[r.ids("answer_ids")])
            .unwrap();
        assert_eq!(lp.logp.dtype(), DType::F32);
        let n = lp.mask.sum_all().unwrap().to_scalar::<f32>().unwrap();
        let loss = (lp.logp.sum_all().unwrap().neg().unwrap() / n as f64).unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        let want = r.meta["loss"].as_f64().unwrap() as f32;
        let rel = ((got - want) / want).abs();
        let grads = loss.backward().unwrap();
        let (mut dot, mut gg, mut ww) = (0f64, 0f64, 0f64);
        for (name, var) in p.named_vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{family}: {name} has no gradient"))
                .to_dtype(DType::F32)
                .unwrap();
            let w = &r.tensors[&format!("grad.{name}")];
            let sum = |t: Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
            dot += sum((&g * w).unwrap());
            gg += sum(g.sqr().unwrap());
            ww += sum(w.sqr().unwrap());
        }
        let cosine = dot / (gg.sqrt() * ww.sqrt());
        eprintln!(
            "{family}: bf16 loss {got} vs f32 {want} ({rel:.1e}), gradient cosine {cosine:.5}"
        );
        assert!(rel <= 2e-2, "{family}: bf16 loss {got} vs {want}");
        assert!(cosine >= 0.99, "{family}: gradient cosine {cosine}");
        let params = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            max_new_tokens: 8,
        };
        let out = p
            .sample(std::slice::from_ref(&r.input), &params, &[0], true)
            .unwrap();
        assert_eq!(out[0].tokens.len(), 8, "{family}");
    }
}

/// A group's prompt computed once, as GRPO's update does: the images' tokens, M-RoPE
/// positions (the completions continue from each prompt's last) and Qwen3-VL's DeepStack
/// features give the logits and gradients of whole rows.
#[test]
fn shared_prompts_give_the_logits_and_gradients_of_whole_rows() {
    let picture = |w: u32, h: u32, k: u8| {
        Arc::new(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x as u8).wrapping_mul(3 + k),
                (y as u8).wrapping_mul(5),
                40 * k,
            ])
        }))
    };
    let base = [
        PolicyInput {
            image: Some(picture(56, 56, 1)),
            prompt: "<image> What is 1 + 2?".into(),
        },
        PolicyInput {
            image: None,
            prompt: "What is 3 + 4?".into(),
        },
        PolicyInput {
            image: Some(picture(84, 56, 2)),
            prompt: "<image> How many red circles are there?".into(),
        },
    ];
    for family in ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"] {
        let p = load(family);
        let order = [2, 0, 1, 0, 2, 1, 2];
        let inputs: Vec<PolicyInput> = order.iter().map(|&k| base[k].clone()).collect();
        let texts = [
            "\\boxed{3}",
            "<think> 3 + 4 = 7 </think> \\boxed{7}",
            "\\boxed{2}",
        ];
        let comps: Vec<Vec<u32>> = order
            .iter()
            .enumerate()
            .map(|(r, &k)| {
                let mut ids = p.encode(texts[k]).unwrap();
                if r % 2 == 0 {
                    ids.push(p.eos_token());
                }
                ids
            })
            .collect();
        shared_prompt::assert_matches_whole_rows(&p, &inputs, &comps);
    }
}
