//! Checks across stages, on the one stage graph (`spec::stage_graph`): cycles, probes that
//! must come first, levels no stage receives, sources and reward sets nothing uses.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn graph_checks(
    ctx: &mut Ctx,
    stages: &[Stage],
    after: &[Vec<Ident>],
    spans: &[Span],
    levels: &Levels,
    probe_ref: Option<&Ident>,
    difficulty_span: Option<Span>,
    sources: &[Source],
    source_blocks: &[(&Ident, &Block)],
    rewards: &[RewardSet],
    reward_decls: &[(&Ident, &Expr)],
) {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let g = stage_graph(stages);
    // Cycles: every strongly connected component with more than one node, or a self-loop.
    for scc in petgraph::algo::tarjan_scc(&g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
        // Walk the cycle from its first-declared stage, following `after` edges backwards
        // (stage → a stage it comes after), so the message reads as written.
        let start = *members.iter().next().unwrap_or(&0);
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = after[cur]
                .iter()
                .filter_map(|d| index.get(d.name.as_str()).copied())
                .find(|j| members.contains(j));
            match next {
                Some(j) if j == start => break,
                Some(j) if !path.contains(&j) => {
                    path.push(j);
                    cur = j;
                }
                _ => break,
            }
        }
        let mut names: Vec<&str> = path.iter().map(|&i| stages[i].name.as_str()).collect();
        names.push(&stages[start].name);
        let d = after[start]
            .iter()
            .find(|d| {
                index
                    .get(d.name.as_str())
                    .is_some_and(|j| members.contains(j))
            })
            .map(|d| d.span)
            .unwrap_or(spans[start]);
        ctx.push(
            Diag::error(
                ErrorKind::Cycle,
                d,
                format!("`after` cycle: {}", names.join(" → ")),
            )
            .label("this dependency closes the cycle")
            .help("stages run in `after` order, so the dependencies must not loop; remove one of them"),
        );
    }
    let acyclic = stage_order(&g).is_ok();

    // Levels from a probe: the probe must exist, be a probe, and precede every stage that
    // needs levels.
    if let (LevelSource::Probe { stage: p }, Some(pref)) = (&levels.source, probe_ref) {
        match index.get(p.as_str()) {
            None => ctx.push(
                Diag::error(
                    ErrorKind::UnknownStage,
                    pref.span,
                    format!("unknown probe stage `{p}`"),
                )
                .label("no stage with this name")
                .maybe_help(suggest(p, stages.iter().map(|s| s.name.as_str()))),
            ),
            Some(&pi) if stages[pi].kind() != PhaseKind::Probe => ctx.push(
                Diag::error(
                    ErrorKind::Type,
                    pref.span,
                    format!("stage `{p}` is not a probe"),
                )
                .label("levels come from a probe stage")
                .help(format!("set `kind = probe` in stage `{p}`")),
            ),
            Some(&pi) if acyclic => {
                for (i, s) in stages.iter().enumerate() {
                    if i == pi || !matches!(s.kind(), PhaseKind::Grpo | PhaseKind::Sft) {
                        continue;
                    }
                    let uses_levels = s.levels.len() < 3 || s.order.needs_difficulty();
                    if uses_levels
                        && !petgraph::algo::has_path_connecting(
                            &g,
                            NodeIndex::new(pi),
                            NodeIndex::new(i),
                            None,
                        )
                    {
                        ctx.push(
                            Diag::error(
                                ErrorKind::NeedsProbe,
                                spans[i],
                                format!("stage `{}` uses difficulty levels but does not come after probe `{p}`", s.name),
                            )
                            .label("levels unknown here")
                            .help(format!("add `{p}` to its `after` (directly or through another stage)")),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    // The remaining checks are warnings that errors above often cause (an unknown name makes
    // its intended target look unused); report them only on an otherwise clean file.
    if ctx.diags.iter().any(|d| d.is_error()) {
        return;
    }

    // Levels no stage trains on.
    let mut provided: BTreeSet<Level> = BTreeSet::new();
    for s in sources {
        match (&levels.source, &s.kind) {
            (LevelSource::Suite, SourceKind::Suite { levels, .. }) => {
                provided.extend(levels.iter().copied())
            }
            _ => provided.extend(Level::ALL),
        }
    }
    let trained: BTreeSet<Level> = stages
        .iter()
        .filter(|s| matches!(s.kind(), PhaseKind::Grpo | PhaseKind::Sft))
        .flat_map(|s| s.levels.iter().copied())
        .collect();
    let unused: Vec<&str> = provided.difference(&trained).map(|l| l.as_str()).collect();
    if !unused.is_empty()
        && stages
            .iter()
            .any(|s| matches!(s.kind(), PhaseKind::Grpo | PhaseKind::Sft))
    {
        let span = difficulty_span
            .or(source_blocks.first().map(|(n, _)| n.span))
            .unwrap_or_default();
        ctx.push(
            Diag::warning(
                ErrorKind::LevelUnused,
                span,
                format!(
                    "no sft or grpo stage receives level{} {}",
                    if unused.len() == 1 { "" } else { "s" },
                    unused.join(", ")
                ),
            )
            .label("levels defined here")
            .help("add the level to some stage's `levels`, or drop it from the sources"),
        );
    }

    // Definitions never used.
    for (n, _) in source_blocks {
        let used = stages.iter().any(|s| {
            s.mix
                .as_ref()
                .is_some_and(|m| m.sources().contains(&n.name.as_str()))
        });
        if !used && sources.iter().any(|s| s.name == n.name) {
            ctx.push(
                Diag::warning(
                    ErrorKind::UnusedDefinition,
                    n.span,
                    format!("source `{}` is never used", n.name),
                )
                .label("not in any mix"),
            );
        }
    }
    for (n, _) in reward_decls {
        let used = stages
            .iter()
            .any(|s| s.reward.as_deref() == Some(n.name.as_str()));
        if !used && rewards.iter().any(|r| r.name == n.name) {
            ctx.push(
                Diag::warning(
                    ErrorKind::UnusedDefinition,
                    n.span,
                    format!("reward set `{}` is never used", n.name),
                )
                .label("no stage uses it"),
            );
        }
    }
}
