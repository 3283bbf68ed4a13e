//! The clipped surrogate, the KL penalty, loss aggregation and the SFT loss.
//!
//! All inputs are `[batch, tokens]` f32 tensors, right-padded, with a 0/1 `mask` marking real
//! completion tokens; advantages are `[batch]`. Only `logp` carries gradients; old and
//! reference log-probs must be detached by the caller (they come from no-grad passes).

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use super::GrpoError;
use crate::spec::{GrpoSettings, KlEstimator, LossAgg};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    pub eps_low: f64,
    pub eps_high: f64,
    /// KL coefficient; 0 means no KL term and no reference policy.
    pub beta: f64,
    pub kl: KlEstimator,
    pub agg: LossAgg,
    /// The constant length of `seq-mean-token-sum-norm` (usually max new tokens).
    pub norm_len: usize,
}

impl From<&GrpoSettings> for LossConfig {
    fn from(g: &GrpoSettings) -> Self {
        LossConfig {
            eps_low: g.eps_low,
            eps_high: g.eps_high,
            beta: g.beta,
            kl: g.kl,
            agg: g.loss_agg,
            norm_len: g.max_new_tokens as usize,
        }
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            eps_low: 0.2,
            eps_high: 0.2,
            beta: 0.0,
            kl: KlEstimator::K3,
            agg: LossAgg::TokenMean,
            norm_len: 256,
        }
    }
}

/// Diagnostics of one loss evaluation, over masked tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PgStats {
    /// The aggregated loss (surrogate + β·KL).
    pub loss: f64,
    /// Share of tokens whose gradient the lower clip removed (ratio < 1 − ε_low, A < 0).
    pub clip_frac_low: f64,
    /// Share of tokens whose gradient the upper clip removed (ratio > 1 + ε_high, A > 0).
    pub clip_frac_high: f64,
    /// Mean of old − new log-prob: how far the update moved from the rollout policy.
    pub approx_kl: f64,
    /// Mean KL estimate to the reference (0 when β = 0).
    pub ref_kl: f64,
    pub ratio_mean: f64,
    pub tokens: f64,
}

fn scalar(t: &Tensor) -> Result<f64, GrpoError> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Mean of `x` over `mask` (0 when the mask is empty). Detached statistics only.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<f64, GrpoError> {
    let n = scalar(&mask.sum_all()?)?;
    if n == 0.0 {
        return Ok(0.0);
    }
    Ok(scalar(&(x.detach() * mask)?.sum_all()?)? / n)
}

/// Per-token KL estimate of the policy against the reference.
pub fn kl_penalty(logp: &Tensor, ref_logp: &Tensor, est: KlEstimator) -> Result<Tensor, GrpoError> {
    Ok(match est {
        KlEstimator::K1 => (logp - ref_logp)?,
        KlEstimator::K3 => {
            // As verl's low_var_kl: clamp the log-ratio before exp so one wild token cannot
            // overflow, and clamp the estimate to [-10, 10].
            let d = (ref_logp - logp)?.clamp(-20f32, 20f32)?;
            ((d.exp()? - &d)? - 1.0)?.clamp(-10f32, 10f32)?
        }
    })
}

/// Reduces a `[B, T]` per-token loss over `mask` as `agg` says. A batch with no masked token
/// gives 0 (still attached to the graph, so backward works and updates nothing).
pub fn aggregate(
    loss_mat: &Tensor,
    mask: &Tensor,
    agg: LossAgg,
    norm_len: usize,
) -> Result<Tensor, GrpoError> {
    let masked = (loss_mat * mask)?;
    let b = loss_mat.dim(0)?;
    Ok(match agg {
        LossAgg::TokenMean => {
            let n = scalar(&mask.sum_all()?)?;
            (masked.sum_all()? / n.max(1.0))?
        }
        LossAgg::SeqMeanTokenMean => {
            // Sequences with no token (e.g. masked truncations) are left out of the mean
            // rather than dividing by zero.
            let len = mask.sum(D::Minus1)?;
            let has = len.ge(1f32)?.to_dtype(DType::F32)?;
            let n_seq = scalar(&has.sum_all()?)?;
            let per_seq = (masked.sum(D::Minus1)? / len.maximum(1f32)?)?;
            (per_seq.sum_all()? / n_seq.max(1.0))?
        }
        LossAgg::SeqMeanTokenSumNorm => {
            if norm_len == 0 {
                return Err(GrpoError::Config("norm_len must be at least 1".into()));
            }
            (masked.sum_all()? / (b * norm_len) as f64)?
        }
    })
}

