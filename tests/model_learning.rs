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
    let p = Policy::tiny("nano", 1, &Device::Cpu).unwrap();
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
    for _ in 0..60 {
        let lp = p.logprobs(&inputs, &comps).unwrap();
        let n = lp.mask.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let loss = (lp.logp.sum_all().unwrap().neg().unwrap() / n).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let after = mean_logp(&p);
    assert!(
        before < -4.0 && after > -0.1,
        "mean log-prob {before} -> {after}"
    );
    let greedy = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: 8,
    };
    let out = p.generate(&inputs, &greedy, &[0, 1]).unwrap();
    assert_eq!(out[0].text, "\\boxed{red}");
    assert_eq!(out[1].text, "\\boxed{blue}");
    assert!(!out[0].truncated && !out[1].truncated);
}
