//! The `curric` command line: parses arguments and maps each layer's result to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "curric",
    version,
    about = "Declarative curricula for RL post-training of VLMs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a curriculum and report every problem at once (exit 1 on errors).
    Check {
        /// The `.curr` file.
        file: PathBuf,
    },
    /// Compile a curriculum to its phase DAG and print it (a table by default).
    Plan {
        /// The `.curr` file.
        file: PathBuf,
        /// Print Graphviz DOT instead of the table.
        #[arg(long, conflicts_with = "json")]
        dot: bool,
        /// Print the plan as JSON (the executor's input).
        #[arg(long)]
        json: bool,
        /// Mark each phase fresh or dirty (and why) against this run directory.
        #[arg(long, conflicts_with_all = ["dot", "json"])]
        run_dir: Option<PathBuf>,
    },
    /// Look at or export the built-in "shapes" suite.
    #[command(subcommand)]
    Data(crate::data::cli::DataCommand),
    /// Execute a curriculum: every phase not already fresh in the run directory.
    Run(crate::exec::cli::RunArgs),
    /// Write the HTML report of a run directory and print its eval table.
    Report(crate::exec::cli::ReportArgs),
    /// Measure rollout and update speed of the built-in model presets.
    Bench(crate::bench::BenchArgs),
    /// Run curricula over several seeds and print the comparison table.
    Compare(crate::exec::compare::CompareArgs),
    /// Write what a run produced in a form other tools read.
    #[command(subcommand)]
    Export(crate::exec::cli::ExportCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => crate::check::run_check(&file),
        Command::Plan {
            file,
            run_dir: Some(dir),
            ..
        } => crate::exec::cli::plan_status(&file, &dir),
        Command::Plan {
            file, dot, json, ..
        } => {
            let format = match (dot, json) {
                (true, _) => crate::plan::Format::Dot,
                (_, true) => crate::plan::Format::Json,
                // The table adds each training phase's memory, which reads the model's config.
                _ => return crate::exec::memory::plan_table(&file),
            };
            crate::plan::run_plan(&file, format)
        }
        Command::Data(cmd) => crate::data::cli::run(cmd),
        Command::Run(args) => crate::exec::cli::run(args),
        Command::Report(args) => crate::exec::cli::report(args),
        Command::Bench(args) => crate::bench::run_cli(args),
        Command::Compare(args) => crate::exec::compare::run_cli(args),
        Command::Export(cmd) => crate::exec::cli::export(cmd),
    }
}
