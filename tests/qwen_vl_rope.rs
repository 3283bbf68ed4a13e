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
