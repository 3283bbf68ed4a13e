//! Qwen3-VL's vision tower on candle, from differentiable parts: the patch embedding (with a
//! bias), a learned grid of position embeddings interpolated bilinearly to each image's size,
//! blocks of LayerNorm, attention with 2-D rotary embeddings within each image and a GELU MLP,
//! the merger, and the DeepStack mergers that hand the decoder features from inner blocks.
//! Tensor names are Hugging Face's, under the tower's prefix.
//!
//! Qwen2-VL's tower is its ancestor, the same blocks without the patch bias, the position
//! grid and DeepStack, with a QuickGELU MLP and other names (`Flavour::Qwen2Vl`).
//!
//! Parity: `tests/qwen_vl_vision.rs` against Hugging Face's tower on a tiny random checkpoint
//! (`tests/fixtures/qwen_vl/make_vision3_fixtures.py`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::nn::{LayerNorm, Linear, RopeTables};
use super::qwen25_vision::{block_diagonal, VisionAttention};
use super::qwen_vl_layout::{patch_positions, vision_rotary_angles};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Qwen2Vl,
    Qwen3Vl,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub flavour: Flavour,
    pub depth: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    /// Learned position embeddings: a square grid of this many (none in Qwen2-VL).
    pub num_position_embeddings: usize,
    /// Blocks after which a DeepStack merger taps the features.
    pub deepstack_visual_indexes: Vec<usize>,
}

struct Block {
    norm1: LayerNorm,
    attn: VisionAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// LayerNorm, then `merge²` patches joined into one row, then a GELU MLP. The DeepStack
/// mergers normalise after joining (`postshuffle`), the final one before.
struct Merger {
    norm: LayerNorm,
    postshuffle: bool,
    fc1: Linear,
    fc2: Linear,
}

impl Merger {
    fn new(cfg: &Config, postshuffle: bool, vb: VarBuilder) -> Result<Self> {
        let joined = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle { joined } else { cfg.hidden_size };
        let [norm, fc1, fc2] = match cfg.flavour {
            Flavour::Qwen2Vl => ["ln_q", "mlp.0", "mlp.2"],
            Flavour::Qwen3Vl => ["norm", "linear_fc1", "linear_fc2"],
        };
        Ok(Self {
            norm: LayerNorm::new(norm_dim, 1e-6, vb.pp(norm))?,
            postshuffle,
            fc1: Linear::new(joined, joined, true, vb.pp(fc1))?,
            fc2: Linear::new(joined, cfg.out_hidden_size, true, vb.pp(fc2))?,
        })
    }

