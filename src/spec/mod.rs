//! curric's vocabulary: the checked curriculum, every name resolved, every number in range,
//! every default filled. The checker produces these types, the plan carries them inside its
//! phases and the executor, the sampler and the GRPO step read them as they are: there is
//! one `Order`, one `Stop`, one `KlEstimator`, and a phase's settings are one [`Settings`]
//! variant per kind, so a grpo phase without grpo settings cannot be written down.
//!
//! Every key a `.curr` file can set (its kinds, default, range and help) is in one table,
//! [`keys::KEYS`], which drives the checker and from which the key tables of
//! `grammar/README.md` are generated.

pub mod keys;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use std::str::FromStr;

/// The difficulty axis as discrete levels. Pass-rate bands map onto these (see `difficulty { }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Easy,
    Medium,
    Hard,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Easy, Level::Medium, Level::Hard];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Easy => "easy",
            Level::Medium => "medium",
            Level::Hard => "hard",
        }
    }

    /// 0 for easy, 1 for medium, 2 for hard: the order an easy → hard sampler walks.
    pub fn rank(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "easy" => Ok(Level::Easy),
            "medium" => Ok(Level::Medium),
            "hard" => Ok(Level::Hard),
            other => Err(format!(
                "unknown difficulty level `{other}` (easy, medium, hard)"
            )),
        }
    }
}

/// Which policy to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// The built-in tiny VLM with a size preset: `nano`, `micro`, `small`, `base`.
    TinyVlm { preset: String },
    /// A local Hugging Face checkpoint directory.
    Local { path: String },
    /// A hub repo id, resolved from the local Hugging Face cache.
    Hub { repo: String },
}

pub const PRESETS: &[&str] = &["nano", "micro", "small", "base"];

/// What the policy's weights and activations are held and computed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
}

impl Dtype {
    pub fn is_f32(&self) -> bool {
        *self == Dtype::F32
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::TinyVlm { preset } => write!(f, "tiny-vlm:{preset}"),
            ModelSpec::Local { path } => write!(f, "local:{path}"),
            ModelSpec::Hub { repo } => write!(f, "hf:{repo}"),
        }
    }
}

/// Inclusive `[lo, hi]` pass-rate band.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub lo: f64,
    pub hi: f64,
}

impl Band {
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// Sample filters; all given ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Keep samples whose pass rate lies in this band.
    pub pass_rate: Option<Band>,
    /// Keep samples of this capability.
    pub capability: Option<String>,
    /// Keep samples at these levels.
    pub difficulty: Option<Vec<Level>>,
    /// Drop samples with pass rate 1 (always solved: their groups teach nothing).
    pub drop_solved: bool,
    /// Drop samples with pass rate 0 (never solved).
    pub drop_unsolved: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceKind {
    /// The built-in procedural suite: `n` samples per level of one capability.
    Suite {
        capability: String,
        levels: Vec<Level>,
        n: u64,
        seed: u64,
        /// Task families to draw from (empty: every family of each level).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        families: Vec<String>,
    },
    /// An EasyR1-style JSONL file; `path` is as written, `resolved` relative to the
    /// curriculum's directory.
    Jsonl { path: String, resolved: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    #[serde(flatten)]
    pub kind: SourceKind,
    pub filters: Filters,
}

impl Source {
    pub fn capability(&self) -> Option<&str> {
        match &self.kind {
            SourceKind::Suite { capability, .. } => Some(capability),
            SourceKind::Jsonl { .. } => self.filters.capability.as_deref(),
        }
    }
}

/// One weighted reward term; `args` holds every parameter of the term (defaults filled),
/// keyed by the names in `reward::catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardTerm {
    pub term: String,
    pub weight: f64,
    pub args: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardSet {
    pub name: String,
    pub terms: Vec<RewardTerm>,
}

impl fmt::Display for RewardSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{} {}", t.weight, t.term)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixEntry {
    pub source: String,
    /// Normalised: the weights of one mix sum to 1.
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// Mix weights over the phase's progress: `from` at the start, `to` (if any) at the end,
/// interpolated by `schedule` on the fraction of the phase's step bound done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    pub from: Vec<MixEntry>,
    pub to: Option<Vec<MixEntry>>,
    pub schedule: Schedule,
}

impl Mix {
    /// Every source named in either end, in first-mention order.
    pub fn sources(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for e in self.from.iter().chain(self.to.iter().flatten()) {
            if !out.contains(&e.source.as_str()) {
                out.push(&e.source);
            }
        }
        out
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn side(f: &mut fmt::Formatter<'_>, es: &[MixEntry]) -> fmt::Result {
            for (i, e) in es.iter().enumerate() {
                if i > 0 {
                    f.write_str(" + ")?;
                }
                if es.len() == 1 {
                    f.write_str(&e.source)?;
                } else {
                    write!(f, "{:.2} {}", e.weight, e.source)?;
                }
            }
            Ok(())
        }
        side(f, &self.from)?;
        if let Some(to) = &self.to {
            f.write_str(" -> ")?;
            side(f, to)?;
            write!(f, " ({})", serde_plain(&self.schedule))?;
        }
        Ok(())
    }
}

/// A word of the language as the vocabulary's enum (`"k3"` → `KlEstimator::K3`): the enums'
/// serde names are the language's words.
pub fn from_word<T: serde::de::DeserializeOwned>(w: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(w.to_string())).ok()
}

