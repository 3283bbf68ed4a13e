//! End to end: a tiny curriculum (nano model, a few steps) through `run_plan`: the run
//! directory and manifest, skip on rerun, invalidation after an edit, kill-and-resume
//! equality, and falling back from a corrupt checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use curric::exec::manifest::{Manifest, PhaseStatus};
use curric::exec::runner::{run_plan, status, PhaseOutcome, RunOptions};
use curric::plan::Plan;

/// warmup (sft) → rl (grpo, β > 0, a length-graded reward so that groups differ) → final (eval).
fn curriculum(rl_lr: &str) -> String {
    format!(
        r#"
name   = "tiny"
seed   = 3
model  = tiny_vlm(nano)
device = cpu

source shapes {{ suite = perception  n = 8 }}

reward graded = 0.5 soft_overlong(max = 6, buffer = 5) + 0.5 accuracy(boxed)

defaults {{
  kind             = grpo
  reward           = graded
  group_size       = 2
  prompts_per_step = 2
  lr               = {rl_lr}
  beta             = 0.01
  temperature      = 1.0
  max_new_tokens   = 6
}}

stage warmup {{
  kind = sft
  mix  = shapes
  lr   = 1e-3
  stop = steps(3)
}}

stage rl {{
  capability = perception
  after      = warmup
  mix        = shapes
  stop       = steps(5)
}}

// A second arm from the same warm-up: it reads the warm-up's checkpoint too.
stage arm {{
  kind         = eval
  after        = warmup
  capabilities = [perception]
  levels       = [hard]
  n            = 2
  max_new_tokens = 6
}}

stage final {{
  kind         = eval
  after        = rl
  capabilities = [perception]
  levels       = [easy]
  n            = 2
  max_new_tokens = 6
}}
"#
    )
}

fn plan_of(text: &str) -> Plan {
    let checked = curric::check::check_str(text, "tiny.curr", None);
    let c = checked
        .curriculum
        .unwrap_or_else(|| panic!("curriculum does not check: {}", checked.report));
    curric::plan::plan(&c).expect("plans")
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        quiet: true,
        checkpoint_every: 2,
        keep: 3,
        ..RunOptions::new(dir.to_path_buf())
    }
}

fn run(plan: &Plan, o: &RunOptions) -> Vec<PhaseOutcome> {
    run_plan(plan, o, &AtomicBool::new(false)).expect("run succeeds")
}

