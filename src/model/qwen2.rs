//! A Qwen2-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) with HF Qwen2's
//! tensor names, so it loads real Qwen2 / Qwen2.5 checkpoints, written from differentiable ops.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::DecoderConfig;
use super::nn::{attention, Linear, RmsNorm, RopeTables, Rotary};

/// Per-layer keys and values `[B, KV, S, hd]` of the positions seen so far.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
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
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the batch rows `rows` (in that order): finished sequences leave the decode
    /// batch instead of decoding padding until the longest one ends.
    pub fn keep_rows(&mut self, rows: &Tensor) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
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
        cache: Option<&mut Option<(Tensor, Tensor)>>,
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
            Some(slot) => {
                let kv = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
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
