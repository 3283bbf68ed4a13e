//! The executor: the only layer that touches disk or device. It turns a plan into training:
//! phases run in topological order, each checkpointed, fingerprinted and logged in a run
//! directory, so that a rerun skips what is fresh and a killed run resumes where it stopped.
//!
//! - [`rundir`]: the layout and atomic writes; [`manifest`]: `manifest.toml`;
//! - [`fingerprint`]: fresh or dirty, and why; [`checkpoint`]: verified, atomic checkpoints;
//! - [`stop`]: stop conditions as a pure evaluator; [`metrics`] and [`tfevents`]: logs;
//! - [`driver`]: the step loop shared by every phase kind (stop, checkpoint, resume, Ctrl-C);
//! - [`progress`]: progress bars and interrupt handling; [`report`]: `curric report`;
//! - [`compare`]: `curric compare`, the grid over seeds and its table; [`export`]: a finished
//!   phase's weights as a model directory with its provenance; [`easyr1`]: a curriculum as
//!   EasyR1 jobs for a cluster.

pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod driver;
pub mod easyr1;
pub mod error;
pub mod eval;
pub mod export;
pub mod fingerprint;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod phases;
pub mod progress;
pub mod report;
pub mod rundir;
pub mod runner;
pub mod stop;
pub mod tfevents;

pub use error::{ExecError, Result};
