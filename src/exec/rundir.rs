//! The run directory's layout and the one way curric writes files into it: a temporary file in
//! the same directory, fsynced, then renamed over the target, so a reader (or a resumed run
//! after SIGKILL) sees either the old file or the new one, never half of one.
//!
//! ```text
//! RUN_DIR/
//!   manifest.toml                 phases, status, fingerprints, stop reasons
//!   phases/<id>/metrics.jsonl     one JSON object per step
//!   phases/<id>/events.out.tfevents.*   the same metrics for TensorBoard
//!   phases/<id>/ckpt-<step:06>/   model files, optimizer.safetensors, state.json
//!   phases/<id>/eval.json         eval phases: accuracy per capability × level
//!   phases/<id>/samples.jsonl     sampled completions
//!   report/index.html, report/*.svg   written by `curric report`
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{ExecError, Result};

/// Paths inside one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// Creates the directory (and `phases/`) when missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let dir = RunDir::new(root);
        let phases = dir.root.join("phases");
        fs::create_dir_all(&phases).map_err(|e| ExecError::io("create", &phases, e))?;
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.toml")
    }

    pub fn phase(&self, id: &str) -> PathBuf {
        self.root.join("phases").join(sanitize(id))
    }

    pub fn metrics(&self, id: &str) -> PathBuf {
        self.phase(id).join("metrics.jsonl")
    }

    pub fn eval(&self, id: &str) -> PathBuf {
        self.phase(id).join("eval.json")
    }

    pub fn samples(&self, id: &str) -> PathBuf {
        self.phase(id).join("samples.jsonl")
    }

    pub fn report(&self) -> PathBuf {
        self.root.join("report")
    }
}

/// The exclusive hold of one writer on a run directory, released when dropped or when the
/// process dies (an OS file lock, so a killed run leaves no stale lock behind).
#[derive(Debug)]
pub struct RunLock {
    _file: fs::File,
}

pub const LOCK_FILE: &str = "lock";

impl RunDir {
    /// Takes the run directory for this process, or fails at once naming the pid that holds
    /// it: two runs writing one directory would mix checkpoints under each other's
    /// fingerprints.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.root.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| ExecError::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(ExecError::Locked {
                    dir: self.root.clone(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(ExecError::io("lock", &path, e)),
        }
        // Who holds it, for the message the next writer gets; the lock itself is the flock.
        let _ = file.set_len(0);
        let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        let _ = file.sync_all();
        Ok(RunLock { _file: file })
    }
}

/// Phase ids come from the plan; keep anything that could escape the directory out of paths.
pub fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// Writes `bytes` to `path` atomically: temp file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(parent).map_err(|e| ExecError::io("create", parent, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| ExecError::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| ExecError::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| ExecError::io("sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| ExecError::io("rename", &tmp, e))
    })();
    if written.is_err() {
        // A full disk must not also leave half a file behind.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(parent);
    Ok(())
}

/// Makes a rename durable. Best effort: not every platform can fsync a directory.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b.txt")]);
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temp was written.
        let target = dir.path().join("eval.json");
        fs::create_dir_all(target.join("x")).unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("eval.json")]);
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let rd = RunDir::create(dir.path()).unwrap();
        let held = rd.lock().unwrap();
        let err = rd.lock().unwrap_err().to_string();
        assert!(
            err.contains(&std::process::id().to_string()) && err.contains("another"),
            "{err}"
        );
        drop(held);
        // A released (or dead holder's) lock is taken over.
        let _again = rd.lock().unwrap();
    }

    #[test]
    fn phase_ids_cannot_escape() {
        assert_eq!(sanitize("../etc/passwd"), "_etc_passwd");
        assert_eq!(sanitize("perception.easy"), "perception.easy");
        assert_eq!(sanitize("a b/c"), "a_b_c");
    }

    #[test]
    fn rfc3339_parses_back() {
        let s = now_rfc3339();
        assert!(humantime::parse_rfc3339(&s).is_ok(), "{s}");
    }
}
