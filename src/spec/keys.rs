//! Every key a `.curr` file can set, in one table: where it may appear, which stage kinds it
//! applies to, what values it takes, its default and one line of help. The checker reads its
//! allowed keys, ranges and defaults from here, and `grammar/README.md`'s key tables are
//! generated from it (`tests/keys_doc.rs` keeps them equal), so a default cannot differ
//! between the checker, the docs and the trainer.
//!
//! Arguments of calls (`adarft(eta = …)`, `plateau(window, delta = …)`) are rows too, named
//! `call.arg`.

use super::PhaseKind;

/// Where a key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Header,
    Source,
    Stage,
    Difficulty,
    Handoff,
    /// An argument of a call such as `adarft(…)`, `speed(…)`, `plateau(…)`, `eval(…)`.
    Call,
}

/// A number's allowed range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `> 0`.
    Positive,
    /// `≥ 0`.
    NonNegative,
    /// `in (0, 1)`.
    OpenUnit,
    /// `in (0, 1]`.
    HalfOpenUnit,
    /// `in [0, 1]`.
    ClosedUnit,
}

impl Range {
    pub fn contains(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::Positive => v > 0.0,
                Range::NonNegative => v >= 0.0,
                Range::OpenUnit => v > 0.0 && v < 1.0,
                Range::HalfOpenUnit => v > 0.0 && v <= 1.0,
                Range::ClosedUnit => (0.0..=1.0).contains(&v),
            }
    }

    /// As a diagnostic says it: "> 0", "in (0, 1]".
    pub fn describe(self) -> &'static str {
        match self {
            Range::Positive => "> 0",
            Range::NonNegative => "≥ 0",
            Range::OpenUnit => "in (0, 1)",
            Range::HalfOpenUnit => "in (0, 1]",
            Range::ClosedUnit => "in [0, 1]",
        }
    }
}

/// The values a key takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A whole number ≥ `min`.
    Int {
        min: u64,
    },
    Num(Range),
    Bool,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// Anything else (names, lists, expressions); the checker parses it and the text says
    /// what it is.
    Other(&'static str),
}

