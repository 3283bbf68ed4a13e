//! What training a policy costs in memory, from its config alone (a 7B checkpoint is never
//! loaded to plan it): parameters by name group, so `freeze` prefixes split them into
//! trainable and frozen, and the bytes a GRPO or SFT phase holds at its peak — weights,
//! gradients, AdamW's two moments, the reference copy, and the larger of the rollout's KV
//! cache and the update's saved activations (they are never alive together).
//!
//! Activations count what curric's autograd keeps per token and layer for the backward
//! pass (f32): the block's inputs, norms, q/k/v before and after RoPE, attention output,
//! the MLP's four intermediates, and the attention probabilities over every key; plus the
//! logits, log-softmax and its exponential at each completion position, and the vision tower's
//! blocks per image patch.

use super::config::{DecoderConfig, VlmConfig};
use super::qwen3_vision;
use super::qwen_vl::{self, VisionConfig};
use super::qwen_vl_image::{smart_resize, ImageProcessorConfig};

/// A policy's parameters by group and the sizes its activations depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// `(name prefix, parameters)`, one per embedding, block, norm and head.
    pub groups: Vec<(String, u64)>,
    pub decoder: DecoderConfig,
    pub vision: Option<VisionShape>,
    /// Decoder tokens of one typical image (see [`TYPICAL_IMAGE`]).
    pub image_tokens: u64,
    /// Qwen-VL names are matched in both checkpoint layouts.
    pub qwen_vl: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisionShape {
    pub hidden: u64,
    pub intermediate: u64,
    pub depth: u64,
    pub heads: u64,
    /// Patches of one typical image.
    pub patches: u64,
}

/// The image size a plan assumes for a Qwen-VL prompt, in pixels: the size the papers'
/// recipes resize to (EasyR1's `max_pixels` 448² keeps this under its budget).
pub const TYPICAL_IMAGE: (usize, usize) = (448, 448);

/// Bytes of a phase at its peak.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Footprint {
    pub weights: u64,
    /// Accumulated in f32.
    pub grads: u64,
    /// AdamW's two f32 moments, and its f32 master weights when the weights are bf16.
    pub moments: u64,
    pub reference: u64,
    pub kv_cache: u64,
    pub activations: u64,
}

impl Footprint {
    pub fn peak(&self) -> u64 {
        self.weights
            + self.grads
            + self.moments
            + self.reference
            + self.kv_cache.max(self.activations)
    }
}

/// What one step of a phase runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// Completions sampled per step (G × prompts; 0 for a phase without rollouts).
    pub rollout_rows: u64,
    /// Rows per forward/backward of the update.
    pub micro_batch: u64,
    /// Prompt tokens per row, images included.
    pub prompt_tokens: u64,
    pub new_tokens: u64,
    pub images_per_row: u64,
    /// Whether a frozen reference copy is kept (β > 0).
    pub reference: bool,
    /// Bytes per weight and activation: 4 for f32, 2 for bf16.
    pub bytes: u64,
}

const F32: u64 = 4;

fn decoder_groups(d: &DecoderConfig, prefix: &str, head: &str) -> Vec<(String, u64)> {
    let (h, v, f) = (
        d.hidden_size as u64,
        d.vocab_size as u64,
        d.intermediate_size as u64,
    );
    let hd = d.head_dim() as u64;
    let (q, kv) = (
        d.num_attention_heads as u64 * hd,
        d.num_key_value_heads as u64 * hd,
    );
    let bias = if d.attention_bias { q + 2 * kv } else { 0 };
    let qk_norm = if d.qk_norm { 2 * hd } else { 0 };
    let layer = h * (q + 2 * kv) + bias + q * h + qk_norm + 3 * h * f + 2 * h;
    let mut g = vec![(format!("{prefix}.embed_tokens"), v * h)];
    g.extend((0..d.num_hidden_layers).map(|i| (format!("{prefix}.layers.{i}"), layer)));
    g.push((format!("{prefix}.norm"), h));
    if !d.tie_word_embeddings {
        g.push((head.to_string(), v * h));
    }
    g
}

fn qwen_vision_groups(v: &VisionConfig) -> Vec<(String, u64)> {
    let p = "model.visual";
    let z = v.sizes();
    let [h, i, t, ps, m, out] = [
        z.hidden,
        z.intermediate,
        z.temporal,
        z.patch,
        z.merge,
        z.out,
    ]
    .map(|x| x as u64);
    let hm = h * m * m;
    let attention = (3 * h * h + 3 * h) + (h * h + h);
    let fcs = (hm * hm + hm) + (out * hm + out);
    let mut g = Vec::new();
    match v {
        VisionConfig::Qwen25(_) => {
            g.push((format!("{p}.patch_embed"), h * 3 * t * ps * ps));
            // RMSNorms and SwiGLU.
            let block = 2 * h + attention + 2 * (i * h + i) + (h * i + h);
            g.extend((0..z.depth).map(|k| (format!("{p}.blocks.{k}"), block)));
            g.push((format!("{p}.merger"), h + fcs));
        }
        VisionConfig::Qwen3(c) => {
            let qwen3 = c.flavour == qwen3_vision::Flavour::Qwen3Vl;
            let bias = if qwen3 { h } else { 0 };
            g.push((format!("{p}.patch_embed"), h * 3 * t * ps * ps + bias));
            if qwen3 {
                g.push((
                    format!("{p}.pos_embed"),
                    c.num_position_embeddings as u64 * h,
                ));
            }
            // LayerNorms and a two-layer MLP.
            let block = 4 * h + attention + (i * h + i) + (h * i + h);
            g.extend((0..z.depth).map(|k| (format!("{p}.blocks.{k}"), block)));
            g.push((format!("{p}.merger"), 2 * h + fcs));
            g.extend(
                (0..c.deepstack_visual_indexes.len())
                    .map(|k| (format!("{p}.deepstack_merger_list.{k}"), 2 * hm + fcs)),
            );
        }
    }
    g
}

