//! `curric export easyr1`: a curriculum as a directory a cluster user runs on EasyR1 (a verl
//! fork on Ray), one EasyR1 job per phase.
//!
//! Each phase gets `NN_<phase>/` with a complete `config.yaml`, its data materialised in the
//! order curric's sampler draws it (`train.jsonl`, `val.jsonl`, images beside them), a
//! `reward.py` that scores like curric's Rust rewards, a format prompt where the reward set
//! needs one, and `run.sh`. `pipeline.sh` runs the phases in plan order and hands weights on
//! through EasyR1's checkpoint merger; `manifest.json` records every mapping decision.
//!
//! EasyR1 reads one fixed train file per run and stops at a step count. What needs curric
//! between steps (an adaptive order, a stop that reads metrics, a kept optimiser) cannot be
//! written as a config, and is refused with the stage and the feature named. A difference
//! the user may accept (EasyR1 trains on truncated completions) is refused unless named in
//! `--accept`, and then recorded. Nothing is dropped silently.
//!
//! Phases whose levels come from a probe's pass-rate table get their data after the probe
//! ran: `reward.py` logs every probe rollout, and `pipeline.sh` calls this exporter again with
//! `--pass-rates` for those phases alone.

mod config;
mod drive;
mod yaml;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

pub use config::Decision;
use config::{Common, Config, Job};
pub use drive::{drive, DriveOptions};

use super::error::ExecError;
use super::fingerprint::assess;
use super::rundir::{sanitize, write_atomic};
use super::runner::{eval_samples, phase_inputs, pools, sampler_spec};
use crate::data::{PassRateTable, Sample, Sampler};
use crate::plan::{Phase, Plan};
use crate::spec::{
    AdvantageScaling, Carry, LevelSource, LossAgg, ModelSpec, Order, PhaseKind, Settings, Stop,
};

/// The EasyR1 commit the configs are written for (the dataclasses they are checked against).
pub const EASYR1_COMMIT: &str = "b44b311b669bf1fd1aa2fc36f2251482ba33cb16";

/// The Python half of curric's rewards; `TERMS = []` is replaced per phase.
const REWARD_PY: &str = include_str!("reward.py");

/// Differences from curric that a user may accept with `--accept NAME`.
pub const ACCEPTABLE: &[(&str, &str)] = &[(
    "mask_truncated",
    "EasyR1 (at the commit above) puts truncated completions in the loss; no key turns that off",
)];

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub out: PathBuf,
    /// The `.curr` file, as `pipeline.sh` will name it to re-export probe-fed phases.
    pub curriculum_file: PathBuf,
    /// The start weights EasyR1 loads: a Hugging Face id or directory. Defaults to the plan's
    /// model where EasyR1 can load it.
    pub model: Option<String>,
    pub nodes: u64,
    pub gpus_per_node: u64,
    /// Differences from curric the user accepts (names from [`ACCEPTABLE`]).
    pub accept: Vec<String>,
    /// A probe's per-rollout results (`reward.py` writes them) to build the data of the
    /// phases whose levels come from that probe.
    pub pass_rates: Option<PathBuf>,
    /// Write only this phase's directory (what `pipeline.sh` does after a probe).
    pub only: Option<String>,
}