/// The snake_case name serde gives a unit enum variant.
pub fn serde_plain<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// How a phase walks its data along the difficulty axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum Order {
    /// Uniform random order (seeded).
    Shuffled,
    /// All easy samples, then medium, then hard; shuffled within a level. Over a merged
    /// corpus this is "difficulty only".
    EasyToHard,
    HardToEasy,
    /// AdaRFT: a target difficulty d ∈ [0,1] (0 = easiest) moves with the mean reward R̄:
    /// d ← clip(d + eta·tanh(alpha·(R̄ − beta)), 0, 1); batches are drawn nearest to d.
    Adarft {
        eta: f64,
        alpha: f64,
        beta: f64,
        initial: f64,
    },
    /// SPEED-style: prefer samples whose current pass-rate estimate lies in [low, high].
    Speed {
        low: f64,
        high: f64,
    },
}

impl Order {
    pub fn needs_difficulty(&self) -> bool {
        !matches!(self, Order::Shuffled)
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::Shuffled => f.write_str("shuffled"),
            Order::EasyToHard => f.write_str("easy->hard"),
            Order::HardToEasy => f.write_str("hard->easy"),
            Order::Adarft {
                eta, alpha, beta, ..
            } => write!(f, "adarft(η={eta},α={alpha},β={beta})"),
            Order::Speed { low, high } => write!(f, "speed({low}..{high})"),
        }
    }
}

/// A stop condition tree. A phase stops when its tree is true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stop {
    Steps {
        n: u64,
    },
    Epochs {
        n: f64,
    },
    Samples {
        n: u64,
    },
    Time {
        seconds: u64,
    },
    /// Mean reward over the last `window` steps improved by less than `delta` against the
    /// window before.
    Plateau {
        window: u64,
        delta: f64,
    },
    /// Held-out accuracy ≥ `threshold`, evaluated every `every` steps on `n` samples per
    /// capability × level of the phase.
    Eval {
        threshold: f64,
        every: u64,
        n: u64,
    },
    /// Share of informative (non-zero reward std) groups below `fraction`, averaged over the
    /// last `window` steps.
    InformativeBelow {
        fraction: f64,
        window: u64,
    },
    /// True once `n` steps are done; inside an `and` it keeps the others from firing early.
    MinSteps {
        n: u64,
    },
    All {
        all: Vec<Stop>,
    },
    Any {
        any: Vec<Stop>,
    },
}

impl Stop {
    /// Whether the condition is certain to become true: a count or time bound on every path.
    pub fn is_bounded(&self) -> bool {
        match self {
            Stop::Steps { .. }
            | Stop::Epochs { .. }
            | Stop::Samples { .. }
            | Stop::Time { .. }
            | Stop::MinSteps { .. } => true,
            Stop::Plateau { .. } | Stop::Eval { .. } | Stop::InformativeBelow { .. } => false,
            Stop::All { all } => all.iter().all(Stop::is_bounded),
            Stop::Any { any } => any.iter().any(Stop::is_bounded),
        }
    }

