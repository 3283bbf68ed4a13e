//! The planner: a checked [`Curriculum`] → a [`Plan`], a DAG of concrete phases that the
//! executor runs as written. The plan is pure data (serde), stable JSON with a `version`.
//!
//! # How the axes expand
//! One stage becomes exactly one phase. The difficulty axis does *not* split a stage into
//! per-level phases: a stage trains on its `levels` through one ordered sampler (`order`),
//! so a stage keeps one optimiser and one continuous LR schedule from easy to hard, and a
//! stop condition such as `epochs(1)` means one pass over all of its levels. Level
//! selections (method A's easy / medium / hard split) become per-source filters on the
//! phases they feed (`sources[].filters.difficulty`), resolved by the executor through
//! `difficulty` (the suite's levels, or pass-rate bands over the data field or over a probe
//! phase's pass-rate table).
//!
//! # Order and ids
//! Phases are listed in topological order with ties broken by declaration order, so a plan
//! diffs cleanly against another. A phase's id is its stage name.
//!
//! # Weights across edges
//! Weights always cross an edge. A phase with several parents starts from the weights of
//! its first listed parent; the other parents only order it.
//!
//! # JSON (version 2)
//! ```text
//! { "version": 2, "name", "seed", "model": {"kind": "tiny_vlm", "preset"} | {"kind": "local", "path"}
//!   | {"kind": "hub", "repo"}, "device": "cpu" | "cuda:N",
//!   "phases": [ { "id", "index", "stage", "capability",
//!       "model", "device", "seed", "parents": [id],
//!       "sources": [ { "name", "kind": "suite", "capability", "levels", "n", "seed"
//!                    | "kind": "jsonl", "path", "resolved", "filters": {…} } ],
//!       "levels": ["easy", …], "difficulty": { "from": "suite" | "pass_rate" | "probe",
//!       "stage"?, "bands": {level: {lo, hi}} },
//!       "mix": { "from": [{source, weight}], "to": [...] | null, "schedule" } | null,
//!       "order": { "policy": "shuffled" | "easy_to_hard" | "hard_to_easy" | "adarft" | "speed", params… },
//!       "reward": { "name", "terms": [ { "term", "weight", "args": {every param} } ] } | null,
//!       "settings": { "kind": "sft|probe|grpo|eval", the kind's settings… },
//!       "stop": { "kind": "steps", "n" } | { "kind": "all", "all": [...] } | … | null,
//!       "freeze": [prefix], "estimate": { "samples", "samples_exact", "steps", "rollouts", "tokens" } } ],
//!   "edges": [ { "from", "to", "condition", "handoff": { "optimizer", "lr_schedule",
//!       "reference", "pass_rates", "cursor": "keep" | "reset" } } ] }
//! ```

mod render;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::data::Level;
use crate::spec::{
    stage_graph, stage_order, Curriculum, Dtype, Filters, Handoff, Levels, Mix, ModelSpec, Order,
    PhaseKind, RewardTerm, Settings, Source, SourceKind, Stop,
};

pub use render::{render_dot, render_table, summary};

/// Bumped whenever the JSON shape changes incompatibly.
pub const PLAN_VERSION: u32 = 2;

pub type PhaseId = String;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub name: String,
    pub seed: u64,
    pub model: ModelSpec,
    pub device: String,
    #[serde(default, skip_serializing_if = "Dtype::is_f32")]
    pub dtype: Dtype,
    /// In topological order, ties broken by declaration order.
    pub phases: Vec<Phase>,
    /// Sorted by (parent position, child position).
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSource {
    pub name: String,
    #[serde(flatten)]
    pub kind: SourceKind,
    /// The source's own filters, with the phase's level selection folded into `difficulty`.
    pub filters: Filters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReward {
    pub name: String,
    pub terms: Vec<RewardTerm>,
}

/// Upper-bound costs known before running; `None` where data size or a stop condition is
/// only known at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Samples one epoch of this phase covers.
    pub samples: Option<u64>,
    /// False when level filters from pass rates will shrink `samples` at run time.
    pub samples_exact: bool,
    pub steps: Option<u64>,
    /// Completions generated (grpo: steps × prompts × G; probe: samples × K; eval: n × cells).
    pub rollouts: Option<u64>,
    /// At most rollouts × max_new_tokens.
    pub tokens: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub id: PhaseId,
    pub index: usize,
    pub stage: String,
    pub capability: String,
    pub model: ModelSpec,
    pub device: String,
    #[serde(default, skip_serializing_if = "Dtype::is_f32")]
    pub dtype: Dtype,
    pub seed: u64,
    pub parents: Vec<PhaseId>,
    pub sources: Vec<PhaseSource>,
    pub levels: Vec<Level>,
    pub difficulty: Levels,
    pub mix: Option<Mix>,
    pub order: Order,
    pub reward: Option<PhaseReward>,
    /// What the phase does, with its settings: `{"kind": "grpo", "group_size": 8, …}`.
    pub settings: Settings,
    pub stop: Option<Stop>,
    pub freeze: Vec<String>,
    pub estimate: Estimate,
}