/// A feature of a stage that EasyR1 cannot run as curric would.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    /// Empty for the curriculum's header (its model).
    pub stage: String,
    pub feature: String,
    pub reason: String,
    /// The `--accept` name that exports it anyway, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.stage.is_empty() {
            write!(f, "stage `{}`: ", self.stage)?;
        }
        write!(f, "{}: {}", self.feature, self.reason)?;
        if let Some(a) = &self.accept {
            write!(f, " (pass `--accept {a}` to export without it)")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("EasyR1 cannot run this curriculum as written:\n{}", .0.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<Refusal>),
    #[error("unknown --accept `{0}` (known: {known})", known = ACCEPTABLE.iter().map(|a| a.0).collect::<Vec<_>>().join(", "))]
    UnknownAccept(String),
    #[error("no phase `{0}` in the plan")]
    UnknownPhase(String),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

type Result<T> = std::result::Result<T, ExportError>;

/// What was written, for the command's summary and for tests.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub curric_version: String,
    pub easyr1_commit: String,
    pub curriculum: String,
    pub curriculum_file: String,
    pub model: String,
    pub nodes: u64,
    pub gpus_per_node: u64,
    pub accepted: Vec<String>,
    pub phases: Vec<PhaseEntry>,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseEntry {
    pub id: String,
    pub kind: String,
    pub dir: String,
    pub fingerprint: String,
    /// How the phase runs: `easyr1` (training), `easyr1-val` (validation only), `curric`
    /// (an sft phase, trained by curric itself).
    pub runs_on: String,
    /// Where its start weights come from: the base model, or a phase's merged checkpoint.
    pub starts_from: String,
    /// Rows written to train.jsonl / val.jsonl; `None` until a probe's table exists.
    pub train_rows: Option<usize>,
    pub val_rows: Option<usize>,
    /// The probe whose table this phase's data waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_after: Option<String>,
}

/// Every feature of `plan` that EasyR1 cannot run as curric would, minus what `accept` names.
/// With `driven`, curric runs the phases itself (`curric run --backend easyr1`) and evaluates
/// stop conditions between EasyR1 launches, so such stops pass; an LR schedule laid over a
/// horizon then cannot, since each launch's `max_steps` is its horizon in EasyR1.
pub fn refusals(plan: &Plan, model: Option<&str>, accept: &[String], driven: bool) -> Vec<Refusal> {
    let mut out = Vec::new();
    let refuse = |out: &mut Vec<Refusal>, stage: &str, feature: String, reason: &str| {
        out.push(Refusal {
            stage: stage.into(),
            feature,
            reason: reason.into(),
            accept: None,
        });
    };
    if model.is_none() {
        if let Some(why) = unloadable(&plan.model) {
            refuse(&mut out, "", format!("model = {}", plan.model), &why);
        }
    }
    for p in &plan.phases {
        let s = p.stage.as_str();
        match &p.order {
            Order::Adarft { .. } | Order::Speed { .. } => refuse(
                &mut out,
                s,
                format!("order = {}", p.order),
                "an adaptive order picks each batch from the last step's rewards; EasyR1 reads \
                 one fixed train file",
            ),
            _ => {}
        }
        if let Some(stop) = &p.stop {
            if p.kind() != PhaseKind::Eval && !counted(stop) {
                let cosine = p
                    .settings
                    .grpo()
                    .is_some_and(|g| g.optim.lr_schedule == crate::spec::LrSchedule::Cosine);
                if !driven {
                    refuse(
                        &mut out,
                        s,
                        format!("stop = {stop}"),
                        "EasyR1 stops at a step count; a stop that reads metrics or the clock \
                         needs curric between launches (`curric run --backend easyr1`)",
                    );
                } else if cosine {
                    refuse(
                        &mut out,
                        s,
                        format!("lr_schedule = cosine with stop = {stop}"),
                        "EasyR1 lays the schedule over each launch's max_steps, and a stop \
                         curric evaluates between launches moves it",
                    );
                }
            }
        }
        if let Some(r) = &p.reward {
            for t in &r.terms {
                if t.term == "clip_score" {
                    refuse(
                        &mut out,
                        s,
                        format!("reward {} uses clip_score", r.name),
                        "a CLIP model in the reward function is not in reward.py's standard \
                         library",
                    );
                }
            }
        }
        if !p.freeze.is_empty() && p.freeze != ["visual"] {
            refuse(
                &mut out,
                s,
                format!("freeze = {:?}", p.freeze),
                "EasyR1 freezes the whole vision tower (freeze_vision_tower) or nothing",
            );
        }
        if let Some(g) = p.settings.grpo() {
            if g.advantage != AdvantageScaling::Group {
                refuse(
                    &mut out,
                    s,
                    format!("advantage = {:?}", g.advantage).to_lowercase(),
                    "EasyR1's grpo estimator divides by the group's std",
                );
            }
            if g.loss_agg == LossAgg::SeqMeanTokenSumNorm {
                refuse(
                    &mut out,
                    s,
                    "loss_agg = seq-mean-token-sum-norm".into(),
                    "EasyR1's loss_avg_mode is token or seq",
                );
            }
            if g.mask_truncated && !accept.iter().any(|a| a == "mask_truncated") {
                out.push(Refusal {
                    stage: s.into(),
                    feature: "mask_truncated = true".into(),
                    reason: ACCEPTABLE[0].1.into(),
                    accept: Some("mask_truncated".into()),
                });
            }
        }
        for e in plan.edges.iter().filter(|e| e.to == p.id) {
            let h = &e.handoff;
            for (what, carry) in [
                ("optimizer", h.optimizer),
                ("lr_schedule", h.lr_schedule),
                ("reference", h.reference),
                ("cursor", h.cursor),
            ] {
                if carry == Carry::Keep {
                    out.push(Refusal {
                        stage: s.into(),
                        feature: format!("handoff {} {{ {what} = keep }}", e.from),
                        reason: "an EasyR1 run starts from a merged checkpoint: a fresh \
                                 optimiser and schedule, that checkpoint as reference, data \
                                 from the top"
                            .into(),
                        accept: None,
                    });
                }
            }
        }
    }
    out
}

/// A stop that is a step count in the end: steps, epochs and samples (known once the data is),
/// and `and`/`or` of them.
fn counted(stop: &Stop) -> bool {
    match stop {
        Stop::Steps { .. } | Stop::Epochs { .. } | Stop::Samples { .. } | Stop::MinSteps { .. } => {
            true
        }
        Stop::All { all } => all.iter().all(counted),
        Stop::Any { any } => any.iter().all(counted),
        _ => false,
    }
}

/// `(every, n)` of an `eval(...)` part of the stop.
fn eval_stop(stop: &Stop) -> Option<(u64, u64)> {
    match stop {
        Stop::Eval { every, n, .. } => Some((*every, *n)),
        Stop::All { all: v } | Stop::Any { any: v } => v.iter().find_map(eval_stop),
        _ => None,
    }
}

/// Whether the stop reads the share of informative groups.
fn watches_groups(stop: &Stop) -> bool {
    match stop {
        Stop::InformativeBelow { .. } => true,
        Stop::All { all: v } | Stop::Any { any: v } => v.iter().any(watches_groups),
        _ => false,
    }
}

/// Why EasyR1 cannot load the plan's model, if it cannot.
fn unloadable(model: &ModelSpec) -> Option<String> {
    match model {
        ModelSpec::TinyVlm { preset } => Some(format!(
            "the built-in tiny_vlm({preset}) is curric's own architecture; pass --model with a \
             Hugging Face VLM"
        )),
        ModelSpec::Local { path } => {
            let cfg = std::fs::read_to_string(Path::new(path).join("config.json")).ok()?;
            let v: Value = serde_json::from_str(&cfg).ok()?;
            v.get("curric").is_some().then(|| {
                format!(
                    "`{path}` holds curric's tiny VLM (its vision tower is curric's own); pass \
                     --model with a Hugging Face VLM"
                )
            })
        }
        ModelSpec::Hub { .. } => None,
    }
}

fn base_model(plan: &Plan, opts: &ExportOptions) -> String {
    match (&opts.model, &plan.model) {
        (Some(m), _) => m.clone(),
        (None, ModelSpec::Local { path }) => std::fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.clone()),
        (None, ModelSpec::Hub { repo }) => repo.clone(),
        (None, m) => m.to_string(),
    }
}

