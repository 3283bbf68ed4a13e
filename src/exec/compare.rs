//! `curric compare`: the ablation table. Every curriculum runs under every seed (the seed
//! replaces the file's), each final model and each distinct base are graded on one shared
//! held-out set (every built-in capability × level, fixed seed), and the result is the table
//! a paper prints: accuracy per capability and overall as mean ± std over seeds, the per-seed
//! values, the gain over the base, the mean completion length, rollouts, SFT samples and wall
//! time — as Markdown, `compare.json` and an SVG bar chart with error bars.
//!
//! ```text
//! OUT/runs/<curriculum>/seed-<s>/   one run directory per arm and seed (`curric run` layout)
//! OUT/evals/<weights blake3>.json   the shared eval of one set of weights, cached
//! OUT/compare.json, compare.md, compare.svg
//! ```
//!
//! Resuming is `curric run`'s: a killed compare rerun skips finished phases, resumes the phase
//! in progress from its checkpoint and reuses cached evals. A phase whose fingerprint equals a
//! finished phase in another run directory of the grid (same spec, seed, data and parents) is
//! adopted from there instead of trained again. Finished run directories given in place of
//! `.curr` files join the table as they are.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::error::{ExecError, Result};
use super::eval::EvalResult;
use super::fingerprint::assess;
use super::fingerprint::hash_file;
use super::manifest::{Manifest, PhaseStatus};
use super::phases::EvalSet;
use super::rundir::{write_atomic, RunDir};
use super::runner::{phase_inputs, run_plan, PhaseOutcome, RunOptions};
use crate::data::{suite, Level};
use crate::model::Policy;
use crate::plan::Plan;
use crate::rollout::{phase_key, SeedCtx};
use crate::spec::{ModelSpec, Settings};

/// The shared held-out set's seed: one set for every arm, seed and base.
pub const EVAL_SEED: u64 = 20_260_501;
/// Arms whose planned budgets differ by more than this are not compute-matched.
pub const BUDGET_TOLERANCE: f64 = 0.05;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// `.curr` files, or finished run directories (joined as they are).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Seeds per curriculum: `--first-seed`, `--first-seed + 1`, …
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Where run directories, evals and the table go.
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
    /// Runs at once. On a small CPU, `--jobs 2` with `RAYON_NUM_THREADS=1` keeps both cores
    /// busier than one run with two threads.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Held-out samples per capability × level in the shared eval.
    #[arg(long, default_value_t = 48)]
    pub eval_n: u64,
    /// Longest answer the shared eval decodes.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: u64,
    /// Print `compare.json` instead of the Markdown table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// `cpu` or `cuda:N`; overrides every curriculum's `device`.
    #[arg(long)]
    pub device: Option<String>,
    /// Testing: behave as if killed after this many steps of the first phase run.
    #[arg(long, hide = true)]
    pub stop_after_steps: Option<u64>,
}

/// One cell of the shared eval: accuracy per capability, overall and mean length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub overall: f64,
    pub by_capability: BTreeMap<String, f64>,
    pub mean_len: f64,
}

impl From<&EvalResult> for Scores {
    fn from(r: &EvalResult) -> Self {
        Scores {
            overall: r.overall,
            by_capability: r.by_capability.clone(),
            mean_len: r.mean_response_len,
        }
    }
}

/// One finished run of one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    pub seed: u64,
    pub run_dir: String,
    pub scores: Scores,
    /// Completions sampled by grpo and probe phases.
    pub rollouts: u64,
    /// Samples trained on by sft phases.
    pub sft_samples: u64,
    /// Sum of the phases' wall times.
    pub wall_s: f64,
}

/// Mean and sample standard deviation (n − 1; 0 for one value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

