//! Where each patch of a Qwen-VL image sits for the vision tower: its (row, column) for the
//! 2-D rotary embedding, and Qwen2.5-VL's attention windows. Patches come in the image
//! processor's order, the `merge × merge` patches of one merged token adjacent; a window is a
//! square of merged tokens (`window_size / merge / patch` per side), and images whose side is
//! not a whole number of windows get smaller windows at their edges.
//!
//! Parity: `tests/qwen_vl_layout.rs` against Hugging Face's `get_window_index` and
//! `rot_pos_emb` (`tests/fixtures/qwen_vl/make_vision_layout_fixtures.py`).

/// `(row, column)` of every patch of `grids` (`[t, h, w]` in patches), images in order, each
/// frame repeating its image's positions.
pub fn patch_positions(grids: &[[usize; 3]], merge: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for ih in 0..merge {
                        for iw in 0..merge {
                            out.push((bh * merge + ih, bw * merge + iw));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The vision rotary angles, `[patches, head_dim / 2]` row-major: the row's angles at the
/// `head_dim / 4` frequencies `1 / theta^(4j / head_dim)`, then the column's.
pub fn vision_rotary_angles(
    grids: &[[usize; 3]],
    merge: usize,
    head_dim: usize,
    theta: f64,
) -> Vec<f32> {
    let dim = head_dim / 2;
    let inv: Vec<f32> = (0..dim / 2)
        .map(|j| 1.0 / (theta as f32).powf((2 * j) as f32 / dim as f32))
        .collect();
    let mut out = Vec::new();
    for (r, c) in patch_positions(grids, merge) {
        out.extend(inv.iter().map(|f| r as f32 * f));
        out.extend(inv.iter().map(|f| c as f32 * f));
    }
    out
}

/// Qwen2.5-VL's windows: the order of merged tokens that makes each window contiguous
/// (indices into all images' merged tokens), and the cumulative window lengths in patches,
/// starting at 0, for block-diagonal attention.
pub fn window_index(
    grids: &[[usize; 3]],
    merge: usize,
    window_merged: usize,
) -> (Vec<usize>, Vec<usize>) {
    let vws = window_merged.max(1);
    let (mut order, mut cu) = (Vec::new(), vec![0usize]);
    let mut offset = 0;
    for &[t, h, w] in grids {
        let (lh, lw) = (h / merge, w / merge);
        for f in 0..t {
            for wh in 0..lh.div_ceil(vws) {
                for ww in 0..lw.div_ceil(vws) {
                    let before = order.len();
                    for r in wh * vws..((wh + 1) * vws).min(lh) {
                        for c in ww * vws..((ww + 1) * vws).min(lw) {
                            order.push(offset + f * lh * lw + r * lw + c);
                        }
                    }
                    let last = *cu.last().expect("cu starts at 0");
                    cu.push(last + (order.len() - before) * merge * merge);
                }
            }
        }
        offset += t * lh * lw;
    }
    cu.dedup();
    (order, cu)
}
