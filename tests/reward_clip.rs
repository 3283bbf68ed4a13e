//! `clip_score` on a tiny random CLIP checkpoint written by the test (config.json,
//! model.safetensors, tokenizer.json), and method A's threshold rule as a pure function.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::clip::ClipModel;
use curric::data::{Capability, Sample};
use curric::model::Completion;
use curric::reward::{build, clip_rule, ClipScore, RewardError};
use image::{Rgb, RgbImage};
use serde_json::json;

const WORDS: &[&str] = &[
    "[UNK]", "a", "red", "blue", "green", "circle", "square", "triangle", "left", "right", "top",
    "bottom", "small", "big", "and", "the", "of", "in", "is", "there",
];

fn write_checkpoint(dir: &Path) {
    let config = json!({
        "projection_dim": 8,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
            "max_position_embeddings": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "hidden_act": "quick_gelu"
        },
        "vision_config": {
            "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
            "hidden_act": "quick_gelu"
        }
    });
    let config_s = config.to_string();
    std::fs::write(dir.join("config.json"), &config_s).unwrap();
    let cfg = ClipScore::parse_config(&config_s).unwrap();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    // Registered up front so that it is saved: candle's CLIP would otherwise draw a fresh
    // random class embedding at every load.
    vb.pp("vision_model.embeddings")
        .get(16, "class_embedding")
        .unwrap();
    ClipModel::new(vb, &cfg).unwrap();
    vm.save(dir.join("model.safetensors")).unwrap();

    let mut vocab = serde_json::Map::new();
    for (i, w) in WORDS.iter().enumerate() {
        vocab.insert(w.to_string(), json!(i));
    }
    // The highest id ends every text: CLIP pools the text at the argmax token id.
    vocab.insert("[EOS]".into(), json!(31));
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[EOS]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {"[EOS]": {"id": "[EOS]", "ids": [31], "tokens": ["[EOS]"]}}},
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
}

fn scene() -> Arc<RgbImage> {
    let mut img = RgbImage::from_pixel(40, 40, Rgb([250, 250, 250]));
    for y in 5..20 {
        for x in 5..20 {
            img.put_pixel(x, y, Rgb([220, 20, 30]));
        }
    }
    Arc::new(img)
}

fn sample(images: Vec<Arc<RgbImage>>) -> Sample {
    Sample {
        images,
        ..Sample::new(
            "scene0",
            "<image> describe",
            "red",
            Capability::new(Capability::PERCEPTION),
        )
    }
}

fn comp(text: &str) -> Completion {
    Completion {
        tokens: vec![1; 4],
        text: text.into(),
        truncated: false,
    }
}

#[test]
fn threshold_rule() {
    // 1 at or above the threshold, max(s, 0)/threshold below it.
    assert_eq!(clip_rule(0.5, 0.4), 1.0);
    assert_eq!(clip_rule(0.4, 0.4), 1.0);
    assert!((clip_rule(0.2, 0.4) - 0.5).abs() < 1e-7);
    assert!((clip_rule(0.1, 0.4) - 0.25).abs() < 1e-7);
    assert_eq!(clip_rule(-0.3, 0.4), 0.0);
    assert_eq!(clip_rule(0.0, 0.4), 0.0);
}

#[test]
fn clip_score_on_a_tiny_random_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path());
    let model = dir.path().to_str().unwrap();
    let mut a = serde_json::Map::new();
    a.insert("model".into(), json!(model));
    a.insert("threshold".into(), json!(0.4));
    let r = build("clip_score", &a).unwrap();
    assert_eq!(r.name(), "clip_score");

    let img = scene();
    let s = sample(vec![img.clone()]);
    let texts = [
        "a red square in the top left",
        "a big blue circle",
        "there is a green triangle",
    ];
    for t in texts {
        let x = r.score(&s, &comp(t));
        assert!((0.0..=1.0).contains(&x), "{t}: {x}");
        // Deterministic, also through the image-embedding cache and a fresh load.
        assert_eq!(x, r.score(&s, &comp(t)));
        let again = build("clip_score", &a).unwrap();
        assert_eq!(x, again.score(&s, &comp(t)));
    }

    // The score follows the rule applied to the raw cosine similarity.
    let cs = ClipScore::load(dir.path(), 0.4, &Device::Cpu).unwrap();
    let sim = cs.similarity(&img, texts[0]).unwrap().unwrap();
    assert!((-1.0..=1.0).contains(&sim), "cosine {sim}");
    for thr in [0.05f64, 0.4, 0.9, sim.abs() as f64 + 0.1] {
        let c = ClipScore::load(dir.path(), thr, &Device::Cpu).unwrap();
        let got = curric::reward::Reward::score(&c, &s, &comp(texts[0]));
        assert!(
            (got - clip_rule(sim, thr as f32)).abs() < 1e-6,
            "thr {thr}: {got}"
        );
    }
    // The description section is what gets scored when present.
    let pebr = format!("### Image Description: {}\n### Rationales: x", texts[0]);
    assert_eq!(r.score(&s, &comp(&pebr)), r.score(&s, &comp(texts[0])));

    // No image, empty or malformed completions score 0 rather than failing.
    assert_eq!(r.score(&sample(vec![]), &comp(texts[0])), 0.0);
    assert_eq!(r.score(&s, &comp("")), 0.0);
    assert_eq!(r.score(&s, &comp("   ")), 0.0);
    let odd = r.score(&s, &comp("<think> ### ??? \\boxed{"));
    assert!((0.0..=1.0).contains(&odd));
    // Over-long text is cut at the model's 16 positions instead of failing.
    let long = vec!["red"; 100].join(" ");
    assert!((0.0..=1.0).contains(&r.score(&s, &comp(&long))));

    assert!(ClipScore::load(dir.path(), 0.0, &Device::Cpu).is_err());
}

#[test]
fn checkpoint_without_class_embedding_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path());
    let path = dir.path().join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    t.remove("vision_model.embeddings.class_embedding");
    candle_core::safetensors::save(&t, &path).unwrap();
    let err = ClipScore::load(dir.path(), 0.4, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, RewardError::ClipModel { .. }));
    assert!(err.to_string().contains("class_embedding"), "{err}");
    // A missing weight fails too (no silent random init).
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    t.insert(
        "vision_model.embeddings.class_embedding".into(),
        candle_core::Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap(),
    );
    t.remove("text_projection.weight");
    candle_core::safetensors::save(&t, &path).unwrap();
    assert!(ClipScore::load(dir.path(), 0.4, &Device::Cpu).is_err());
}
