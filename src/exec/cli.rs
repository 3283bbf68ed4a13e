//! The `run` and `report` subcommands: argument types and their entry points.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::progress::init_tracing;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run directory written by `curric run`.
    pub run_dir: PathBuf,
    /// Print the report's data (phases, eval accuracy per capability, transitions) as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn report(args: ReportArgs) -> ExitCode {
    init_tracing();
    match super::report::run_report(&args.run_dir, args.json) {
        Ok(text) => crate::out::print(&text),
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The `.curr` file.
    pub file: PathBuf,
    /// Where checkpoints, metrics and the manifest go (default: `runs/<curriculum name>`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Overrides the curriculum's `seed` (sources and stages with their own seed keep it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// `cpu` or `cuda:N`; overrides the curriculum's `device`.
    #[arg(long)]
    pub device: Option<String>,
    /// No progress bars; only errors and the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Checkpoint every N steps (and always at a phase's end).
    #[arg(long, default_value_t = super::runner::RunOptions::CHECKPOINT_EVERY)]
    pub checkpoint_every: u64,
    /// Checkpoints kept per phase (the newest ones).
    #[arg(long, default_value_t = super::runner::RunOptions::KEEP)]
    pub keep: usize,
    /// Run this phase alone, as a root (its parents ran elsewhere, e.g. on EasyR1); use a
    /// fresh run directory for it.
    #[arg(long)]
    pub only: Option<String>,
    /// With --only: the weights to start from, a model directory or a hub id in the local
    /// cache (default: the curriculum's model).
    #[arg(long, requires = "only")]
    pub from: Option<String>,
    /// With --only: the pass rates of a probe that ran elsewhere (its results.jsonl).
    #[arg(long, requires = "only")]
    pub pass_rates: Option<PathBuf>,
    /// Testing: exit like a crash after N steps of the first phase that runs.
    #[arg(long, hide = true)]
    pub stop_after_steps: Option<u64>,
    /// Where phases train: curric's own trainer, or EasyR1 on Ray (one launch per phase or
    /// chunk, from an EasyR1 checkout on the head node).
    #[arg(long, value_enum, default_value_t = Backend::Candle)]
    pub backend: Backend,
    /// easyr1: the EasyR1 checkout.
    #[arg(long, required_if_eq("backend", "easyr1"))]
    pub easyr1: Option<PathBuf>,
    /// easyr1: the interpreter EasyR1 runs under.
    #[arg(long, default_value = "python3")]
    pub python: String,
    #[command(flatten)]
    pub cluster: Cluster,
    /// easyr1: steps per launch when curric evaluates the stop condition between launches.
    #[arg(long, default_value_t = 25)]
    pub chunk_steps: u64,
}

/// Where EasyR1 runs and from what: shared by `run --backend easyr1` and `export easyr1`.
#[derive(Args, Debug, Clone)]
pub struct Cluster {
    /// EasyR1's start weights: a Hugging Face id or a checkpoint directory (needed when the
    /// curriculum's model is curric's built-in tiny VLM).
    #[arg(long)]
    pub model: Option<String>,
    /// Ray nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: u64,
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: u64,
    /// Run despite a listed difference from curric (e.g. `mask_truncated`); the manifest
    /// records it.
    #[arg(long)]
    pub accept: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Candle,
    Easyr1,
}

/// A checked, planned curriculum; on failure the diagnostics are printed and the exit code
/// returned.
fn load_plan(file: &std::path::Path, seed: Option<u64>) -> Result<crate::plan::Plan, ExitCode> {
    let (c, _) = crate::check::load_seeded(file, seed)?;
    crate::plan::plan(&c).map_err(|e| {
        crate::errln!("error: {e}");
        ExitCode::FAILURE
    })
}

/// Exit code of a run that a test hook cut short, like a killed process.
pub const CRASH_EXIT: u8 = 3;

