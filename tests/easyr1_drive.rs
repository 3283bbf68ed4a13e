//! `curric run --backend easyr1` end to end against a stand-in for EasyR1's entry point and
//! checkpoint merger (`tests/fixtures/easyr1_standin`), which validates every config as
//! EasyR1 parses it and leaves EasyR1's files on disk: a probe's results become the next
//! phase's data, a plateau stop is evaluated between chunked launches, weights are merged and
//! handed on, an eval lands in the eval table, a rerun skips, and a killed run resumes from
//! EasyR1's last checkpoint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "support/python.rs"]
mod python;
use python::{python_path, validator};

const CURRICULUM: &str = r#"
name = "driven"
seed = 5
model = hf("Qwen/Qwen2.5-VL-3B-Instruct")
device = cpu
source s { suite = perception n = 6 }
reward acc = 0.9 accuracy(boxed) + 0.1 format(think_then_boxed)
difficulty { from = probe(probe) easy = 0.5 .. 1.0 medium = 0.01 .. 0.49 hard = 0.0 .. 0.0 }
defaults { reward = acc group_size = 4 prompts_per_step = 2 }
stage probe { kind = probe mix = s rollouts = 4 }
stage rl { after = probe kind = grpo mix = s levels = [easy]
           stop = steps(12) or plateau(2, 0.5) }
stage final { after = rl kind = eval n = 3 }
"#;

fn standin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/easyr1_standin")
}

