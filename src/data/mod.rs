//! Data: the built-in "shapes" suite, EasyR1-style JSONL sources, mixing samplers and the
//! pass-rate table. Everything here is deterministic from a seed.

mod sample;

pub use sample::{Capability, Level, Sample};
