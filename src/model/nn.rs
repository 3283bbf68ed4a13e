//! Building blocks written only from differentiable candle primitives. candle-nn's fused
//! `softmax_last_dim`, `rms_norm`, `layer_norm` and `rope` have no backward pass, so none of
//! them appears here.
//!
//! Every block computes in the dtype of its input (f32, or bf16 for `dtype = bf16`); norms,
//! softmax and rotary embeddings go through f32 and back, as Hugging Face's models do.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

pub use super::ops::RopeTables;

/// `a · b`. candle's CPU matmul has no bf16 kernel: there the product is taken in f32 and
/// rounded back, so bf16 runs on a CPU as on a GPU up to the matmul's accumulation.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == DType::BF16 && a.device().is_cpu() {
        a.to_dtype(DType::F32)?
            .matmul(&b.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16)
    } else {
        a.matmul(b)
    }
}

/// `f` applied in f32 to `x` of any dtype, the result in `x`'s dtype.
pub fn in_f32(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        f(x)
    } else {
        f(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
    }
}

/// A dense layer that flattens leading dimensions into one matmul, which is faster (forward and
/// backward) than candle-nn's broadcast batched matmul over a per-batch copy of the weight.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn from_weight(weight: Tensor) -> Self {
        Self { weight, bias: None }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let y = matmul(&x.reshape((rows, in_dim))?, &self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.weight.dim(0)?;
        y.reshape(out)
    }
}

/// RMSNorm as in Qwen2: `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() == DType::F32 {
            return super::ops::rms_norm(x, &self.weight, self.eps);
        }
        let w = self.weight.to_dtype(DType::F32)?;
        in_f32(x, |x| super::ops::rms_norm(x, &w, self.eps))
    }
}

/// LayerNorm with weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        in_f32(x, |x| {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let inv = (var + self.eps)?.sqrt()?.recip()?;
            xc.broadcast_mul(&inv)?
                .broadcast_mul(&self.weight.to_dtype(DType::F32)?)?
                .broadcast_add(&self.bias.to_dtype(DType::F32)?)
        })
    }
}

/// Rotary position tables (HF "rotate half" layout), indexed per row by absolute position so
/// left-padded rows start at position 0.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    pub fn new(head_dim: usize, max_pos: usize, theta: f64, dev: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64) as f32)
            .collect();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_pos, half), dev)?,
            sin: Tensor::from_vec(sin, (max_pos, half), dev)?,
        })
    }

    /// Tables for `positions` `[B, T]` (u32).
    pub fn tables(&self, positions: &Tensor) -> Result<RopeTables> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let half = self.cos.dim(1)?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, 1, t, half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, 1, t, half))?;
        RopeTables::new(cos, sin)
    }
}

/// Scaled dot-product attention with grouped-query heads, without copying K/V per query head:
/// q `[B, H, T, hd]`, k and v `[B, KV, S, hd]`, additive mask broadcastable to `[B, H, T, S]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    let kv = k.dim(1)?;
    let s = k.dim(2)?;
    let rep = h / kv;
    let scale = 1.0 / (hd as f64).sqrt();
    // Query heads of a group are adjacent, so [B, H, T, hd] → [B, KV, rep·T, hd] is a view.
    let qg = q.reshape((b, kv, rep * t, hd))?;
    // Scores, mask and softmax in f32 whatever the compute dtype.
    let scores = (matmul(&qg, &k.t()?)?.to_dtype(DType::F32)? * scale)?.reshape((b, h, t, s))?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(&m.to_dtype(DType::F32)?)?,
        None => scores,
    };
    let p = super::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    matmul(&p.reshape((b, kv, rep * t, s))?, v)?.reshape((b, h, t, hd))
}

/// Large finite negative used for masking, so a row with every key masked (a left pad attending
/// to nothing) gives a uniform distribution instead of NaN.
pub const NEG: f32 = -1e9;

/// Additive attention mask `[B, 1, T, S]` for `T` queries at the end of `S` keys: a query sees
/// a key when the key is valid (`valid[b][s]`) and not in its future.
pub fn causal_mask(valid: &[Vec<bool>], t: usize, dev: &Device) -> Result<Tensor> {
    let b = valid.len();
    let s = valid.first().map_or(0, |r| r.len());
    let offset = s - t;
    let mut m = vec![0f32; b * t * s];
    for (bi, row) in valid.iter().enumerate() {
        for ti in 0..t {
            for (si, &ok) in row.iter().enumerate() {
                if !ok || si > offset + ti {
                    m[(bi * t + ti) * s + si] = NEG;
                }
            }
        }
    }
    Tensor::from_vec(m, (b, 1, t, s), dev)
}