/// The GRPO loss: −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) + β·KL per token, aggregated.
///
/// `ref_logp` is required when `cfg.beta > 0` and ignored otherwise.
pub fn policy_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    advantages: &Tensor,
    mask: &Tensor,
    cfg: &LossConfig,
) -> Result<(Tensor, PgStats), GrpoError> {
    if cfg.eps_low < 0.0 || cfg.eps_high < 0.0 || cfg.eps_low >= 1.0 {
        return Err(GrpoError::Config(format!(
            "clip range needs 0 <= eps_low < 1 and eps_high >= 0, got {} / {}",
            cfg.eps_low, cfg.eps_high
        )));
    }
    let adv = advantages.unsqueeze(1)?.broadcast_as(logp.shape())?;
    let log_ratio = (logp - old_logp)?;
    // Same guard as verl: exp of a log-ratio beyond ±20 is a bug elsewhere, not a signal.
    let ratio = log_ratio.clamp(-20f32, 20f32)?.exp()?;
    let lo = 1.0 - cfg.eps_low;
    let hi = 1.0 + cfg.eps_high;
    let s1 = (&ratio * &adv)?;
    let s2 = (ratio.clamp(lo as f32, hi as f32)? * &adv)?;
    let mut per_tok = s1.minimum(&s2)?.neg()?;

    let mut ref_kl = 0.0;
    if cfg.beta > 0.0 {
        let r = ref_logp.ok_or(GrpoError::MissingReference { beta: cfg.beta })?;
        let kl = kl_penalty(logp, r, cfg.kl)?;
        ref_kl = masked_mean(&kl, mask)?;
        per_tok = (per_tok + (kl * cfg.beta)?)?;
    }
    let loss = aggregate(&per_tok, mask, cfg.agg, cfg.norm_len)?;

    let ratio_d = ratio.detach();
    let adv_d = adv.detach();
    let low = (ratio_d.lt(lo)?.to_dtype(DType::F32)? * adv_d.lt(0f32)?.to_dtype(DType::F32)?)?;
    let high = (ratio_d.gt(hi)?.to_dtype(DType::F32)? * adv_d.gt(0f32)?.to_dtype(DType::F32)?)?;
    let stats = PgStats {
        loss: scalar(&loss)?,
        clip_frac_low: masked_mean(&low, mask)?,
        clip_frac_high: masked_mean(&high, mask)?,
        approx_kl: masked_mean(&log_ratio.neg()?, mask)?,
        ref_kl,
        ratio_mean: masked_mean(&ratio_d, mask)?,
        tokens: scalar(&mask.sum_all()?)?,
    };
    Ok((loss, stats))
}