impl Value {
    pub fn describe(&self) -> String {
        match self {
            Value::Int { min } => format!("whole number ≥ {min}"),
            Value::Num(r) => format!("number {}", r.describe()),
            Value::Bool => "`true` \\| `false`".into(),
            Value::Choice(ws) => ws
                .iter()
                .map(|w| format!("`{w}`"))
                .collect::<Vec<_>>()
                .join(" \\| "),
            Value::Other(s) => (*s).into(),
        }
    }
}

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// No default: the key must be written (where the kind needs it).
    Required,
    /// Absent means off / empty / none.
    Unset,
    Int(u64),
    Num(f64),
    Bool(bool),
    Word(&'static str),
    /// Computed from other keys or the file; the text says how.
    Derived(&'static str),
}

impl Default {
    pub fn describe(&self) -> String {
        match self {
            Default::Required => "required".into(),
            Default::Unset => "—".into(),
            Default::Int(n) => n.to_string(),
            Default::Num(x) => fmt_num(*x),
            Default::Bool(b) => b.to_string(),
            Default::Word(w) => format!("`{w}`"),
            Default::Derived(s) => (*s).into(),
        }
    }
}

fn fmt_num(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key {
    pub name: &'static str,
    pub scope: Scope,
    /// Stage kinds the key applies to (stage keys only; empty elsewhere).
    pub kinds: &'static [PhaseKind],
    pub value: Value,
    pub default: Default,
    pub help: &'static str,
}

use PhaseKind::{Eval as E, Grpo as G, Probe as P, Sft as S};

const ALL: &[PhaseKind] = &[S, P, G, E];
const TRAIN: &[PhaseKind] = &[S, G];
const DATA: &[PhaseKind] = &[S, P, G];
const SAMPLE: &[PhaseKind] = &[P, G];
const GEN: &[PhaseKind] = &[P, G, E];

const fn key(
    name: &'static str,
    scope: Scope,
    kinds: &'static [PhaseKind],
    value: Value,
    default: Default,
    help: &'static str,
) -> Key {
    Key {
        name,
        scope,
        kinds,
        value,
        default,
        help,
    }
}

const fn stage(
    name: &'static str,
    kinds: &'static [PhaseKind],
    value: Value,
    default: Default,
    help: &'static str,
) -> Key {
    key(name, Scope::Stage, kinds, value, default, help)
}

const fn call(name: &'static str, value: Value, default: Default, help: &'static str) -> Key {
    key(name, Scope::Call, &[], value, default, help)
}

pub const KINDS: &[&str] = &["sft", "probe", "grpo", "eval"];
pub const LR_SCHEDULES: &[&str] = &["constant", "cosine"];
pub const KL_ESTIMATORS: &[&str] = &["k1", "k3"];
pub const LOSS_AGGS: &[&str] = &[
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum_norm",
];
pub const ADVANTAGES: &[&str] = &["group", "batch", "none"];
pub const MIX_SCHEDULES: &[&str] = &["constant", "linear", "cosine"];
pub const CARRY: &[&str] = &["keep", "reset"];
pub const DTYPES: &[&str] = &["f32", "bf16"];

#[rustfmt::skip]
/// The table. Rows with the same name and scope differ in the kinds they apply to (e.g. `lr`
/// defaults to 1e-6 for grpo and 1e-5 for sft).
pub const KEYS: &[Key] = &[
    // Header.
    key("name", Scope::Header, &[], Value::Other("string"), Default::Derived("the file's stem"), "names the run directory and the report"),
    key("seed", Scope::Header, &[], Value::Int { min: 0 }, Default::Int(0), "every random draw derives from it; `curric run --seed` overrides it"),
    key("model", Scope::Header, &[], Value::Other("`tiny_vlm(nano \\| micro \\| small \\| base)`, `local(\"DIR\")`, `hf(\"ORG/REPO\")`"), Default::Word("tiny_vlm(nano)"), "the policy every root stage starts from"),
    key("device", Scope::Header, &[], Value::Other("`cpu`, `\"cuda:N\"` or `cuda(N)`"), Default::Word("cpu"), "where phases run; `curric run --device` overrides it"),
    key("dtype", Scope::Header, &[], Value::Choice(DTYPES), Default::Word("f32"), "the policy's weights and activations; `bf16` halves them, with norms, softmax and rotary embeddings in f32 and f32 master weights in AdamW"),
    // Sources.
    key("suite", Scope::Source, &[], Value::Choice(&["perception", "text_reasoning", "visual_reasoning"]), Default::Unset, "the built-in procedural suite of this capability (or `jsonl`)"),
    key("jsonl", Scope::Source, &[], Value::Other("path, relative to the `.curr` file"), Default::Unset, "an EasyR1-style JSONL file (or `suite`)"),
    key("levels", Scope::Source, &[], Value::Other("list of `easy`, `medium`, `hard`"), Default::Derived("all three"), "suite levels to generate"),
    key("families", Scope::Source, &[], Value::Other("list of task families"), Default::Derived("every family"), "suite task families to draw from, e.g. `[describe]`"),
    key("n", Scope::Source, &[], Value::Int { min: 1 }, Default::Int(100), "suite samples per level"),
    key("seed", Scope::Source, &[], Value::Int { min: 0 }, Default::Derived("the curriculum's"), "the suite's generator seed"),
    key("pass_rate", Scope::Source, &[], Value::Other("`lo .. hi` in [0, 1]"), Default::Unset, "keep samples whose pass rate lies in the band"),
    key("capability", Scope::Source, &[], Value::Other("name"), Default::Unset, "keep samples of this capability"),
    key("difficulty", Scope::Source, &[], Value::Other("list of levels"), Default::Unset, "keep samples at these levels"),
    key("drop_solved", Scope::Source, &[], Value::Bool, Default::Bool(false), "drop samples with pass rate 1"),
    key("drop_unsolved", Scope::Source, &[], Value::Bool, Default::Bool(false), "drop samples with pass rate 0"),
    // Difficulty.
    key("from", Scope::Difficulty, &[], Value::Other("`suite`, `pass_rate` or `probe(STAGE)`"), Default::Word("suite"), "where levels come from"),
    key("easy", Scope::Difficulty, &[], Value::Other("`lo .. hi`"), Default::Derived("0.75 .. 1"), "pass-rate band of easy"),
    key("medium", Scope::Difficulty, &[], Value::Other("`lo .. hi`"), Default::Derived("0.25 .. 0.75"), "pass-rate band of medium"),
    key("hard", Scope::Difficulty, &[], Value::Other("`lo .. hi`"), Default::Derived("0 .. 0.25"), "pass-rate band of hard"),
    // Hand-off.
    key("optimizer", Scope::Handoff, &[], Value::Choice(CARRY), Default::Word("reset"), "AdamW moments"),
    key("lr_schedule", Scope::Handoff, &[], Value::Choice(CARRY), Default::Word("reset"), "keep: continue the parent's schedule position"),
    key("reference", Scope::Handoff, &[], Value::Choice(CARRY), Default::Word("reset"), "keep: the parent's KL reference; reset: the stage's start"),
    key("pass_rates", Scope::Handoff, &[], Value::Choice(CARRY), Default::Word("keep"), "the pass-rate table measured so far"),
    key("cursor", Scope::Handoff, &[], Value::Choice(CARRY), Default::Word("reset"), "position in shared data sources"),
    // Stages: common.
    stage("kind", ALL, Value::Choice(KINDS), Default::Word("grpo"), "what the phase does"),
    stage("after", ALL, Value::Other("stage name or list"), Default::Unset, "stages this one starts after (weights come from the first)"),
    stage("capability", ALL, Value::Other("name"), Default::Derived("the sources' common capability, else `mixed`"), "the capability axis label"),
    stage("levels", ALL, Value::Other("list of levels"), Default::Derived("every level its sources provide"), "the difficulty levels the stage trains on (eval: evaluates)"),
    // Data.
    stage("mix", DATA, Value::Other("`SOURCE`, `0.7 a + 0.3 b`, `FROM -> TO`"), Default::Required, "the phase's data; weights are normalised"),
    stage("mix_schedule", DATA, Value::Choice(MIX_SCHEDULES), Default::Derived("`linear` with `->`, else `constant`"), "how a `FROM -> TO` mix moves over the phase"),
    stage("order", TRAIN, Value::Other("`shuffled`, `easy_to_hard`, `hard_to_easy`, `adarft(…)`, `speed(…)`"), Default::Word("shuffled"), "how the phase walks the difficulty axis"),
    stage("reward", &[G], Value::Other("a declared reward set"), Default::Required, "what a rollout scores (set it once in `defaults` to share it)"),
    stage("reward", &[P], Value::Other("a declared reward set"), Default::Derived("`accuracy`"), "what a rollout scores"),
    stage("stop", TRAIN, Value::Other("stop condition"), Default::Required, "when the phase ends; must be bounded"),
    stage("stop", &[P], Value::Other("stop condition"), Default::Derived("`epochs(1)`"), "when the probe ends"),
    stage("freeze", TRAIN, Value::Other("list of strings"), Default::Unset, "parameter-name prefixes kept frozen, e.g. `[\"visual\"]`"),
    // Optimiser.
    stage("lr", &[G], Value::Num(Range::Positive), Default::Num(1e-6), "AdamW learning rate"),
    stage("lr", &[S], Value::Num(Range::Positive), Default::Num(1e-5), "AdamW learning rate"),
    stage("lr_schedule", &[G], Value::Choice(LR_SCHEDULES), Default::Word("constant"), "decay after warm-up (cosine needs a step bound)"),
    stage("lr_schedule", &[S], Value::Choice(LR_SCHEDULES), Default::Word("cosine"), "decay after warm-up (cosine needs a step bound)"),
    stage("warmup_steps", TRAIN, Value::Int { min: 0 }, Default::Int(0), "linear warm-up steps"),
    stage("weight_decay", TRAIN, Value::Num(Range::NonNegative), Default::Num(0.01), "decoupled weight decay"),
    stage("grad_clip", TRAIN, Value::Num(Range::Positive), Default::Num(1.0), "max gradient norm"),
    // GRPO.
    stage("group_size", &[G], Value::Int { min: 2 }, Default::Int(8), "G: completions per prompt"),
    stage("prompts_per_step", &[G], Value::Int { min: 1 }, Default::Int(8), "groups per update; G × prompts ≤ 4096"),
    stage("micro_batch", &[G], Value::Int { min: 1 }, Default::Derived("G × prompts_per_step"), "completions per forward/backward; gradients accumulate to one update"),
    stage("beta", &[G], Value::Num(Range::NonNegative), Default::Num(0.01), "KL coefficient β (0: no reference model)"),
    stage("kl", &[G], Value::Choice(KL_ESTIMATORS), Default::Word("k3"), "KL estimator"),
    stage("eps_low", &[G], Value::Num(Range::OpenUnit), Default::Num(0.2), "lower clip ε"),
    stage("eps_high", &[G], Value::Num(Range::OpenUnit), Default::Derived("= eps_low"), "upper clip ε (DAPO's clip-higher)"),
    stage("loss_agg", &[G], Value::Choice(LOSS_AGGS), Default::Word("token_mean"), "how per-token losses become one number"),
    stage("advantage", &[G], Value::Choice(ADVANTAGES), Default::Word("group"), "the advantage's std scaling"),
    stage("mu", &[G], Value::Int { min: 1 }, Default::Int(1), "μ: passes over each rollout batch"),
    stage("dynamic_sampling", &[G], Value::Bool, Default::Bool(false), "drop zero-std groups and draw more (DAPO)"),
    stage("max_retries", &[G], Value::Int { min: 0 }, Default::Int(3), "extra draws dynamic sampling may make per step"),
    stage("mask_truncated", &[G], Value::Bool, Default::Bool(false), "no loss on completions cut at max_new_tokens"),
    // Sampling.
    stage("max_new_tokens", GEN, Value::Int { min: 1 }, Default::Int(256), "completion length limit"),
    stage("temperature", SAMPLE, Value::Num(Range::Positive), Default::Num(1.0), "sampling temperature"),
    stage("top_p", SAMPLE, Value::Num(Range::HalfOpenUnit), Default::Num(1.0), "nucleus sampling"),
    stage("pass_threshold", SAMPLE, Value::Num(Range::ClosedUnit), Default::Num(0.5), "a rollout passes (in the pass-rate table) when its reward is ≥ this"),
    // SFT.
    stage("batch_size", &[S, P], Value::Int { min: 1 }, Default::Int(8), "sft: traces per update; probe: samples rolled out together"),
    stage("max_tokens", &[S], Value::Int { min: 1 }, Default::Int(512), "longest trace trained on, in tokens"),
    // Probe.
    stage("rollouts", &[P], Value::Int { min: 1 }, Default::Int(8), "K: rollouts per sample"),
    // Eval.
    stage("n", &[E], Value::Int { min: 1 }, Default::Int(32), "held-out samples per capability × level"),
    stage("capabilities", &[E], Value::Other("list of capabilities"), Default::Derived("every source's"), "what to evaluate"),
    stage("greedy", &[E], Value::Bool, Default::Bool(true), "greedy decoding (false: temperature 1)"),
    // Call arguments.
    call("adarft.eta", Value::Num(Range::Positive), Default::Num(0.05), "step size of the target difficulty"),
    call("adarft.alpha", Value::Num(Range::Positive), Default::Num(2.0), "sensitivity to the reward"),
    call("adarft.beta", Value::Num(Range::ClosedUnit), Default::Num(0.5), "the reward the target aims for"),
    call("adarft.initial", Value::Num(Range::ClosedUnit), Default::Num(0.0), "the starting target difficulty (0 = easiest)"),
    call("speed.low", Value::Num(Range::ClosedUnit), Default::Num(0.2), "lowest pass rate preferred"),
    call("speed.high", Value::Num(Range::ClosedUnit), Default::Num(0.8), "highest pass rate preferred"),
    call("plateau.delta", Value::Num(Range::NonNegative), Default::Num(0.01), "smallest improvement of the mean reward that counts"),
    call("eval.n", Value::Int { min: 1 }, Default::Int(32), "held-out samples per capability × level"),
];

/// Stage keys that change how a phase runs but not what it computes, with the reason; every
/// other key changes what is trained, sampled or evaluated (`tests/keys_honoured.rs`).
pub const NOT_BEHAVIOURAL: &[(&str, &[PhaseKind], &str)] = &[
    ("kind", ALL, "selects which settings a stage has; each kind's keys are checked on their own"),
    ("capability", &[P, E], "a label in the plan and the report (sft and grpo stages draw their eval-stop samples from it)"),
    ("micro_batch", &[G], "memory only: micro-batches accumulate into the same update (tests/grpo_driver.rs)"),
    ("batch_size", &[P], "speed only: a rollout's seed comes from its sample's position in the phase, not its batch"),
];

/// Whether `name` changes only how a `kind` phase runs ([`NOT_BEHAVIOURAL`]).
pub fn not_behavioural(name: &str, kind: PhaseKind) -> Option<&'static str> {
    NOT_BEHAVIOURAL
        .iter()
        .find(|(n, ks, _)| *n == name && ks.contains(&kind))
        .map(|(_, _, why)| *why)
}

/// The row for `name` in `scope` that applies to `kind` (for stage keys).
pub fn find(scope: Scope, name: &str, kind: Option<PhaseKind>) -> Option<&'static Key> {
    KEYS.iter().find(|k| {
        k.scope == scope
            && k.name == name
            && match (scope, kind) {
                (Scope::Stage, Some(kind)) => k.kinds.contains(&kind),
                _ => true,
            }
    })
}

