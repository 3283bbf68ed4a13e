//! Policies on candle: the built-in tiny VLM and HF Qwen2-style checkpoints, sampling with a
//! KV cache, per-token log-probs with gradients, safetensors checkpoints.

mod types;

pub use types::{Completion, PolicyInput, PolicyModel, SamplingParams, TokenLogProbs};
