//! `curric export model`: a finished phase's weights as a self-contained Hugging Face-style
//! directory (`model.safetensors`, `config.json`, `tokenizer.json`) that `model = local(...)`
//! loads, plus `provenance.json` naming the curriculum, phase and fingerprint that made it and
//! the weights' blake3, so a shipped checkpoint can be checked against the file that declares
//! it without retraining.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{self, OPTIMIZER_FILE, STATE_FILE};
use super::error::{ExecError, Result};
use super::manifest::{Manifest, PhaseStatus};
use super::rundir::{write_atomic, RunDir};

pub const PROVENANCE_FILE: &str = "provenance.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Where an exported checkpoint came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub curriculum: String,
    pub phase: String,
    /// The phase's fingerprint: equal to what `curric plan` computes for the same file today
    /// exactly when the file (and its data) still describe these weights.
    pub fingerprint: String,
    /// blake3 of `model.safetensors`.
    pub weights_blake3: String,
    pub curric_version: String,
}

impl Provenance {
    pub fn load(dir: &Path) -> Result<Provenance> {
        let path = dir.join(PROVENANCE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ExecError::io("read", &path, e))?;
        serde_json::from_str(&text).map_err(|e| ExecError::Json {
            path,
            message: e.to_string(),
        })
    }
}

/// The phase whose weights a run ends with: the last finished phase in plan order.
pub fn final_phase(m: &Manifest) -> Option<&super::manifest::PhaseRecord> {
    m.phases
        .iter()
        .rev()
        .find(|r| r.status == PhaseStatus::Done && r.checkpoint.is_some())
}

/// Copies the weights of `phase` (default: the run's final phase) out of `run_dir` into
/// `out`, which is created or refreshed file by file (other files in it are left alone).
pub fn export_model(run_dir: &Path, phase: Option<&str>, out: &Path) -> Result<Provenance> {
    let rd = RunDir::new(run_dir);
    let manifest = Manifest::load(&rd.manifest())?.ok_or_else(|| ExecError::NoCheckpoint {
        dir: run_dir.to_path_buf(),
        reason: "no manifest.toml: not a run directory, or nothing ran yet".into(),
    })?;
    let rec = match phase {
        Some(id) => manifest
            .get(id)
            .ok_or_else(|| ExecError::Phase {
                phase: id.into(),
                message: format!("is not a phase of the run in `{}`", run_dir.display()),
            })?
            .clone(),
        None => final_phase(&manifest)
            .ok_or_else(|| ExecError::NoCheckpoint {
                dir: run_dir.to_path_buf(),
                reason: "no phase has finished".into(),
            })?
            .clone(),
    };
    let (Some(ckpt), Some(fingerprint), PhaseStatus::Done) =
        (&rec.checkpoint, &rec.fingerprint, rec.status)
    else {
        return Err(ExecError::Phase {
            phase: rec.id.clone(),
            message: format!("has not finished (status {})", rec.status),
        });
    };
    let src: PathBuf = rd.root().join(ckpt);
    checkpoint::verify(&src)?;
    std::fs::create_dir_all(out).map_err(|e| ExecError::io("create", out, e))?;
    let entries = std::fs::read_dir(&src).map_err(|e| ExecError::io("read", &src, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // Training state stays in the run directory: the export is a model, not a resume point.
        .filter(|n| n != OPTIMIZER_FILE && n != STATE_FILE && !n.starts_with('.'))
        .collect();
    names.sort();
    for name in &names {
        let from = src.join(name);
        let bytes = std::fs::read(&from).map_err(|e| ExecError::io("read", &from, e))?;
        write_atomic(&out.join(name), &bytes)?;
    }
    let provenance = Provenance {
        curriculum: manifest.curriculum.clone(),
        phase: rec.id.clone(),
        fingerprint: fingerprint.clone(),
        weights_blake3: super::fingerprint::hash_file(&out.join(WEIGHTS_FILE))?,
        curric_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut json = serde_json::to_string_pretty(&provenance).expect("serialisable");
    json.push('\n');
    write_atomic(&out.join(PROVENANCE_FILE), json.as_bytes())?;
    Ok(provenance)
}
