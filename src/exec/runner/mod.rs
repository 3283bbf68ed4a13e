//! `curric run`: the plan's phases in topological order, read top to bottom.
//!
//! For each phase: skip it when its fingerprint is fresh; otherwise build the policy (from
//! its first parent's final checkpoint, or the plan's model), the reference (β > 0: the
//! phase's start weights, or the parent's reference when the hand-off keeps it), the sampler
//! over its sources, mix and order (with the pass-rate table handed over), the reward set and
//! the optimiser (restoring the parent's moments when the hand-off keeps them); then step
//! until the stop condition holds, checkpointing every N steps and at the end, and record
//! why it stopped. Phases are keyed by id, so every child of a phase reads the same final
//! checkpoint: two ablation arms from one warm-up share it.
//!
//! The phase's settings reach the trainers as the checker wrote them (`spec::Settings`); this
//! file only loads what they name (weights, data, the pass-rate table, a parent's optimiser)
//! and picks the trainer for the kind.
//!
//! Limits: eval phases read the built-in suite's held-out split (JSONL sources have none);
//! the pass-rate table is filled by probe phases and by GRPO rollouts (a rollout passes at
//! `pass_threshold`) and handed on; the LR schedule position travels with the optimizer
//! state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::Device;
use serde_json::Value;

use super::checkpoint::{self, CheckpointState};
use super::driver::{drive, DriveOptions, PhaseEnd};
use super::error::{ExecError, Result};
use super::eval::EvalResult;
use super::fingerprint::{assess, DataSource, Freshness, PhaseInput};
use super::manifest::{Manifest, PhaseStatus};
use super::phases::{Data, EvalSet, GrpoTrainer, Learner, ProbeTrainer, SftTrainer};
use super::progress::PhaseProgress;
use super::rundir::{write_atomic, RunDir};
use crate::data::{
    suite, DifficultyKey, FilterSpec, Level, LevelBands, MixSpec, PassRateTable, Sample,
    SamplerSpec, ScheduleSpec, SourceSpec,
};
use crate::grpo::{AdamW, AdamWConfig, GrpoConfig, LrSchedule, ScheduleKind};
use crate::model::{Policy, SamplingParams};
use crate::plan::{Phase, Plan};
use crate::reward::RewardSet;
use crate::rollout::{phase_key, SeedCtx};

mod data;
mod handoff;
mod inputs;

use crate::spec::{
    Carry, Filters, LevelSource, LrSchedule as PlanLr, ModelSpec, Optim, PhaseKind, Schedule,
    Settings, SourceKind, Stop,
};
use data::{check_prompt_lengths, validate_sources};
pub(crate) use data::{eval_samples, pools, sampler_spec};
pub use inputs::{phase_inputs, phase_spec, status};

/// How `curric run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run_dir: PathBuf,
    /// Overrides the plan's device.
    pub device: Option<String>,
    pub quiet: bool,
    pub checkpoint_every: u64,
    pub keep: usize,
    /// Test hook: behave as if killed after this many steps of a phase: the one named by
    /// `crash_phase`, or else the first phase that runs.
    pub crash_after: Option<u64>,
    pub crash_phase: Option<String>,
    /// The pass rates a root phase starts with, measured elsewhere (`--pass-rates`: a
    /// probe that ran on EasyR1).
    pub pass_rates: Option<PassRateTable>,
}

impl RunOptions {
    /// `curric run`'s `--checkpoint-every` default.
    pub const CHECKPOINT_EVERY: u64 = 25;
    /// `curric run`'s `--keep` default.
    pub const KEEP: usize = 2;

    /// A run into `run_dir` with `curric run`'s defaults: the plan's device, progress bars,
    /// no pass rates from elsewhere.
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            device: None,
            quiet: false,
            checkpoint_every: Self::CHECKPOINT_EVERY,
            keep: Self::KEEP,
            crash_after: None,
            crash_phase: None,
            pass_rates: None,
        }
    }
}

/// What happened to each phase.
#[derive(Debug, Clone, PartialEq)]
pub enum PhaseOutcome {
    Skipped { id: String },
    Ran { id: String, reason: String },
    Interrupted { id: String, step: u64 },
    Crashed { id: String, step: u64 },
}

fn perr(phase: &str, e: impl std::fmt::Display) -> ExecError {
    ExecError::Phase {
        phase: phase.to_string(),
        message: e.to_string(),
    }
}

