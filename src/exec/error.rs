//! The executor's one error type: everything that can go wrong while running a plan.

use std::path::PathBuf;

/// Errors of `curric run`, `curric report` and the run directory.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "`{path}` is not a valid run manifest: {message} (delete the run directory to start over)"
    )]
    Manifest { path: PathBuf, message: String },

    #[error("`{path}` holds invalid JSON: {message}")]
    Json { path: PathBuf, message: String },

    #[error("no usable checkpoint in `{dir}`: {reason}")]
    NoCheckpoint { dir: PathBuf, reason: String },

    #[error("checkpoint `{dir}` is corrupt: {reason}")]
    CorruptCheckpoint { dir: PathBuf, reason: String },

    #[error("invalid stop condition: {0}")]
    Stop(String),

    #[error("cannot write the report: {0}")]
    Report(String),

    #[error("phase `{phase}`: {message}")]
    Phase { phase: String, message: String },

    #[error("{0}")]
    Device(String),

    #[error("interrupted: {0}")]
    Interrupted(String),

    #[error(
        "run directory `{dir}` is in use by another curric process (pid {holder}); wait for it, \
         or pass a different --run-dir"
    )]
    Locked { dir: PathBuf, holder: String },
}

impl ExecError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExecError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ExecError> = std::result::Result<T, E>;
