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

fn model_spec(ctx: &mut Ctx, e: &Expr, base_dir: Option<&Path>) -> Option<ModelSpec> {
    const FORMS: &[&str] = &["tiny_vlm", "local", "hf"];
    let ExprKind::Call { name, args } = &e.kind else {
        ctx.type_error(
            e,
            "model",
            "`tiny_vlm(PRESET)`, `local(\"DIR\")` or `hf(\"ORG/REPO\")`",
        );
        return None;
    };
    let form = norm(&name.name);
    match form.as_str() {
        "tiny_vlm" => {
            let slots = ctx.bind(name, args, &["preset"], &["preset"])?;
            let p = slots[0]?;
            let i = ctx.choice(p, "preset", PRESETS)?;
            Some(ModelSpec::TinyVlm {
                preset: PRESETS[i].to_string(),
            })
        }
        "local" => {
            let slots = ctx.bind(name, args, &["path"], &["path"])?;
            let path = ctx.string(slots[0]?, "path")?;
            // Like JSONL sources: relative to the `.curr` file, so a curriculum runs the same
            // from any working directory.
            let path = match base_dir {
                Some(d) if !Path::new(&path).is_absolute() => d.join(&path).display().to_string(),
                _ => path,
            };
            Some(ModelSpec::Local { path })
        }
        "hf" => {
            let slots = ctx.bind(name, args, &["repo"], &["repo"])?;
            let repo = ctx.string(slots[0]?, "repo")?;
            if !repo.contains('/') {
                ctx.push(
                    Diag::error(
                        ErrorKind::Type,
                        e.span,
                        format!("`{repo}` is not a hub repo id"),
                    )
                    .label("expected ORG/NAME")
                    .help("write e.g. hf(\"Qwen/Qwen2-VL-2B-Instruct\")"),
                );
                return None;
            }
            Some(ModelSpec::Hub { repo })
        }
        other => {
            ctx.push(
                Diag::error(
                    ErrorKind::UnknownValue,
                    name.span,
                    format!("unknown model kind `{other}`"),
                )
                .label("unknown model kind")
                .help(suggest(other, FORMS.iter().copied()).unwrap_or_else(|| {
                    "use tiny_vlm(PRESET), local(\"DIR\") or hf(\"ORG/REPO\")".into()
                })),
            );
            None
        }
    }
}

fn device_spec(ctx: &mut Ctx, e: &Expr) -> Option<String> {
    let bad = |ctx: &mut Ctx, text: &str| {
        ctx.push(
            Diag::error(
                ErrorKind::UnknownValue,
                e.span,
                format!("unknown device `{text}`"),
            )
            .label("unknown device")
            .help("use `cpu`, \"cuda:N\" or cuda(N)"),
        );
        None
    };
    match &e.kind {
        ExprKind::Ident(s) if s == "cpu" => Some("cpu".into()),
        ExprKind::Str(s) => {
            if s == "cpu" {
                return Some(s.clone());
            }
            match s.strip_prefix("cuda:").map(|n| n.parse::<u32>()) {
                Some(Ok(n)) => Some(format!("cuda:{n}")),
                _ => bad(ctx, s),
            }
        }
        ExprKind::Call { name, args } if name.name == "cuda" => {
            let slots = ctx.bind(name, args, &["index"], &["index"])?;
            let n = ctx.uint(slots[0]?, "index")?;
            Some(format!("cuda:{n}"))
        }
        ExprKind::Ident(s) => bad(ctx, s),
        _ => {
            ctx.type_error(e, "device", "`cpu`, \"cuda:N\" or cuda(N)");
            None
        }
    }
}

/// A suite source's `families`: each must be a family the capability draws at one of the
/// source's levels, or the source would have nothing to generate.
fn suite_families(
    ctx: &mut Ctx,
    capability: &str,
    levels: &[Level],
    names: &[crate::syntax::Ident],
) -> Option<Vec<String>> {
    use crate::data::suite::{families, Builtin};
    let cap = Builtin::parse(&crate::data::Capability::new(capability)).ok()?;
    let mut known: Vec<&'static str> = Vec::new();
    for l in levels {
        for f in families(cap, *l) {
            if !known.contains(&f.name()) {
                known.push(f.name());
            }
        }
    }
    let mut out = Vec::new();
    for n in names {
        if !known.contains(&n.name.as_str()) {
            ctx.push(
                Diag::error(
                    ErrorKind::UnknownValue,
                    n.span,
                    format!(
                        "`{capability}` has no task family `{}` at these levels",
                        n.name
                    ),
                )
                .label("unknown family")
                .help(suggest(&n.name, known.iter().copied()).unwrap_or_else(|| {
                    format!("its families at these levels: {}", known.join(", "))
                })),
            );
            return None;
        }
        if !out.contains(&n.name) {
            out.push(n.name.clone());
        }
    }
    Some(out)
}

fn levels_list(ctx: &mut Ctx, e: &Expr, key: &str) -> Option<Vec<Level>> {
    let names = ctx.names(e, key)?;
    let mut out = Vec::new();
    for n in names {
        match LEVEL_NAMES.iter().position(|l| *l == n.name) {
            Some(i) => {
                if !out.contains(&level_of(i)) {
                    out.push(level_of(i));
                }
            }
            None => {
                ctx.push(
                    Diag::error(
                        ErrorKind::UnknownValue,
                        n.span,
                        format!("unknown level `{}`", n.name),
                    )
                    .label("not a difficulty level")
                    .help(
                        suggest(&n.name, LEVEL_NAMES.iter().copied())
                            .unwrap_or_else(|| "levels are easy, medium, hard".into()),
                    ),
                );
                return None;
            }
        }
    }
    if out.is_empty() {
        ctx.push(
            Diag::error(ErrorKind::Type, e.span, format!("`{key}` is empty")).label("no levels"),
        );
        return None;
    }
    out.sort();
    Some(out)
}