pub fn mean_std(xs: &[f64]) -> MeanStd {
    let n = xs.len();
    if n == 0 {
        return MeanStd {
            mean: f64::NAN,
            std: f64::NAN,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let std = if n < 2 {
        0.0
    } else {
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    MeanStd { mean, std }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub curriculum: String,
    /// The `.curr` file or run directory it came from.
    pub input: String,
    /// The key of the base it starts from (see [`Table::bases`]).
    pub base: String,
    /// The plan's budget: rollouts + sft samples, when the plan can tell.
    pub planned_budget: Option<u64>,
    pub runs: Vec<SeedRun>,
    pub overall: MeanStd,
    pub by_capability: BTreeMap<String, MeanStd>,
    /// Mean over seeds of overall accuracy minus the base's.
    pub gain: f64,
    pub mean_len: MeanStd,
    pub rollouts: f64,
    pub sft_samples: f64,
    pub wall_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Base {
    pub key: String,
    /// What the plans say: the checkpoint path, or `tiny_vlm(PRESET) seed S` for a preset
    /// (whose weights depend on the seed: its base is the first seed's).
    pub model: String,
    pub scores: Scores,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub version: u32,
    pub created: String,
    pub eval: EvalSpec,
    pub capabilities: Vec<String>,
    pub bases: Vec<Base>,
    pub arms: Vec<Arm>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    pub seed: u64,
    pub n_per_cell: u64,
    pub max_new_tokens: u64,
    pub samples: usize,
}

/// Folds per-seed runs into an arm's statistics.
pub fn summarise(
    curriculum: &str,
    input: &str,
    base: &Base,
    planned_budget: Option<u64>,
    runs: Vec<SeedRun>,
) -> Arm {
    let overall: Vec<f64> = runs.iter().map(|r| r.scores.overall).collect();
    let mut by_capability = BTreeMap::new();
    for cap in base.scores.by_capability.keys() {
        let xs: Vec<f64> = runs
            .iter()
            .map(|r| r.scores.by_capability.get(cap).copied().unwrap_or(0.0))
            .collect();
        by_capability.insert(cap.clone(), mean_std(&xs));
    }
    let lens: Vec<f64> = runs.iter().map(|r| r.scores.mean_len).collect();
    let avg = |f: &dyn Fn(&SeedRun) -> f64| {
        if runs.is_empty() {
            0.0
        } else {
            runs.iter().map(f).sum::<f64>() / runs.len() as f64
        }
    };
    let overall = mean_std(&overall);
    Arm {
        curriculum: curriculum.to_string(),
        input: input.to_string(),
        base: base.key.clone(),
        planned_budget,
        gain: overall.mean - base.scores.overall,
        overall,
        by_capability,
        mean_len: mean_std(&lens),
        rollouts: avg(&|r| r.rollouts as f64),
        sft_samples: avg(&|r| r.sft_samples as f64),
        wall_s: avg(&|r| r.wall_s),
        runs,
    }
}

/// The budget a plan spends on training: grpo and probe rollouts plus sft samples. `None`
/// when a phase's size is only known at run time.
pub fn planned_budget(plan: &Plan) -> Option<u64> {
    let mut total = 0u64;
    for p in &plan.phases {
        total += match &p.settings {
            Settings::Grpo(_) | Settings::Probe(_) => p.estimate.rollouts?,
            Settings::Sft(s) => p.estimate.steps? * s.batch_size,
            Settings::Eval(_) => 0,
        };
    }
    Some(total)
}

/// Warnings for arms whose budgets differ by more than [`BUDGET_TOLERANCE`].
pub fn budget_warnings(arms: &[(String, Option<u64>)]) -> Vec<String> {
    let known: Vec<(&String, u64)> = arms.iter().filter_map(|(n, b)| b.map(|b| (n, b))).collect();
    let mut out: Vec<String> = arms
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(n, _)| format!("{n}: the plan cannot size its budget before running"))
        .collect();
    let Some(min) = known.iter().map(|(_, b)| *b).min() else {
        return out;
    };
    let max = known.iter().map(|(_, b)| *b).max().unwrap_or(min);
    if min > 0 && (max - min) as f64 / min as f64 > BUDGET_TOLERANCE {
        let list = known
            .iter()
            .map(|(n, b)| format!("{n} {b}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "arms are not compute-matched: planned rollouts + sft samples differ by {:.0}% ({list})",
            (max - min) as f64 / min as f64 * 100.0
        ));
    }
    out
}

/// The shared held-out set: every built-in capability × level, [`EVAL_SEED`].
pub fn eval_set(n: u64, max_new_tokens: u64) -> Result<EvalSet> {
    let mut samples = Vec::new();
    for cap in suite::capabilities() {
        for level in Level::ALL {
            samples.extend(suite::eval_split(&cap, level, n as usize, EVAL_SEED).map_err(cerr)?);
        }
    }
    Ok(EvalSet {
        samples,
        rewards: crate::reward::RewardSet::accuracy().map_err(cerr)?,
        max_new_tokens: max_new_tokens as usize,
        greedy: true,
        pass_threshold: crate::spec::keys::pass_threshold(),
    })
}

/// An error of the comparison itself (not of one of its runs).
fn cerr(e: impl std::fmt::Display) -> ExecError {
    ExecError::Phase {
        phase: "compare".into(),
        message: e.to_string(),
    }
}

/// Evaluates the weights in `dir` on the shared set, cached under their hash.
fn shared_eval(
    out: &Path,
    set: &EvalSet,
    spec: &EvalSpec,
    dir: &Path,
    device: &candle_core::Device,
) -> Result<Scores> {
    let weights = dir.join(super::export::WEIGHTS_FILE);
    let key = hash_file(&weights)?;
    let cache = out.join("evals").join(format!(
        "{}-n{}-t{}.json",
        &key[..32],
        spec.n_per_cell,
        spec.max_new_tokens
    ));
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Ok(s) = serde_json::from_str::<Scores>(&text) {
            return Ok(s);
        }
    }
    let policy = Policy::load(dir, device)
        .map_err(|e| cerr(format!("cannot load `{}`: {e}", dir.display())))?;
    let ctx = SeedCtx {
        seed: EVAL_SEED,
        phase: phase_key("compare"),
        step: 0,
    };
    let result = set.run("compare", &policy, ctx, 0)?;
    let scores = Scores::from(&result);
    write_atomic(
        &cache,
        serde_json::to_string_pretty(&scores)
            .expect("serialisable")
            .as_bytes(),
    )?;
    Ok(scores)
}

/// A base's weights as a directory: a local checkpoint as it is, a built-in preset written
/// once into `OUT/bases/`.
fn base_dir(out: &Path, model: &ModelSpec, seed: u64) -> Result<(String, PathBuf)> {
    let fail = |e: String| ExecError::Phase {
        phase: "compare".into(),
        message: e,
    };
    match model {
        ModelSpec::Local { path } => Ok((lexical(path), PathBuf::from(path))),
        ModelSpec::TinyVlm { preset } => {
            let label = format!("tiny_vlm({preset}) seed {seed}");
            let dir = out
                .join("bases")
                .join(format!("tiny_vlm-{preset}-seed{seed}"));
            if !dir.join(super::export::WEIGHTS_FILE).exists() {
                let p = Policy::tiny_with_words(
                    preset,
                    &suite::vocabulary(),
                    seed,
                    &candle_core::Device::Cpu,
                )
                .map_err(|e| fail(e.to_string()))?;
                let tmp = dir.with_extension("tmp");
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir_all(&tmp).map_err(|e| ExecError::io("create", &tmp, e))?;
                p.save(&tmp).map_err(|e| fail(e.to_string()))?;
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir).map_err(|e| ExecError::io("rename", &tmp, e))?;
            }
            Ok((label, dir))
        }
        ModelSpec::Hub { repo } => Err(fail(format!(
            "`hf(\"{repo}\")` bases are not compared yet: export the run's base with a local() model"
        ))),
    }
}

/// `curricula/../models/x` → `models/x`, for labels (the path itself is used as written).
fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "." | "" if !parts.is_empty() => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Where the run's final weights are, and what the run spent.
fn run_totals(run_dir: &Path) -> Result<(PathBuf, u64, u64, f64)> {
    let rd = RunDir::new(run_dir);
    let m = Manifest::load(&rd.manifest())?.ok_or_else(|| ExecError::NoCheckpoint {
        dir: run_dir.to_path_buf(),
        reason: "no manifest.toml".into(),
    })?;
    if let Some(r) = m.phases.iter().find(|r| r.status != PhaseStatus::Done) {
        return Err(ExecError::Phase {
            phase: r.id.clone(),
            message: format!(
                "of `{}` has not finished (status {})",
                run_dir.display(),
                r.status
            ),
        });
    }
    let last = super::export::final_phase(&m)
        .and_then(|r| r.checkpoint.as_ref())
        .ok_or_else(|| ExecError::NoCheckpoint {
            dir: run_dir.to_path_buf(),
            reason: "no phase left a checkpoint".into(),
        })?;
    let (mut rollouts, mut sft, mut wall) = (0u64, 0u64, 0.0f64);
    for r in &m.phases {
        for rec in super::metrics::read_metrics(&rd.metrics(&r.id))? {
            rollouts += rec.values.get("rollouts").copied().unwrap_or(0.0) as u64;
            sft += rec.values.get("sft_samples").copied().unwrap_or(0.0) as u64;
        }
        if let (Some(a), Some(b)) = (&r.started, &r.ended) {
            if let (Ok(a), Ok(b)) = (humantime::parse_rfc3339(a), humantime::parse_rfc3339(b)) {
                wall += b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            }
        }
    }
    Ok((rd.root().join(last), rollouts, sft, wall))
}

/// Copies into `run_dir` every phase of `plan` that another run directory under `runs`
/// finished with the same fingerprint, so `run_plan` finds it fresh. Returns how many.
pub fn adopt_shared(plan: &Plan, run_dir: &Path, runs: &Path) -> Result<usize> {
    let rd = RunDir::create(run_dir)?;
    let mut manifest = Manifest::load(&rd.manifest())?.unwrap_or_else(|| Manifest::new(&plan.name));
    let mut others = Vec::new();
    for dir in walk_run_dirs(runs) {
        if dir == run_dir {
            continue;
        }
        if let Ok(Some(m)) = Manifest::load(&RunDir::new(&dir).manifest()) {
            others.push((dir, m));
        }
    }
    let mut adopted = 0;
    // Phases come in topological order, so a parent is adopted before its children.
    for f in assess(&phase_inputs(plan), Some(&manifest))? {
        if f.dirty.is_none() {
            continue;
        }
        let found = others.iter().find_map(|(dir, m)| {
            m.get(&f.id)
                .filter(|r| {
                    r.status == PhaseStatus::Done
                        && r.fingerprint.as_deref() == Some(f.fingerprint.as_str())
                })
                .map(|r| (dir, r.clone()))
        });
        let Some((dir, rec)) = found else { continue };
        let from = RunDir::new(dir).phase(&f.id);
        let to = rd.phase(&f.id);
        let _ = std::fs::remove_dir_all(&to);
        copy_tree(&from, &to)?;
        manifest.phases.retain(|r| r.id != f.id);
        manifest.phases.push(rec);
        adopted += 1;
    }
    // Keep the plan's order, which `run_plan` would restore anyway.
    manifest
        .phases
        .sort_by_key(|r| plan.phase(&r.id).map(|p| p.index).unwrap_or(usize::MAX));
    manifest.save(&rd.manifest())?;
    Ok(adopted)
}

fn walk_run_dirs(runs: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(arms) = std::fs::read_dir(runs) else {
        return out;
    };
    for arm in arms.flatten() {
        if let Ok(seeds) = std::fs::read_dir(arm.path()) {
            out.extend(seeds.flatten().map(|s| s.path()));
        }
    }
    out.sort();
    out
}

/// Hard links where the file system allows (checkpoints are never rewritten in place),
/// copies otherwise.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| ExecError::io("create", to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| ExecError::io("read", from, e))? {
        let e = e.map_err(|e| ExecError::io("read", from, e))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type().map_err(|e| ExecError::io("stat", &src, e))?;
        if ty.is_dir() {
            copy_tree(&src, &dst)?;
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(|e| ExecError::io("copy", &src, e))?;
        }
    }
    Ok(())
}

