//! Model configuration: HF Qwen2 `config.json` fields for the decoder, plus a `curric` section
//! holding the vision tower of the built-in tiny VLM and the preset it came from.

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The decoder, with HF Qwen2's `config.json` field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Set where it is not `hidden_size / num_attention_heads` (Qwen3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Biases on the q, k and v projections (Qwen2 has them, Qwen3 does not).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub attention_bias: bool,
    /// RMSNorm of each query and key head before the rotary embedding (Qwen3). Not an HF
    /// field: the model family implies it.
    #[serde(skip)]
    pub qk_norm: bool,
    /// Multimodal RoPE (the Qwen-VL decoders); none means 1-D RoPE. Read from
    /// `rope_scaling.mrope_section` by the Qwen-VL config.
    #[serde(skip)]
    pub mrope: Option<Mrope>,
}

/// How the Qwen-VL decoders split rotary frequencies among the temporal, row and column axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mrope {
    pub sections: [usize; 3],
    pub layout: super::mrope::MropeLayout,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

fn default_max_pos() -> usize {
    32768
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}

impl DecoderConfig {
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0
            || (self.head_dim.is_none()
                && !self.hidden_size.is_multiple_of(self.num_attention_heads))
        {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        if self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return Err("num_attention_heads must be a multiple of num_key_value_heads".into());
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return Err("head dimension must be even for RoPE".into());
        }
        if let Some(m) = &self.mrope {
            if m.sections.iter().sum::<usize>() != self.head_dim() / 2 {
                return Err(format!(
                    "mrope_section {:?} must sum to head_dim / 2 = {}",
                    m.sections,
                    self.head_dim() / 2
                ));
            }
        }
        Ok(())
    }
}

/// The ViT of the built-in tiny VLM: square RGB images cut into square patches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
}

fn default_ln_eps() -> f64 {
    1e-5
}

impl VisionConfig {
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err("vision image_size must be a multiple of patch_size".into());
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err("vision hidden_size must be a multiple of num_attention_heads".into());
        }
        Ok(())
    }
}

/// The curric-specific part of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CurricSection {
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub vision: Option<VisionConfig>,
}

/// A whole policy's config as written to `config.json`: HF Qwen2 fields at the top level (so
/// HF tools and candle-transformers' `qwen2` read the decoder), the vision tower under `curric`.
#[derive(Debug, Clone, PartialEq)]
pub struct VlmConfig {
    pub decoder: DecoderConfig,
    pub vision: Option<VisionConfig>,
    pub preset: Option<String>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

impl VlmConfig {
    /// Parses `config.json` text (HF Qwen2 fields, optional `curric` section).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let decoder: DecoderConfig =
            serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        decoder.validate()?;
        let curric: CurricSection = match v.get("curric") {
            Some(c) => serde_json::from_value(c.clone()).map_err(|e| format!("curric: {e}"))?,
            None => CurricSection::default(),
        };
        if let Some(vc) = &curric.vision {
            vc.validate()?;
        }
        // HF writes eos_token_id as an int or a list of ints.
        let first_id = |key: &str| -> Option<u32> {
            match v.get(key)? {
                serde_json::Value::Number(n) => n.as_u64().map(|x| x as u32),
                serde_json::Value::Array(a) => a.first()?.as_u64().map(|x| x as u32),
                _ => None,
            }
        };
        Ok(VlmConfig {
            decoder,
            vision: curric.vision,
            preset: curric.preset,
            eos_token_id: first_id("eos_token_id"),
            pad_token_id: first_id("pad_token_id"),
        })
    }

    /// `config.json` text. Carries every field candle-transformers' `qwen2::Config` requires.
    pub fn to_json(&self) -> String {
        let d = &self.decoder;
        let mut v = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "torch_dtype": "float32",
            "hidden_act": "silu",
            "use_sliding_window": false,
            "sliding_window": d.max_position_embeddings,
            "max_window_layers": d.num_hidden_layers,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
        });
        let obj = v.as_object_mut().expect("json object");
        if let serde_json::Value::Object(m) = serde_json::to_value(d).expect("serialisable") {
            obj.extend(m);
        }
        if let Some(e) = self.eos_token_id {
            obj.insert("eos_token_id".into(), e.into());
        }
        if let Some(p) = self.pad_token_id {
            obj.insert("pad_token_id".into(), p.into());
        }
        let curric = CurricSection {
            preset: self.preset.clone(),
            vision: self.vision.clone(),
        };
        obj.insert(
            "curric".into(),
            serde_json::to_value(curric).expect("serialisable"),
        );
        serde_json::to_string_pretty(&v).expect("serialisable")
    }
}

/// Built-in preset sizes, smallest first.
pub const PRESETS: [&str; 4] = ["nano", "micro", "small", "base"];

/// The config of a built-in preset for a tokenizer of `vocab_size` tokens. Images are 48×48
/// RGB cut into 16-px patches: the built-in suite's 3×3 grid puts one cell in each patch.
pub fn preset(name: &str, vocab_size: usize) -> Result<VlmConfig, ModelError> {
    // (d, layers, heads, kv heads, ffn, vision d, vision layers, vision heads, vision ffn)
    let (d, l, h, kv, ff, vd, vl, vh, vff) = match name {
        "nano" => (96, 2, 4, 2, 256, 64, 2, 4, 128),
        "micro" => (128, 6, 4, 2, 384, 128, 2, 4, 512),
        "small" => (256, 6, 8, 4, 704, 192, 3, 6, 768),
        "base" => (384, 10, 6, 2, 1024, 256, 4, 8, 1024),
        other => return Err(ModelError::UnknownPreset(other.to_string())),
    };
    Ok(VlmConfig {
        decoder: DecoderConfig {
            vocab_size,
            hidden_size: d,
            intermediate_size: ff,
            num_hidden_layers: l,
            num_attention_heads: h,
            num_key_value_heads: kv,
            max_position_embeddings: 2048,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            head_dim: None,
            attention_bias: true,
            qk_norm: false,
            mrope: None,
        },
        vision: Some(VisionConfig {
            image_size: 48,
            patch_size: 16,
            hidden_size: vd,
            intermediate_size: vff,
            num_hidden_layers: vl,
            num_attention_heads: vh,
            layer_norm_eps: 1e-5,
        }),
        preset: Some(name.to_string()),
        eos_token_id: None,
        pad_token_id: None,
    })
}