fn source(
    ctx: &mut Ctx,
    name: &Ident,
    b: &Block,
    seed: u64,
    base_dir: Option<&Path>,
) -> Option<Source> {
    only_attrs(ctx, &b.items, &format!("source `{}`", name.name), &[]);
    let attrs = attrs_of(ctx, &b.items);
    let mut filters = Filters::default();
    let mut suite: Option<(String, Span)> = None;
    let mut jsonl: Option<(String, Span)> = None;
    let mut levels = Level::ALL.to_vec();
    let mut families: Vec<crate::syntax::Ident> = Vec::new();
    let mut n = 100u64;
    let mut sseed = seed;
    let mut ok = true;
    for a in &attrs {
        let v = &a.value;
        let k = a.key.name.as_str();
        match k {
            "suite" => match ctx.choice(v, k, SUITE_CAPABILITIES) {
                Some(i) => suite = Some((SUITE_CAPABILITIES[i].to_string(), a.key.span)),
                None => ok = false,
            },
            "jsonl" => match ctx.string(v, k) {
                Some(p) => jsonl = Some((p, v.span)),
                None => ok = false,
            },
            "levels" => match levels_list(ctx, v, k) {
                Some(l) => levels = l,
                None => ok = false,
            },
            "families" => match ctx.names(v, k) {
                Some(f) => families = f,
                None => ok = false,
            },
            "n" => match ctx.uint_min(v, k, 1) {
                Some(x) => n = x,
                None => ok = false,
            },
            "seed" => match ctx.uint(v, k) {
                Some(x) => sseed = x,
                None => ok = false,
            },
            "pass_rate" => match ctx.band(v, k) {
                Some((lo, hi)) => filters.pass_rate = Some(Band { lo, hi }),
                None => ok = false,
            },
            "capability" => match ctx.word(v, k) {
                Some(c) => filters.capability = Some(c.to_string()),
                None => ok = false,
            },
            "difficulty" => match levels_list(ctx, v, k) {
                Some(l) => filters.difficulty = Some(l),
                None => ok = false,
            },
            "drop_solved" => match ctx.boolean(v, k) {
                Some(x) => filters.drop_solved = x,
                None => ok = false,
            },
            "drop_unsolved" => match ctx.boolean(v, k) {
                Some(x) => filters.drop_unsolved = x,
                None => ok = false,
            },
            _ => {
                unknown_key(ctx, &a.key, "a source", &keys::names(Scope::Source));
                ok = false;
            }
        }
    }
    let kind = match (suite, jsonl) {
        (Some(_), Some((_, span))) => {
            ctx.push(
                Diag::error(
                    ErrorKind::KeyNotAllowed,
                    span,
                    format!("source `{}` sets both `suite` and `jsonl`", name.name),
                )
                .label("second kind of data")
                .help(
                    "a source is either a built-in suite family or a JSONL file; split it in two",
                ),
            );
            return None;
        }
        (None, None) => {
            ctx.push(
                Diag::error(
                    ErrorKind::MissingKey,
                    name.span,
                    format!("source `{}` names no data", name.name),
                )
                .label("no `suite` or `jsonl`")
                .help("add `suite = perception` (built-in) or `jsonl = \"path/to/data.jsonl\"`"),
            );
            return None;
        }
        (Some((capability, _)), None) => {
            // A suite source holds one capability: a filter naming another keeps nothing.
            let cap_attr = attrs.iter().find(|a| a.key.name == "capability");
            if let (Some(want), Some(a)) = (&filters.capability, cap_attr) {
                let e = &a.value;
                if *want != capability {
                    ctx.push(
                        Diag::error(
                            ErrorKind::UnknownValue,
                            e.span,
                            format!("this source's samples are all `{capability}`: `capability = {want}` keeps none"),
                        )
                        .label("no sample has this capability")
                        .help(format!("drop the filter, or write `capability = {capability}`")),
                    );
                }
            }
            let families = suite_families(ctx, &capability, &levels, &families)?;
            SourceKind::Suite {
                capability,
                levels,
                n,
                seed: sseed,
                families,
            }
        }
        (None, Some((path, span))) => {
            let resolved = match base_dir {
                Some(d) if !Path::new(&path).is_absolute() => d.join(&path),
                _ => Path::new(&path).to_path_buf(),
            };
            if !resolved.is_file() {
                ctx.push(
                    Diag::warning(
                        ErrorKind::MissingFile,
                        span,
                        format!("JSONL file `{path}` does not exist (yet)"),
                    )
                    .label("not found")
                    .help(format!(
                        "looked for {}; `curric run` fails unless it exists by then",
                        resolved.display()
                    )),
                );
            }
            SourceKind::Jsonl {
                path,
                resolved: resolved.display().to_string(),
            }
        }
    };
    ok.then(|| Source {
        name: name.name.clone(),
        kind,
        filters,
    })
}

