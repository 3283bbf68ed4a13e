//! Stop conditions as a pure evaluator over per-step observations. Its state serialises into
//! the checkpoint, so a resumed phase stops at exactly the step an uninterrupted one would.
//!
//! Semantics, all checked after a step completes:
//! - `steps(n)`: `n` steps done; `epochs(e)`: the sampler has gone through `e` epochs;
//!   `samples(n)`: `n` prompts seen; `time(s)`: `s` seconds of training (summed across resumes).
//! - `plateau(metric, w, d)`: with at least `2w` values seen, the mean of the last `w` values
//!   exceeds the mean of the `w` before them by less than `d`.
//! - `eval(metric >= t every n)`: every `n` steps the executor runs an eval; holds once the
//!   latest eval's `metric` is at least `t`.
//! - `informative_below(x, w)`: the mean fraction of informative (non-zero-std) groups over
//!   the last `w` steps is below `x`.
//! - `min_steps(n)`: holds from step `n` on; used as a guard with `and`.
//! - `and` / `or`: both / either.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::metrics::keys;
use crate::spec::Stop;

/// The metric `plateau` watches.
pub const PLATEAU_METRIC: &str = keys::REWARD;
/// The eval result `eval(threshold, …)` compares.
pub const EVAL_METRIC: &str = "eval/overall";

/// What the executor knows after a step.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Steps done in the phase (1 after the first step).
    pub step: u64,
    pub epochs: f64,
    pub samples: u64,
    /// Seconds of training in this process (the evaluator adds earlier runs' time).
    pub elapsed_s: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Present at steps where an eval ran (`eval/overall`, `eval/<capability>` …).
    pub eval: Option<BTreeMap<String, f64>>,
}

/// The evaluator's memory: metric windows, the latest eval and time spent before a resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopState {
    pub windows: BTreeMap<String, VecDeque<f64>>,
    pub last_eval: BTreeMap<String, f64>,
    pub elapsed_before_s: f64,
    /// Elapsed seconds at the last observation, carried into `elapsed_before_s` on resume.
    pub elapsed_s: f64,
}

pub const INFORMATIVE: &str = "informative_frac";

/// The evaluator over the vocabulary's stop tree: the tree the checker wrote is the tree
/// that runs.
pub trait StopEval {
    /// Whether an eval must run after step `step` for this condition.
    fn eval_due(&self, step: u64) -> bool;
    /// Feeds one observation and says whether to stop, and which part of the condition
    /// held.
    fn observe(&self, state: &mut StopState, obs: &Observation) -> Option<String>;
}

fn windowed(stop: &Stop, out: &mut BTreeMap<String, usize>) {
    match stop {
        Stop::Plateau { window, .. } => {
            let w = out.entry(PLATEAU_METRIC.to_string()).or_default();
            *w = (*w).max(2 * *window as usize);
        }
        Stop::InformativeBelow { window, .. } => {
            let w = out.entry(INFORMATIVE.to_string()).or_default();
            *w = (*w).max(*window as usize);
        }
        Stop::All { all: v } | Stop::Any { any: v } => v.iter().for_each(|c| windowed(c, out)),
        _ => {}
    }
}

fn holds(stop: &Stop, st: &StopState, obs: &Observation) -> bool {
    match stop {
        Stop::Steps { n } | Stop::MinSteps { n } => obs.step >= *n,
        Stop::Epochs { n } => obs.epochs >= *n,
        Stop::Samples { n } => obs.samples >= *n,
        Stop::Time { seconds } => st.elapsed_s >= *seconds as f64,
        Stop::Plateau { window, delta } => {
            let window = *window as usize;
            let Some(w) = st.windows.get(PLATEAU_METRIC) else {
                return false;
            };
            if window == 0 || w.len() < 2 * window {
                return false;
            }
            let n = w.len();
            let mean = |it: &mut dyn Iterator<Item = &f64>| it.sum::<f64>() / window as f64;
            let recent = mean(&mut w.iter().skip(n - window));
            let before = mean(&mut w.iter().skip(n - 2 * window).take(window));
            recent - before < *delta
        }
        Stop::Eval { threshold, .. } => st
            .last_eval
            .get(EVAL_METRIC)
            .is_some_and(|v| v >= threshold),
        Stop::InformativeBelow { fraction, window } => {
            let Some(w) = st.windows.get(INFORMATIVE) else {
                return false;
            };
            w.len() >= *window as usize && w.iter().sum::<f64>() / (w.len() as f64) < *fraction
        }
        Stop::All { all } => all.iter().all(|c| holds(c, st, obs)),
        Stop::Any { any } => any.iter().any(|c| holds(c, st, obs)),
    }
}