fn eval_n(stop: &Stop) -> Option<u64> {
    match stop {
        Stop::Eval { n, .. } => Some(*n),
        Stop::All { all: v } | Stop::Any { any: v } => v.iter().find_map(eval_n),
        _ => None,
    }
}

fn adamw(o: &Optim, total_steps: u64) -> AdamWConfig {
    AdamWConfig {
        schedule: LrSchedule {
            lr: o.lr,
            warmup_steps: o.warmup_steps,
            total_steps,
            kind: match o.lr_schedule {
                PlanLr::Constant => ScheduleKind::Constant,
                PlanLr::Cosine => ScheduleKind::Cosine,
            },
            min_lr_ratio: 0.0,
        },
        weight_decay: o.weight_decay,
        max_grad_norm: (o.grad_clip > 0.0).then_some(o.grad_clip),
        ..AdamWConfig::default()
    }
}

fn rewards(phase: &Phase) -> Result<RewardSet> {
    match &phase.reward {
        Some(r) => RewardSet::from_spec(
            r.terms
                .iter()
                .map(|t| (t.term.as_str(), t.weight as f32, &t.args)),
        )
        .map_err(|e| perr(&phase.id, e)),
        // Eval phases without a reward set grade by the boxed answer.
        None => RewardSet::accuracy().map_err(|e| perr(&phase.id, e)),
    }
}

/// Everything one run shares across phases.
struct Ctx<'a> {
    plan: &'a Plan,
    rd: RunDir,
    manifest: Manifest,
    device: Device,
    opts: &'a RunOptions,
    interrupt: &'a AtomicBool,
}

/// Runs the plan in `opts.run_dir`. Returns what happened to each phase.
pub fn run_plan(
    plan: &Plan,
    opts: &RunOptions,
    interrupt: &AtomicBool,
) -> Result<Vec<PhaseOutcome>> {
    let rd = RunDir::create(&opts.run_dir)?;
    let _lock = rd.lock()?;
    validate_sources(plan)?;
    let device_spec = opts.device.clone().unwrap_or_else(|| plan.device.clone());
    let device =
        crate::model::device(&device_spec).map_err(|e| ExecError::Device(e.to_string()))?;
    let mut manifest = Manifest::load(&rd.manifest())?.unwrap_or_else(|| Manifest::new(&plan.name));
    manifest.curriculum = plan.name.clone();
    write_atomic(&rd.root().join("plan.json"), plan.to_json().as_bytes())?;
    let fresh: Vec<Freshness> = assess(&phase_inputs(plan), Some(&manifest))?;
    for p in &plan.phases {
        manifest.entry(&p.id, kind_name(p.kind()));
    }
    // Phases the plan no longer has go; the manifest lists this plan.
    manifest.phases.retain(|r| plan.phase(&r.id).is_some());
    manifest.save(&rd.manifest())?;

    let mut ctx = Ctx {
        plan,
        rd,
        manifest,
        device,
        opts,
        interrupt,
    };
    let mut outcomes = Vec::new();
    let mut global = 0u64;
    let total = plan.phases.len();
    for (i, (p, f)) in plan.phases.iter().zip(&fresh).enumerate() {
        if f.dirty.is_none() {
            let steps = ctx.manifest.get(&p.id).map(|r| r.steps).unwrap_or(0);
            if !opts.quiet {
                crate::errln!(
                    "[{}/{}] {} ({}): fresh, skipped",
                    i + 1,
                    total,
                    p.id,
                    kind_name(p.kind())
                );
            }
            global += steps;
            outcomes.push(PhaseOutcome::Skipped { id: p.id.clone() });
            continue;
        }
        let reason = f.dirty.as_ref().map(|r| r.to_string()).unwrap_or_default();
        tracing::info!(phase = %p.id, "running: {reason}");
        let out = run_phase(&mut ctx, p, f, i, global, outcomes.is_empty())?;
        match &out {
            PhaseOutcome::Ran { .. } => {
                global += ctx.manifest.get(&p.id).map(|r| r.steps).unwrap_or(0);
                outcomes.push(out);
            }
            _ => {
                outcomes.push(out);
                return Ok(outcomes);
            }
        }
    }
    Ok(outcomes)
}

fn kind_name(k: PhaseKind) -> &'static str {
    match k {
        PhaseKind::Sft => "sft",
        PhaseKind::Probe => "probe",
        PhaseKind::Grpo => "grpo",
        PhaseKind::Eval => "eval",
    }
}

