//! Tree → [`Curriculum`]: names resolved, inheritance applied, defaults filled, numbers
//! range-checked. Every problem becomes a [`Diag`]; resolution goes on past errors so that
//! one run reports them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::data::Level;
use crate::reward::catalog::{self, ParamKind};
use crate::syntax::{Attr, Block, Expr, ExprKind, File, Ident, Item, Span};

use super::diagnostic::{suggest, Diag, ErrorKind};
use petgraph::graph::NodeIndex;

use super::values::{norm, Ctx};
use crate::spec::keys::{self, Scope};
use crate::spec::*;

mod exprs;
mod graph;
mod items;
mod stage;

use exprs::*;
use graph::*;
use items::*;
use stage::*;

pub const BLOCKS: &[&str] = &["source", "stage", "defaults", "difficulty", "reward"];
pub const SUITE_CAPABILITIES: &[&str] = &["perception", "text_reasoning", "visual_reasoning"];
const LEVEL_NAMES: &[&str] = &["easy", "medium", "hard"];

/// The largest rollout batch (group_size × prompts_per_step) one step may ask for.
pub const MAX_ROLLOUTS_PER_STEP: u64 = 4096;

fn level_of(i: usize) -> Level {
    Level::ALL[i.min(2)]
}

/// Attributes of one block, checked for duplicates, by key.
fn attrs_of<'a>(ctx: &mut Ctx, items: &'a [Item]) -> Vec<&'a Attr> {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut out = Vec::new();
    for it in items {
        if let Item::Attr(a) = it {
            if let Some(first) = seen.get(a.key.name.as_str()) {
                ctx.push(
                    Diag::error(
                        ErrorKind::DuplicateKey,
                        a.key.span,
                        format!("`{}` is set twice in the same block", a.key.name),
                    )
                    .label("set again here")
                    .note(*first, "first set here")
                    .help("remove one of them"),
                );
                continue;
            }
            seen.insert(&a.key.name, a.key.span);
            out.push(a);
        }
    }
    out
}

fn unknown_key(ctx: &mut Ctx, key: &Ident, what: &str, allowed: &[&str]) {
    ctx.push(
        Diag::error(
            ErrorKind::UnknownKey,
            key.span,
            format!("unknown key `{}` in {what}", key.name),
        )
        .label("unknown key")
        .help(
            suggest(&key.name, allowed.iter().copied())
                .unwrap_or_else(|| format!("{what} takes: {}", allowed.join(", "))),
        ),
    );
}

/// Rejects blocks and bindings nested where only attributes belong.
fn only_attrs(ctx: &mut Ctx, items: &[Item], what: &str, allow_blocks: &[&str]) {
    for it in items {
        match it {
            Item::Block(b) if allow_blocks.contains(&b.kind.name.as_str()) => {}
            Item::Block(Block { kind, .. })
            | Item::Binding(crate::syntax::Binding { kind, .. }) => {
                ctx.push(
                    Diag::error(
                        ErrorKind::UnknownBlock,
                        kind.span,
                        format!("`{}` cannot appear inside {what}", kind.name),
                    )
                    .label("not allowed here")
                    .maybe_help(suggest(&kind.name, allow_blocks.iter().copied())),
                );
            }
            Item::Attr(_) => {}
        }
    }
}

struct StageDecl<'a> {
    block: &'a Block,
    name: &'a Ident,
}

/// Named definitions, with duplicates reported.
struct Names<'a> {
    what: &'static str,
    seen: BTreeMap<&'a str, Span>,
}

impl<'a> Names<'a> {
    fn new(what: &'static str) -> Self {
        Names {
            what,
            seen: BTreeMap::new(),
        }
    }

    fn add(&mut self, ctx: &mut Ctx, id: &'a Ident) -> bool {
        if let Some(first) = self.seen.get(id.name.as_str()) {
            ctx.push(
                Diag::error(
                    ErrorKind::DuplicateName,
                    id.span,
                    format!("{} `{}` is defined twice", self.what, id.name),
                )
                .label("defined again here")
                .note(*first, "first defined here")
                .help(format!("rename one of the {}s", self.what)),
            );
            return false;
        }
        self.seen.insert(&id.name, id.span);
        true
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.seen.keys().copied()
    }
}