    /// The step at which the condition is certainly true, given samples per epoch and
    /// prompts per step; `None` when not known before running.
    pub fn step_bound(&self, epoch_samples: Option<u64>, per_step: u64) -> Option<u64> {
        let per_step = per_step.max(1);
        match self {
            Stop::Steps { n } | Stop::MinSteps { n } => Some(*n),
            Stop::Epochs { n } => {
                epoch_samples.map(|s| ((s as f64 * n) / per_step as f64).ceil().max(1.0) as u64)
            }
            Stop::Samples { n } => Some(n.div_ceil(per_step)),
            Stop::Time { .. }
            | Stop::Plateau { .. }
            | Stop::Eval { .. }
            | Stop::InformativeBelow { .. } => None,
            Stop::All { all } => {
                let mut m = 0;
                for s in all {
                    m = m.max(s.step_bound(epoch_samples, per_step)?);
                }
                Some(m)
            }
            Stop::Any { any } => any
                .iter()
                .filter_map(|s| s.step_bound(epoch_samples, per_step))
                .min(),
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Steps { n } => write!(f, "steps({n})"),
            Stop::Epochs { n } => write!(f, "epochs({n})"),
            Stop::Samples { n } => write!(f, "samples({n})"),
            // As the language writes it: the duration is a string.
            Stop::Time { seconds } => write!(
                f,
                "time(\"{}\")",
                humantime::format_duration(std::time::Duration::from_secs(*seconds))
            ),
            Stop::Plateau { window, delta } => write!(f, "plateau({window}, {delta})"),
            Stop::Eval {
                threshold, every, ..
            } => write!(f, "eval({threshold}, every {every})"),
            Stop::InformativeBelow { fraction, window } => {
                write!(f, "informative_below({fraction}, {window})")
            }
            Stop::MinSteps { n } => write!(f, "min_steps({n})"),
            Stop::All { all } => {
                for (i, s) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    match s {
                        Stop::Any { .. } => write!(f, "({s})")?,
                        _ => write!(f, "{s}")?,
                    }
                }
                Ok(())
            }
            Stop::Any { any } => {
                for (i, s) in any.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    Sft,
    Probe,
    Grpo,
    Eval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    #[default]
    Constant,
    Cosine,
}

/// Estimator of KL(π_θ ‖ π_ref) per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// logp − ref.
    K1,
    /// exp(ref − logp) − (ref − logp) − 1 (verl's `low_var_kl`), clamped to [−10, 10].
    #[default]
    K3,
}

/// How the per-token loss matrix becomes one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAgg {
    /// Sum over all masked tokens / number of masked tokens (DAPO; TRL/verl default).
    #[default]
    TokenMean,
    /// Mean over sequences of each sequence's token mean (original GRPO).
    SeqMeanTokenMean,
    /// Sum over all masked tokens / (batch × `max_new_tokens`) (Dr. GRPO's constant
    /// normaliser).
    SeqMeanTokenSumNorm,
}

/// How rewards become advantages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageScaling {
    /// (r − group mean) / (group std + eps): GRPO.
    #[default]
    Group,
    /// (r − group mean) / (batch std + eps): TRL's `scale_rewards="batch"`.
    Batch,
    /// r − group mean: Dr. GRPO (no std division).
    None,
}

/// Optimiser settings shared by sft and grpo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Optim {
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoSettings {
    pub group_size: u64,
    pub prompts_per_step: u64,
    /// Completions per forward/backward pass; divides group_size × prompts_per_step. The
    /// micro-batches' gradients accumulate into one optimiser step.
    pub micro_batch: u64,
    pub optim: Optim,
    pub beta: f64,
    pub kl: KlEstimator,
    pub eps_low: f64,
    pub eps_high: f64,
    pub loss_agg: LossAgg,
    pub advantage: AdvantageScaling,
    pub mu: u64,
    pub max_new_tokens: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub dynamic_sampling: bool,
    pub max_retries: u64,
    pub mask_truncated: bool,
    /// A rollout counts as passed in the pass-rate table when its reward is ≥ this.
    pub pass_threshold: f64,
}

