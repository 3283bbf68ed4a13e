//! One GRPO step and one SFT step, with the metrics a trainer logs.
//!
//! A GRPO step reads top to bottom: draw prompts → roll out G completions each → score them
//! → (dynamic sampling: drop zero-std groups, draw again) → group advantages → μ passes of
//! the clipped surrogate, each pass one optimiser update accumulated over micro-batches.
//!
//! What is on when a `.curr` file says nothing (the key table's defaults, `spec::keys`):
//! β = 0.01 with the k3 estimator against the stage's start weights, symmetric clipping
//! ε = 0.2, token-mean aggregation (DAPO, TRL's and verl's default), std-scaled group
//! advantages, μ = 1 (exactly on-policy, so no old-policy forward), micro-batches cut by
//! completion length only where that saves padding (`micro_batches`), no
//! dynamic sampling and no truncation mask. Off unless asked: clip-higher (`eps_high`),
//! dynamic sampling, `mask_truncated`, Dr. GRPO's `advantage = none` with
//! `loss_agg = seq_mean_token_sum_norm`.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    advantages, masked_mean, policy_loss, sft_loss, AdamW, GrpoError, LossConfig, PgStats,
};
use crate::data::Sample;
use crate::model::{PolicyInput, PolicyModel, SamplingParams};
use crate::reward::RewardSet;
use crate::rollout::{policy_input, rollout, Group, SeedCtx};
use crate::spec::{GrpoSettings, LossAgg};

/// A GRPO phase as the step needs it: the settings the checker wrote, unchanged, and where
/// its random draws come from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GrpoConfig {
    pub settings: GrpoSettings,
    /// Curriculum seed and phase key (see `rollout::mix_seed`).
    pub seed: u64,
    pub phase: u64,
}

impl GrpoConfig {
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.settings.temperature,
            top_p: self.settings.top_p,
            max_new_tokens: self.settings.max_new_tokens as usize,
        }
    }
}

/// Added to the std in the advantage denominator (as TRL's and verl's 1e-6 / 1e-4 guard).
const ADV_EPS: f64 = 1e-6;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TermStats {
    pub mean: f64,
    pub std: f64,
}

/// What one GRPO step did. Reward, length and truncation statistics cover every completion
/// sampled in the step (dropped groups included), so they track the policy rather than the
/// filtered batch; loss statistics average the step's optimiser updates. Stds are population
/// stds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Unweighted per-term score statistics, by term label.
    pub terms: BTreeMap<String, TermStats>,
    /// Share of sampled groups whose rewards were all equal.
    pub zero_std_frac: f64,
    pub groups_sampled: usize,
    pub groups_trained: usize,
    pub dropped_groups: usize,
    pub retries: usize,
    /// Dynamic sampling ran out of retries; the update used fewer groups than asked.
    pub retry_cap_hit: bool,
    /// The prompt source returned nothing before the batch was full.
    pub data_exhausted: bool,
    /// False when no group was left to train on (nothing was updated).
    pub updated: bool,
    pub optimizer_steps: usize,
    pub loss: f64,
    pub clip_frac_low: f64,
    pub clip_frac_high: f64,
    pub clip_frac: f64,
    pub approx_kl: f64,
    pub ref_kl: f64,
    pub ratio_mean: f64,
    pub entropy: f64,
    pub completion_len_mean: f64,
    pub truncated_frac: f64,
    pub rollout_s: f64,
    pub reward_s: f64,
    pub update_s: f64,
    /// Completion tokens sampled per second of generation.
    pub tokens_per_s: f64,
    pub lr: f64,
    /// Gradient norm before clipping, averaged over the step's optimiser steps.
    pub grad_norm: f64,
    /// Every sampled group (dropped ones included) as (sample id, rewards): what the
    /// executor's pass-rate table learns from online.
    #[serde(skip)]
    pub group_rewards: Vec<(String, Vec<f32>)>,
}

