//! A Qwen2-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) with HF Qwen2's
//! tensor names, so it loads real Qwen2 / Qwen2.5 checkpoints, written from differentiable ops.
//! The same blocks are the Qwen-VL decoders: Qwen3's per-head q/k norms and bias-free
//! projections, multimodal RoPE tables, and DeepStack features added after the first layers
//! are switches of the config and arguments of [`Decoder::forward_rope`].

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::DecoderConfig;
use super::fused_layer;
use super::mrope::mrope_tables;
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
    /// The fused layer's stacked weights, kept for this generation's decode steps.
    stacked: Option<fused_layer::Stacked>,
}

impl LayerKv {
    fn new(k: &Tensor, v: &Tensor) -> Result<Self> {
        let t = k.dim(2)?;
        let mut kv = LayerKv {
            k: k.clone(),
            v: v.clone(),
            len: t,
            stacked: None,
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
    /// Qwen3's RMSNorm over each query and key head.
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        let hd = cfg.head_dim();
        let kvd = cfg.num_key_value_heads * hd;
        let bias = cfg.attention_bias;
        let qk_norm = if cfg.qk_norm {
            let eps = cfg.rms_norm_eps;
            Some((
                RmsNorm::new(hd, eps, vb.pp("q_norm"))?,
                RmsNorm::new(hd, eps, vb.pp("k_norm"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            q_proj: Linear::new(d, cfg.num_attention_heads * hd, bias, vb.pp("q_proj"))?,
            k_proj: Linear::new(d, kvd, bias, vb.pp("k_proj"))?,
            v_proj: Linear::new(d, kvd, bias, vb.pp("v_proj"))?,
            o_proj: Linear::new(cfg.num_attention_heads * hd, d, false, vb.pp("o_proj"))?,
            qk_norm,
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
        let split = |y: Tensor, h: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
            let y = y.reshape((b, t, h, self.head_dim))?;
            let y = match norm {
                Some(n) => n.forward(&y)?,
                None => y,
            };
            y.transpose(1, 2)?.contiguous()
        };
        let (qn, kn) = match &self.qk_norm {
            Some((q, k)) => (Some(q), Some(k)),
            None => (None, None),
        };
        let q = split(self.q_proj.forward(x)?, self.heads, qn)?;
        let k = split(self.k_proj.forward(x)?, self.kv_heads, kn)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads, None)?;
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

impl Layer {
    fn forward(
        &self,
        h: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
        slot: Option<&mut Option<LayerKv>>,
    ) -> Result<Tensor> {
        if let Some(lw) = self.fused_weights(h, rope, mask)? {
            let (Some((cos, sin)), Some(mask)) = (rope.host(), mask) else {
                unreachable!("fused_weights checks both")
            };
            return match slot {
                None => {
                    let tensors = lw.tensors();
                    let graph = tensors
                        .iter()
                        .any(|t| t.track_op())
                        .then(|| tensors.iter().map(|t| (*t).clone()).collect());
                    fused_layer::forward(h, &lw, cos, sin, mask, graph)
                }
                Some(slot) => {
                    let kept = slot.as_mut().and_then(|kv| kv.stacked.take());
                    let (y, stacked) = fused_layer::forward_cached(
                        h,
                        &lw,
                        kept,
                        cos,
                        sin,
                        mask,
                        |k, v| match slot {
                            Some(kv) => kv.append(&k, &v),
                            None => {
                                *slot = Some(LayerKv::new(&k, &v)?);
                                Ok((k, v))
                            }
                        },
                    )?;
                    if let Some(kv) = slot.as_mut() {
                        kv.stacked = Some(stacked);
                    }
                    Ok(y)
                }
            };
        }
        let a = self
            .self_attn
            .forward(&self.input_layernorm.forward(h)?, rope, mask, slot)?;
        let h = (h + a)?;
        let m = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        h + m
    }

    /// The layer on a group-shared prefix `hp` `[P_B, P, d]` and the rows `hc` `[B, C, d]` that
    /// continue it, row `i` continuing prefix row `group[i]` (see
    /// [`fused_layer::forward_with`]); `None` where the fused layer does not apply.
    fn forward_shared(
        &self,
        hp: &Tensor,
        prefix: (&RopeTables, &Tensor),
        hc: &Tensor,
        rest: (&RopeTables, &Tensor),
        group: &Tensor,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Some(lw) = self.fused_weights(hp, prefix.0, Some(prefix.1))? else {
            return Ok(None);
        };
        if self.fused_weights(hc, rest.0, Some(rest.1))?.is_none() {
            return Ok(None);
        }
        let (Some((cp, sp)), Some((cc, sc))) = (prefix.0.host(), rest.0.host()) else {
            unreachable!("fused_weights checks the tables")
        };
        let tensors = lw.tensors();
        let graph = tensors
            .iter()
            .any(|t| t.track_op())
            .then(|| tensors.iter().map(|t| (*t).clone()).collect::<Vec<_>>());
        let d = hp.dim(2)?;
        let kvd = lw.kv_heads * lw.head_dim;
        let out = fused_layer::forward_with(hp, &lw, cp, sp, prefix.1, None, true, graph.clone())?;
        let yp = out.narrow(2, 0, d)?;
        let kv = out
            .narrow(2, d, 2 * kvd)?
            .contiguous()?
            .index_select(group, 0)?;
        let yc = fused_layer::forward_with(hc, &lw, cc, sc, rest.1, Some(&kv), false, graph)?;
        Ok(Some((yp, yc)))
    }

    /// The layer's weights for `fused_layer`, where it applies: CPU f32 with host rotary
    /// tables and a mask. With a cache the fused layer is inference only (it
    /// records no graph), as sampling is; without one it is a single autograd node.
    fn fused_weights(
        &self,
        h: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
    ) -> Result<Option<fused_layer::LayerWeights>> {
        let at = &self.self_attn;
        let (b, t, _) = h.dims3()?;
        let full_mask = mask.is_some_and(|m| m.dims().len() == 4 && m.dims()[..3] == [b, 1, t]);
        if rope.host().is_none() || !full_mask {
            return Ok(None);
        }
        if !super::ops::fused(h) {
            return Ok(None);
        }
        let bias = match (at.q_proj.bias(), at.k_proj.bias(), at.v_proj.bias()) {
            (Some(q), Some(k), Some(v)) => Some((q.clone(), k.clone(), v.clone())),
            (None, None, None) => None,
            _ => return Ok(None),
        };
        // Norms after biases are not a layer any checkpoint has; the fused layer does not do it.
        if at.o_proj.bias().is_some() || (bias.is_some() && at.qk_norm.is_some()) {
            return Ok(None);
        }
        let lw = fused_layer::LayerWeights {
            ln1: self.input_layernorm.weight().clone(),
            q: at.q_proj.weight().clone(),
            k: at.k_proj.weight().clone(),
            v: at.v_proj.weight().clone(),
            qkv_bias: bias,
            qk_norm: at
                .qk_norm
                .as_ref()
                .map(|(q, k)| (q.weight().clone(), k.weight().clone())),
            o: at.o_proj.weight().clone(),
            ln2: self.post_attention_layernorm.weight().clone(),
            gate: self.mlp.gate_proj.weight().clone(),
            up: self.mlp.up_proj.weight().clone(),
            down: self.mlp.down_proj.weight().clone(),
            eps: self.input_layernorm.eps() as f32,
            heads: at.heads,
            kv_heads: at.kv_heads,
            head_dim: at.head_dim,
        };
        Ok(Some(lw))
    }
}

/// The decoder: `model.*` plus `lm_head` (or the tied embedding).
#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    /// Precomputed 1-D tables; none for M-RoPE, whose tables depend on three axes.
    rotary: Option<Rotary>,
    cfg: DecoderConfig,
}

impl Decoder {
    /// `vb` is the checkpoint root (names `model.…` and `lm_head`).
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        Self::new_at(cfg, vb.pp("model"), vb)
    }

    /// The blocks under `m` (`embed_tokens`, `layers.N`, `norm`) and the head under
    /// `root.lm_head`: Qwen-VL checkpoints keep the decoder at `model.language_model`.
    pub fn new_at(cfg: &DecoderConfig, m: VarBuilder, root: VarBuilder) -> Result<Self> {
        let vb = root;
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
        let rotary = match cfg.mrope {
            Some(_) => None,
            None => Some(Rotary::new(
                cfg.head_dim(),
                cfg.max_position_embeddings,
                cfg.rope_theta,
                vb.device(),
            )?),
        };
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
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let rope = match &self.rotary {
            Some(r) => r.tables(positions)?,
            None => {
                // Text only: every M-RoPE axis at the same position is 1-D RoPE.
                let (b, t) = positions.dims2()?;
                let p: Vec<i64> = positions
                    .flatten_all()?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(i64::from)
                    .collect();
                self.rope_tables(&[p.clone(), p.clone(), p], b, t, x.device())?
            }
        };
        self.forward_rope(x, &rope, mask, cache, &[], None)
    }

    /// Rotary tables `[B, 1, T, hd/2]` of M-RoPE positions (`b · t` per axis, row-major).
    pub fn rope_tables(
        &self,
        axes: &[Vec<i64>; 3],
        b: usize,
        t: usize,
        dev: &Device,
    ) -> Result<RopeTables> {
        let hd = self.cfg.head_dim();
        let Some(m) = self.cfg.mrope else {
            let p: Vec<u32> = axes[0].iter().map(|&x| x as u32).collect();
            let rotary = self.rotary.as_ref().expect("1-D rope has tables");
            return rotary.tables(&Tensor::from_vec(p, (b, t), dev)?);
        };
        let (cos, sin) = mrope_tables(axes, hd, self.cfg.rope_theta, m.sections, m.layout)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        // The tables repeat each frequency in both halves; the rotation takes one half.
        let half =
            |v: Vec<f32>| -> Vec<f32> { v.chunks(hd).flat_map(|r| r[..hd / 2].to_vec()).collect() };
        let shape = (b, 1, t, hd / 2);
        RopeTables::new(
            Tensor::from_vec(half(cos), shape, dev)?,
            Tensor::from_vec(half(sin), shape, dev)?,
        )
    }

    /// The blocks on `x` `[B, T, d]` with given rotary tables. `addends[i]` `[B, T, d]` is added
    /// to layer `i`'s output (Qwen3-VL's DeepStack features at the image positions);
    /// `trace` receives each layer's output before that. Returns final-normed hidden states.
    pub fn forward_rope(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        addends: &[Tensor],
        mut trace: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            h = layer.forward(&h, rope, mask, slot)?;
            if let Some(t) = trace.as_mut() {
                t.push(h.clone());
            }
            if let Some(add) = addends.get(i) {
                h = (h + add)?;
            }
        }
        self.norm.forward(&h)
    }

    /// The blocks on rows that share prefixes: `xp` `[P_B, P, d]` the distinct prefixes (a
    /// group's prompt) with their tables and mask `[P_B, 1, P, P]`, `xc` `[B, C, d]` the rows
    /// continuing them, row `i` after prefix `group[i]` (`[B]`, u32), with their tables and
    /// mask `[B, 1, C, P + C]`. Each prefix is computed once however many rows continue it.
    /// `addends` are the prefixes' (as in [`Self::forward_rope`]: images sit in prompts).
    /// Returns both parts' final-normed hidden states, or `None` where the fused layer does
    /// not apply (the caller then lays the rows out whole).
    pub fn forward_shared(
        &self,
        xp: &Tensor,
        prefix: (&RopeTables, &Tensor),
        xc: &Tensor,
        rest: (&RopeTables, &Tensor),
        group: &Tensor,
        addends: &[Tensor],
    ) -> Result<Option<(Tensor, Tensor)>> {
        let (mut hp, mut hc) = (xp.clone(), xc.clone());
        for (i, layer) in self.layers.iter().enumerate() {
            match layer.forward_shared(&hp, prefix, &hc, rest, group)? {
                Some((p, c)) => (hp, hc) = (p, c),
                None => return Ok(None),
            }
            if let Some(add) = addends.get(i) {
                hp = (hp + add)?;
            }
        }
        Ok(Some((self.norm.forward(&hp)?, self.norm.forward(&hc)?)))
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