/// Every key name of a scope, in table order, once each.
pub fn names(scope: Scope) -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for k in KEYS.iter().filter(|k| k.scope == scope) {
        if !out.contains(&k.name) {
            out.push(k.name);
        }
    }
    out
}

/// Stage keys that apply to `kind`, in table order.
pub fn stage_keys(kind: PhaseKind) -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for k in KEYS
        .iter()
        .filter(|k| k.scope == Scope::Stage && k.kinds.contains(&kind))
    {
        if !out.contains(&k.name) {
            out.push(k.name);
        }
    }
    out
}

fn stage_default(name: &str, kind: PhaseKind) -> Default {
    find(Scope::Stage, name, Some(kind)).map_or(Default::Unset, |k| k.default)
}

/// A stage key's whole-number default for `kind`. The table's own test checks that every
/// key the checker reads this way has one.
pub fn int(name: &str, kind: PhaseKind) -> u64 {
    match stage_default(name, kind) {
        Default::Int(n) => n,
        _ => 0,
    }
}

pub fn num(name: &str, kind: PhaseKind) -> f64 {
    match stage_default(name, kind) {
        Default::Num(x) => x,
        _ => f64::NAN,
    }
}

pub fn flag(name: &str, kind: PhaseKind) -> bool {
    matches!(stage_default(name, kind), Default::Bool(true))
}

