//! End-to-end tests of `curric check` and `curric plan` through the real binary.
//!
//! Golden files live in `tests/golden/` (plans) and `tests/invalid/` (diagnostics); run with
//! `UPDATE_GOLDEN=1` to rewrite them after an intended change, then review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use curric::plan::Plan;

/// A builder for one run of the binary, asserting whole outputs (after just's `Test`).
struct Test {
    args: Vec<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    status: i32,
}

impl Test {
    fn new() -> Self {
        Test {
            args: Vec::new(),
            stdout: None,
            stderr: None,
            status: 0,
        }
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    fn stdout(mut self, s: &str) -> Self {
        self.stdout = Some(s.to_string());
        self
    }

    fn stderr(mut self, s: &str) -> Self {
        self.stderr = Some(s.to_string());
        self
    }

    fn status(mut self, code: i32) -> Self {
        self.status = code;
        self
    }

    fn output(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_curric"))
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("the curric binary runs")
    }

    /// Runs and returns the outputs after asserting status (and whole stdout/stderr where
    /// given).
    fn run(self) -> (String, String) {
        let out = self.output();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(self.status),
            "curric {:?}: wrong exit status\nstdout:\n{stdout}\nstderr:\n{stderr}",
            self.args
        );
        if let Some(want) = &self.stdout {
            assert_eq!(&stdout, want, "curric {:?}: stdout differs", self.args);
        }
        if let Some(want) = &self.stderr {
            assert_eq!(&stderr, want, "curric {:?}: stderr differs", self.args);
        }
        (stdout, stderr)
    }
}