fn ran(outcomes: &[PhaseOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            PhaseOutcome::Ran { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn final_weights(dir: &Path, phase: &str) -> Vec<u8> {
    let m = Manifest::load(&dir.join("manifest.toml")).unwrap().unwrap();
    let ckpt: PathBuf = dir.join(m.get(phase).unwrap().checkpoint.as_ref().unwrap());
    std::fs::read(ckpt.join("model.safetensors")).unwrap()
}

#[test]
fn run_dir_skip_and_invalidation() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_of(&curriculum("1e-3"));
    let o = opts(dir.path());
    let first = run(&plan, &o);
    assert_eq!(ran(&first), ["warmup", "rl", "arm", "final"]);

    let m = Manifest::load(&dir.path().join("manifest.toml"))
        .unwrap()
        .unwrap();
    assert_eq!(m.curriculum, "tiny");
    for rec in &m.phases {
        assert_eq!(rec.status, PhaseStatus::Done, "{}", rec.id);
        assert!(rec.fingerprint.is_some() && rec.started.is_some() && rec.ended.is_some());
        assert!(humantime::parse_rfc3339(rec.started.as_deref().unwrap()).is_ok());
    }
    assert_eq!(
        m.get("rl").unwrap().stop_reason.as_deref(),
        Some("rl stopped at step 5: steps(5)")
    );
    assert_eq!(
        m.get("rl").unwrap().checkpoint.as_deref(),
        Some("phases/rl/ckpt-000005")
    );
    assert_eq!(m.get("rl").unwrap().global_step_start, 3);
    // The eval reads its parent's final checkpoint.
    assert_eq!(
        m.get("final").unwrap().checkpoint,
        m.get("rl").unwrap().checkpoint
    );

    let rl = dir.path().join("phases/rl");
    for f in [
        "ckpt-000005/model.safetensors",
        "ckpt-000005/optimizer.safetensors",
        "ckpt-000005/state.json",
        "ckpt-000005/config.json",
        "metrics.jsonl",
    ] {
        assert!(rl.join(f).is_file(), "missing {f}");
    }
    assert!(std::fs::read_dir(&rl).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("events.out.tfevents.")));
    let metrics = curric::exec::metrics::read_metrics(&rl.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.iter().map(|r| r.global_step).collect::<Vec<_>>(),
        [4, 5, 6, 7, 8]
    );
    assert!(metrics
        .iter()
        .all(|r| r.values.contains_key("reward") && r.values.contains_key("kl")));
    // GRPO really trained (groups with different rewards, non-zero gradients), so the
    // resume test below compares weights that moved.
    assert!(
        metrics.iter().any(|r| r.values["grad_norm"] > 0.0),
        "{metrics:?}"
    );
    assert_ne!(
        final_weights(dir.path(), "rl"),
        final_weights(dir.path(), "warmup")
    );
    let eval = curric::exec::eval::EvalResult::load(&dir.path().join("phases/final/eval.json"))
        .unwrap()
        .unwrap();
    assert_eq!(eval.n, 2);
    let answered = std::fs::read_to_string(dir.path().join("phases/final/samples.jsonl")).unwrap();
    assert_eq!(answered.lines().count(), 2);
    assert!(answered.contains("\"completion\""));
    assert_eq!(eval.global_step, 8);

    // Rerun: nothing executes, nothing is rewritten.
    let before = std::fs::read(rl.join("metrics.jsonl")).unwrap();
    let t = std::time::Instant::now();
    let second = run(&plan, &o);
    assert!(ran(&second).is_empty(), "{second:?}");
    assert!(t.elapsed().as_secs_f64() < 5.0);
    assert_eq!(std::fs::read(rl.join("metrics.jsonl")).unwrap(), before);
    let st = status(&plan, dir.path()).unwrap();
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");

    // Editing rl's learning rate re-runs rl and its descendant, not the warm-up.
    let edited = plan_of(&curriculum("2e-3"));
    let st = status(&edited, dir.path()).unwrap();
    assert_eq!(st["warmup"], "fresh");
    assert_eq!(st["rl"], "dirty: spec changed");
    assert_eq!(st["final"], "dirty: parent rl re-runs");
    assert_eq!(st["arm"], "fresh");
    let third = run(&edited, &o);
    assert_eq!(ran(&third), ["rl", "final"]);
    assert!(matches!(&third[0], PhaseOutcome::Skipped { id } if id == "warmup"));
}

#[test]
fn kill_and_resume_gives_identical_weights_even_past_a_corrupt_checkpoint() {
    let plan = plan_of(&curriculum("1e-3"));
    let straight = tempfile::tempdir().unwrap();
    run(&plan, &opts(straight.path()));
    let reference = final_weights(straight.path(), "rl");

    // Killed after rl's step 3 (its last checkpoint is step 2), then resumed.
    let resumed = tempfile::tempdir().unwrap();
    let mut o = opts(resumed.path());
    o.crash_after = Some(3);
    o.crash_phase = Some("rl".into());
    let out = run(&plan, &o);
    assert!(
        matches!(out.last(), Some(PhaseOutcome::Crashed { id, step: 3 }) if id == "rl"),
        "{out:?}"
    );
    let m = Manifest::load(&resumed.path().join("manifest.toml"))
        .unwrap()
        .unwrap();
    assert_eq!(m.get("rl").unwrap().status, PhaseStatus::Running);
    let out = run(&plan, &opts(resumed.path()));
    assert_eq!(ran(&out), ["rl", "arm", "final"]);
    assert_eq!(
        final_weights(resumed.path(), "rl"),
        reference,
        "resumed weights differ"
    );
    let eval = |d: &Path| std::fs::read_to_string(d.join("phases/final/eval.json")).unwrap();
    assert_eq!(eval(resumed.path()), eval(straight.path()));

    // Killed after step 5 of 5 would finish; kill after 4 (checkpoints 2 and 4), corrupt
    // the newest, and resume from step 2.
    let corrupt = tempfile::tempdir().unwrap();
    let mut o = opts(corrupt.path());
    o.crash_after = Some(4);
    o.crash_phase = Some("rl".into());
    run(&plan, &o);
    let newest = corrupt
        .path()
        .join("phases/rl/ckpt-000004/model.safetensors");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(100).unwrap();
    drop(f);
    let out = run(&plan, &opts(corrupt.path()));
    assert_eq!(ran(&out), ["rl", "arm", "final"]);
    assert_eq!(
        final_weights(corrupt.path(), "rl"),
        reference,
        "weights after fallback differ"
    );
}

#[test]
fn a_kept_cursor_continues_the_parents_position() {
    let text = |cursor: &str| {
        format!(
            r#"
name  = "cursor"
seed  = 2
model = tiny_vlm(nano)
device = cpu
source s {{ suite = perception  n = 4 }}
stage a {{ kind = sft  mix = s  batch_size = 2  stop = steps(2) }}
stage b {{
  kind = sft  mix = s  batch_size = 2  stop = steps(2)
  after = a
  handoff a {{ cursor = {cursor} }}
}}
"#
        )
    };
    let drawn = |cursor: &str| {
        let dir = tempfile::tempdir().unwrap();
        run(&plan_of(&text(cursor)), &opts(dir.path()));
        let st: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("phases/b/ckpt-000002/state.json")).unwrap(),
        )
        .unwrap();
        st["sampler"]["sources"][0]["drawn"].as_u64().unwrap()
    };
    // a drew 2 × 2 prompts; b draws 2 × 2 more, counted from a's position when kept.
    assert_eq!(drawn("keep"), 8);
    assert_eq!(drawn("reset"), 4);
}

