//! `clip_score`: CLIPScore of the image against the completion's description, with method A's
//! threshold rule. The CLIP model is candle-transformers' (frozen: its fused ops have no
//! backward pass, which a reward never needs), loaded from a local directory.

use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::{
    self, text_model::Activation, text_model::ClipTextConfig, vision_model::ClipVisionConfig,
    ClipConfig, ClipModel,
};
use image::RgbImage;
use serde::Deserialize;

use super::{Reward, RewardError};
use crate::data::Sample;
use crate::model::Completion;

/// Method A's rule: 1 if s ≥ threshold, else max(s, 0)/threshold.
pub fn clip_rule(similarity: f32, threshold: f32) -> f32 {
    if similarity >= threshold {
        1.0
    } else {
        similarity.max(0.0) / threshold
    }
}

#[derive(Deserialize)]
struct HfText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    #[serde(default = "d77")]
    max_position_embeddings: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct HfVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
    #[serde(default = "d3")]
    num_channels: usize,
    #[serde(default)]
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct HfClip {
    text_config: HfText,
    vision_config: HfVision,
    #[serde(default = "d512")]
    projection_dim: usize,
    #[serde(default = "dscale")]
    logit_scale_init_value: f32,
}

fn d77() -> usize {
    77
}
fn d3() -> usize {
    3
}
fn d512() -> usize {
    512
}
fn dscale() -> f32 {
    2.6592
}

const MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The CLIPScore reward term.
pub struct ClipScore {
    model: ClipModel,
    tokenizer: tokenizers::Tokenizer,
    image_size: usize,
    max_tokens: usize,
    threshold: f32,
    device: Device,
    /// Image embeddings of recent images: a group scores G completions of one image. The Arc
    /// is kept so that a pointer cannot be reused by another image while cached.
    cache: Mutex<Vec<(Arc<RgbImage>, Tensor)>>,
}

impl ClipScore {
    /// Parses an HF CLIP `config.json` (text_config, vision_config, projection_dim).
    pub fn parse_config(json: &str) -> Result<ClipConfig, String> {
        let c: HfClip = serde_json::from_str(json).map_err(|e| e.to_string())?;
        for act in [&c.text_config.hidden_act, &c.vision_config.hidden_act]
            .into_iter()
            .flatten()
        {
            if act != "quick_gelu" {
                return Err(format!(
                    "hidden_act `{act}` is not supported (quick_gelu only)"
                ));
            }
        }
        Ok(ClipConfig {
            text_config: ClipTextConfig {
                vocab_size: c.text_config.vocab_size,
                embed_dim: c.text_config.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: c.text_config.intermediate_size,
                max_position_embeddings: c.text_config.max_position_embeddings,
                pad_with: None,
                num_hidden_layers: c.text_config.num_hidden_layers,
                num_attention_heads: c.text_config.num_attention_heads,
                projection_dim: c.projection_dim,
            },
            vision_config: ClipVisionConfig {
                embed_dim: c.vision_config.hidden_size,
                activation: Activation::QuickGelu,
                intermediate_size: c.vision_config.intermediate_size,
                num_hidden_layers: c.vision_config.num_hidden_layers,
                num_attention_heads: c.vision_config.num_attention_heads,
                projection_dim: c.projection_dim,
                num_channels: c.vision_config.num_channels,
                image_size: c.vision_config.image_size,
                patch_size: c.vision_config.patch_size,
            },
            logit_scale_init_value: c.logit_scale_init_value,
            image_size: c.vision_config.image_size,
        })
    }

