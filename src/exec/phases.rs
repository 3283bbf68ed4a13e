//! What a step of each phase kind does, as [`PhaseTrainer`]s over the policy, the sampler,
//! the reward set and the optimiser: sft (cross-entropy on traces), grpo (one GRPO step),
//! probe (K rollouts per sample into the pass-rate table), and the greedy held-out eval used
//! by eval phases and by eval checks inside stop conditions.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;

use super::checkpoint::{CheckpointState, OPTIMIZER_FILE};
use super::driver::{PhaseTrainer, StepOutcome, TrainerState};
use super::error::{ExecError, Result};
use super::eval::{EvalResult, Outcome};
use super::metrics::keys;
use crate::data::{PassRateTable, Sample, Sampler, SamplerState};
use crate::grpo::{grpo_step, sft_step, AdamW, GrpoConfig};
use crate::model::{Policy, PolicyModel, SamplingParams};
use crate::reward::RewardSet;
use crate::rollout::{greedy_eval, policy_input, rollout, SeedCtx};

fn err(phase: &str, e: impl std::fmt::Display) -> ExecError {
    ExecError::Phase {
        phase: phase.to_string(),
        message: e.to_string(),
    }
}

/// Epochs done by a sampler: samples drawn over samples kept, across its sources.
pub fn sampler_epochs(s: &Sampler) -> f64 {
    let (mut drawn, mut size) = (0u64, 0u64);
    for p in s.progress() {
        drawn += p.drawn;
        size += p.size as u64;
    }
    if size == 0 {
        0.0
    } else {
        drawn as f64 / size as f64
    }
}

/// The held-out eval a stop condition asks for (`eval(threshold, every)`), as metrics; none
/// when the phase's stop condition has no eval.
fn stop_eval(
    eval: Option<&(EvalSet, SeedCtx)>,
    phase: &str,
    policy: &Policy,
    step: u64,
) -> Result<BTreeMap<String, f64>> {
    match eval {
        Some((set, ctx)) => Ok(set
            .run(phase, policy, SeedCtx { step, ..*ctx }, step)?
            .as_metrics()),
        None => Ok(BTreeMap::new()),
    }
}

/// Writes the policy's files and the optimiser's moments.
pub fn save_policy(phase: &str, policy: &Policy, opt: Option<&AdamW>, dir: &Path) -> Result<()> {
    policy.save(dir).map_err(|e| err(phase, e))?;
    if let Some(opt) = opt {
        let state = opt.state().map_err(|e| err(phase, e))?;
        candle_core::safetensors::save(&state, dir.join(OPTIMIZER_FILE))
            .map_err(|e| err(phase, e))?;
    }
    Ok(())
}

/// Overwrites the policy's variables in place with a checkpoint's weights (so an optimiser
/// built over them stays attached), and the optimiser's moments when it has some.
pub fn restore_policy(
    phase: &str,
    policy: &Policy,
    opt: Option<&mut AdamW>,
    dir: &Path,
) -> Result<()> {
    let device = policy.device().clone();
    policy
        .load_weights(dir)
        .map_err(|e| err(phase, format!("checkpoint {}: {e}", dir.display())))?;
    if let Some(opt) = opt {
        let path = dir.join(OPTIMIZER_FILE);
        if path.exists() {
            let state: HashMap<String, Tensor> =
                candle_core::safetensors::load(&path, &device).map_err(|e| err(phase, e))?;
            opt.load_state(&state).map_err(|e| err(phase, e))?;
        } else {
            opt.refresh_master().map_err(|e| err(phase, e))?;
        }
    }
    Ok(())
}

fn sampler_state(s: &Sampler) -> serde_json::Value {
    serde_json::to_value(s.state()).unwrap_or_default()
}

/// A phase's sampler with the pools it was built from, so that it can be rebuilt from a
/// checkpoint's cursor.
pub struct Data {
    pub sampler: Sampler,
    pub pools: Vec<(String, Vec<Sample>)>,
}

impl Data {
    pub fn new(
        phase: &str,
        spec: crate::data::SamplerSpec,
        pools: Vec<(String, Vec<Sample>)>,
    ) -> Result<Self> {
        let sampler = Sampler::new(spec, pools.clone()).map_err(|e| err(phase, e))?;
        Ok(Data { sampler, pools })
    }

    fn resume(&mut self, phase: &str, state: &serde_json::Value) -> Result<()> {
        let st: SamplerState = serde_json::from_value(state.clone())
            .map_err(|e| err(phase, format!("sampler state in checkpoint: {e}")))?;
        self.sampler = Sampler::resume(self.sampler.spec().clone(), self.pools.clone(), st)
            .map_err(|e| err(phase, e))?;
        Ok(())
    }
}

