//! The policy can learn: supervised steps on log-probs teach it an image-dependent answer,
//! which greedy generation then reproduces. Catches a model whose gradients flow but whose
//! vision tokens carry no information.

use std::sync::Arc;

use candle_core::Device;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use curric::model::{Policy, PolicyInput, PolicyModel, SamplingParams};
use image::{Rgb, RgbImage};

fn solid(c: [u8; 3]) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_pixel(48, 48, Rgb(c)))
}

#[test]
fn sft_teaches_an_image_dependent_answer() {
    // Seed 2 learns in ~25 steps; some inits sit longer on the image-blind plateau
    // (log-prob ≈ −0.7 on the colour token), so the budget is generous.
    let p = Policy::tiny("nano", 2, &Device::Cpu).unwrap();
    let prompt = "<image> What colour is the image?";
    let inputs = vec![
        PolicyInput {
            image: Some(solid([230, 20, 20])),
            prompt: prompt.into(),
        },
        PolicyInput {
            image: Some(solid([20, 20, 230])),
            prompt: prompt.into(),
        },
    ];
    let eos = p.eos_token();
    let target = |w: &str| {
        let mut t = p.encode(&format!("\\boxed{{{w}}}")).unwrap();
        t.push(eos);
        t
    };
    let comps = vec![target("red"), target("blue")];
    let mut opt = AdamW::new(
        p.trainable_vars(),
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mean_logp = |p: &Policy| {
        let lp = p.logprobs(&inputs, &comps).unwrap();
        let s = lp.logp.sum_all().unwrap().to_scalar::<f32>().unwrap();
        s / lp.mask.sum_all().unwrap().to_scalar::<f32>().unwrap()
    };
    let before = mean_logp(&p);
    let greedy = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: 8,
    };
    let mut out = Vec::new();
    for step in 0..200 {
        if step % 10 == 0 {
            out = p.generate(&inputs, &greedy, &[0, 1]).unwrap();
            if out[0].text == "\\boxed{red}" && out[1].text == "\\boxed{blue}" {
                break;
            }
        }
        let lp = p.logprobs(&inputs, &comps).unwrap();
        let n = lp.mask.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let loss = (lp.logp.sum_all().unwrap().neg().unwrap() / n).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let after = mean_logp(&p);
    assert!(
        before < -4.0 && after > before + 3.0,
        "mean log-prob {before} -> {after}"
    );
    assert_eq!(out[0].text, "\\boxed{red}");
    assert_eq!(out[1].text, "\\boxed{blue}");
    assert!(!out[0].truncated && !out[1].truncated);
}

/// The built-in tokenizer covers every built-in suite problem, trace and answer, and decoding a
/// trace gives back its `\boxed{answer}` verbatim.
#[test]
fn tokenizer_covers_the_builtin_suite() {
    use curric::data::{suite, Level};
    let p = Policy::tiny("nano", 0, &Device::Cpu).unwrap();
    let unk = p.tokenizer().token_to_id("[UNK]").unwrap();
    let mut checked = 0;
    for cap in suite::capabilities() {
        for level in [Level::Easy, Level::Medium, Level::Hard] {
            for s in suite::generate(&cap, level, 20, 3).unwrap() {
                let trace = s.trace.clone().unwrap_or_default();
                for text in [&s.problem, &trace, &s.answer] {
                    let ids = p.encode(text).unwrap();
                    assert!(!ids.contains(&unk), "[UNK] in {text:?}");
                }
                let back = p.decode(&p.encode(&trace).unwrap()).unwrap();
                let boxed = format!("\\boxed{{{}}}", s.answer);
                assert!(back.contains(&boxed), "{back:?} lacks {boxed:?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 100);
}
