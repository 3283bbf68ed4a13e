//! The GRPO step driver on a toy policy: a table of logits per (prompt, position) over a
//! four-token vocabulary ("1", "2", "3", EOS), scored by the real `accuracy` reward.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor, Var, D};
use curric::data::{Capability, Sample};
use curric::grpo::{grpo_step, sft_step, AdamW, AdamWConfig, GrpoConfig, GrpoError, LrSchedule};
use curric::model::{Completion, PolicyInput, PolicyModel, SamplingParams, TokenLogProbs};
use curric::reward::{build, RewardSet};
use curric::rollout::{greedy_eval, rollout, SeedCtx};
use curric::spec::{AdvantageScaling, GrpoSettings, LossAgg};
use rand::{Rng, SeedableRng};

const V: usize = 4;
const EOS: u32 = 3;
const WORDS: [&str; 3] = ["1", "2", "3"];

struct Toy {
    /// [prompts, positions, V]
    table: Var,
    positions: usize,
    /// When set, row i of a generate call emits "1" if i % n == 0 else "2" (then EOS),
    /// whatever the seed: groups whose answer is "1" are informative, others are not.
    scripted: Option<usize>,
    /// The most rows one `logprobs` call was asked for: what a forward/backward holds.
    max_rows: std::cell::Cell<usize>,
}

impl Toy {
    fn new(prompts: usize, positions: usize) -> Self {
        let t = Tensor::zeros((prompts, positions, V), DType::F32, &Device::Cpu).unwrap();
        Toy {
            table: Var::from_tensor(&t).unwrap(),
            positions,
            scripted: None,
            max_rows: std::cell::Cell::new(0),
        }
    }

    fn prompt_index(input: &PolicyInput) -> usize {
        input.prompt.trim_start_matches('p').parse().unwrap()
    }

