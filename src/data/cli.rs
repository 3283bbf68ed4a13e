//! The `curric data` subcommands: a contact sheet to look at and an EasyR1 export.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::suite::{self, Suite};
use super::DataError;

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

/// Runs a subcommand; returns what to print on success.
pub fn execute(cmd: DataCommand) -> Result<String, DataError> {
    let suite = Suite::default();
    match cmd {
        DataCommand::Preview { out, seed } => {
            let img = suite::contact_sheet(&suite, seed)?;
            img.save(&out).map_err(|e| DataError::Image {
                path: out.clone(),
                message: e.to_string(),
            })?;
            Ok(format!("wrote {}", out.display()))
        }
        DataCommand::Export { out, n, seed } => {
            let s = suite::export(&suite, &out, n, seed)?;
            Ok(format!(
                "wrote {} samples ({} images) in {} files under {}",
                s.samples,
                s.images,
                s.files.len(),
                out.display()
            ))
        }
    }
}

pub fn run(cmd: DataCommand) -> ExitCode {
    match execute(cmd) {
        Ok(msg) => crate::out::print(&format!("{msg}\n")),
        Err(e) => {
            crate::errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
