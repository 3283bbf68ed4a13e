//! Phase fingerprints: a phase is fresh when its canonical spec, its parents' fingerprints,
//! the content of its data sources and curric's version all equal what they were when it last
//! succeeded. Like cargo, a fingerprint is recorded only after success, and a dirty phase says
//! why.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::Value;

use super::error::{ExecError, Result};
use super::manifest::{FingerprintParts, Manifest, PhaseStatus};

pub const CURRIC_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where a phase's data comes from, as far as its fingerprint is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A JSONL file: hashed by content, so an edited file dirties the phase.
    File {
        name: String,
        path: std::path::PathBuf,
    },
    /// The built-in suite (or anything procedural): hashed by its parameters.
    Params { name: String, params: Value },
}

impl DataSource {
    pub fn name(&self) -> &str {
        match self {
            DataSource::File { name, .. } | DataSource::Params { name, .. } => name,
        }
    }

    pub fn hash(&self) -> Result<String> {
        match self {
            DataSource::File { path, .. } => hash_file(path),
            DataSource::Params { params, .. } => Ok(hash_json(params)),
        }
    }
}

pub fn hash_file(path: &Path) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).map_err(|e| ExecError::io("read", path, e))?;
    std::io::copy(&mut f, &mut hasher).map_err(|e| ExecError::io("read", path, e))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// JSON with object keys sorted at every level and no whitespace, so that two specs that
/// differ only in key order hash alike.
pub fn canonical_json(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).unwrap_or_default()
}

pub fn hash_json(v: &Value) -> String {
    blake3::hash(canonical_json(v).as_bytes())
        .to_hex()
        .to_string()
}

impl FingerprintParts {
    /// Gathers the parts of one phase's fingerprint.
    pub fn gather(
        spec: &Value,
        parents: &BTreeMap<String, String>,
        sources: &[DataSource],
    ) -> Result<Self> {
        let mut data = BTreeMap::new();
        for s in sources {
            data.insert(s.name().to_string(), s.hash()?);
        }
        Ok(FingerprintParts {
            spec: hash_json(spec),
            parents: parents.clone(),
            data,
            version: CURRIC_VERSION.to_string(),
        })
    }

    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        // Length-prefixed fields: no two different part lists hash the same byte stream.
        let mut field = |s: &str| {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field("curric-fingerprint-v1");
        field(&self.spec);
        for (k, v) in &self.parents {
            field(k);
            field(v);
        }
        field("data");
        for (k, v) in &self.data {
            field(k);
            field(v);
        }
        field(&self.version);
        h.finalize().to_hex().to_string()
    }
}

/// Why a phase must run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirtyReason {
    NeverRan,
    Unfinished(PhaseStatus),
    SpecChanged,
    ParentReRuns(String),
    ParentChanged(String),
    ParentsChanged,
    DataChanged(String),
    DataAdded(String),
    VersionChanged { was: String },
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyReason::NeverRan => write!(f, "never ran"),
            DirtyReason::Unfinished(s) => write!(f, "last run did not finish ({s})"),
            DirtyReason::SpecChanged => write!(f, "spec changed"),
            DirtyReason::ParentReRuns(p) => write!(f, "parent {p} re-runs"),
            DirtyReason::ParentChanged(p) => write!(f, "parent {p} re-ran"),
            DirtyReason::ParentsChanged => write!(f, "parents changed"),
            DirtyReason::DataChanged(d) => write!(f, "data {d} changed"),
            DirtyReason::DataAdded(d) => write!(f, "data {d} added"),
            DirtyReason::VersionChanged { was } => {
                write!(f, "curric version changed ({was} → {CURRIC_VERSION})")
            }
        }
    }
}

