//! Verifiable rewards: each term scores a completion against its sample; a reward set is a
//! weighted sum of terms. `catalog` is the static list of terms and parameters that the
//! checker validates `.curr` files against, so the language and the registry cannot drift.

pub mod catalog;
mod clip;
pub mod extract;
mod terms;

use serde_json::{Map, Value};

use crate::data::Sample;
use crate::model::Completion;

pub use clip::{clip_rule, ClipScore};
pub use terms::{Accuracy, Compare, Format, KeywordRecall, LengthCap, SceneF1, SoftOverlong};

/// Why a reward term could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("unknown reward term `{0}` (known: accuracy, format, soft_overlong, length_cap, keyword_recall, scene_f1, clip_score)")]
    UnknownTerm(String),
    #[error("reward `{term}`: parameter `{param}`: {msg}")]
    BadParam {
        term: String,
        param: String,
        msg: String,
    },
    #[error("reward `{term}`: unknown parameter `{param}`")]
    UnknownParam { term: String, param: String },
    #[error("clip_score: cannot load the CLIP model from {dir}: {msg}")]
    ClipModel { dir: String, msg: String },
}

/// A verifiable reward term.
pub trait Reward: Send + Sync {
    /// The catalogue name of the term.
    fn name(&self) -> &str;
    /// The reward of `completion` for `sample`; always finite.
    fn score(&self, sample: &Sample, completion: &Completion) -> f32;
    /// Named parts of the score worth logging (e.g. precision and recall of an F1).
    fn sub_scores(&self, _sample: &Sample, _completion: &Completion) -> Vec<(&'static str, f32)> {
        Vec::new()
    }
}

/// Builds the term `name` from its arguments. `args` normally carries every parameter (the
/// plan fills defaults); parameters left out take the catalogue default here too.
pub fn build(name: &str, args: &Map<String, Value>) -> Result<Box<dyn Reward>, RewardError> {
    let info = catalog::term(name).ok_or_else(|| RewardError::UnknownTerm(name.into()))?;
    for k in args.keys() {
        if !info.params.iter().any(|p| p.name == k) {
            return Err(RewardError::UnknownParam {
                term: name.into(),
                param: k.clone(),
            });
        }
    }
    let p = Params { term: info, args };
    Ok(match name {
        "accuracy" => Box::new(Accuracy::new(
            &p.str("extract")?,
            &p.str("compare")?,
            p.num("tolerance")?,
        )?),
        "format" => Box::new(Format::new(
            &p.str("style")?,
            p.str_list("headers")?,
            p.opt_str("pattern")?,
        )?),
        "soft_overlong" => Box::new(SoftOverlong::new(p.int("max")?, p.int("buffer")?)?),
        "length_cap" => Box::new(LengthCap::new(p.int("max")?)?),
        "keyword_recall" => Box::new(KeywordRecall),
        "scene_f1" => Box::new(SceneF1),
        "clip_score" => {
            let dir = p.opt_str("model")?.ok_or_else(|| RewardError::BadParam {
                term: name.into(),
                param: "model".into(),
                msg: "clip_score needs `model`, a directory with config.json, model.safetensors and tokenizer.json".into(),
            })?;
            Box::new(ClipScore::load(
                std::path::Path::new(&dir),
                p.num("threshold")?,
                &candle_core::Device::Cpu,
            )?)
        }
        other => return Err(RewardError::UnknownTerm(other.into())),
    })
}

/// Reads a term's parameters, falling back to catalogue defaults.
struct Params<'a> {
    term: &'static catalog::TermInfo,
    args: &'a Map<String, Value>,
}

