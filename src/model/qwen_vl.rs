//! Qwen2.5-VL and Qwen3-VL (and Qwen2-VL, which Qwen2.5-VL grew from) as policies: the config as Hugging Face writes it, the vision tower
//! of the family in front of the Qwen decoder with multimodal RoPE, and the tensor names of
//! both checkpoint layouts in the wild.
//!
//! Parity: `tests/qwen_vl_model.rs` against Hugging Face's models on tiny random checkpoints
//! (`tests/fixtures/qwen_vl/make_qwen_vl.py`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use super::config::{DecoderConfig, Mrope};
use super::mrope::MropeLayout;
use super::qwen2::Decoder;
use super::{qwen25_vision, qwen3_vision};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen2Vl,
    Qwen25Vl,
    Qwen3Vl,
}

impl Family {
    /// The family a `config.json` declares by `model_type` or `architectures`, if any.
    pub fn detect(v: &Value) -> Option<Family> {
        let ty = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = v
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("");
        match (ty, arch) {
            ("qwen2_vl", _) | (_, "Qwen2VLForConditionalGeneration") => Some(Family::Qwen2Vl),
            ("qwen2_5_vl", _) | (_, "Qwen2_5_VLForConditionalGeneration") => Some(Family::Qwen25Vl),
            ("qwen3_vl", _) | (_, "Qwen3VLForConditionalGeneration") => Some(Family::Qwen3Vl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Qwen2Vl => "Qwen2-VL",
            Family::Qwen25Vl => "Qwen2.5-VL",
            Family::Qwen3Vl => "Qwen3-VL",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum VisionConfig {
    Qwen25(qwen25_vision::Config),
    /// Qwen3-VL's tower, or Qwen2-VL's (its `flavour`).
    Qwen3(qwen3_vision::Config),
}

/// A Qwen-VL `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub family: Family,
    pub text: DecoderConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    /// Every id that ends a completion (`eos_token_id` may be a list).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

impl Config {
    /// Parses either layout: decoder fields at the top level (Qwen2.5-VL's own files) or under
    /// `text_config` (newer ones), with `rope_scaling` or `rope_parameters`.
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let family = Family::detect(v).ok_or("not a Qwen2-VL, Qwen2.5-VL or Qwen3-VL config")?;
        let text = v.get("text_config").unwrap_or(v);
        let field = |key: &str| text.get(key).or_else(|| v.get(key));
        let int = |key: &str| -> std::result::Result<usize, String> {
            field(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| format!("no `{key}`"))
        };
        let float = |key: &str, default: f64| field(key).and_then(Value::as_f64).unwrap_or(default);
        let rope = field("rope_scaling")
            .filter(|r| r.is_object())
            .or_else(|| field("rope_parameters"))
            .ok_or("no `rope_scaling` or `rope_parameters` with an `mrope_section`")?;
        let sections: Vec<usize> = rope
            .get("mrope_section")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_default();
        let [t, h, w] = sections[..] else {
            return Err(format!(
                "`mrope_section` must be three numbers, not {:?}",
                rope.get("mrope_section")
            ));
        };
        let layout = match family {
            Family::Qwen2Vl | Family::Qwen25Vl => MropeLayout::Sectioned,
            Family::Qwen3Vl => MropeLayout::Interleaved,
        };
        let theta = rope
            .get("rope_theta")
            .and_then(Value::as_f64)
            .unwrap_or_else(|| float("rope_theta", 1e6));
        let tie = v
            .get("tie_word_embeddings")
            .or_else(|| text.get("tie_word_embeddings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let qwen3 = family == Family::Qwen3Vl;
        let text_cfg = DecoderConfig {
            vocab_size: int("vocab_size")?,
            hidden_size: int("hidden_size")?,
            intermediate_size: int("intermediate_size")?,
            num_hidden_layers: int("num_hidden_layers")?,
            num_attention_heads: int("num_attention_heads")?,
            num_key_value_heads: int("num_key_value_heads")?,
            max_position_embeddings: int("max_position_embeddings").unwrap_or(128_000),
            rope_theta: theta,
            rms_norm_eps: float("rms_norm_eps", 1e-6),
            tie_word_embeddings: tie,
            head_dim: if qwen3 { int("head_dim").ok() } else { None },
            attention_bias: field("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(!qwen3),
            qk_norm: qwen3,
            mrope: Some(Mrope {
                sections: [t, h, w],
                layout,
            }),
        };
        text_cfg.validate()?;
        let vc = v.get("vision_config").ok_or("no `vision_config`")?;
        let vint = |key: &str, default: Option<usize>| -> std::result::Result<usize, String> {
            vc.get(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .or(default)
                .ok_or_else(|| format!("no `vision_config.{key}`"))
        };
        let list = |key: &str| -> Vec<usize> {
            vc.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|x| x as usize))
                        .collect()
                })
                .unwrap_or_default()
        };
        // Qwen2-VL calls the tower's width `embed_dim` and its output width `hidden_size`.
        let qwen2 = family == Family::Qwen2Vl;
        let depth = vint("depth", None)?;
        let hidden = vint(if qwen2 { "embed_dim" } else { "hidden_size" }, None)?;
        let heads = vint("num_heads", None)?;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err("the vision tower's width must be a multiple of num_heads".into());
        }
        let out = vint(
            if qwen2 {
                "hidden_size"
            } else {
                "out_hidden_size"
            },
            Some(text_cfg.hidden_size),
        )?;
        if out != text_cfg.hidden_size {
            return Err(format!(
                "vision_config.out_hidden_size {out} differs from the decoder's hidden_size {}",
                text_cfg.hidden_size
            ));
        }
        let vision = match family {
            Family::Qwen25Vl => VisionConfig::Qwen25(qwen25_vision::Config {
                depth,
                hidden_size: hidden,
                num_heads: heads,
                intermediate_size: vint("intermediate_size", None)?,
                out_hidden_size: out,
                patch_size: vint("patch_size", Some(14))?,
                spatial_merge_size: vint("spatial_merge_size", Some(2))?,
                temporal_patch_size: vint("temporal_patch_size", Some(2))?,
                window_size: vint("window_size", Some(112))?,
                fullatt_block_indexes: list("fullatt_block_indexes"),
                rms_norm_eps: 1e-6,
            }),
            Family::Qwen2Vl => VisionConfig::Qwen3(qwen3_vision::Config {
                flavour: qwen3_vision::Flavour::Qwen2Vl,
                depth,
                hidden_size: hidden,
                num_heads: heads,
                intermediate_size: (hidden as f64
                    * vc.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0))
                    as usize,
                out_hidden_size: out,
                patch_size: vint("patch_size", Some(14))?,
                spatial_merge_size: vint("spatial_merge_size", Some(2))?,
                temporal_patch_size: vint("temporal_patch_size", Some(2))?,
                num_position_embeddings: 0,
                deepstack_visual_indexes: Vec::new(),
            }),
            Family::Qwen3Vl => VisionConfig::Qwen3(qwen3_vision::Config {
                flavour: qwen3_vision::Flavour::Qwen3Vl,
                depth,
                hidden_size: hidden,
                num_heads: heads,
                intermediate_size: vint("intermediate_size", None)?,
                out_hidden_size: out,
                patch_size: vint("patch_size", Some(16))?,
                spatial_merge_size: vint("spatial_merge_size", Some(2))?,
                temporal_patch_size: vint("temporal_patch_size", Some(2))?,
                num_position_embeddings: vint("num_position_embeddings", None)?,
                deepstack_visual_indexes: list("deepstack_visual_indexes"),
            }),
        };
        let ids = |key: &str| token_ids(v.get(key).or_else(|| text.get(key)));
        let image_token_id = *ids("image_token_id").first().ok_or("no `image_token_id`")?;
        Ok(Config {
            family,
            text: text_cfg,
            vision,
            image_token_id,
            eos_token_ids: ids("eos_token_id"),
            pad_token_id: ids("pad_token_id").first().copied(),
        })
    }

    pub fn merge_size(&self) -> usize {
        self.vision.sizes().merge
    }
}

/// The sizes both vision towers have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TowerSizes {
    pub hidden: usize,
    pub intermediate: usize,
    pub depth: usize,
    pub heads: usize,
    pub patch: usize,
    pub temporal: usize,
    pub merge: usize,
    pub out: usize,
}

