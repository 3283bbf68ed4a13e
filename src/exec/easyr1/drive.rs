//! `curric run --backend easyr1`: the plan executed by launching EasyR1, phase by phase,
//! with the run directory, manifest, fingerprints, skip-if-fresh and resume of a local run.
//!
//! Each phase's job files (what `curric export easyr1` writes) go to its phase directory, and
//! EasyR1 runs there: `python3 -m verl.trainer.main config=config.yaml …` from an EasyR1
//! checkout. What EasyR1 cannot decide alone, curric decides between launches:
//!
//! - a stop that reads metrics or the clock (`plateau`, `eval(...)`, `informative_below`,
//!   `time`) runs the phase in chunks of `--chunk-steps`: after each launch curric reads
//!   EasyR1's `experiment_log.jsonl` (which EasyR1 truncates at every start, so it is read
//!   before the next), feeds each step to the same stop evaluator a local run uses, and either
//!   ends the phase or launches again with a larger `max_steps`, EasyR1 resuming from its last
//!   checkpoint (`find_last_checkpoint`);
//! - a probe is a validation-only job whose reward function logs every rollout; those lines
//!   become the pass-rate table the next phases' data is written from;
//! - an eval is a validation-only job whose per-sample results become the eval table
//!   `curric report` reads;
//! - a trained phase's last checkpoint is merged to Hugging Face format with EasyR1's
//!   `scripts/model_merger.py`, and the next phase starts from it.
//!
//! A killed driver resumes: finished phases are fresh and skipped, the phase in progress keeps
//! its job directory and EasyR1 continues from its last checkpoint; what curric had read of
//! it is in `driver.json`, saved after every launch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    counted, refusals, write_phase, ExportError, ExportOptions, Inputs, Result, RESULTS_FILE,
};
use crate::data::PassRateTable;
use crate::exec::error::ExecError;
use crate::exec::eval::{EvalResult, Outcome};
use crate::exec::fingerprint::assess;
use crate::exec::manifest::{Manifest, PhaseStatus};
use crate::exec::metrics::{keys, MetricsWriter};
use crate::exec::rundir::{write_atomic, RunDir};
use crate::exec::runner::{phase_inputs, PhaseOutcome};
use crate::exec::stop::{Observation, StopEval, StopState, EVAL_METRIC, INFORMATIVE};
use crate::plan::{Phase, Plan};
use crate::spec::{Carry, PhaseKind};

#[derive(Debug, Clone)]
pub struct DriveOptions {
    pub run_dir: PathBuf,
    /// An EasyR1 checkout: `verl/` and `scripts/model_merger.py` are read from it.
    pub easyr1: PathBuf,
    /// The interpreter EasyR1 runs under.
    pub python: String,
    /// The start weights (see `curric export easyr1 --model`).
    pub model: Option<String>,
    pub nodes: u64,
    pub gpus_per_node: u64,
    pub accept: Vec<String>,
    /// Steps per launch for a stop curric evaluates between launches.
    pub chunk_steps: u64,
    /// Where curric trains sft phases itself (EasyR1 has no supervised trainer); default the
    /// curriculum's device.
    pub device: Option<String>,
    pub quiet: bool,
}

/// What the driver has read of a phase in progress, saved after every launch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    /// Steps EasyR1 finished and curric read.
    steps: u64,
    stop: StopState,
    /// Why the stop held, once it did.
    stopped: Option<String>,
    launches: u64,
}

const PROGRESS_FILE: &str = "driver.json";
const PASS_RATES_FILE: &str = "pass_rates.json";
const LOG_FILE: &str = "easyr1.log";

fn perr(p: &Phase, e: impl std::fmt::Display) -> ExportError {
    ExportError::Exec(ExecError::Phase {
        phase: p.id.clone(),
        message: e.to_string(),
    })
}