/// The directory of the phase `id` in the export.
pub fn phase_dir(p: &Phase) -> String {
    format!("{:02}_{}", p.index + 1, sanitize(&p.id))
}

/// The phase whose weights `p` starts from: its first parent if that trains, else what the
/// parent started from (a probe or an eval changes no weights). `None`: the base model.
fn weights_from<'a>(plan: &'a Plan, p: &Phase) -> Option<&'a Phase> {
    let parent = plan.phase(p.parents.first()?)?;
    match parent.kind() {
        PhaseKind::Grpo | PhaseKind::Sft => Some(parent),
        PhaseKind::Probe | PhaseKind::Eval => weights_from(plan, parent),
    }
}

/// The probe whose pass-rate table decides this phase's data, if its data must wait for it.
fn waits_for(p: &Phase) -> Option<&str> {
    match (&p.difficulty.source, p.kind()) {
        (_, PhaseKind::Eval) => None,
        (LevelSource::Probe { stage }, _) if *stage != p.stage => Some(stage),
        _ => None,
    }
}

/// Writes the export of `plan` under `opts.out`.
pub fn export(plan: &Plan, opts: &ExportOptions) -> Result<Manifest> {
    for a in &opts.accept {
        if !ACCEPTABLE.iter().any(|(n, _)| n == a) {
            return Err(ExportError::UnknownAccept(a.clone()));
        }
    }
    if let Some(id) = &opts.only {
        if plan.phase(id).is_none() {
            return Err(ExportError::UnknownPhase(id.clone()));
        }
    }
    let refused = refusals(plan, opts.model.as_deref(), &opts.accept, false);
    if !refused.is_empty() {
        return Err(ExportError::Refused(refused));
    }
    let table = match &opts.pass_rates {
        Some(path) => read_results(path)?,
        None => PassRateTable::new(),
    };
    let model = base_model(plan, opts);
    let fresh = assess(&phase_inputs(plan), None)?;
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e| ExportError::Exec(ExecError::io(what, &path, e))
    };
    std::fs::create_dir_all(&opts.out).map_err(io("create", &opts.out))?;

    let mut phases = Vec::new();
    let mut decisions = Vec::new();
    for (p, f) in plan.phases.iter().zip(&fresh) {
        let dir = opts.out.join(phase_dir(p));
        let write = opts.only.as_ref().is_none_or(|id| *id == p.id);
        let waiting = waits_for(p).filter(|_| opts.pass_rates.is_none());
        let written = if write {
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            let inputs = Inputs {
                table: &table,
                with_data: waiting.is_none(),
                chunk: None,
            };
            write_phase(plan, p, &dir, &model, opts, inputs)?
        } else {
            Written::default()
        };
        decisions.extend(written.decisions);
        phases.push(PhaseEntry {
            id: p.id.clone(),
            kind: kind_word(p.kind()).into(),
            dir: phase_dir(p),
            fingerprint: f.fingerprint.clone(),
            runs_on: match p.kind() {
                PhaseKind::Grpo => "easyr1".into(),
                PhaseKind::Sft => "curric".into(),
                _ => "easyr1-val".into(),
            },
            starts_from: weights_from(plan, p).map_or_else(
                || model.clone(),
                |w| match w.kind() {
                    PhaseKind::Sft => format!("{}/hf", phase_dir(w)),
                    _ => format!("{} (merged)", phase_dir(w)),
                },
            ),
            train_rows: written.train_rows,
            val_rows: written.val_rows,
            data_after: waits_for(p).map(str::to_string),
        });
    }
    let manifest = Manifest {
        curric_version: env!("CARGO_PKG_VERSION").into(),
        easyr1_commit: EASYR1_COMMIT.into(),
        curriculum: plan.name.clone(),
        curriculum_file: opts.curriculum_file.display().to_string(),
        model,
        nodes: opts.nodes,
        gpus_per_node: opts.gpus_per_node,
        accepted: opts.accept.clone(),
        phases,
        decisions,
    };
    if opts.only.is_none() {
        let text = serde_json::to_string_pretty(&manifest).expect("the manifest serialises");
        write_atomic(
            &opts.out.join("manifest.json"),
            format!("{text}\n").as_bytes(),
        )?;
        let pipeline = pipeline_sh(plan, &manifest, opts);
        write_script(&opts.out.join("pipeline.sh"), &pipeline)?;
    }
    Ok(manifest)
}

fn kind_word(k: PhaseKind) -> &'static str {
    match k {
        PhaseKind::Sft => "sft",
        PhaseKind::Probe => "probe",
        PhaseKind::Grpo => "grpo",
        PhaseKind::Eval => "eval",
    }
}

#[derive(Default)]
struct Written {
    decisions: Vec<Decision>,
    train_rows: Option<usize>,
    val_rows: Option<usize>,
}

/// What a phase's job is written from besides the plan.
struct Inputs<'a> {
    /// The pass rates handed to the phase (probe-decided levels read them).
    table: &'a PassRateTable,
    /// False while the data waits for a probe: everything else is written.
    with_data: bool,
    /// Steps per launch when curric drives EasyR1 and evaluates the stop between launches.
    chunk: Option<u64>,
}