/// Compares `actual` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn golden(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let want = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    })?;
    if want == actual {
        Ok(())
    } else {
        let first = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| want.lines().count().min(actual.lines().count()));
        Err(format!(
            "{} differs from the output at line {}:\n--- golden\n{}\n--- actual\n{}",
            path.display(),
            first + 1,
            want.lines().nth(first).unwrap_or("<end>"),
            actual.lines().nth(first).unwrap_or("<end>")
        ))
    }
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("directory exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

const CURRICULA: &[&str] = &[
    "staged_plus_difficulty",
    "staged",
    "difficulty_only",
    "merged",
    "reversed",
    "pebr_two_stage",
    "caption_sft",
    "base",
];

#[test]
fn every_curriculum_checks_clean() {
    let examples = files("examples", "curr");
    assert!(
        !examples.is_empty(),
        "examples/*.curr (the quickstart) must exist"
    );
    let paths = CURRICULA
        .iter()
        .map(|name| format!("curricula/{name}.curr"))
        .chain(examples.iter().map(|p| p.display().to_string()));
    for path in paths {
        let (stdout, _) = Test::new().args(&["check", &path]).stderr("").run();
        assert!(stdout.starts_with(&format!("{path}: ok (")), "{stdout}");
        assert!(stdout.ends_with("; 0 errors, 0 warnings)\n"), "{stdout}");
    }
    Test::new()
        .args(&["check", "curricula/staged_plus_difficulty.curr"])
        .stdout("curricula/staged_plus_difficulty.curr: ok (4 stages, 3 sources, 1 reward set; 0 errors, 0 warnings)\n")
        .stderr("")
        .run();
}

/// The plan table with this machine's memory masked: the device line and the warnings that
/// compare a phase's peak with it depend on where the test runs.
fn machine_independent(table: &str) -> String {
    table
        .lines()
        .filter(|l| !(l.starts_with("warning: phase") && l.contains("at its peak")))
        .map(|l| match l.strip_prefix("device cpu: ") {
            Some(_) => "device cpu: <this machine's memory>".to_string(),
            None => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn golden_plans() {
    let mut failures = Vec::new();
    for name in CURRICULA {
        let path = format!("curricula/{name}.curr");
        for (flag, ext) in [
            (None, "table"),
            (Some("--dot"), "dot"),
            (Some("--json"), "json"),
        ] {
            let mut args = vec!["plan", path.as_str()];
            args.extend(flag);
            let (stdout, _) = Test::new().args(&args).stderr("").run();
            let stdout = machine_independent(&stdout);
            if let Err(e) = golden(Path::new(&format!("tests/golden/{name}.{ext}")), &stdout) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn plan_json_round_trips_and_matches_the_library() {
    for name in CURRICULA {
        let path = format!("curricula/{name}.curr");
        let (stdout, _) = Test::new().args(&["plan", &path, "--json"]).run();
        let parsed: Plan = serde_json::from_str(&stdout).expect("plan JSON deserialises");
        assert_eq!(parsed.version, curric::plan::PLAN_VERSION);
        let checked = curric::check::check_file(Path::new(&path)).expect("readable");
        let lib = curric::plan::plan(&checked.curriculum.expect("clean")).expect("plans");
        assert_eq!(parsed, lib, "{name}: JSON differs from the library's plan");
    }
}

#[test]
fn flagship_plan_has_the_method_b_settings() {
    let checked = curric::check::check_file(Path::new("curricula/staged_plus_difficulty.curr"))
        .expect("readable");
    let p = curric::plan::plan(&checked.curriculum.expect("clean")).expect("plans");
    let ids: Vec<&str> = p.phases.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "perception",
            "text_reasoning",
            "visual_reasoning",
            "final_eval"
        ]
    );
    let text = &p.phases[1];
    let g = text.settings.grpo().expect("grpo settings");
    assert_eq!(
        (g.group_size, g.optim.lr, g.beta, g.temperature),
        (8, 1e-4, 0.0, 1.2)
    );
    assert!(g.mask_truncated);
    assert_eq!(text.freeze, ["visual"]);
    assert!(p.phases[0].freeze.is_empty());
    assert_eq!(text.order, curric::spec::Order::EasyToHard);
    let r = text.reward.as_ref().expect("reward");
    assert_eq!(r.terms[0].term, "accuracy");
    assert_eq!(r.terms[0].args["extract"], "boxed");
    // steps(80) × 8 prompts × G 8 = 5,120 rollouts per stage, 15,360 for the three: the
    // budget every arm of the grid matches.
    assert_eq!(text.estimate.steps, Some(80));
    assert_eq!(text.estimate.rollouts, Some(5120));
    assert_eq!(curric::exec::compare::planned_budget(&p), Some(15_360));
    // The graph is a chain.
    let g = p.graph();
    assert_eq!(g.edge_count(), 3);
    assert!(!petgraph::algo::is_cyclic_directed(&g));
}

#[test]
fn dot_renders_with_graphviz() {
    // Fails (does not skip) without graphviz: CI installs it.
    let mut failures = Vec::new();
    for name in CURRICULA {
        let path = format!("curricula/{name}.curr");
        let (dot, _) = Test::new().args(&["plan", &path, "--dot"]).run();
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("graphviz `dot` is installed (apt-get install graphviz)");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin piped");
            stdin.write_all(dot.as_bytes()).expect("write DOT");
        }
        let out = child.wait_with_output().expect("dot runs");
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("<svg") {
            failures.push(format!("{name}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each `tests/invalid/NAME.curr` names its expected code on the first line
/// (`// expect: curric::…`; an empty file uses `NAME.code`); its whole diagnostic output is
/// golden in `NAME.stderr`. All failures are collected into one report.
#[test]
fn invalid_files_give_their_coded_diagnostics() {
    let cases = files("tests/invalid", "curr");
    assert!(cases.len() >= 30, "only {} invalid cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let bytes = std::fs::read(case).expect("readable");
        let first = String::from_utf8_lossy(&bytes)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let code = match first.strip_prefix("// expect: ") {
            Some(c) => c.trim().to_string(),
            None => std::fs::read_to_string(case.with_extension("code"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| {
                    panic!("{}: no `// expect:` line or .code file", case.display())
                }),
        };
        let path = case.to_string_lossy().into_owned();
        let out = Test::new().args(&["check", &path]).output();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{path}: exit {:?}, want 1\n{stderr}",
                out.status.code()
            ));
            continue;
        }
        if !out.stdout.is_empty() {
            failures.push(format!("{path}: unexpected stdout"));
        }
        if !stderr.contains(&code) {
            failures.push(format!("{path}: no `{code}` in\n{stderr}"));
        }
        if stderr.contains("panicked") {
            failures.push(format!("{path}: panicked\n{stderr}"));
        }
        if let Err(e) = golden(&case.with_extension("stderr"), &stderr) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn warnings_do_not_fail_the_check() {
    let (_, stderr) = Test::new()
        .args(&["check", "tests/golden/warnings.curr"])
        .stdout("tests/golden/warnings.curr: ok (1 stage, 3 sources, 1 reward set; 0 errors, 4 warnings)\n")
        .run();
    golden(Path::new("tests/golden/warnings.stderr"), &stderr).unwrap_or_else(|e| panic!("{e}"));
    for code in [
        "curric::missing-file",
        "curric::mix-normalised",
        "curric::level-unused",
        "curric::unused",
    ] {
        assert!(stderr.contains(code), "no {code} in\n{stderr}");
    }
    // A plan still comes out, with the warnings on stderr.
    let (stdout, _) = Test::new()
        .args(&["plan", "tests/golden/warnings.curr"])
        .run();
    assert!(stdout.contains("plan `warnings`"), "{stdout}");
}

#[test]
fn unreadable_file_is_an_error_not_a_panic() {
    Test::new()
        .args(&["check", "tests/golden/does-not-exist.curr"])
        .stdout("")
        .stderr("error: cannot read tests/golden/does-not-exist.curr: No such file or directory (os error 2)\n")
        .status(1)
        .run();
}

#[test]
fn plan_refuses_an_invalid_file() {
    let (stdout, stderr) = Test::new()
        .args(&["plan", "tests/invalid/cycle.curr", "--json"])
        .status(1)
        .run();
    assert_eq!(stdout, "");
    assert!(stderr.contains("curric::cycle"), "{stderr}");
}