fn run_phase(
    ctx: &mut Ctx<'_>,
    p: &Phase,
    f: &Freshness,
    index: usize,
    global: u64,
    first_run: bool,
) -> Result<PhaseOutcome> {
    let rec = ctx.manifest.get(&p.id).cloned();
    let resume = rec.as_ref().is_some_and(|r| {
        matches!(r.status, PhaseStatus::Running | PhaseStatus::Failed)
            && r.attempt.as_deref() == Some(f.fingerprint.as_str())
    });
    let phase_dir = ctx.rd.phase(&p.id);
    if !resume && phase_dir.exists() {
        std::fs::remove_dir_all(&phase_dir).map_err(|e| ExecError::io("remove", &phase_dir, e))?;
    }
    ctx.manifest.start(&p.id, kind_name(p.kind()), resume);
    {
        let r = ctx.manifest.entry(&p.id, kind_name(p.kind()));
        r.attempt = Some(f.fingerprint.clone());
        r.global_step_start = global;
    }
    ctx.manifest.save(&ctx.rd.manifest())?;

    let result = execute(ctx, p, index, global, first_run, resume);
    match result {
        Ok(PhaseEnd::Finished {
            step,
            reason,
            checkpoint,
        }) => {
            let rel = ctx.rel(&checkpoint);
            ctx.manifest.finish(
                &p.id,
                f.fingerprint.clone(),
                f.parts.clone(),
                reason.clone(),
                Some(rel),
                step,
            );
            ctx.manifest.save(&ctx.rd.manifest())?;
            Ok(PhaseOutcome::Ran {
                id: p.id.clone(),
                reason,
            })
        }
        Ok(PhaseEnd::Interrupted { step, .. }) => {
            ctx.manifest.save(&ctx.rd.manifest())?;
            Ok(PhaseOutcome::Interrupted {
                id: p.id.clone(),
                step,
            })
        }
        Ok(PhaseEnd::Crashed { step }) => Ok(PhaseOutcome::Crashed {
            id: p.id.clone(),
            step,
        }),
        Err(e) => {
            ctx.manifest.fail(&p.id, e.to_string());
            // What it trained before failing, as its metrics recorded it.
            let done = super::metrics::read_metrics(&ctx.rd.metrics(&p.id))
                .ok()
                .and_then(|m| m.last().map(|r| r.step))
                .unwrap_or(0);
            ctx.manifest.entry(&p.id, kind_name(p.kind())).steps = done;
            ctx.manifest.save(&ctx.rd.manifest())?;
            Err(e)
        }
    }
}

