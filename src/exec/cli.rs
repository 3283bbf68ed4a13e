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
    #[arg(long, default_value_t = 25)]
    pub checkpoint_every: u64,
    /// Checkpoints kept per phase (the newest ones).
    #[arg(long, default_value_t = 2)]
    pub keep: usize,
    /// Testing: exit like a crash after N steps of the first phase that runs.
    #[arg(long, hide = true)]
    pub stop_after_steps: Option<u64>,
}

/// Exit code of a run that a test hook cut short, like a killed process.
pub const CRASH_EXIT: u8 = 3;

pub fn run(args: RunArgs) -> ExitCode {
    init_tracing();
    let (c, _) = match crate::check::load_seeded(&args.file, args.seed) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let plan = match crate::plan::plan(&c) {
        Ok(p) => p,
        Err(e) => {
            crate::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(super::rundir::sanitize(&plan.name)));
    let opts = super::runner::RunOptions {
        run_dir: run_dir.clone(),
        device: args.device.clone(),
        quiet: args.quiet,
        checkpoint_every: args.checkpoint_every,
        keep: args.keep.max(1),
        crash_after: args.stop_after_steps,
        crash_phase: None,
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

/// `curric plan FILE --run-dir DIR`: the plan table with a fresh / dirty column.
pub fn plan_status(file: &std::path::Path, run_dir: &std::path::Path) -> ExitCode {
    let (c, _) = match crate::check::load(file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let plan = match crate::plan::plan(&c) {
        Ok(p) => p,
        Err(e) => {
            crate::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
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
    }
}