/// Runs `plan` on EasyR1 in `o.run_dir`.
pub fn drive(plan: &Plan, curriculum_file: &Path, o: &DriveOptions) -> Result<Vec<PhaseOutcome>> {
    let export = ExportOptions {
        out: o.run_dir.clone(),
        curriculum_file: curriculum_file.to_path_buf(),
        model: o.model.clone(),
        nodes: o.nodes,
        gpus_per_node: o.gpus_per_node,
        accept: o.accept.clone(),
        pass_rates: None,
        only: None,
    };
    for a in &o.accept {
        if !super::ACCEPTABLE.iter().any(|(n, _)| n == a) {
            return Err(ExportError::UnknownAccept(a.clone()));
        }
    }
    let refused = refusals(plan, o.model.as_deref(), &o.accept, true);
    if !refused.is_empty() {
        return Err(ExportError::Refused(refused));
    }
    // EasyR1 runs in each phase's directory: every path handed to it is absolute.
    let root =
        std::path::absolute(&o.run_dir).map_err(|e| ExecError::io("resolve", &o.run_dir, e))?;
    let rd = RunDir::create(&root)?;
    let _lock = rd.lock()?;
    let mut manifest = Manifest::load(&rd.manifest())?.unwrap_or_else(|| Manifest::new(&plan.name));
    manifest.curriculum = plan.name.clone();
    write_atomic(&rd.root().join("plan.json"), plan.to_json().as_bytes())?;
    let fresh = assess(&phase_inputs(plan), Some(&manifest))?;
    for p in &plan.phases {
        manifest.entry(&p.id, super::kind_word(p.kind()));
    }
    manifest.phases.retain(|r| plan.phase(&r.id).is_some());
    manifest.save(&rd.manifest())?;
    let base = super::base_model(plan, &export);

    let mut outcomes = Vec::new();
    let mut global = 0u64;
    for (i, (p, f)) in plan.phases.iter().zip(&fresh).enumerate() {
        let say = |msg: &str| {
            if !o.quiet {
                crate::errln!(
                    "[{}/{}] {} ({}): {msg}",
                    i + 1,
                    plan.phases.len(),
                    p.id,
                    super::kind_word(p.kind())
                );
            }
        };
        if f.dirty.is_none() {
            say("fresh, skipped");
            global += manifest.get(&p.id).map_or(0, |r| r.steps);
            outcomes.push(PhaseOutcome::Skipped { id: p.id.clone() });
            continue;
        }
        let resume = manifest.get(&p.id).is_some_and(|r| {
            matches!(r.status, PhaseStatus::Running | PhaseStatus::Failed)
                && r.attempt.as_deref() == Some(f.fingerprint.as_str())
        });
        let dir = rd.phase(&p.id);
        if !resume && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| ExecError::io("remove", &dir, e))?;
        }
        manifest.start(&p.id, super::kind_word(p.kind()), resume);
        {
            let r = manifest.entry(&p.id, super::kind_word(p.kind()));
            r.attempt = Some(f.fingerprint.clone());
            r.global_step_start = global;
        }
        manifest.save(&rd.manifest())?;
        let job = Job {
            plan,
            p,
            dir: &dir,
            rd: &rd,
            o,
            global,
        };
        let model = match super::weights_from(plan, p) {
            None => base.clone(),
            Some(w) => {
                let rel = manifest
                    .get(&w.id)
                    .and_then(|r| r.checkpoint.clone())
                    .ok_or_else(|| {
                        perr(
                            p,
                            format!("phase `{}` has no merged checkpoint to start from", w.id),
                        )
                    })?;
                rd.root().join(rel).display().to_string()
            }
        };
        say(&if resume {
            format!("resuming on EasyR1 from {model}")
        } else {
            format!("on EasyR1 from {model}")
        });
        let result = job
            .prepare(&export, &model, resume)
            .and_then(|table| match p.kind() {
                PhaseKind::Grpo => job.grpo(&model, table),
                PhaseKind::Probe => job.probe(&model, table),
                PhaseKind::Eval => job.eval(&model, table),
                PhaseKind::Sft => job.sft(&model, table),
            });
        match result {
            Ok(end) => {
                say(&end.reason);
                manifest.finish(
                    &p.id,
                    f.fingerprint.clone(),
                    f.parts.clone(),
                    end.reason.clone(),
                    end.checkpoint,
                    end.steps,
                );
                manifest.save(&rd.manifest())?;
                global += end.steps;
                outcomes.push(PhaseOutcome::Ran {
                    id: p.id.clone(),
                    reason: end.reason,
                });
            }
            Err(e) => {
                manifest.fail(&p.id, e.to_string());
                manifest.save(&rd.manifest())?;
                return Err(e);
            }
        }
    }
    Ok(outcomes)
}

