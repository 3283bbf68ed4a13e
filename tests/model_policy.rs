//! Policy behaviour: gradient flow, KV cache vs full forward, sampling determinism, freezing.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use curric::model::{Policy, PolicyInput, PolicyModel, SamplingParams};
use image::{Rgb, RgbImage};

#[path = "support/shared_prompt.rs"]
mod shared_prompt;

fn image(seed: u8) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_fn(48, 48, |x, y| {
        let v = (x as u8)
            .wrapping_mul(5)
            .wrapping_add((y as u8).wrapping_mul(3))
            ^ seed;
        Rgb([v, v.wrapping_add(80), 255 - v])
    }))
}

fn inputs() -> Vec<PolicyInput> {
    vec![
        PolicyInput {
            image: Some(image(1)),
            prompt: "<image> How many red circles are there?".into(),
        },
        PolicyInput {
            image: None,
            prompt: "What is 3 + 4?".into(),
        },
        PolicyInput {
            image: Some(image(7)),
            prompt: "Is the blue square left of the star? Answer yes or no.".into(),
        },
    ]
}

fn policy() -> Policy {
    Policy::tiny("nano", 7, &Device::Cpu).unwrap()
}

fn completions(p: &Policy) -> Vec<Vec<u32>> {
    let eos = p.eos_token();
    let mut a = p.encode("<think> 2 + 1 = 3 </think> \\boxed{3}").unwrap();
    a.push(eos);
    let b = p.encode("\\boxed{7}").unwrap();
    let mut c = p.encode("<think> left </think> \\boxed{yes}").unwrap();
    c.push(eos);
    vec![a, b, c]
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A policy-gradient-shaped loss; every parameter must get a gradient from it.
fn assert_all_grads(p: &Policy) {
    let comps = completions(p);
    let lp = p.logprobs(&inputs(), &comps).unwrap();
    let loss = ((lp.logp * &lp.mask).unwrap().sum_all().unwrap()
        / lp.mask.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64)
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    let names = p.named_trainable_vars();
    assert!(!names.is_empty());
    for (name, var) in names {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s > 0.0 && s.is_finite(), "zero gradient for {name}");
    }
}

#[test]
fn every_variable_gets_a_gradient() {
    let p = policy();
    let names: Vec<String> = p
        .named_trainable_vars()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().any(|n| n.starts_with("visual.")));
    assert!(names.iter().any(|n| n.starts_with("projector.")));
    assert!(names.contains(&"model.layers.0.self_attn.k_proj.bias".to_string()));
    assert_all_grads(&p);
}

#[test]
fn frozen_vision_tower_is_excluded_and_the_rest_trains() {
    let mut p = policy();
    let all = p.trainable_vars().len();
    p.set_frozen(&["visual".to_string()]).unwrap();
    let names: Vec<String> = p
        .named_trainable_vars()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("visual.")));
    assert!(names.iter().any(|n| n.starts_with("projector.")));
    assert!(names.len() < all);
    assert_all_grads(&p);
}

#[test]
fn kv_cache_decoding_matches_full_forward() {
    let p = policy();
    let inp = inputs();
    // Equal-length completions, so every position is comparable; prompts differ in length.
    let comps: Vec<Vec<u32>> = completions(&p)
        .into_iter()
        .map(|c| c[..4].to_vec())
        .collect();
    let (full, _) = p.completion_logits(&inp, &comps).unwrap();
    let cached = p.cached_completion_logits(&inp, &comps).unwrap();
    assert_eq!(full.dims(), cached.dims());
    let d = max_abs_diff(&full, &cached);
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn generation_with_and_without_cache_agree() {
    let p = policy();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.9,
        max_new_tokens: 8,
    };
    let seeds = [1, 2, 3];
    let a = p.sample(&inputs(), &params, &seeds, true).unwrap();
    let b = p.sample(&inputs(), &params, &seeds, false).unwrap();
    assert_eq!(a, b);
}

#[test]
fn greedy_is_deterministic_and_sampling_is_seeded() {
    let p = policy();
    let greedy = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: 6,
    };
    let g1 = p.generate(&inputs(), &greedy, &[1, 2, 3]).unwrap();
    let g2 = p.generate(&inputs(), &greedy, &[9, 9, 9]).unwrap();
    assert_eq!(g1, g2, "greedy ignores seeds");
    for c in &g1 {
        assert!(c.tokens.len() <= 6);
        assert_eq!(c.truncated, c.tokens.last() != Some(&p.eos_token()));
    }
    let hot = SamplingParams {
        temperature: 1.5,
        top_p: 1.0,
        max_new_tokens: 10,
    };
    let s1 = p.generate(&inputs(), &hot, &[11, 12, 13]).unwrap();
    let s2 = p.generate(&inputs(), &hot, &[11, 12, 13]).unwrap();
    assert_eq!(s1, s2);
    let s3 = p.generate(&inputs(), &hot, &[21, 22, 23]).unwrap();
    assert_ne!(s1, s3, "different seeds should give different samples");
    // A row's sample depends on its own input and seed, not on the rest of the batch.
    let alone = p.generate(&inputs()[2..], &hot, &[13]).unwrap();
    assert_eq!(alone[0], s1[2]);
}

