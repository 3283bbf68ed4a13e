//! A phase's fingerprint inputs and the per-phase status `curric plan --status` shows.

use super::*;

/// The spec a phase's fingerprint hashes: the plan's phase minus what does not change its
/// result (its position and the cost estimate).
pub fn phase_spec(p: &Phase) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.remove("index");
        m.remove("estimate");
    }
    v
}

pub fn phase_inputs(plan: &Plan) -> Vec<PhaseInput> {
    plan.phases
        .iter()
        .map(|p| PhaseInput {
            id: p.id.clone(),
            spec: phase_spec(p),
            parents: p.parents.clone(),
            sources: p
                .sources
                .iter()
                .map(|s| match &s.kind {
                    SourceKind::Jsonl { resolved, .. } => DataSource::File {
                        name: s.name.clone(),
                        path: PathBuf::from(resolved),
                    },
                    SourceKind::Suite { .. } => DataSource::Params {
                        name: s.name.clone(),
                        params: serde_json::to_value(s).unwrap_or_default(),
                    },
                })
                // A root phase starting from a checkpoint on disk depends on its weights as
                // much as on its data: replacing them makes it (and its descendants) dirty.
                .chain(local_weights(p))
                .collect(),
        })
        .collect()
}

/// The weight files of a root phase's local checkpoint: `model.safetensors`, or the shard
/// index and every shard it names. A model from the Hugging Face cache is named by its
/// snapshot (the repository's commit), not hashed: a new snapshot dirties the phase.
fn local_weights(p: &Phase) -> Vec<DataSource> {
    if !p.parents.is_empty() {
        return Vec::new();
    }
    let path = match &p.model {
        ModelSpec::Local { path } => path,
        ModelSpec::Hub { repo } => {
            // A repository missing from the cache names nothing here; the phase then fails
            // where it loads the model, naming the cache it looked in.
            let cache = hf_hub::Cache::from_env();
            return crate::model::checkpoint::resolve(repo, &cache)
                .ok()
                .and_then(|dir| dir.file_name().map(|s| s.to_string_lossy().into_owned()))
                .map(|snapshot| DataSource::Params {
                    name: "model".into(),
                    params: serde_json::json!({"repo": repo, "snapshot": snapshot}),
                })
                .into_iter()
                .collect();
        }
        ModelSpec::TinyVlm { .. } => return Vec::new(),
    };
    let dir = Path::new(path);
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let file = |name: String, path: std::path::PathBuf| DataSource::File { name, path };
    if single.is_file() || !index.is_file() {
        return vec![file("model".into(), single)];
    }
    let shards: std::collections::BTreeSet<String> = std::fs::read_to_string(&index)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("weight_map")?.as_object().map(|m| {
                m.values()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
        })
        // A malformed index is still hashed itself; loading the model reports it.
        .unwrap_or_default();
    std::iter::once(file("model".into(), index))
        .chain(
            shards
                .into_iter()
                .map(|s| file(format!("model/{s}"), dir.join(s))),
        )
        .collect()
}

/// Fresh or dirty, per phase, with the reason: `curric plan FILE --run-dir DIR`.
pub fn status(plan: &Plan, run_dir: &Path) -> Result<BTreeMap<String, String>> {
    let manifest = Manifest::load(&RunDir::new(run_dir).manifest())?;
    let fresh = assess(&phase_inputs(plan), manifest.as_ref())?;
    Ok(fresh
        .into_iter()
        .map(|f| {
            let s = match f.dirty {
                None => "fresh".to_string(),
                Some(r) => format!("dirty: {r}"),
            };
            (f.id, s)
        })
        .collect())
}