fn execute(
    ctx: &mut Ctx<'_>,
    p: &Phase,
    index: usize,
    global: u64,
    first_run: bool,
    resume: bool,
) -> Result<PhaseEnd> {
    let total = ctx.plan.phases.len();
    let phase_dir = ctx.rd.phase(&p.id);
    let seed_ctx = SeedCtx {
        seed: p.seed,
        phase: phase_key(&p.id),
        step: 0,
    };
    let settings = match &p.settings {
        Settings::Eval(e) => return eval_phase(ctx, p, e, index, global, seed_ctx),
        other => other,
    };
    let stop = p
        .stop
        .as_ref()
        .ok_or_else(|| perr(&p.id, "has no stop condition"))?;
    let (mut policy, start) = ctx.start_policy(p)?;
    policy.set_frozen(&p.freeze).map_err(|e| perr(&p.id, e))?;
    let table = ctx.pass_rates(p)?;
    let pools = data::pools(p, &table)?;
    check_prompt_lengths(p, &policy, &pools, settings.max_new_tokens() as usize)?;
    let epoch_samples: u64 = pools.iter().map(|(_, s)| s.len() as u64).sum();
    let per_step = settings.prompts_per_step();
    let bound = stop.step_bound(Some(epoch_samples), per_step);
    let progress = PhaseProgress::new(
        ctx.opts.quiet,
        index + 1,
        total,
        &p.id,
        kind_name(p.kind()),
        bound,
    );
    let eval_set = match eval_n(stop) {
        Some(n) => Some((
            EvalSet {
                samples: data::eval_samples(p, std::slice::from_ref(&p.capability), &p.levels, n)?,
                rewards: rewards(p)?,
                max_new_tokens: settings.max_new_tokens() as usize,
                greedy: true,
                pass_threshold: settings
                    .grpo()
                    .map_or_else(crate::spec::keys::pass_threshold, |g| g.pass_threshold),
            },
            seed_ctx,
        )),
        None => None,
    };
    let reference_at = ctx.reference_at(p, &start)?;
    // The LR schedule's horizon: the step bound known now that the data is loaded. A phase
    // bounded only by time has none; the checker allows only schedules that need none there.
    let horizon = bound.unwrap_or(0);
    let mut trainer: Box<dyn super::driver::PhaseTrainer> = match settings {
        Settings::Sft(s) => Box::new(SftTrainer {
            learner: Learner {
                eval: eval_set,
                ..ctx.learner(p, policy, &s.optim, (horizon, 1), s.batch_size, pools)?
            },
            max_tokens: s.max_tokens as usize,
        }),
        Settings::Grpo(g) => {
            let reference = if g.beta > 0.0 {
                Some(ctx.load_reference(p, &reference_at)?)
            } else {
                None
            };
            Box::new(GrpoTrainer {
                learner: Learner {
                    eval: eval_set,
                    ..ctx.learner(
                        p,
                        policy,
                        &g.optim,
                        (horizon, g.mu),
                        g.prompts_per_step,
                        pools,
                    )?
                },
                reference,
                rewards: rewards(p)?,
                cfg: GrpoConfig {
                    settings: g.clone(),
                    seed: p.seed,
                    phase: phase_key(&p.id),
                },
                pass_rates: table,
                retry_cap_hits: 0,
            })
        }
        Settings::Probe(pr) => Box::new(ProbeTrainer {
            phase: p.id.clone(),
            data: Data::new(
                &p.id,
                data::sampler_spec(p, pr.batch_size as usize, horizon),
                pools,
            )?,
            policy,
            rewards: rewards(p)?,
            batch: pr.batch_size as usize,
            k: pr.rollouts as usize,
            params: SamplingParams {
                temperature: pr.temperature,
                top_p: pr.top_p,
                max_new_tokens: pr.max_new_tokens as usize,
            },
            threshold: pr.pass_threshold,
            ctx: seed_ctx,
            pass_rates: table,
        }),
        Settings::Eval(_) => return Err(perr(&p.id, "an eval phase has no trainer")),
    };
    let trainer = RefTrainer {
        inner: trainer.as_mut(),
        reference: reference_at,
    };
    let mut trainer = trainer;
    let end = drive(
        &phase_dir,
        DriveOptions {
            phase: p.id.clone(),
            stage: Some(p.stage.clone()),
            stop: stop.clone(),
            checkpoint_every: ctx.opts.checkpoint_every,
            keep: ctx.opts.keep,
            global_step_start: global,
            resume,
            crash_after: match &ctx.opts.crash_phase {
                Some(id) if *id == p.id => ctx.opts.crash_after,
                None if first_run => ctx.opts.crash_after,
                _ => None,
            },
            interrupt: ctx.interrupt,
            progress: Some(&progress),
        },
        &mut trainer,
    )?;
    match &end {
        PhaseEnd::Finished { reason, .. } => progress.finish(reason),
        PhaseEnd::Interrupted { step, .. } => {
            progress.finish(&format!("interrupted after step {step}"))
        }
        PhaseEnd::Crashed { step } => {
            progress.finish(&format!("stopped after step {step} (crash hook)"))
        }
    }
    Ok(end)
}

impl Ctx<'_> {
    /// What an sft or grpo phase trains with: an optimiser over the trainable weights, named
    /// so that a NaN error names the tensor and the moments are keyed by it, with the
    /// parent's moments when the hand-off keeps them; and a sampler over the pools, at the
    /// parent's cursor when the hand-off keeps it. `(steps, updates_per_step)` lay out the
    /// LR schedule and the mix schedule. No eval: the caller adds its stop's.
    fn learner(
        &self,
        p: &Phase,
        policy: Policy,
        optim: &Optim,
        (steps, updates_per_step): (u64, u64),
        batch: u64,
        pools: Vec<(String, Vec<Sample>)>,
    ) -> Result<Learner> {
        let updates = steps * updates_per_step;
        let mut opt = AdamW::new_named(policy.named_trainable_vars(), adamw(optim, updates))
            .map_err(|e| perr(&p.id, e))?;
        self.handed_optimizer(p, &mut opt)?;
        let mut data = Data::new(&p.id, data::sampler_spec(p, batch as usize, steps), pools)?;
        self.handed_cursor(p, &mut data)?;
        Ok(Learner {
            phase: p.id.clone(),
            policy,
            opt,
            data,
            eval: None,
        })
    }
}

/// Adds the phase's reference location to every checkpoint, so that a child whose hand-off
/// keeps the reference finds it.
struct RefTrainer<'a> {
    inner: &'a mut dyn super::driver::PhaseTrainer,
    reference: String,
}