/// One arm before it ran: its plans per seed (empty for a joined run directory).
struct ArmInput {
    input: PathBuf,
    name: String,
    model: ModelSpec,
    base_seed: u64,
    budget: Option<u64>,
    /// (seed, plan, run dir); a joined run directory has one entry and no plan.
    runs: Vec<(u64, Option<Plan>, PathBuf)>,
}

fn load_inputs(args: &CompareArgs) -> Result<Vec<ArmInput>> {
    let mut arms: Vec<ArmInput> = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            let plan_path = input.join("plan.json");
            let text = std::fs::read_to_string(&plan_path)
                .map_err(|e| ExecError::io("read", &plan_path, e))?;
            let plan: Plan = serde_json::from_str(&text).map_err(|e| ExecError::Json {
                path: plan_path.clone(),
                message: e.to_string(),
            })?;
            match arms.iter_mut().find(|a| a.name == plan.name) {
                Some(a) => a.runs.push((plan.seed, None, input.clone())),
                None => arms.push(ArmInput {
                    input: input.clone(),
                    name: plan.name.clone(),
                    model: plan.model.clone(),
                    base_seed: plan.seed,
                    budget: planned_budget(&plan),
                    runs: vec![(plan.seed, None, input.clone())],
                }),
            }
            continue;
        }
        let mut runs = Vec::new();
        let mut first: Option<Plan> = None;
        for seed in args.first_seed..args.first_seed + args.seeds {
            let checked =
                crate::check::check_file_seeded(input, Some(seed)).map_err(|e| ExecError::Io {
                    action: "read",
                    path: input.clone(),
                    source: e,
                })?;
            let c = checked.curriculum.ok_or_else(|| ExecError::Phase {
                phase: "compare".into(),
                message: format!(
                    "`{}` does not check:\n{}",
                    input.display(),
                    checked.report.render()
                ),
            })?;
            let plan = crate::plan::plan(&c).map_err(|e| ExecError::Phase {
                phase: "compare".into(),
                message: e.to_string(),
            })?;
            let dir = args
                .out
                .join("runs")
                .join(super::rundir::sanitize(&plan.name))
                .join(format!("seed-{seed}"));
            first.get_or_insert_with(|| plan.clone());
            runs.push((seed, Some(plan), dir));
        }
        let first = first.ok_or_else(|| ExecError::Phase {
            phase: "compare".into(),
            message: "--seeds must be at least 1".into(),
        })?;
        if arms.iter().any(|a| a.name == first.name) {
            return Err(ExecError::Phase {
                phase: "compare".into(),
                message: format!(
                    "two inputs are named `{}`: curricula in one table need distinct names",
                    first.name
                ),
            });
        }
        arms.push(ArmInput {
            input: input.clone(),
            name: first.name.clone(),
            model: first.model.clone(),
            base_seed: first.seed,
            budget: planned_budget(&first),
            runs,
        });
    }
    Ok(arms)
}

