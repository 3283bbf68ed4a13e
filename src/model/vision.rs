//! The vision tower of the built-in tiny VLM: a ViT whose patch embedding is a reshape plus a
//! linear layer (no convolution), pre-norm blocks, and a projector to the decoder width.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::config::VisionConfig;
use super::nn::{attention, LayerNorm, Linear};

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            norm1: LayerNorm::new(d, eps, vb.pp("norm1"))?,
            qkv: Linear::new(d, 3 * d, true, vb.pp("attn").pp("qkv"))?,
            proj: Linear::new(d, d, true, vb.pp("attn").pp("proj"))?,
            norm2: LayerNorm::new(d, eps, vb.pp("norm2"))?,
            fc1: Linear::new(d, cfg.intermediate_size, true, vb.pp("mlp").pp("fc1"))?,
            fc2: Linear::new(cfg.intermediate_size, d, true, vb.pp("mlp").pp("fc2"))?,
            heads: cfg.num_attention_heads,
        })
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x)?)?
            .reshape((b, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let a = attention(&q, &k, &v, None)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, d))?;
        let x = (x + self.proj.forward(&a)?)?;
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu()?)?;
        x + m
    }
}

/// `visual.*`: patches → embeddings `[N, patches, vision_d]`.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embed: Linear,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    cfg: VisionConfig,
}

impl VisionTower {
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let p = cfg.patch_size;
        let d = cfg.hidden_size;
        Ok(Self {
            patch_embed: Linear::new(3 * p * p, d, true, vb.pp("patch_embed").pp("proj"))?,
            pos_embed: vb.get((cfg.num_patches(), d), "pos_embed")?,
            blocks: (0..cfg.num_hidden_layers)
                .map(|i| Block::new(cfg, vb.pp("blocks").pp(i.to_string())))
                .collect::<Result<_>>()?,
            norm: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("norm"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Pixel tensor `[N, 3, S, S]` in [-1, 1] of images, resized to the configured size.
    pub fn pixels(&self, images: &[&RgbImage], dev: &Device) -> Result<Tensor> {
        let s = self.cfg.image_size;
        let mut data = Vec::with_capacity(images.len() * 3 * s * s);
        for img in images {
            let resized;
            let img: &RgbImage = if img.width() as usize == s && img.height() as usize == s {
                img
            } else {
                resized = image::imageops::resize(
                    *img,
                    s as u32,
                    s as u32,
                    image::imageops::FilterType::Triangle,
                );
                &resized
            };
            for c in 0..3 {
                for y in 0..s as u32 {
                    for x in 0..s as u32 {
                        data.push(img.get_pixel(x, y).0[c] as f32 / 127.5 - 1.0);
                    }
                }
            }
        }
        Tensor::from_vec(data, (images.len(), 3, s, s), dev)
    }

    /// Embeddings `[N, patches, vision_d]` of pixels `[N, 3, S, S]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, c, s, _) = pixels.dims4()?;
        let p = self.cfg.patch_size;
        let g = s / p;
        // [N, C, gy, p, gx, p] → [N, gy, gx, C, p, p]: one row per patch, channel-major.
        let patches = pixels
            .reshape(vec![n, c, g, p, g, p])?
            .permute(vec![0, 2, 4, 1, 3, 5])?
            .contiguous()?
            .reshape((n, g * g, c * p * p))?;
        let mut x = self
            .patch_embed
            .forward(&patches)?
            .broadcast_add(&self.pos_embed)?;
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        self.norm.forward(&x)
    }
}

/// `projector.*`: vision width → decoder width (linear, GELU, linear). Kept outside `visual`
/// so freezing the vision tower still trains the projector.
#[derive(Debug, Clone)]
pub struct Projector {
    fc1: Linear,
    fc2: Linear,
}

impl Projector {
    pub fn new(vision_d: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(vision_d, d, true, vb.pp("fc1"))?,
            fc2: Linear::new(d, d, true, vb.pp("fc2"))?,
        })
    }
}

impl Module for Projector {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu()?)
    }
}