fn write_phase(
    plan: &Plan,
    p: &Phase,
    dir: &Path,
    model: &str,
    opts: &ExportOptions,
    inputs: Inputs<'_>,
) -> Result<Written> {
    let Inputs {
        table,
        with_data,
        chunk,
    } = inputs;
    if p.kind() == PhaseKind::Sft {
        write_script(&dir.join("run.sh"), &sft_sh(plan, p, model, opts))?;
        let mut cfg = Config::new(&p.id);
        cfg.decide(
            "kind = sft",
            "run.sh: `curric run --only` on the head node, then `curric export model` to hf/",
            "EasyR1 has no supervised trainer; curric trains the phase itself and the next \
             phase starts from hf/ (curric loads the start weights: its own models, Hugging \
             Face Qwen2 text checkpoints and Qwen2-VL / 2.5-VL / 3-VL)",
        );
        return Ok(Written {
            decisions: cfg.decisions,
            ..Written::default()
        });
    }
    let common = Common {
        curriculum: &plan.name,
        phase: &p.id,
        seed: p.seed,
        model,
        nodes: opts.nodes,
        gpus_per_node: opts.gpus_per_node,
        max_prompt_length: MAX_PROMPT_LENGTH,
        order: p.order.to_string(),
    };
    let terms = reward_terms(p)?;
    let format_prompt = format_prompt(&terms);
    let (train, val, mut cfg) = match &p.settings {
        Settings::Grpo(g) => {
            let stop = p
                .stop
                .as_ref()
                .expect("the checker gives grpo phases a stop");
            // Launched in chunks when curric evaluates the stop between launches.
            let chunk = chunk.filter(|_| !counted(stop));
            let eval_stop = chunk.and(eval_stop(stop));
            let (train, steps) = if with_data {
                let (rows, steps) = grpo_rows(p, g, table, stop)?;
                (Some(rows), Some(steps))
            } else {
                (None, None)
            };
            let val = match (with_data, eval_stop) {
                (false, _) => None,
                (true, Some((_, n))) => Some(eval_stop_rows(p, n)?),
                (true, None) => Some(val_rows(p, train.as_deref().unwrap_or(&[]))?),
            };
            let job = Job {
                rollout_batch_size: g.prompts_per_step,
                max_response_length: g.max_new_tokens,
                n: g.group_size,
                temperature: g.temperature,
                top_p: g.top_p,
                max_steps: Some(chunk.or(steps).unwrap_or(0)),
                stop: stop.to_string(),
                val_only: false,
                val_freq: eval_stop.map_or(-1, |(every, _)| every as i64),
                save_freq: chunk.unwrap_or(25) as i64,
                val_rollout: json!({"temperature": 0.0, "n": 1}),
                format_prompt: format_prompt.map(|_| FORMAT_PROMPT_FILE),
                reward_kwargs: if chunk.is_some() && watches_groups(stop) {
                    json!({"groups": true})
                } else {
                    json!({})
                },
            };
            let mut cfg = config::build(&common, &job, Some(g), p.freeze == ["visual"]);
            grpo_decisions(&mut cfg, g);
            (train, val, cfg)
        }
        Settings::Probe(pr) => {
            let rows = with_data.then(|| probe_rows(p, pr, table)).transpose()?;
            let job = Job {
                rollout_batch_size: 1,
                max_response_length: pr.max_new_tokens,
                n: pr.rollouts.max(2),
                temperature: pr.temperature,
                top_p: pr.top_p,
                max_steps: None,
                stop: String::new(),
                val_only: true,
                val_freq: -1,
                save_freq: -1,
                val_rollout: json!({"temperature": pr.temperature, "top_p": pr.top_p, "n": pr.rollouts}),
                format_prompt: format_prompt.map(|_| FORMAT_PROMPT_FILE),
                reward_kwargs: json!({"results": RESULTS_FILE, "pass_threshold": pr.pass_threshold}),
            };
            let mut cfg = config::build(&common, &job, None, false);
            cfg.decide(
                format!("kind = probe, rollouts = {}", pr.rollouts),
                "trainer.val_only = true; worker.rollout.val_override_config.n",
                "a validation-only job over the probed samples (val.jsonl); reward.py appends \
                 every rollout's result to results.jsonl, from which curric builds the \
                 pass-rate table",
            );
            cfg.decide(
                format!("pass_threshold = {}", pr.pass_threshold),
                "worker.reward.reward_function_kwargs.pass_threshold",
                "",
            );
            // The probed samples are the validation set; the train file only has to exist.
            (rows.clone(), rows, cfg)
        }
        Settings::Eval(e) => {
            let rows = eval_samples(p, &e.capabilities, &e.levels, e.n)?;
            let job = Job {
                rollout_batch_size: 1,
                max_response_length: e.max_new_tokens,
                n: 2,
                temperature: 1.0,
                top_p: 1.0,
                max_steps: None,
                stop: String::new(),
                val_only: true,
                val_freq: -1,
                save_freq: -1,
                val_rollout: if e.greedy {
                    json!({"temperature": 0.0, "n": 1})
                } else {
                    json!({"temperature": 1.0, "n": 1})
                },
                format_prompt: format_prompt.map(|_| FORMAT_PROMPT_FILE),
                reward_kwargs: json!({"results": RESULTS_FILE, "pass_threshold": 1.0}),
            };
            let mut cfg = config::build(&common, &job, None, false);
            cfg.decide(
                format!("kind = eval, n = {}, greedy = {}", e.n, e.greedy),
                "trainer.val_only = true; val.jsonl",
                "the held-out split curric's eval phase reads, scored by reward.py; \
                 worker.rollout.n is unused by a validation-only job (2 passes EasyR1's \
                 GRPO check)",
            );
            (Some(rows.clone()), Some(rows), cfg)
        }
        Settings::Sft(_) => unreachable!("written above"),
    };
    dtype_decision(&mut cfg, p.dtype);
    cfg.decide(
        format!(
            "reward {}",
            p.reward.as_ref().map_or("accuracy", |r| r.name.as_str())
        ),
        "worker.reward.reward_function = ./reward.py:compute_score",
        "the same terms and weights in Python; `overall` plus one key per term",
    );
    if format_prompt.is_some() {
        cfg.decide(
            "reward format / boxed answers",
            format!("data.format_prompt = {FORMAT_PROMPT_FILE}"),
            "tells a chat model the answer format the reward reads",
        );
    }
    if waits_for(p).is_some() {
        cfg.decide(
            format!("levels = {:?}", p.levels).to_lowercase(),
            "train.jsonl written after the probe ran",
            "bands over the probe's pass rates; curric's own run also folds in the pass rates \
             of GRPO rollouts between the probe and this phase",
        );
    }

    let header = format!(
        "EasyR1 config for phase `{}` ({}) of curriculum `{}`, written by `curric export \
         easyr1`\nfor EasyR1 {EASYR1_COMMIT}. Complete: every section EasyR1 parses is \
         here.\nrun.sh passes the start weights (worker.actor.model.model_path) and absolute \
         data paths.\nKeys marked `curric:` come from the curriculum; the rest are EasyR1's \
         defaults.",
        p.id,
        kind_word(p.kind()),
        plan.name
    );
    write_atomic(&dir.join("config.yaml"), cfg.to_yaml(&header).as_bytes())?;
    write_atomic(&dir.join("reward.py"), reward_py(&terms).as_bytes())?;
    if let Some(text) = format_prompt {
        write_atomic(&dir.join(FORMAT_PROMPT_FILE), text.as_bytes())?;
    }
    let train_rows = match &train {
        Some(rows) => Some(write_rows(dir, "train.jsonl", rows)?),
        None => None,
    };
    let val_rows = match &val {
        Some(rows) => Some(write_rows(dir, "val.jsonl", rows)?),
        None => None,
    };
    write_script(&dir.join("run.sh"), &run_sh(plan, p, model))?;
    Ok(Written {
        decisions: cfg.decisions,
        train_rows,
        val_rows,
    })
}