/// The text of the part that made the condition hold: for `or` the first part that holds,
/// for `and` all of it.
fn explain(stop: &Stop, st: &StopState, obs: &Observation) -> String {
    match stop {
        Stop::Any { any } => any
            .iter()
            .find(|c| holds(c, st, obs))
            .map(|c| explain(c, st, obs))
            .unwrap_or_else(|| stop.to_string()),
        other => other.to_string(),
    }
}

impl StopEval for Stop {
    fn eval_due(&self, step: u64) -> bool {
        match self {
            Stop::Eval { every, .. } => *every > 0 && step.is_multiple_of(*every),
            Stop::All { all: v } | Stop::Any { any: v } => v.iter().any(|c| c.eval_due(step)),
            _ => false,
        }
    }

    fn observe(&self, state: &mut StopState, obs: &Observation) -> Option<String> {
        let mut windows = BTreeMap::new();
        windowed(self, &mut windows);
        for (metric, cap) in windows {
            let value = if metric == INFORMATIVE {
                obs.metrics
                    .get(INFORMATIVE)
                    .copied()
                    .or_else(|| obs.metrics.get(keys::ZERO_STD_FRAC).map(|z| 1.0 - z))
            } else {
                obs.metrics.get(&metric).copied()
            };
            if let Some(v) = value.filter(|v| v.is_finite()) {
                let w = state.windows.entry(metric).or_default();
                w.push_back(v);
                while w.len() > cap {
                    w.pop_front();
                }
            }
        }
        if let Some(eval) = &obs.eval {
            for (k, v) in eval {
                state.last_eval.insert(k.clone(), *v);
            }
        }
        state.elapsed_s = state.elapsed_before_s + obs.elapsed_s;
        holds(self, state, obs).then(|| explain(self, state, obs))
    }
}