impl Phase {
    pub fn kind(&self) -> PhaseKind {
        self.settings.kind()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub from: PhaseId,
    pub to: PhaseId,
    /// When the child may start: the parent's stop condition, as written.
    pub condition: String,
    pub handoff: Handoff,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("stage `{0}` depends on unknown stage `{1}`")]
    UnknownStage(String, String),
    #[error("the stages' `after` dependencies form a cycle through `{0}`")]
    Cycle(String),
}

impl Plan {
    /// The plan as a petgraph DAG (node weights index into `phases`).
    pub fn graph(&self) -> DiGraph<&Phase, &Edge> {
        let mut g = DiGraph::new();
        let nodes: HashMap<&str, NodeIndex> = self
            .phases
            .iter()
            .map(|p| (p.id.as_str(), g.add_node(p)))
            .collect();
        for e in &self.edges {
            if let (Some(&a), Some(&b)) = (nodes.get(e.from.as_str()), nodes.get(e.to.as_str())) {
                g.add_edge(a, b, e);
            }
        }
        g
    }

    pub fn phase(&self, id: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.id == id)
    }

    /// The phase `id` alone, as a root starting from `model` (default: the plan's model):
    /// one phase run where its parents ran elsewhere (`curric run --only`, an sft phase of a
    /// curriculum that runs on EasyR1).
    pub fn only(&self, id: &str, model: Option<ModelSpec>) -> Option<Plan> {
        let model = model.unwrap_or_else(|| self.model.clone());
        let phase = Phase {
            index: 0,
            parents: vec![],
            model: model.clone(),
            ..self.phase(id)?.clone()
        };
        Some(Plan {
            model,
            phases: vec![phase],
            edges: vec![],
            ..self.clone()
        })
    }

    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Samples this source holds, when known before loading (suites only), restricted to
/// `levels`.
fn source_count(src: &Source, levels: &[Level]) -> Option<u64> {
    match &src.kind {
        SourceKind::Suite {
            capability,
            levels: ls,
            n,
            families,
            ..
        } => {
            // A level that draws none of the source's families yields nothing.
            let draws = |l: &Level| {
                families.is_empty()
                    || crate::data::suite::Builtin::parse(&crate::data::Capability::new(
                        capability.as_str(),
                    ))
                    .is_ok_and(|b| {
                        crate::data::suite::families(b, *l)
                            .iter()
                            .any(|f| families.iter().any(|x| x == f.name()))
                    })
            };
            let k = ls
                .iter()
                .filter(|l| levels.contains(l) && draws(l))
                .filter(|l| {
                    src.filters
                        .difficulty
                        .as_ref()
                        .is_none_or(|d| d.contains(l))
                })
                .count() as u64;
            Some(k * n)
        }
        SourceKind::Jsonl { .. } => None,
    }
}

fn probe_default_reward() -> PhaseReward {
    let mut args = serde_json::Map::new();
    if let Some(info) = crate::reward::catalog::term("accuracy") {
        for p in info.params {
            match p.default {
                crate::reward::catalog::Default::Number(x) => {
                    args.insert(p.name.into(), serde_json::json!(x));
                }
                crate::reward::catalog::Default::Str(s) => {
                    args.insert(p.name.into(), s.into());
                }
                _ => {}
            }
        }
    }
    PhaseReward {
        name: "accuracy".into(),
        terms: vec![RewardTerm {
            term: "accuracy".into(),
            weight: 1.0,
            args,
        }],
    }
}

