//! The checker: `.curr` bytes → a resolved, typed [`Curriculum`] plus every diagnostic at
//! once. Nothing here touches a model or a device; the only file-system access is the
//! existence check of JSONL sources (a warning here, an error at run time).
//!
//! Decisions worth knowing:
//! - Mix weights must be > 0; weights that do not sum to 1 are normalised with a warning
//!   (`curric::mix-normalised`). Reward weights are used as written (any non-zero number).
//! - `group_size × prompts_per_step` may not exceed [`MAX_ROLLOUTS_PER_STEP`], and
//!   `micro_batch` must divide it.
//! - Every sft and grpo stage needs a stop condition that is certainly reached (a step,
//!   epoch, sample or time bound on every `or` branch / in every `and`).

pub mod diagnostic;
mod resolve;
mod values;

use std::path::Path;

pub use diagnostic::{Diag, ErrorKind, Report, Severity};
pub use resolve::{MAX_ROLLOUTS_PER_STEP, SUITE_CAPABILITIES};

use crate::spec::Curriculum;

/// The outcome of checking one file: the curriculum when there were no errors, and the
/// report (warnings, or errors and warnings).
#[derive(Debug)]
pub struct Checked {
    pub curriculum: Option<Curriculum>,
    pub report: Report,
}

/// Checks raw bytes. `file` names the file in diagnostics (and, by its stem, the curriculum
/// when it sets no `name`); JSONL paths are resolved against `base_dir`.
pub fn check_bytes(bytes: &[u8], file: &str, base_dir: Option<&Path>) -> Checked {
    let (text, utf8_error) = crate::syntax::decode(bytes);
    if let Some(e) = utf8_error {
        return Checked {
            curriculum: None,
            report: Report::new(file, text, vec![e.into()]),
        };
    }
    check_str(&text, file, base_dir)
}

pub fn check_str(text: &str, file: &str, base_dir: Option<&Path>) -> Checked {
    check_str_seeded(text, file, base_dir, None)
}

/// Checks `text` as if its header said `seed = SEED` (when given): `curric compare --seeds`
/// runs one file under several seeds. Sources and stages that set their own seed keep it.
pub fn check_str_seeded(
    text: &str,
    file: &str,
    base_dir: Option<&Path>,
    seed: Option<u64>,
) -> Checked {
    let tree = match crate::syntax::parse(text) {
        Ok(t) => t,
        Err(e) => {
            return Checked {
                curriculum: None,
                report: Report::new(file, text.to_string(), vec![e.into()]),
            }
        }
    };
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("curriculum");
    let (curriculum, diags) = resolve::resolve(&tree, stem, base_dir, seed);
    let report = Report::new(file, text.to_string(), diags);
    let curriculum = if report.has_errors() {
        None
    } else {
        curriculum
    };
    Checked { curriculum, report }
}

/// Reads and checks a file.
pub fn check_file(path: &Path) -> std::io::Result<Checked> {
    let bytes = std::fs::read(path)?;
    Ok(check_bytes(
        &bytes,
        &path.display().to_string(),
        path.parent(),
    ))
}

/// Renders a report for a terminal: colour only when stderr is one and `NO_COLOR` is unset,
/// so piped output (and every test) is plain and deterministic.
pub fn render_for_stderr(report: &Report) -> String {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if colour {
        report.render_themed(miette::GraphicalTheme::unicode())
    } else {
        report.render()
    }
}

/// Reads and checks a file under an overriding seed (see [`check_str_seeded`]).
pub fn check_file_seeded(path: &Path, seed: Option<u64>) -> std::io::Result<Checked> {
    let bytes = std::fs::read(path)?;
    let file = path.display().to_string();
    let (text, utf8_error) = crate::syntax::decode(&bytes);
    if let Some(e) = utf8_error {
        return Ok(Checked {
            curriculum: None,
            report: Report::new(&file, text, vec![e.into()]),
        });
    }
    Ok(check_str_seeded(&text, &file, path.parent(), seed))
}

/// Reads and checks `path`, printing diagnostics to stderr. `Err` carries the exit code.
pub fn load(path: &Path) -> Result<(Curriculum, Report), std::process::ExitCode> {
    load_seeded(path, None)
}

/// [`load`] under an overriding seed.
pub fn load_seeded(
    path: &Path,
    seed: Option<u64>,
) -> Result<(Curriculum, Report), std::process::ExitCode> {
    let checked = match check_file_seeded(path, seed) {
        Ok(c) => c,
        Err(e) => {
            crate::errln!("error: cannot read {}: {e}", path.display());
            return Err(std::process::ExitCode::FAILURE);
        }
    };
    crate::errprint!("{}", render_for_stderr(&checked.report));
    match checked.curriculum {
        Some(c) => Ok((c, checked.report)),
        None => {
            crate::errln!("error: {}", checked.report);
            Err(std::process::ExitCode::FAILURE)
        }
    }
}