impl Params<'_> {
    fn bad(&self, param: &str, msg: impl Into<String>) -> RewardError {
        RewardError::BadParam {
            term: self.term.name.into(),
            param: param.into(),
            msg: msg.into(),
        }
    }

    fn value(&self, name: &str) -> Result<Option<Value>, RewardError> {
        if let Some(v) = self.args.get(name) {
            return Ok(Some(v.clone()));
        }
        let info = self
            .term
            .params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| self.bad(name, "not a parameter of this term"))?;
        Ok(match info.default {
            catalog::Default::Required => return Err(self.bad(name, "is required")),
            catalog::Default::Absent => None,
            catalog::Default::Number(x) => Some(Value::from(x)),
            catalog::Default::Str(s) => Some(Value::from(s)),
            catalog::Default::StrList(l) => Some(Value::from(l.to_vec())),
        })
    }

    fn num(&self, name: &str) -> Result<f64, RewardError> {
        self.value(name)?
            .and_then(|v| v.as_f64())
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.bad(name, "expected a finite number"))
    }

    fn int(&self, name: &str) -> Result<usize, RewardError> {
        let v = self.value(name)?;
        v.as_ref()
            .and_then(|v| v.as_u64())
            .or_else(|| {
                v.as_ref()
                    .and_then(|v| v.as_f64())
                    .filter(|x| *x >= 0.0 && x.fract() == 0.0)
                    .map(|x| x as u64)
            })
            .map(|x| x as usize)
            .ok_or_else(|| self.bad(name, "expected a non-negative integer"))
    }

    fn opt_str(&self, name: &str) -> Result<Option<String>, RewardError> {
        match self.value(name)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(name, "expected a string")),
        }
    }

    fn str(&self, name: &str) -> Result<String, RewardError> {
        self.opt_str(name)?
            .ok_or_else(|| self.bad(name, "expected a string"))
    }

    fn str_list(&self, name: &str) -> Result<Vec<String>, RewardError> {
        match self.value(name)? {
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(self.bad(name, "expected a list of strings")),
                })
                .collect(),
            _ => Err(self.bad(name, "expected a list of strings")),
        }
    }
}

/// One weighted term of a reward set.
pub struct RewardTerm {
    /// Unique within the set; the name, suffixed `#2`, `#3`… when a term repeats.
    pub label: String,
    pub weight: f32,
    pub reward: Box<dyn Reward>,
}

/// The scores of one completion: weighted total and the unweighted term scores, in term order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub total: f32,
    pub terms: Vec<f32>,
}

/// A weighted sum of reward terms.
#[derive(Default)]
pub struct RewardSet {
    terms: Vec<RewardTerm>,
}

impl RewardSet {
    pub fn new() -> Self {
        RewardSet::default()
    }

    /// Grading by the answer alone (`accuracy` with its defaults): what eval phases without a
    /// reward set and `curric compare`'s shared eval use.
    pub fn accuracy() -> Result<Self, RewardError> {
        let mut set = RewardSet::new();
        set.push(1.0, build("accuracy", &Map::new())?);
        Ok(set)
    }

    /// Builds every `(name, weight, args)` term.
    pub fn from_spec<'a>(
        spec: impl IntoIterator<Item = (&'a str, f32, &'a Map<String, Value>)>,
    ) -> Result<Self, RewardError> {
        let mut set = RewardSet::new();
        for (name, weight, args) in spec {
            set.push(weight, build(name, args)?);
        }
        Ok(set)
    }

    /// Adds a term; its label is its name, made unique.
    pub fn push(&mut self, weight: f32, reward: Box<dyn Reward>) {
        let base = reward.name().to_string();
        let mut label = base.clone();
        let mut k = 1;
        while self.terms.iter().any(|t| t.label == label) {
            k += 1;
            label = format!("{base}#{k}");
        }
        self.terms.push(RewardTerm {
            label,
            weight,
            reward,
        });
    }

    pub fn terms(&self) -> &[RewardTerm] {
        &self.terms
    }

    pub fn labels(&self) -> Vec<String> {
        self.terms.iter().map(|t| t.label.clone()).collect()
    }

    pub fn score(&self, sample: &Sample, completion: &Completion) -> Scored {
        let terms: Vec<f32> = self
            .terms
            .iter()
            .map(|t| {
                let s = t.reward.score(sample, completion);
                // A term is documented to be finite; guard anyway so that one bad term cannot
                // poison the advantages.
                if s.is_finite() {
                    s
                } else {
                    0.0
                }
            })
            .collect();
        let total = self
            .terms
            .iter()
            .zip(&terms)
            .map(|(t, s)| t.weight * s)
            .sum();
        Scored { total, terms }
    }
}
