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
    /// Measure rollout and update speed of the built-in model presets.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Fewer presets, tokens and repetitions (under a minute on 2 cores, release build).
    #[arg(long)]
    pub quick: bool,
    /// Preset to measure (repeatable): nano, micro, small, base.
    #[arg(long = "preset")]
    pub presets: Vec<String>,
    /// `cpu` or `cuda:N` (CUDA needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench(args),
    }
}

fn bench(args: BenchArgs) -> ExitCode {
    let result = crate::model::device(&args.device).and_then(|device| {
        crate::bench::run(&crate::bench::BenchOptions {
            quick: args.quick,
            presets: args.presets,
            device,
        })
    });
    match result {
        Ok(rows) => {
            print!("{}", crate::bench::render(&rows));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
