//! The tiny VLM: optional vision tower (`visual.*`) and projector (`projector.*`) in front of
//! the Qwen2-style decoder (`model.*`, `lm_head`). A text-only HF Qwen2 checkpoint is a `Vlm`
//! without vision.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::VlmConfig;
use super::qwen2::Decoder;
use super::vision::{Projector, VisionTower};

#[derive(Debug, Clone)]
pub struct Vlm {
    pub visual: Option<VisionTower>,
    pub projector: Option<Projector>,
    pub decoder: Decoder,
}

impl Vlm {
    pub fn new(cfg: &VlmConfig, vb: VarBuilder) -> Result<Self> {
        let decoder = Decoder::new(&cfg.decoder, vb.clone())?;
        let (visual, projector) = match &cfg.vision {
            Some(vc) => (
                Some(VisionTower::new(vc, vb.pp("visual"))?),
                Some(Projector::new(
                    vc.hidden_size,
                    cfg.decoder.hidden_size,
                    vb.pp("projector"),
                )?),
            ),
            None => (None, None),
        };
        Ok(Self {
            visual,
            projector,
            decoder,
        })
    }

    /// Vision tokens `[N, patches, d]` (decoder width) of pixels `[N, 3, S, S]`.
    pub fn forward_vision(&self, pixels: &Tensor) -> Result<Tensor> {
        match (&self.visual, &self.projector) {
            (Some(v), Some(p)) => p.forward(&v.forward(pixels)?),
            _ => candle_core::bail!("this model has no vision tower"),
        }
    }
}
