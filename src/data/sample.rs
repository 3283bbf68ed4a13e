use std::fmt;

pub use crate::spec::Level;
use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The capability axis. The built-in suite uses the three named ones; external data may
/// name its own, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capability(pub String);

impl Capability {
    pub const PERCEPTION: &'static str = "perception";
    pub const TEXT_REASONING: &'static str = "text_reasoning";
    pub const VISUAL_REASONING: &'static str = "visual_reasoning";

    pub fn new(name: impl Into<String>) -> Self {
        Capability(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One training or evaluation example, whatever its source.
///
/// Field names follow EasyR1's JSONL format so that export and import are a plain mapping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Stable across runs: the pass-rate table and data cursors key on it.
    pub id: String,
    /// The prompt; `<image>` marks where each image goes.
    pub problem: String,
    /// The verifiable answer (a number, a word, a multiple-choice letter).
    pub answer: String,
    /// Decoded RGB images, in `<image>` order. Not serialised: JSONL stores paths.
    #[serde(skip)]
    pub images: Vec<Arc<RgbImage>>,
    pub capability: Capability,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<Level>,
    /// The base model's accuracy on this sample, when known (from the data or a probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_rate: Option<f64>,
    /// Words a good answer mentions (method A's keyword reward).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_words: Vec<String>,
    /// Ground-truth objects of a built-in scene, e.g. "red circle" (the scene_f1 reward).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// A reference completion for SFT, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Any other JSONL fields, kept for rewards.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Sample {
    /// A text sample with no images, level, pass rate, key words, objects or trace: the
    /// rest is set with struct update syntax (`Sample { pass_rate: Some(0.5), ..Sample::new(…) }`).
    pub fn new(
        id: impl Into<String>,
        problem: impl Into<String>,
        answer: impl Into<String>,
        capability: Capability,
    ) -> Self {
        Sample {
            id: id.into(),
            problem: problem.into(),
            answer: answer.into(),
            images: vec![],
            capability,
            difficulty: None,
            pass_rate: None,
            key_words: vec![],
            objects: vec![],
            trace: None,
            extra: Default::default(),
        }
    }
}