impl VisionConfig {
    pub fn sizes(&self) -> TowerSizes {
        macro_rules! sizes {
            ($c:expr) => {
                TowerSizes {
                    hidden: $c.hidden_size,
                    intermediate: $c.intermediate_size,
                    depth: $c.depth,
                    heads: $c.num_heads,
                    patch: $c.patch_size,
                    temporal: $c.temporal_patch_size,
                    merge: $c.spatial_merge_size,
                    out: $c.out_hidden_size,
                }
            };
        }
        match self {
            VisionConfig::Qwen25(c) => sizes!(c),
            VisionConfig::Qwen3(c) => sizes!(c),
        }
    }
}

/// Token ids written as one number or a list (`eos_token_id` is either).
pub fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// The two tensor-name layouts of Qwen-VL checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `visual.*`, `model.layers.*`, `lm_head.weight` (Qwen2.5-VL's released files).
    Flat,
    /// `model.visual.*`, `model.language_model.*`, `lm_head.weight` (Qwen3-VL, newer saves).
    Nested,
}

impl Layout {
    /// The layout of a checkpoint's tensor names.
    pub fn of<'a>(mut names: impl Iterator<Item = &'a String>) -> Layout {
        if names.any(|n| n.starts_with("model.language_model.") || n.starts_with("model.visual.")) {
            Layout::Nested
        } else {
            Layout::Flat
        }
    }

    /// A name of this layout as the model names it (the nested layout).
    pub fn to_model(self, name: &str) -> String {
        match self {
            Layout::Nested => name.to_string(),
            Layout::Flat => {
                if name.starts_with("visual.") {
                    format!("model.{name}")
                } else if let Some(rest) = name.strip_prefix("model.") {
                    format!("model.language_model.{rest}")
                } else {
                    name.to_string()
                }
            }
        }
    }

    /// A model name as this layout writes it.
    pub fn from_model(self, name: &str) -> String {
        match self {
            Layout::Nested => name.to_string(),
            Layout::Flat => {
                if let Some(rest) = name.strip_prefix("model.language_model.") {
                    format!("model.{rest}")
                } else if let Some(rest) = name.strip_prefix("model.") {
                    rest.to_string()
                } else {
                    name.to_string()
                }
            }
        }
    }
}