const EVAL_CHUNK: usize = 32;

/// Held-out evaluation: greedy decoding (or one sample each), graded by `rewards`'
/// `accuracy` term (or, without one, by the total reward) against `pass_threshold`.
pub struct EvalSet {
    pub samples: Vec<Sample>,
    pub rewards: RewardSet,
    pub max_new_tokens: usize,
    /// Greedy decoding; otherwise one sample at temperature 1 (seeded per sample).
    pub greedy: bool,
    /// A sample is correct when its accuracy term (else its reward) is ≥ this.
    pub pass_threshold: f64,
}

impl EvalSet {
    pub fn run(
        &self,
        phase: &str,
        policy: &Policy,
        ctx: SeedCtx,
        global_step: u64,
    ) -> Result<EvalResult> {
        Ok(self
            .run_with_completions(phase, policy, ctx, global_step)?
            .0)
    }

    /// The result and, per sample, a JSON record of what the policy answered.
    pub fn run_with_completions(
        &self,
        phase: &str,
        policy: &Policy,
        ctx: SeedCtx,
        global_step: u64,
    ) -> Result<(EvalResult, Vec<serde_json::Value>)> {
        let acc = self.rewards.labels().iter().position(|l| l == "accuracy");
        let mut outcomes = Vec::with_capacity(self.samples.len());
        let mut records = Vec::with_capacity(self.samples.len());
        let threshold = self.pass_threshold as f32;
        // Chunks bound the batch's memory; greedy decoding, or seeds drawn per sample index,
        // make the result independent of them.
        for (c, chunk) in self.samples.chunks(EVAL_CHUNK).enumerate() {
            let (groups, _) = if self.greedy {
                greedy_eval(policy, chunk, self.max_new_tokens, &self.rewards, ctx)
            } else {
                let params = SamplingParams {
                    temperature: 1.0,
                    top_p: 1.0,
                    max_new_tokens: self.max_new_tokens,
                };
                rollout(
                    policy,
                    chunk,
                    1,
                    &params,
                    &self.rewards,
                    ctx,
                    c * EVAL_CHUNK,
                )
            }
            .map_err(|e| err(phase, e))?;
            for g in groups {
                let correct = match acc {
                    Some(i) => g.terms[0].get(i).copied().unwrap_or(0.0) >= threshold,
                    None => g.rewards[0] >= threshold,
                };
                records.push(serde_json::json!({
                    "id": g.sample.id,
                    "problem": g.sample.problem,
                    "answer": g.sample.answer,
                    "completion": g.completions[0].text,
                    "reward": g.rewards[0],
                    "correct": correct,
                }));
                outcomes.push(Outcome {
                    capability: g.sample.capability.to_string(),
                    level: g.sample.difficulty.map(|l| l.to_string()),
                    correct,
                    length: g.completions[0].tokens.len(),
                });
            }
        }
        Ok((
            EvalResult::from_outcomes(phase, global_step, &outcomes),
            records,
        ))
    }
}

/// What every weight-training phase carries besides its step: the policy, its optimiser, its
/// data and the eval its stop condition may ask for. Evaluating, saving and resuming are the
/// learner's, the same for sft and grpo.
pub struct Learner {
    pub phase: String,
    pub policy: Policy,
    pub opt: AdamW,
    pub data: Data,
    pub eval: Option<(EvalSet, SeedCtx)>,
}

impl Learner {
    fn eval(&self, step: u64) -> Result<BTreeMap<String, f64>> {
        stop_eval(self.eval.as_ref(), &self.phase, &self.policy, step)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save_policy(&self.phase, &self.policy, Some(&self.opt), dir)
    }

    fn state(&self) -> TrainerState {
        TrainerState {
            sampler: sampler_state(&self.data.sampler),
            ..Default::default()
        }
    }

    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()> {
        restore_policy(&self.phase, &self.policy, Some(&mut self.opt), dir)?;
        self.data.resume(&self.phase, &state.sampler)
    }
}

/// Supervised warm-up on the samples' reference traces.
pub struct SftTrainer {
    pub learner: Learner,
    pub max_tokens: usize,
}

