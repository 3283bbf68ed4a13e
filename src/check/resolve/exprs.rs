//! Values inside a stage: mixes, stop trees, orders (with their call arguments) and
//! hand-offs.

use super::*;

pub(super) struct Lookup<'a> {
    pub(super) sources: &'a [Source],
    pub(super) source_names: &'a [&'a str],
    pub(super) reward_names: &'a [&'a str],
    pub(super) reward_sets: &'a [RewardSet],
    pub(super) stage_names: &'a [&'a str],
    pub(super) levels: &'a Levels,
}

pub(super) fn mix_side(ctx: &mut Ctx, e: &Expr, look: &Lookup) -> Option<Vec<MixEntry>> {
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

pub(super) fn stop_cond(ctx: &mut Ctx, e: &Expr) -> Option<Stop> {
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

pub(super) fn order_policy(ctx: &mut Ctx, e: &Expr) -> Option<Order> {
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
pub(super) fn call_arg(ctx: &mut Ctx, e: Option<&Expr>, call: &str, arg: &str) -> Option<f64> {
    let row = keys::find(Scope::Call, &format!("{call}.{arg}"), None)?;
    match (e, row.value) {
        (None, _) => Some(keys::call_num(row.name)),
        (Some(x), keys::Value::Num(r)) => ctx.num_in(x, arg, r.describe(), |v| r.contains(v)),
        (Some(x), keys::Value::Int { min }) => ctx.uint_min(x, arg, min).map(|n| n as f64),
        (Some(x), _) => ctx.num(x, arg),
    }
}

pub(super) fn handoff_of(ctx: &mut Ctx, blocks: &[&Block], parent: &str) -> Handoff {
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
