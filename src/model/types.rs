use std::sync::Arc;

use candle_core::{Tensor, Var};
use image::RgbImage;

/// One prompt as the policy sees it: an optional image (resized by the policy) and text with
/// an `<image>` placeholder where the vision tokens go.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    pub image: Option<Arc<RgbImage>>,
    pub prompt: String,
}

/// Decoding settings of one generate call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
}

/// A sampled completion. `tokens` includes the EOS token when the model emitted one, so that
/// training on it teaches the model to stop; `truncated` is true when generation hit
/// `max_new_tokens` without EOS.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub text: String,
    pub truncated: bool,
}

/// Per-token results of scoring completions, right-padded to the longest completion.
#[derive(Debug, Clone)]
pub struct TokenLogProbs {
    /// `[batch, max_len]` f32 log-probabilities of the completion tokens, with gradients.
    pub logp: Tensor,
    /// `[batch, max_len]` f32 entropy of the next-token distribution, detached.
    pub entropy: Tensor,
    /// `[batch, max_len]` f32, 1 where a completion token exists, 0 on padding.
    pub mask: Tensor,
}

/// What sft, probe, grpo and eval need from a policy. The built-in tiny VLM and HF
/// checkpoints implement it; tests implement it with toy models.
pub trait PolicyModel {
    /// Samples one completion per input; row `i` draws from an RNG seeded with `seeds[i]`,
    /// so a group is the same input repeated with different seeds and a run is reproducible.
    fn generate(
        &self,
        inputs: &[PolicyInput],
        params: &SamplingParams,
        seeds: &[u64],
    ) -> candle_core::Result<Vec<Completion>>;

    /// Log-probs (with gradients) of given completions under the policy.
    fn logprobs(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> candle_core::Result<TokenLogProbs>;

    /// The variables an optimiser should update (frozen prefixes excluded).
    fn trainable_vars(&self) -> Vec<Var>;
}
