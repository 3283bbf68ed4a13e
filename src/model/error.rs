//! The model layer's error type.

use std::path::PathBuf;

/// Everything that can go wrong building, loading, saving or running a policy.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error("unknown preset `{0}` (expected one of: nano, micro, small, base)")]
    UnknownPreset(String),

    #[error("invalid device `{0}`: expected `cpu`, `cuda` or `cuda:N`")]
    BadDevice(String),

    #[error("device `{0}` needs CUDA, but curric was built without the `cuda` feature; rebuild with `cargo build --release --features cuda`")]
    NoCuda(String),

    #[error("checkpoint is missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor { name: String, expected: Vec<usize> },

    #[error("checkpoint tensor `{name}` has shape {found:?}, but the config implies {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error(
        "checkpoint has unexpected tensor `{0}` that the config does not use (wrong config.json?)"
    )]
    UnexpectedTensor(String),

    #[error("invalid config {path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("no checkpoint found at `{0}`: not a directory with config.json, and not a model id in the local Hugging Face cache (set HF_HOME or download it first; curric never downloads)")]
    NotFound(String),

    #[error("input {index} has an image, but this checkpoint has no vision tower")]
    NoVision { index: usize },

    #[error("{0}")]
    Invalid(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Candle's error type carries any error; the `PolicyModel` trait speaks candle errors.
impl From<ModelError> for candle_core::Error {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Candle(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}
