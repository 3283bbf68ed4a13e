//! One GRPO step (rollout → rewards → advantages → μ clipped-surrogate updates) and one SFT
//! step, with the metrics a trainer logs.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    advantages, masked_mean, policy_loss, sft_loss, AdamW, AdvantageMode, GrpoError, LossConfig,
};
use crate::data::Sample;
use crate::model::{PolicyInput, PolicyModel, SamplingParams};
use crate::reward::RewardSet;
use crate::rollout::{policy_input, rollout, Group, SeedCtx};

/// Settings of a GRPO phase.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoConfig {
    /// G: completions per prompt.
    pub group_size: usize,
    /// Groups per update batch (after dynamic sampling).
    pub prompts_per_step: usize,
    pub sampling: SamplingParams,
    pub advantage: AdvantageMode,
    /// Added to the std in the advantage denominator.
    pub adv_eps: f64,
    pub loss: LossConfig,
    /// μ: passes over each rollout batch.
    pub ppo_epochs: usize,
    /// Optimiser steps per pass: the batch is split into this many mini-batches of rows.
    pub mini_batches: usize,
    /// Give truncated completions (no EOS within max_new_tokens) no loss at all.
    pub mask_truncated: bool,
    /// Drop zero-std groups and draw more prompts until the batch is full.
    pub dynamic_sampling: bool,
    /// How many extra draws dynamic sampling may make per step.
    pub max_retries: usize,
    /// Curriculum seed and phase key (see `rollout::mix_seed`).
    pub seed: u64,
    pub phase: u64,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            group_size: 8,
            prompts_per_step: 16,
            sampling: SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                max_new_tokens: 64,
            },
            advantage: AdvantageMode::Group,
            adv_eps: 1e-6,
            loss: LossConfig::default(),
            ppo_epochs: 1,
            mini_batches: 1,
            mask_truncated: false,
            dynamic_sampling: false,
            max_retries: 4,
            seed: 0,
            phase: 0,
        }
    }
}

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

fn validate(cfg: &GrpoConfig, has_ref: bool) -> Result<(), GrpoError> {
    let bad = |m: &str| Err(GrpoError::Config(m.into()));
    if cfg.group_size == 0 {
        return bad("group_size must be at least 1");
    }
    if cfg.prompts_per_step == 0 {
        return bad("prompts_per_step must be at least 1");
    }
    if cfg.ppo_epochs == 0 {
        return bad("ppo_epochs (μ) must be at least 1");
    }
    if cfg.mini_batches == 0 {
        return bad("mini_batches must be at least 1");
    }
    if cfg.loss.beta < 0.0 || !cfg.loss.beta.is_finite() {
        return bad("beta must be a finite number >= 0");
    }
    if cfg.loss.beta > 0.0 && !has_ref {
        return Err(GrpoError::MissingReference {
            beta: cfg.loss.beta,
        });
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
    validate(cfg, reference.is_some())?;
    let ctx = SeedCtx {
        seed: cfg.seed,
        phase: cfg.phase,
        step,
    };
    let g = cfg.group_size;
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
        let need = cfg.prompts_per_step - kept.len();
        let mut samples = draw(need);
        samples.truncate(need);
        if samples.is_empty() {
            m.data_exhausted = true;
            break;
        }
        let (groups, t) = rollout(policy, &samples, g, &cfg.sampling, rewards, ctx, drawn)?;
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
                if cfg.dynamic_sampling {
                    m.dropped_groups += 1;
                    continue;
                }
            }
            kept.push(grp);
        }
        if !cfg.dynamic_sampling || kept.len() >= cfg.prompts_per_step {
            break;
        }
        if m.retries >= cfg.max_retries {
            m.retry_cap_hit = true;
            // A metric, not a warning per step: the trainer warns once per phase.
            tracing::debug!(
                "step {step}: dynamic sampling hit its retry cap ({}); training on {} of {} groups",
                cfg.max_retries,
                kept.len(),
                cfg.prompts_per_step
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
    let adv = advantages(&flat, g, cfg.advantage, cfg.adv_eps)?;
    let mut inputs: Vec<PolicyInput> = Vec::with_capacity(flat.len());
    let mut comps: Vec<Vec<u32>> = Vec::with_capacity(flat.len());
    let mut keep_row: Vec<f32> = Vec::with_capacity(flat.len());
    for grp in &kept {
        let input = policy_input(&grp.sample);
        for c in &grp.completions {
            inputs.push(input.clone());
            comps.push(c.tokens.clone());
            keep_row.push(if cfg.mask_truncated && c.truncated {
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
    // With one pass and one mini-batch the rollout policy is the current policy: the ratio is
    // exactly 1, so the old log-probs are the detached current ones and need no extra forward.
    let on_policy = cfg.ppo_epochs == 1 && cfg.mini_batches == 1;
    let old_all = if on_policy {
        None
    } else {
        Some(policy.logprobs(&inputs, &comps)?.logp.detach())
    };
    let ref_all = match (cfg.loss.beta > 0.0, reference) {
        (true, Some(r)) => Some(r.logprobs(&inputs, &comps)?.logp.detach()),
        _ => None,
    };
    let chunk = rows.div_ceil(cfg.mini_batches);
    let (mut ent_sum, mut ent_tok) = (0.0, 0.0);
    let mut n_upd = 0usize;
    for epoch in 0..cfg.ppo_epochs {
        for a in (0..rows).step_by(chunk) {
            let len = chunk.min(rows - a);
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
            let (loss, st) = policy_loss(&lp.logp, &old, rf.as_ref(), &adv_t, &mask, &cfg.loss)?;
            if epoch == 0 {
                let tok = lp
                    .mask
                    .to_dtype(DType::F32)?
                    .sum_all()?
                    .to_scalar::<f32>()? as f64;
                ent_sum += masked_mean(&lp.entropy, &lp.mask.to_dtype(DType::F32)?)? * tok;
                ent_tok += tok;
            }
            let os = opt.backward_step(&loss, step)?;
            n_upd += 1;
            m.loss += st.loss;
            m.clip_frac_low += st.clip_frac_low;
            m.clip_frac_high += st.clip_frac_high;
            m.approx_kl += st.approx_kl;
            m.ref_kl += st.ref_kl;
            m.ratio_mean += st.ratio_mean;
            m.grad_norm += os.grad_norm;
        }
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
