//! Per-step metrics of a phase: `metrics.jsonl` (one JSON object per step) and a TensorBoard
//! event file with the same scalars. On resume both are cut back to the checkpoint's step, so
//! a resumed run's logs equal an uninterrupted run's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{ExecError, Result};
use super::rundir::write_atomic;
use super::tfevents::{Event, EventWriter};

/// Metric names the executor, the progress bar and the report agree on.
pub mod keys {
    pub const REWARD: &str = "reward";
    /// Per-term rewards are `reward/<term>`.
    pub const REWARD_PREFIX: &str = "reward/";
    pub const ACCURACY: &str = "accuracy";
    pub const COMPLETION_LEN: &str = "completion_len";
    pub const ZERO_STD_FRAC: &str = "zero_std_frac";
    pub const KL: &str = "kl";
    pub const LOSS: &str = "loss";
    pub const LR: &str = "lr";
    pub const ENTROPY: &str = "entropy";
    pub const CLIP_FRAC: &str = "clip_frac";
    pub const TOKENS_PER_S: &str = "tokens_per_s";
    /// Eval accuracy as seen by stop conditions: `eval/overall`, `eval/<capability>`.
    pub const EVAL_PREFIX: &str = "eval/";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Steps done in this phase (1-based).
    pub step: u64,
    /// Steps done across all phases, in plan order: the report's x axis.
    pub global_step: u64,
    pub wall_time: f64,
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

pub fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Reads a metrics file; a torn last line (crash mid-write) is ignored.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(ExecError::io("read", path, e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<MetricRecord>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(ExecError::Json {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

pub struct MetricsWriter {
    phase: String,
    stage: Option<String>,
    jsonl_path: PathBuf,
    jsonl: std::fs::File,
    events: EventWriter,
}

impl MetricsWriter {
    /// Opens the phase's metrics. With `resume_step`, records after that step (logged after
    /// the last checkpoint, before a crash) are dropped and the event file is rebuilt from
    /// what is kept; without, the phase starts from empty logs.
    pub fn open(
        phase_dir: &Path,
        phase: &str,
        stage: Option<&str>,
        resume_step: Option<u64>,
    ) -> Result<Self> {
        std::fs::create_dir_all(phase_dir).map_err(|e| ExecError::io("create", phase_dir, e))?;
        let jsonl_path = phase_dir.join("metrics.jsonl");
        let kept = match resume_step {
            Some(s) => read_metrics(&jsonl_path)?
                .into_iter()
                .filter(|r| r.step <= s)
                .collect(),
            None => vec![],
        };
        let mut text = String::new();
        for r in &kept {
            text.push_str(&serde_json::to_string(r).unwrap_or_default());
            text.push('\n');
        }
        write_atomic(&jsonl_path, text.as_bytes())?;
        let jsonl = std::fs::OpenOptions::new()
            .append(true)
            .open(&jsonl_path)
            .map_err(|e| ExecError::io("open", &jsonl_path, e))?;

        for entry in
            std::fs::read_dir(phase_dir).map_err(|e| ExecError::io("list", phase_dir, e))?
        {
            let entry = entry.map_err(|e| ExecError::io("list", phase_dir, e))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
            {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(|e| ExecError::io("remove", &p, e))?;
            }
        }
        let (mut events, ev_path) = EventWriter::create(phase_dir, wall_time())
            .map_err(|e| ExecError::io("create", phase_dir.join("events.out.tfevents.*"), e))?;
        for r in &kept {
            events
                .write(&to_event(r))
                .map_err(|e| ExecError::io("write", &ev_path, e))?;
        }
        Ok(MetricsWriter {
            phase: phase.to_string(),
            stage: stage.map(str::to_string),
            jsonl_path,
            jsonl,
            events,
        })
    }

    /// Appends one step's metrics; non-finite values are left out (JSON has no NaN).
    pub fn log(
        &mut self,
        step: u64,
        global_step: u64,
        values: &BTreeMap<String, f64>,
    ) -> Result<MetricRecord> {
        let rec = MetricRecord {
            phase: self.phase.clone(),
            stage: self.stage.clone(),
            step,
            global_step,
            wall_time: wall_time(),
            values: values
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        };
        let mut line = serde_json::to_string(&rec).map_err(|e| ExecError::Json {
            path: self.jsonl_path.clone(),
            message: e.to_string(),
        })?;
        line.push('\n');
        self.jsonl
            .write_all(line.as_bytes())
            .map_err(|e| ExecError::io("write", &self.jsonl_path, e))?;
        self.events
            .write(&to_event(&rec))
            .map_err(|e| ExecError::io("write", &self.jsonl_path, e))?;
        Ok(rec)
    }
}

fn to_event(r: &MetricRecord) -> Event {
    Event {
        wall_time: r.wall_time,
        step: r.global_step as i64,
        file_version: None,
        scalars: r
            .values
            .iter()
            .map(|(k, v)| (k.clone(), *v as f32))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tfevents::read_records;

    fn vals(r: f64) -> BTreeMap<String, f64> {
        [("reward".to_string(), r), ("kl".to_string(), f64::NAN)].into()
    }

    fn events(dir: &Path) -> Vec<Event> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("tfevents"))
            .collect();
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(files.pop().unwrap()).unwrap();
        read_records(&bytes)
            .unwrap()
            .iter()
            .map(|r| Event::decode(r).unwrap())
            .collect()
    }

    #[test]
    fn logs_jsonl_and_events_and_cuts_back_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::open(dir.path(), "p", Some("perception"), None).unwrap();
        for s in 1..=5 {
            w.log(s, 100 + s, &vals(s as f64 / 10.0)).unwrap();
        }
        drop(w);
        let recs = read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[2].global_step, 103);
        assert_eq!(recs[2].stage.as_deref(), Some("perception"));
        assert_eq!(recs[2].values.get("reward"), Some(&0.3));
        assert!(!recs[2].values.contains_key("kl"), "NaN is dropped");
        let line = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert!(line.starts_with(
            "{\"phase\":\"p\",\"stage\":\"perception\",\"step\":1,\"global_step\":101,"
        ));
        assert_eq!(events(dir.path()).len(), 6);

        // Crash after step 5 with the last checkpoint at step 3, plus a torn line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("metrics.jsonl"))
            .unwrap();
        f.write_all(b"{\"phase\":\"p\",\"st").unwrap();
        drop(f);
        let mut w = MetricsWriter::open(dir.path(), "p", Some("perception"), Some(3)).unwrap();
        w.log(4, 104, &vals(0.9)).unwrap();
        drop(w);
        let recs = read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
        let steps: Vec<_> = recs.iter().map(|r| (r.step, r.values["reward"])).collect();
        assert_eq!(steps, vec![(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.9)]);
        let ev = events(dir.path());
        let ev_steps: Vec<_> = ev.iter().skip(1).map(|e| e.step).collect();
        assert_eq!(ev_steps, vec![101, 102, 103, 104]);
    }
}
