//! `manifest.toml`: what a run directory holds, phase by phase. Rewritten atomically after
//! every change, so after a crash it still says which phase was running and which finished.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{ExecError, Result};
use super::rundir::{now_rfc3339, write_atomic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStatus {
    Pending,
    Running,
    Done,
    Failed,
}

impl std::fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PhaseStatus::Pending => "pending",
            PhaseStatus::Running => "running",
            PhaseStatus::Done => "done",
            PhaseStatus::Failed => "failed",
        })
    }
}

/// The parts a phase's fingerprint was made of, kept so that a later plan can say *why* a
/// phase is dirty (like cargo's dirty reasons), not only that it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintParts {
    pub spec: String,
    /// Parent id → the parent's fingerprint when this phase ran.
    #[serde(default)]
    pub parents: BTreeMap<String, String>,
    /// Data source name → content hash.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub id: String,
    pub kind: String,
    pub status: PhaseStatus,
    /// Set only once the phase succeeded: a rerun skips a phase whose fingerprint matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<FingerprintParts>,
    /// The fingerprint of the attempt in progress: a rerun resumes its checkpoints only when
    /// the phase's fingerprint still equals it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Relative to the run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// Global step at which the phase started (its metrics continue from here).
    #[serde(default)]
    pub global_step_start: u64,
    #[serde(default)]
    pub steps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PhaseRecord {
    pub fn new(id: &str, kind: &str) -> Self {
        PhaseRecord {
            id: id.to_string(),
            kind: kind.to_string(),
            status: PhaseStatus::Pending,
            fingerprint: None,
            parts: None,
            attempt: None,
            started: None,
            ended: None,
            stop_reason: None,
            checkpoint: None,
            global_step_start: 0,
            steps: 0,
            error: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub curriculum: String,
    pub curric_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub phases: Vec<PhaseRecord>,
}

impl Manifest {
    pub fn new(curriculum: &str) -> Self {
        Manifest {
            curriculum: curriculum.to_string(),
            curric_version: env!("CARGO_PKG_VERSION").to_string(),
            source: None,
            phases: Vec::new(),
        }
    }

    /// Reads a manifest; `Ok(None)` when the run directory has none yet.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ExecError::io("read", path, e)),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| ExecError::Manifest {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| ExecError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_atomic(path, text.as_bytes())
    }

    pub fn get(&self, id: &str) -> Option<&PhaseRecord> {
        self.phases.iter().find(|p| p.id == id)
    }

    /// The record for `id`, appended (pending) when missing.
    pub fn entry(&mut self, id: &str, kind: &str) -> &mut PhaseRecord {
        if let Some(i) = self.phases.iter().position(|p| p.id == id) {
            let rec = &mut self.phases[i];
            rec.kind = kind.to_string();
            rec
        } else {
            self.phases.push(PhaseRecord::new(id, kind));
            self.phases.last_mut().expect("just pushed")
        }
    }

    /// Marks a phase running; its old fingerprint goes, so a crash leaves it dirty.
    pub fn start(&mut self, id: &str, kind: &str, resumed: bool) {
        let rec = self.entry(id, kind);
        rec.status = PhaseStatus::Running;
        rec.fingerprint = None;
        rec.parts = None;
        rec.ended = None;
        rec.stop_reason = None;
        rec.error = None;
        if !resumed || rec.started.is_none() {
            rec.started = Some(now_rfc3339());
        }
    }

    pub fn finish(
        &mut self,
        id: &str,
        fingerprint: String,
        parts: FingerprintParts,
        stop_reason: String,
        checkpoint: Option<String>,
        steps: u64,
    ) {
        if let Some(rec) = self.phases.iter_mut().find(|p| p.id == id) {
            rec.status = PhaseStatus::Done;
            rec.fingerprint = Some(fingerprint);
            rec.parts = Some(parts);
            rec.ended = Some(now_rfc3339());
            rec.stop_reason = Some(stop_reason);
            rec.checkpoint = checkpoint;
            rec.steps = steps;
        }
    }

    pub fn fail(&mut self, id: &str, error: String) {
        if let Some(rec) = self.phases.iter_mut().find(|p| p.id == id) {
            rec.status = PhaseStatus::Failed;
            rec.ended = Some(now_rfc3339());
            rec.error = Some(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_toml_with_every_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.toml");
        assert!(Manifest::load(&path).unwrap().is_none());

        let mut m = Manifest::new("quickstart");
        m.start("warmup", "sft", false);
        let parts = FingerprintParts {
            spec: "s".into(),
            parents: BTreeMap::new(),
            data: [("shapes".to_string(), "d".to_string())].into(),
            version: "0.1.0".into(),
        };
        m.finish(
            "warmup",
            "abc".into(),
            parts.clone(),
            "warmup stopped at step 10: steps(10)".into(),
            Some("phases/warmup/ckpt-000010".into()),
            10,
        );
        m.start("eval0", "eval", false);
        m.fail("eval0", "boom".into());
        m.entry("grpo", "grpo");
        m.save(&path).unwrap();

        let back = Manifest::load(&path).unwrap().unwrap();
        assert_eq!(back, m);
        assert_eq!(back.get("warmup").unwrap().status, PhaseStatus::Done);
        assert_eq!(back.get("warmup").unwrap().parts.as_ref(), Some(&parts));
        assert_eq!(back.get("eval0").unwrap().status, PhaseStatus::Failed);
        assert_eq!(back.get("grpo").unwrap().status, PhaseStatus::Pending);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("status = \"done\""), "{text}");
        assert!(text.contains("stop_reason = \"warmup stopped at step 10: steps(10)\""));
    }

    #[test]
    fn restarting_a_phase_clears_its_fingerprint() {
        let mut m = Manifest::new("c");
        m.start("a", "grpo", false);
        m.finish(
            "a",
            "fp".into(),
            FingerprintParts::default(),
            "r".into(),
            None,
            3,
        );
        m.start("a", "grpo", false);
        let rec = m.get("a").unwrap();
        assert_eq!(rec.status, PhaseStatus::Running);
        assert!(rec.fingerprint.is_none() && rec.stop_reason.is_none());
    }

    #[test]
    fn garbage_manifest_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.toml");
        std::fs::write(&path, "phases = 3\n[[[").unwrap();
        let err = Manifest::load(&path).unwrap_err();
        assert!(
            err.to_string().contains("not a valid run manifest"),
            "{err}"
        );
    }
}
