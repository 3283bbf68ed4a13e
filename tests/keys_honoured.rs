//! Every stage key a user can write changes what runs. For each row of the key table, a tiny
//! phase runs once as written below and once with the key set to another value; what was
//! trained (final weights, optimiser and sampler state, the pass-rate table), sampled and
//! logged (per-step metrics) or evaluated (results and completions) must differ. The keys
//! that change only how a phase runs, not what it computes, are listed in
//! `spec::keys::NOT_BEHAVIOURAL` with the reason, and are checked to be documented there.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

use curric::exec::manifest::Manifest;
use curric::exec::runner::{run_plan, RunOptions};
use curric::spec::keys::{self, Default, Scope, Value};
use curric::spec::PhaseKind;

/// One stage of `kind` from the shipped base, with `setting` (`key = value` pairs separated
/// by `;`) written over its base keys.
fn curriculum(kind: PhaseKind, setting: &str) -> String {
    let base = std::fs::canonicalize("models/shapes-base").unwrap();
    let keys: &[(&str, &str)] = match kind {
        PhaseKind::Grpo => &[
            ("kind", "grpo"),
            ("mix", "s"),
            ("reward", "r"),
            ("group_size", "4"),
            ("prompts_per_step", "2"),
            ("lr", "1e-3"),
            ("beta", "0"),
            ("max_new_tokens", "24"),
            ("stop", "steps(2)"),
        ],
        PhaseKind::Sft => &[
            ("kind", "sft"),
            ("mix", "s"),
            ("batch_size", "4"),
            ("lr", "1e-3"),
            ("stop", "steps(2)"),
        ],
        PhaseKind::Probe => &[
            ("kind", "probe"),
            ("mix", "s"),
            ("rollouts", "2"),
            ("max_new_tokens", "24"),
        ],
        PhaseKind::Eval => &[
            ("kind", "eval"),
            ("capabilities", "[text_reasoning]"),
            ("n", "2"),
            ("max_new_tokens", "24"),
        ],
    };
    let mut pairs: Vec<(String, String)> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for kv in setting.split(';').filter(|x| !x.trim().is_empty()) {
        let (k, v) = kv.split_once('=').expect("key = value");
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match pairs.iter_mut().find(|(x, _)| *x == k) {
            Some(p) => p.1 = v,
            None => pairs.push((k, v)),
        }
    }
    let stage: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    let stage = stage.join("\n  ");
    format!(
        "name = \"keys\"\nseed = 3\nmodel = local(\"{}\")\ndevice = cpu\n\
         source s {{ suite = text_reasoning  n = 2 }}\n\
         source t {{ suite = perception  n = 2 }}\n\
         reward r = 0.9 accuracy(boxed) + 0.1 format(think_then_boxed)\n\
         reward q = 1.0 length_cap(4)\n\
         stage x {{\n  {stage}\n}}\n",
        base.display()
    )
}

/// Everything a run left that says what it computed; times and speeds left out.
fn outcome(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let checked = curric::check::check_str(text, "keys.curr", None);
    let c = checked
        .curriculum
        .unwrap_or_else(|| panic!("does not check:\n{text}\n{}", checked.report));
    let plan = curric::plan::plan(&c).unwrap();
    let opts = RunOptions {
        quiet: true,
        checkpoint_every: 100,
        keep: 1,
        ..RunOptions::new(dir.path().to_path_buf())
    };
    run_plan(&plan, &opts, &AtomicBool::new(false)).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let m = Manifest::load(&dir.path().join("manifest.toml"))
        .unwrap()
        .unwrap();
    let mut out = String::new();
    let rec = m.get("x").unwrap();
    if let Some(ckpt) = &rec.checkpoint {
        let ckpt = dir.path().join(ckpt);
        for f in ["model.safetensors", "optimizer.safetensors"] {
            if let Ok(bytes) = std::fs::read(ckpt.join(f)) {
                out.push_str(&format!("{f} {}\n", blake3::hash(&bytes)));
            }
        }
        if let Ok(state) = std::fs::read_to_string(ckpt.join("state.json")) {
            let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
            drop_clock(&mut v);
            out.push_str(&v.to_string());
        }
    }
    let phase = dir.path().join("phases/x");
    if let Ok(metrics) = std::fs::read_to_string(phase.join("metrics.jsonl")) {
        for line in metrics.lines() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            drop_clock(&mut v);
            out.push_str(&v.to_string());
        }
    }
    for f in ["eval.json", "samples.jsonl"] {
        if let Ok(text) = std::fs::read_to_string(phase.join(f)) {
            let mut v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
            drop_clock(&mut v);
            out.push_str(&v.to_string());
        }
    }
    out
}

/// Removes, at any depth, what a clock decides (times, durations, speeds), so that two runs
/// of the same settings give the same outcome and only settings can make them differ.
fn drop_clock(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.retain(|k, _| {
                !(k.contains("time")
                    || k.contains("elapsed")
                    || k.ends_with("_s")
                    || k.contains("per_s"))
            });
            o.values_mut().for_each(drop_clock);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_clock),
        _ => {}
    }
}

/// A value other than the default, for keys whose values the table describes.
fn other_value(key: &keys::Key) -> Option<String> {
    Some(match (key.value, key.default) {
        (Value::Bool, Default::Bool(b)) => (!b).to_string(),
        (Value::Choice(ws), Default::Word(w)) => ws.iter().find(|x| **x != w)?.to_string(),
        (Value::Int { .. }, Default::Int(n)) => (n + 1).to_string(),
        (Value::Num(r), Default::Num(x)) => {
            let y = if r.contains(x * 0.5) && x != 0.0 {
                x * 0.5
            } else {
                x + 0.25
            };
            format!("{y}")
        }
        _ => return None,
    })
}