    fn text(tokens: &[u32]) -> String {
        tokens
            .iter()
            .filter(|&&t| t != EOS)
            .map(|&t| WORDS[t as usize])
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl PolicyModel for Toy {
    fn generate(
        &self,
        inputs: &[PolicyInput],
        params: &SamplingParams,
        seeds: &[u64],
    ) -> candle_core::Result<Vec<Completion>> {
        let table: Vec<Vec<Vec<f32>>> = self.table.as_tensor().to_vec3()?;
        let mut out = Vec::new();
        for (i, (inp, &seed)) in inputs.iter().zip(seeds).enumerate() {
            if let Some(n) = self.scripted {
                let tokens = vec![if i % n == 0 { 0 } else { 1 }, EOS];
                out.push(Completion {
                    text: Toy::text(&tokens),
                    tokens,
                    truncated: false,
                });
                continue;
            }
            let p = Toy::prompt_index(inp);
            if params.temperature == 0.0 {
                // Greedy: the argmax at every position.
                let mut tokens = Vec::new();
                for logits in table[p]
                    .iter()
                    .take(params.max_new_tokens.min(self.positions))
                {
                    let best = (0..V).fold(0, |b, k| if logits[k] > logits[b] { k } else { b });
                    tokens.push(best as u32);
                    if best as u32 == EOS {
                        break;
                    }
                }
                let truncated = tokens.last() != Some(&EOS);
                out.push(Completion {
                    text: Toy::text(&tokens),
                    tokens,
                    truncated,
                });
                continue;
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut tokens = Vec::new();
            let max = params.max_new_tokens.min(self.positions);
            for logits in table[p].iter().take(max) {
                let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let w: Vec<f32> = logits
                    .iter()
                    .map(|l| ((l - mx) / params.temperature as f32).exp())
                    .collect();
                let mut u = rng.random::<f32>() * w.iter().sum::<f32>();
                let mut tok = V - 1;
                for (k, wk) in w.iter().enumerate() {
                    if u < *wk {
                        tok = k;
                        break;
                    }
                    u -= wk;
                }
                tokens.push(tok as u32);
                if tok as u32 == EOS {
                    break;
                }
            }
            let truncated = tokens.last() != Some(&EOS);
            out.push(Completion {
                text: Toy::text(&tokens),
                tokens,
                truncated,
            });
        }
        Ok(out)
    }

    fn logprobs(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> candle_core::Result<TokenLogProbs> {
        let dev = Device::Cpu;
        self.max_rows.set(self.max_rows.get().max(inputs.len()));
        let t = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let idx: Vec<u32> = inputs.iter().map(|i| Toy::prompt_index(i) as u32).collect();
        let rows = self
            .table
            .as_tensor()
            .index_select(&Tensor::new(idx.as_slice(), &dev)?, 0)?
            .narrow(1, 0, t)?;
        let lsm = candle_nn::ops::log_softmax(&rows, D::Minus1)?;
        let b = completions.len();
        let mut ids = vec![0u32; b * t];
        let mut mask = vec![0f32; b * t];
        for (r, c) in completions.iter().enumerate() {
            for (k, &tok) in c.iter().enumerate() {
                ids[r * t + k] = tok;
                mask[r * t + k] = 1.0;
            }
        }
        let ids = Tensor::from_vec(ids, (b, t, 1), &dev)?;
        let logp = lsm
            .contiguous()?
            .gather(&ids, D::Minus1)?
            .squeeze(D::Minus1)?;
        let entropy = (lsm.exp()? * &lsm)?.sum(D::Minus1)?.neg()?.detach();
        Ok(TokenLogProbs {
            logp,
            entropy,
            mask: Tensor::from_vec(mask, (b, t), &dev)?,
        })
    }

    fn trainable_vars(&self) -> Vec<Var> {
        vec![self.table.clone()]
    }
}

fn sample(i: usize, answer: &str) -> Sample {
    Sample::new(
        format!("s{i}"),
        format!("p{i}"),
        answer,
        Capability::new(Capability::TEXT_REASONING),
    )
}

fn accuracy_set() -> RewardSet {
    let mut args = serde_json::Map::new();
    args.insert("extract".into(), "last_number".into());
    args.insert("compare".into(), "numeric".into());
    args.insert("tolerance".into(), 1e-6.into());
    let mut set = RewardSet::new();
    set.push(1.0, build("accuracy", &args).unwrap());
    set
}

fn cfg(g: u64, prompts: u64) -> GrpoConfig {
    GrpoConfig {
        settings: GrpoSettings {
            group_size: g,
            prompts_per_step: prompts,
            micro_batch: g * prompts,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 3,
            beta: 0.0,
            ..Default::default()
        },
        seed: 7,
        phase: 0,
    }
}

/// The toy policy's logit table, flattened.
fn weights(policy: &Toy) -> Vec<f32> {
    policy
        .table
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn opt(policy: &Toy, lr: f64) -> AdamW {
    AdamW::new(
        policy.trainable_vars(),
        AdamWConfig {
            schedule: LrSchedule::constant(lr),
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Cycles through prompts 0..n with answers "1", "2", "3", "1", ...
fn cycler(n: usize) -> impl FnMut(usize) -> Vec<Sample> {
    let mut next = 0usize;
    move |k| {
        (0..k)
            .map(|_| {
                let i = next % n;
                next += 1;
                sample(i, WORDS[i % 3])
            })
            .collect()
    }
}

fn learning_curve(advantage: AdvantageScaling, agg: LossAgg) -> Vec<f64> {
    let policy = Toy::new(4, 3);
    let mut opt = opt(&policy, 0.1);
    let rewards = accuracy_set();
    let mut c = cfg(8, 4);
    c.settings.advantage = advantage;
    c.settings.loss_agg = agg;
    let mut draw = cycler(4);
    let mut curve = Vec::new();
    for step in 0..40 {
        let m = grpo_step(&policy, None, &mut opt, &rewards, &c, step, &mut draw).unwrap();
        for x in [
            m.reward_mean,
            m.loss,
            m.entropy,
            m.grad_norm,
            m.clip_frac,
            m.approx_kl,
        ] {
            assert!(x.is_finite(), "step {step}: {m:?}");
        }
        assert!(
            (m.ratio_mean - 1.0).abs() < 1e-6 || !m.updated,
            "μ = 1 is on-policy"
        );
        assert!(m.tokens_per_s > 0.0 && m.lr == 0.1);
        curve.push(m.reward_mean);
    }
    curve
}

#[test]
fn grpo_teaches_the_toy_policy_its_answers() {
    for (adv, agg) in [
        (AdvantageScaling::Group, LossAgg::TokenMean),
        (AdvantageScaling::Batch, LossAgg::SeqMeanTokenMean),
        (AdvantageScaling::None, LossAgg::SeqMeanTokenSumNorm),
    ] {
        let curve = learning_curve(adv, agg);
        let first = curve[..3].iter().sum::<f64>() / 3.0;
        let last = curve[curve.len() - 3..].iter().sum::<f64>() / 3.0;
        println!("toy GRPO {adv:?}/{agg:?}: {first:.3} -> {last:.3}; {curve:.3?}");
        // Uniform logits: the last number equals the answer with probability ~0.3.
        assert!(first < 0.5, "{adv:?}/{agg:?} start {first}");
        assert!(last > 0.9, "{adv:?}/{agg:?} end {last} (curve {curve:?})");
    }
}

#[test]
fn same_seed_same_run_and_mu_two_moves_ratio() {
    let run = |mu: u64, micro: u64| {
        let policy = Toy::new(4, 3);
        let mut opt = opt(&policy, 0.1);
        let mut c = cfg(8, 4);
        c.settings.mu = mu;
        c.settings.micro_batch = micro;
        c.settings.eps_low = 0.2;
        c.settings.eps_high = 0.28;
        let mut draw = cycler(4);
        let mut ms = Vec::new();
        for step in 0..5 {
            ms.push(
                grpo_step(
                    &policy,
                    None,
                    &mut opt,
                    &accuracy_set(),
                    &c,
                    step,
                    &mut draw,
                )
                .unwrap(),
            );
        }
        let table = weights(&policy);
        (ms, table, opt.steps())
    };
    let (a, ta, _) = run(1, 32);
    let (b, tb, _) = run(1, 32);
    assert_eq!(ta, tb, "bit-identical with the same seed");
    assert_eq!(a[4].reward_mean, b[4].reward_mean);
    let (c, _, steps) = run(2, 8);
    // 5 steps × μ 2; micro-batches accumulate into one update per pass.
    assert_eq!(steps, 10);
    assert!(c.iter().all(|m| m.optimizer_steps == 2));
    // Later updates see a policy that moved since the rollout: ratio ≠ 1 somewhere.
    assert!(c.iter().any(|m| (m.ratio_mean - 1.0).abs() > 1e-4), "{c:?}");
    assert!(c
        .iter()
        .all(|m| m.approx_kl.is_finite() && m.clip_frac >= 0.0));
}

#[test]
fn micro_batches_accumulate_to_the_same_update_with_smaller_passes() {
    let start = || -> Vec<f32> { (0..4 * 3 * V).map(|i| ((i * 7) % 5) as f32 * 0.3).collect() };
    for agg in [
        LossAgg::TokenMean,
        LossAgg::SeqMeanTokenMean,
        LossAgg::SeqMeanTokenSumNorm,
    ] {
        let run = |micro: u64| {
            let policy = Toy::new(4, 3);
            // Uneven logits: completions of different lengths, some truncated.
            policy
                .table
                .set(&Tensor::from_vec(start(), (4, 3, V), &Device::Cpu).unwrap())
                .unwrap();
            let mut opt = opt(&policy, 0.1);
            let mut c = cfg(8, 4);
            c.settings.loss_agg = agg;
            c.settings.mask_truncated = true;
            c.settings.mu = 2;
            c.settings.micro_batch = micro;
            let mut draw = cycler(4);
            for step in 0..3 {
                grpo_step(
                    &policy,
                    None,
                    &mut opt,
                    &accuracy_set(),
                    &c,
                    step,
                    &mut draw,
                )
                .unwrap();
            }
            let w = weights(&policy);
            (w, policy.max_rows.get())
        };
        let (whole, rows_whole) = run(32);
        let (micro, rows_micro) = run(4);
        // Without a ceiling the rows may still be cut by completion length where that saves
        // padding (`grpo::micro_batches`), but into larger passes than the ceiling of 4.
        assert_eq!(rows_micro, 4, "{agg:?}");
        assert!(rows_whole > 4, "{agg:?}: {rows_whole} rows per pass");
        let moved = whole.iter().zip(start()).any(|(x, s)| (x - s).abs() > 1e-3);
        assert!(moved, "{agg:?}: the update changed nothing");
        for (a, b) in whole.iter().zip(&micro) {
            assert!((a - b).abs() < 1e-4, "{agg:?}: {a} vs {b}");
        }
    }
}

#[test]
fn kl_to_a_frozen_reference() {
    let policy = Toy::new(4, 3);
    let reference = Toy::new(4, 3);
    let mut opt = opt(&policy, 0.1);
    let mut c = cfg(8, 4);
    c.settings.beta = 0.05;
    let mut draw = cycler(4);
    let rewards = accuracy_set();
    let err = grpo_step(&policy, None, &mut opt, &rewards, &c, 0, &mut draw).unwrap_err();
    assert!(matches!(err, GrpoError::MissingReference { .. }));
    let mut kls = Vec::new();
    for step in 0..10 {
        let m = grpo_step(
            &policy,
            Some(&reference),
            &mut opt,
            &rewards,
            &c,
            step,
            &mut draw,
        )
        .unwrap();
        kls.push(m.ref_kl);
    }
    // Identical at step 0, so KL 0; the policy then drifts away from the frozen reference.
    assert!(kls[0].abs() < 1e-6, "{kls:?}");
    assert!(kls[9] > 1e-3, "{kls:?}");
    let frozen = weights(&reference);
    assert!(
        frozen.iter().all(|&x| x == 0.0),
        "the reference never moves"
    );
}

/// Draws from a fixed script of answers, recording how many prompts each call asked for.
fn scripted_draw<'a>(
    answers: &'a [&'a str],
    asked: &'a RefCell<Vec<usize>>,
) -> impl FnMut(usize) -> Vec<Sample> + 'a {
    let mut next = 0;
    move |k| {
        asked.borrow_mut().push(k);
        let out: Vec<Sample> = answers
            .iter()
            .skip(next)
            .take(k)
            .enumerate()
            .map(|(j, a)| sample((next + j) % 4, a))
            .collect();
        next += out.len();
        out
    }
}

fn scripted_policy(g: usize) -> Toy {
    let mut p = Toy::new(4, 3);
    p.scripted = Some(g);
    p
}

#[test]
fn dynamic_sampling_drops_refills_and_counts() {
    // Answer "1": one completion of the group says "1" → rewards [1,0,0,0]: informative.
    // Answer "7": nobody says it → all zero: dropped.
    let policy = scripted_policy(4);
    let mut opt = opt(&policy, 0.01);
    let mut c = cfg(4, 2);
    c.settings.dynamic_sampling = true;
    c.settings.max_retries = 5;
    let answers = ["7", "7", "1", "7", "1", "1"];
    let asked = RefCell::new(Vec::new());
    let m = grpo_step(
        &policy,
        None,
        &mut opt,
        &accuracy_set(),
        &c,
        0,
        scripted_draw(&answers, &asked),
    )
    .unwrap();
    // draw(2) → 7,7 (both dropped); draw(2) → 1,7 (one kept); draw(1) → 1: full.
    assert_eq!(*asked.borrow(), vec![2, 2, 1]);
    assert_eq!(m.groups_sampled, 5);
    assert_eq!(m.dropped_groups, 3);
    assert_eq!(m.retries, 2);
    assert_eq!(m.groups_trained, 2);
    assert!(!m.retry_cap_hit);
    assert!((m.zero_std_frac - 0.6).abs() < 1e-12);
    // 5 groups × 4 completions, 2 of them right: mean 0.1, population std 0.3
    assert!((m.reward_mean - 0.1).abs() < 1e-9);
    assert!((m.reward_std - 0.3).abs() < 1e-6);
    assert!(m.updated);
    assert_eq!(opt.steps(), 1);
}

#[test]
fn dynamic_sampling_respects_the_retry_cap() {
    let policy = scripted_policy(4);
    let mut opt = opt(&policy, 0.01);
    let mut c = cfg(4, 2);
    c.settings.dynamic_sampling = true;
    c.settings.max_retries = 3;
    let answers = ["7"; 20];
    let asked = RefCell::new(Vec::new());
    let m = grpo_step(
        &policy,
        None,
        &mut opt,
        &accuracy_set(),
        &c,
        3,
        scripted_draw(&answers, &asked),
    )
    .unwrap();
    // 1 draw + 3 retries, 2 prompts each, all dropped; nothing to train on.
    assert_eq!(*asked.borrow(), vec![2, 2, 2, 2]);
    assert_eq!((m.retries, m.dropped_groups, m.groups_trained), (3, 8, 0));
    assert!(m.retry_cap_hit);
    assert!(!m.updated);
    assert_eq!(opt.steps(), 0);
    assert_eq!(m.zero_std_frac, 1.0);

    // Cap hit with some informative groups: train on what there is.
    let answers = ["1", "7", "7", "7", "7", "7"];
    let asked = RefCell::new(Vec::new());
    c.settings.max_retries = 1;
    let m = grpo_step(
        &policy,
        None,
        &mut opt,
        &accuracy_set(),
        &c,
        4,
        scripted_draw(&answers, &asked),
    )
    .unwrap();
    assert_eq!(*asked.borrow(), vec![2, 1]);
    assert_eq!((m.retries, m.dropped_groups, m.groups_trained), (1, 2, 1));
    assert!(m.retry_cap_hit && m.updated);
}

#[test]
fn without_dynamic_sampling_equal_groups_stay_and_exhaustion_is_reported() {
    let policy = scripted_policy(4);
    let mut opt = opt(&policy, 0.01);
    let c = cfg(4, 3);
    let answers = ["7", "1"];
    let asked = RefCell::new(Vec::new());
    let m = grpo_step(
        &policy,
        None,
        &mut opt,
        &accuracy_set(),
        &c,
        0,
        scripted_draw(&answers, &asked),
    )
    .unwrap();
    assert_eq!(
        (m.groups_sampled, m.groups_trained, m.dropped_groups),
        (2, 2, 0)
    );
    assert!((m.zero_std_frac - 0.5).abs() < 1e-12);
    assert_eq!(m.retries, 0);
    // Asked for 3, got 2; without dynamic sampling there is no second draw.
    assert_eq!(*asked.borrow(), vec![3]);
    let none: [&str; 0] = [];
    let asked = RefCell::new(Vec::new());
    let m = grpo_step(
        &policy,
        None,
        &mut opt,
        &accuracy_set(),
        &c,
        1,
        scripted_draw(&none, &asked),
    )
    .unwrap();
    assert!(m.data_exhausted && !m.updated);
}

#[test]
fn truncated_completions_can_be_masked() {
    // max_new_tokens 1 and no EOS ever first: every completion is truncated. With the mask,
    // there is no loss at all, so the update leaves the table as it was.
    let policy = Toy::new(4, 3);
    let mut c = cfg(8, 4);
    c.settings.max_new_tokens = 1;
    c.settings.mask_truncated = true;
    // Make EOS impossible at position 0.
    let mut t = vec![0f32; 4 * 3 * V];
    for p in 0..4 {
        t[p * 3 * V + 3] = -30.0;
    }
    policy
        .table
        .set(&Tensor::from_vec(t.clone(), (4, 3, V), &Device::Cpu).unwrap())
        .unwrap();
    let mut opt = opt(&policy, 0.1);
    let m = grpo_step(&policy, None, &mut opt, &accuracy_set(), &c, 0, cycler(4)).unwrap();
    assert_eq!(m.truncated_frac, 1.0);
    assert_eq!(m.loss, 0.0);
    assert_eq!(m.grad_norm, 0.0);
    let after = weights(&policy);
    assert_eq!(after, t);
}

#[test]
fn sft_step_fits_the_targets() {
    // Target "2 EOS" for every prompt: the mean NLL starts at 2·ln 4 / 2 = ln 4 = 1.386294
    // (uniform logits) and must fall.
    let policy = Toy::new(4, 3);
    let mut opt = opt(&policy, 0.1);
    let inputs: Vec<PolicyInput> = (0..4)
        .map(|i| curric::rollout::policy_input(&sample(i, "2")))
        .collect();
    let targets = vec![vec![1, EOS]; 4];
    let first = sft_step(&policy, &mut opt, &inputs, &targets, 0).unwrap();
    assert!((first.loss - 4f64.ln()).abs() < 1e-5, "{first:?}");
    assert_eq!(first.tokens, 8.0);
    let mut last = first;
    for step in 1..30 {
        last = sft_step(&policy, &mut opt, &inputs, &targets, step).unwrap();
    }
    assert!(last.loss < 0.1, "{last:?}");
    let (groups, _) = greedy_eval(
        &policy,
        &[sample(0, "2")],
        3,
        &accuracy_set(),
        SeedCtx {
            seed: 0,
            phase: 0,
            step: 0,
        },
    )
    .unwrap();
    assert_eq!(groups[0].completions[0].tokens, vec![1, EOS]);
    assert_eq!(groups[0].rewards, vec![1.0]);
    assert!(sft_step(&policy, &mut opt, &inputs, &targets[..2], 99).is_err());
}

#[test]
fn rollout_gives_k_scored_samples_per_prompt() {
    let policy = Toy::new(4, 3);
    let samples: Vec<Sample> = (0..3).map(|i| sample(i, WORDS[i])).collect();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 3,
    };
    let ctx = SeedCtx {
        seed: 1,
        phase: 2,
        step: 3,
    };
    let (groups, times) = rollout(&policy, &samples, 8, &params, &accuracy_set(), ctx, 0).unwrap();
    assert_eq!(groups.len(), 3);
    let mut tokens = 0;
    for (g, s) in groups.iter().zip(&samples) {
        assert_eq!(g.sample.id, s.id);
        assert_eq!(
            (g.completions.len(), g.rewards.len(), g.terms.len()),
            (8, 8, 8)
        );
        for (c, r) in g.completions.iter().zip(&g.rewards) {
            let want = if c.text.split(' ').next_back() == Some(s.answer.as_str()) {
                1.0
            } else {
                0.0
            };
            assert_eq!(*r, want, "{:?} vs {}", c.text, s.answer);
            tokens += c.tokens.len();
        }
    }
    assert_eq!(times.tokens, tokens);
    for g in &groups {
        let right = g.rewards.iter().filter(|&&r| r == 1.0).count() as f32;
        assert_eq!(g.success_rate(1.0), right / 8.0);
        assert!((g.mean_reward() - right / 8.0).abs() < 1e-6);
    }
    // Same context, same draws; a later step or a shifted sample index, different draws.
    let (again, _) = rollout(&policy, &samples, 8, &params, &accuracy_set(), ctx, 0).unwrap();
    assert_eq!(again[1].completions, groups[1].completions);
    let (later, _) = rollout(
        &policy,
        &samples,
        8,
        &params,
        &accuracy_set(),
        SeedCtx { step: 4, ..ctx },
        0,
    )
    .unwrap();
    assert_ne!(
        later
            .iter()
            .map(|g| g.completions.clone())
            .collect::<Vec<_>>(),
        groups
            .iter()
            .map(|g| g.completions.clone())
            .collect::<Vec<_>>()
    );
    assert!(rollout(&policy, &samples, 0, &params, &accuracy_set(), ctx, 0).is_err());
}

#[test]
fn nan_in_the_loss_stops_the_step_and_updates_nothing() {
    let policy = Toy::new(4, 3);
    let mut opt = opt(&policy, 0.1);
    let mut c = cfg(8, 4);
    c.seed = 3;
    // A NaN logit for prompt 0, position 0: its log-probs, hence the loss, are NaN.
    let mut t = vec![0f32; 4 * 3 * V];
    t[1] = f32::NAN;
    policy
        .table
        .set(&Tensor::from_vec(t, (4, 3, V), &Device::Cpu).unwrap())
        .unwrap();
    let before = weights(&policy);
    let err = grpo_step(&policy, None, &mut opt, &accuracy_set(), &c, 5, cycler(4)).unwrap_err();
    assert!(matches!(err, GrpoError::NonFinite { step: 5, .. }), "{err}");
    assert!(err.to_string().contains("step 5"));
    let after = weights(&policy);
    assert_eq!(after[2..], before[2..], "no parameter moved");
    assert_eq!(opt.steps(), 0);
}