fn run(dir: &Path, die_at: Option<u64>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_curric"));
    cmd.args(["run", "d.curr", "--backend", "easyr1", "--run-dir", "run"])
        .arg("--easyr1")
        .arg(standin())
        .args(["--chunk-steps", "3", "--quiet"])
        .current_dir(dir)
        .env("PYTHONPATH", python_path())
        .env("EASYR1_VALIDATE", validator());
    if let Some(n) = die_at {
        cmd.env("STANDIN_DIE_AT_STEP", n.to_string());
    }
    cmd.output().unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn a_curriculum_runs_on_easyr1_resumes_after_a_kill_and_skips_when_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("d.curr"), CURRICULUM).unwrap();

    // Killed at step 5 of the GRPO phase: after its first chunk (steps 1-3, checkpointed at
    // 3), inside the second.
    let first = run(dir, Some(5));
    assert!(!first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("EasyR1 exited"),
        "{}",
        stderr(&first)
    );
    let phases = dir.join("run/phases");

    // The probe ran once, as a validation-only job, 4 rollouts per sample.
    let probe = lines(&phases.join("probe/launches.jsonl"));
    assert_eq!(probe.len(), 1);
    assert_eq!(probe[0]["val_only"], true);
    let results = lines(&phases.join("probe/results.jsonl"));
    assert_eq!(results.len(), 18 * 4, "6 samples × 3 levels × 4 rollouts");
    let mut passes = std::collections::BTreeMap::<String, u64>::new();
    for r in &results {
        *passes.entry(r["id"].as_str().unwrap().into()).or_default() +=
            r["passed"].as_bool().unwrap() as u64;
    }
    let easy: BTreeSet<String> = passes
        .iter()
        .filter(|(_, &k)| k >= 2)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!easy.is_empty() && easy.len() < passes.len(), "{passes:?}");
    // The GRPO phase trains on the probe's easy samples only.
    for row in lines(&phases.join("rl/train.jsonl")) {
        assert!(easy.contains(row["id"].as_str().unwrap()), "{row}");
    }

    let second = run(dir, None);
    assert!(second.status.success(), "{}", stderr(&second));

    // Resumed: the probe was fresh; the GRPO phase relaunched from EasyR1's checkpoint at 3.
    assert_eq!(lines(&phases.join("probe/launches.jsonl")).len(), 1);
    let rl = lines(&phases.join("rl/launches.jsonl"));
    let starts: Vec<u64> = rl.iter().map(|l| l["start"].as_u64().unwrap()).collect();
    let targets: Vec<u64> = rl
        .iter()
        .map(|l| l["max_steps"].as_u64().unwrap())
        .collect();
    assert_eq!(starts[..2], [0, 3]);
    assert_eq!(targets[..2], [3, 6]);
    assert_eq!(rl[0]["model_path"], "Qwen/Qwen2.5-VL-3B-Instruct");

    // plateau(2, 0.5) holds once it has 4 steps: at step 4, seen after the launch to 6.
    let manifest = std::fs::read_to_string(dir.join("run/manifest.toml")).unwrap();
    assert!(
        manifest.contains("rl stopped at step 6 on EasyR1: plateau(2, 0.5) held at step 4"),
        "{manifest}"
    );
    assert_eq!(
        rl.len(),
        3,
        "the killed launch, its rerun, and no more: {rl:?}"
    );
    let metrics = lines(&phases.join("rl/metrics.jsonl"));
    let steps: Vec<u64> = metrics
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        [1, 2, 3, 4, 5, 6],
        "each step logged once across the kill"
    );
    assert!(metrics.iter().all(|m| m["reward"].is_number()));

    // The eval started from the GRPO phase's merged checkpoint and filled the eval table.
    let ev = lines(&phases.join("final/launches.jsonl"));
    let merged = ev[0]["model_path"].as_str().unwrap();
    assert!(
        merged.ends_with("phases/rl/checkpoints/global_step_6/actor/huggingface"),
        "{merged}"
    );
    let eval: Value =
        serde_json::from_str(&std::fs::read_to_string(phases.join("final/eval.json")).unwrap())
            .unwrap();
    assert_eq!(eval["n"], 9, "3 samples × 3 levels");
    let overall = eval["overall"].as_f64().unwrap();
    assert!(overall > 0.0 && overall < 1.0, "{eval}");
    let report = Command::new(env!("CARGO_BIN_EXE_curric"))
        .args(["report", "run", "--json"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(report.status.success(), "{}", stderr(&report));

    // A rerun finds every phase fresh and launches nothing.
    let third = run(dir, None);
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(
        stderr(&third).contains("0 phase(s) ran on EasyR1, 3 fresh"),
        "{}",
        stderr(&third)
    );
    assert_eq!(lines(&phases.join("rl/launches.jsonl")).len(), 3);
    assert_eq!(lines(&phases.join("final/launches.jsonl")).len(), 1);
}

/// An sft phase has no EasyR1 trainer: the driver trains it with curric (here the shipped
/// base on CPU) on the probe's hard samples, and the next phase starts from its Hugging Face-
/// format weights.
#[test]
fn the_driver_trains_sft_phases_itself_and_hands_their_weights_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = r#"
name = "with_sft"
seed = 5
model = local("base")
device = cpu
source s { suite = perception n = 6 }
reward acc = 0.9 accuracy(boxed) + 0.1 format(think_then_boxed)
difficulty { from = probe(probe) easy = 0.75 .. 1.0 medium = 0.125 .. 0.625 hard = 0.0 .. 0.0 }
stage probe { kind = probe mix = s rollouts = 8 reward = acc }
stage remedial { after = probe kind = sft mix = s levels = [hard] batch_size = 2 stop = steps(2) }
stage final { after = remedial kind = eval n = 2 }
"#;
    std::fs::write(dir.join("d.curr"), text).unwrap();
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/shapes-base");
    std::os::unix::fs::symlink(&base, dir.join("base")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_curric"))
        .args([
            "run",
            "d.curr",
            "--backend",
            "easyr1",
            "--run-dir",
            "run",
            "--quiet",
        ])
        .arg("--easyr1")
        .arg(standin())
        .arg("--model")
        .arg(&base)
        .current_dir(dir)
        .env("PYTHONPATH", python_path())
        .env("EASYR1_VALIDATE", validator())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let phases = dir.join("run/phases");
    let hf = phases.join("remedial/hf");
    assert!(hf.join("model.safetensors").exists());
    let ev = lines(&phases.join("final/launches.jsonl"));
    assert_eq!(ev[0]["model_path"], hf.display().to_string());
    let manifest = std::fs::read_to_string(dir.join("run/manifest.toml")).unwrap();
    assert!(manifest.contains("trained by curric"), "{manifest}");
    // curric trained 2 steps of the probe's 0/8 samples.
    let inner = lines(&phases.join("remedial/curric/phases/remedial/metrics.jsonl"));
    assert_eq!(inner.len(), 2);
}

/// An `eval(...)` stop reads EasyR1's validation on the held-out split every N steps; an
/// `informative_below` stop reads the share of informative groups reward.py logs.
#[test]
fn eval_and_informative_stops_read_what_easyr1_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = r#"
name = "stops"
seed = 5
model = hf("Qwen/Qwen2.5-VL-3B-Instruct")
device = cpu
source s { suite = perception n = 6 }
reward acc = 0.9 accuracy(boxed) + 0.1 format(think_then_boxed)
defaults { reward = acc group_size = 4 prompts_per_step = 2 mix = s kind = grpo }
stage a { stop = steps(12) or eval(0.5, 2, 2) }
stage b { after = a  stop = steps(12) or informative_below(0.9, 2) }
"#;
    std::fs::write(dir.join("d.curr"), text).unwrap();
    let out = run(dir, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let phases = dir.join("run/phases");
    // The scripted policy answers about 3 in 4 held-out questions: the eval at step 2 holds.
    let a = lines(&phases.join("a/metrics.jsonl"));
    assert!(
        a[1]["easyr1/val/accuracy_reward"].as_f64().unwrap() >= 0.5,
        "{:?}",
        a[1]
    );
    let manifest = std::fs::read_to_string(dir.join("run/manifest.toml")).unwrap();
    assert!(
        manifest.contains("a stopped at step 3 on EasyR1: eval(0.5, every 2) held at step 2"),
        "{manifest}"
    );
    let b = lines(&phases.join("b/metrics.jsonl"));
    let informative: Vec<f64> = b
        .iter()
        .map(|m| m["informative_frac"].as_f64().unwrap())
        .collect();
    assert!(
        informative.iter().all(|f| (0.0..0.9).contains(f)),
        "{informative:?}"
    );
    assert!(
        manifest
            .contains("b stopped at step 3 on EasyR1: informative_below(0.9, 2) held at step 2"),
        "{manifest}"
    );
}

/// A phase with a step count runs in one launch, checkpointed every 25 steps; killed after
/// step 27 it keeps the metrics of the 25 steps EasyR1 will not train again, and the resumed
/// launch adds the rest, each step once.
#[test]
fn a_killed_launch_keeps_the_steps_up_to_easyr1s_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = r#"
name = "long"
seed = 5
model = hf("Qwen/Qwen2.5-VL-3B-Instruct")
device = cpu
source s { suite = perception n = 6 }
reward acc = 1.0 accuracy(boxed)
stage rl { kind = grpo mix = s reward = acc group_size = 2 prompts_per_step = 2 stop = steps(30) }
"#;
    std::fs::write(dir.join("d.curr"), text).unwrap();
    let first = run(dir, Some(27));
    assert!(!first.status.success());
    let metrics = dir.join("run/phases/rl/metrics.jsonl");
    assert_eq!(
        lines(&metrics).len(),
        25,
        "steps 1-25, up to the checkpoint"
    );
    let second = run(dir, None);
    assert!(second.status.success(), "{}", stderr(&second));
    let steps: Vec<u64> = lines(&metrics)
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=30).collect::<Vec<u64>>());
    let launches = lines(&dir.join("run/phases/rl/launches.jsonl"));
    assert_eq!(launches[1]["start"], 25);
}

/// What EasyR1 cannot run, curric refuses before launching anything.
#[test]
fn the_driver_refuses_what_easyr1_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let text = CURRICULUM.replace(
        "stage rl { after = probe kind = grpo mix = s levels = [easy]",
        "stage rl { after = probe kind = grpo mix = s levels = [easy] order = speed(0.2, 0.8)",
    );
    std::fs::write(tmp.path().join("d.curr"), text).unwrap();
    let out = run(tmp.path(), None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("stage `rl`: order = speed(0.2..0.8)"), "{err}");
    assert!(!tmp.path().join("run").exists(), "nothing ran");
}
