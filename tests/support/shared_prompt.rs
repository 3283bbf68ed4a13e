//! The check that a group's shared prompt changes nothing but the work: logits and every
//! gradient of rows computed with each distinct prompt once (`Policy::shared_prompt_logits`)
//! against whole rows from candle's primitives, each row computing its own prompt.

use candle_core::{DType, Device, Tensor};
use curric::model::{ops::with_primitives, Policy, PolicyInput};

pub fn assert_matches_whole_rows(p: &Policy, inputs: &[PolicyInput], comps: &[Vec<u32>]) {
    let (b, c) = (comps.len(), comps.iter().map(Vec::len).max().unwrap());
    let v = p.config().decoder.vocab_size;
    // A fixed pseudo-random weighting of the logits at every completion position (padding's
    // are not comparable, and weigh nothing).
    let w: Vec<f32> = (0..b * c * v)
        .map(|i| {
            let (r, j) = (i / (c * v), i / v % c);
            if j < comps[r].len() {
                ((i * 7919) % 97) as f32 / 97.0 - 0.5
            } else {
                0.0
            }
        })
        .collect();
    let w = Tensor::from_vec(w, (b, c, v), &Device::Cpu).unwrap();
    let kept = w.ne(0f32).unwrap().to_dtype(DType::F32).unwrap();
    let run = |shared: bool| {
        let logits = if shared {
            p.shared_prompt_logits(inputs, comps)
                .unwrap()
                .expect("the prompts repeat, so they are shared")
        } else {
            p.completion_logits(inputs, comps).unwrap().0
        };
        let grads = (&logits * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g: Vec<(String, Tensor)> = p
            .named_trainable_vars()
            .into_iter()
            .map(|(n, var)| (n, grads.get(var.as_tensor()).unwrap().clone()))
            .collect();
        ((logits * &kept).unwrap(), g)
    };
    let (shared, g_shared) = run(true);
    let (whole, g_whole) = with_primitives(|| run(false));
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let d = diff(&shared, &whole);
    assert!(d <= 1e-4, "logits differ by {d}");
    assert_eq!(g_shared.len(), g_whole.len());
    for ((name, a), (_, b)) in g_shared.iter().zip(&g_whole) {
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = diff(a, b);
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "{name}: gradient differs by {d} (largest {scale})"
        );
    }
}