pub fn run(args: RunArgs) -> ExitCode {
    init_tracing();
    let plan = match load_plan(&args.file, args.seed) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (plan, pass_rates) = match only(&args, plan) {
        Ok(x) => x,
        Err(e) => {
            crate::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(super::rundir::sanitize(&plan.name)));
    if args.backend == Backend::Easyr1 {
        return run_easyr1(&args, &plan, run_dir);
    }
    let opts = super::runner::RunOptions {
        device: args.device.clone(),
        quiet: args.quiet,
        checkpoint_every: args.checkpoint_every,
        keep: args.keep.max(1),
        crash_after: args.stop_after_steps,
        pass_rates,
        ..super::runner::RunOptions::new(run_dir.clone())
    };
    let flag = super::progress::interrupt_flag();
    let t0 = std::time::Instant::now();
    match super::runner::run_plan(&plan, &opts, flag) {
        Ok(outcomes) => {
            use super::runner::PhaseOutcome as O;
            let resume = format!(
                "curric run {} --run-dir {}",
                args.file.display(),
                run_dir.display()
            );
            let (mut ran, mut skipped) = (0, 0);
            for o in &outcomes {
                match o {
                    O::Ran { reason, .. } => {
                        ran += 1;
                        if args.quiet {
                            crate::errln!("{reason}");
                        }
                    }
                    O::Skipped { .. } => skipped += 1,
                    O::Interrupted { id, step } => {
                        crate::errln!("interrupted: {id} checkpointed after step {step}; resume with `{resume}`");
                        return ExitCode::from(130);
                    }
                    O::Crashed { id, step } => {
                        crate::errln!("stopped {id} after step {step} (--stop-after-steps); resume with `{resume}`");
                        return ExitCode::from(CRASH_EXIT);
                    }
                }
            }
            crate::errln!(
                "{}: {ran} phase(s) ran, {skipped} fresh, in {:.1}s; see `curric report {}`",
                plan.name,
                t0.elapsed().as_secs_f64(),
                run_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--only PHASE`: the plan of that phase alone, with the pass rates it starts from.
fn only(
    args: &RunArgs,
    plan: crate::plan::Plan,
) -> Result<(crate::plan::Plan, Option<crate::data::PassRateTable>), String> {
    let Some(id) = &args.only else {
        return Ok((plan, None));
    };
    if args.backend == Backend::Easyr1 {
        return Err("--only runs one phase with curric's own trainer (--backend candle)".into());
    }
    let from = args.from.as_ref().map(|m| {
        if std::path::Path::new(m).exists() {
            crate::spec::ModelSpec::Local { path: m.clone() }
        } else {
            crate::spec::ModelSpec::Hub { repo: m.clone() }
        }
    });
    let known = plan
        .phases
        .iter()
        .map(|p| p.id.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let one = plan
        .only(id, from)
        .ok_or_else(|| format!("no phase `{id}` in the plan (phases: {known})"))?;
    let table = match &args.pass_rates {
        Some(path) => Some(super::easyr1::read_results(path).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((one, table))
}

fn run_easyr1(args: &RunArgs, plan: &crate::plan::Plan, run_dir: PathBuf) -> ExitCode {
    let opts = super::easyr1::DriveOptions {
        run_dir: run_dir.clone(),
        easyr1: args.easyr1.clone().unwrap_or_default(),
        python: args.python.clone(),
        model: args.cluster.model.clone(),
        nodes: args.cluster.nodes.max(1),
        gpus_per_node: args.cluster.gpus_per_node.max(1),
        accept: args.cluster.accept.clone(),
        chunk_steps: args.chunk_steps.max(1),
        device: args.device.clone(),
        quiet: args.quiet,
    };
    let file = std::fs::canonicalize(&args.file).unwrap_or(args.file.clone());
    let t0 = std::time::Instant::now();
    match super::easyr1::drive(plan, &file, &opts) {
        Ok(outcomes) => {
            let ran = outcomes
                .iter()
                .filter(|o| matches!(o, super::runner::PhaseOutcome::Ran { .. }))
                .count();
            crate::errln!(
                "{}: {ran} phase(s) ran on EasyR1, {} fresh, in {:.1}s; see `curric report {}`",
                plan.name,
                outcomes.len() - ran,
                t0.elapsed().as_secs_f64(),
                run_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            crate::errln!("error: {e}");
            crate::errln!(
                "resume with `curric run {} --backend easyr1 …` (same flags, same --run-dir)",
                args.file.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// `curric plan FILE --run-dir DIR`: the plan table with a fresh / dirty column.
pub fn plan_status(file: &std::path::Path, run_dir: &std::path::Path) -> ExitCode {
    let plan = match load_plan(file, None) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match super::runner::status(&plan, run_dir) {
        Ok(status) => crate::out::print(&format!(
            "{}{}\n",
            crate::plan::render_table(&plan, Some(&status)),
            crate::plan::summary(&plan)
        )),
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum ExportCommand {
    /// A finished phase's weights as a directory `model = local("DIR")` loads, with
    /// `provenance.json` (curriculum, phase, fingerprint, weights hash).
    Model {
        /// The run directory written by `curric run`.
        run_dir: PathBuf,
        /// Where to write the model files.
        #[arg(long)]
        out: PathBuf,
        /// The phase to export (default: the run's last finished phase).
        #[arg(long)]
        phase: Option<String>,
    },
    /// A curriculum as EasyR1 jobs for a Ray cluster: per phase a complete config.yaml, its
    /// data in curric's order, reward.py and run.sh; pipeline.sh runs them in order.
    Easyr1(Easyr1Args),
}

#[derive(Args, Debug)]
pub struct Easyr1Args {
    /// The `.curr` file.
    pub file: PathBuf,
    /// The directory to write (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub cluster: Cluster,
    /// A probe's results.jsonl: write the data of the phases whose levels come from it.
    #[arg(long)]
    pub pass_rates: Option<PathBuf>,
    /// Write only this phase's directory (with --pass-rates, what pipeline.sh does).
    #[arg(long)]
    pub only: Option<String>,
}

pub fn export(cmd: ExportCommand) -> ExitCode {
    init_tracing();
    match cmd {
        ExportCommand::Model {
            run_dir,
            out,
            phase,
        } => match super::export::export_model(&run_dir, phase.as_deref(), &out) {
            Ok(p) => {
                crate::errln!(
                    "exported {} / {} to {} (weights blake3 {})",
                    p.curriculum,
                    p.phase,
                    out.display(),
                    &p.weights_blake3[..16]
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                crate::errln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ExportCommand::Easyr1(args) => export_easyr1(args),
    }
}

fn export_easyr1(args: Easyr1Args) -> ExitCode {
    let plan = match load_plan(&args.file, None) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let opts = super::easyr1::ExportOptions {
        out: args.out.clone(),
        curriculum_file: std::fs::canonicalize(&args.file).unwrap_or(args.file.clone()),
        model: args.cluster.model,
        nodes: args.cluster.nodes.max(1),
        gpus_per_node: args.cluster.gpus_per_node.max(1),
        accept: args.cluster.accept,
        pass_rates: args.pass_rates,
        only: args.only,
    };
    match super::easyr1::export(&plan, &opts) {
        Ok(m) => {
            crate::errln!(
                "wrote {} phase(s) of {} for EasyR1 {} to {}",
                opts.only.as_ref().map_or(m.phases.len(), |_| 1),
                m.curriculum,
                &m.easyr1_commit[..7],
                args.out.display()
            );
            if opts.only.is_none() {
                crate::out::print(&super::easyr1::describe(&m))
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
