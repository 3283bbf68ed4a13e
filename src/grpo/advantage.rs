//! Group-relative advantages.
//!
//! Standard deviations are the unbiased sample std (divide by n − 1), as `torch.std` computes
//! them in verl's `compute_grpo_outcome_advantage` and TRL's `GRPOTrainer`, so that advantages
//! (and learning rates tuned there) carry over. A group of one has no baseline; like verl we
//! then take mean 0 and std 1.

use super::GrpoError;
use crate::spec::AdvantageScaling;

fn mean(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64
}

/// Unbiased sample std; 1 for fewer than two values (see module docs).
fn sample_std(xs: &[f32]) -> f64 {
    if xs.len() < 2 {
        return 1.0;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|&x| (x as f64 - m).powi(2)).sum();
    (ss / (xs.len() - 1) as f64).sqrt()
}

/// Advantages for `rewards`, laid out group after group (`group_size` rewards each).
pub fn advantages(
    rewards: &[f32],
    group_size: usize,
    mode: AdvantageScaling,
    eps: f64,
) -> Result<Vec<f32>, GrpoError> {
    if group_size == 0 || !rewards.len().is_multiple_of(group_size) {
        return Err(GrpoError::Config(format!(
            "{} rewards do not split into groups of {group_size}",
            rewards.len()
        )));
    }
    if let Some(r) = rewards.iter().find(|r| !r.is_finite()) {
        return Err(GrpoError::Config(format!("reward {r} is not finite")));
    }
    let batch_std = sample_std(rewards);
    let mut out = Vec::with_capacity(rewards.len());
    for group in rewards.chunks(group_size) {
        let (m, s) = if group.len() < 2 {
            (0.0, 1.0)
        } else {
            (mean(group), sample_std(group))
        };
        let denom = match mode {
            AdvantageScaling::Group => s + eps,
            AdvantageScaling::Batch => batch_std + eps,
            AdvantageScaling::None => 1.0,
        };
        out.extend(group.iter().map(|&r| ((r as f64 - m) / denom) as f32));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn group_scaling_uses_sample_std() {
        // group [1,0,0,1]: mean 0.5, sample std sqrt(1/3) = 0.57735 → ±0.866025
        // group [1,1,1,0]: mean 0.75, sample std 0.5 → 0.5, 0.5, 0.5, -1.5
        let r = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        let a = advantages(&r, 4, AdvantageScaling::Group, 0.0).unwrap();
        close(
            &a,
            &[
                0.866025, -0.866025, -0.866025, 0.866025, 0.5, 0.5, 0.5, -1.5,
            ],
        );
    }

    #[test]
    fn batch_and_none() {
        // batch: mean 0.625, sample std over 8 = sqrt(1.875/7) = 0.517549
        let r = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        let a = advantages(&r, 4, AdvantageScaling::Batch, 0.0).unwrap();
        // 0.5/0.517549 = 0.966092, 0.25/0.517549 = 0.483046, 0.75/.. = 1.449138
        close(
            &a,
            &[
                0.966092, -0.966092, -0.966092, 0.966092, 0.483046, 0.483046, 0.483046, -1.449138,
            ],
        );
        let a = advantages(&r, 4, AdvantageScaling::None, 1e-6).unwrap();
        close(&a, &[0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]);
    }

    #[test]
    fn equal_group_gives_zero_and_eps_guards_division() {
        let a = advantages(&[0.3, 0.3, 0.3], 3, AdvantageScaling::Group, 1e-6).unwrap();
        close(&a, &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn singleton_group_and_errors() {
        // verl convention: mean 0, std 1 → advantage = reward
        close(
            &advantages(&[0.7, 0.2], 1, AdvantageScaling::Group, 0.0).unwrap(),
            &[0.7, 0.2],
        );
        assert!(advantages(&[1.0, 0.0, 1.0], 2, AdvantageScaling::Group, 1e-6).is_err());
        assert!(advantages(&[f32::NAN, 0.0], 2, AdvantageScaling::Group, 1e-6).is_err());
    }
}