pub fn word(name: &str, kind: PhaseKind) -> &'static str {
    match stage_default(name, kind) {
        Default::Word(w) => w,
        _ => "",
    }
}

/// A call argument's default (`call("adarft.eta")`).
pub fn call_num(name: &str) -> f64 {
    match find(Scope::Call, name, None).map(|k| k.default) {
        Some(Default::Num(x)) => x,
        Some(Default::Int(n)) => n as f64,
        _ => f64::NAN,
    }
}

/// The pass threshold every layer uses unless a stage sets `pass_threshold`.
pub fn pass_threshold() -> f64 {
    num("pass_threshold", PhaseKind::Grpo)
}

/// The Markdown table of one scope's keys (stage keys: one column per kind), as
/// `grammar/README.md` shows it.
pub fn markdown(scope: Scope) -> String {
    let mut out = String::new();
    if scope == Scope::Stage {
        out.push_str(
            "| key | sft | probe | grpo | eval | values | |\n|---|---|---|---|---|---|---|\n",
        );
        for name in names(Scope::Stage) {
            let cell = |k: PhaseKind| {
                find(Scope::Stage, name, Some(k)).map_or(String::new(), |r| r.default.describe())
            };
            let first = KEYS
                .iter()
                .find(|k| k.scope == Scope::Stage && k.name == name);
            let (value, help) = first.map_or((String::new(), ""), |k| (k.value.describe(), k.help));
            out.push_str(&format!(
                "| `{name}` | {} | {} | {} | {} | {value} | {help} |\n",
                cell(S),
                cell(P),
                cell(G),
                cell(E)
            ));
        }
    } else {
        out.push_str("| key | values | default | |\n|---|---|---|---|\n");
        for k in KEYS.iter().filter(|k| k.scope == scope) {
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                k.name,
                k.value.describe(),
                k.default.describe(),
                k.help
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_numeric_default_lies_in_its_range() {
        for k in KEYS {
            match (k.value, k.default) {
                (Value::Num(r), Default::Num(x)) => assert!(r.contains(x), "{}", k.name),
                (Value::Int { min }, Default::Int(n)) => assert!(n >= min, "{}", k.name),
                (Value::Choice(ws), Default::Word(w)) => assert!(ws.contains(&w), "{}", k.name),
                (Value::Bool, d) => assert!(matches!(d, Default::Bool(_)), "{}", k.name),
                _ => {}
            }
        }
    }

    #[test]
    fn a_key_has_one_row_per_kind() {
        for kind in [S, P, G, E] {
            for name in stage_keys(kind) {
                let rows = KEYS
                    .iter()
                    .filter(|k| {
                        k.scope == Scope::Stage && k.name == name && k.kinds.contains(&kind)
                    })
                    .count();
                assert_eq!(rows, 1, "`{name}` for {kind:?}");
            }
        }
        for scope in [
            Scope::Header,
            Scope::Source,
            Scope::Difficulty,
            Scope::Handoff,
            Scope::Call,
        ] {
            for name in names(scope) {
                let rows = KEYS
                    .iter()
                    .filter(|k| k.scope == scope && k.name == name)
                    .count();
                assert_eq!(rows, 1, "`{name}` in {scope:?}");
            }
        }
    }

    #[test]
    fn typed_lookups_read_the_table() {
        assert_eq!(num("lr", G), 1e-6);
        assert_eq!(num("lr", S), 1e-5);
        assert_eq!(word("lr_schedule", S), "cosine");
        assert_eq!(int("prompts_per_step", G), 8);
        assert_eq!(call_num("adarft.eta"), 0.05);
        assert_eq!(pass_threshold(), 0.5);
        assert!(stage_keys(P).contains(&"pass_threshold"));
        assert!(!stage_keys(E).contains(&"lr"));
    }
}
