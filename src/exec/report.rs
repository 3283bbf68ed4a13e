//! `curric report RUN_DIR`: reads the manifest, every phase's metrics and eval results, and
//! writes `report/index.html` with SVG charts (reward total and per term, accuracy,
//! completion length, zero-std fraction, KL, loss) over the global step, phase boundaries
//! marked; prints the eval table and the transition log (or all of it as JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::error::{ExecError, Result};
use super::eval::EvalResult;
use super::manifest::{Manifest, PhaseRecord};
use super::metrics::{keys, read_metrics, MetricRecord};
use super::rundir::{write_atomic, RunDir};

/// Everything the report shows, gathered from a run directory.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub curriculum: String,
    pub phases: Vec<PhaseRecord>,
    #[serde(skip)]
    pub metrics: Vec<MetricRecord>,
    pub evals: Vec<EvalResult>,
    pub transitions: Vec<String>,
}

/// A phase boundary on the charts: where it starts on the global-step axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Boundary {
    pub global_step: u64,
    pub label: String,
}

pub fn gather(run_dir: &Path) -> Result<ReportData> {
    let rd = RunDir::new(run_dir);
    let manifest = Manifest::load(&rd.manifest())?.ok_or_else(|| {
        ExecError::Report(format!(
            "`{}` has no manifest.toml; is it a run directory written by `curric run`?",
            run_dir.display()
        ))
    })?;
    let mut metrics = Vec::new();
    let mut evals = Vec::new();
    for p in &manifest.phases {
        metrics.extend(read_metrics(&rd.metrics(&p.id))?);
        if let Some(e) = EvalResult::load(&rd.eval(&p.id))? {
            evals.push(e);
        }
    }
    let transitions = manifest.phases.iter().map(transition_line).collect();
    Ok(ReportData {
        curriculum: manifest.curriculum.clone(),
        phases: manifest.phases,
        metrics,
        evals,
        transitions,
    })
}

fn transition_line(p: &PhaseRecord) -> String {
    let when = match (&p.started, &p.ended) {
        (Some(s), Some(e)) => format!("{s} → {e}"),
        (Some(s), None) => format!("{s} → …"),
        _ => "not started".to_string(),
    };
    let what = p
        .stop_reason
        .clone()
        .or_else(|| p.error.as_ref().map(|e| format!("failed: {e}")))
        .unwrap_or_else(|| p.status.to_string());
    format!("{} ({}) [{}] {}: {}", p.id, p.kind, p.status, when, what)
}

/// Phase starts along the global-step axis, from the manifest. Eval phases take no steps
/// (their results are points on the accuracy chart), so they mark no boundary.
pub fn boundaries(data: &ReportData) -> Vec<Boundary> {
    data.phases
        .iter()
        .filter(|p| p.started.is_some() && p.kind != "eval")
        .map(|p| Boundary {
            global_step: p.global_step_start,
            label: p.id.clone(),
        })
        .collect()
}