/// EasyR1's own default is 512; an image at EasyR1's minimum resolution is already ~330
/// tokens in a Qwen-VL processor.
const MAX_PROMPT_LENGTH: u64 = 2048;
const FORMAT_PROMPT_FILE: &str = "format_prompt.jinja";
/// Where reward.py appends per-rollout results in probe and eval jobs.
pub const RESULTS_FILE: &str = "results.jsonl";

fn grpo_decisions(cfg: &mut Config, g: &crate::spec::GrpoSettings) {
    cfg.decide(
        "mix, levels, filters",
        "train.jsonl",
        "rows are written in the order curric's sampler draws them, step by step: the mix \
         schedule, level selection and order are in the file",
    );
    if g.dynamic_sampling {
        cfg.decide(
            format!("dynamic_sampling = true, max_retries = {}", g.max_retries),
            "algorithm.online_filtering on `overall` in (0.01, 0.99)",
            "EasyR1 drops groups whose mean lies outside the band, curric groups whose rewards \
             are all equal (the same for 0/1 rewards); EasyR1 pulls whole new batches, so \
             train.jsonl continues the sampler for max_retries × steps extra batches",
        );
    }
    if g.mask_truncated {
        cfg.decide(
            "mask_truncated = true",
            "not exported (--accept mask_truncated)",
            ACCEPTABLE[0].1,
        );
    }
    cfg.decide(
        format!("pass_threshold = {}", g.pass_threshold),
        "not exported",
        "curric's online pass-rate table; EasyR1 keeps none",
    );
    cfg.decide(
        "(none)",
        "worker.actor.clip_ratio_dual = 3.0",
        "EasyR1's dual-clip PPO bound on negative advantages; curric has no such bound",
    );
}

/// The actor's compute dtype. EasyR1 keeps f32 parameters under FSDP and computes in
/// `mp_param_dtype`, which is curric's `dtype` (bf16: f32 master weights, bf16 compute).
fn dtype_decision(cfg: &mut Config, dtype: crate::spec::Dtype) {
    let mp = match dtype {
        crate::spec::Dtype::F32 => "fp32",
        crate::spec::Dtype::Bf16 => "bf16",
    };
    cfg.set("worker.actor.fsdp.mp_param_dtype", mp);
    cfg.set("worker.ref.fsdp.mp_param_dtype", mp);
    cfg.decide(
        format!("dtype = {dtype}"),
        format!("worker.actor.fsdp.mp_param_dtype = {mp}; worker.ref.fsdp.mp_param_dtype = {mp}"),
        "vLLM's rollout stays at EasyR1's bf16 (worker.rollout.dtype)",
    );
}

/// The train rows of a GRPO phase: the sampler's draws, step by step; and the steps.
fn grpo_rows(
    p: &Phase,
    g: &crate::spec::GrpoSettings,
    table: &PassRateTable,
    stop: &Stop,
) -> Result<(Vec<Sample>, u64)> {
    let pools = pools(p, table)?;
    let epoch: u64 = pools.iter().map(|(_, s)| s.len() as u64).sum();
    // A stop with no step bound (driven in chunks) gets ten epochs of rows.
    let steps = stop
        .step_bound(Some(epoch), g.prompts_per_step)
        .unwrap_or_else(|| (10 * epoch).div_ceil(g.prompts_per_step).max(1));
    let mut sampler = Sampler::new(sampler_spec(p, g.prompts_per_step as usize, steps), pools)
        .map_err(|e| phase_err(p, e))?;
    let extra = if g.dynamic_sampling {
        steps * g.max_retries
    } else {
        0
    };
    let mut rows = Vec::new();
    for _ in 0..steps + extra {
        rows.extend(sampler.next_step_samples());
    }
    Ok((rows, steps))
}

/// The probe's samples: one epoch of its sampler, as the probe walks it.
fn probe_rows(
    p: &Phase,
    pr: &crate::spec::ProbeSettings,
    table: &PassRateTable,
) -> Result<Vec<Sample>> {
    let pools = pools(p, table)?;
    let epoch: u64 = pools.iter().map(|(_, s)| s.len() as u64).sum();
    let stop = p.stop.clone().unwrap_or(Stop::Epochs { n: 1.0 });
    let steps = stop.step_bound(Some(epoch), pr.batch_size).unwrap_or(1);
    let mut sampler = Sampler::new(sampler_spec(p, pr.batch_size as usize, steps), pools)
        .map_err(|e| phase_err(p, e))?;
    let mut rows = Vec::new();
    for _ in 0..steps {
        // As the probe does: an epoch's last step takes what is left of it.
        let left = epoch - rows.len() as u64 % epoch.max(1);
        let k = pr.batch_size.min(left).max(1) as usize;
        let drawn = sampler.next_step_of(k);
        rows.extend(drawn.iter().map(|d| sampler.sample(d).clone()));
    }
    Ok(rows)
}

