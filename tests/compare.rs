//! `curric compare` end to end on a tiny budget: two curricula that share their first phase,
//! two seeds each. The table's shape, its mean/std arithmetic against hand-computed values,
//! the shared phase trained once per seed, and a killed compare resuming to the same table as
//! an uninterrupted one.

use std::path::{Path, PathBuf};
use std::process::Command;

use curric::exec::compare::{budget_warnings, mean_std, Table};
use curric::exec::manifest::Manifest;

/// Both arms: the same sft warm-up (same id and settings, so the same fingerprint per seed),
/// then a different grpo stage.
fn curriculum(name: &str, rl_mix: &str, rl_steps: u32) -> String {
    format!(
        r#"
name   = "{name}"
seed   = 5
model  = tiny_vlm(nano)
device = cpu

source perception       {{ suite = perception        n = 6 }}
source visual_reasoning {{ suite = visual_reasoning  n = 6 }}

reward acc = 1.0 accuracy(boxed)

defaults {{
  kind             = grpo
  reward           = acc
  group_size       = 2
  prompts_per_step = 2
  lr               = 1e-3
  beta             = 0.0
  max_new_tokens   = 6
}}

stage warm {{
  kind = sft
  mix  = 0.5 perception + 0.5 visual_reasoning
  lr   = 1e-3
  batch_size = 2
  stop = steps(2)
}}

stage rl {{
  after = warm
  mix   = {rl_mix}
  stop  = steps({rl_steps})
}}
"#
    )
}

fn write_arms(dir: &Path) -> Vec<PathBuf> {
    let a = dir.join("a.curr");
    let b = dir.join("b.curr");
    std::fs::write(&a, curriculum("arm_a", "perception", 2)).unwrap();
    std::fs::write(&b, curriculum("arm_b", "visual_reasoning", 2)).unwrap();
    vec![a, b]
}