    fn forward(&self, x: &Tensor, joined: usize) -> Result<Tensor> {
        let rows = x.elem_count() / joined;
        let x = if self.postshuffle {
            self.norm.forward(&x.reshape((rows, joined))?)?
        } else {
            self.norm.forward(x)?.reshape((rows, joined))?
        };
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

pub struct VisionTower {
    cfg: Config,
    patch_embed: Linear,
    patch_bias: Option<Tensor>,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
}

/// Image features: the merged tokens, and one tensor per DeepStack tap, all
/// `[patches / merge², out_hidden_size]`.
pub struct VisionOutput {
    pub embeds: Tensor,
    pub deepstack: Vec<Tensor>,
}

impl VisionTower {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (t, p) = (cfg.temporal_patch_size, cfg.patch_size);
        let patch = vb
            .get((h, 3, t, p, p), "patch_embed.proj.weight")?
            .reshape((h, 3 * t * p * p))?;
        let qwen3 = cfg.flavour == Flavour::Qwen3Vl;
        let [fc1, fc2] = if qwen3 {
            ["mlp.linear_fc1", "mlp.linear_fc2"]
        } else {
            ["mlp.fc1", "mlp.fc2"]
        };
        let mut blocks = Vec::new();
        for b in 0..cfg.depth {
            let vb = vb.pp(format!("blocks.{b}"));
            blocks.push(Block {
                norm1: LayerNorm::new(h, 1e-6, vb.pp("norm1"))?,
                attn: VisionAttention::new(h, cfg.num_heads, vb.pp("attn"))?,
                norm2: LayerNorm::new(h, 1e-6, vb.pp("norm2"))?,
                fc1: Linear::new(h, i, true, vb.pp(fc1))?,
                fc2: Linear::new(i, h, true, vb.pp(fc2))?,
            });
        }
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|k| Merger::new(cfg, true, vb.pp(format!("deepstack_merger_list.{k}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embed: Linear::from_weight(patch),
            patch_bias: qwen3
                .then(|| vb.get(h, "patch_embed.proj.bias"))
                .transpose()?,
            pos_embed: qwen3
                .then(|| vb.get((cfg.num_position_embeddings, h), "pos_embed.weight"))
                .transpose()?,
            blocks,
            merger: Merger::new(cfg, false, vb.pp("merger"))?,
            deepstack,
        })
    }

    /// The learned grid resized to each image bilinearly (corners on corners), in patch order.
    fn position_embeddings(&self, pos_embed: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let side = (self.cfg.num_position_embeddings as f64).sqrt() as usize;
        let (mut idx, mut wts) = (Vec::new(), Vec::new());
        let axis = |n: usize| -> Vec<(usize, usize, f32)> {
            (0..n)
                .map(|i| {
                    let x = if n > 1 {
                        i as f32 * (side - 1) as f32 / (n - 1) as f32
                    } else {
                        0.0
                    };
                    let lo = x as usize;
                    (lo, (lo + 1).min(side - 1), x - lo as f32)
                })
                .collect()
        };
        for &[t, h, w] in grids {
            let (rows, cols) = (axis(h), axis(w));
            for (r, c) in patch_positions(&[[t, h, w]], self.cfg.spatial_merge_size) {
                let ((r0, r1, dr), (c0, c1, dc)) = (rows[r], cols[c]);
                idx.extend([
                    r0 * side + c0,
                    r0 * side + c1,
                    r1 * side + c0,
                    r1 * side + c1,
                ]);
                wts.extend([
                    (1.0 - dr) * (1.0 - dc),
                    (1.0 - dr) * dc,
                    dr * (1.0 - dc),
                    dr * dc,
                ]);
            }
        }
        let n = wts.len() / 4;
        let dev = pos_embed.device();
        let idx = Tensor::from_vec(
            idx.into_iter().map(|i| i as u32).collect::<Vec<_>>(),
            n * 4,
            dev,
        )?;
        let wts = Tensor::from_vec(wts, (n, 4, 1), dev)?.to_dtype(pos_embed.dtype())?;
        pos_embed
            .index_select(&idx, 0)?
            .reshape((n, 4, self.cfg.hidden_size))?
            .broadcast_mul(&wts)?
            .sum(1)
    }

    /// `pixels` `[patches, 3·T·P·P]` of the images `grids`, in the image processor's order.
    pub fn forward(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<VisionOutput> {
        let c = &self.cfg;
        let dev = pixels.device();
        let (n, hidden) = (pixels.dim(0)?, c.hidden_size);
        let merge = c.spatial_merge_size;
        let joined = hidden * merge * merge;
        let head_dim = hidden / c.num_heads;
        let mut x = self.patch_embed.forward(pixels)?;
        if let Some(b) = &self.patch_bias {
            x = x.broadcast_add(b)?;
        }
        if let Some(p) = &self.pos_embed {
            x = (x + self.position_embeddings(p, grids)?)?;
        }
        let angles = Tensor::from_vec(
            vision_rotary_angles(grids, merge, head_dim, 10000.0),
            (1, 1, n, head_dim / 2),
            dev,
        )?;
        let rope = RopeTables::new(angles.cos()?, angles.sin()?)?;
        let mut cu = vec![0];
        for &[t, h, w] in grids {
            cu.push(cu.last().copied().unwrap_or(0) + t * h * w);
        }
        let mask = block_diagonal(&cu, n, dev)?;
        let mut deepstack = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            x = (&x + b.attn.forward(&b.norm1.forward(&x)?, &rope, &mask)?)?;
            let m = b.fc1.forward(&b.norm2.forward(&x)?)?;
            let m = match c.flavour {
                Flavour::Qwen3Vl => m.gelu()?,
                // QuickGELU: x · σ(1.702 x).
                Flavour::Qwen2Vl => (&m * ((&m * -1.702)?.exp()? + 1.0)?.recip()?)?,
            };
            x = (&x + b.fc2.forward(&m)?)?;
            if let Some(k) = c.deepstack_visual_indexes.iter().position(|&d| d == i) {
                deepstack.push(self.deepstack[k].forward(&x, joined)?);
            }
        }
        Ok(VisionOutput {
            embeds: self.merger.forward(&x, joined)?,
            deepstack,
        })
    }
}