struct End {
    reason: String,
    /// The merged checkpoint, relative to the run directory (trained phases).
    checkpoint: Option<String>,
    steps: u64,
}

/// One phase being driven.
struct Job<'a> {
    plan: &'a Plan,
    p: &'a Phase,
    dir: &'a Path,
    rd: &'a RunDir,
    o: &'a DriveOptions,
    global: u64,
}

impl Job<'_> {
    /// Writes the job files (unless resuming with them in place) and returns the pass-rate
    /// table handed to the phase.
    fn prepare(&self, export: &ExportOptions, model: &str, resume: bool) -> Result<PassRateTable> {
        let mut table = PassRateTable::new();
        for e in self.plan.edges.iter().filter(|e| e.to == self.p.id) {
            if e.handoff.pass_rates == Carry::Keep {
                // Every driven phase leaves the table it ended with.
                let path = self.rd.phase(&e.from).join(PASS_RATES_FILE);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| ExecError::io("read", &path, e))?;
                let t = PassRateTable::from_json(&text).map_err(|e| perr(self.p, e))?;
                table.merge(&t);
            }
        }
        if !(resume && self.dir.join("config.yaml").exists()) {
            std::fs::create_dir_all(self.dir).map_err(|e| ExecError::io("create", self.dir, e))?;
            write_phase(
                self.plan,
                self.p,
                self.dir,
                model,
                export,
                Inputs {
                    table: &table,
                    with_data: true,
                    chunk: Some(self.o.chunk_steps.max(1)),
                },
            )?;
        }
        Ok(table)
    }

    /// One EasyR1 launch in the job directory; its output goes to easyr1.log.
    fn launch(&self, model: &str, extra: &[String]) -> Result<()> {
        let log_path = self.dir.join(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ExecError::io("open", &log_path, e))?;
        let err = log
            .try_clone()
            .map_err(|e| ExecError::io("open", &log_path, e))?;
        let pythonpath = match std::env::var_os("PYTHONPATH") {
            Some(pp) if !pp.is_empty() => {
                let mut v = vec![self.o.easyr1.clone()];
                v.extend(std::env::split_paths(&pp));
                std::env::join_paths(v).map_err(|e| perr(self.p, e))?
            }
            _ => self.o.easyr1.clone().into_os_string(),
        };
        let status = Command::new(&self.o.python)
            .args(["-m", "verl.trainer.main", "config=config.yaml"])
            .arg(format!(
                "data.train_files={}",
                self.dir.join("train.jsonl").display()
            ))
            .arg(format!(
                "data.val_files={}",
                self.dir.join("val.jsonl").display()
            ))
            .arg(format!("worker.actor.model.model_path={model}"))
            .args(extra)
            .current_dir(self.dir)
            .env("PYTHONPATH", pythonpath)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .status()
            .map_err(|e| perr(self.p, format!("cannot start {}: {e}", self.o.python)))?;
        if !status.success() {
            return Err(perr(
                self.p,
                format!(
                    "EasyR1 exited with {status}; its output is in {}",
                    log_path.display()
                ),
            ));
        }
        Ok(())
    }

    fn save_table(&self, table: &PassRateTable) -> Result<()> {
        write_atomic(&self.dir.join(PASS_RATES_FILE), table.to_json().as_bytes())?;
        Ok(())
    }

    fn grpo(&self, model: &str, table: PassRateTable) -> Result<End> {
        let p = self.p;
        let g = p.settings.grpo().expect("a grpo phase");
        let stop = p
            .stop
            .clone()
            .ok_or_else(|| perr(p, "has no stop condition"))?;
        let chunked = !counted(&stop);
        let rows = count_lines(&self.dir.join("train.jsonl"))?;
        let data_steps = rows / g.prompts_per_step.max(1);
        let bound = stop
            .step_bound(Some(rows), g.prompts_per_step)
            .unwrap_or(data_steps)
            .min(data_steps);
        let progress_path = self.dir.join(PROGRESS_FILE);
        let mut progress: Progress = match std::fs::read_to_string(&progress_path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| perr(p, e))?,
            Err(_) => Progress::default(),
        };
        let mut metrics =
            MetricsWriter::open(self.dir, &p.id, Some(&p.stage), Some(progress.steps))?;
        while progress.stopped.is_none() && progress.steps < bound {
            let target = if chunked {
                (progress.steps + self.o.chunk_steps.max(1)).min(bound)
            } else {
                bound
            };
            let t0 = Instant::now();
            let launched = self.launch(model, &[format!("trainer.max_steps={target}")]);
            let seconds = t0.elapsed().as_secs_f64();
            // Read even when EasyR1 died: it truncates the log when it restarts, and the
            // steps up to its last checkpoint will not run again.
            let upto = match &launched {
                Ok(()) => target,
                Err(_) => last_checkpoint(&self.dir.join("checkpoints"))
                    .map_or(progress.steps, |(s, _)| s.clamp(progress.steps, target)),
            };
            let lines = read_log(&self.dir.join("checkpoints/experiment_log.jsonl"))?;
            let trained: Vec<&Value> = lines
                .iter()
                .filter(|l| l.get("reward").is_some())
                .filter(|l| (progress.steps + 1..=upto).contains(&step_of(l)))
                .collect();
            let first = progress.steps;
            for line in trained {
                let step = step_of(line);
                let values = step_metrics(line);
                metrics.log(step, self.global + step, &values)?;
                if chunked && progress.stopped.is_none() {
                    let eval = line
                        .get("val")
                        .and_then(|v| v.get("accuracy_reward").or_else(|| v.get("reward_score")))
                        .and_then(Value::as_f64)
                        .map(|score| BTreeMap::from([(EVAL_METRIC.to_string(), score)]));
                    let frac = (step - first) as f64 / (upto - first).max(1) as f64;
                    let obs = Observation {
                        step,
                        epochs: (step * g.prompts_per_step) as f64 / rows.max(1) as f64,
                        samples: step * g.prompts_per_step,
                        elapsed_s: seconds * frac,
                        metrics: values.clone(),
                        eval,
                    };
                    if let Some(why) = stop.observe(&mut progress.stop, &obs) {
                        progress.stopped = Some(format!(
                            "{why} held at step {step}, checked between EasyR1 launches of {} \
                             steps",
                            self.o.chunk_steps
                        ));
                    }
                }
            }
            progress.stop.elapsed_before_s += seconds;
            progress.steps = upto;
            progress.launches += launched.is_ok() as u64;
            write_atomic(
                &progress_path,
                serde_json::to_string_pretty(&progress)
                    .expect("progress serialises")
                    .as_bytes(),
            )?;
            launched?;
        }
        let (step, actor) = last_checkpoint(&self.dir.join("checkpoints"))
            .ok_or_else(|| perr(p, "EasyR1 left no checkpoint"))?;
        let merged = actor.join("huggingface");
        if !has_weights(&merged) {
            let st = Command::new(&self.o.python)
                .arg(self.o.easyr1.join("scripts/model_merger.py"))
                .arg("--local_dir")
                .arg(&actor)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .map_err(|e| perr(p, format!("cannot run the checkpoint merger: {e}")))?;
            if !st.success() || !has_weights(&merged) {
                return Err(perr(
                    p,
                    format!("scripts/model_merger.py did not merge {}", actor.display()),
                ));
            }
        }
        self.save_table(&table)?;
        let why = progress
            .stopped
            .clone()
            .unwrap_or_else(|| format!("{stop}"));
        let rel = merged
            .strip_prefix(self.rd.root())
            .unwrap_or(&merged)
            .display()
            .to_string();
        Ok(End {
            reason: format!(
                "{} stopped at step {step} on EasyR1: {why} ({} launch(es))",
                p.id, progress.launches
            ),
            checkpoint: Some(rel),
            steps: step,
        })
    }

    /// EasyR1 has no supervised trainer: curric trains the phase alone in its own run
    /// directory under the phase's, from the start weights, and writes them in Hugging Face
    /// format to hf/, which the next phase starts from.
    fn sft(&self, model: &str, table: PassRateTable) -> Result<End> {
        let p = self.p;
        let from = if Path::new(model).exists() {
            crate::spec::ModelSpec::Local { path: model.into() }
        } else {
            crate::spec::ModelSpec::Hub { repo: model.into() }
        };
        let one = self
            .plan
            .only(&p.id, Some(from))
            .expect("the phase is in the plan");
        let inner = self.dir.join("curric");
        let opts = crate::exec::runner::RunOptions {
            device: self.o.device.clone(),
            quiet: self.o.quiet,
            pass_rates: Some(table.clone()),
            ..crate::exec::runner::RunOptions::new(inner.clone())
        };
        let outcomes =
            crate::exec::runner::run_plan(&one, &opts, crate::exec::progress::interrupt_flag())?;
        let reason = match outcomes.last() {
            Some(PhaseOutcome::Ran { reason, .. }) => reason.clone(),
            Some(PhaseOutcome::Skipped { .. }) => format!("{} was already trained", p.id),
            _ => return Err(perr(p, "interrupted; rerun to resume")),
        };
        let hf = self.dir.join("hf");
        crate::exec::export::export_model(&inner, Some(&p.id), &hf)?;
        self.save_table(&table)?;
        let steps = Manifest::load(&RunDir::new(&inner).manifest())?
            .and_then(|m| m.get(&p.id).map(|r| r.steps))
            .unwrap_or(0);
        let rel = hf
            .strip_prefix(self.rd.root())
            .unwrap_or(&hf)
            .display()
            .to_string();
        Ok(End {
            reason: format!("{reason} (trained by curric: EasyR1 has no supervised trainer)"),
            checkpoint: Some(rel),
            steps,
        })
    }

    /// Runs a validation-only job; returns the file of its per-rollout results.
    fn validate_only(&self, model: &str) -> Result<PathBuf> {
        let results = self.dir.join(RESULTS_FILE);
        // A rerun of a killed job scores from scratch: the file is appended to.
        if results.exists() {
            std::fs::remove_file(&results).map_err(|e| ExecError::io("remove", &results, e))?;
        }
        self.launch(
            model,
            &[format!(
                "worker.reward.reward_function_kwargs.results={}",
                results.display()
            )],
        )?;
        Ok(results)
    }

    fn probe(&self, model: &str, mut table: PassRateTable) -> Result<End> {
        let probed = super::read_results(&self.validate_only(model)?)?;
        let (mut passed, mut rollouts) = (0, 0);
        for (id, r) in &probed.records {
            passed += r.successes;
            rollouts += r.attempts;
            table
                .record(id, r.successes, r.attempts, self.global)
                .map_err(|e| perr(self.p, e))?;
        }
        self.save_table(&table)?;
        Ok(End {
            reason: format!(
                "{} probed {} samples with {rollouts} rollouts on EasyR1: {:.1}% passed",
                self.p.id,
                probed.len(),
                100.0 * passed as f64 / rollouts.max(1) as f64
            ),
            checkpoint: None,
            steps: 0,
        })
    }

    fn eval(&self, model: &str, table: PassRateTable) -> Result<End> {
        let results = self.validate_only(model)?;
        let rows: BTreeMap<String, Value> = read_log(&self.dir.join("val.jsonl"))?
            .into_iter()
            .filter_map(|r| Some((r.get("id")?.as_str()?.to_string(), r)))
            .collect();
        let threshold = crate::spec::keys::pass_threshold();
        let mut outcomes = Vec::new();
        for (i, l) in read_log(&results)?.iter().enumerate() {
            let bad = |what: &str| perr(self.p, format!("{}:{}: {what}", results.display(), i + 1));
            let id = l
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no string `id`"))?;
            let row = rows
                .get(id)
                .ok_or_else(|| bad(&format!("result for unknown sample `{id}`")))?;
            // As curric grades an eval: by the accuracy term when there is one.
            let score = l
                .get("accuracy")
                .and_then(Value::as_f64)
                .or_else(|| l.get("overall").and_then(Value::as_f64))
                .ok_or_else(|| bad("no `accuracy` or `overall` score"))?;
            outcomes.push(Outcome {
                capability: row["capability"]
                    .as_str()
                    .ok_or_else(|| bad(&format!("sample `{id}` has no capability")))?
                    .to_string(),
                level: row
                    .get("difficulty")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                correct: score >= threshold,
                length: l
                    .get("length")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("no `length`"))? as usize,
            });
        }
        let result = EvalResult::from_outcomes(&self.p.id, self.global, &outcomes);
        result.save(&self.rd.eval(&self.p.id))?;
        self.save_table(&table)?;
        Ok(End {
            reason: format!(
                "{} evaluated {} held-out samples on EasyR1: accuracy {:.1}%",
                self.p.id,
                result.n,
                result.overall * 100.0
            ),
            checkpoint: None,
            steps: 0,
        })
    }
}