fn reward_terms(ctx: &mut Ctx, e: &Expr) -> Option<Vec<RewardTerm>> {
    let parts: Vec<&Expr> = match &e.kind {
        ExprKind::Sum(xs) => xs.iter().collect(),
        _ => vec![e],
    };
    let mut out: Vec<RewardTerm> = Vec::new();
    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut ok = true;
    let mut weight_sum = 0f64;
    for p in parts {
        let (weight, target) = match &p.kind {
            ExprKind::Weighted { weight, target } => (*weight, target.as_ref()),
            _ => (1.0, p),
        };
        if weight == 0.0 {
            ctx.push(
                Diag::error(ErrorKind::BadWeight, p.span, "a reward term with weight 0")
                    .label("weight 0")
                    .help("remove the term instead"),
            );
            ok = false;
        }
        // Rewards are f32 sums: a weight that overflows there makes every reward infinite.
        weight_sum += weight.abs();
        if !(weight_sum as f32).is_finite() && weight_sum.is_finite() {
            ctx.push(
                Diag::error(
                    ErrorKind::BadWeight,
                    p.span,
                    format!("reward weights sum to {weight_sum:e}, beyond what a reward can hold"),
                )
                .label("too large")
                .help("scale the weights down; only their ratios and the reward's scale matter"),
            );
            ok = false;
            // Reported once per set.
            weight_sum = f64::INFINITY;
        }
        let (name, args): (Ident, &[crate::syntax::Arg]) = match &target.kind {
            ExprKind::Ident(s) => (
                Ident {
                    name: s.clone(),
                    span: target.span,
                },
                &[],
            ),
            ExprKind::Call { name, args } => (name.clone(), args),
            _ => {
                ctx.type_error(target, "reward", "a reward term like `accuracy(boxed)`");
                ok = false;
                continue;
            }
        };
        let Some(info) = catalog::term(&name.name) else {
            ctx.push(
                Diag::error(
                    ErrorKind::UnknownTerm,
                    name.span,
                    format!("unknown reward term `{}`", name.name),
                )
                .label("not in the reward catalogue")
                .help(
                    suggest(&name.name, catalog::TERMS.iter().map(|t| t.name)).unwrap_or_else(
                        || {
                            let all: Vec<&str> = catalog::TERMS.iter().map(|t| t.name).collect();
                            format!("reward terms are: {}", all.join(", "))
                        },
                    ),
                ),
            );
            ok = false;
            continue;
        };
        if let Some(first) = seen.get(&name.name) {
            ctx.push(
                Diag::error(
                    ErrorKind::DuplicateName,
                    name.span,
                    format!("reward term `{}` appears twice in one set", name.name),
                )
                .label("again here")
                .note(*first, "first here")
                .help("merge the two terms into one with the summed weight"),
            );
            ok = false;
            continue;
        }
        seen.insert(name.name.clone(), name.span);
        match term_args(ctx, &name, args, info) {
            Some(args) => out.push(RewardTerm {
                term: name.name.clone(),
                weight,
                args,
            }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn term_args(
    ctx: &mut Ctx,
    name: &Ident,
    args: &[crate::syntax::Arg],
    info: &catalog::TermInfo,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    use serde_json::Value;
    let params: Vec<&str> = info.params.iter().map(|p| p.name).collect();
    let required: Vec<&str> = info
        .params
        .iter()
        .filter(|p| p.default == catalog::Default::Required)
        .map(|p| p.name)
        .collect();
    let slots = ctx.bind(name, args, &params, &required)?;
    let mut map = serde_json::Map::new();
    let mut ok = true;
    for (p, slot) in info.params.iter().zip(slots) {
        let value = match slot {
            Some(e) => {
                let v = match p.kind {
                    ParamKind::Number => ctx.num(e, p.name).map(|x| serde_json::json!(x)),
                    ParamKind::Int => ctx.uint(e, p.name).map(Value::from),
                    ParamKind::Str => ctx.string(e, p.name).map(Value::from),
                    ParamKind::StrList => ctx.strings(e, p.name).map(Value::from),
                    ParamKind::Choice(opts) => {
                        ctx.choice(e, p.name, opts).map(|i| Value::from(opts[i]))
                    }
                };
                if v.is_none() {
                    ok = false;
                }
                v
            }
            None => match p.default {
                catalog::Default::Required | catalog::Default::Absent => None,
                catalog::Default::Number(x) => Some(serde_json::json!(x)),
                catalog::Default::Str(s) => Some(Value::from(s)),
                catalog::Default::StrList(xs) => Some(Value::from(xs.to_vec())),
            },
        };
        if let Some(v) = value {
            map.insert(p.name.to_string(), v);
        }
    }
    // No CLIP ships with curric, so a clip_score without a checkpoint could only fail at run
    // time, after every phase before it has trained.
    if ok && info.name == "clip_score" && !map.contains_key("model") {
        ctx.push(
            Diag::error(
                ErrorKind::MissingKey,
                name.span,
                "`clip_score` needs `model`, a CLIP checkpoint directory",
            )
            .label("no CLIP model to score with")
            .help(
                "write `clip_score(model = \"path/to/clip\")` (config.json, model.safetensors, \
                 tokenizer.json); on the built-in suite, `scene_f1` grades the described \
                 objects against the rendered scene exactly",
            ),
        );
        ok = false;
    }
    ok.then_some(map)
}

fn default_bands() -> BTreeMap<Level, Band> {
    BTreeMap::from([
        (Level::Easy, Band { lo: 0.75, hi: 1.0 }),
        (Level::Medium, Band { lo: 0.25, hi: 0.75 }),
        (Level::Hard, Band { lo: 0.0, hi: 0.25 }),
    ])
}

fn difficulty_spec(ctx: &mut Ctx, block: Option<&Block>) -> (Levels, Option<Ident>) {
    let mut levels = Levels {
        source: LevelSource::Suite,
        bands: default_bands(),
    };
    let mut probe = None;
    let Some(b) = block else {
        return (levels, None);
    };
    only_attrs(ctx, &b.items, "`difficulty`", &[]);
    for a in attrs_of(ctx, &b.items) {
        let k = a.key.name.as_str();
        match k {
            "from" => match &a.value.kind {
                ExprKind::Ident(s) if s == "suite" => levels.source = LevelSource::Suite,
                ExprKind::Ident(s) if s == "pass_rate" => levels.source = LevelSource::PassRate,
                ExprKind::Call { name, args } if name.name == "probe" => {
                    if let Some(slots) = ctx.bind(name, args, &["stage"], &["stage"]) {
                        if let Some(e) = slots[0] {
                            if let Some(w) = ctx.word(e, "stage") {
                                levels.source = LevelSource::Probe {
                                    stage: w.to_string(),
                                };
                                probe = Some(Ident {
                                    name: w.to_string(),
                                    span: e.span,
                                });
                            }
                        }
                    }
                }
                _ => ctx.push(
                    Diag::error(
                        ErrorKind::UnknownValue,
                        a.value.span,
                        format!("unknown level source `{}`", a.value),
                    )
                    .label("not a level source")
                    .help("`from` is `suite`, `pass_rate` or `probe(STAGE)`"),
                ),
            },
            "easy" | "medium" | "hard" => {
                if let Some((lo, hi)) = ctx.band(&a.value, k) {
                    let l = level_of(LEVEL_NAMES.iter().position(|x| *x == k).unwrap_or(0));
                    levels.bands.insert(l, Band { lo, hi });
                }
            }
            _ => unknown_key(ctx, &a.key, "`difficulty`", &keys::names(Scope::Difficulty)),
        }
    }
    (levels, probe)
}

struct Lookup<'a> {
    sources: &'a [Source],
    source_names: &'a [&'a str],
    reward_names: &'a [&'a str],
    reward_sets: &'a [RewardSet],
    stage_names: &'a [&'a str],
    levels: &'a Levels,
}

