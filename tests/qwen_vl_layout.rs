//! The Qwen2.5-VL vision tower's layout against Hugging Face's
//! (`tests/fixtures/qwen_vl/make_vision_layout_fixtures.py`): three images at once, windows
//! that need padding and an image smaller than a window; the window order and cumulative
//! window lengths exactly, the 2-D rotary angles within f32 rounding.

use curric::model::qwen_vl_layout::{vision_rotary_angles, window_index};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qwen_vl/vision_layout.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn setup() -> (Value, Vec<[usize; 3]>, usize) {
    let f = fixture();
    let grids = f["grid_thw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let g = usizes(g);
            [g[0], g[1], g[2]]
        })
        .collect();
    let merge = f["merge_size"].as_u64().unwrap() as usize;
    (f, grids, merge)
}

#[test]
fn windows_match_hugging_face() {
    let (f, grids, merge) = setup();
    let per_side = f["window_size"].as_u64().unwrap() as usize
        / merge
        / f["patch_size"].as_u64().unwrap() as usize;
    let (order, cu) = window_index(&grids, merge, per_side);
    assert_eq!(order, usizes(&f["window_index"]));
    assert_eq!(cu, usizes(&f["cu_window_seqlens"]));
    // A permutation of every merged token.
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..order.len()).collect::<Vec<_>>());
}

#[test]
fn rotary_angles_match_hugging_face() {
    let (f, grids, merge) = setup();
    let head_dim = f["head_dim"].as_u64().unwrap() as usize;
    let got = vision_rotary_angles(&grids, merge, head_dim, 10000.0);
    let want: Vec<f32> = f["rot_pos_emb"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
            "angle {i}: {a} vs {b}"
        );
    }
}