/// One phase as the freshness check sees it.
#[derive(Debug, Clone)]
pub struct PhaseInput {
    pub id: String,
    pub spec: Value,
    pub parents: Vec<String>,
    pub sources: Vec<DataSource>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Freshness {
    pub id: String,
    pub parts: FingerprintParts,
    pub fingerprint: String,
    /// `None` when fresh.
    pub dirty: Option<DirtyReason>,
}

/// Decides, for phases given in topological order, which are fresh and why the others are
/// dirty. A phase whose parent runs again runs again too, even when the parent's fingerprint
/// will come out the same: its checkpoint is about to be rewritten.
pub fn assess(phases: &[PhaseInput], manifest: Option<&Manifest>) -> Result<Vec<Freshness>> {
    let mut out: Vec<Freshness> = Vec::with_capacity(phases.len());
    for p in phases {
        let mut parents = BTreeMap::new();
        let mut parent_dirty = None;
        for parent in &p.parents {
            let Some(f) = out.iter().find(|f| &f.id == parent) else {
                return Err(ExecError::Phase {
                    phase: p.id.clone(),
                    message: format!("parent `{parent}` is not before it in the plan order"),
                });
            };
            parents.insert(parent.clone(), f.fingerprint.clone());
            if f.dirty.is_some() && parent_dirty.is_none() {
                parent_dirty = Some(parent.clone());
            }
        }
        let parts = FingerprintParts::gather(&p.spec, &parents, &p.sources)?;
        let fingerprint = parts.fingerprint();
        let record = manifest.and_then(|m| m.get(&p.id));
        let dirty = match record {
            None => Some(DirtyReason::NeverRan),
            Some(r) if r.status != PhaseStatus::Done => Some(if r.status == PhaseStatus::Pending {
                DirtyReason::NeverRan
            } else {
                DirtyReason::Unfinished(r.status)
            }),
            Some(r) => {
                let old = r.parts.clone().unwrap_or_default();
                if r.fingerprint.as_deref() == Some(fingerprint.as_str()) && parent_dirty.is_none()
                {
                    None
                } else {
                    Some(explain(&old, &parts, parent_dirty.as_deref()))
                }
            }
        };
        out.push(Freshness {
            id: p.id.clone(),
            parts,
            fingerprint,
            dirty,
        });
    }
    Ok(out)
}

fn explain(
    old: &FingerprintParts,
    new: &FingerprintParts,
    parent_dirty: Option<&str>,
) -> DirtyReason {
    if let Some(p) = parent_dirty {
        return DirtyReason::ParentReRuns(p.to_string());
    }
    if old.version != new.version {
        return DirtyReason::VersionChanged {
            was: old.version.clone(),
        };
    }
    if old.spec != new.spec {
        return DirtyReason::SpecChanged;
    }
    for (k, v) in &new.parents {
        if old.parents.get(k) != Some(v) {
            return DirtyReason::ParentChanged(k.clone());
        }
    }
    for (k, v) in &new.data {
        match old.data.get(k) {
            None => return DirtyReason::DataAdded(k.clone()),
            Some(o) if o != v => return DirtyReason::DataChanged(k.clone()),
            _ => {}
        }
    }
    // Only removals (of parents or data) remain.
    DirtyReason::ParentsChanged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(spec_b: Value, data_path: &Path) -> Vec<PhaseInput> {
        vec![
            PhaseInput {
                id: "a".into(),
                spec: json!({"kind": "sft", "steps": 10}),
                parents: vec![],
                sources: vec![DataSource::Params {
                    name: "shapes".into(),
                    params: json!({"seed": 1}),
                }],
            },
            PhaseInput {
                id: "b".into(),
                spec: spec_b,
                parents: vec!["a".into()],
                sources: vec![DataSource::File {
                    name: "extra".into(),
                    path: data_path.to_path_buf(),
                }],
            },
            PhaseInput {
                id: "c".into(),
                spec: json!({"kind": "eval"}),
                parents: vec!["b".into()],
                sources: vec![],
            },
            PhaseInput {
                id: "d".into(),
                spec: json!({"kind": "eval", "arm": 2}),
                parents: vec!["a".into()],
                sources: vec![],
            },
        ]
    }

    fn record_all(fresh: &[Freshness]) -> Manifest {
        let mut m = Manifest::new("t");
        for f in fresh {
            m.start(&f.id, "x", false);
            m.finish(
                &f.id,
                f.fingerprint.clone(),
                f.parts.clone(),
                "r".into(),
                None,
                1,
            );
        }
        m
    }

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":3}],"x":2}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":2,"y":[1,{"p":3,"q":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":2,"y":[1,{"p":3,"q":2}]},"b":1}"#
        );
        assert_ne!(hash_json(&a), hash_json(&json!({"b": 2})));
    }

    #[test]
    fn fresh_after_success_and_dirty_reasons_after_edits() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("extra.jsonl");
        std::fs::write(&data, "{\"problem\":\"1+1\",\"answer\":\"2\"}\n").unwrap();
        let spec_b = json!({"kind": "grpo", "lr": 1e-4});

        let first = assess(&chain(spec_b.clone(), &data), None).unwrap();
        assert!(first.iter().all(|f| f.dirty == Some(DirtyReason::NeverRan)));
        let m = record_all(&first);

        let again = assess(&chain(spec_b.clone(), &data), Some(&m)).unwrap();
        assert!(again.iter().all(|f| f.dirty.is_none()), "{again:?}");
        assert_eq!(again[1].fingerprint, first[1].fingerprint);

        // Editing b's spec dirties b and its descendant c, not a or the other arm d.
        let edited = assess(&chain(json!({"kind": "grpo", "lr": 2e-4}), &data), Some(&m)).unwrap();
        let reasons: Vec<_> = edited.iter().map(|f| f.dirty.clone()).collect();
        assert_eq!(
            reasons,
            vec![
                None,
                Some(DirtyReason::SpecChanged),
                Some(DirtyReason::ParentReRuns("b".into())),
                None
            ]
        );
        assert_eq!(
            edited[2].dirty.as_ref().unwrap().to_string(),
            "parent b re-runs"
        );

        // Changing the JSONL file's bytes dirties b.
        std::fs::write(&data, "{\"problem\":\"1+2\",\"answer\":\"3\"}\n").unwrap();
        let changed = assess(&chain(spec_b, &data), Some(&m)).unwrap();
        assert_eq!(
            changed[1].dirty,
            Some(DirtyReason::DataChanged("extra".into()))
        );
        assert_eq!(
            changed[1].dirty.as_ref().unwrap().to_string(),
            "data extra changed"
        );
    }

