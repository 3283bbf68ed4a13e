//! Policies on candle: the built-in tiny VLM, HF Qwen2-style checkpoints and Qwen2.5-VL /
//! Qwen3-VL checkpoints, sampling with a KV cache, per-token log-probs with gradients, safetensors checkpoints.
//!
//! All trained code is written from differentiable candle primitives (see `nn`) or curric's
//! own fused CPU ops with a backward (`ops`): candle-nn's fused softmax / norm / rope kernels
//! have no backward pass.

mod attn_kernel;
pub mod chat;
pub mod checkpoint;
pub mod config;
mod elementwise;
mod error;
pub mod footprint;
pub mod fused_layer;
mod matmul;
pub mod mrope;
pub mod nn;
pub mod ops;
pub mod policy;
pub mod qwen2;
pub mod qwen25_vision;
pub mod qwen3_vision;
pub mod qwen_vl;
pub mod qwen_vl_image;
pub mod qwen_vl_layout;
pub mod tokenizer;
mod types;
pub mod vision;
pub mod vlm;

pub use config::{DecoderConfig, VisionConfig, VlmConfig, PRESETS};
pub use error::ModelError;
pub use policy::Policy;
pub use types::{Completion, PolicyInput, PolicyModel, SamplingParams, TokenLogProbs};

use candle_core::Device;

/// Parses `cpu`, `cuda` or `cuda:N`. CUDA needs a build with the `cuda` feature.
pub fn device(spec: &str) -> Result<Device, ModelError> {
    let s = spec.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.as_str() {
        "cuda" => 0,
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ModelError::BadDevice(spec.to_string()))?,
    };
    if !cfg!(feature = "cuda") {
        return Err(ModelError::NoCuda(spec.to_string()));
    }
    Ok(Device::new_cuda(ordinal)?)
}
