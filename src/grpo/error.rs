use crate::rollout::RolloutError;

/// Everything that can stop a GRPO or SFT update.
#[derive(Debug, thiserror::Error)]
pub enum GrpoError {
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// A non-finite loss or gradient. Raised before any parameter is touched, so the weights
    /// (and any checkpoint written from them) are those of the last good step.
    #[error("non-finite {what} at step {step}; no parameter was updated (lower the learning rate, check the rewards, or resume from the last checkpoint)")]
    NonFinite { step: u64, what: String },
    #[error("invalid GRPO setting: {0}")]
    Config(String),
    #[error("beta = {beta} > 0 needs a frozen reference policy, but none was given")]
    MissingReference { beta: f64 },
    #[error("optimizer state does not match the parameters: {0}")]
    OptimState(String),
}