    #[test]
    fn child_recorded_against_an_older_parent_is_dirty() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("extra.jsonl");
        std::fs::write(&data, "x").unwrap();
        let spec_b = json!({"kind": "grpo"});
        let first = assess(&chain(spec_b.clone(), &data), None).unwrap();
        let mut m = record_all(&first);
        // b re-ran with a new spec and succeeded, but c was never re-run.
        let edited = assess(&chain(json!({"kind": "grpo", "g": 8}), &data), Some(&m)).unwrap();
        m.finish(
            "b",
            edited[1].fingerprint.clone(),
            edited[1].parts.clone(),
            "r".into(),
            None,
            1,
        );
        let now = assess(&chain(json!({"kind": "grpo", "g": 8}), &data), Some(&m)).unwrap();
        assert_eq!(now[1].dirty, None);
        assert_eq!(now[2].dirty, Some(DirtyReason::ParentChanged("b".into())));
        assert_eq!(
            now[2].dirty.as_ref().unwrap().to_string(),
            "parent b re-ran"
        );
    }

    #[test]
    fn a_crashed_phase_is_dirty_and_version_is_part_of_the_hash() {
        let mut m = Manifest::new("t");
        let phases = vec![PhaseInput {
            id: "a".into(),
            spec: json!({}),
            parents: vec![],
            sources: vec![],
        }];
        m.start("a", "sft", false);
        let f = assess(&phases, Some(&m)).unwrap();
        assert_eq!(
            f[0].dirty,
            Some(DirtyReason::Unfinished(PhaseStatus::Running))
        );

        let mut old = f[0].parts.clone();
        old.version = "0.0.1".into();
        assert_ne!(old.fingerprint(), f[0].fingerprint);
        m.finish("a", old.fingerprint(), old, "r".into(), None, 1);
        let f = assess(&phases, Some(&m)).unwrap();
        assert!(matches!(
            f[0].dirty,
            Some(DirtyReason::VersionChanged { .. })
        ));
    }
}
