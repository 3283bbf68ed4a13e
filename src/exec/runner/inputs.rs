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

fn local_weights(p: &Phase) -> Option<DataSource> {
    match &p.model {
        ModelSpec::Local { path } if p.parents.is_empty() => Some(DataSource::File {
            name: "model".into(),
            path: Path::new(path).join("model.safetensors"),
        }),
        _ => None,
    }
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