/// What a GRPO job validates on (EasyR1 needs a file; val_freq = -1 never reads it during
/// training): the held-out split of its suite sources' capabilities at its levels, else the
/// first step's prompts.
fn val_rows(p: &Phase, train: &[Sample]) -> Result<Vec<Sample>> {
    let mut caps: Vec<String> = Vec::new();
    for s in &p.sources {
        match &s.kind {
            crate::spec::SourceKind::Suite { capability, .. } => {
                if !caps.contains(capability) {
                    caps.push(capability.clone());
                }
            }
            _ => return Ok(train.iter().take(8).cloned().collect()),
        }
    }
    let levels = if p.levels.is_empty() {
        vec![
            crate::data::Level::Easy,
            crate::data::Level::Medium,
            crate::data::Level::Hard,
        ]
    } else {
        p.levels.clone()
    };
    Ok(eval_samples(p, &caps, &levels, 4)?)
}

/// The held-out samples an `eval(...)` stop scores, as curric's runner picks them.
fn eval_stop_rows(p: &Phase, n: u64) -> Result<Vec<Sample>> {
    Ok(eval_samples(
        p,
        std::slice::from_ref(&p.capability),
        &p.levels,
        n,
    )?)
}

fn phase_err(p: &Phase, e: impl std::fmt::Display) -> ExportError {
    ExportError::Exec(ExecError::Phase {
        phase: p.id.clone(),
        message: e.to_string(),
    })
}

/// A probe's `results.jsonl` (one line per rollout: id, passed) as a pass-rate table.
pub fn read_results(path: &Path) -> Result<PassRateTable> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ExportError::Exec(ExecError::io("read", path, e)))?;
    let mut table = PassRateTable::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: &str| {
            ExportError::Exec(ExecError::Json {
                path: PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                message: m.into(),
            })
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no string `id`"))?;
        let passed = v
            .get("passed")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("no boolean `passed`"))?;
        table
            .record(id, passed as u64, 1, 0)
            .map_err(|e| bad(&e.to_string()))?;
    }
    Ok(table)
}

/// Writes `rows` as EasyR1 JSONL with their images beside (`images/`, each once); returns
/// the row count.
fn write_rows(dir: &Path, name: &str, rows: &[Sample]) -> Result<usize> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)
        .map_err(|e| ExportError::Exec(ExecError::io("create", &images, e)))?;
    let mut out = String::new();
    for s in rows {
        let stem = sanitize(&s.id);
        let mut rels = Vec::new();
        for (j, img) in s.images.iter().enumerate() {
            let rel = format!("images/{stem}_{j}.png");
            let full = dir.join(&rel);
            if !full.exists() {
                img.save(&full).map_err(|e| {
                    ExportError::Exec(ExecError::Phase {
                        phase: name.into(),
                        message: format!("cannot write {}: {e}", full.display()),
                    })
                })?;
            }
            rels.push(rel);
        }
        let mut row = crate::data::jsonl::to_row(s, &rels);
        // EasyR1 collates every other field into a numpy object array per batch, where
        // equal-length lists become a second axis; the rewards' lists travel in
        // `ground_truth` instead.
        row.retain(|k, v| k == "images" || !(v.is_array() || v.is_object()));
        row.insert("ground_truth".into(), ground_truth(s).into());
        out.push_str(&Value::Object(row).to_string());
        out.push('\n');
    }
    write_atomic(&dir.join(name), out.as_bytes())?;
    Ok(rows.len())
}

/// What reward.py reads of a sample, as the JSON string EasyR1 hands it as `ground_truth`.
pub fn ground_truth(s: &Sample) -> String {
    let mut m = serde_json::Map::new();
    m.insert("answer".into(), s.answer.clone().into());
    m.insert("id".into(), s.id.clone().into());
    if !s.key_words.is_empty() {
        m.insert("key_words".into(), s.key_words.clone().into());
    }
    if !s.objects.is_empty() {
        m.insert("objects".into(), s.objects.clone().into());
    }
    Value::Object(m).to_string()
}

/// A phase's reward terms as reward.py's TERMS: (label, term, weight, args), labels as
/// curric logs them.
fn reward_terms(p: &Phase) -> Result<Vec<(String, String, f64, Value)>> {
    let terms: Vec<(String, f64, serde_json::Map<String, Value>)> = match &p.reward {
        Some(r) => r
            .terms
            .iter()
            .map(|t| (t.term.clone(), t.weight, t.args.clone()))
            .collect(),
        None => vec![("accuracy".into(), 1.0, serde_json::Map::new())],
    };
    let set = crate::reward::RewardSet::from_spec(
        terms.iter().map(|(n, w, a)| (n.as_str(), *w as f32, a)),
    )
    .map_err(|e| phase_err(p, e))?;
    Ok(set
        .labels()
        .into_iter()
        .zip(terms)
        .map(|(label, (term, weight, args))| {
            let args = with_defaults(&term, args);
            (label, term, weight, Value::Object(args))
        })
        .collect())
}

/// `args` with every catalogue default filled in, so that reward.py needs no catalogue.
pub fn with_defaults(
    term: &str,
    mut args: serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    use crate::reward::catalog::{self, Default as D};
    if let Some(info) = catalog::term(term) {
        for p in info.params {
            if args.contains_key(p.name) {
                continue;
            }
            let v = match p.default {
                D::Number(x) => json!(x),
                D::Str(s) => json!(s),
                D::StrList(l) => json!(l),
                D::Required | D::Absent => continue,
            };
            args.insert(p.name.into(), v);
        }
    }
    args
}

