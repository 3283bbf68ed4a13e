//! Held-out evaluation results: accuracy per capability × difficulty level and mean response
//! length, aggregated from per-sample outcomes and written to `phases/<id>/eval.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{ExecError, Result};
use super::rundir::write_atomic;

/// One graded eval sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub capability: String,
    /// `None` for data without a level.
    pub level: Option<String>,
    pub correct: bool,
    /// Response length in tokens.
    pub length: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalCell {
    pub capability: String,
    pub level: String,
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub phase: String,
    /// The global step of the weights evaluated.
    pub global_step: u64,
    pub n: usize,
    pub overall: f64,
    pub mean_response_len: f64,
    /// Accuracy per capability (all levels).
    pub by_capability: BTreeMap<String, f64>,
    /// Capability × level, sorted.
    pub cells: Vec<EvalCell>,
}

pub const NO_LEVEL: &str = "-";

impl EvalResult {
    pub fn from_outcomes(phase: &str, global_step: u64, outcomes: &[Outcome]) -> Self {
        // Keyed by level rank so that cells read easy → medium → hard.
        let mut cells: BTreeMap<(String, usize, String), (usize, usize)> = BTreeMap::new();
        let mut caps: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for o in outcomes {
            let level = o.level.clone().unwrap_or_else(|| NO_LEVEL.into());
            let rank = ["easy", "medium", "hard"]
                .iter()
                .position(|l| *l == level)
                .unwrap_or(3);
            let c = cells
                .entry((o.capability.clone(), rank, level))
                .or_default();
            c.0 += 1;
            c.1 += o.correct as usize;
            let c = caps.entry(o.capability.clone()).or_default();
            c.0 += 1;
            c.1 += o.correct as usize;
        }
        let ratio = |c: usize, n: usize| if n == 0 { 0.0 } else { c as f64 / n as f64 };
        let n = outcomes.len();
        let correct = outcomes.iter().filter(|o| o.correct).count();
        let len: usize = outcomes.iter().map(|o| o.length).sum();
        EvalResult {
            phase: phase.to_string(),
            global_step,
            n,
            overall: ratio(correct, n),
            mean_response_len: if n == 0 { 0.0 } else { len as f64 / n as f64 },
            by_capability: caps
                .into_iter()
                .map(|(k, (n, c))| (k, ratio(c, n)))
                .collect(),
            cells: cells
                .into_iter()
                .map(|((capability, _, level), (n, c))| EvalCell {
                    capability,
                    level,
                    n,
                    correct: c,
                    accuracy: ratio(c, n),
                })
                .collect(),
        }
    }

    /// The values stop conditions see: `eval/overall`, `eval/<capability>`,
    /// `eval/<capability>/<level>`, `eval/response_len`.
    pub fn as_metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("eval/overall".to_string(), self.overall);
        m.insert("eval/response_len".to_string(), self.mean_response_len);
        for (k, v) in &self.by_capability {
            m.insert(format!("eval/{k}"), *v);
        }
        for c in &self.cells {
            m.insert(format!("eval/{}/{}", c.capability, c.level), c.accuracy);
        }
        m
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| ExecError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_atomic(path, &json)
    }

    pub fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ExecError::io("read", path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ExecError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(cap: &str, level: &str, correct: bool, length: usize) -> Outcome {
        Outcome {
            capability: cap.into(),
            level: Some(level.into()),
            correct,
            length,
        }
    }

    #[test]
    fn aggregates_per_capability_and_level() {
        let r = EvalResult::from_outcomes(
            "eval0",
            40,
            &[
                o("perception", "hard", false, 20),
                o("perception", "easy", true, 10),
                o("perception", "medium", true, 4),
                o("perception", "easy", true, 12),
                o("visual_reasoning", "easy", false, 6),
                o("visual_reasoning", "easy", true, 2),
            ],
        );
        // 4 of 6 correct; lengths sum 54 → 9 per response.
        assert!((r.overall - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.mean_response_len, 9.0);
        assert_eq!(r.by_capability["perception"], 0.75);
        assert_eq!(r.by_capability["visual_reasoning"], 0.5);
        let cells: Vec<_> = r
            .cells
            .iter()
            .map(|c| (c.capability.as_str(), c.level.as_str(), c.n, c.accuracy))
            .collect();
        assert_eq!(
            cells,
            vec![
                ("perception", "easy", 2, 1.0),
                ("perception", "medium", 1, 1.0),
                ("perception", "hard", 1, 0.0),
                ("visual_reasoning", "easy", 2, 0.5)
            ]
        );
        let m = r.as_metrics();
        assert!((m["eval/overall"] - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(m["eval/perception/hard"], 0.0);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("eval.json");
        r.save(&p).unwrap();
        assert_eq!(EvalResult::load(&p).unwrap(), Some(r));
        assert_eq!(EvalResult::from_outcomes("e", 0, &[]).overall, 0.0);
    }
}