/// "perception stopped at step 143: plateau(reward, 30, 0.005)".
pub fn stop_reason(phase: &str, step: u64, why: &str) -> String {
    format!("{phase} stopped at step {step}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(step: u64) -> Observation {
        Observation {
            step,
            ..Default::default()
        }
    }

    fn with(step: u64, k: &str, v: f64) -> Observation {
        let mut o = obs(step);
        o.metrics.insert(k.into(), v);
        o
    }

    /// Runs `cond` over observations and returns (step, reason) of the first stop.
    fn first_stop(cond: &Stop, it: impl IntoIterator<Item = Observation>) -> Option<(u64, String)> {
        let mut st = StopState::default();
        it.into_iter()
            .find_map(|o| cond.observe(&mut st, &o).map(|r| (o.step, r)))
    }

    #[test]
    fn steps_samples_epochs() {
        let c = Stop::Steps { n: 3 };
        assert_eq!(
            first_stop(&c, (1..10).map(obs)),
            Some((3, "steps(3)".into()))
        );
        let c = Stop::Samples { n: 10 };
        let o = (1..10).map(|s| Observation {
            step: s,
            samples: 4 * s,
            ..Default::default()
        });
        assert_eq!(
            first_stop(&c, o),
            Some((3, "samples(10)".into())),
            "12 ≥ 10 at step 3"
        );
        let c = Stop::Epochs { n: 1.5 };
        let o = (1..10).map(|s| Observation {
            step: s,
            epochs: s as f64 * 0.4,
            ..Default::default()
        });
        assert_eq!(
            first_stop(&c, o),
            Some((4, "epochs(1.5)".into())),
            "1.6 ≥ 1.5 at step 4"
        );
    }

    #[test]
    fn wall_time_counts_time_before_a_resume() {
        let c = Stop::Time { seconds: 10 };
        let mut st = StopState::default();
        let o = Observation {
            step: 1,
            elapsed_s: 6.0,
            ..Default::default()
        };
        assert!(c.observe(&mut st, &o).is_none());
        // Resume: 6 s already spent; 4 more in this process reach the limit.
        let mut st = StopState {
            elapsed_before_s: st.elapsed_s,
            ..st
        };
        let o = Observation {
            step: 2,
            elapsed_s: 4.0,
            ..Default::default()
        };
        assert_eq!(c.observe(&mut st, &o).as_deref(), Some("time(\"10s\")"));
    }

    #[test]
    fn plateau_compares_the_means_of_two_windows() {
        let c = Stop::Plateau {
            window: 2,
            delta: 0.05,
        };
        // rewards 0.1 0.2 0.3 0.4 0.42 0.44: at step 4 means are 0.15 → 0.35 (+0.2);
        // step 5: 0.25 → 0.41 (+0.16); step 6: 0.35 → 0.43 (+0.08);
        // step 7: 0.41 → 0.445 (+0.035 < 0.05) → stop.
        let r = [0.1, 0.2, 0.3, 0.4, 0.42, 0.44, 0.45, 0.44];
        let o = r
            .iter()
            .enumerate()
            .map(|(i, v)| with(i as u64 + 1, "reward", *v));
        assert_eq!(first_stop(&c, o), Some((7, "plateau(2, 0.05)".into())));
        // A falling metric is a plateau too (no improvement); too few values never stop.
        let o = [0.5, 0.4, 0.3, 0.2]
            .iter()
            .enumerate()
            .map(|(i, v)| with(i as u64 + 1, "reward", *v));
        assert_eq!(first_stop(&c, o).map(|s| s.0), Some(4));
        let o = [0.5, 0.5, 0.5]
            .iter()
            .enumerate()
            .map(|(i, v)| with(i as u64 + 1, "reward", *v));
        assert_eq!(first_stop(&c, o), None);
    }

    #[test]
    fn eval_threshold_uses_the_latest_eval() {
        let c = Stop::Eval {
            threshold: 0.6,
            every: 5,
            n: 8,
        };
        assert!(!c.eval_due(4) && c.eval_due(5) && c.eval_due(10));
        let o = (1..=20).map(|s| {
            let mut o = obs(s);
            if c.eval_due(s) {
                o.eval = Some([("eval/overall".to_string(), s as f64 / 20.0)].into());
            }
            o
        });
        // evals: 0.25 @5, 0.5 @10, 0.75 @15 → stop at 15.
        assert_eq!(first_stop(&c, o), Some((15, "eval(0.6, every 5)".into())));
    }

    #[test]
    fn informative_fraction_over_a_window() {
        let c = Stop::InformativeBelow {
            fraction: 0.3,
            window: 3,
        };
        // zero-std fractions 0.5 0.6 0.8 0.9 → informative 0.5 0.4 0.2 0.1;
        // step 3 mean 0.3667, step 4 mean 0.2333 < 0.3.
        let z = [0.5, 0.6, 0.8, 0.9];
        let o = z
            .iter()
            .enumerate()
            .map(|(i, v)| with(i as u64 + 1, keys::ZERO_STD_FRAC, *v));
        assert_eq!(
            first_stop(&c, o),
            Some((4, "informative_below(0.3, 3)".into()))
        );
    }

    #[test]
    fn min_steps_guards_a_plateau_and_or_names_the_part_that_held() {
        let plateau = Stop::Plateau {
            window: 1,
            delta: 0.01,
        };
        let guarded = Stop::All {
            all: vec![Stop::MinSteps { n: 5 }, plateau.clone()],
        };
        let flat = || (1..=20).map(|s| with(s, "reward", 0.5));
        assert_eq!(first_stop(&plateau, flat()).map(|s| s.0), Some(2));
        assert_eq!(
            first_stop(&guarded, flat()),
            Some((5, "min_steps(5) and plateau(1, 0.01)".into()))
        );
        let c = Stop::Any {
            any: vec![Stop::Steps { n: 8 }, guarded.clone()],
        };
        assert_eq!(
            c.to_string(),
            "steps(8) or min_steps(5) and plateau(1, 0.01)"
        );
        assert_eq!(
            first_stop(&c, flat()).unwrap().1,
            "min_steps(5) and plateau(1, 0.01)"
        );
        let rising = (1..=20).map(|s| with(s, "reward", s as f64));
        assert_eq!(first_stop(&c, rising), Some((8, "steps(8)".into())));
        assert_eq!(c.step_bound(None, 1), Some(8));
        assert_eq!(
            stop_reason("perception", 143, "plateau(reward, 30, 0.005)"),
            "perception stopped at step 143: plateau(reward, 30, 0.005)"
        );
    }

    #[test]
    fn state_round_trips_and_resumed_evaluation_matches() {
        let c = Stop::Plateau {
            window: 3,
            delta: 0.01,
        };
        let r: Vec<f64> = (0..30)
            .map(|i| (i as f64 * 0.7).sin() * 0.01 + (i.min(12) as f64) * 0.05)
            .collect();
        let all = r
            .iter()
            .enumerate()
            .map(|(i, v)| with(i as u64 + 1, "reward", *v));
        let straight = first_stop(&c, all);
        assert!(straight.is_some());

        let mut st = StopState::default();
        for (i, v) in r.iter().enumerate().take(9) {
            assert!(c
                .observe(&mut st, &with(i as u64 + 1, "reward", *v))
                .is_none());
        }
        let json = serde_json::to_string(&st).unwrap();
        let mut st: StopState = serde_json::from_str(&json).unwrap();
        let resumed = r.iter().enumerate().skip(9).find_map(|(i, v)| {
            c.observe(&mut st, &with(i as u64 + 1, "reward", *v))
                .map(|m| (i as u64 + 1, m))
        });
        assert_eq!(resumed, straight);

        let spec = Stop::Any {
            any: vec![Stop::Steps { n: 3 }, c],
        };
        let back: Stop = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
}