#[test]
fn logprobs_are_right_padded_and_masked() {
    let p = policy();
    let comps = completions(&p);
    let lp = p.logprobs(&inputs(), &comps).unwrap();
    let c = comps.iter().map(Vec::len).max().unwrap();
    assert_eq!(lp.logp.dims(), &[3, c]);
    let mask: Vec<Vec<f32>> = lp.mask.to_vec2().unwrap();
    let logp: Vec<Vec<f32>> = lp.logp.to_vec2().unwrap();
    let ent: Vec<Vec<f32>> = lp.entropy.to_vec2().unwrap();
    let v = p.config().decoder.vocab_size as f32;
    for (r, comp) in comps.iter().enumerate() {
        for j in 0..c {
            assert_eq!(mask[r][j], if j < comp.len() { 1.0 } else { 0.0 });
            if j < comp.len() {
                assert!(logp[r][j] < 0.0);
                // A near-uniform fresh model: entropy close to ln(V).
                assert!(ent[r][j] > 0.5 * v.ln() && ent[r][j] <= v.ln() + 1e-3);
            } else {
                assert_eq!(logp[r][j], 0.0);
                assert_eq!(ent[r][j], 0.0);
            }
        }
    }
    // Scoring a row alone gives the same numbers as in the batch.
    let one = p.logprobs(&inputs()[1..2], &comps[1..2]).unwrap();
    let row: Vec<f32> = one.logp.to_vec2::<f32>().unwrap().remove(0);
    for (j, x) in row.iter().enumerate() {
        assert!((x - logp[1][j]).abs() < 1e-4);
    }
}

#[test]
fn frozen_copy_is_detached_and_untrainable() {
    let p = policy();
    let r = p.frozen_copy().unwrap();
    assert!(r.trainable_vars().is_empty());
    let comps = completions(&p);
    let a = p.logprobs(&inputs(), &comps).unwrap().logp;
    let b = r.logprobs(&inputs(), &comps).unwrap().logp;
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // Training the policy does not move the reference.
    let v = &p.trainable_vars()[0];
    v.set(&(v.as_tensor() + 1.0).unwrap()).unwrap();
    let b2 = r.logprobs(&inputs(), &comps).unwrap().logp;
    assert_eq!(max_abs_diff(&b, &b2), 0.0);
}

#[test]
fn seeded_init_is_reproducible() {
    let a = Policy::tiny("nano", 3, &Device::Cpu).unwrap();
    let b = Policy::tiny("nano", 3, &Device::Cpu).unwrap();
    let c = Policy::tiny("nano", 4, &Device::Cpu).unwrap();
    let w = |p: &Policy| {
        let vars = p.named_vars();
        let (_, v) = vars
            .iter()
            .find(|(n, _)| n == "model.embed_tokens.weight")
            .unwrap();
        v.as_tensor().clone()
    };
    assert_eq!(max_abs_diff(&w(&a), &w(&b)), 0.0);
    assert!(max_abs_diff(&w(&a), &w(&c)) > 0.0);
}

#[test]
fn image_without_vision_tower_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy();
    let mut cfg = p.config().clone();
    cfg.vision = None;
    let text = Policy::random(cfg, p.tokenizer().clone(), 1, &Device::Cpu).unwrap();
    text.save(dir.path()).unwrap();
    let err = text.logprobs(&inputs(), &completions(&p)).unwrap_err();
    assert!(err.to_string().contains("no vision tower"), "{err}");
}

#[test]
fn device_helper() {
    assert!(matches!(curric::model::device("cpu"), Ok(Device::Cpu)));
    assert!(curric::model::device("tpu").is_err());
    if !cfg!(feature = "cuda") {
        let e = curric::model::device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("cuda` feature"), "{e}");
    }
}

#[test]
fn rows_sharing_an_image_match_rows_with_copies() {
    let p = policy();
    let img = image(3);
    let copy = Arc::new((*img).clone());
    let row = |im: Arc<RgbImage>| PolicyInput {
        image: Some(im),
        prompt: "<image> How many stars?".into(),
    };
    let comps = vec![
        p.encode("\\boxed{2}").unwrap(),
        p.encode("\\boxed{5}").unwrap(),
    ];
    let shared = p
        .logprobs(&[row(img.clone()), row(img.clone())], &comps)
        .unwrap();
    let copied = p.logprobs(&[row(img), row(copy)], &comps).unwrap();
    assert!(max_abs_diff(&shared.logp, &copied.logp) < 1e-6);
    // Gradients through the shared vision tokens add up like those of the copies.
    let g1 = shared.logp.sum_all().unwrap().backward().unwrap();
    let g2 = copied.logp.sum_all().unwrap().backward().unwrap();
    let (_, v) = p
        .named_vars()
        .into_iter()
        .find(|(n, _)| n == "visual.patch_embed.proj.weight")
        .unwrap();
    let d = max_abs_diff(
        g1.get(v.as_tensor()).unwrap(),
        g2.get(v.as_tensor()).unwrap(),
    );
    assert!(d < 1e-5, "gradient differs by {d}");
}