/// Supervised loss: mean negative log-likelihood over the masked completion tokens. Prompt and
/// image tokens never appear in a completion, so they are masked by construction.
pub fn sft_loss(logp: &Tensor, mask: &Tensor) -> Result<Tensor, GrpoError> {
    let n = scalar(&mask.sum_all()?)?;
    if n == 0.0 {
        return Err(GrpoError::Config(
            "SFT batch has no completion tokens (empty traces?)".into(),
        ));
    }
    Ok(((logp * mask)?.sum_all()?.neg()? / n)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t2(v: &[f32], b: usize, t: usize) -> Tensor {
        Tensor::from_slice(v, (b, t), &Device::Cpu).unwrap()
    }

    fn v(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn kl_estimators() {
        // logp = [ln .5, ln .25], ref = [ln .25, ln .5]
        // k1 = logp - ref = [0.693147, -0.693147]
        // k3: d = ref - logp = [-0.693147, 0.693147];
        //     exp(d) - d - 1 = [0.5 + 0.693147 - 1, 2 - 0.693147 - 1] = [0.193147, 0.306853]
        let lp = t2(&[0.5f32.ln(), 0.25f32.ln()], 1, 2);
        let rf = t2(&[0.25f32.ln(), 0.5f32.ln()], 1, 2);
        let k1 = v(&kl_penalty(&lp, &rf, KlEstimator::K1).unwrap());
        let k3 = v(&kl_penalty(&lp, &rf, KlEstimator::K3).unwrap());
        close(k1[0] as f64, std::f64::consts::LN_2);
        close(k1[1] as f64, -std::f64::consts::LN_2);
        close(k3[0] as f64, 0.193147);
        close(k3[1] as f64, 0.306853);
        // extreme: d = 30 → clamped to 20 → exp(20) - 21 ≫ 10 → 10
        let k3 = v(&kl_penalty(&t2(&[-30.0], 1, 1), &t2(&[0.0], 1, 1), KlEstimator::K3).unwrap());
        close(k3[0] as f64, 10.0);
    }

    #[test]
    fn aggregation_modes() {
        // loss [[1,2,3],[4,0,0]], mask [[1,1,1],[1,0,0]]
        let l = t2(&[1., 2., 3., 4., 0., 0.], 2, 3);
        let m = t2(&[1., 1., 1., 1., 0., 0.], 2, 3);
        // token-mean: 10/4 = 2.5
        let a = aggregate(&l, &m, LossAgg::TokenMean, 0).unwrap();
        close(a.to_scalar::<f32>().unwrap() as f64, 2.5);
        // seq-mean-token-mean: (6/3 + 4/1)/2 = 3
        let a = aggregate(&l, &m, LossAgg::SeqMeanTokenMean, 0).unwrap();
        close(a.to_scalar::<f32>().unwrap() as f64, 3.0);
        // seq-mean-token-sum-norm with L=5: 10/(2*5) = 1
        let a = aggregate(&l, &m, LossAgg::SeqMeanTokenSumNorm, 5).unwrap();
        close(a.to_scalar::<f32>().unwrap() as f64, 1.0);
        // an empty sequence is left out of seq-mean: [[1,2,3],[4,..]] with row 2 masked → 2
        let m2 = t2(&[1., 1., 1., 0., 0., 0.], 2, 3);
        let a = aggregate(&l, &m2, LossAgg::SeqMeanTokenMean, 0).unwrap();
        close(a.to_scalar::<f32>().unwrap() as f64, 2.0);
        assert!(aggregate(&l, &m, LossAgg::SeqMeanTokenSumNorm, 0).is_err());
    }

    #[test]
    fn clipped_surrogate_values_stats_and_gradient() {
        // Three tokens of one sequence each with its own row: ratios 1.5, 0.5, 1.1
        // A = [+1, -1, +1], eps 0.2/0.3 → clip range [0.8, 1.3]
        // row0: min(1.5, 1.3) = 1.3 → loss -1.3 (clipped high, no grad)
        // row1: min(-0.5, -0.8) = -0.8 → loss 0.8 (clipped low, no grad)
        // row2: min(1.1, 1.1) = 1.1 → loss -1.1 (unclipped, d/dlogp = -ratio*A = -1.1)
        // token-mean: (-1.3 + 0.8 - 1.1)/3 = -0.533333
        let old = t2(&[0.0, 0.0, 0.0], 3, 1);
        let lpv = Var::from_tensor(&t2(&[1.5f32.ln(), 0.5f32.ln(), 1.1f32.ln()], 3, 1)).unwrap();
        let adv = Tensor::new(&[1f32, -1., 1.], &Device::Cpu).unwrap();
        let mask = t2(&[1., 1., 1.], 3, 1);
        let cfg = LossConfig {
            eps_low: 0.2,
            eps_high: 0.3,
            ..Default::default()
        };
        let (loss, st) = policy_loss(lpv.as_tensor(), &old, None, &adv, &mask, &cfg).unwrap();
        close(st.loss, -0.533333);
        close(st.clip_frac_low, 1.0 / 3.0);
        close(st.clip_frac_high, 1.0 / 3.0);
        // ratio mean (1.5 + 0.5 + 1.1)/3 = 1.033333
        close(st.ratio_mean, 1.033333);
        // approx_kl = mean(old - logp) = -(0.405465 - 0.693147 + 0.095310)/3 = 0.064124
        close(st.approx_kl, 0.064124);
        let g = loss.backward().unwrap();
        let g = v(g.get(lpv.as_tensor()).unwrap());
        // only row2 has gradient: -1.1/3 = -0.366667
        close(g[0] as f64, 0.0);
        close(g[1] as f64, 0.0);
        close(g[2] as f64, -0.366667);
    }

    #[test]
    fn on_policy_ratio_one_still_gives_policy_gradient_and_kl_term() {
        // μ = 1: old = logp (detached) → ratio 1, gradient of -A·ρ wrt logp is -A.
        // k3 with β = 0.1: ref = logp - ln 2 → d = -ln2; k3 = 0.5 + ln2 - 1 = 0.193147,
        // d k3/d logp = 1 - exp(d) = 0.5 → β-part gradient 0.05.
        // mask [1, 0]: only the first token counts. grad = (-A + 0.05)/1 with A = 2 → -1.95.
        let lpv = Var::from_tensor(&t2(&[-1.0, -2.0], 1, 2)).unwrap();
        let old = lpv.as_tensor().detach();
        let rf = (lpv.as_tensor().detach() - 2f64.ln()).unwrap();
        let adv = Tensor::new(&[2f32], &Device::Cpu).unwrap();
        let mask = t2(&[1., 0.], 1, 2);
        let cfg = LossConfig {
            beta: 0.1,
            ..Default::default()
        };
        let (loss, st) = policy_loss(lpv.as_tensor(), &old, Some(&rf), &adv, &mask, &cfg).unwrap();
        // loss = -2 + 0.1*0.193147 = -1.980685
        close(st.loss, -1.980685);
        close(st.ref_kl, 0.193147);
        close(st.ratio_mean, 1.0);
        let g = loss.backward().unwrap();
        let g = v(g.get(lpv.as_tensor()).unwrap());
        close(g[0] as f64, -1.95);
        close(g[1] as f64, 0.0);
        let no_ref = policy_loss(lpv.as_tensor(), &old, None, &adv, &mask, &cfg);
        assert!(matches!(no_ref, Err(GrpoError::MissingReference { .. })));
    }

    #[test]
    fn sft_is_masked_nll() {
        // logp [[-1,-2],[-3,-9]] mask [[1,1],[1,0]] → (1+2+3)/3 = 2
        let l = t2(&[-1., -2., -3., -9.], 2, 2);
        let m = t2(&[1., 1., 1., 0.], 2, 2);
        close(
            sft_loss(&l, &m).unwrap().to_scalar::<f32>().unwrap() as f64,
            2.0,
        );
        assert!(sft_loss(&l, &m.zeros_like().unwrap()).is_err());
    }
}
