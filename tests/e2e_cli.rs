//! The `curric run` / `plan --run-dir` / `report` commands as a user types them.

use std::path::Path;
use std::process::{Command, Output};

const CURRICULUM: &str = r#"
name   = "cli"
seed   = 5
model  = tiny_vlm(nano)
device = cpu

source shapes { suite = visual_reasoning  n = 6 }

defaults {
  kind             = grpo
  group_size       = 2
  prompts_per_step = 2
  beta             = 0
  max_new_tokens   = 4
}

stage warmup {
  kind = sft
  mix  = shapes
  stop = steps(4)
}

stage check {
  kind         = eval
  after        = warmup
  capabilities = [visual_reasoning]
  levels       = [easy, hard]
  n            = 2
  max_new_tokens = 4
}
"#;

fn curric(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_curric"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("curric runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn crash_resume_plan_status_and_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cli.curr"), CURRICULUM).unwrap();

    let o = curric(
        &[
            "run",
            "cli.curr",
            "--quiet",
            "--checkpoint-every",
            "2",
            "--stop-after-steps",
            "3",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("stopped warmup after step 3 (--stop-after-steps); resume with `curric run cli.curr --run-dir runs/cli`"),
        "{}",
        text(&o)
    );

    let o = curric(&["plan", "cli.curr", "--run-dir", "runs/cli"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("dirty: last run did not finish (running)"),
        "{table}"
    );
    assert!(table.contains("dirty: never ran"), "{table}");

    let o = curric(&["run", "cli.curr", "--quiet"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("warmup stopped at step 4: steps(4)"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("cli: 2 phase(s) ran, 0 fresh"),
        "{}",
        text(&o)
    );

    let o = curric(&["run", "cli.curr", "--quiet"], dir.path());
    assert!(
        text(&o).contains("cli: 0 phase(s) ran, 2 fresh"),
        "{}",
        text(&o)
    );
    let o = curric(&["plan", "cli.curr", "--run-dir", "runs/cli"], dir.path());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).matches(" fresh").count(),
        2
    );

    let o = curric(&["report", "runs/cli"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("visual_reasoning  easy"), "{out}");
    assert!(out.contains("visual_reasoning  hard"), "{out}");
    assert!(dir.path().join("runs/cli/report/index.html").is_file());
    assert!(dir.path().join("runs/cli/report/loss.svg").is_file());

    let o = curric(&["report", "runs/cli", "--json"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("report --json is JSON");
    assert_eq!(v["evals"][0]["phase"], "check");
    assert_eq!(v["evals"][0]["n"], 4);
    assert!(v["evals"][0]["accuracy"]["visual_reasoning"].is_number());
    assert_eq!(
        v["phases"][0]["stop_reason"],
        "warmup stopped at step 4: steps(4)"
    );

    let o = curric(&["run", "cli.curr", "--device", "gpu"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("invalid device `gpu`"), "{}", text(&o));

    let o = curric(&["report", "nowhere"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no manifest.toml"), "{}", text(&o));
}