fn mix_side(ctx: &mut Ctx, e: &Expr, look: &Lookup) -> Option<Vec<MixEntry>> {
    let parts: Vec<&Expr> = match &e.kind {
        ExprKind::Sum(xs) => xs.iter().collect(),
        _ => vec![e],
    };
    let mut out: Vec<MixEntry> = Vec::new();
    let mut ok = true;
    for p in parts {
        let (w, t) = match &p.kind {
            ExprKind::Weighted { weight, target } => (*weight, target.as_ref()),
            _ => (1.0, p),
        };
        let ExprKind::Ident(name) = &t.kind else {
            ctx.type_error(t, "mix", "a source name");
            ok = false;
            continue;
        };
        if w <= 0.0 {
            ctx.push(
                Diag::error(
                    ErrorKind::BadWeight,
                    p.span,
                    format!("mix weight {w} for `{name}` is not positive"),
                )
                .label("must be > 0")
                .help("leave the source out of the mix instead of giving it weight 0"),
            );
            ok = false;
        }
        if !look.source_names.contains(&name.as_str()) {
            ctx.push(
                Diag::error(
                    ErrorKind::UnknownSource,
                    t.span,
                    format!("unknown source `{name}`"),
                )
                .label("no source with this name")
                .help(
                    suggest(name, look.source_names.iter().copied()).unwrap_or_else(|| {
                        if look.source_names.is_empty() {
                            "declare it with `source NAME { … }`".into()
                        } else {
                            format!("sources are: {}", look.source_names.join(", "))
                        }
                    }),
                ),
            );
            ok = false;
            continue;
        }
        if out.iter().any(|m| &m.source == name) {
            ctx.push(
                Diag::error(
                    ErrorKind::DuplicateName,
                    t.span,
                    format!("source `{name}` appears twice in one mix"),
                )
                .label("again here")
                .help("give it one weight"),
            );
            ok = false;
            continue;
        }
        out.push(MixEntry {
            source: name.clone(),
            weight: w,
        });
    }
    if !ok {
        return None;
    }
    let total: f64 = out.iter().map(|m| m.weight).sum();
    if (total - 1.0).abs() > 1e-6 && out.len() > 1 {
        ctx.push(
            Diag::warning(
                ErrorKind::MixNormalised,
                e.span,
                format!("mix weights sum to {total}, not 1; they are normalised"),
            )
            .label(format!("sums to {total}"))
            .help("weights are relative; write them to sum to 1 to silence this"),
        );
    }
    for m in &mut out {
        m.weight /= total;
    }
    Some(out)
}