/// The names a `freeze` prefix may use for a model variable: the name itself, as the flat
/// layout writes it, and without the leading `model.`.
pub fn names_of(name: &str) -> Vec<String> {
    let mut names = vec![name.to_string()];
    for n in [
        Layout::Flat.from_model(name),
        name.trim_start_matches("model.").to_string(),
    ] {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Whether `freeze` prefixes cover a variable: one of its `names` is a prefix or lies under
/// one (`visual` covers `visual.*`). A trailing `.` on a prefix is ignored.
pub fn frozen_by(names: &[String], prefixes: &[String]) -> bool {
    prefixes.iter().map(|p| p.trim_end_matches('.')).any(|p| {
        names
            .iter()
            .any(|n| n == p || (n.starts_with(p) && n[p.len()..].starts_with('.')))
    })
}

pub enum VisionTower {
    Qwen25(qwen25_vision::VisionTower),
    Qwen3(qwen3_vision::VisionTower),
}

/// Image features for the decoder: merged tokens `[tokens, d]` and, for Qwen3-VL, one
/// DeepStack tensor of the same shape per tapped block.
pub struct ImageFeatures {
    pub embeds: Tensor,
    pub deepstack: Vec<Tensor>,
}

/// A Qwen-VL model: `model.visual` and the decoder at `model.language_model` with `lm_head`.
pub struct QwenVl {
    pub visual: VisionTower,
    pub decoder: Decoder,
}

impl QwenVl {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let vis = vb.pp("model").pp("visual");
        let visual = match &cfg.vision {
            VisionConfig::Qwen25(c) => {
                VisionTower::Qwen25(qwen25_vision::VisionTower::new(c, vis)?)
            }
            VisionConfig::Qwen3(c) => VisionTower::Qwen3(qwen3_vision::VisionTower::new(c, vis)?),
        };
        let decoder = Decoder::new_at(&cfg.text, vb.pp("model").pp("language_model"), vb)?;
        Ok(Self { visual, decoder })
    }

    /// Features of `pixels` `[patches, C·T·P·P]` of the images `grids`, in order.
    pub fn encode_images(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<ImageFeatures> {
        Ok(match &self.visual {
            VisionTower::Qwen25(v) => ImageFeatures {
                embeds: v.forward(pixels, grids)?,
                deepstack: Vec::new(),
            },
            VisionTower::Qwen3(v) => {
                let out = v.forward(pixels, grids)?;
                ImageFeatures {
                    embeds: out.embeds,
                    deepstack: out.deepstack,
                }
            }
        })
    }
}