impl super::driver::PhaseTrainer for RefTrainer<'_> {
    fn step(&mut self, step: u64) -> Result<super::driver::StepOutcome> {
        self.inner.step(step)
    }
    fn eval(&mut self, step: u64) -> Result<BTreeMap<String, f64>> {
        self.inner.eval(step)
    }
    fn save(&self, dir: &Path) -> Result<()> {
        self.inner.save(dir)
    }
    fn state(&self) -> super::driver::TrainerState {
        let mut s = self.inner.state();
        if !s.extra.is_object() {
            s.extra = Value::Object(Default::default());
        }
        s.extra["reference"] = Value::String(self.reference.clone());
        s
    }
    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()> {
        self.inner.restore(dir, state)
    }
}

/// An eval phase: greedy decoding on held-out samples of every capability × level it names;
/// its "checkpoint" is its parent's (it changes no weights).
fn eval_phase(
    ctx: &mut Ctx<'_>,
    p: &Phase,
    e: &crate::spec::EvalSettings,
    index: usize,
    global: u64,
    seed_ctx: SeedCtx,
) -> Result<PhaseEnd> {
    let total = ctx.plan.phases.len();
    let (policy, start) = ctx.start_policy(p)?;
    let samples = data::eval_samples(p, &e.capabilities, &e.levels, e.n)?;
    let progress = PhaseProgress::new(ctx.opts.quiet, index + 1, total, &p.id, "eval", None);
    let set = EvalSet {
        samples,
        rewards: rewards(p)?,
        max_new_tokens: e.max_new_tokens as usize,
        greedy: e.greedy,
        // Accuracy terms score 0 or 1: any threshold in (0, 1] grades them alike.
        pass_threshold: crate::spec::keys::pass_threshold(),
    };
    let t0 = Instant::now();
    let (result, records): (EvalResult, _) =
        set.run_with_completions(&p.id, &policy, seed_ctx, global)?;
    result.save(&ctx.rd.eval(&p.id))?;
    let mut lines = String::new();
    for r in &records {
        lines.push_str(&r.to_string());
        lines.push('\n');
    }
    write_atomic(&ctx.rd.samples(&p.id), lines.as_bytes())?;
    let reason = format!(
        "{} evaluated {} held-out samples: accuracy {:.1}%, mean length {:.1} ({:.1}s)",
        p.id,
        result.n,
        result.overall * 100.0,
        result.mean_response_len,
        t0.elapsed().as_secs_f64()
    );
    progress.finish(&reason);
    let checkpoint = if start == "initial" {
        // A root eval has no parent checkpoint: keep the weights it evaluated.
        let state = CheckpointState {
            extra: serde_json::json!({ "reference": "initial" }),
            ..Default::default()
        };
        checkpoint::save(&ctx.rd.phase(&p.id), &state, 1, |dir| {
            super::phases::save_policy(&p.id, &policy, None, dir)
        })?
    } else {
        ctx.rd.root().join(start)
    };
    Ok(PhaseEnd::Finished {
        step: 0,
        reason,
        checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_stops_name_their_sample_count() {
        let plan = Stop::Any {
            any: vec![
                Stop::Steps { n: 200 },
                Stop::Eval {
                    threshold: 0.8,
                    every: 10,
                    n: 4,
                },
            ],
        };
        assert_eq!(eval_n(&plan), Some(4));
        assert_eq!(eval_n(&Stop::Steps { n: 3 }), None);
    }

    #[test]
    fn fingerprints_ignore_plan_position_but_not_settings() {
        let text = |extra: &str| {
            format!(
                "name = \"t\"\nseed = 1\nmodel = tiny_vlm(nano)\ndevice = cpu\n\
                 source s {{ suite = perception n = 4 }}\n{extra}\
                 stage a {{ kind = sft mix = s stop = steps(2) }}\n"
            )
        };
        let plan = |t: &str| {
            let c = crate::check::check_str(t, "t.curr", None)
                .curriculum
                .unwrap();
            crate::plan::plan(&c).unwrap()
        };
        let base = plan(&text(""));
        // An eval stage declared before `a` moves a's index but not its spec.
        let moved = plan(&text("stage e { kind = eval n = 1 }\n"));
        let a = |p: &Plan| phase_spec(p.phase("a").unwrap());
        assert_eq!(a(&base), a(&moved));
        assert!(a(&base).get("index").is_none());
        let other = plan(&text("").replace("steps(2)", "steps(3)"));
        assert_ne!(a(&base), a(&other));
    }
}
