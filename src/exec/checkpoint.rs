//! Phase checkpoints: `phases/<id>/ckpt-<step:06>/` holding the model files, the optimiser
//! state and `state.json` (step, sampler cursor, RNG, stop-condition state, pass-rate table,
//! and the blake3 hash of every other file). A checkpoint is written into a temporary
//! directory and renamed into place, so it either exists whole or not at all; loading checks
//! every hash and falls back to the previous checkpoint when one is corrupt or truncated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ExecError, Result};
use super::fingerprint::hash_file;
use super::rundir::{sync_dir, write_atomic};
use super::stop::StopState;

pub const STATE_FILE: &str = "state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Everything besides tensors that a phase needs to continue exactly where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps done in the phase.
    pub step: u64,
    pub global_step: u64,
    #[serde(default)]
    pub samples_seen: u64,
    #[serde(default)]
    pub sampler: Value,
    #[serde(default)]
    pub rng: Value,
    #[serde(default)]
    pub stop: StopState,
    #[serde(default)]
    pub pass_rates: Value,
    /// Whatever else the phase runner keeps (e.g. the LR schedule position).
    #[serde(default)]
    pub extra: Value,
    /// File name → blake3 hex, for every file of the checkpoint except this one.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub dir: PathBuf,
    pub state: CheckpointState,
    /// One line per checkpoint skipped because it was damaged.
    pub warnings: Vec<String>,
}

pub fn ckpt_name(step: u64) -> String {
    format!("ckpt-{step:06}")
}

/// Checkpoints of a phase, oldest first.
pub fn list(phase_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(phase_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ExecError::io("list", phase_dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| ExecError::io("list", phase_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("ckpt-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes a checkpoint: `write_files` fills a temporary directory with the model and
/// optimiser files; their hashes go into `state.json`; the directory is renamed into place;
/// then all but the newest `keep` checkpoints are removed.
pub fn save(
    phase_dir: &Path,
    state: &CheckpointState,
    keep: usize,
    write_files: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(phase_dir).map_err(|e| ExecError::io("create", phase_dir, e))?;
    let final_dir = phase_dir.join(ckpt_name(state.step));
    let tmp = phase_dir.join(format!(
        ".tmp-{}-{}",
        ckpt_name(state.step),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| ExecError::io("remove", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| ExecError::io("create", &tmp, e))?;
    write_files(&tmp)?;

    let mut state = state.clone();
    state.files.clear();
    for entry in std::fs::read_dir(&tmp).map_err(|e| ExecError::io("list", &tmp, e))? {
        let entry = entry.map_err(|e| ExecError::io("list", &tmp, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == STATE_FILE {
            continue;
        }
        let path = entry.path();
        fsync_file(&path)?;
        state.files.insert(name, hash_file(&path)?);
    }
    let json = serde_json::to_vec_pretty(&state).map_err(|e| ExecError::Json {
        path: tmp.join(STATE_FILE),
        message: e.to_string(),
    })?;
    write_atomic(&tmp.join(STATE_FILE), &json)?;
    sync_dir(&tmp);
    if final_dir.exists() {
        // A re-run of the same step after a crash: the new one replaces it.
        std::fs::remove_dir_all(&final_dir).map_err(|e| ExecError::io("remove", &final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| ExecError::io("rename", &tmp, e))?;
    sync_dir(phase_dir);

    let all = list(phase_dir)?;
    if all.len() > keep.max(1) {
        for (_, old) in &all[..all.len() - keep.max(1)] {
            std::fs::remove_dir_all(old).map_err(|e| ExecError::io("remove", old, e))?;
        }
    }
    Ok(final_dir)
}

fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| ExecError::io("sync", path, e))
}

/// Reads and verifies one checkpoint directory.
pub fn verify(dir: &Path) -> Result<CheckpointState> {
    let corrupt = |reason: String| ExecError::CorruptCheckpoint {
        dir: dir.to_path_buf(),
        reason,
    };
    let state_path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).map_err(|e| corrupt(format!("{STATE_FILE}: {e}")))?;
    let state: CheckpointState =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("{STATE_FILE}: {e}")))?;
    for (name, want) in &state.files {
        let path = dir.join(name);
        let got = hash_file(&path).map_err(|e| corrupt(e.to_string()))?;
        if &got != want {
            return Err(corrupt(format!(
                "{name} does not match its hash (truncated or modified)"
            )));
        }
    }
    Ok(state)
}

/// The newest checkpoint that verifies; damaged newer ones are reported in `warnings` and
/// logged. Leftover temporary directories (a crash mid-save) are removed.
pub fn load_latest(phase_dir: &Path) -> Result<Option<Loaded>> {
    if let Ok(rd) = std::fs::read_dir(phase_dir) {
        for entry in rd.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-ckpt-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let mut warnings = Vec::new();
    for (_, dir) in list(phase_dir)?.into_iter().rev() {
        match verify(&dir) {
            Ok(state) => {
                return Ok(Some(Loaded {
                    dir,
                    state,
                    warnings,
                }))
            }
            Err(e) => {
                let msg = format!("{e}; falling back to the previous checkpoint");
                tracing::warn!("{msg}");
                warnings.push(msg);
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> CheckpointState {
        CheckpointState {
            step,
            global_step: 100 + step,
            sampler: serde_json::json!({"cursor": step * 4}),
            ..Default::default()
        }
    }

    fn save_step(dir: &Path, step: u64, keep: usize) -> PathBuf {
        save(dir, &state(step), keep, |tmp| {
            std::fs::write(tmp.join("model.safetensors"), vec![step as u8; 1000]).unwrap();
            std::fs::write(tmp.join(OPTIMIZER_FILE), vec![7u8; 64]).unwrap();
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn saves_hashes_and_keeps_the_last_n() {
        let dir = tempfile::tempdir().unwrap();
        for s in [2, 4, 6] {
            save_step(dir.path(), s, 2);
        }
        let steps: Vec<u64> = list(dir.path()).unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, vec![4, 6]);
        let latest = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(latest.dir.file_name().unwrap(), "ckpt-000006");
        assert_eq!(latest.state.sampler["cursor"], 24);
        assert_eq!(latest.state.files.len(), 2);
        assert_eq!(
            latest.state.files["model.safetensors"],
            blake3::hash(&[6u8; 1000]).to_hex().to_string()
        );
        assert!(latest.warnings.is_empty());
    }

    #[test]
    fn truncated_or_missing_state_falls_back_to_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        save_step(dir.path(), 1, 3);
        save_step(dir.path(), 2, 3);
        let newest = save_step(dir.path(), 3, 3);
        // Truncate the newest model file.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(newest.join("model.safetensors"))
            .unwrap();
        f.set_len(10).unwrap();
        let l = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(l.state.step, 2);
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("ckpt-000003"), "{}", l.warnings[0]);
        assert!(l.warnings[0].contains("model.safetensors does not match its hash"));

        std::fs::write(
            dir.path().join("ckpt-000002").join(STATE_FILE),
            b"{\"step\": 2,",
        )
        .unwrap();
        let l = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(l.state.step, 1);
        assert_eq!(l.warnings.len(), 2);

        std::fs::remove_file(dir.path().join("ckpt-000001").join("optimizer.safetensors")).unwrap();
        assert!(load_latest(dir.path()).unwrap().is_none());
    }

    #[test]
    fn leftover_temp_dirs_are_ignored_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        save_step(dir.path(), 1, 2);
        let tmp = dir.path().join(".tmp-ckpt-000002-999");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("model.safetensors"), b"half").unwrap();
        let l = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(l.state.step, 1);
        assert!(!tmp.exists());
    }
}
