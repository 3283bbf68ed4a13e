//! What a person watching `curric run` sees: one progress bar per phase (phase i/n, step,
//! reward, accuracy, tokens/s, ETA from the phase's step bound), `tracing` logs under
//! `RUST_LOG`, and Ctrl-C turned into a flag the step loop checks between steps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::metrics::keys;

/// Installs a `tracing` subscriber reading `RUST_LOG` (default: warnings), writing to stderr.
/// Safe to call more than once.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static HANDLER: OnceLock<bool> = OnceLock::new();

/// The flag set by Ctrl-C. The first Ctrl-C asks the running phase to finish its step,
/// checkpoint and exit; a second one exits at once (the last checkpoint still resumes).
pub fn interrupt_flag() -> &'static AtomicBool {
    HANDLER.get_or_init(|| {
        ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                crate::errln!("\ninterrupted again: exiting now");
                std::process::exit(130);
            }
            crate::errln!("\ninterrupt: finishing the current step, then checkpointing");
        })
        .is_ok()
    });
    &INTERRUPTED
}

/// The progress display of one phase.
pub struct PhaseProgress {
    bar: ProgressBar,
}

impl PhaseProgress {
    /// `index` is 1-based; `max_steps` (from the stop condition) gives the bar a length and
    /// an ETA, otherwise it is a spinner.
    pub fn new(
        quiet: bool,
        index: usize,
        total: usize,
        id: &str,
        kind: &str,
        max_steps: Option<u64>,
    ) -> Self {
        let bar = match max_steps {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let template = if max_steps.is_some() {
            "{prefix} [{bar:24}] {pos}/{len} {msg} ETA {eta}"
        } else {
            "{prefix} {spinner} step {pos} {msg} {elapsed}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("[{index}/{total}] {id} ({kind})"));
        if !quiet {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        PhaseProgress { bar }
    }

    pub fn update(&self, step: u64, metrics: &BTreeMap<String, f64>) {
        self.bar.set_position(step);
        self.bar.set_message(summary(metrics));
    }

    pub fn println(&self, line: impl AsRef<str>) {
        if !self.bar.is_hidden() {
            self.bar.println(line);
        }
    }

    pub fn finish(&self, message: &str) {
        self.bar.abandon_with_message(message.to_string());
    }
}

/// "reward 0.53 acc 0.41 128 tok/s" from whatever of those the step reported.
pub fn summary(m: &BTreeMap<String, f64>) -> String {
    let mut parts = Vec::new();
    if let Some(v) = m.get(keys::REWARD) {
        parts.push(format!("reward {v:.3}"));
    }
    if let Some(v) = m.get(keys::LOSS).filter(|_| !m.contains_key(keys::REWARD)) {
        parts.push(format!("loss {v:.3}"));
    }
    if let Some(v) = m.get(keys::ACCURACY) {
        parts.push(format!("acc {v:.3}"));
    }
    if let Some(v) = m.get("eval/overall") {
        parts.push(format!("eval {v:.3}"));
    }
    if let Some(v) = m.get(keys::TOKENS_PER_S) {
        parts.push(format!("{v:.0} tok/s"));
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_what_the_step_reported() {
        let m: BTreeMap<String, f64> = [
            ("reward".to_string(), 0.5312),
            ("accuracy".to_string(), 0.25),
            ("tokens_per_s".to_string(), 127.6),
            ("kl".to_string(), 0.01),
        ]
        .into();
        assert_eq!(summary(&m), "reward 0.531  acc 0.250  128 tok/s");
        let m: BTreeMap<String, f64> = [("loss".to_string(), 2.0)].into();
        assert_eq!(summary(&m), "loss 2.000");
        let p = PhaseProgress::new(true, 1, 3, "warmup", "sft", Some(10));
        p.update(3, &m);
        p.finish("done");
    }
}
