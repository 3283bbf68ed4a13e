//! Data: the built-in "shapes" suite, EasyR1-style JSONL sources, mixing samplers and the
//! pass-rate table. Everything here is deterministic from a seed.
//!
//! Only `jsonl` (when exec asks it to read a source) and `suite::export` / `suite::preview`
//! (on a CLI request) touch the disk; the rest is pure data.

pub mod cli;
mod error;
pub mod jsonl;
pub mod pass_rate;
mod sample;
pub mod sampler;
pub mod seed;
pub mod suite;

pub use error::DataError;

pub use pass_rate::{LevelBands, PassRateTable, PassRecord};
pub use sample::{Capability, Level, Sample};
pub use sampler::{
    DifficultyKey, Drawn, FilterSpec, MixSpec, Sampler, SamplerSpec, SamplerState, ScheduleSpec,
    SourceSpec,
};
