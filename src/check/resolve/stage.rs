//! One stage: its kind, dependencies, data, levels, order, reward, settings (read through
//! the key table) and stop condition.

use super::*;

pub(super) fn stage(
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
pub(super) struct StageKeys<'c, 'v> {
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

    /// A choice key as its enum. A word the table allows but the enum does not know is a
    /// bug in curric's key table, reported as such rather than silently replaced.
    fn word<T: serde::de::DeserializeOwned + Default>(&mut self, k: &str) -> T {
        let (written, span) = match (self.row(k).map(|r| r.value), (self.val)(k)) {
            (Some(keys::Value::Choice(ws)), Some(e)) => {
                (self.ctx.choice(e, k, ws).map(|i| ws[i]), Some(e.span))
            }
            _ => (None, None),
        };
        let word = written.unwrap_or_else(|| keys::word(k, self.kind));
        match from_word::<T>(word) {
            Some(t) => t,
            None => {
                self.ctx.push(
                    Diag::error(
                        ErrorKind::Internal,
                        span.unwrap_or_default(),
                        format!("internal: `{k} = {word}` is in curric's key table but not in its settings"),
                    )
                    .help("this is a bug in curric; please report it"),
                );
                T::default()
            }
        }
    }
}

/// "an sft", "a grpo": the kind with its article.
pub(super) fn a_kind(k: PhaseKind) -> String {
    let name = serde_plain(&k);
    let article = if k == PhaseKind::Sft || k == PhaseKind::Eval {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

pub(super) fn paren_if_and(s: &Stop) -> String {
    match s {
        Stop::All { .. } => format!("({s})"),
        _ => s.to_string(),
    }
}