/// Runs the grid (what is not fresh yet), evaluates, and builds the table.
pub fn compare(args: &CompareArgs, interrupt: &AtomicBool) -> Result<Table> {
    let arms = load_inputs(args)?;
    std::fs::create_dir_all(&args.out).map_err(|e| ExecError::io("create", &args.out, e))?;
    let runs_root = args.out.join("runs");
    let jobs: VecDeque<(String, u64, Plan, PathBuf)> = arms
        .iter()
        .flat_map(|a| {
            a.runs
                .iter()
                .filter_map(|(s, p, d)| p.clone().map(|p| (a.name.clone(), *s, p, d.clone())))
        })
        .collect();
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(jobs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "compare [{bar:30}] {pos}/{len} runs {elapsed_precise} (eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    };
    let queue = Mutex::new(jobs);
    let failure: Mutex<Option<ExecError>> = Mutex::new(None);
    let crashed = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| loop {
                if failure.lock().map(|f| f.is_some()).unwrap_or(true)
                    || crashed.load(std::sync::atomic::Ordering::SeqCst)
                    || interrupt.load(std::sync::atomic::Ordering::SeqCst)
                {
                    return;
                }
                let Some((name, seed, plan, dir)) =
                    queue.lock().ok().and_then(|mut q| q.pop_front())
                else {
                    return;
                };
                bar.set_message(format!("{name} seed {seed}"));
                let result = adopt_shared(&plan, &dir, &runs_root).and_then(|_| {
                    let opts = RunOptions {
                        device: args.device.clone(),
                        quiet: true,
                        crash_after: args.stop_after_steps,
                        ..RunOptions::new(dir.clone())
                    };
                    run_plan(&plan, &opts, interrupt)
                });
                match result {
                    Ok(outcomes) => {
                        if outcomes.iter().any(|o| {
                            matches!(
                                o,
                                PhaseOutcome::Crashed { .. } | PhaseOutcome::Interrupted { .. }
                            )
                        }) {
                            crashed.store(true, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        bar.inc(1);
                    }
                    Err(e) => {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(ExecError::Phase {
                                phase: format!("{name} seed {seed}"),
                                message: e.to_string(),
                            });
                        }
                        return;
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    if crashed.into_inner() || interrupt.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ExecError::Interrupted(format!(
            "compare stopped after {:.0}s; run the same command again to resume",
            started.elapsed().as_secs_f64()
        )));
    }

    let device = crate::model::device(args.device.as_deref().unwrap_or("cpu"))
        .map_err(|e| ExecError::Device(e.to_string()))?;
    let spec_set = eval_set(args.eval_n, args.max_new_tokens)?;
    let spec = EvalSpec {
        seed: EVAL_SEED,
        n_per_cell: args.eval_n,
        max_new_tokens: args.max_new_tokens,
        samples: spec_set.samples.len(),
    };
    let mut bases: Vec<Base> = Vec::new();
    let mut table_arms = Vec::new();
    for a in &arms {
        let (label, dir) = base_dir(&args.out, &a.model, a.base_seed)?;
        let key = hash_file(&dir.join(super::export::WEIGHTS_FILE))?[..16].to_string();
        if !bases.iter().any(|b| b.key == key) {
            let scores = shared_eval(&args.out, &spec_set, &spec, &dir, &device)?;
            bases.push(Base {
                key: key.clone(),
                model: label,
                scores,
            });
        }
        let base = bases.iter().find(|b| b.key == key).expect("just pushed");
        let mut seed_runs = Vec::new();
        for (seed, _, dir) in &a.runs {
            let (weights, rollouts, sft_samples, wall_s) = run_totals(dir)?;
            let scores = shared_eval(&args.out, &spec_set, &spec, &weights, &device)?;
            seed_runs.push(SeedRun {
                seed: *seed,
                run_dir: dir.display().to_string(),
                scores,
                rollouts,
                sft_samples,
                wall_s,
            });
        }
        table_arms.push(summarise(
            &a.name,
            &a.input.display().to_string(),
            base,
            a.budget,
            seed_runs,
        ));
    }
    let warnings = budget_warnings(
        &table_arms
            .iter()
            .map(|a| (a.curriculum.clone(), a.planned_budget))
            .collect::<Vec<_>>(),
    );
    Ok(Table {
        version: 1,
        created: super::rundir::now_rfc3339(),
        eval: spec,
        capabilities: suite::capabilities()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        bases,
        arms: table_arms,
        warnings,
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}", x * 100.0)
}

fn pm(m: &MeanStd) -> String {
    format!("{} ± {}", pct(m.mean), pct(m.std))
}

/// The table as Markdown: one row per base, then one per arm.
pub fn render_markdown(t: &Table) -> String {
    let mut s = String::new();
    let caps = &t.capabilities;
    s.push_str("| curriculum |");
    for c in caps {
        s.push_str(&format!(" {c} |"));
    }
    s.push_str(" overall | Δ base | per seed | mean length | rollouts | sft samples | wall |\n");
    s.push_str("|---|");
    for _ in caps {
        s.push_str("---|");
    }
    s.push_str("---|---|---|---|---|---|---|\n");
    for b in &t.bases {
        s.push_str(&format!("| base: {} |", b.model));
        for c in caps {
            let v = b.scores.by_capability.get(c).copied().unwrap_or(0.0);
            s.push_str(&format!(" {} |", pct(v)));
        }
        s.push_str(&format!(
            " {} | | | {:.1} | | | |\n",
            pct(b.scores.overall),
            b.scores.mean_len
        ));
    }
    for a in &t.arms {
        s.push_str(&format!("| {} |", a.curriculum));
        for c in caps {
            let v = a.by_capability.get(c).copied().unwrap_or(MeanStd {
                mean: 0.0,
                std: 0.0,
            });
            s.push_str(&format!(" {} |", pm(&v)));
        }
        let seeds = a
            .runs
            .iter()
            .map(|r| pct(r.scores.overall))
            .collect::<Vec<_>>()
            .join(" / ");
        s.push_str(&format!(
            " **{}** | {:+.1} | {} | {:.1} | {:.0} | {:.0} | {:.0}s |\n",
            pm(&a.overall),
            a.gain * 100.0,
            seeds,
            a.mean_len.mean,
            a.rollouts,
            a.sft_samples,
            a.wall_s
        ));
    }
    s.push_str(&format!(
        "\nAccuracy (%) on one shared held-out set: {} samples ({} per capability × level, seed {}), greedy, \
         answers up to {} tokens; mean ± sample std over seeds; Δ base in points.\n",
        t.eval.samples, t.eval.n_per_cell, t.eval.seed, t.eval.max_new_tokens
    ));
    for w in &t.warnings {
        s.push_str(&format!("\nwarning: {w}\n"));
    }
    s
}

/// A grouped bar chart (one group per arm, one bar per capability and overall) with ±1 std
/// error bars and a dashed line per base's overall accuracy.
pub fn render_svg(t: &Table) -> Result<String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    let series: Vec<String> = t
        .capabilities
        .iter()
        .cloned()
        .chain(std::iter::once("overall".to_string()))
        .collect();
    let groups = t.arms.len().max(1);
    let width = (180 * groups as u32 + 160).max(640);
    {
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| ExecError::Report(e.to_string());
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "held-out accuracy (%), mean ± std over seeds",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..groups as f64, 0f64..100f64)
            .map_err(|x| e(&x))?;
        let names: Vec<String> = t.arms.iter().map(|a| a.curriculum.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            // Tenths of a group: one of them falls on each group's centre, which gets the name.
            .x_labels(groups * 10 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor();
                if (x - i - 0.5).abs() < 0.01 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("accuracy %")
            .draw()
            .map_err(|x| e(&x))?;
        let width_per = 0.8 / series.len() as f64;
        for (si, name) in series.iter().enumerate() {
            let colour = Palette99::pick(si).to_rgba();
            let mut bars = Vec::new();
            let mut whiskers = Vec::new();
            for (ai, a) in t.arms.iter().enumerate() {
                let m = if name == "overall" {
                    a.overall
                } else {
                    a.by_capability.get(name).copied().unwrap_or(MeanStd {
                        mean: 0.0,
                        std: 0.0,
                    })
                };
                let x0 = ai as f64 + 0.1 + si as f64 * width_per;
                let (y, sd) = (m.mean * 100.0, m.std * 100.0);
                bars.push(Rectangle::new(
                    [(x0, 0.0), (x0 + width_per * 0.9, y)],
                    colour.filled(),
                ));
                let xc = x0 + width_per * 0.45;
                whiskers.push(PathElement::new(
                    vec![(xc, (y - sd).max(0.0)), (xc, (y + sd).min(100.0))],
                    BLACK,
                ));
            }
            chart
                .draw_series(bars)
                .map_err(|x| e(&x))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
            chart.draw_series(whiskers).map_err(|x| e(&x))?;
        }
        for b in &t.bases {
            let y = b.scores.overall * 100.0;
            let dashes = (0..groups * 10)
                .step_by(2)
                .map(|i| {
                    let x = i as f64 / 10.0;
                    PathElement::new(vec![(x, y), (x + 0.1, y)], BLACK.stroke_width(2))
                })
                .collect::<Vec<_>>();
            chart
                .draw_series(dashes)
                .map_err(|x| e(&x))?
                .label(format!("base overall ({})", pct(b.scores.overall)))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 10, y)], BLACK));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// Writes `compare.json`, `compare.md` and `compare.svg` into `out`.
pub fn write_outputs(out: &Path, t: &Table) -> Result<()> {
    let mut json = serde_json::to_string_pretty(t).expect("serialisable");
    json.push('\n');
    write_atomic(&out.join("compare.json"), json.as_bytes())?;
    write_atomic(&out.join("compare.md"), render_markdown(t).as_bytes())?;
    write_atomic(&out.join("compare.svg"), render_svg(t)?.as_bytes())?;
    Ok(())
}

pub fn run_cli(args: CompareArgs) -> ExitCode {
    super::progress::init_tracing();
    let flag = super::progress::interrupt_flag();
    let result = compare(&args, flag).and_then(|t| {
        write_outputs(&args.out, &t)?;
        Ok(t)
    });
    match result {
        Ok(t) => {
            for w in &t.warnings {
                crate::errln!("warning: {w}");
            }
            if args.json {
                let json = serde_json::to_string_pretty(&t).expect("serialisable");
                crate::out::print(&format!("{json}\n"))
            } else {
                crate::out::print(&render_markdown(&t))
            }
        }
        Err(ExecError::Interrupted(m)) => {
            crate::errln!("interrupted: {m}");
            ExitCode::from(super::cli::CRASH_EXIT)
        }
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lexical;

    #[test]
    fn labels_resolve_parent_steps() {
        assert_eq!(
            lexical("curricula/../models/shapes-base"),
            "models/shapes-base"
        );
        assert_eq!(lexical("/a/./b/../c"), "/a/c");
        assert_eq!(lexical("../x"), "../x");
    }
}