fn count_lines(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path).map_err(|e| ExecError::io("read", path, e))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
}

/// JSON lines; a missing file is empty, a torn last line (a killed writer) is skipped.
fn read_log(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(ExecError::io("read", path, e).into()),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn step_of(line: &Value) -> u64 {
    line.get("step").and_then(Value::as_u64).unwrap_or(0)
}

/// One EasyR1 log line as curric's metric names: `reward` is the mean overall reward,
/// `reward/<term>` each term, and everything else flattened under its EasyR1 path.
fn step_metrics(line: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    flatten("", line, &mut out);
    out.remove("step");
    let mut named = BTreeMap::new();
    for (k, v) in out {
        let key = match k.strip_prefix("reward/") {
            Some("overall") => keys::REWARD.to_string(),
            Some("informative") => INFORMATIVE.to_string(),
            Some(term) => format!("{}{term}", keys::REWARD_PREFIX),
            None => format!("easyr1/{k}"),
        };
        named.insert(key, v);
    }
    named
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}/{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        _ => {}
    }
}

/// The newest `global_step_N/actor` under EasyR1's save path.
fn last_checkpoint(dir: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: u64 = name.strip_prefix("global_step_")?.parse().ok()?;
            let actor = e.path().join("actor");
            actor.is_dir().then_some((n, actor))
        })
        .max_by_key(|(n, _)| *n)
}

fn has_weights(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Stop;

    #[test]
    fn easyr1_log_lines_become_curric_metrics() {
        let line = serde_json::json!({"step": 3, "reward": {"overall": 0.5, "accuracy": 1.0,
            "informative": 0.25}, "actor": {"pg_loss": -0.1}, "val": {"reward_score": 0.4}});
        let m = step_metrics(&line);
        assert_eq!(m["reward"], 0.5);
        assert_eq!(m["reward/accuracy"], 1.0);
        assert_eq!(m[INFORMATIVE], 0.25);
        assert_eq!(m["easyr1/actor/pg_loss"], -0.1);
        assert_eq!(m["easyr1/val/reward_score"], 0.4);
        assert!(!m.contains_key("step") && !m.contains_key("easyr1/step"));
    }

    #[test]
    fn stops_are_counted_when_a_step_count_decides_them() {
        assert!(counted(&Stop::Steps { n: 3 }));
        assert!(!counted(&Stop::Any {
            any: vec![
                Stop::Steps { n: 3 },
                Stop::Plateau {
                    window: 2,
                    delta: 0.1
                }
            ]
        }));
    }
}