/// One chart: a title, a file name and the series (name → (global step, value)) on it.
#[derive(Debug, Clone)]
pub struct Chart {
    pub file: String,
    pub title: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn series(metrics: &[MetricRecord], key: &str) -> Vec<(f64, f64)> {
    metrics
        .iter()
        .filter_map(|r| r.values.get(key).map(|v| (r.global_step as f64, *v)))
        .collect()
}

/// The charts worth drawing for this run (those with data).
pub fn charts(data: &ReportData) -> Vec<Chart> {
    let m = &data.metrics;
    let mut reward = vec![("total".to_string(), series(m, keys::REWARD))];
    let terms: std::collections::BTreeSet<&String> = m
        .iter()
        .flat_map(|r| r.values.keys())
        .filter(|k| k.starts_with(keys::REWARD_PREFIX))
        .collect();
    for t in terms {
        reward.push((t[keys::REWARD_PREFIX.len()..].to_string(), series(m, t)));
    }
    let mut accuracy = vec![("train".to_string(), series(m, keys::ACCURACY))];
    accuracy.push(("eval (in-phase)".to_string(), series(m, "eval/overall")));
    accuracy.push((
        "eval phases".to_string(),
        data.evals
            .iter()
            .map(|e| (e.global_step as f64, e.overall))
            .collect(),
    ));
    let one = |file: &str, title: &str, key: &str| Chart {
        file: file.into(),
        title: title.into(),
        series: vec![(key.to_string(), series(m, key))],
    };
    let all = vec![
        Chart {
            file: "reward.svg".into(),
            title: "Reward (total and per term)".into(),
            series: reward,
        },
        Chart {
            file: "accuracy.svg".into(),
            title: "Accuracy".into(),
            series: accuracy,
        },
        one(
            "completion_len.svg",
            "Completion length (tokens)",
            keys::COMPLETION_LEN,
        ),
        one(
            "zero_std_frac.svg",
            "Fraction of zero-std groups",
            keys::ZERO_STD_FRAC,
        ),
        one("kl.svg", "KL to the reference", keys::KL),
        one("loss.svg", "Loss", keys::LOSS),
    ];
    all.into_iter()
        .map(|mut c| {
            c.series.retain(|(_, pts)| !pts.is_empty());
            c
        })
        .filter(|c| !c.series.is_empty())
        .collect()
}

/// Renders a chart to an SVG string, phase boundaries as labelled vertical lines.
pub fn render_svg(chart: &Chart, bounds: &[Boundary]) -> Result<String> {
    let err = |e: String| ExecError::Report(format!("{}: {e}", chart.file));
    let pts = chart.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    for b in bounds {
        x0 = x0.min(b.global_step as f64);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(e.to_string()))?;
        c.configure_mesh()
            .x_desc("global step")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for b in bounds {
            let x = b.global_step as f64;
            if x < x0 || x > x1 {
                continue;
            }
            let grey = RGBColor(120, 120, 120);
            c.draw_series(std::iter::once(PathElement::new(
                vec![(x, y0), (x, y1)],
                grey.stroke_width(1),
            )))
            .map_err(|e| err(e.to_string()))?;
            c.draw_series(std::iter::once(Text::new(
                format!(" {}", b.label),
                (x, y1),
                ("sans-serif", 12).into_font().color(&grey),
            )))
            .map_err(|e| err(e.to_string()))?;
        }
        for (i, (name, points)) in chart.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = color.stroke_width(2);
            if points.len() == 1 {
                c.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                    .map_err(|e| err(e.to_string()))?
                    .label(name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
            } else {
                c.draw_series(LineSeries::new(points.iter().copied(), style))
                    .map_err(|e| err(e.to_string()))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        if chart.series.len() > 1 {
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// The eval table as text: one row per capability × level, one column per eval phase, then
/// the overall accuracy and mean response length.
pub fn eval_table(evals: &[EvalResult]) -> String {
    if evals.is_empty() {
        return "no eval results yet\n".to_string();
    }
    let rank = |l: &str| {
        ["easy", "medium", "hard"]
            .iter()
            .position(|x| *x == l)
            .unwrap_or(3)
    };
    let mut rows: BTreeMap<(String, usize, String), Vec<Option<f64>>> = BTreeMap::new();
    for (i, e) in evals.iter().enumerate() {
        for c in &e.cells {
            rows.entry((c.capability.clone(), rank(&c.level), c.level.clone()))
                .or_insert_with(|| vec![None; evals.len()])[i] = Some(c.accuracy);
        }
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["capability".to_string(), "level".to_string()];
    header.extend(
        evals
            .iter()
            .map(|e| format!("{} @{}", e.phase, e.global_step)),
    );
    table.push(header);
    for ((cap, _, level), vals) in rows {
        let mut row = vec![cap, level];
        row.extend(vals.iter().map(|v| {
            v.map(|v| format!("{:.1}%", v * 100.0))
                .unwrap_or("-".into())
        }));
        table.push(row);
    }
    let mut overall = vec!["overall".to_string(), String::new()];
    overall.extend(evals.iter().map(|e| format!("{:.1}%", e.overall * 100.0)));
    table.push(overall);
    let mut len = vec!["mean length".to_string(), String::new()];
    len.extend(evals.iter().map(|e| format!("{:.1}", e.mean_response_len)));
    table.push(len);

    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c < 2 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if i == 0 {
            let _ = writeln!(
                out,
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `report/index.html` and the charts; returns the HTML path.
pub fn write(run_dir: &Path, data: &ReportData) -> Result<PathBuf> {
    let out = RunDir::new(run_dir).report();
    let bounds = boundaries(data);
    let charts = charts(data);
    for c in &charts {
        write_atomic(&out.join(&c.file), render_svg(c, &bounds)?.as_bytes())?;
    }
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>curric report: {0}</title>\n<style>\
body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
td.num{{text-align:right}}img{{display:block;margin:1em 0;max-width:100%}}\
</style></head><body>\n<h1>curric report: {0}</h1>\n",
        esc(&data.curriculum)
    );
    h.push_str("<h2>Phases</h2>\n<table><tr><th>phase</th><th>kind</th><th>status</th><th>steps</th><th>global steps</th><th>stop reason</th></tr>\n");
    for p in &data.phases {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}–{}</td><td>{}</td></tr>",
            esc(&p.id),
            esc(&p.kind),
            p.status,
            p.steps,
            p.global_step_start,
            p.global_step_start + p.steps,
            esc(p.stop_reason.as_deref().or(p.error.as_deref()).unwrap_or(""))
        );
    }
    h.push_str("</table>\n<h2>Held-out evaluation</h2>\n");
    if data.evals.is_empty() {
        h.push_str("<p>No eval phase has finished yet.</p>\n");
    } else {
        let table = eval_table(&data.evals);
        let _ = writeln!(h, "<pre>{}</pre>", esc(&table));
    }
    h.push_str("<h2>Training curves</h2>\n<p>Vertical lines mark where each phase starts.</p>\n");
    if charts.is_empty() {
        h.push_str("<p>No metrics logged yet.</p>\n");
    }
    for c in &charts {
        let _ = writeln!(
            h,
            "<img src=\"{}\" alt=\"{}\">",
            esc(&c.file),
            esc(&c.title)
        );
    }
    h.push_str("<h2>Transition log</h2>\n<pre>");
    for t in &data.transitions {
        let _ = writeln!(h, "{}", esc(t));
    }
    h.push_str("</pre>\n</body></html>\n");
    let index = out.join("index.html");
    write_atomic(&index, h.as_bytes())?;
    Ok(index)
}

/// The `--json` view: phases, transitions, and for each eval phase the accuracy per
/// capability (and per capability × level) and overall.
pub fn to_json(data: &ReportData, chart_files: &[String]) -> serde_json::Value {
    let evals: Vec<serde_json::Value> = data
        .evals
        .iter()
        .map(|e| {
            let mut by_level: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
            for c in &e.cells {
                by_level
                    .entry(&c.capability)
                    .or_default()
                    .insert(&c.level, c.accuracy);
            }
            serde_json::json!({
                "phase": e.phase,
                "global_step": e.global_step,
                "n": e.n,
                "overall": e.overall,
                "mean_response_len": e.mean_response_len,
                "accuracy": e.by_capability,
                "accuracy_by_level": by_level,
            })
        })
        .collect();
    serde_json::json!({
        "curriculum": data.curriculum,
        "phases": data.phases.iter().map(|p| serde_json::json!({
            "id": p.id, "kind": p.kind, "status": p.status, "steps": p.steps,
            "global_step_start": p.global_step_start, "started": p.started, "ended": p.ended,
            "stop_reason": p.stop_reason, "error": p.error,
        })).collect::<Vec<_>>(),
        "evals": evals,
        "transitions": data.transitions,
        "charts": chart_files,
    })
}

/// `curric report RUN_DIR [--json]`: writes the report and prints the eval table and
/// transition log (or the JSON view).
pub fn run_report(run_dir: &Path, json: bool) -> Result<String> {
    let data = gather(run_dir)?;
    // A run directory one may only read (a colleague's, an archive) still has a table to print.
    let written = write(run_dir, &data);
    let files: Vec<String> = charts(&data)
        .iter()
        .map(|c| format!("report/{}", c.file))
        .collect();
    if json {
        return Ok(
            serde_json::to_string_pretty(&to_json(&data, &files)).unwrap_or_default() + "\n",
        );
    }
    let mut out = format!("curriculum {}\n\n", data.curriculum);
    out.push_str(&eval_table(&data.evals));
    out.push_str("\ntransitions:\n");
    for t in &data.transitions {
        let _ = writeln!(out, "  {t}");
    }
    match written {
        Ok(index) => {
            let _ = writeln!(out, "\nreport written to {}", index.display());
        }
        Err(e) => {
            let _ = writeln!(out, "\nno HTML report: {e}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::eval::Outcome;
    use crate::exec::manifest::FingerprintParts;
    use crate::exec::metrics::MetricsWriter;

    fn fake_run(dir: &Path) {
        let rd = RunDir::create(dir).unwrap();
        let mut m = Manifest::new("demo");
        let mut g = 0;
        for (id, kind, steps) in [
            ("warmup", "sft", 4u64),
            ("eval0", "eval", 0),
            ("perception", "grpo", 6),
            ("eval1", "eval", 0),
        ] {
            m.start(id, kind, false);
            m.entry(id, kind).global_step_start = g;
            let mut w = MetricsWriter::open(&rd.phase(id), id, Some(id), None).unwrap();
            for s in 1..=steps {
                let mut v = BTreeMap::new();
                if kind == "sft" {
                    v.insert("loss".to_string(), 3.0 / s as f64);
                } else {
                    v.insert("reward".to_string(), 0.1 * s as f64);
                    v.insert("reward/accuracy".to_string(), 0.08 * s as f64);
                    v.insert("reward/format".to_string(), 0.02 * s as f64);
                    v.insert("kl".to_string(), 0.001 * s as f64);
                    v.insert("zero_std_frac".to_string(), 0.5);
                    v.insert("completion_len".to_string(), 10.0 + s as f64);
                    v.insert("accuracy".to_string(), 0.05 * s as f64);
                }
                w.log(s, g + s, &v).unwrap();
            }
            if kind == "eval" {
                let good = if id == "eval0" { 1 } else { 3 };
                let outs: Vec<Outcome> = (0..4)
                    .map(|i| Outcome {
                        capability: if i < 2 {
                            "perception".into()
                        } else {
                            "visual_reasoning".into()
                        },
                        level: Some("easy".into()),
                        correct: i < good,
                        length: 8,
                    })
                    .collect();
                EvalResult::from_outcomes(id, g, &outs)
                    .save(&rd.eval(id))
                    .unwrap();
            }
            g += steps;
            m.finish(
                id,
                "fp".into(),
                FingerprintParts::default(),
                format!("{id} stopped at step {steps}: steps({steps})"),
                None,
                steps,
            );
        }
        m.save(&rd.manifest()).unwrap();
    }

    #[test]
    fn writes_html_and_svg_charts_with_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        fake_run(dir.path());
        let text = run_report(dir.path(), false).unwrap();
        assert!(text.contains("overall"), "{text}");
        let table = eval_table(&gather(dir.path()).unwrap().evals);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "capability        level  eval0 @4  eval1 @10");
        assert_eq!(lines[2], "perception        easy      50.0%     100.0%");
        assert_eq!(lines[3], "visual_reasoning  easy       0.0%      50.0%");
        assert_eq!(lines[4], "overall                     25.0%      75.0%");
        assert_eq!(lines[5], "mean length                   8.0        8.0");
        assert!(text.contains("perception (grpo) [done]"));
        assert!(text.contains("perception stopped at step 6: steps(6)"));

        let report = dir.path().join("report");
        let html = std::fs::read_to_string(report.join("index.html")).unwrap();
        for f in [
            "reward.svg",
            "accuracy.svg",
            "kl.svg",
            "zero_std_frac.svg",
            "completion_len.svg",
            "loss.svg",
        ] {
            assert!(html.contains(f), "{f} missing from html");
            let svg = std::fs::read_to_string(report.join(f)).unwrap();
            assert!(svg.starts_with("<svg"), "{f}");
            // Boundary labels for the training phases.
            assert!(
                svg.contains("perception") && svg.contains("warmup"),
                "{f} lacks boundary labels"
            );
        }
        let reward = std::fs::read_to_string(report.join("reward.svg")).unwrap();
        assert!(
            reward.contains("accuracy") && reward.contains("format") && reward.contains("total")
        );
    }

    #[test]
    fn json_view_has_accuracy_per_capability_per_eval_phase() {
        let dir = tempfile::tempdir().unwrap();
        fake_run(dir.path());
        let v: serde_json::Value =
            serde_json::from_str(&run_report(dir.path(), true).unwrap()).unwrap();
        assert_eq!(v["evals"][0]["phase"], "eval0");
        assert_eq!(v["evals"][1]["overall"], 0.75);
        assert_eq!(v["evals"][1]["accuracy"]["perception"], 1.0);
        assert_eq!(
            v["evals"][1]["accuracy_by_level"]["visual_reasoning"]["easy"],
            0.5
        );
        assert_eq!(v["phases"].as_array().unwrap().len(), 4);
        assert_eq!(v["transitions"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn the_table_prints_when_the_report_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        fake_run(dir.path());
        // A file where the report directory would go: writing fails as on a read-only dir.
        std::fs::write(dir.path().join("report"), b"").unwrap();
        let text = run_report(dir.path(), false).unwrap();
        assert!(text.contains("overall"), "{text}");
        assert!(text.contains("no HTML report"), "{text}");
    }

    #[test]
    fn missing_manifest_is_a_helpful_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = run_report(dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("no manifest.toml"), "{e}");
    }
}