/// `curric check FILE`: 0 when clean (warnings allowed), 1 on errors.
pub fn run_check(path: &Path) -> std::process::ExitCode {
    match load(path) {
        Ok((c, report)) => crate::out::print(&format!(
            "{}: ok ({} stage{}, {} source{}, {} reward set{}; {})\n",
            path.display(),
            c.stages.len(),
            if c.stages.len() == 1 { "" } else { "s" },
            c.sources.len(),
            if c.sources.len() == 1 { "" } else { "s" },
            c.rewards.len(),
            if c.rewards.len() == 1 { "" } else { "s" },
            report.counts()
        )),
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::*;

    const BASE: &str = "source p { suite = perception  n = 10 }\nreward r = accuracy\n";

    fn check(extra: &str) -> Checked {
        check_str(&format!("{BASE}{extra}"), "t.curr", None)
    }

    fn codes(c: &Checked) -> Vec<&'static str> {
        c.report.diagnostics.iter().map(|d| d.code()).collect()
    }

    #[test]
    fn bounded_stop_conditions() {
        let plateau = Stop::Plateau {
            window: 5,
            delta: 0.1,
        };
        let steps = Stop::Steps { n: 10 };
        assert!(Stop::Any {
            any: vec![plateau.clone(), steps.clone()]
        }
        .is_bounded());
        assert!(!Stop::All {
            all: vec![plateau.clone(), steps.clone()]
        }
        .is_bounded());
        assert!(!plateau.is_bounded());
        // 30 samples × 2 epochs / 8 per step = 7.5 → 8 steps; `or` takes the earlier bound.
        let s = Stop::Any {
            any: vec![Stop::Epochs { n: 2.0 }, Stop::Steps { n: 20 }],
        };
        assert_eq!(s.step_bound(Some(30), 8), Some(8));
        assert_eq!(Stop::Epochs { n: 1.0 }.step_bound(None, 8), None);
        // `and` waits for the later one.
        let a = Stop::All {
            all: vec![Stop::MinSteps { n: 50 }, Stop::Samples { n: 80 }],
        };
        assert_eq!(a.step_bound(None, 8), Some(50));
    }

    #[test]
    fn suggestions_by_edit_distance() {
        use crate::check::diagnostic::suggest;
        assert_eq!(
            suggest("percepton", ["perception", "text_reasoning"]).as_deref(),
            Some("did you mean `perception`?")
        );
        assert_eq!(suggest("zzz", ["perception"]), None);
    }

    #[test]
    fn unset_grpo_keys_take_the_same_defaults_as_grpo_settings_default() {
        // Both read the key table; a key the checker looked up under another name would
        // leave its default here and differ.
        let c = check("stage a { mix = p  reward = r  stop = steps(1) }\n");
        let cur = c.curriculum.expect("clean");
        let g = cur.stages[0].settings.grpo().expect("grpo");
        assert_eq!(*g, GrpoSettings::default());
    }

    #[test]
    fn defaults_extends_and_own_keys_layer_in_order() {
        let c = check(
            "defaults { lr = 1e-5  group_size = 4  stop = steps(3)  reward = r }\n\
             stage a { mix = p  group_size = 6 }\n\
             stage b extends a { after = a  lr = 2e-6 }\n",
        );
        assert!(!c.report.has_errors(), "{}", c.report.render());
        let cur = c.curriculum.expect("clean");
        let a = cur.stages[0].settings.grpo().expect("grpo");
        let b = cur.stages[1].settings.grpo().expect("grpo");
        assert_eq!((a.optim.lr, a.group_size), (1e-5, 6));
        assert_eq!((b.optim.lr, b.group_size), (2e-6, 6));
        assert_eq!(cur.stages[1].after[0].stage, "a");
    }

    #[test]
    fn mix_weights_are_normalised_with_a_warning() {
        let c = check(
            "source q { suite = text_reasoning  n = 10 }\n\
             stage a { mix = 3 p + 1 q  reward = r  stop = steps(1) }\n",
        );
        assert_eq!(codes(&c), ["curric::mix-normalised"]);
        let cur = c.curriculum.expect("warnings only");
        let w: Vec<f64> = cur.stages[0]
            .mix
            .as_ref()
            .expect("mix")
            .from
            .iter()
            .map(|m| m.weight)
            .collect();
        assert_eq!(w, [0.75, 0.25]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = check("stage a { mix = pp  reward = rr  stop = plateau(5)  top_p = 2 }\n");
        let mut got = codes(&c);
        got.sort();
        assert_eq!(
            got,
            [
                "curric::out-of-range",
                "curric::unbounded-phase",
                "curric::unknown-reward",
                "curric::unknown-source"
            ]
        );
        assert!(c.curriculum.is_none());
    }

    #[test]
    fn cycle_names_its_stages_in_order() {
        let c = check(
            "defaults { reward = r  stop = steps(1)  mix = p }\n\
             stage a { after = c }\nstage b { after = a }\nstage c { after = b }\n",
        );
        let d = &c.report.diagnostics[0];
        assert_eq!(d.code(), "curric::cycle");
        assert_eq!(d.message, "`after` cycle: a → c → b → a");
    }

    #[test]
    fn reward_args_have_every_parameter() {
        let c = check("stage a { mix = p  reward = r  stop = steps(1) }\n");
        let cur = c.curriculum.expect("clean");
        let args = &cur.rewards[0].terms[0].args;
        assert_eq!(args["extract"], "auto");
        assert_eq!(args["compare"], "auto");
        assert_eq!(args["tolerance"], 1e-6);
    }

    #[test]
    fn invalid_utf8_is_a_diagnostic() {
        let c = check_bytes(b"seed = 1\n\xff", "t.curr", None);
        assert_eq!(codes(&c), ["curric::invalid-utf8"]);
        assert_eq!(c.report.diagnostics[0].span.start, 9);
    }

    #[test]
    fn a_diagnostic_past_column_65535_renders_without_a_snippet() {
        let text = format!("name = \"{}\"  seed = -1\n", "a".repeat(70_000));
        let c = check_str(&text, "long.curr", None);
        assert!(c.report.has_errors());
        let out = c.report.render();
        assert!(out.contains("at long.curr:1:"), "{out}");
        assert!(out.contains("too long to show"), "{out}");
        // Short lines keep their snippet.
        let c = check_str("seed = -1\n", "short.curr", None);
        assert!(c.report.render().contains("seed = -1"));
    }
}
