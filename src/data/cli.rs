//! The `curric data` subcommands: a contact sheet to look at and an EasyR1 export.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::suite::{self, Suite};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Draw a contact sheet of built-in samples (scenes, questions, answers) to a PNG.
    Preview {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write every built-in capability and level as EasyR1 JSONL + PNG files.
    Export {
        #[arg(long)]
        out: PathBuf,
        /// Samples per capability and level.
        #[arg(long, default_value_t = 100)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(cmd: DataCommand) -> ExitCode {
    let suite = Suite::default();
    let result = match cmd {
        DataCommand::Preview { out, seed } => suite::contact_sheet(&suite, seed).and_then(|img| {
            img.save(&out).map_err(|e| super::DataError::Image {
                path: out.clone(),
                message: e.to_string(),
            })?;
            println!("wrote {}", out.display());
            Ok(())
        }),
        DataCommand::Export { out, n, seed } => suite::export(&suite, &out, n, seed).map(|s| {
            println!(
                "wrote {} samples ({} images) in {} files under {}",
                s.samples,
                s.images,
                s.files.len(),
                out.display()
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
