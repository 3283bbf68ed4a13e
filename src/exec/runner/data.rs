//! What a phase trains on: its sources loaded and filtered by level, the sampler over them,
//! the held-out samples of its eval stop, and the checks that run before any phase starts.

use super::*;

/// The phase's pools, with pass rates (and pass-rate levels) applied and the capability
/// filter done; the other filters go to the sampler.
pub(crate) fn pools(p: &Phase, table: &PassRateTable) -> Result<Vec<(String, Vec<Sample>)>> {
    let bands = match &p.difficulty.source {
        LevelSource::Suite => None,
        _ => {
            let band = |l: Level| {
                p.difficulty
                    .bands
                    .get(&l)
                    .map_or((0.0, 1.0), |b| (b.lo, b.hi))
            };
            Some(LevelBands::declared(
                band(Level::Easy),
                band(Level::Medium),
                band(Level::Hard),
            ))
        }
    };
    let mut out = Vec::new();
    for s in &p.sources {
        let mut samples = match &s.kind {
            SourceKind::Suite {
                capability,
                levels,
                n,
                seed,
                families,
            } => {
                let cap = crate::data::Capability::new(capability.clone());
                let mut all = Vec::new();
                for l in levels {
                    all.extend(
                        suite::generate_families(&cap, *l, *n as usize, *seed, families)
                            .map_err(|e| perr(&p.id, e))?,
                    );
                }
                all
            }
            SourceKind::Jsonl { resolved, .. } => {
                crate::data::jsonl::read(Path::new(resolved), &Default::default())
                    .map_err(|e| perr(&p.id, e))?
                    .samples
            }
        };
        if let Some(cap) = &s.filters.capability {
            samples.retain(|x| x.capability.as_str() == cap);
        }
        table.apply(&mut samples, bands.as_ref());
        out.push((s.name.clone(), samples));
    }
    Ok(out)
}

/// The sampler a phase draws `batch` prompts per step from, its mix laid out over `steps`.
pub(crate) fn sampler_spec(p: &Phase, batch: usize, steps: u64) -> SamplerSpec {
    let by = match p.difficulty.source {
        LevelSource::Suite => DifficultyKey::Level,
        _ => DifficultyKey::PassRate,
    };
    let filter = |f: &Filters| FilterSpec {
        band: f.pass_rate.map(|b| (b.lo, b.hi)),
        drop_solved: f.drop_solved,
        drop_unsolved: f.drop_unsolved,
        levels: f.difficulty.clone(),
    };
    let sources = p
        .sources
        .iter()
        .map(|s| SourceSpec {
            name: s.name.clone(),
            order: p.order.clone(),
            by,
            filter: filter(&s.filters),
        })
        .collect();
    let mix = |entries: &[crate::spec::MixEntry]| {
        MixSpec::new(entries.iter().map(|e| (e.source.clone(), e.weight)))
    };
    let schedule = match &p.mix {
        None => ScheduleSpec::Constant {
            mix: MixSpec::new(p.sources.iter().map(|s| (s.name.clone(), 1.0))),
        },
        Some(m) => match (&m.to, m.schedule) {
            (None, _) | (Some(_), Schedule::Constant) => {
                ScheduleSpec::Constant { mix: mix(&m.from) }
            }
            (Some(to), Schedule::Linear) => ScheduleSpec::Linear {
                from: mix(&m.from),
                to: mix(to),
            },
            (Some(to), Schedule::Cosine) => ScheduleSpec::Cosine {
                from: mix(&m.from),
                to: mix(to),
            },
        },
    };
    SamplerSpec {
        sources,
        schedule,
        batch_size: batch,
        steps: steps.max(1),
        seed: p.seed,
    }
}

/// Held-out samples: `n` per capability × level, from the suite's eval split.
pub(crate) fn eval_samples(
    p: &Phase,
    caps: &[String],
    levels: &[Level],
    n: u64,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for c in caps {
        let cap = crate::data::Capability::new(c.clone());
        for l in levels {
            out.extend(
                suite::eval_split(&cap, *l, n as usize, p.seed).map_err(|e| perr(&p.id, e))?,
            );
        }
    }
    Ok(out)
}

/// Every prompt a phase can draw must fit the model's context with room for its answer.
/// Checked when the phase loads its data, a row that does not fit is named there, instead of
/// failing the step that happens to draw it (and every resume after).
pub(super) fn check_prompt_lengths(
    p: &Phase,
    policy: &Policy,
    pools: &[(String, Vec<Sample>)],
    answer: usize,
) -> Result<()> {
    let context = policy.context_len();
    let per_image = policy.max_image_tokens();
    for (source, samples) in pools {
        for s in samples {
            let room = context.saturating_sub(answer + per_image * s.images.len());
            // A token is at least a byte: a prompt no longer than the room fits without
            // tokenizing, and one 64 times longer cannot fit (nor is it worth tokenizing).
            if s.problem.len() <= room {
                continue;
            }
            let tokens = if s.problem.len() > 64 * context {
                None
            } else {
                Some(policy.encode(&s.problem).map_err(|e| perr(&p.id, e))?.len())
            };
            if tokens.is_none_or(|n| n > room) {
                let size = match tokens {
                    Some(n) => format!("{n} tokens"),
                    None => format!("{} bytes", s.problem.len()),
                };
                return Err(perr(
                    &p.id,
                    format!(
                        "sample `{}` of source `{source}` is too long: its problem is {size}, \
                         and with {} image tokens and {answer} for the answer it exceeds the \
                         model's context of {context} tokens",
                        s.id,
                        per_image * s.images.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reads every JSONL source the plan uses once before any phase starts: a bad row in a source
/// that only a late stage reads must not cost the stages before it their compute.
pub(super) fn validate_sources(plan: &Plan) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for p in &plan.phases {
        for s in &p.sources {
            if let SourceKind::Jsonl { resolved, .. } = &s.kind {
                if seen.insert(resolved.clone()) {
                    crate::data::jsonl::read(Path::new(resolved), &Default::default()).map_err(
                        |e| perr(&p.id, format!("source `{}` cannot be used: {e}", s.name)),
                    )?;
                }
            }
        }
    }
    Ok(())
}