    /// Loads `dir/config.json`, `dir/model.safetensors` and `dir/tokenizer.json`. Every
    /// tensor the model needs must be in the checkpoint.
    pub fn load(dir: &Path, threshold: f64, device: &Device) -> Result<Self, RewardError> {
        let err = |msg: String| RewardError::ClipModel {
            dir: dir.display().to_string(),
            msg,
        };
        if !(threshold > 0.0 && threshold.is_finite()) {
            return Err(RewardError::BadParam {
                term: "clip_score".into(),
                param: "threshold".into(),
                msg: format!("must be > 0, got {threshold}"),
            });
        }
        let json = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| err(format!("config.json: {e}")))?;
        let cfg = Self::parse_config(&json).map_err(|e| err(format!("config.json: {e}")))?;
        let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), device)
            .map_err(|e| err(format!("model.safetensors: {e}")))?;
        // candle's CLIP draws a random class embedding when the checkpoint lacks one; a
        // reward must be deterministic, so insist on it.
        let ce = "vision_model.embeddings.class_embedding";
        if !tensors.contains_key(ce) {
            return Err(err(format!("model.safetensors lacks `{ce}`")));
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = ClipModel::new(vb, &cfg).map_err(|e| err(format!("model.safetensors: {e}")))?;
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err(format!("tokenizer.json: {e}")))?;
        Ok(ClipScore {
            model,
            tokenizer,
            image_size: cfg.image_size,
            max_tokens: cfg.text_config.max_position_embeddings,
            threshold: threshold as f32,
            device: device.clone(),
            cache: Mutex::new(Vec::new()),
        })
    }

    fn pixels(&self, img: &RgbImage) -> candle_core::Result<Tensor> {
        let n = self.image_size as u32;
        let img = image::imageops::resize(img, n, n, image::imageops::FilterType::Triangle);
        let hw = (n * n) as usize;
        let mut data = vec![0f32; 3 * hw];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                data[c * hw + i] = (p[c] as f32 / 255.0 - MEAN[c]) / STD[c];
            }
        }
        Tensor::from_vec(data, (1, 3, n as usize, n as usize), &self.device)
    }

    fn image_embedding(&self, img: &Arc<RgbImage>) -> candle_core::Result<Tensor> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((_, t)) = cache.iter().find(|(k, _)| Arc::ptr_eq(k, img)) {
                return Ok(t.clone());
            }
        }
        let e = clip::div_l2_norm(&self.model.get_image_features(&self.pixels(img)?)?)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= 64 {
                cache.remove(0);
            }
            cache.push((img.clone(), e.clone()));
        }
        Ok(e)
    }

    /// Cosine similarity of the image and the text; `None` when the text has no token.
    pub fn similarity(&self, img: &Arc<RgbImage>, text: &str) -> candle_core::Result<Option<f32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| candle_core::Error::Msg(format!("tokenizer: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        ids.truncate(self.max_tokens);
        if ids.is_empty() {
            return Ok(None);
        }
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), &self.device)?;
        let t = clip::div_l2_norm(&self.model.get_text_features(&ids)?)?;
        let i = self.image_embedding(img)?;
        let s = (t * i)?.sum(D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(s.first().copied())
    }
}

/// The text CLIP sees: method A's "### Image Description:" section when present, else the
/// whole completion.
fn description(text: &str) -> &str {
    const H: &str = "### Image Description:";
    match text.find(H) {
        Some(p) => {
            let rest = &text[p + H.len()..];
            rest[..rest.find("###").unwrap_or(rest.len())].trim()
        }
        None => text.trim(),
    }
}

impl Reward for ClipScore {
    fn name(&self) -> &str {
        "clip_score"
    }

    /// 0 without an image, without description text, or if CLIP fails (logged).
    fn score(&self, sample: &Sample, completion: &Completion) -> f32 {
        let Some(img) = sample.images.first() else {
            return 0.0;
        };
        let text = description(&completion.text);
        if text.is_empty() {
            return 0.0;
        }
        match self.similarity(img, text) {
            Ok(Some(s)) if s.is_finite() => clip_rule(s, self.threshold),
            Ok(_) => 0.0,
            Err(e) => {
                tracing::warn!("clip_score on sample {}: {e}", sample.id);
                0.0
            }
        }
    }

    fn sub_scores(&self, sample: &Sample, completion: &Completion) -> Vec<(&'static str, f32)> {
        let s = sample
            .images
            .first()
            .and_then(|img| {
                self.similarity(img, description(&completion.text))
                    .ok()
                    .flatten()
            })
            .unwrap_or(0.0);
        vec![("similarity", s)]
    }
}