/// Method A in miniature: warm-up → probe (K rollouts per sample) → GRPO on the level the
/// probe's pass-rate table puts the samples in.
#[test]
fn probe_pass_rates_feed_the_next_phases_levels() {
    let text = r#"
name  = "probe"
seed  = 4
model = tiny_vlm(nano)
device = cpu
source pool { suite = perception  n = 2  seed = 9 }
reward acc = 1.0 accuracy(boxed)
difficulty {
  from   = probe(probe)
  easy   = 1.0 .. 1.0
  medium = 0.5 .. 0.5
  hard   = 0.0 .. 0.0
}
defaults { group_size = 2  prompts_per_step = 2  beta = 0  max_new_tokens = 4 }
stage warmup { kind = sft  mix = pool  batch_size = 2  stop = steps(1) }
stage probe {
  kind = probe  after = warmup  mix = pool  reward = acc
  rollouts = 2  max_new_tokens = 4  pass_threshold = 0.5
}
stage rl { kind = grpo  after = probe  mix = pool  reward = acc  levels = [hard]  stop = steps(2) }
"#;
    let dir = tempfile::tempdir().unwrap();
    let out = run(&plan_of(text), &opts(dir.path()));
    assert_eq!(ran(&out), ["warmup", "probe", "rl"]);
    let m = Manifest::load(&dir.path().join("manifest.toml"))
        .unwrap()
        .unwrap();
    // 6 samples (2 per level), 8 per probe step: one step covers the epoch.
    assert_eq!(
        m.get("probe").unwrap().stop_reason.as_deref(),
        Some("probe stopped at step 1: epochs(1)")
    );
    let probe_ckpt = dir
        .path()
        .join(m.get("probe").unwrap().checkpoint.as_ref().unwrap());
    let table: curric::data::PassRateTable = curric::data::PassRateTable::from_json(
        &std::fs::read_to_string(probe_ckpt.join("pass_rates.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(table.len(), 6);
    assert!(table.records.values().all(|r| r.attempts == 2));
    // rl kept the table (hand-off default) and drew only from its hard samples.
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("phases/rl/ckpt-000002/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(st["pass_rates"]["records"].as_object().unwrap().len(), 6);
    // ... and added its own rollouts to it online: G = 2 attempts per drawn prompt.
    let attempts = |v: &serde_json::Value| -> u64 {
        v["pass_rates"]["records"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| r["attempts"].as_u64().unwrap())
            .sum()
    };
    let probed: u64 = table.records.values().map(|r| r.attempts).sum();
    assert!(attempts(&st) > probed, "{} vs {probed}", attempts(&st));
    assert_eq!((attempts(&st) - probed) % 2, 0);
    let hard = table.records.values().filter(|r| r.successes == 0).count();
    assert_eq!(
        st["sampler"]["sources"][0]["order"]
            .as_array()
            .unwrap()
            .len(),
        hard
    );
}

/// A curriculum may start from a checkpoint on disk: `local("DIR")` resolves relative to the
/// `.curr` file, and the weights are part of the root phase's fingerprint.
#[test]
fn local_checkpoint_resolves_beside_the_file_and_is_fingerprinted() {
    let runs = tempfile::tempdir().unwrap();
    let first = runs.path().join("first");
    run(&plan_of(&curriculum("1e-3")), &opts(&first));

    let project = tempfile::tempdir().unwrap();
    let ckpt = project.path().join("start");
    std::fs::create_dir(&ckpt).unwrap();
    let warm = first.join("phases/warmup/ckpt-000003");
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        std::fs::copy(warm.join(f), ckpt.join(f)).unwrap();
    }
    let text = r#"
name   = "from_disk"
model  = local("start")
source shapes { suite = perception  n = 8 }
stage look { kind = eval  capabilities = [perception]  levels = [easy]  n = 2  max_new_tokens = 6 }
"#;
    let checked = curric::check::check_str(text, "from_disk.curr", Some(project.path()));
    let plan = curric::plan::plan(&checked.curriculum.expect("checks")).expect("plans");
    let second = runs.path().join("second");
    assert_eq!(ran(&run(&plan, &opts(&second))), ["look"]);
    assert_eq!(status(&plan, &second).unwrap()["look"], "fresh");

    // Other weights under the same path: the phase must run again.
    let rl = first.join("phases/rl/ckpt-000005/model.safetensors");
    std::fs::copy(rl, ckpt.join("model.safetensors")).unwrap();
    let s = status(&plan, &second).unwrap();
    assert!(s["look"].starts_with("dirty"), "{s:?}");
    assert_eq!(ran(&run(&plan, &opts(&second))), ["look"]);
}

#[test]
fn optimizer_moments_are_keyed_by_parameter_name_and_the_run_dir_has_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_of(&curriculum("1e-3"));
    let o = opts(dir.path());
    // A second writer is refused while the first holds the directory.
    let held = curric::exec::rundir::RunDir::new(dir.path())
        .lock()
        .unwrap();
    let err = run_plan(&plan, &o, &AtomicBool::new(false)).unwrap_err();
    assert!(
        err.to_string().contains("in use by another curric process"),
        "{err}"
    );
    drop(held);
    run(&plan, &o);
    let m = Manifest::load(&dir.path().join("manifest.toml"))
        .unwrap()
        .unwrap();
    let ckpt = dir
        .path()
        .join(m.get("rl").unwrap().checkpoint.as_ref().unwrap());
    let state = candle_core::safetensors::load(
        ckpt.join(curric::exec::checkpoint::OPTIMIZER_FILE),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    // By name, so moments survive a hand-off that changes which tensors train, and a NaN
    // error names the tensor rather than an index.
    assert!(
        state.contains_key("m.model.embed_tokens.weight"),
        "{:?}",
        state.keys()
    );
    assert!(!state.keys().any(|k| k.starts_with("m.#")));
}

#[test]
fn a_bad_source_of_a_late_stage_fails_before_anything_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("late.jsonl");
    std::fs::write(
        &data,
        "{\"problem\": \"What is 1 + 1?\", \"answer\": \"2\"}\n{\"problem\": 3}\n",
    )
    .unwrap();
    let text = format!(
        "name = \"late\"\nseed = 1\nmodel = tiny_vlm(nano)\ndevice = cpu\n\
         source s {{ suite = perception n = 4 }}\n\
         source late {{ jsonl = \"{}\" }}\n\
         reward r = 1.0 accuracy\n\
         stage first {{ kind = sft mix = s stop = steps(2) batch_size = 2 }}\n\
         stage second {{ after = first mix = late reward = r group_size = 2 prompts_per_step = 1 \
         max_new_tokens = 4 stop = steps(1) }}\n",
        data.display()
    );
    let plan = plan_of(&text);
    let run_dir = dir.path().join("run");
    let err = run_plan(&plan, &opts(&run_dir), &AtomicBool::new(false)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("late.jsonl:2"), "{msg}");
    // Nothing trained: the first stage never started.
    assert!(!run_dir.join("phases/first").exists());
}

#[test]
fn a_failed_phase_records_the_steps_it_trained() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    // Easy rows have traces, the hard ones none: easy -> hard, the second step has nothing
    // to train on and fails.
    std::fs::write(
        &data,
        "{\"problem\": \"What is 1 + 1?\", \"answer\": \"2\", \"difficulty\": \"easy\", \"trace\": \"<think> 1 + 1 = 2 </think> \\\\boxed{2}\"}\n\
         {\"problem\": \"What is 2 + 1?\", \"answer\": \"3\", \"difficulty\": \"easy\", \"trace\": \"<think> 2 + 1 = 3 </think> \\\\boxed{3}\"}\n\
         {\"problem\": \"What is 9 + 9?\", \"answer\": \"18\", \"difficulty\": \"hard\"}\n\
         {\"problem\": \"What is 8 + 9?\", \"answer\": \"17\", \"difficulty\": \"hard\"}\n",
    )
    .unwrap();
    let text = format!(
        "name = \"f\"\nseed = 1\nmodel = tiny_vlm(nano)\ndevice = cpu\n\
         source s {{ jsonl = \"{}\" }}\n\
         stage a {{ kind = sft mix = s order = easy_to_hard batch_size = 2 stop = steps(3) }}\n",
        data.display()
    );
    let plan = plan_of(&text);
    let run_dir = dir.path().join("run");
    let err = run_plan(&plan, &opts(&run_dir), &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("reference trace"), "{err}");
    let m = Manifest::load(&run_dir.join("manifest.toml"))
        .unwrap()
        .unwrap();
    let a = m.get("a").unwrap();
    assert_eq!(a.status, PhaseStatus::Failed);
    assert_eq!(a.steps, 1);
}

#[test]
fn a_prompt_longer_than_the_context_is_named_when_the_phase_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("long.jsonl");
    let long = "What is 1 + 1 ? ".repeat(500); // 3,000 tokens > 2,048
    std::fs::write(
        &data,
        format!(
            "{{\"problem\": \"What is 1 + 1?\", \"answer\": \"2\"}}\n\
             {{\"problem\": \"{long}\", \"answer\": \"2\"}}\n"
        ),
    )
    .unwrap();
    let text = format!(
        "name = \"l\"\nseed = 1\nmodel = tiny_vlm(nano)\ndevice = cpu\n\
         source s {{ jsonl = \"{}\" }}\n\
         reward r = 1.0 accuracy\n\
         stage a {{ mix = s reward = r group_size = 2 prompts_per_step = 1 \
         max_new_tokens = 4 stop = steps(2) }}\n",
        data.display()
    );
    let plan = plan_of(&text);
    let run_dir = dir.path().join("run");
    let err = run_plan(&plan, &opts(&run_dir), &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample `long/2`") && err.contains("context of 2048"),
        "{err}"
    );
    let m = Manifest::load(&run_dir.join("manifest.toml"))
        .unwrap()
        .unwrap();
    assert_eq!(m.get("a").unwrap().steps, 0);
}

