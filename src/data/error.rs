use std::path::PathBuf;

/// Everything the data layer can report. Messages name the file, line and field involved so
/// that a user can fix their data without reading curric's source.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: not a JSON object: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: field `{field}`: {message}", path.display())]
    Field {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    #[error("`{}` is not a regular file (a directory or a device cannot be a data source)", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}:{line}: image `{}` does not exist", file.display(), image.display())]
    MissingImage {
        file: PathBuf,
        line: usize,
        image: PathBuf,
    },
    #[error("image `{}` cannot be read: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("unknown built-in capability `{0}` (perception, text_reasoning, visual_reasoning)")]
    UnknownCapability(String),
    #[error("suite: {0}")]
    Suite(String),
    #[error("sampler: {0}")]
    Sampler(String),
    #[error("pass-rate table: {0}")]
    PassRate(String),
}