/// reward.py for these terms.
pub fn reward_py(terms: &[(String, String, f64, Value)]) -> String {
    let mut list = String::from("TERMS = [\n");
    for (label, term, weight, args) in terms {
        // JSON literals are Python literals except true/false/null, which the args avoid
        // being only strings, numbers and lists; json.loads keeps it exact anyway.
        let args = serde_json::to_string(args).expect("args serialise");
        list.push_str(&format!(
            "    ({}, {}, {}, json.loads({})),\n",
            serde_json::to_string(label).expect("a string serialises"),
            serde_json::to_string(term).expect("a string serialises"),
            weight,
            serde_json::to_string(&args).expect("a string serialises"),
        ));
    }
    list.push(']');
    REWARD_PY.replacen("TERMS = []", &list, 1)
}

/// The instruction a chat model needs to answer in the format the reward reads, if any.
fn format_prompt(terms: &[(String, String, f64, Value)]) -> Option<&'static str> {
    let style = |t: &(String, String, f64, Value)| {
        t.3.get("style").and_then(Value::as_str).map(str::to_string)
    };
    let formats: Vec<String> = terms
        .iter()
        .filter(|t| t.1 == "format")
        .filter_map(style)
        .collect();
    let boxed = terms
        .iter()
        .any(|t| t.1 == "accuracy" && t.3.get("extract").and_then(Value::as_str) == Some("boxed"));
    if formats.iter().any(|s| s == "think_then_boxed") || boxed {
        Some(
            "{{ content | trim }} First think about the question inside <think> </think> tags, \
             then give only the final answer in \\boxed{}.\n",
        )
    } else if formats.iter().any(|s| s == "think_then_answer") {
        Some(
            "{{ content | trim }} First think about the question inside <think> </think> tags, \
             then give only the final answer inside <answer> </answer> tags.\n",
        )
    } else {
        None
    }
}

fn write_script(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| ExportError::Exec(ExecError::io("chmod", path, e)))?;
    }
    Ok(())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` escaped for the inside of a double-quoted shell word (`"${X:-…}"`).
fn dq(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\\' | '"' | '$' | '`' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// run.sh's MODEL: the base model's default for a root, else what pipeline.sh passes.
fn model_line(plan: &Plan, p: &Phase, model: &str) -> String {
    match weights_from(plan, p) {
        None => format!("MODEL=\"${{MODEL:-{}}}\"", dq(model)),
        Some(w) => format!(
            "MODEL=\"${{MODEL:?set MODEL to the merged checkpoint of {} (pipeline.sh does)}}\"",
            phase_dir(w)
        ),
    }
}

fn run_sh(plan: &Plan, p: &Phase, model: &str) -> String {
    let model_line = model_line(plan, p, model);
    let mut extra = String::new();
    if matches!(p.kind(), PhaseKind::Probe | PhaseKind::Eval) {
        extra.push_str(&format!(
            " \\\n  worker.reward.reward_function_kwargs.results=\"$here/{RESULTS_FILE}\""
        ));
    }
    let what = match p.kind() {
        PhaseKind::Grpo => "GRPO training",
        PhaseKind::Probe => "a validation-only probe (per-rollout results in results.jsonl)",
        PhaseKind::Eval => "a validation-only eval (per-rollout results in results.jsonl)",
        PhaseKind::Sft => "supervised training",
    };
    let fresh = if matches!(p.kind(), PhaseKind::Probe | PhaseKind::Eval) {
        format!("rm -f \"$here/{RESULTS_FILE}\"\n")
    } else {
        String::new()
    };
    format!(
        "#!/usr/bin/env bash\n\
         # Phase `{id}` of `{name}` on EasyR1: {what}. Written by `curric export easyr1`.\n\
         # EASYR1: an EasyR1 checkout (on the Ray head node). PYTHON: its interpreter.\n\
         # MODEL: the weights to start from. A rerun resumes from the last checkpoint.\n\
         set -euo pipefail\n\
         here=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n\
         : \"${{EASYR1:?set EASYR1 to an EasyR1 checkout}}\"\n\
         {model_line}\n\
         cd \"$here\"\n\
         {fresh}\
         PYTHONPATH=\"$EASYR1${{PYTHONPATH:+:$PYTHONPATH}}\" \"${{PYTHON:-python3}}\" -m verl.trainer.main \\\n  \
         config=\"$here/config.yaml\" \\\n  \
         data.train_files=\"$here/train.jsonl\" data.val_files=\"$here/val.jsonl\" \\\n  \
         worker.actor.model.model_path=\"$MODEL\"{extra} \"$@\"\n",
        id = p.id,
        name = plan.name,
    )
}

/// An sft phase's run.sh: curric trains it alone (`--only`) from MODEL, with the probe's
/// results when its levels come from one, and writes the weights to hf/.
fn sft_sh(plan: &Plan, p: &Phase, model: &str, opts: &ExportOptions) -> String {
    let model_line = model_line(plan, p, model);
    let rates = match waits_for(p).and_then(|stage| plan.phases.iter().find(|q| q.stage == stage)) {
        Some(probe) => format!(
            " \\\n  --pass-rates \"$here/../{}/{RESULTS_FILE}\"",
            phase_dir(probe)
        ),
        None => String::new(),
    };
    format!(
        "#!/usr/bin/env bash\n\
         # Phase `{id}` of `{name}`: supervised training with curric on this machine (EasyR1\n\
         # has no supervised trainer), then its weights in Hugging Face format in hf/, which the\n\
         # next phase starts from. Written by `curric export easyr1`.\n\
         # CURRIC, CURRIC_FILE: curric and the curriculum. MODEL: the weights to start from (a\n\
         # directory, or a hub id in the local cache). DEVICE: default cuda:0. A rerun resumes.\n\
         set -euo pipefail\n\
         here=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n\
         CURRIC=\"${{CURRIC:-curric}}\"\n\
         CURRIC_FILE=\"${{CURRIC_FILE:-{file}}}\"\n\
         {model_line}\n\
         \"$CURRIC\" run \"$CURRIC_FILE\" --only {id} --from \"$MODEL\" --run-dir \"$here/run\" \\\n  \
         --device \"${{DEVICE:-cuda:0}}\" --quiet{rates} \"$@\"\n\
         \"$CURRIC\" export model \"$here/run\" --phase {id} --out \"$here/hf\"\n",
        id = p.id,
        name = plan.name,
        file = dq(&opts.curriculum_file.display().to_string()),
    )
}