impl PhaseTrainer for SftTrainer {
    fn step(&mut self, step: u64) -> Result<StepOutcome> {
        let t0 = Instant::now();
        let samples = self.learner.data.sampler.next_step_samples();
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        for s in &samples {
            let Some(trace) = &s.trace else { continue };
            let mut ids = self
                .learner
                .policy
                .encode(trace)
                .map_err(|e| err(&self.learner.phase, e))?;
            ids.truncate(self.max_tokens.saturating_sub(1).max(1));
            ids.push(self.learner.policy.eos_token());
            inputs.push(policy_input(s));
            targets.push(ids);
        }
        if inputs.is_empty() {
            return Err(err(
                &self.learner.phase,
                "no sample of this step has a reference trace to train on",
            ));
        }
        let st = sft_step(
            &self.learner.policy,
            &mut self.learner.opt,
            &inputs,
            &targets,
            step,
        )
        .map_err(|e| err(&self.learner.phase, e))?;
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        Ok(StepOutcome {
            metrics: [
                (keys::LOSS.to_string(), st.loss),
                (keys::LR.to_string(), st.lr),
                ("grad_norm".to_string(), st.grad_norm),
                (keys::TOKENS_PER_S.to_string(), st.tokens / secs),
                ("sft_samples".to_string(), inputs.len() as f64),
            ]
            .into(),
            samples: samples.len() as u64,
            epochs: sampler_epochs(&self.learner.data.sampler),
        })
    }

    fn eval(&mut self, step: u64) -> Result<BTreeMap<String, f64>> {
        self.learner.eval(step)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.learner.save(dir)
    }

    fn state(&self) -> TrainerState {
        self.learner.state()
    }

    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()> {
        self.learner.restore(dir, state)
    }
}

/// GRPO on the phase's sampler and reward set.
pub struct GrpoTrainer {
    pub learner: Learner,
    pub reference: Option<Policy>,
    pub rewards: RewardSet,
    pub cfg: GrpoConfig,
    pub pass_rates: PassRateTable,
    /// Steps of this run of the phase whose dynamic sampling hit its retry cap.
    pub retry_cap_hits: u64,
}

impl PhaseTrainer for GrpoTrainer {
    fn step(&mut self, step: u64) -> Result<StepOutcome> {
        let mut drawn = 0u64;
        let mut first = true;
        let sampler = &mut self.learner.data.sampler;
        let draw = |n: usize| {
            let out = if first {
                first = false;
                sampler.next_step_samples()
            } else {
                let d = sampler.draw(n);
                d.iter().map(|x| sampler.sample(x).clone()).collect()
            };
            drawn += out.len() as u64;
            out
        };
        let reference = self.reference.as_ref().map(|r| r as &dyn PolicyModel);
        let m = grpo_step(
            &self.learner.policy,
            reference,
            &mut self.learner.opt,
            &self.rewards,
            &self.cfg,
            step,
            draw,
        )
        .map_err(|e| err(&self.learner.phase, e))?;
        self.learner.data.sampler.feedback(m.reward_mean);
        if m.retry_cap_hit {
            self.retry_cap_hits += 1;
            if self.retry_cap_hits == 1 {
                tracing::warn!(
                    phase = %self.learner.phase,
                    "step {step}: dynamic sampling hit its retry cap ({}) and trained on fewer \
                     groups than asked; later hits are counted in the `retry_cap_hits` metric",
                    self.cfg.settings.max_retries
                );
            }
        }
        // Online pass rates: a rollout passes as in a probe phase (reward ≥ pass_threshold),
        // so later phases can order and filter by what this one saw.
        let threshold = self.cfg.settings.pass_threshold as f32;
        for (id, rewards) in &m.group_rewards {
            let passed = rewards.iter().filter(|r| **r >= threshold).count();
            self.pass_rates
                .record(id, passed as u64, rewards.len() as u64, step)
                .map_err(|e| err(&self.learner.phase, e))?;
        }
        let mut metrics: BTreeMap<String, f64> = [
            (keys::REWARD.to_string(), m.reward_mean),
            ("reward_std".to_string(), m.reward_std),
            (keys::ZERO_STD_FRAC.to_string(), m.zero_std_frac),
            (keys::KL.to_string(), m.ref_kl),
            (keys::ENTROPY.to_string(), m.entropy),
            (keys::CLIP_FRAC.to_string(), m.clip_frac),
            (keys::COMPLETION_LEN.to_string(), m.completion_len_mean),
            (keys::LOSS.to_string(), m.loss),
            (keys::LR.to_string(), m.lr),
            ("grad_norm".to_string(), m.grad_norm),
            (keys::TOKENS_PER_S.to_string(), m.tokens_per_s),
            ("truncated_frac".to_string(), m.truncated_frac),
            ("dropped_groups".to_string(), m.dropped_groups as f64),
            ("groups_trained".to_string(), m.groups_trained as f64),
            ("retries".to_string(), m.retries as f64),
            ("retry_cap_hits".to_string(), self.retry_cap_hits as f64),
            // What compute-matching counts: every completion sampled, retries included.
            (
                "rollouts".to_string(),
                (drawn * self.cfg.settings.group_size) as f64,
            ),
            ("time/rollout_s".to_string(), m.rollout_s),
            ("time/reward_s".to_string(), m.reward_s),
            ("time/update_s".to_string(), m.update_s),
        ]
        .into();
        for (term, s) in &m.terms {
            metrics.insert(format!("{}{term}", keys::REWARD_PREFIX), s.mean);
            if term == "accuracy" {
                metrics.insert(keys::ACCURACY.to_string(), s.mean);
            }
        }
        Ok(StepOutcome {
            metrics,
            samples: drawn,
            epochs: sampler_epochs(&self.learner.data.sampler),
        })
    }