pub fn resolve(
    file: &File,
    default_name: &str,
    base_dir: Option<&Path>,
    seed_override: Option<u64>,
) -> (Option<Curriculum>, Vec<Diag>) {
    let mut ctx = Ctx::new();
    let mut header: Vec<&Attr> = Vec::new();
    let mut source_blocks: Vec<(&Ident, &Block)> = Vec::new();
    let mut rewards: Vec<(&Ident, &Expr)> = Vec::new();
    let mut stages: Vec<StageDecl> = Vec::new();
    let mut defaults: Option<&Block> = None;
    let mut difficulty: Option<&Block> = None;
    let mut source_names = Names::new("source");
    let mut reward_names = Names::new("reward set");
    let mut stage_names = Names::new("stage");
    let mut header_seen: HashMap<&str, Span> = HashMap::new();

    for item in &file.items {
        match item {
            Item::Attr(a) => {
                let header_keys = keys::names(Scope::Header);
                if !header_keys.contains(&a.key.name.as_str()) {
                    let mut all: Vec<&str> = header_keys;
                    all.extend(BLOCKS);
                    unknown_key(&mut ctx, &a.key, "the header", &all);
                    continue;
                }
                if let Some(first) = header_seen.get(a.key.name.as_str()) {
                    ctx.push(
                        Diag::error(
                            ErrorKind::DuplicateKey,
                            a.key.span,
                            format!("`{}` is set twice", a.key.name),
                        )
                        .label("set again here")
                        .note(*first, "first set here"),
                    );
                    continue;
                }
                header_seen.insert(&a.key.name, a.key.span);
                header.push(a);
            }
            Item::Binding(b) => {
                if b.kind.name == "reward" {
                    if reward_names.add(&mut ctx, &b.name) {
                        rewards.push((&b.name, &b.value));
                    }
                } else {
                    ctx.push(
                        Diag::error(
                            ErrorKind::UnknownBlock,
                            b.kind.span,
                            format!("unknown definition `{} {} = …`", b.kind.name, b.name.name),
                        )
                        .label("unknown")
                        .help(
                            suggest(&b.kind.name, ["reward"]).unwrap_or_else(|| {
                                "only `reward NAME = …` is written this way".into()
                            }),
                        ),
                    );
                }
            }
            Item::Block(b) => {
                let needs_name = matches!(b.kind.name.as_str(), "source" | "stage");
                match (b.kind.name.as_str(), &b.name) {
                    ("source", Some(n)) => {
                        if source_names.add(&mut ctx, n) {
                            source_blocks.push((n, b));
                        }
                    }
                    ("stage", Some(n)) => {
                        if stage_names.add(&mut ctx, n) {
                            stages.push(StageDecl { block: b, name: n });
                        }
                    }
                    ("defaults", None) | ("difficulty", None) => {
                        let slot = if b.kind.name == "defaults" {
                            &mut defaults
                        } else {
                            &mut difficulty
                        };
                        if let Some(first) = slot {
                            ctx.push(
                                Diag::error(
                                    ErrorKind::DuplicateName,
                                    b.kind.span,
                                    format!("a second `{}` block", b.kind.name),
                                )
                                .label("second block")
                                .note(first.kind.span, "first here")
                                .help("merge the two blocks"),
                            );
                        } else {
                            *slot = Some(b);
                        }
                    }
                    (_, None) if needs_name => ctx.push(
                        Diag::error(
                            ErrorKind::MissingKey,
                            b.kind.span,
                            format!("a `{}` block needs a name", b.kind.name),
                        )
                        .label("name missing")
                        .help(format!("write `{} NAME {{ … }}`", b.kind.name)),
                    ),
                    ("defaults" | "difficulty", Some(n)) => ctx.push(
                        Diag::error(
                            ErrorKind::Type,
                            n.span,
                            format!("a `{}` block takes no name", b.kind.name),
                        )
                        .label("remove this name"),
                    ),
                    ("reward", _) => ctx.push(
                        Diag::error(
                            ErrorKind::UnknownBlock,
                            b.kind.span,
                            "a reward set is written `reward NAME = …`, not as a block",
                        )
                        .label("not a block")
                        .help("write e.g. `reward method_b = 0.9 accuracy(boxed) + 0.1 format`"),
                    ),
                    (k, _) => ctx.push(
                        Diag::error(
                            ErrorKind::UnknownBlock,
                            b.kind.span,
                            format!("unknown block `{k}`"),
                        )
                        .label("unknown block")
                        .help(
                            suggest(k, BLOCKS.iter().copied())
                                .unwrap_or_else(|| format!("blocks are: {}", BLOCKS.join(", "))),
                        ),
                    ),
                }
                if b.extends.is_some() && b.kind.name != "stage" {
                    if let Some(e) = &b.extends {
                        ctx.push(
                            Diag::error(
                                ErrorKind::KeyNotAllowed,
                                e.span,
                                format!("only stages can extend; `{}` cannot", b.kind.name),
                            )
                            .label("not allowed here"),
                        );
                    }
                }
            }
        }
    }

    // Header.
    let mut name = default_name.to_string();
    let mut seed = 0u64;
    let mut model = ModelSpec::TinyVlm {
        preset: "nano".into(),
    };
    let mut device = "cpu".to_string();
    let mut dtype = crate::spec::Dtype::F32;
    for a in &header {
        match a.key.name.as_str() {
            "name" => {
                if let Some(s) = ctx.string(&a.value, "name") {
                    name = s;
                }
            }
            "seed" => {
                if let Some(s) = ctx.uint(&a.value, "seed") {
                    seed = s;
                }
            }
            "model" => {
                if let Some(m) = model_spec(&mut ctx, &a.value, base_dir) {
                    model = m;
                }
            }
            "device" => {
                if let Some(d) = device_spec(&mut ctx, &a.value) {
                    device = d;
                }
            }
            "dtype" => match ctx.choice(&a.value, "dtype", keys::DTYPES) {
                Some(0) => dtype = crate::spec::Dtype::F32,
                Some(_) => dtype = crate::spec::Dtype::Bf16,
                None => {}
            },
            _ => {}
        }
    }
    if let Some(s) = seed_override {
        seed = s;
    }

    // Sources.
    let mut sources = Vec::new();
    for (n, b) in &source_blocks {
        if let Some(s) = source(&mut ctx, n, b, seed, base_dir) {
            sources.push(s);
        }
    }
    let source_list: Vec<&str> = source_names.names().collect();

    // Reward sets.
    let mut reward_sets = Vec::new();
    for (n, e) in &rewards {
        if let Some(terms) = reward_terms(&mut ctx, e) {
            reward_sets.push(RewardSet {
                name: n.name.clone(),
                terms,
            });
        }
    }
    let reward_list: Vec<&str> = reward_names.names().collect();

    // Difficulty axis.
    let (levels_spec, probe_ref) = difficulty_spec(&mut ctx, difficulty);

    // Defaults: validated once here; stages re-read them silently.
    let all_keys = keys::names(Scope::Stage);
    let mut default_attrs: Vec<&Attr> = Vec::new();
    let mut default_handoffs: Vec<&Block> = Vec::new();
    if let Some(d) = defaults {
        only_attrs(&mut ctx, &d.items, "`defaults`", &["handoff"]);
        for a in attrs_of(&mut ctx, &d.items) {
            if a.key.name == "after" {
                ctx.push(
                    Diag::error(
                        ErrorKind::KeyNotAllowed,
                        a.key.span,
                        "`after` cannot be a default",
                    )
                    .label("not allowed in `defaults`")
                    .help("dependencies belong to each stage"),
                );
            } else if all_keys.contains(&a.key.name.as_str()) {
                default_attrs.push(a);
            } else {
                unknown_key(&mut ctx, &a.key, "`defaults`", &all_keys);
            }
        }
        for it in &d.items {
            if let Item::Block(h) = it {
                if h.kind.name == "handoff" {
                    default_handoffs.push(h);
                }
            }
        }
    }

    // Inheritance: `extends` chains, cycle-checked.
    let by_name: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.name.as_str(), i))
        .collect();
    let stage_list: Vec<&str> = stages.iter().map(|s| s.name.name.as_str()).collect();
    let mut chains: Vec<Vec<usize>> = Vec::new(); // ancestors first, self last
                                                  // Stages whose `extends` names no stage: the keys they would inherit are unknown, so
                                                  // "missing key" errors about them would only repeat the one that matters.
    let mut broken: Vec<Span> = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        let mut chain = vec![i];
        let mut cur = s.block;
        while let Some(p) = &cur.extends {
            match by_name.get(p.name.as_str()) {
                None => {
                    broken.push(s.name.span);
                    ctx.push(
                        Diag::error(
                            ErrorKind::UnknownStage,
                            p.span,
                            format!("stage `{}` extends unknown stage `{}`", s.name.name, p.name),
                        )
                        .label("no such stage")
                        .maybe_help(suggest(&p.name, stage_list.iter().copied())),
                    );
                    break;
                }
                Some(&j) if chain.contains(&j) => {
                    if j == i {
                        let names: Vec<&str> = chain
                            .iter()
                            .rev()
                            .chain([&i])
                            .map(|&k| stage_list[k])
                            .collect();
                        ctx.push(
                            Diag::error(
                                ErrorKind::Cycle,
                                s.name.span,
                                format!("`extends` cycle: {}", names.join(" → ")),
                            )
                            .label("extends itself through this chain")
                            .help("break the chain: a stage cannot inherit from itself"),
                        );
                    }
                    break;
                }
                Some(&j) => {
                    chain.push(j);
                    cur = stages[j].block;
                }
            }
        }
        chain.reverse();
        chains.push(chain);
    }

    // Stages.
    let mut out_stages: Vec<Stage> = Vec::new();
    let mut after_spans: Vec<Vec<Ident>> = Vec::new();
    let mut stage_spans: Vec<Span> = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        only_attrs(
            &mut ctx,
            &s.block.items,
            &format!("stage `{}`", s.name.name),
            &["handoff"],
        );
        let own = attrs_of(&mut ctx, &s.block.items);
        // Layered: defaults < ancestors (outermost first) < own.
        let mut layered: BTreeMap<&str, (&Attr, bool)> = BTreeMap::new();
        for a in &default_attrs {
            layered.insert(&a.key.name, (a, false));
        }
        let mut handoffs: Vec<&Block> = default_handoffs.clone();
        for &j in &chains[i] {
            let is_self = j == i;
            let attrs = if is_self {
                own.clone()
            } else {
                stages[j]
                    .block
                    .items
                    .iter()
                    .filter_map(|it| match it {
                        Item::Attr(a) => Some(a),
                        _ => None,
                    })
                    .collect()
            };
            for a in attrs {
                layered.insert(&a.key.name, (a, is_self));
            }
            for it in &stages[j].block.items {
                if let Item::Block(h) = it {
                    if h.kind.name == "handoff" {
                        handoffs.push(h);
                    }
                }
            }
        }
        let (stage, after) = stage(
            &mut ctx,
            s.name,
            &layered,
            &handoffs,
            &all_keys,
            &Lookup {
                sources: &sources,
                source_names: &source_list,
                reward_names: &reward_list,
                reward_sets: &reward_sets,
                stage_names: &stage_list,
                levels: &levels_spec,
            },
        );
        out_stages.push(stage);
        after_spans.push(after);
        stage_spans.push(s.name.span);
    }

    graph_checks(
        &mut ctx,
        &out_stages,
        &after_spans,
        &stage_spans,
        &levels_spec,
        probe_ref.as_ref(),
        difficulty.map(|d| d.kind.span),
        &sources,
        &source_blocks,
        &reward_sets,
        &rewards,
    );

    if stages.is_empty() && !ctx.diags.iter().any(|d| d.is_error()) {
        ctx.push(
            Diag::error(ErrorKind::MissingKey, file.span, "the curriculum has no stages")
                .label("nothing to run")
                .help("add a stage, e.g. `stage perception { mix = SOURCE  reward = NAME  stop = epochs(1) }`"),
        );
    }

    ctx.diags.retain(|d| {
        !(broken.contains(&d.span)
            && matches!(d.kind, ErrorKind::MissingKey | ErrorKind::UnboundedPhase))
    });
    let diags = dedup(ctx.diags);
    let curriculum = Curriculum {
        name,
        seed,
        model,
        device,
        dtype,
        levels: levels_spec,
        sources,
        rewards: reward_sets,
        stages: out_stages,
    };
    (Some(curriculum), diags)
}

fn dedup(diags: Vec<Diag>) -> Vec<Diag> {
    let mut seen = BTreeSet::new();
    diags
        .into_iter()
        .filter(|d| seen.insert((d.code(), d.span, d.message.clone())))
        .collect()
}
