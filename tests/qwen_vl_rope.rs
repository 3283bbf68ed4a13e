//! M-RoPE position ids against Hugging Face's `get_rope_index` of Qwen2.5-VL and Qwen3-VL
//! (`tests/fixtures/qwen_vl/make_rope_fixtures.py`): text only (plain 1-D positions), one
//! image, two images of different grids; and prompts that do not fit their images.

use curric::model::mrope::rope_index;
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/qwen_vl/rope_index.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn position_ids_match_hugging_face_for_both_families() {
    let all = fixtures();
    for family in ["qwen2_5_vl", "qwen3_vl"] {
        let f = &all[family];
        let image = f["image_token_id"].as_u64().unwrap() as u32;
        let merge = f["merge_size"].as_u64().unwrap() as usize;
        for (case, c) in f["cases"].as_object().unwrap() {
            let tokens: Vec<u32> = ints(&c["input_ids"]).iter().map(|&x| x as u32).collect();
            let grids: Vec<[usize; 3]> = c["grid_thw"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    let g = ints(g);
                    [g[0] as usize, g[1] as usize, g[2] as usize]
                })
                .collect();
            let got = rope_index(&tokens, image, &grids, merge).unwrap();
            for (axis, want) in c["position_ids"].as_array().unwrap().iter().enumerate() {
                assert_eq!(
                    got.positions[axis],
                    ints(want),
                    "{family} {case} axis {axis}"
                );
            }
            assert_eq!(
                got.delta,
                c["rope_delta"].as_i64().unwrap(),
                "{family} {case}"
            );
        }
    }
}

#[test]
fn prompts_that_do_not_fit_their_images_are_errors() {
    let pad = 9;
    // 4×4 patches merge to 4 tokens; 3 are given.
    assert!(rope_index(&[1, pad, pad, pad, 2], pad, &[[1, 4, 4]], 2).is_err());
    // A grid that does not merge.
    assert!(rope_index(&[1, pad, 2], pad, &[[1, 3, 2]], 2).is_err());
    // More image tokens than the images take.
    assert!(rope_index(&[pad, pad, 1, pad], pad, &[[1, 2, 2]], 2).is_err());
    // No image at all.
    assert!(rope_index(&[1, 2], pad, &[[1, 2, 2]], 2).is_err());
}

/// A query rotated with curric's tables equals the query each family's decoder rotates:
/// sectioned frequencies in Qwen2.5-VL, interleaved in Qwen3-VL.
#[test]
fn rotary_tables_rotate_like_each_familys_decoder() {
    use curric::model::mrope::{mrope_tables, MropeLayout};
    let all = fixtures();
    for (family, layout) in [
        ("qwen2_5_vl", MropeLayout::Sectioned),
        ("qwen3_vl", MropeLayout::Interleaved),
    ] {
        let f = &all[family];
        let r = &f["rotary"];
        let d = r["head_dim"].as_u64().unwrap() as usize;
        let s = ints(&r["sections"]);
        let pos = &f["cases"]["two_images"]["position_ids"];
        let positions = [ints(&pos[0]), ints(&pos[1]), ints(&pos[2])];
        let (cos, sin) = mrope_tables(
            &positions,
            d,
            r["theta"].as_f64().unwrap(),
            [s[0] as usize, s[1] as usize, s[2] as usize],
            layout,
        )
        .unwrap();
        let rows = |v: &Value| -> Vec<Vec<f32>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect()
                })
                .collect()
        };
        let (q, want) = (rows(&r["q"]), rows(&r["q_rotated"]));
        let mut max = 0f32;
        for (t, (qt, wt)) in q.iter().zip(&want).enumerate() {
            for k in 0..d {
                // rotate_half: (-x2, x1).
                let rot = if k < d / 2 {
                    -qt[k + d / 2]
                } else {
                    qt[k - d / 2]
                };
                let got = qt[k] * cos[t * d + k] + rot * sin[t * d + k];
                max = max.max((got - wt[k]).abs());
            }
        }
        assert!(max < 1e-5, "{family}: max |Δ| {max}");
    }
    // The two layouts differ on these ids: the test would notice a swapped layout.
    let pos = &all["qwen3_vl"]["cases"]["two_images"]["position_ids"];
    let positions = [ints(&pos[0]), ints(&pos[1]), ints(&pos[2])];
    let a = mrope_tables(&positions, 16, 1e4, [2, 3, 3], MropeLayout::Sectioned).unwrap();
    let b = mrope_tables(&positions, 16, 1e4, [2, 3, 3], MropeLayout::Interleaved).unwrap();
    assert_ne!(a.0, b.0);
    assert!(mrope_tables(&positions, 16, 1e4, [2, 3, 2], MropeLayout::Sectioned).is_err());
}