fn compare(files: &[PathBuf], out: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_curric"));
    cmd.arg("compare")
        .args(files)
        .args([
            "--seeds",
            "2",
            "--eval-n",
            "2",
            "--max-new-tokens",
            "6",
            "--quiet",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("RAYON_NUM_THREADS", "1");
    cmd.output().unwrap()
}

fn table(out: &Path) -> Table {
    serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap()
}

#[test]
fn mean_and_sample_std_match_hand_computed_values() {
    let m = mean_std(&[0.5, 0.25]);
    assert!((m.mean - 0.375).abs() < 1e-12);
    // sqrt(((0.125)² + (0.125)²) / (2 − 1)) = 0.125·√2
    assert!((m.std - 0.176_776_695_296_636_9).abs() < 1e-12);
    let m = mean_std(&[0.2, 0.4, 0.9]);
    assert!((m.mean - 0.5).abs() < 1e-12);
    // deviations −0.3, −0.1, 0.4: (0.09 + 0.01 + 0.16) / 2 = 0.13
    assert!((m.std - 0.13f64.sqrt()).abs() < 1e-12);
    assert_eq!(mean_std(&[0.7]).std, 0.0);
}

#[test]
fn budgets_that_differ_by_more_than_five_percent_are_flagged() {
    let ok = budget_warnings(&[("a".into(), Some(1000)), ("b".into(), Some(1040))]);
    assert!(ok.is_empty(), "{ok:?}");
    let bad = budget_warnings(&[("a".into(), Some(1000)), ("b".into(), Some(1100))]);
    assert_eq!(bad.len(), 1);
    assert!(bad[0].contains("not compute-matched") && bad[0].contains("10%"));
    let unknown = budget_warnings(&[("a".into(), None)]);
    assert!(unknown[0].contains("cannot size"));
}

#[test]
fn compare_runs_the_grid_shares_phases_and_resumes_after_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_arms(tmp.path());

    // Uninterrupted.
    let clean = tmp.path().join("clean");
    let o = compare(&files, &clean, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = table(&clean);

    // Shape: one base (both arms start from tiny_vlm(nano); a preset's base is its weights
    // under the first seed), two arms × two seeds.
    assert_eq!(t.arms.len(), 2);
    assert_eq!(
        t.capabilities,
        ["perception", "text_reasoning", "visual_reasoning"]
    );
    assert_eq!(t.eval.samples, 2 * 3 * 3);
    for a in &t.arms {
        assert_eq!(a.runs.iter().map(|r| r.seed).collect::<Vec<_>>(), [1, 2]);
        let overall: Vec<f64> = a.runs.iter().map(|r| r.scores.overall).collect();
        let m = mean_std(&overall);
        assert!((a.overall.mean - m.mean).abs() < 1e-12);
        assert!((a.overall.std - m.std).abs() < 1e-12);
        let base = t.bases.iter().find(|b| b.key == a.base).unwrap();
        assert!((a.gain - (m.mean - base.scores.overall)).abs() < 1e-12);
        for cap in &t.capabilities {
            let xs: Vec<f64> = a.runs.iter().map(|r| r.scores.by_capability[cap]).collect();
            assert!((a.by_capability[cap].mean - mean_std(&xs).mean).abs() < 1e-12);
        }
        // 2 grpo steps × 2 prompts × G 2, and 2 sft steps × batch 2, per seed.
        assert_eq!(a.rollouts, 8.0);
        assert_eq!(a.sft_samples, 4.0);
        for r in &a.runs {
            // Every accuracy is a count over the shared set.
            let k = r.scores.overall * t.eval.samples as f64;
            assert!((k - k.round()).abs() < 1e-9);
        }
    }
    let md = std::fs::read_to_string(clean.join("compare.md")).unwrap();
    assert_eq!(md, String::from_utf8_lossy(&o.stdout));
    assert!(md.contains("| arm_a |") && md.contains("| arm_b |") && md.contains("| base: "));
    assert_eq!(
        md.lines().filter(|l| l.starts_with('|')).count(),
        2 + t.bases.len() + 2
    );
    let svg = std::fs::read_to_string(clean.join("compare.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("arm_b"));

    // The shared warm-up trained once per seed: the second arm adopted the first's record.
    for seed in [1, 2] {
        let m = |arm: &str| {
            Manifest::load(
                &clean
                    .join("runs")
                    .join(arm)
                    .join(format!("seed-{seed}"))
                    .join("manifest.toml"),
            )
            .unwrap()
            .unwrap()
        };
        let (a, b) = (m("arm_a"), m("arm_b"));
        let (wa, wb) = (a.get("warm").unwrap(), b.get("warm").unwrap());
        assert_eq!(wa.fingerprint, wb.fingerprint);
        assert_eq!((&wa.started, &wa.ended), (&wb.started, &wb.ended));
        // The arms' own stages did run separately.
        assert_ne!(
            a.get("rl").unwrap().fingerprint,
            b.get("rl").unwrap().fingerprint
        );
    }
    // Different seeds train different warm-ups.
    let fp = |seed: u32| {
        Manifest::load(
            &clean
                .join("runs/arm_a")
                .join(format!("seed-{seed}"))
                .join("manifest.toml"),
        )
        .unwrap()
        .unwrap()
        .get("warm")
        .unwrap()
        .fingerprint
        .clone()
    };
    assert_ne!(fp(1), fp(2));

    // Killed after one step, then resumed: the same table as the uninterrupted grid.
    let killed = tmp.path().join("killed");
    let o = compare(&files, &killed, &["--stop-after-steps", "1"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!killed.join("compare.json").exists());
    let o = compare(&files, &killed, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = table(&killed);
    for (x, y) in t.arms.iter().zip(&r.arms) {
        let scores = |a: &curric::exec::compare::Arm| {
            a.runs.iter().map(|r| r.scores.clone()).collect::<Vec<_>>()
        };
        assert_eq!(scores(x), scores(y), "{}", x.curriculum);
    }

    // A rerun trains nothing and reads the cached evals: the same numbers again.
    let o = compare(&files, &killed, &[]);
    assert!(o.status.success());
    assert_eq!(table(&killed).arms, r.arms);

    // Finished run directories join the table as they are.
    let dirs: Vec<PathBuf> = [1, 2]
        .iter()
        .map(|s| clean.join("runs/arm_a").join(format!("seed-{s}")))
        .collect();
    let joined = tmp.path().join("joined");
    let o = compare(&dirs, &joined, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = table(&joined);
    assert_eq!(j.arms.len(), 1);
    assert_eq!(j.arms[0].overall, t.arms[0].overall);
}

#[test]
fn the_shipped_grid_is_compute_matched() {
    let arms: Vec<(String, Option<u64>)> = [
        "merged",
        "difficulty_only",
        "staged",
        "staged_plus_difficulty",
        "reversed",
        "pebr_two_stage",
        "caption_sft",
    ]
    .iter()
    .map(|name| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("curricula")
            .join(format!("{name}.curr"));
        let c = curric::check::check_file(&path)
            .unwrap()
            .curriculum
            .unwrap();
        let plan = curric::plan::plan(&c).unwrap();
        (
            name.to_string(),
            curric::exec::compare::planned_budget(&plan),
        )
    })
    .collect();
    assert!(arms.iter().all(|(_, b)| b.is_some()), "{arms:?}");
    assert_eq!(budget_warnings(&arms), Vec::<String>::new());
}