fn pipeline_sh(plan: &Plan, m: &Manifest, opts: &ExportOptions) -> String {
    let mut flags = format!(
        "--nodes {} --gpus-per-node {} --model {}",
        opts.nodes,
        opts.gpus_per_node,
        sh_quote(&m.model)
    );
    for a in &opts.accept {
        flags.push_str(&format!(" --accept {a}"));
    }
    let mut s = format!(
        "#!/usr/bin/env bash\n\
         # `{name}` on EasyR1, phase by phase in plan order. Written by `curric export easyr1`;\n\
         # manifest.json lists what maps to what.\n\
         #\n\
         # EASYR1: an EasyR1 checkout, on the Ray head node. PYTHON: its interpreter.\n\
         # CURRIC, CURRIC_FILE: curric and the curriculum, to write the data of phases whose\n\
         # levels come from a probe once it ran.\n\
         # A rerun skips finished phases (their DONE file) and resumes the one in progress from\n\
         # its last EasyR1 checkpoint.\n\
         set -euo pipefail\n\
         here=\"$(cd \"$(dirname \"$0\")\" && pwd)\"\n\
         : \"${{EASYR1:?set EASYR1 to an EasyR1 checkout}}\"\n\
         export EASYR1 PYTHON=\"${{PYTHON:-python3}}\"\n\
         CURRIC=\"${{CURRIC:-curric}}\"\n\
         CURRIC_FILE=\"${{CURRIC_FILE:-{file}}}\"\n\
         BASE={base}\n\
         \n\
         run() {{ # DIR MODEL: run a phase once\n  \
           if [ -f \"$here/$1/DONE\" ]; then echo \"$1: done, skipped\"; return; fi\n  \
           echo \"$1: starting from $2\"\n  \
           MODEL=\"$2\" bash \"$here/$1/run.sh\"\n  \
           touch \"$here/$1/DONE\"\n\
         }}\n\
         \n\
         merged() {{ # DIR: its last checkpoint's actor in Hugging Face format, merged once\n  \
           local step\n  \
           step=\"$(ls -d \"$here/$1\"/checkpoints/global_step_* | sort -V | tail -n 1)\"\n  \
           if ! ls \"$step/actor/huggingface/\"*.safetensors >/dev/null 2>&1; then\n    \
             \"$PYTHON\" \"$EASYR1/scripts/model_merger.py\" --local_dir \"$step/actor\" >&2\n  \
           fi\n  \
           echo \"$step/actor/huggingface\"\n\
         }}\n\
         \n\
         data_from() {{ # PROBE_DIR PHASE: write PHASE's data from the probe's results\n  \
           if [ -f \"$here/$1/DONE\" ] && [ ! -f \"$here/$1/DATA_$2\" ]; then\n    \
             \"$CURRIC\" export easyr1 \"$CURRIC_FILE\" --out \"$here\" --only \"$2\" \\\n      \
               --pass-rates \"$here/$1/{results}\" {flags}\n    \
             touch \"$here/$1/DATA_$2\"\n  \
           fi\n\
         }}\n",
        name = plan.name,
        file = dq(&opts.curriculum_file.display().to_string()),
        base = sh_quote(&m.model),
        results = RESULTS_FILE,
    );
    let var = |p: &Phase| format!("W_{}", p.index + 1);
    for p in &plan.phases {
        s.push('\n');
        let from = match weights_from(plan, p) {
            None => "\"$BASE\"".to_string(),
            Some(w) => format!("\"${}\"", var(w)),
        };
        s.push_str(&format!("run {} {from}\n", phase_dir(p)));
        match p.kind() {
            PhaseKind::Grpo => {
                s.push_str(&format!("{}=\"$(merged {})\"\n", var(p), phase_dir(p)));
            }
            PhaseKind::Sft => s.push_str(&format!("{}=\"$here/{}/hf\"\n", var(p), phase_dir(p))),
            PhaseKind::Probe | PhaseKind::Eval => {}
        }
        if p.kind() == PhaseKind::Probe {
            // An sft phase reads the probe's results itself (its run.sh).
            let fed = plan
                .phases
                .iter()
                .filter(|q| waits_for(q) == Some(&p.stage) && q.kind() != PhaseKind::Sft);
            for q in fed {
                s.push_str(&format!("data_from {} {}\n", phase_dir(p), q.id));
            }
        }
    }
    s
}

/// One line per phase: its directory, kind, how it runs, its data and its start weights.
pub fn describe(m: &Manifest) -> String {
    let mut out = String::new();
    for p in &m.phases {
        let rows = match (p.train_rows, &p.data_after) {
            (Some(_), _) if p.runs_on == "easyr1-val" => {
                format!("{} val rows", p.val_rows.unwrap_or(0))
            }
            (Some(n), _) => format!("{n} train rows"),
            (None, Some(probe)) => format!("data after probe `{probe}`"),
            (None, None) => "not written".into(),
        };
        out.push_str(&format!(
            "{:<28} {:<6} {:<11} {rows}; starts from {}\n",
            p.dir, p.kind, p.runs_on, p.starts_from
        ));
    }
    out
}