fn mean_std(xs: &[f64]) -> TermStats {
    if xs.is_empty() {
        return TermStats::default();
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    TermStats {
        mean,
        std: var.sqrt(),
    }
}

fn validate(s: &GrpoSettings, has_ref: bool) -> Result<(), GrpoError> {
    let bad = |m: &str| Err(GrpoError::Config(m.into()));
    if s.group_size == 0 {
        return bad("group_size must be at least 1");
    }
    if s.prompts_per_step == 0 {
        return bad("prompts_per_step must be at least 1");
    }
    if s.mu == 0 {
        return bad("mu must be at least 1");
    }
    if s.micro_batch == 0 {
        return bad("micro_batch must be at least 1");
    }
    if s.beta < 0.0 || !s.beta.is_finite() {
        return bad("beta must be a finite number >= 0");
    }
    if s.beta > 0.0 && !has_ref {
        return Err(GrpoError::MissingReference { beta: s.beta });
    }
    Ok(())
}

/// One GRPO step at training step `step`.
///
/// `draw(n)` returns up to `n` fresh prompts (fewer, or none, when the data runs out).
/// `reference` is the frozen reference policy, needed only when `cfg.loss.beta > 0`. On
/// error no parameter has been changed by the failing optimiser step.
pub fn grpo_step<P: PolicyModel + ?Sized>(
    policy: &P,
    reference: Option<&dyn PolicyModel>,
    opt: &mut AdamW,
    rewards: &RewardSet,
    cfg: &GrpoConfig,
    step: u64,
    mut draw: impl FnMut(usize) -> Vec<Sample>,
) -> Result<StepMetrics, GrpoError> {
    let s = &cfg.settings;
    validate(s, reference.is_some())?;
    let ctx = SeedCtx {
        seed: cfg.seed,
        phase: cfg.phase,
        step,
    };
    let sampling = cfg.sampling();
    let loss_cfg = LossConfig::from(s);
    let g = s.group_size as usize;
    let prompts = s.prompts_per_step as usize;
    let mut m = StepMetrics {
        step,
        lr: opt.current_lr(),
        ..Default::default()
    };

    // Rollout with dynamic sampling.
    let mut kept: Vec<Group> = Vec::new();
    let mut totals = Vec::new();
    let mut term_scores: Vec<Vec<f64>> = vec![Vec::new(); rewards.terms().len()];
    let (mut lens, mut truncated, mut zero_std, mut drawn, mut tokens) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    loop {
        let need = prompts - kept.len();
        let mut samples = draw(need);
        samples.truncate(need);
        if samples.is_empty() {
            m.data_exhausted = true;
            break;
        }
        let (groups, t) = rollout(policy, &samples, g, &sampling, rewards, ctx, drawn)?;
        drawn += samples.len();
        m.rollout_s += t.generate_s;
        m.reward_s += t.reward_s;
        tokens += t.tokens;
        for grp in groups {
            m.groups_sampled += 1;
            m.group_rewards
                .push((grp.sample.id.clone(), grp.rewards.clone()));
            for (k, c) in grp.completions.iter().enumerate() {
                totals.push(grp.rewards[k] as f64);
                for (j, s) in grp.terms[k].iter().enumerate() {
                    term_scores[j].push(*s as f64);
                }
                lens += c.tokens.len();
                truncated += c.truncated as usize;
            }
            if !grp.is_informative() {
                zero_std += 1;
                if s.dynamic_sampling {
                    m.dropped_groups += 1;
                    continue;
                }
            }
            kept.push(grp);
        }
        if !s.dynamic_sampling || kept.len() >= prompts {
            break;
        }
        if m.retries >= s.max_retries as usize {
            m.retry_cap_hit = true;
            // A metric, not a warning per step: the trainer warns once per phase.
            tracing::debug!(
                "step {step}: dynamic sampling hit its retry cap ({}); training on {} of {} groups",
                s.max_retries,
                kept.len(),
                prompts
            );
            break;
        }
        m.retries += 1;
    }
    let n_done = totals.len().max(1) as f64;
    let ts = mean_std(&totals);
    m.reward_mean = ts.mean;
    m.reward_std = ts.std;
    for (label, xs) in rewards.labels().into_iter().zip(&term_scores) {
        m.terms.insert(label, mean_std(xs));
    }
    m.zero_std_frac = zero_std as f64 / m.groups_sampled.max(1) as f64;
    m.completion_len_mean = lens as f64 / n_done;
    m.truncated_frac = truncated as f64 / n_done;
    m.tokens_per_s = if m.rollout_s > 0.0 {
        tokens as f64 / m.rollout_s
    } else {
        0.0
    };
    m.groups_trained = kept.len();

    // Update.
    let t_up = Instant::now();
    let flat: Vec<f32> = kept
        .iter()
        .flat_map(|k| k.rewards.iter().copied())
        .collect();
    let adv = advantages(&flat, g, s.advantage, ADV_EPS)?;
    let mut inputs: Vec<PolicyInput> = Vec::with_capacity(flat.len());
    let mut comps: Vec<Vec<u32>> = Vec::with_capacity(flat.len());
    let mut keep_row: Vec<f32> = Vec::with_capacity(flat.len());
    for grp in &kept {
        let input = policy_input(&grp.sample);
        for c in &grp.completions {
            inputs.push(input.clone());
            comps.push(c.tokens.clone());
            keep_row.push(if s.mask_truncated && c.truncated {
                0.0
            } else {
                1.0
            });
        }
    }
    let rows = comps.len();
    if rows == 0 || comps.iter().all(|c| c.is_empty()) {
        m.update_s = t_up.elapsed().as_secs_f64();
        return Ok(m);
    }
    // Rows in order of completion length, cut into micro-batches that are each padded only to
    // their own longest row. The loss is a sum over rows, so order and cuts change nothing but
    // the padding computed.
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by_key(|&i| comps[i].len());
    let inputs: Vec<PolicyInput> = order.iter().map(|&i| inputs[i].clone()).collect();
    let comps: Vec<Vec<u32>> = order.iter().map(|&i| comps[i].clone()).collect();
    let keep_row: Vec<f32> = order.iter().map(|&i| keep_row[i]).collect();
    let adv: Vec<f32> = order.iter().map(|&i| adv[i]).collect();
    let lens: Vec<usize> = comps.iter().map(Vec::len).collect();
    let batches = micro_batches(&lens, s.micro_batch as usize);
    // With one pass the rollout policy is the current policy: the ratio is exactly 1, so the
    // old log-probs are the detached current ones and need no extra forward.
    let mu = s.mu as usize;
    let old_all = if mu == 1 {
        None
    } else {
        Some(logprobs_in_chunks(policy, &inputs, &comps, &batches)?)
    };
    let ref_all = match (s.beta > 0.0, reference) {
        (true, Some(r)) => Some(logprobs_in_chunks(r, &inputs, &comps, &batches)?),
        _ => None,
    };
    // Every micro-batch's loss is scaled by its share of the batch's normaliser, so the
    // accumulated gradient is the whole batch's: micro_batch trades memory for nothing else.
    let denoms: Vec<f64> = (0..rows)
        .map(|i| {
            let tokens = comps[i].len() as f64 * keep_row[i] as f64;
            match s.loss_agg {
                LossAgg::TokenMean => tokens,
                LossAgg::SeqMeanTokenMean => (tokens > 0.0) as u8 as f64,
                LossAgg::SeqMeanTokenSumNorm => 1.0,
            }
        })
        .collect();
    let total: f64 = denoms.iter().sum();
    let (mut ent_sum, mut ent_tok) = (0.0, 0.0);
    let mut n_upd = 0usize;
    for epoch in 0..mu {
        let mut acc: Option<Vec<Option<Tensor>>> = None;
        let mut st_sum = PgStats::default();
        for &(a, len) in &batches {
            let share: f64 = denoms[a..a + len].iter().sum::<f64>() / total.max(1e-12);
            if share == 0.0 {
                continue;
            }
            let lp = policy.logprobs(&inputs[a..a + len], &comps[a..a + len])?;
            let dev = lp.logp.device().clone();
            let t = lp.logp.dim(1)?;
            let keep = Tensor::from_slice(&keep_row[a..a + len], (len, 1), &dev)?;
            let mask = lp.mask.to_dtype(DType::F32)?.broadcast_mul(&keep)?;
            let old = match &old_all {
                Some(o) => o.narrow(0, a, len)?.narrow(1, 0, t)?,
                None => lp.logp.detach(),
            };
            let rf = match &ref_all {
                Some(r) => Some(r.narrow(0, a, len)?.narrow(1, 0, t)?),
                None => None,
            };
            let adv_t = Tensor::from_slice(&adv[a..a + len], len, &dev)?;
            let (loss, st) = policy_loss(&lp.logp, &old, rf.as_ref(), &adv_t, &mask, &loss_cfg)?;
            if epoch == 0 {
                let tok = lp
                    .mask
                    .to_dtype(DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()? as f64;
                ent_sum += masked_mean(&lp.entropy, &lp.mask.to_dtype(DType::F32)?)? * tok;
                ent_tok += tok;
            }
            let l = st.loss;
            if !l.is_finite() {
                return Err(GrpoError::NonFinite {
                    step,
                    what: format!("loss ({l})"),
                });
            }
            let grads = opt.grads_of(&(loss * share)?.backward()?)?;
            match acc.as_mut() {
                None => acc = Some(grads),
                Some(sum) => AdamW::accumulate(sum, grads)?,
            }
            st_sum.loss += st.loss * share;
            st_sum.clip_frac_low += st.clip_frac_low * share;
            st_sum.clip_frac_high += st.clip_frac_high * share;
            st_sum.approx_kl += st.approx_kl * share;
            st_sum.ref_kl += st.ref_kl * share;
            st_sum.ratio_mean += st.ratio_mean * share;
        }
        let Some(grads) = acc else { continue };
        let os = opt.apply_grads(&grads, step)?;
        n_upd += 1;
        m.loss += st_sum.loss;
        m.clip_frac_low += st_sum.clip_frac_low;
        m.clip_frac_high += st_sum.clip_frac_high;
        m.approx_kl += st_sum.approx_kl;
        m.ref_kl += st_sum.ref_kl;
        m.ratio_mean += st_sum.ratio_mean;
        m.grad_norm += os.grad_norm;
    }
    let k = n_upd.max(1) as f64;
    for x in [
        &mut m.loss,
        &mut m.clip_frac_low,
        &mut m.clip_frac_high,
        &mut m.approx_kl,
        &mut m.ref_kl,
        &mut m.ratio_mean,
        &mut m.grad_norm,
    ] {
        *x /= k;
    }
    m.clip_frac = m.clip_frac_low + m.clip_frac_high;
    m.entropy = if ent_tok > 0.0 {
        ent_sum / ent_tok
    } else {
        0.0
    };
    m.optimizer_steps = n_upd;
    m.updated = n_upd > 0;
    m.update_s = t_up.elapsed().as_secs_f64();
    Ok(m)
}

/// Micro-batches `(first row, rows)` over rows sorted by length `lens`: at most `micro` rows
/// each, cut into 1, 2, 4 or 8 equal parts, whichever pads least. Each extra part is charged
/// 3 % of the padded tokens for its fixed costs (weights packed and gradients accumulated
/// once more, smaller matmuls), so cuts that save less padding than that are not made. On
/// the TRL side-by-side model at 128 new tokens, where completions end anywhere, the cuts
/// took the update from a median 7.6 s to 6.5 s with the same gradients.
pub fn micro_batches(lens: &[usize], micro: usize) -> Vec<(usize, usize)> {
    let rows = lens.len();
    let micro = micro.clamp(1, rows.max(1));
    let cuts = |parts: usize| -> Vec<(usize, usize)> {
        let size = rows.div_ceil(parts.max(rows.div_ceil(micro)));
        (0..rows)
            .step_by(size)
            .map(|a| (a, size.min(rows - a)))
            .collect()
    };
    let cost = |b: &[(usize, usize)]| -> f64 {
        let padded: usize = b.iter().map(|&(a, n)| n * lens[a + n - 1]).sum();
        padded as f64 * (1.0 + 0.03 * (b.len() - 1) as f64)
    };
    [1, 2, 4, 8]
        .into_iter()
        .filter(|&p| p <= rows.max(1))
        .map(cuts)
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .unwrap_or_default()
}

/// Detached log-probs of every row, computed one micro-batch at a time and padded to one
/// width.
fn logprobs_in_chunks<P: PolicyModel + ?Sized>(
    policy: &P,
    inputs: &[PolicyInput],
    comps: &[Vec<u32>],
    batches: &[(usize, usize)],
) -> Result<Tensor, GrpoError> {
    let width = comps.iter().map(Vec::len).max().unwrap_or(0);
    let mut parts = Vec::new();
    for &(a, len) in batches {
        let lp = policy
            .logprobs(&inputs[a..a + len], &comps[a..a + len])?
            .logp
            .detach();
        let t = lp.dim(1)?;
        parts.push(if t < width {
            lp.pad_with_zeros(1, 0, width - t)?
        } else {
            lp
        });
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// What one SFT step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SftStats {
    pub loss: f64,
    pub tokens: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// One SFT update: cross-entropy of the target completions (tokenised traces) given the
/// inputs, through the same optimiser, schedule and checks as GRPO.
pub fn sft_step<P: PolicyModel + ?Sized>(
    policy: &P,
    opt: &mut AdamW,
    inputs: &[PolicyInput],
    targets: &[Vec<u32>],
    step: u64,
) -> Result<SftStats, GrpoError> {
    if inputs.len() != targets.len() {
        return Err(GrpoError::Config(format!(
            "{} SFT inputs for {} targets",
            inputs.len(),
            targets.len()
        )));
    }
    let lp = policy.logprobs(inputs, targets)?;
    let mask = lp.mask.to_dtype(DType::F32)?;
    let loss = sft_loss(&lp.logp, &mask)?;
    let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let os = opt.backward_step(&loss, step)?;
    Ok(SftStats {
        loss: l,
        tokens: mask.sum_all()?.to_scalar::<f32>()? as f64,
        lr: os.lr,
        grad_norm: os.grad_norm,
    })
}

#[cfg(test)]
mod tests {
    use super::micro_batches;

    #[test]
    fn micro_batches_cut_only_where_padding_pays() {
        // Equal lengths: no cut is worth its cost.
        assert_eq!(micro_batches(&[32; 128], 128), vec![(0, 128)]);
        // Lengths spread evenly over 1..=128: eight parts pad (16·16 + 16·32 + … + 16·128)
        // = 9,216 tokens against 16,384 for one, well past the 21 % charged for seven cuts.
        let spread: Vec<usize> = (1..=128).collect();
        let b = micro_batches(&spread, 128);
        assert_eq!(b.len(), 8);
        assert_eq!(b[0], (0, 16));
        assert_eq!(b[7], (112, 16));
        // The configured micro-batch is a ceiling the cuts never exceed.
        let b = micro_batches(&[32; 100], 30);
        assert_eq!(b, vec![(0, 25), (25, 25), (50, 25), (75, 25)]);
        assert!(micro_batches(&[5; 3], 1).iter().all(|&(_, n)| n == 1));
        // Every row lands in exactly one batch, in order.
        let b = micro_batches(&spread[..37], 128);
        let mut next = 0;
        for (a, n) in b {
            assert_eq!(a, next);
            next += n;
        }
        assert_eq!(next, 37);
    }
}
