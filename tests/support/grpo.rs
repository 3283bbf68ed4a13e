//! The GRPO learning check the built-in model and the Qwen-VL checkpoints share: a short SFT
//! warm-up teaches the answer format but not the answer (every prompt paired with `\boxed{1}`
//! … `\boxed{4}` equally), then GRPO with the `accuracy` reward on its own AdamW at lr 1e-3
//! (at 2e-3, or reusing the SFT moments, the nano model sometimes collapsed into repeating one
//! token within a few steps: an Adam step of ~lr per parameter is large next to weights of
//! scale 0.02), then greedy decoding of the first four samples.

use curric::data::Sample;
use curric::grpo::{grpo_step, sft_step, AdamW, AdamWConfig, GrpoConfig, LrSchedule};
use curric::model::{Policy, PolicyModel};
use curric::reward::{build, RewardSet};
use curric::rollout::{greedy_eval, policy_input, SeedCtx};
use curric::spec::GrpoSettings;

/// The sampled mean reward of every GRPO step, and the greedy accuracy after the last.
pub struct Outcome {
    pub curve: Vec<f64>,
    pub greedy: f32,
}

/// Warms `policy` up on samples 0–3 of `sample`, then runs `steps` GRPO steps drawing
/// `sample(0)`, `sample(1)`, … in turn.
pub fn warm_up_then_grpo(policy: &Policy, sample: impl Fn(usize) -> Sample, steps: u64) -> Outcome {
    let eos = policy.eos_token();
    let mut opt = AdamW::new(
        policy.trainable_vars(),
        AdamWConfig {
            schedule: LrSchedule::constant(2e-3),
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for p in 0..4 {
        for d in ["1", "2", "3", "4"] {
            inputs.push(policy_input(&sample(p)));
            let mut t = policy.encode(&format!("\\boxed{{{d}}}")).unwrap();
            t.push(eos);
            targets.push(t);
        }
    }
    for step in 0..30 {
        sft_step(policy, &mut opt, &inputs, &targets, step).unwrap();
    }

    let mut opt = AdamW::new_named(
        policy.named_trainable_vars(),
        AdamWConfig {
            schedule: LrSchedule::constant(1e-3),
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut acc = serde_json::Map::new();
    acc.insert("extract".into(), "boxed".into());
    acc.insert("compare".into(), "numeric".into());
    acc.insert("tolerance".into(), 1e-6.into());
    let mut rewards = RewardSet::new();
    rewards.push(1.0, build("accuracy", &acc).unwrap());
    let cfg = GrpoConfig {
        settings: GrpoSettings {
            group_size: 8,
            prompts_per_step: 4,
            micro_batch: 32,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 6,
            beta: 0.0,
            ..Default::default()
        },
        seed: 5,
        phase: 0,
    };
    let mut next = 0usize;
    let mut draw = |k: usize| {
        let out: Vec<Sample> = (next..next + k).map(&sample).collect();
        next += k;
        out
    };
    let mut curve = Vec::new();
    for step in 0..steps {
        let m = grpo_step(policy, None, &mut opt, &rewards, &cfg, step, &mut draw).unwrap();
        for x in [
            m.loss,
            m.grad_norm,
            m.entropy,
            m.completion_len_mean,
            m.tokens_per_s,
        ] {
            assert!(x.is_finite(), "step {step}: {m:?}");
        }
        curve.push(m.reward_mean);
    }
    let evals: Vec<Sample> = (0..4).map(&sample).collect();
    let ctx = SeedCtx {
        seed: 0,
        phase: 0,
        step: 0,
    };
    let (groups, _) = greedy_eval(policy, &evals, 6, &rewards, ctx).unwrap();
    let greedy = groups.iter().map(|g| g.rewards[0]).sum::<f32>() / 4.0;
    Outcome { curve, greedy }
}
