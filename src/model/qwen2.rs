//! A Qwen2-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) with HF Qwen2's
//! tensor names, so it loads real Qwen2 / Qwen2.5 checkpoints, written from differentiable ops.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::DecoderConfig;
use super::nn::{attention, Linear, RmsNorm, RopeTables, Rotary};

/// Per-layer keys and values `[B, KV, S, hd]` of the positions seen so far.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
}

/// One layer's keys and values, `[B, KV, capacity, hd]`, of which the first `len` positions
/// are filled. Appending writes in place and doubles the capacity when full, so decoding `T`
/// tokens copies the cache O(log T) times instead of once per token.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerKv {
    fn new(k: &Tensor, v: &Tensor) -> Result<Self> {
        let t = k.dim(2)?;
        let mut kv = LayerKv {
            k: k.clone(),
            v: v.clone(),
            len: t,
        };
        // Room for the decode that usually follows a prefill.
        kv.reserve(t.max(16))?;
        Ok(kv)
    }

    fn capacity(&self) -> Result<usize> {
        self.k.dim(2)
    }

    /// Grows the buffers to hold `extra` more positions.
    fn reserve(&mut self, extra: usize) -> Result<()> {
        let cap = self.capacity()?;
        if self.len + extra <= cap {
            return Ok(());
        }
        let new_cap = (self.len + extra).max(2 * cap);
        let grow = |x: &Tensor| -> Result<Tensor> {
            let (b, h, _, d) = x.dims4()?;
            let buf = Tensor::zeros((b, h, new_cap, d), x.dtype(), x.device())?;
            buf.slice_set(&x.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            Ok(buf)
        };
        self.k = grow(&self.k)?;
        self.v = grow(&self.v)?;
        Ok(())
    }

    /// Appends `[B, KV, t, hd]` keys and values; returns views of everything cached.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        self.reserve(t)?;
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += t;
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(kv)) => kv.len,
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the batch rows `rows` (in that order): finished sequences leave the decode
    /// batch instead of decoding padding until the longest one ends.
    pub fn keep_rows(&mut self, rows: &Tensor) -> Result<()> {
        for kv in self.layers.iter_mut().flatten() {
            kv.k = kv.k.index_select(rows, 0)?;
            kv.v = kv.v.index_select(rows, 0)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let hd = cfg.head_dim();
        let kvd = cfg.num_key_value_heads * hd;
        Ok(Self {
            q_proj: Linear::new(d, cfg.num_attention_heads * hd, true, vb.pp("q_proj"))?,
            k_proj: Linear::new(d, kvd, true, vb.pp("k_proj"))?,
            v_proj: Linear::new(d, kvd, true, vb.pp("v_proj"))?,
            o_proj: Linear::new(cfg.num_attention_heads * hd, d, false, vb.pp("o_proj"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<LayerKv>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, h: usize| -> Result<Tensor> {
            y.reshape((b, t, h, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q_proj.forward(x)?, self.heads)?;
        let k = split(self.k_proj.forward(x)?, self.kv_heads)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        let q = rope.apply(&q)?;
        let k = rope.apply(&k)?;
        let (k, v) = match cache {
            Some(Some(kv)) => kv.append(&k, &v)?,
            Some(slot) => {
                *slot = Some(LayerKv::new(&k, &v)?);
                (k, v)
            }
            None => (k, v),
        };
        let y = attention(&q, &k, &v, mask)?;
        let y = y
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, self.heads * self.head_dim))?;
        self.o_proj.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::new(d, f, false, vb.pp("gate_proj"))?,
            up_proj: Linear::new(d, f, false, vb.pp("up_proj"))?,
            down_proj: Linear::new(f, d, false, vb.pp("down_proj"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate_proj.forward(x)?.silu()?;
        self.down_proj.forward(&(g * self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl Layer {
    fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.rms_norm_eps;
        Ok(Self {
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(cfg.hidden_size, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg.hidden_size,
                eps,
                vb.pp("post_attention_layernorm"),
            )?,
        })
    }
}

/// The decoder: `model.*` plus `lm_head` (or the tied embedding).
#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    cfg: DecoderConfig,
}

impl Decoder {
    /// `vb` is the checkpoint root (names `model.…` and `lm_head`).
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let embed_w = m
            .pp("embed_tokens")
            .get((cfg.vocab_size, cfg.hidden_size), "weight")?;
        let embed_tokens = Embedding::new(embed_w.clone(), cfg.hidden_size);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, m.pp("layers").pp(i.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::from_weight(embed_w)
        } else {
            Linear::new(cfg.hidden_size, cfg.vocab_size, false, vb.pp("lm_head"))?
        };
        let rotary = Rotary::new(
            cfg.head_dim(),
            cfg.max_position_embeddings,
            cfg.rope_theta,
            vb.device(),
        )?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Token embeddings `[B, T, d]` of ids `[B, T]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    /// Runs the blocks on input embeddings `x` `[B, T, d]` at `positions` `[B, T]` (u32), with an
    /// additive `mask` broadcastable to `[B, H, T, S]` (`S` = cached + T). Appends to `cache`
    /// when given. Returns final-normed hidden states `[B, T, d]`.
    pub fn forward_embeds(
        &self,
        x: &Tensor,
        positions: &Tensor,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let rope = self.rotary.tables(positions)?;
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            let a =
                layer
                    .self_attn
                    .forward(&layer.input_layernorm.forward(&h)?, &rope, mask, slot)?;
            h = (h + a)?;
            let m = layer
                .mlp
                .forward(&layer.post_attention_layernorm.forward(&h)?)?;
            h = (h + m)?;
        }
        self.norm.forward(&h)
    }

    /// Vocabulary logits of hidden states `[…, d]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Plain causal forward on token ids `[B, T]` (no padding): logits `[B, T, V]`. This is the
    /// path compared against candle-transformers' `qwen2` on the same weights.
    pub fn forward_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pos: Vec<u32> = (0..b).flat_map(|_| 0..t as u32).collect();
        let positions = Tensor::from_vec(pos, (b, t), ids.device())?;
        let valid = vec![vec![true; t]; b];
        let mask = super::nn::causal_mask(&valid, t, ids.device())?;
        let h = self.forward_embeds(&self.embed(ids)?, &positions, Some(&mask), None)?;
        self.logits(&h)
    }
}

/// Log-softmax over the last dimension (differentiable).
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    super::ops::log_softmax_last_dim(logits)
}
