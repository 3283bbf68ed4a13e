//! The GRPO update as the trainers (TRL, verl, EasyR1) define it, as small pure functions over
//! candle tensors: advantages, the clipped surrogate with a KL term, loss aggregation, the SFT
//! loss, curric's AdamW with its schedule and checks, and the step driver that ties them to a
//! policy, a reward set and a prompt source.

mod advantage;
mod error;
mod loss;
mod optim;
mod step;

pub use advantage::advantages;
pub use error::GrpoError;
pub use loss::{aggregate, kl_penalty, masked_mean, policy_loss, sft_loss, LossConfig, PgStats};
pub use optim::{AdamW, AdamWConfig, LrSchedule, OptimStats, ScheduleKind};
pub use step::{grpo_step, sft_step, GrpoConfig, SftStats, StepMetrics, TermStats};