/// Compiles a checked curriculum. Fails only on inputs the checker rejects (a cycle or a
/// dangling `after`), so a plan from a clean check always succeeds.
pub fn plan(c: &Curriculum) -> Result<Plan, PlanError> {
    // Dangling `after`s are the checker's to report; a plan from unchecked input refuses them.
    for s in &c.stages {
        for d in &s.after {
            if !c.stages.iter().any(|x| x.name == d.stage) {
                return Err(PlanError::UnknownStage(s.name.clone(), d.stage.clone()));
            }
        }
    }
    let order = stage_order(&stage_graph(&c.stages))
        .map_err(|i| PlanError::Cycle(c.stages[i].name.clone()))?;

    let sources: HashMap<&str, &Source> = c.sources.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut phases = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let s = &c.stages[i];
        position.insert(&s.name, pos);
        let all_levels = s.levels.len() == Level::ALL.len();
        let mix_sources: Vec<&Source> = s
            .mix
            .as_ref()
            .map(|m| {
                m.sources()
                    .into_iter()
                    .filter_map(|n| sources.get(n).copied())
                    .collect()
            })
            .unwrap_or_default();
        let phase_sources: Vec<PhaseSource> = mix_sources
            .iter()
            .map(|src| {
                let mut filters = src.filters.clone();
                if !all_levels {
                    let lv: Vec<Level> = match &filters.difficulty {
                        Some(d) => s.levels.iter().copied().filter(|l| d.contains(l)).collect(),
                        None => s.levels.clone(),
                    };
                    filters.difficulty = Some(lv);
                }
                PhaseSource {
                    name: src.name.clone(),
                    kind: src.kind.clone(),
                    filters,
                }
            })
            .collect();

        // Samples per epoch: known for suites; exact when levels are the suite's own.
        let from_suite = matches!(c.levels.source, crate::spec::LevelSource::Suite);
        let count_levels: Vec<Level> = if from_suite {
            s.levels.clone()
        } else {
            Level::ALL.to_vec()
        };
        let mut samples: Option<u64> = Some(0);
        for src in &mix_sources {
            samples = match (samples, source_count(src, &count_levels)) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        let has_filters = mix_sources.iter().any(|src| {
            src.filters.pass_rate.is_some() || src.filters.drop_solved || src.filters.drop_unsolved
        });
        let samples_exact = samples.is_some() && (from_suite || all_levels) && !has_filters;

        let reward = match (&s.reward, s.kind()) {
            (Some(r), _) => c
                .rewards
                .iter()
                .find(|x| &x.name == r)
                .map(|x| PhaseReward {
                    name: x.name.clone(),
                    terms: x.terms.clone(),
                }),
            (None, PhaseKind::Probe) => Some(probe_default_reward()),
            _ => None,
        };

        let (steps, rollouts, tokens) = match &s.settings {
            Settings::Grpo(g) => {
                let steps = s
                    .stop
                    .as_ref()
                    .and_then(|st| st.step_bound(samples, g.prompts_per_step));
                let r = steps.map(|st| st * g.prompts_per_step * g.group_size);
                (steps, r, r.map(|r| r * g.max_new_tokens))
            }
            Settings::Sft(x) => (
                s.stop
                    .as_ref()
                    .and_then(|st| st.step_bound(samples, x.batch_size)),
                Some(0),
                Some(0),
            ),
            Settings::Probe(p) => {
                let r = samples.map(|n| n * p.rollouts);
                (None, r, r.map(|r| r * p.max_new_tokens))
            }
            Settings::Eval(e) => {
                let r = e.n * (e.capabilities.len() * e.levels.len()) as u64;
                (None, Some(r), Some(r * e.max_new_tokens))
            }
        };
        let is_eval = s.kind() == PhaseKind::Eval;

        phases.push(Phase {
            id: s.name.clone(),
            index: pos,
            stage: s.name.clone(),
            capability: s.capability.clone(),
            model: c.model.clone(),
            device: c.device.clone(),
            dtype: c.dtype,
            seed: c.seed,
            parents: s.after.iter().map(|d| d.stage.clone()).collect(),
            sources: phase_sources,
            levels: s.levels.clone(),
            difficulty: c.levels.clone(),
            mix: s.mix.clone(),
            order: s.order.clone(),
            reward,
            settings: s.settings.clone(),
            stop: s.stop.clone(),
            freeze: s.freeze.clone(),
            estimate: Estimate {
                samples: if is_eval { None } else { samples },
                samples_exact: samples_exact || is_eval,
                steps,
                rollouts,
                tokens,
            },
        });
    }

    let mut edges = Vec::new();
    for s in &c.stages {
        let parent_stop = |p: &str| {
            c.stages
                .iter()
                .find(|x| x.name == p)
                .map(|x| match (&x.stop, x.kind()) {
                    (Some(st), _) => st.to_string(),
                    (None, PhaseKind::Probe) => "probe done".into(),
                    (None, PhaseKind::Eval) => "eval done".into(),
                    (None, _) => "done".into(),
                })
                .unwrap_or_default()
        };
        for d in &s.after {
            edges.push(Edge {
                from: d.stage.clone(),
                to: s.name.clone(),
                condition: parent_stop(&d.stage),
                handoff: d.handoff.clone(),
            });
        }
    }
    edges.sort_by_key(|e| {
        (
            position.get(e.from.as_str()).copied(),
            position.get(e.to.as_str()).copied(),
        )
    });

    Ok(Plan {
        version: PLAN_VERSION,
        name: c.name.clone(),
        seed: c.seed,
        model: c.model.clone(),
        device: c.device.clone(),
        dtype: c.dtype,
        phases,
        edges,
    })
}

/// What `curric plan` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Dot,
    Json,
}

/// `curric plan FILE [--dot|--json]`: checks, plans and prints to stdout.
pub fn run_plan(path: &std::path::Path, format: Format) -> std::process::ExitCode {
    let (c, _) = match crate::check::load(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let p = match plan(&c) {
        Ok(p) => p,
        Err(e) => {
            crate::errln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    crate::out::print(&match format {
        Format::Table => format!("{}{}\n", render_table(&p, None), summary(&p)),
        Format::Dot => render_dot(&p),
        Format::Json => format!("{}\n", p.to_json()),
    })
}