impl ModelShape {
    /// A Qwen-VL checkpoint's shape from its `config.json` and `preprocessor_config.json`.
    pub fn qwen_vl(cfg: &qwen_vl::Config, images: &ImageProcessorConfig) -> Self {
        let mut groups = qwen_vision_groups(&cfg.vision);
        groups.extend(decoder_groups(&cfg.text, "model.language_model", "lm_head"));
        let (hh, ww) = smart_resize(
            TYPICAL_IMAGE.0,
            TYPICAL_IMAGE.1,
            images.factor(),
            images.min_pixels,
            images.max_pixels,
        )
        .unwrap_or(TYPICAL_IMAGE);
        let patches = ((hh / images.patch_size) * (ww / images.patch_size)) as u64;
        let merge = (images.merge_size * images.merge_size) as u64;
        let z = cfg.vision.sizes();
        let (hidden, intermediate, depth, heads) = (z.hidden, z.intermediate, z.depth, z.heads);
        ModelShape {
            groups,
            decoder: cfg.text.clone(),
            vision: Some(VisionShape {
                hidden: hidden as u64,
                intermediate: intermediate as u64,
                depth: depth as u64,
                heads: heads as u64,
                patches,
            }),
            image_tokens: patches / merge,
            qwen_vl: true,
        }
    }

    /// The built-in model or a text-only Qwen2 from its variables' names and sizes.
    pub fn from_vars(cfg: &VlmConfig, vars: impl IntoIterator<Item = (String, u64)>) -> Self {
        let vision = cfg.vision.as_ref().map(|v| VisionShape {
            hidden: v.hidden_size as u64,
            intermediate: v.intermediate_size as u64,
            depth: v.num_hidden_layers as u64,
            heads: v.num_attention_heads as u64,
            patches: v.num_patches() as u64,
        });
        ModelShape {
            groups: vars.into_iter().collect(),
            decoder: cfg.decoder.clone(),
            image_tokens: vision.map_or(0, |v| v.patches),
            vision,
            qwen_vl: false,
        }
    }

    /// A text-only Qwen2 checkpoint's shape from its config.
    pub fn qwen2(cfg: &DecoderConfig) -> Self {
        ModelShape {
            groups: decoder_groups(cfg, "model", "lm_head"),
            decoder: cfg.clone(),
            vision: None,
            image_tokens: 0,
            qwen_vl: false,
        }
    }

    fn is_frozen(&self, group: &str, frozen: &[String]) -> bool {
        let names = if self.qwen_vl {
            qwen_vl::names_of(group)
        } else {
            vec![group.to_string()]
        };
        qwen_vl::frozen_by(&names, frozen)
    }

    /// `(trainable, frozen)` parameters under the `freeze` prefixes.
    pub fn params(&self, frozen: &[String]) -> (u64, u64) {
        self.groups.iter().fold((0, 0), |(t, f), (name, n)| {
            if self.is_frozen(name, frozen) {
                (t, f + n)
            } else {
                (t + n, f)
            }
        })
    }

    pub fn footprint(&self, frozen: &[String], w: &Workload) -> Footprint {
        let (trainable, frozen_n) = self.params(frozen);
        let total = trainable + frozen_n;
        let d = &self.decoder;
        let (h, f, v) = (
            d.hidden_size as u64,
            d.intermediate_size as u64,
            d.vocab_size as u64,
        );
        let hd = d.head_dim() as u64;
        let (heads, kv) = (d.num_attention_heads as u64, d.num_key_value_heads as u64);
        let layers = d.num_hidden_layers as u64;
        let seq = w.prompt_tokens + w.new_tokens;
        let b = w.bytes;
        let kv_cache = 2 * layers * kv * hd * w.rollout_rows * seq * b;
        let per_token_layer = 10 * h + 4 * f + 2 * (heads + 2 * kv) * hd + 2 * heads * seq;
        let head = 3 * v * w.new_tokens;
        let vision = self.vision.map_or(0, |vs| {
            let per_patch = 10 * vs.hidden + 4 * vs.intermediate + 2 * vs.heads * vs.patches;
            w.images_per_row * vs.patches * vs.depth * per_patch
        });
        let activations = w.micro_batch * (seq * layers * per_token_layer + head + vision) * b;
        let master = if b < F32 { trainable * F32 } else { 0 };
        Footprint {
            weights: total * b,
            grads: trainable * F32,
            moments: 2 * trainable * F32 + master,
            reference: if w.reference { total * b } else { 0 },
            kv_cache,
            activations,
        }
    }
}
