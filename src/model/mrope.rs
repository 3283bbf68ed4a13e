//! Multimodal RoPE (M-RoPE) position ids for the Qwen-VL decoders: every token gets a
//! (temporal, height, width) position. Text advances all three together; an image's merged
//! patches share the temporal position where the image starts and take their row and column
//! offsets from it, and the text after the image continues from the largest position used.
//! The same ids serve Qwen2.5-VL's sectioned rotary layout and Qwen3-VL's interleaved one (the
//! layout decides which frequencies each axis drives, not the ids).
//!
//! Parity: `tests/qwen_vl_rope.rs` against Hugging Face's `get_rope_index` of both families.

use super::ModelError;

/// Position ids of one unpadded sequence, `[temporal, height, width]`, and the delta that
/// continues decoding past it: the next token's position is `len + delta` on every axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopeIndex {
    pub positions: [Vec<i64>; 3],
    pub delta: i64,
}

/// The ids of `tokens`, where each image is a run of `image_token` ids, `t·h·w / merge²` long
/// for its `grid_thw` (in patches), images in order.
pub fn rope_index(
    tokens: &[u32],
    image_token: u32,
    grids: &[[usize; 3]],
    merge: usize,
) -> Result<RopeIndex, ModelError> {
    let bad = |message: String| ModelError::Config {
        path: "prompt".into(),
        message,
    };
    let mut pos: [Vec<i64>; 3] = Default::default();
    let mut next = 0i64; // the first position after everything placed so far
    let mut at = 0usize;
    for (k, &[t, h, w]) in grids.iter().enumerate() {
        let start = tokens[at..]
            .iter()
            .position(|&x| x == image_token)
            .map(|i| at + i)
            .ok_or_else(|| bad(format!("image {k} has no `{image_token}` tokens left")))?;
        for _ in at..start {
            pos.iter_mut().for_each(|p| p.push(next));
            next += 1;
        }
        if merge == 0 || h % merge != 0 || w % merge != 0 {
            return Err(bad(format!("grid {t}×{h}×{w} does not merge by {merge}")));
        }
        let (gh, gw) = (h / merge, w / merge);
        let n = t * gh * gw;
        if tokens.len() < start + n || tokens[start..start + n].iter().any(|&x| x != image_token) {
            return Err(bad(format!(
                "image {k} needs {n} consecutive `{image_token}` tokens at {start}"
            )));
        }
        // An image's frames all sit at its start: only videos advance the temporal axis.
        for _ in 0..t {
            for r in 0..gh {
                for c in 0..gw {
                    pos[0].push(next);
                    pos[1].push(next + r as i64);
                    pos[2].push(next + c as i64);
                }
            }
        }
        next += gh.max(gw) as i64;
        at = start + n;
    }
    if tokens[at..].contains(&image_token) {
        return Err(bad(format!(
            "more `{image_token}` tokens than {} image(s) take",
            grids.len()
        )));
    }
    for _ in at..tokens.len() {
        pos.iter_mut().for_each(|p| p.push(next));
        next += 1;
    }
    Ok(RopeIndex {
        delta: next - tokens.len() as i64,
        positions: pos,
    })
}

/// How the rotary frequencies are shared among the three axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MropeLayout {
    /// Qwen2-VL and Qwen2.5-VL: the first `sections[0]` frequencies follow the temporal
    /// position, the next `sections[1]` the row, the rest the column.
    Sectioned,
    /// Qwen3-VL: frequencies cycle temporal, row, column, so every axis spans low and high
    /// frequencies; row and column stop after `sections[1]` and `sections[2]` turns.
    Interleaved,
}

/// The axis that drives frequency `j`.
fn axis(j: usize, sections: [usize; 3], layout: MropeLayout) -> usize {
    match layout {
        MropeLayout::Sectioned if j < sections[0] => 0,
        MropeLayout::Sectioned if j < sections[0] + sections[1] => 1,
        MropeLayout::Sectioned => 2,
        MropeLayout::Interleaved if j % 3 == 1 && j < 3 * sections[1] => 1,
        MropeLayout::Interleaved if j % 3 == 2 && j < 3 * sections[2] => 2,
        MropeLayout::Interleaved => 0,
    }
}

/// Per-token `cos` and `sin` of the rotary embedding, each `[len, head_dim]` row-major with
/// the `head_dim / 2` frequencies repeated (the rotate-half convention). Computed in f32, as
/// Hugging Face does: `1 / theta^(2j / head_dim)` times the position.
pub fn mrope_tables(
    positions: &[Vec<i64>; 3],
    head_dim: usize,
    theta: f64,
    sections: [usize; 3],
    layout: MropeLayout,
) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    let half = head_dim / 2;
    if !head_dim.is_multiple_of(2) || sections.iter().sum::<usize>() != half {
        return Err(ModelError::Config {
            path: "config.json".into(),
            message: format!(
                "mrope_section {sections:?} must sum to head_dim / 2 = {half} (head_dim {head_dim})"
            ),
        });
    }
    let len = positions[0].len();
    let inv: Vec<f32> = (0..half)
        .map(|j| 1.0 / (theta as f32).powf((2 * j) as f32 / head_dim as f32))
        .collect();
    let (mut cos, mut sin) = (vec![0f32; len * head_dim], vec![0f32; len * head_dim]);
    for t in 0..len {
        for (j, f) in inv.iter().enumerate() {
            let angle = positions[axis(j, sections, layout)][t] as f32 * f;
            let (s, c) = angle.sin_cos();
            for k in [j, j + half] {
                cos[t * head_dim + k] = c;
                sin[t * head_dim + k] = s;
            }
        }
    }
    Ok((cos, sin))
}
