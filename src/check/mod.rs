//! The checker: `.curr` bytes → a resolved, typed [`Curriculum`] plus every diagnostic at
//! once. Nothing here touches a model or a device; the only file-system access is the
//! existence check of JSONL sources (a warning here, an error at run time).
//!
//! Decisions worth knowing:
//! - Mix weights must be > 0; weights that do not sum to 1 are normalised with a warning
//!   (`curric::mix-normalised`). Reward weights are used as written (any non-zero number).
//! - `group_size × prompts_per_step` may not exceed [`MAX_ROLLOUTS_PER_STEP`], and
//!   `micro_batch` must divide it.
//! - Every sft and grpo stage needs a stop condition that is certainly reached (a step,
//!   epoch, sample or time bound on every `or` branch / in every `and`).

pub mod diagnostic;
mod resolve;
pub mod types;
mod values;

use std::path::Path;

pub use diagnostic::{Diag, ErrorKind, Report, Severity};
pub use resolve::{MAX_ROLLOUTS_PER_STEP, SUITE_CAPABILITIES};
pub use types::*;

/// The outcome of checking one file: the curriculum when there were no errors, and the
/// report (warnings, or errors and warnings).
#[derive(Debug)]
pub struct Checked {
    pub curriculum: Option<Curriculum>,
    pub report: Report,
}

/// Checks raw bytes. `file` names the file in diagnostics (and, by its stem, the curriculum
/// when it sets no `name`); JSONL paths are resolved against `base_dir`.
pub fn check_bytes(bytes: &[u8], file: &str, base_dir: Option<&Path>) -> Checked {
    let (text, utf8_error) = crate::syntax::decode(bytes);
    if let Some(e) = utf8_error {
        return Checked {
            curriculum: None,
            report: Report::new(file, text, vec![e.into()]),
        };
    }
    check_str(&text, file, base_dir)
}

pub fn check_str(text: &str, file: &str, base_dir: Option<&Path>) -> Checked {
    let tree = match crate::syntax::parse(text) {
        Ok(t) => t,
        Err(e) => {
            return Checked {
                curriculum: None,
                report: Report::new(file, text.to_string(), vec![e.into()]),
            }
        }
    };
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("curriculum");
    let (curriculum, diags) = resolve::resolve(&tree, stem, base_dir);
    let report = Report::new(file, text.to_string(), diags);
    let curriculum = if report.has_errors() {
        None
    } else {
        curriculum
    };
    Checked { curriculum, report }
}

/// Reads and checks a file.
pub fn check_file(path: &Path) -> std::io::Result<Checked> {
    let bytes = std::fs::read(path)?;
    Ok(check_bytes(
        &bytes,
        &path.display().to_string(),
        path.parent(),
    ))
}

/// Renders a report for a terminal: colour only when stderr is one and `NO_COLOR` is unset,
/// so piped output (and every test) is plain and deterministic.
pub fn render_for_stderr(report: &Report) -> String {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if colour {
        report.render_themed(miette::GraphicalTheme::unicode())
    } else {
        report.render()
    }
}

/// Reads and checks `path`, printing diagnostics to stderr. `Err` carries the exit code.
pub fn load(path: &Path) -> Result<(Curriculum, Report), std::process::ExitCode> {
    let checked = match check_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return Err(std::process::ExitCode::FAILURE);
        }
    };
    eprint!("{}", render_for_stderr(&checked.report));
    match checked.curriculum {
        Some(c) => Ok((c, checked.report)),
        None => {
            eprintln!("error: {}", checked.report);
            Err(std::process::ExitCode::FAILURE)
        }
    }
}

/// `curric check FILE`: 0 when clean (warnings allowed), 1 on errors.
pub fn run_check(path: &Path) -> std::process::ExitCode {
    match load(path) {
        Ok((c, report)) => {
            println!(
                "{}: ok ({} stage{}, {} source{}, {} reward set{}; {})",
                path.display(),
                c.stages.len(),
                if c.stages.len() == 1 { "" } else { "s" },
                c.sources.len(),
                if c.sources.len() == 1 { "" } else { "s" },
                c.rewards.len(),
                if c.rewards.len() == 1 { "" } else { "s" },
                report.counts()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
