//! Qwen2.5-VL's vision tower on candle, from differentiable parts: the patch embedding (a
//! Conv3d over pre-flattened patches is a matmul), blocks of RMSNorm, attention with 2-D
//! rotary embeddings and SwiGLU, attending within windows of merged patches except in the
//! full-attention blocks (then within each image), and the merger that joins `merge²`
//! patches into one decoder token. Tensor names are Hugging Face's, under the tower's prefix.
//!
//! Parity: `tests/qwen_vl_vision.rs` against Hugging Face's tower on a tiny random checkpoint
//! (`tests/fixtures/qwen_vl/make_vision_fixtures.py`).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::nn::{attention, Linear, RmsNorm, RopeTables, NEG};
use super::qwen_vl_layout::{vision_rotary_angles, window_index};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub depth: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub rms_norm_eps: f64,
}

struct Block {
    norm1: RmsNorm,
    attn: VisionAttention,
    norm2: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct VisionTower {
    cfg: Config,
    patch_embed: Linear,
    blocks: Vec<Block>,
    merger_norm: RmsNorm,
    merger_fc1: Linear,
    merger_fc2: Linear,
}

/// Self-attention over a sequence of packed patches (every image, or every window, one after
/// another), with the 2-D rotary embedding on queries and keys and a block-diagonal mask that
/// keeps each segment to itself. Both Qwen-VL towers attend this way.
pub(crate) struct VisionAttention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl VisionAttention {
    pub(crate) fn new(hidden: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: Linear::new(hidden, 3 * hidden, true, vb.pp("qkv"))?,
            proj: Linear::new(hidden, hidden, true, vb.pp("proj"))?,
            heads,
        })
    }

    /// `x` `[n, hidden]` (normalised) → `[n, hidden]`.
    pub(crate) fn forward(&self, x: &Tensor, rope: &RopeTables, mask: &Tensor) -> Result<Tensor> {
        let (n, hidden) = x.dims2()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((n, 3, self.heads, hidden / self.heads))?
            .permute((1, 2, 0, 3))?; // [3, heads, n, hd]
        let head = |k: usize| qkv.get(k)?.unsqueeze(0)?.contiguous();
        let (q, k, v) = (rope.apply(&head(0)?)?, rope.apply(&head(1)?)?, head(2)?);
        let a = attention(&q, &k, &v, Some(mask))?
            .squeeze(0)?
            .transpose(0, 1)?
            .reshape((n, hidden))?;
        self.proj.forward(&a)
    }
}

/// Additive mask `[1, 1, n, n]` that lets a patch attend only inside its segment of `cu`
/// (images, or windows of one).
pub(crate) fn block_diagonal(cu: &[usize], n: usize, dev: &Device) -> Result<Tensor> {
    let mut m = vec![NEG; n * n];
    for w in cu.windows(2) {
        for i in w[0]..w[1] {
            m[i * n + w[0]..i * n + w[1]].fill(0.0);
        }
    }
    Tensor::from_vec(m, (1, 1, n, n), dev)
}

impl VisionTower {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (t, p) = (cfg.temporal_patch_size, cfg.patch_size);
        let patch = vb
            .get((h, 3, t, p, p), "patch_embed.proj.weight")?
            .reshape((h, 3 * t * p * p))?;
        let mut blocks = Vec::new();
        for b in 0..cfg.depth {
            let vb = vb.pp(format!("blocks.{b}"));
            blocks.push(Block {
                norm1: RmsNorm::new(h, cfg.rms_norm_eps, vb.pp("norm1"))?,
                attn: VisionAttention::new(h, cfg.num_heads, vb.pp("attn"))?,
                norm2: RmsNorm::new(h, cfg.rms_norm_eps, vb.pp("norm2"))?,
                gate: Linear::new(h, i, true, vb.pp("mlp.gate_proj"))?,
                up: Linear::new(h, i, true, vb.pp("mlp.up_proj"))?,
                down: Linear::new(i, h, true, vb.pp("mlp.down_proj"))?,
            });
        }
        let unit = cfg.spatial_merge_size * cfg.spatial_merge_size;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embed: Linear::from_weight(patch),
            blocks,
            merger_norm: RmsNorm::new(h, 1e-6, vb.pp("merger.ln_q"))?,
            merger_fc1: Linear::new(h * unit, h * unit, true, vb.pp("merger.mlp.0"))?,
            merger_fc2: Linear::new(h * unit, cfg.out_hidden_size, true, vb.pp("merger.mlp.2"))?,
        })
    }

    /// `pixels` `[patches, 3·T·P·P]` of the images `grids` (in the image processor's order) →
    /// one embedding per merged token, `[patches / merge², out_hidden_size]`, images in order.
    pub fn forward(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<Tensor> {
        let c = &self.cfg;
        let dev = pixels.device();
        let (n, hidden) = (pixels.dim(0)?, c.hidden_size);
        let merge = c.spatial_merge_size;
        let unit = merge * merge;
        let head_dim = hidden / c.num_heads;
        let (order, cu_windows) = window_index(grids, merge, c.window_size / merge / c.patch_size);
        let order_t = Tensor::from_vec(
            order.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            order.len(),
            dev,
        )?;
        // Window order: merged tokens of a window become contiguous, their patches with them.
        let by_window = |x: &Tensor| -> Result<Tensor> {
            let w = x.dim(1)?;
            x.reshape((n / unit, unit * w))?
                .index_select(&order_t, 0)?
                .reshape((n, w))
        };
        let mut x = by_window(&self.patch_embed.forward(pixels)?)?;
        let angles = Tensor::from_vec(
            vision_rotary_angles(grids, merge, head_dim, 10000.0),
            (n, head_dim / 2),
            dev,
        )?;
        let angles = by_window(&angles)?.reshape((1, 1, n, head_dim / 2))?;
        let rope = RopeTables::new(angles.cos()?, angles.sin()?)?;
        let mut cu_images = vec![0];
        for &[t, h, w] in grids {
            cu_images.push(cu_images.last().copied().unwrap_or(0) + t * h * w);
        }
        let windows = block_diagonal(&cu_windows, n, dev)?;
        let images = block_diagonal(&cu_images, n, dev)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let mask = if c.fullatt_block_indexes.contains(&i) {
                &images
            } else {
                &windows
            };
            x = (&x + b.attn.forward(&b.norm1.forward(&x)?, &rope, mask)?)?;
            let h = b.norm2.forward(&x)?;
            let m = (b.gate.forward(&h)?.silu()? * b.up.forward(&h)?)?;
            x = (&x + b.down.forward(&m)?)?;
        }
        let y = self
            .merger_norm
            .forward(&x)?
            .reshape((n / unit, unit * hidden))?;
        let y = self
            .merger_fc2
            .forward(&self.merger_fc1.forward(&y)?.gelu_erf()?)?;
        // Back to image order.
        let mut inverse = vec![0u32; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i] = pos as u32;
        }
        let inverse = Tensor::from_vec(inverse, order.len(), dev)?;
        y.index_select(&inverse, 0)
    }
}