    fn eval(&mut self, step: u64) -> Result<BTreeMap<String, f64>> {
        self.learner.eval(step)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.learner.save(dir)
    }

    fn state(&self) -> TrainerState {
        TrainerState {
            pass_rates: serde_json::to_value(&self.pass_rates).unwrap_or_default(),
            ..self.learner.state()
        }
    }

    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()> {
        self.learner.restore(dir, state)?;
        if !state.pass_rates.is_null() {
            self.pass_rates = serde_json::from_value(state.pass_rates.clone())
                .map_err(|e| err(&self.learner.phase, e))?;
        }
        Ok(())
    }
}

/// K rollouts per sample; a rollout passes when its reward reaches the threshold. Fills the
/// pass-rate table that later phases order and filter by.
pub struct ProbeTrainer {
    pub phase: String,
    pub policy: Policy,
    pub data: Data,
    pub rewards: RewardSet,
    /// Samples probed per step.
    pub batch: usize,
    pub k: usize,
    pub params: crate::model::SamplingParams,
    pub threshold: f64,
    pub ctx: SeedCtx,
    pub pass_rates: PassRateTable,
}

impl PhaseTrainer for ProbeTrainer {
    fn step(&mut self, step: u64) -> Result<StepOutcome> {
        let t0 = Instant::now();
        // Stop at the epoch's end, so that one epoch probes every sample exactly once.
        let (mut drawn, mut size) = (0u64, 0u64);
        for p in self.data.sampler.progress() {
            drawn += p.drawn;
            size += p.size as u64;
        }
        let left = if size == 0 { 0 } else { size - drawn % size };
        let k = (self.batch as u64).min(left).max(1) as usize;
        let picks = self.data.sampler.next_step_of(k);
        let samples: Vec<Sample> = picks
            .iter()
            .map(|d| self.data.sampler.sample(d).clone())
            .collect();
        let ctx = SeedCtx { step, ..self.ctx };
        let (groups, times) = rollout(
            &self.policy,
            &samples,
            self.k,
            &self.params,
            &self.rewards,
            ctx,
            0,
        )
        .map_err(|e| err(&self.phase, e))?;
        let mut passed = 0u64;
        let mut reward = 0.0;
        for g in &groups {
            let ok = g
                .rewards
                .iter()
                .filter(|r| **r as f64 >= self.threshold)
                .count() as u64;
            passed += ok;
            reward += g.rewards.iter().map(|r| *r as f64).sum::<f64>();
            self.pass_rates
                .record(&g.sample.id, ok, g.rewards.len() as u64, step)
                .map_err(|e| err(&self.phase, e))?;
        }
        let n = (groups.len() * self.k).max(1) as f64;
        Ok(StepOutcome {
            metrics: [
                ("pass_rate".to_string(), passed as f64 / n),
                ("rollouts".to_string(), (groups.len() * self.k) as f64),
                (keys::REWARD.to_string(), reward / n),
                (
                    keys::TOKENS_PER_S.to_string(),
                    times.tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                ),
            ]
            .into(),
            samples: samples.len() as u64,
            epochs: sampler_epochs(&self.data.sampler),
        })
    }

    fn eval(&mut self, _step: u64) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save_policy(&self.phase, &self.policy, None, dir)?;
        super::rundir::write_atomic(
            &dir.join("pass_rates.json"),
            self.pass_rates.to_json().as_bytes(),
        )
    }

    fn state(&self) -> TrainerState {
        TrainerState {
            sampler: sampler_state(&self.data.sampler),
            pass_rates: serde_json::to_value(&self.pass_rates).unwrap_or_default(),
            ..Default::default()
        }
    }

    fn restore(&mut self, dir: &Path, state: &CheckpointState) -> Result<()> {
        restore_policy(&self.phase, &self.policy, None, dir)?;
        self.data.resume(&self.phase, &state.sampler)?;
        self.pass_rates =
            serde_json::from_value(state.pass_rates.clone()).map_err(|e| err(&self.phase, e))?;
        Ok(())
    }
}