#[test]
fn rows_that_finish_leave_the_cached_batch_without_changing_any_completion() {
    // The shipped base ends its answers at different lengths, so rows leave the cached
    // decode batch at different steps; the uncached path keeps every row to the end.
    let p = Policy::load(std::path::Path::new("models/shapes-base"), &Device::Cpu).unwrap();
    let mut inp = inputs();
    inp.extend([
        PolicyInput {
            image: None,
            prompt: "A box has 9 coins. You take out 2 coins. How many coins are in the box now? \
                     Answer with a number."
                .into(),
        },
        PolicyInput {
            image: Some(image(3)),
            prompt:
                "<image> Name every object in the image by colour and shape. Answer with a list."
                    .into(),
        },
    ]);
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 40,
    };
    let seeds = [11, 12, 13, 14, 15];
    let cached = p.sample(&inp, &params, &seeds, true).unwrap();
    let full = p.sample(&inp, &params, &seeds, false).unwrap();
    assert_eq!(cached, full);
    let lens: std::collections::BTreeSet<usize> = cached.iter().map(|c| c.tokens.len()).collect();
    assert!(lens.len() > 1, "all completions had one length: {lens:?}");
    assert!(cached.iter().any(|c| !c.truncated), "no row finished early");
}

#[test]
fn a_batch_split_between_threads_samples_what_one_batch_samples() {
    // The shipped base, so that rows end at different lengths and leave their part's batch
    // at different steps; prompts of different lengths, so parts would pad them differently.
    let p = Policy::load(std::path::Path::new("models/shapes-base"), &Device::Cpu).unwrap();
    let mut inp = Vec::new();
    for i in 0..6 {
        inp.extend(inputs());
        inp.push(PolicyInput {
            image: Some(image(i)),
            prompt: "<image> How many shapes are in the image? Answer with a number.".into(),
        });
    }
    let seeds: Vec<u64> = (0..inp.len() as u64).collect();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 24,
    };
    let whole = p.sample(&inp, &params, &seeds, true).unwrap();
    let lens: std::collections::BTreeSet<usize> = whole.iter().map(|c| c.tokens.len()).collect();
    assert!(lens.len() > 1, "all completions had one length: {lens:?}");
    for parts in [2, 3, 5] {
        let split = p.sample_parts(&inp, &params, &seeds, parts).unwrap();
        assert_eq!(split, whole, "{parts} parts");
    }
    assert_eq!(p.generate(&inp, &params, &seeds).unwrap(), whole);
}

#[test]
fn a_groups_shared_prompt_gives_the_logits_and_gradients_of_whole_rows() {
    let p = policy();
    // Three groups (an image prompt, a text prompt, another image prompt: prompts of three
    // lengths), in mixed order as a length-sorted micro-batch holds them, with completions
    // of different lengths.
    let base = inputs();
    let order = [0, 1, 2, 1, 0, 2, 2, 0, 1];
    let inp: Vec<PolicyInput> = order.iter().map(|&k| base[k].clone()).collect();
    let all = completions(&p);
    let comps: Vec<Vec<u32>> = (0..order.len())
        .map(|r| all[r % 3][..all[r % 3].len() - r % 2].to_vec())
        .collect();
    shared_prompt::assert_matches_whole_rows(&p, &inp, &comps);
    // Rows that all differ share nothing.
    assert!(p.shared_prompt_logits(&base, &all).unwrap().is_none());
    // A completion per input, or an error (not a panic).
    assert!(p.shared_prompt_logits(&inp, &comps[..2]).is_err());
}

#[test]
fn a_groups_prompt_prefilled_once_samples_what_whole_rows_sample() {
    // The shipped base, so that rows end at different lengths; groups of four rows sharing
    // one prompt (and its image), in the order a rollout holds them.
    let p = Policy::load(std::path::Path::new("models/shapes-base"), &Device::Cpu).unwrap();
    let inp: Vec<PolicyInput> = inputs()
        .into_iter()
        .flat_map(|i| std::iter::repeat_n(i, 4))
        .collect();
    let seeds: Vec<u64> = (0..inp.len() as u64).collect();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: 16,
    };
    // With the cache each prompt is prefilled once; without it every row recomputes its own.
    let shared = p.sample(&inp, &params, &seeds, true).unwrap();
    let whole = p.sample(&inp, &params, &seeds, false).unwrap();
    assert_eq!(shared, whole);
    let distinct: std::collections::BTreeSet<&Vec<u32>> =
        shared.iter().map(|c| &c.tokens).collect();
    assert!(
        distinct.len() > 3,
        "a group's seeds should sample different completions"
    );
}