/// `dtype = bf16`: every phase holds its weights in bf16 (checkpoints too), the optimiser's
/// f32 master weights are checkpointed, so a killed run resumes to the very weights of one
/// that was not killed.
#[test]
fn bf16_runs_checkpoint_in_bf16_and_resume_exactly() {
    let text = curriculum("1e-3").replace("device = cpu", "device = cpu\ndtype  = bf16");
    let plan = plan_of(&text);
    assert!(plan
        .phases
        .iter()
        .all(|p| p.dtype == curric::spec::Dtype::Bf16));
    let straight = tempfile::tempdir().unwrap();
    run(&plan, &opts(straight.path()));
    let m = Manifest::load(&straight.path().join("manifest.toml"))
        .unwrap()
        .unwrap();
    let ckpt = straight
        .path()
        .join(m.get("rl").unwrap().checkpoint.as_ref().unwrap());
    let w =
        candle_core::safetensors::load(ckpt.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert!(w.values().all(|t| t.dtype() == candle_core::DType::BF16));
    let opt = candle_core::safetensors::load(
        ckpt.join(curric::exec::checkpoint::OPTIMIZER_FILE),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(opt.contains_key("master.model.embed_tokens.weight"));

    let resumed = tempfile::tempdir().unwrap();
    let mut o = opts(resumed.path());
    o.crash_after = Some(3);
    o.crash_phase = Some("rl".into());
    run(&plan, &o);
    let out = run(&plan, &opts(resumed.path()));
    assert_eq!(ran(&out), ["rl", "arm", "final"]);
    assert_eq!(
        final_weights(resumed.path(), "rl"),
        final_weights(straight.path(), "rl"),
        "resumed bf16 weights differ"
    );
}