/// Keys whose variation needs another value or a context to show (a value the base stage
/// already sets, a setting the key only acts under).
fn special(kind: PhaseKind, key: &str) -> Option<(&'static str, &'static str)> {
    use PhaseKind::*;
    Some(match (kind, key) {
        // (context written with both values, the other value)
        (_, "after") => ("", "after = w"),
        (Grpo | Sft, "capability") => (
            "stop = eval(0.99, 1, 1) or steps(2)",
            "capability = perception",
        ),
        (_, "levels") => ("", "levels = [easy]"),
        (_, "mix") => ("", "mix = t"),
        // Linear and cosine agree at a phase's two ends: give them steps in between.
        (_, "mix_schedule") => ("mix = s -> t; stop = steps(6)", "mix_schedule = cosine"),
        (Grpo | Sft, "order") => ("", "order = easy_to_hard"),
        (Grpo, "reward") | (Probe, "reward") => ("", "reward = q"),
        (Grpo | Sft, "stop") => ("", "stop = steps(1)"),
        (Probe, "stop") => ("", "stop = steps(1)"),
        (Grpo | Sft, "freeze") => ("", "freeze = [\"visual\"]"),
        (Grpo | Sft, "lr") => ("", "lr = 5e-4"),
        (Grpo, "lr_schedule") => ("stop = steps(3)", "lr_schedule = cosine"),
        (Sft, "lr_schedule") => ("stop = steps(3)", "lr_schedule = constant"),
        (Grpo | Sft, "warmup_steps") => ("", "warmup_steps = 2"),
        (Grpo | Sft, "weight_decay") => ("", "weight_decay = 0.5"),
        (Grpo | Sft, "grad_clip") => ("", "grad_clip = 0.001"),
        (Grpo, "group_size") => ("", "group_size = 2"),
        (Grpo, "prompts_per_step") => ("", "prompts_per_step = 1"),
        (Grpo, "beta") => ("", "beta = 0.5"),
        (Grpo, "kl") => ("beta = 0.5; mu = 2", "kl = k1"),
        (Grpo, "eps_low") => ("mu = 3", "eps_low = 0.01"),
        (Grpo, "eps_high") => ("mu = 3", "eps_high = 0.01"),
        (Grpo, "max_retries") => ("dynamic_sampling = true", "max_retries = 0"),
        (Grpo, "mask_truncated") => ("max_new_tokens = 8", "mask_truncated = true"),
        // A reward that is not all-or-nothing, so a threshold has something to cut.
        (Grpo | Probe, "pass_threshold") => ("reward = r", "pass_threshold = 0.05"),
        (Grpo | Probe | Eval, "max_new_tokens") => ("", "max_new_tokens = 4"),
        (Grpo | Probe, "temperature") => ("", "temperature = 0.3"),
        (Grpo | Probe, "top_p") => ("", "top_p = 0.3"),
        (Sft, "batch_size") => ("", "batch_size = 2"),
        (Sft, "max_tokens") => ("", "max_tokens = 4"),
        (Probe, "rollouts") => ("", "rollouts = 3"),
        (Eval, "n") => ("", "n = 3"),
        (Eval, "capabilities") => ("", "capabilities = [perception]"),
        (Eval, "greedy") => ("", "greedy = false"),
        _ => return None,
    })
}

#[test]
fn every_stage_key_changes_what_runs() {
    let mut checked = BTreeSet::new();
    let mut unchanged = Vec::new();
    for kind in [
        PhaseKind::Sft,
        PhaseKind::Probe,
        PhaseKind::Grpo,
        PhaseKind::Eval,
    ] {
        for name in keys::stage_keys(kind) {
            if keys::not_behavioural(name, kind).is_some() {
                continue;
            }
            let row = keys::find(Scope::Stage, name, Some(kind)).unwrap();
            let (context, variant) = match special(kind, name) {
                Some((c, v)) => (c.to_string(), v.to_string()),
                None => match other_value(row) {
                    Some(v) => (String::new(), format!("{name} = {v}")),
                    None => panic!(
                        "{kind:?} `{name}`: no variant; add one to `special` or list the key \
                         in spec::keys::NOT_BEHAVIOURAL with the reason"
                    ),
                },
            };
            // `after` needs a parent to come after.
            let parent = if name == "after" {
                "\nstage w { kind = sft  mix = t  batch_size = 2  lr = 1e-2  stop = steps(1) }\n"
            } else {
                ""
            };
            let a = outcome(&format!("{}{parent}", curriculum(kind, &context)));
            let b = outcome(&format!(
                "{}{parent}",
                curriculum(kind, &format!("{context}; {variant}"))
            ));
            if a == b {
                unchanged.push(format!("{kind:?} `{variant}`"));
            }
            checked.insert(format!("{kind:?}.{name}"));
        }
    }
    assert!(
        unchanged.is_empty(),
        "settings that changed nothing: {unchanged:?}"
    );
    assert!(checked.len() > 40, "{checked:?}");
}

#[test]
fn the_same_settings_run_twice_give_the_same_outcome() {
    // Without this, a clock value left in the outcome would make every comparison above
    // differ and that test could not fail.
    for kind in [
        PhaseKind::Sft,
        PhaseKind::Probe,
        PhaseKind::Grpo,
        PhaseKind::Eval,
    ] {
        let text = curriculum(kind, "");
        assert_eq!(outcome(&text), outcome(&text), "{kind:?}");
    }
}

#[test]
fn keys_that_change_only_how_a_phase_runs_are_table_keys() {
    for (name, kinds, why) in keys::NOT_BEHAVIOURAL {
        for kind in *kinds {
            assert!(
                keys::stage_keys(*kind).contains(name),
                "`{name}` is not a {kind:?} key"
            );
        }
        assert!(!why.is_empty());
    }
}
