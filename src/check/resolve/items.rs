//! Declarations: the header's model and device, sources, reward sets and the difficulty
//! block.

use super::*;

pub(super) fn model_spec(ctx: &mut Ctx, e: &Expr, base_dir: Option<&Path>) -> Option<ModelSpec> {
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

pub(super) fn device_spec(ctx: &mut Ctx, e: &Expr) -> Option<String> {
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
pub(super) fn suite_families(
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

pub(super) fn levels_list(ctx: &mut Ctx, e: &Expr, key: &str) -> Option<Vec<Level>> {
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

pub(super) fn source(
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

pub(super) fn reward_terms(ctx: &mut Ctx, e: &Expr) -> Option<Vec<RewardTerm>> {
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

pub(super) fn term_args(
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

pub(super) fn default_bands() -> BTreeMap<Level, Band> {
    BTreeMap::from([
        (Level::Easy, Band { lo: 0.75, hi: 1.0 }),
        (Level::Medium, Band { lo: 0.25, hi: 0.75 }),
        (Level::Hard, Band { lo: 0.0, hi: 0.25 }),
    ])
}

pub(super) fn difficulty_spec(ctx: &mut Ctx, block: Option<&Block>) -> (Levels, Option<Ident>) {
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
