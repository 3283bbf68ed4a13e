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
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