/// The key table's defaults, for callers that build settings without a `.curr` file (tests,
/// benchmarks): the same values the checker fills in.
impl Optim {
    pub fn default_for(kind: PhaseKind) -> Self {
        Optim {
            lr: keys::num("lr", kind),
            lr_schedule: from_word(keys::word("lr_schedule", kind)).unwrap_or(LrSchedule::Constant),
            warmup_steps: keys::int("warmup_steps", kind),
            weight_decay: keys::num("weight_decay", kind),
            grad_clip: keys::num("grad_clip", kind),
        }
    }
}

impl Default for GrpoSettings {
    fn default() -> Self {
        let k = PhaseKind::Grpo;
        let eps_low = keys::num("eps_low", k);
        let (group_size, prompts_per_step) =
            (keys::int("group_size", k), keys::int("prompts_per_step", k));
        GrpoSettings {
            group_size,
            prompts_per_step,
            micro_batch: group_size * prompts_per_step,
            optim: Optim::default_for(k),
            beta: keys::num("beta", k),
            kl: from_word(keys::word("kl", k)).unwrap_or(KlEstimator::K3),
            eps_low,
            eps_high: eps_low,
            loss_agg: from_word(keys::word("loss_agg", k)).unwrap_or(LossAgg::TokenMean),
            advantage: from_word(keys::word("advantage", k)).unwrap_or(AdvantageScaling::Group),
            mu: keys::int("mu", k),
            max_new_tokens: keys::int("max_new_tokens", k),
            temperature: keys::num("temperature", k),
            top_p: keys::num("top_p", k),
            dynamic_sampling: keys::flag("dynamic_sampling", k),
            max_retries: keys::int("max_retries", k),
            mask_truncated: keys::flag("mask_truncated", k),
            pass_threshold: keys::num("pass_threshold", k),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftSettings {
    pub optim: Optim,
    pub batch_size: u64,
    /// Longest trace trained on, in tokens.
    pub max_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSettings {
    /// K rollouts per sample.
    pub rollouts: u64,
    /// Samples rolled out together.
    pub batch_size: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: u64,
    /// A rollout passes when its reward is ≥ this.
    pub pass_threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// Held-out samples per capability × level.
    pub n: u64,
    pub capabilities: Vec<String>,
    pub levels: Vec<Level>,
    pub greedy: bool,
    pub max_new_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Carry {
    Keep,
    Reset,
}

/// What crosses an `after` edge besides the weights (which always do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// AdamW moments. Default reset: a new stage has a new objective.
    pub optimizer: Carry,
    /// Keep = continue the parent's LR schedule position. Default reset.
    pub lr_schedule: Carry,
    /// Keep = the parent's reference model; reset = the new start becomes the reference.
    /// Default reset, as when a stage is launched from the previous stage's checkpoint.
    pub reference: Carry,
    /// The pass-rate table measured so far. Default keep.
    pub pass_rates: Carry,
    /// Position in shared data sources. Default reset.
    pub cursor: Carry,
}

impl Default for Handoff {
    fn default() -> Self {
        Handoff {
            optimizer: Carry::Reset,
            lr_schedule: Carry::Reset,
            reference: Carry::Reset,
            pass_rates: Carry::Keep,
            cursor: Carry::Reset,
        }
    }
}

impl fmt::Display for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept: Vec<&str> = [
            ("optimizer", self.optimizer),
            ("lr_schedule", self.lr_schedule),
            ("reference", self.reference),
            ("pass_rates", self.pass_rates),
            ("cursor", self.cursor),
        ]
        .iter()
        .filter(|(_, c)| *c == Carry::Keep)
        .map(|(n, _)| *n)
        .collect();
        if kept.is_empty() {
            f.write_str("weights")
        } else {
            write!(f, "weights+{}", kept.join("+"))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    pub stage: String,
    pub handoff: Handoff,
}

/// Where difficulty levels come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum LevelSource {
    /// The built-in suite's own levels (JSONL samples use their `difficulty` field).
    Suite,
    /// Each sample's `pass_rate` field, cut into bands.
    PassRate,
    /// The pass-rate table a probe stage measures, cut into bands.
    Probe { stage: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Levels {
    #[serde(flatten)]
    pub source: LevelSource,
    /// Pass-rate band per level, tried easy → medium → hard (first match wins). Unused with
    /// `from = suite`.
    pub bands: BTreeMap<Level, Band>,
}

/// A phase's settings: one variant per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Settings {
    Sft(SftSettings),
    Probe(ProbeSettings),
    Grpo(GrpoSettings),
    Eval(EvalSettings),
}

impl Settings {
    pub fn kind(&self) -> PhaseKind {
        match self {
            Settings::Sft(_) => PhaseKind::Sft,
            Settings::Probe(_) => PhaseKind::Probe,
            Settings::Grpo(_) => PhaseKind::Grpo,
            Settings::Eval(_) => PhaseKind::Eval,
        }
    }

    /// The longest completion the phase generates or trains on, in tokens.
    pub fn max_new_tokens(&self) -> u64 {
        match self {
            Settings::Sft(s) => s.max_tokens,
            Settings::Probe(p) => p.max_new_tokens,
            Settings::Grpo(g) => g.max_new_tokens,
            Settings::Eval(e) => e.max_new_tokens,
        }
    }

    /// Prompts one step draws (sft: samples per batch).
    pub fn prompts_per_step(&self) -> u64 {
        match self {
            Settings::Sft(s) => s.batch_size,
            Settings::Probe(p) => p.batch_size,
            Settings::Grpo(g) => g.prompts_per_step,
            Settings::Eval(_) => 1,
        }
    }

    pub fn grpo(&self) -> Option<&GrpoSettings> {
        match self {
            Settings::Grpo(g) => Some(g),
            _ => None,
        }
    }

    pub fn probe(&self) -> Option<&ProbeSettings> {
        match self {
            Settings::Probe(p) => Some(p),
            _ => None,
        }
    }

    pub fn eval(&self) -> Option<&EvalSettings> {
        match self {
            Settings::Eval(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub capability: String,
    pub after: Vec<Dependency>,
    pub mix: Option<Mix>,
    /// The levels this stage trains on.
    pub levels: Vec<Level>,
    pub order: Order,
    pub reward: Option<String>,
    pub settings: Settings,
    pub stop: Option<Stop>,
    /// Parameter-name prefixes kept frozen, e.g. `visual`.
    pub freeze: Vec<String>,
}

impl Stage {
    pub fn kind(&self) -> PhaseKind {
        self.settings.kind()
    }
}

/// The `after` graph of `stages`: node `i` is stage `i`, an edge runs parent → child and is
/// weighted by the parent's position in the child's `after`. Names that match no stage are
/// left out (the checker reports them). The checker's cycle and ordering checks and the
/// planner's phase order both read this one graph.
pub fn stage_graph(stages: &[Stage]) -> petgraph::graph::DiGraph<usize, usize> {
    let index: BTreeMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut g = petgraph::graph::DiGraph::new();
    let nodes: Vec<_> = (0..stages.len()).map(|i| g.add_node(i)).collect();
    for (i, s) in stages.iter().enumerate() {
        for (k, d) in s.after.iter().enumerate() {
            if let Some(&j) = index.get(d.stage.as_str()) {
                g.add_edge(nodes[j], nodes[i], k);
            }
        }
    }
    g
}

/// Stage indices in topological order, ties broken by declaration order (Kahn's algorithm,
/// always taking the earliest-declared ready stage); `Err(i)` names a stage on a cycle.
pub fn stage_order(g: &petgraph::graph::DiGraph<usize, usize>) -> Result<Vec<usize>, usize> {
    use petgraph::graph::NodeIndex;
    use petgraph::Direction::{Incoming, Outgoing};
    let n = g.node_count();
    let mut indeg: Vec<usize> = (0..n)
        .map(|i| g.neighbors_directed(NodeIndex::new(i), Incoming).count())
        .collect();
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for c in g.neighbors_directed(NodeIndex::new(i), Outgoing) {
            let j = g[c];
            indeg[j] -= 1;
            if indeg[j] == 0 {
                ready.insert(j);
            }
        }
    }
    match (0..n).find(|i| !order.contains(i)) {
        Some(stuck) => Err(stuck),
        None => Ok(order),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curriculum {
    pub name: String,
    pub seed: u64,
    pub model: ModelSpec,
    pub device: String,
    pub dtype: Dtype,
    pub levels: Levels,
    pub sources: Vec<Source>,
    pub rewards: Vec<RewardSet>,
    /// In declaration order.
    pub stages: Vec<Stage>,
}
