//! The `curric` command line: parses arguments and maps each layer's result to an exit code.

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
    /// Look at or export the built-in "shapes" suite.
    #[command(subcommand)]
    Data(crate::data::cli::DataCommand),
    /// Write the HTML report of a run directory and print its eval table.
    Report(crate::exec::cli::ReportArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Data(cmd) => crate::data::cli::run(cmd),
        Command::Report(args) => crate::exec::cli::report(args),
    }
}
