//! The Qwen-VL image processor against Hugging Face's (`Qwen2VLImageProcessor`, written by
//! `tests/fixtures/qwen_vl/make_image_fixtures.py`) with Qwen2.5-VL's and Qwen3-VL's settings:
//! smart_resize on a grid of sizes (ties included), and every patch of two images, one that
//! needs no resize (exact) and one that does (bicubic, to a few 8-bit levels).

use std::path::PathBuf;

use curric::model::qwen_vl_image::{smart_resize, ImageProcessorConfig};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen_vl")
}

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("image_processor.json")).unwrap())
        .unwrap()
}

fn config(setting: &str) -> ImageProcessorConfig {
    let s = &meta()["settings"][setting];
    // The newer preprocessor_config.json layout: pixel bounds under `size`.
    let json = serde_json::json!({
        "patch_size": s["patch_size"], "merge_size": s["merge_size"],
        "temporal_patch_size": s["temporal_patch_size"],
        "image_mean": s["image_mean"], "image_std": s["image_std"],
        "size": {"shortest_edge": s["min_pixels"], "longest_edge": s["max_pixels"]},
    });
    ImageProcessorConfig::from_json(&json.to_string()).unwrap()
}

#[test]
fn smart_resize_matches_hugging_face_on_a_grid_of_sizes() {
    let cases = meta()["smart_resize"].as_array().unwrap().clone();
    assert!(cases.len() > 100);
    for c in cases {
        let v: Vec<usize> = c
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let got = smart_resize(v[0], v[1], v[2], v[3], v[4]).unwrap();
        assert_eq!(got, (v[5], v[6]), "smart_resize{:?}", &v[..5]);
    }
    // Python rounds 2.5 to 2: 70 / 28 = 2.5 → 56, not 84.
    assert_eq!(
        smart_resize(70, 70, 28, 56 * 56, 1 << 30).unwrap(),
        (56, 56)
    );
    assert!(smart_resize(1, 300, 28, 1, 1 << 30).is_err());
}

fn check(setting: &str, case: &str, tolerance: f32) {
    let cfg = config(setting);
    let png = if case == "exact" {
        format!("exact_{setting}.png")
    } else {
        "resized.png".to_string()
    };
    let img = image::open(dir().join(png)).unwrap().to_rgb8();
    let got = cfg.preprocess(&img).unwrap();
    let key = format!("{setting}.{case}");
    let m = &meta()["cases"][&key];
    let grid: Vec<usize> = m["grid_thw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got.grid_thw.to_vec(), grid, "{key}");
    assert_eq!(
        [got.resized.0, got.resized.1],
        [
            m["resized"][0].as_u64().unwrap() as usize,
            m["resized"][1].as_u64().unwrap() as usize
        ]
    );
    let bytes = std::fs::read(dir().join("image_processor.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(&key).unwrap();
    assert_eq!(t.shape(), [got.rows(), got.row_len], "{key}");
    let want: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (mut max, mut sum) = (0f32, 0f64);
    for (a, b) in got.values.iter().zip(&want) {
        max = max.max((a - b).abs());
        sum += (a - b).abs() as f64;
    }
    let mean = sum / want.len() as f64;
    assert!(max <= tolerance, "{key}: max |Δ| {max} (mean {mean})");
    assert_eq!(
        cfg.merged_tokens(got.grid_thw),
        got.rows() / (cfg.merge_size * cfg.merge_size)
    );
}

#[test]
fn patches_without_a_resize_match_exactly() {
    check("qwen2_5_vl", "exact", 1e-6);
    check("qwen3_vl", "exact", 1e-6);
}

#[test]
fn resized_patches_match_to_a_few_levels() {
    // One 8-bit level is 1/255/std: 0.015 (CLIP std) and 0.008 (std 0.5) in these units.
    check("qwen2_5_vl", "resized", 6.0 / 255.0 / 0.26);
    check("qwen3_vl", "resized", 6.0 / 255.0 / 0.5);
}