fn stop_cond(ctx: &mut Ctx, e: &Expr) -> Option<Stop> {
    const CONDS: &[&str] = &[
        "steps",
        "epochs",
        "samples",
        "time",
        "plateau",
        "eval",
        "informative_below",
        "min_steps",
    ];
    match &e.kind {
        ExprKind::Or(xs) | ExprKind::And(xs) => {
            let mut parts = Vec::new();
            let mut ok = true;
            for x in xs {
                match stop_cond(ctx, x) {
                    Some(s) => parts.push(s),
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            Some(if matches!(e.kind, ExprKind::Or(_)) {
                Stop::Any { any: parts }
            } else {
                Stop::All { all: parts }
            })
        }
        ExprKind::Call { name, args } => {
            let n = name.name.as_str();
            let pos = |ctx: &mut Ctx, x: &Expr, k: &str| ctx.num_in(x, k, "> 0", |v| v > 0.0);
            match n {
                "steps" | "samples" | "min_steps" => {
                    let s = ctx.bind(name, args, &["n"], &["n"])?;
                    let v = ctx.uint_min(s[0]?, "n", 1)?;
                    Some(match n {
                        "steps" => Stop::Steps { n: v },
                        "samples" => Stop::Samples { n: v },
                        _ => Stop::MinSteps { n: v },
                    })
                }
                "epochs" => {
                    let s = ctx.bind(name, args, &["n"], &["n"])?;
                    Some(Stop::Epochs {
                        n: pos(ctx, s[0]?, "epochs")?,
                    })
                }
                "time" => {
                    let s = ctx.bind(name, args, &["limit"], &["limit"])?;
                    let x = s[0]?;
                    let text = ctx.string(x, "limit")?;
                    match humantime::parse_duration(&text) {
                        Ok(d) if d.as_secs() > 0 => Some(Stop::Time {
                            seconds: d.as_secs(),
                        }),
                        _ => {
                            ctx.push(
                                Diag::error(
                                    ErrorKind::Type,
                                    x.span,
                                    format!("`{text}` is not a duration"),
                                )
                                .label("expected a duration")
                                .help("write e.g. time(\"90m\") or time(\"2h 30m\")"),
                            );
                            None
                        }
                    }
                }
                "plateau" => {
                    let s = ctx.bind(name, args, &["window", "delta"], &["window"])?;
                    let window = ctx.uint_min(s[0]?, "window", 2)?;
                    let delta = call_arg(ctx, s[1], "plateau", "delta")?;
                    Some(Stop::Plateau { window, delta })
                }
                "eval" => {
                    let s = ctx.bind(
                        name,
                        args,
                        &["threshold", "every", "n"],
                        &["threshold", "every"],
                    )?;
                    let threshold = ctx.num_in(s[0]?, "threshold", "in [0, 1]", |v| {
                        (0.0..=1.0).contains(&v)
                    })?;
                    let every = ctx.uint_min(s[1]?, "every", 1)?;
                    let n = call_arg(ctx, s[2], "eval", "n")? as u64;
                    Some(Stop::Eval {
                        threshold,
                        every,
                        n,
                    })
                }
                "informative_below" => {
                    let s =
                        ctx.bind(name, args, &["fraction", "window"], &["fraction", "window"])?;
                    let fraction =
                        ctx.num_in(s[0]?, "fraction", "in (0, 1]", |v| v > 0.0 && v <= 1.0)?;
                    let window = ctx.uint_min(s[1]?, "window", 1)?;
                    Some(Stop::InformativeBelow { fraction, window })
                }
                _ => {
                    ctx.push(
                        Diag::error(
                            ErrorKind::UnknownValue,
                            name.span,
                            format!("unknown stop condition `{n}`"),
                        )
                        .label("unknown condition")
                        .help(
                            suggest(n, CONDS.iter().copied())
                                .unwrap_or_else(|| format!("conditions are: {}", CONDS.join(", "))),
                        ),
                    );
                    None
                }
            }
        }
        _ => {
            ctx.type_error(e, "stop", "a condition like `epochs(1) or plateau(50)`");
            None
        }
    }
}

fn order_policy(ctx: &mut Ctx, e: &Expr) -> Option<Order> {
    const ORDERS: &[&str] = &[
        "shuffled",
        "easy_to_hard",
        "hard_to_easy",
        "adarft",
        "speed",
    ];
    let (name, args, span) = match &e.kind {
        ExprKind::Ident(s) => (norm(s), &[][..], e.span),
        ExprKind::Call { name, args } => (norm(&name.name), &args[..], name.span),
        _ => {
            ctx.type_error(e, "order", "an order policy");
            return None;
        }
    };
    let id = Ident {
        name: name.clone(),
        span,
    };
    match name.as_str() {
        "shuffled" | "easy_to_hard" | "hard_to_easy" => {
            ctx.bind(&id, args, &[], &[])?;
            Some(match name.as_str() {
                "shuffled" => Order::Shuffled,
                "easy_to_hard" => Order::EasyToHard,
                _ => Order::HardToEasy,
            })
        }
        "adarft" => {
            let s = ctx.bind(&id, args, &["eta", "alpha", "beta", "initial"], &[])?;
            let eta = call_arg(ctx, s[0], "adarft", "eta");
            let alpha = call_arg(ctx, s[1], "adarft", "alpha");
            let beta = call_arg(ctx, s[2], "adarft", "beta");
            let initial = call_arg(ctx, s[3], "adarft", "initial");
            Some(Order::Adarft {
                eta: eta?,
                alpha: alpha?,
                beta: beta?,
                initial: initial?,
            })
        }
        "speed" => {
            let s = ctx.bind(&id, args, &["low", "high"], &[])?;
            let low = call_arg(ctx, s[0], "speed", "low");
            let high = call_arg(ctx, s[1], "speed", "high");
            let (low, high) = (low?, high?);
            if low >= high {
                ctx.out_of_range(
                    e.span,
                    "speed",
                    format!("{low}..{high}"),
                    "a band with low < high",
                );
                return None;
            }
            Some(Order::Speed { low, high })
        }
        _ => {
            ctx.push(
                Diag::error(
                    ErrorKind::UnknownValue,
                    span,
                    format!("unknown order policy `{name}`"),
                )
                .label("unknown policy")
                .help(
                    suggest(&name, ORDERS.iter().copied())
                        .unwrap_or_else(|| format!("policies are: {}", ORDERS.join(", "))),
                ),
            );
            None
        }
    }
}

/// A numeric argument of `call`, range-checked and defaulted by the key table's
/// `call.arg` row.
fn call_arg(ctx: &mut Ctx, e: Option<&Expr>, call: &str, arg: &str) -> Option<f64> {
    let row = keys::find(Scope::Call, &format!("{call}.{arg}"), None)?;
    match (e, row.value) {
        (None, _) => Some(keys::call_num(row.name)),
        (Some(x), keys::Value::Num(r)) => ctx.num_in(x, arg, r.describe(), |v| r.contains(v)),
        (Some(x), keys::Value::Int { min }) => ctx.uint_min(x, arg, min).map(|n| n as f64),
        (Some(x), _) => ctx.num(x, arg),
    }
}

fn handoff_of(ctx: &mut Ctx, blocks: &[&Block], parent: &str) -> Handoff {
    let mut h = Handoff::default();
    // Unnamed blocks first (they apply to every edge), then the ones naming this parent.
    let general = blocks.iter().filter(|b| b.name.is_none());
    let specific = blocks
        .iter()
        .filter(|b| b.name.as_ref().is_some_and(|n| n.name == parent));
    for b in general.chain(specific) {
        only_attrs(ctx, &b.items, "`handoff`", &[]);
        for a in attrs_of(ctx, &b.items) {
            let slot = match a.key.name.as_str() {
                "optimizer" => &mut h.optimizer,
                "lr_schedule" => &mut h.lr_schedule,
                "reference" => &mut h.reference,
                "pass_rates" => &mut h.pass_rates,
                "cursor" => &mut h.cursor,
                _ => {
                    unknown_key(ctx, &a.key, "`handoff`", &keys::names(Scope::Handoff));
                    continue;
                }
            };
            if let Some(i) = ctx.choice(&a.value, &a.key.name, &["keep", "reset"]) {
                *slot = if i == 0 { Carry::Keep } else { Carry::Reset };
            }
        }
    }
    h
}

fn stage(
    ctx: &mut Ctx,
    name: &Ident,
    attrs: &BTreeMap<&str, (&Attr, bool)>,
    handoffs: &[&Block],
    all_keys: &[&str],
    look: &Lookup,
) -> (Stage, Vec<Ident>) {
    let get = |k: &str| attrs.get(k).map(|(a, _)| &a.value);
    let kind = get("kind")
        .and_then(|e| ctx.choice(e, "kind", keys::KINDS))
        .and_then(|i| from_word::<PhaseKind>(keys::KINDS[i]))
        .unwrap_or(PhaseKind::Grpo);
    let allowed: Vec<&str> = keys::stage_keys(kind);
    for (k, (a, own)) in attrs {
        if !all_keys.contains(k) {
            if *own {
                unknown_key(ctx, &a.key, &format!("stage `{}`", name.name), all_keys);
            }
        } else if !allowed.contains(k) && *own {
            ctx.push(
                Diag::error(
                    ErrorKind::KeyNotAllowed,
                    a.key.span,
                    format!("`{k}` does not apply to {} stage", a_kind(kind)),
                )
                .label(format!("not {} setting", a_kind(kind)))
                .help(format!(
                    "{} stage takes: {}",
                    a_kind(kind),
                    allowed.join(", ")
                )),
            );
        }
    }
    // Readers for keys that apply to this kind; defaults for the rest.
    let val = |k: &str| if allowed.contains(&k) { get(k) } else { None };

    let mut after = Vec::new();
    if let Some(e) = get("after") {
        if let Some(ns) = ctx.names(e, "after") {
            after = ns;
        }
    }
    for a in &after {
        if !look.stage_names.contains(&a.name.as_str()) {
            ctx.push(
                Diag::error(
                    ErrorKind::UnknownStage,
                    a.span,
                    format!("unknown stage `{}` in `after`", a.name),
                )
                .label("no stage with this name")
                .help(
                    suggest(&a.name, look.stage_names.iter().copied())
                        .unwrap_or_else(|| format!("stages are: {}", look.stage_names.join(", "))),
                ),
            );
        }
    }
    for h in handoffs {
        if let Some(n) = &h.name {
            if !after.iter().any(|a| a.name == n.name) && attrs.contains_key("after") {
                ctx.push(
                    Diag::error(
                        ErrorKind::UnknownStage,
                        n.span,
                        format!(
                            "`handoff {}` names a stage that `{}` does not come after",
                            n.name, name.name
                        ),
                    )
                    .label("not in `after`")
                    .maybe_help(suggest(&n.name, after.iter().map(|a| a.name.as_str()))),
                );
            }
        }
    }
    if after.is_empty() {
        // No edge reads these blocks; check them anyway.
        let _ = handoff_of(ctx, handoffs, "");
    }
    let deps: Vec<Dependency> = after
        .iter()
        .map(|a| Dependency {
            stage: a.name.clone(),
            handoff: handoff_of(ctx, handoffs, &a.name),
        })
        .collect();

    // Data.
    let mut mix = None;
    if kind != PhaseKind::Eval {
        match val("mix") {
            None => ctx.push(
                Diag::error(
                    ErrorKind::MissingKey,
                    name.span,
                    format!("stage `{}` has no `mix`", name.name),
                )
                .label("no data")
                .help("add `mix = SOURCE` or `mix = 0.5 a + 0.5 b`"),
            ),
            Some(e) => {
                let (a, b) = match &e.kind {
                    ExprKind::Arrow(a, b) => (a.as_ref(), Some(b.as_ref())),
                    _ => (e, None),
                };
                let from = mix_side(ctx, a, look);
                let to = b.map(|b| mix_side(ctx, b, look));
                let schedule = match val("mix_schedule") {
                    Some(s) => ctx
                        .choice(s, "mix_schedule", keys::MIX_SCHEDULES)
                        .and_then(|i| from_word::<Schedule>(keys::MIX_SCHEDULES[i])),
                    None => Some(if to.is_some() {
                        Schedule::Linear
                    } else {
                        Schedule::Constant
                    }),
                };
                if let (Some(from), Some(schedule)) = (from, schedule) {
                    match to {
                        Some(None) => {}
                        Some(Some(to)) => {
                            mix = Some(Mix {
                                from,
                                to: Some(to),
                                schedule,
                            })
                        }
                        None => {
                            mix = Some(Mix {
                                from,
                                to: None,
                                schedule,
                            })
                        }
                    }
                }
            }
        }
    }
    let mix_sources: Vec<&Source> = mix
        .as_ref()
        .map(|m| {
            m.sources()
                .into_iter()
                .filter_map(|n| look.sources.iter().find(|s| s.name == n))
                .collect()
        })
        .unwrap_or_default();

    let capability = match get("capability") {
        Some(e) => ctx.word(e, "capability").map(str::to_string),
        None => None,
    }
    .unwrap_or_else(|| {
        if kind == PhaseKind::Eval {
            return "eval".into();
        }
        let caps: BTreeSet<&str> = mix_sources.iter().filter_map(|s| s.capability()).collect();
        match (caps.len(), caps.iter().next()) {
            (1, Some(c)) if mix_sources.iter().all(|s| s.capability().is_some()) => c.to_string(),
            _ => "mixed".into(),
        }
    });

    let available: Vec<Level> = match look.levels.source {
        LevelSource::Suite if !mix_sources.is_empty() => {
            let mut ls: BTreeSet<Level> = BTreeSet::new();
            for s in &mix_sources {
                match &s.kind {
                    SourceKind::Suite { levels, .. } => ls.extend(levels.iter().copied()),
                    SourceKind::Jsonl { .. } => ls.extend(Level::ALL),
                }
            }
            ls.into_iter().collect()
        }
        _ => Level::ALL.to_vec(),
    };
    let levels = match get("levels") {
        Some(e) => {
            let ls = levels_list(ctx, e, "levels").unwrap_or_else(|| available.clone());
            let missing: Vec<&str> = ls
                .iter()
                .filter(|l| !available.contains(l))
                .map(|l| l.as_str())
                .collect();
            if !missing.is_empty() && kind != PhaseKind::Eval {
                ctx.push(
                    Diag::warning(
                        ErrorKind::EmptyMix,
                        e.span,
                        format!(
                            "stage `{}` asks for {} that none of its sources provide",
                            name.name,
                            missing.join(", ")
                        ),
                    )
                    .label("no data at this level")
                    .help("add the level to a source's `levels`, or drop it here"),
                );
            }
            ls
        }
        None => available.clone(),
    };

    let order = match val("order") {
        Some(e) => order_policy(ctx, e).unwrap_or(Order::Shuffled),
        None => Order::Shuffled,
    };

    let reward = match val("reward") {
        Some(e) => match ctx.word(e, "reward") {
            Some(r) if look.reward_names.contains(&r) => Some(r.to_string()),
            Some(r) => {
                ctx.push(
                    Diag::error(
                        ErrorKind::UnknownReward,
                        e.span,
                        format!("unknown reward set `{r}`"),
                    )
                    .label("no reward set with this name")
                    .help(
                        suggest(r, look.reward_names.iter().copied()).unwrap_or_else(|| {
                            "declare it with `reward NAME = 0.9 accuracy + 0.1 format`".into()
                        }),
                    ),
                );
                None
            }
            None => None,
        },
        None => {
            if kind == PhaseKind::Grpo {
                ctx.push(
                    Diag::error(
                        ErrorKind::MissingKey,
                        name.span,
                        format!("grpo stage `{}` has no `reward`", name.name),
                    )
                    .label("no reward")
                    .help("add `reward = NAME` (set it once in `defaults` to share it)"),
                );
            }
            None
        }
    };
    let _ = look.reward_sets;

    // Settings: every range and default comes from the key table.
    let mut st = StageKeys {
        ctx: &mut *ctx,
        kind,
        val: &val,
    };
    let optim = |st: &mut StageKeys| Optim {
        lr: st.num("lr"),
        lr_schedule: st.word("lr_schedule"),
        warmup_steps: st.int("warmup_steps"),
        weight_decay: st.num("weight_decay"),
        grad_clip: st.num("grad_clip"),
    };
    let settings = match kind {
        PhaseKind::Grpo => {
            let optim = optim(&mut st);
            let group_size = st.int("group_size");
            let prompts = st.int("prompts_per_step");
            let rollouts = group_size.saturating_mul(prompts);
            let micro = st.int_or("micro_batch", rollouts);
            let eps_low = st.num("eps_low");
            let eps_high = st.num_or("eps_high", eps_low);
            let g = GrpoSettings {
                group_size,
                prompts_per_step: prompts,
                micro_batch: micro,
                optim,
                beta: st.num("beta"),
                kl: st.word("kl"),
                eps_low,
                eps_high,
                loss_agg: st.word("loss_agg"),
                advantage: st.word("advantage"),
                mu: st.int("mu"),
                max_new_tokens: st.int("max_new_tokens"),
                temperature: st.num("temperature"),
                top_p: st.num("top_p"),
                dynamic_sampling: st.flag("dynamic_sampling"),
                max_retries: st.int("max_retries"),
                mask_truncated: st.flag("mask_truncated"),
                pass_threshold: st.num("pass_threshold"),
            };
            let batch_span = get("prompts_per_step")
                .or(get("group_size"))
                .map(|e| e.span)
                .unwrap_or(name.span);
            if rollouts > MAX_ROLLOUTS_PER_STEP {
                ctx.push(
                    Diag::error(
                        ErrorKind::BatchMismatch,
                        batch_span,
                        format!("group_size × prompts_per_step = {group_size} × {prompts} = {rollouts} rollouts per step, more than {MAX_ROLLOUTS_PER_STEP}"),
                    )
                    .label("too many rollouts per step")
                    .help(format!("keep group_size × prompts_per_step ≤ {MAX_ROLLOUTS_PER_STEP}")),
                );
            } else if !rollouts.is_multiple_of(micro) {
                let span = get("micro_batch").map(|e| e.span).unwrap_or(batch_span);
                ctx.push(
                    Diag::error(
                        ErrorKind::BatchMismatch,
                        span,
                        format!("micro_batch {micro} does not divide group_size × prompts_per_step = {rollouts}"),
                    )
                    .label("does not divide the rollout batch")
                    .help("pick a micro_batch that divides group_size × prompts_per_step (e.g. group_size)"),
                );
            }
            Settings::Grpo(g)
        }
        PhaseKind::Sft => Settings::Sft(SftSettings {
            optim: optim(&mut st),
            batch_size: st.int("batch_size"),
            max_tokens: st.int("max_tokens"),
        }),
        PhaseKind::Probe => Settings::Probe(ProbeSettings {
            rollouts: st.int("rollouts"),
            batch_size: st.int("batch_size"),
            temperature: st.num("temperature"),
            top_p: st.num("top_p"),
            max_new_tokens: st.int("max_new_tokens"),
            pass_threshold: st.num("pass_threshold"),
        }),
        PhaseKind::Eval => {
            let n = st.int("n");
            let greedy = st.flag("greedy");
            let max_new_tokens = st.int("max_new_tokens");
            let mut caps: Vec<String> = Vec::new();
            for s in look.sources {
                if let Some(c) = s.capability() {
                    if !caps.iter().any(|x| x == c) {
                        caps.push(c.to_string());
                    }
                }
            }
            if let Some(e) = val("capabilities") {
                if let Some(ns) = ctx.names(e, "capabilities") {
                    let mut known: Vec<&str> = SUITE_CAPABILITIES.to_vec();
                    known.extend(caps.iter().map(String::as_str));
                    let mut chosen = Vec::new();
                    for n in ns {
                        if known.contains(&n.name.as_str()) {
                            chosen.push(n.name);
                        } else {
                            ctx.push(
                                Diag::error(
                                    ErrorKind::UnknownValue,
                                    n.span,
                                    format!("unknown capability `{}`", n.name),
                                )
                                .label("no source has this capability")
                                .help(
                                    suggest(&n.name, known.iter().copied()).unwrap_or_else(|| {
                                        format!("capabilities are: {}", known.join(", "))
                                    }),
                                ),
                            );
                        }
                    }
                    caps = chosen;
                }
            }
            Settings::Eval(EvalSettings {
                n,
                capabilities: caps,
                levels: levels.clone(),
                greedy,
                max_new_tokens,
            })
        }
    };

    let stop = match val("stop") {
        Some(e) => stop_cond(ctx, e),
        None => None,
    };
    if matches!(kind, PhaseKind::Grpo | PhaseKind::Sft) {
        match (&stop, val("stop")) {
            (Some(s), Some(e)) if !s.is_bounded() => ctx.push(
                Diag::error(
                    ErrorKind::UnboundedPhase,
                    e.span,
                    format!(
                        "stage `{}` may never stop: `{s}` has no certain bound",
                        name.name
                    ),
                )
                .label("no step, epoch, sample or time bound on every path")
                .help(format!(
                    "bound it, e.g. `stop = {} or steps(1000)`",
                    paren_if_and(s)
                )),
            ),
            (None, None) => ctx.push(
                Diag::error(
                    ErrorKind::UnboundedPhase,
                    name.span,
                    format!(
                        "{} stage `{}` has no `stop` condition",
                        serde_plain(&kind),
                        name.name
                    ),
                )
                .label("never stops")
                .help("add e.g. `stop = epochs(1)` (or set it in `defaults`)"),
            ),
            _ => {}
        }
    }

    // A probe without a stop condition measures every sample once.
    let stop = match (stop, kind) {
        (None, PhaseKind::Probe) => Some(Stop::Epochs { n: 1.0 }),
        (s, _) => s,
    };
    // A cosine LR or a moving mix is laid out over the phase's steps: a phase bounded only by
    // time has no step count to lay it over.
    if let (Some(s), Some(e)) = (&stop, val("stop")) {
        let needs_count: Vec<&str> = [
            (
                "lr_schedule = cosine",
                match &settings {
                    Settings::Grpo(g) => g.optim.lr_schedule == LrSchedule::Cosine,
                    Settings::Sft(x) => x.optim.lr_schedule == LrSchedule::Cosine,
                    _ => false,
                },
            ),
            ("a `->` mix", mix.as_ref().is_some_and(|m| m.to.is_some())),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(what, _)| *what)
        .collect();
        if s.is_bounded() && s.step_bound(Some(1), 1).is_none() && !needs_count.is_empty() {
            ctx.push(
                Diag::error(
                    ErrorKind::UnboundedPhase,
                    e.span,
                    format!(
                        "stage `{}` uses {} but `{s}` gives no step count to lay it over",
                        name.name,
                        needs_count.join(" and ")
                    ),
                )
                .label("bounded by time only")
                .help(format!(
                    "add a count bound, e.g. `stop = {} or steps(1000)`, or use `lr_schedule = constant`",
                    paren_if_and(s)
                )),
            );
        }
    }

    let mut freeze = Vec::new();
    if let Some(e) = val("freeze") {
        if let Some(f) = ctx.strings(e, "freeze") {
            freeze = f;
        }
    }

    (
        Stage {
            name: name.name.clone(),
            capability,
            after: deps,
            mix,
            levels,
            order,
            reward,
            settings,
            stop,
            freeze,
        },
        after,
    )
}

/// Reads one stage's settings through the key table: a written value is range-checked as
/// the table says, an absent or invalid one takes the table's default for the kind.
struct StageKeys<'c, 'v> {
    ctx: &'c mut Ctx,
    kind: PhaseKind,
    val: &'v dyn Fn(&str) -> Option<&'v Expr>,
}

impl StageKeys<'_, '_> {
    fn row(&self, k: &str) -> Option<&'static keys::Key> {
        keys::find(Scope::Stage, k, Some(self.kind))
    }

    fn num_or(&mut self, k: &str, default: f64) -> f64 {
        match (self.row(k).map(|r| r.value), (self.val)(k)) {
            (Some(keys::Value::Num(r)), Some(e)) => self
                .ctx
                .num_in(e, k, r.describe(), |v| r.contains(v))
                .unwrap_or(default),
            _ => default,
        }
    }

    fn num(&mut self, k: &str) -> f64 {
        self.num_or(k, keys::num(k, self.kind))
    }

    fn int_or(&mut self, k: &str, default: u64) -> u64 {
        match (self.row(k).map(|r| r.value), (self.val)(k)) {
            (Some(keys::Value::Int { min }), Some(e)) => {
                self.ctx.uint_min(e, k, min).unwrap_or(default)
            }
            _ => default,
        }
    }

    fn int(&mut self, k: &str) -> u64 {
        self.int_or(k, keys::int(k, self.kind))
    }

    fn flag(&mut self, k: &str) -> bool {
        let d = keys::flag(k, self.kind);
        match (self.val)(k) {
            Some(e) => self.ctx.boolean(e, k).unwrap_or(d),
            None => d,
        }
    }

    /// A choice key as its enum.
    fn word<T: serde::de::DeserializeOwned>(&mut self, k: &str) -> T {
        let written = match (self.row(k).map(|r| r.value), (self.val)(k)) {
            (Some(keys::Value::Choice(ws)), Some(e)) => self
                .ctx
                .choice(e, k, ws)
                .and_then(|i| from_word::<T>(ws[i])),
            _ => None,
        };
        match written.or_else(|| from_word::<T>(keys::word(k, self.kind))) {
            Some(t) => t,
            // The table's own test checks that every choice default parses.
            None => unreachable!("key table: default of `{k}` is not a value of its type"),
        }
    }
}

/// "an sft", "a grpo": the kind with its article.
fn a_kind(k: PhaseKind) -> String {
    let name = serde_plain(&k);
    let article = if k == PhaseKind::Sft || k == PhaseKind::Eval {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

fn paren_if_and(s: &Stop) -> String {
    match s {
        Stop::All { .. } => format!("({s})"),
        _ => s.to_string(),
    }
}

#[allow(clippy::too_many_arguments)]
fn graph_checks(
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
