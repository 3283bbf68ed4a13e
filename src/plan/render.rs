//! Text views of a plan: the table `curric plan` prints, its one-line summary, and DOT.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Phase, PhaseId, Plan};
use crate::spec::{serde_plain, PhaseKind, Settings};

fn opt(n: Option<u64>, exact: bool) -> String {
    match n {
        None => "?".into(),
        Some(n) if exact => human(n),
        Some(n) => format!("≤{}", human(n)),
    }
}

/// 1234 → 1234, 12345 → 12.3k, 1234567 → 1.23M: short enough for a table cell.
fn human(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

fn levels(p: &Phase) -> String {
    p.levels
        .iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn mix(p: &Phase) -> String {
    p.mix
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "-".into())
}

fn g_times_p(p: &Phase) -> String {
    match &p.settings {
        Settings::Grpo(g) => format!("{}×{}", g.group_size, g.prompts_per_step),
        Settings::Sft(s) => format!("bs {}", s.batch_size),
        Settings::Probe(pr) => format!("K {}", pr.rollouts),
        Settings::Eval(_) => "-".into(),
    }
}

/// The plan as a table, one row per phase in plan order. `status` adds a last column (the
/// executor's per-phase state) when given.
pub fn render_table(plan: &Plan, status: Option<&BTreeMap<PhaseId, String>>) -> String {
    let mut header = vec![
        "#",
        "phase",
        "kind",
        "capability",
        "levels",
        "order",
        "mix",
        "reward",
        "G×P",
        "lr",
        "β",
        "ε",
        "stop",
        "steps",
        "rollouts",
        "tokens",
    ];
    if status.is_some() {
        header.push("status");
    }
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for p in &plan.phases {
        let e = &p.estimate;
        let (lr, beta, eps) = match &p.settings {
            Settings::Grpo(g) => (
                format!("{:e}", g.optim.lr),
                g.beta.to_string(),
                format!("{}/{}", g.eps_low, g.eps_high),
            ),
            Settings::Sft(s) => (format!("{:e}", s.optim.lr), "-".into(), "-".into()),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        let order = match p.kind() {
            PhaseKind::Grpo | PhaseKind::Sft => p.order.to_string(),
            _ => "-".into(),
        };
        let mut row = vec![
            p.index.to_string(),
            p.id.clone(),
            serde_plain(&p.kind()),
            p.capability.clone(),
            levels(p),
            order,
            mix(p),
            p.reward
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_else(|| "-".into()),
            g_times_p(p),
            lr,
            beta,
            eps,
            p.stop
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            match p.kind() {
                PhaseKind::Grpo | PhaseKind::Sft => opt(e.steps, e.samples_exact),
                _ => "-".into(),
            },
            match p.kind() {
                PhaseKind::Sft => "-".into(),
                _ => opt(e.rollouts, e.samples_exact),
            },
            match p.kind() {
                PhaseKind::Sft => "-".into(),
                _ => opt(e.tokens, false),
            },
        ];
        if let Some(st) = status {
            row.push(st.get(&p.id).cloned().unwrap_or_else(|| "-".into()));
        }
        rows.push(row);
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < cols {
                let pad = widths[c] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line: phase counts and cost bounds.
pub fn summary(plan: &Plan) -> String {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for p in &plan.phases {
        *kinds.entry(serde_plain(&p.kind())).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let total = |f: fn(&Phase) -> Option<u64>| {
        plan.phases
            .iter()
            .try_fold(0u64, |acc, p| f(p).map(|x| acc + x))
    };
    let steps = total(|p| match p.kind() {
        PhaseKind::Grpo | PhaseKind::Sft => p.estimate.steps,
        _ => Some(0),
    });
    let rollouts = total(|p| p.estimate.rollouts);
    let tokens = total(|p| p.estimate.tokens);
    let show = |n: Option<u64>| n.map(human).unwrap_or_else(|| "?".into());
    format!(
        "plan `{}`: {} phase{} ({}), {} edge{}, model {} on {}; at most {} steps, {} rollouts, {} generated tokens",
        plan.name,
        plan.phases.len(),
        if plan.phases.len() == 1 { "" } else { "s" },
        kinds.join(", "),
        plan.edges.len(),
        if plan.edges.len() == 1 { "" } else { "s" },
        plan.model,
        plan.device,
        show(steps),
        show(rollouts),
        show(tokens),
    )
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn ident(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Graphviz: one `cluster_<capability>` per capability, phases as boxes labelled with kind,
/// levels/order, mix, reward terms and batch shape; edges labelled with the transition
/// condition and what is handed off.
pub fn render_dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", esc(&plan.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  label=\"{}\";", esc(&summary(plan)));
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    // Clusters in order of first appearance.
    let mut caps: Vec<&str> = Vec::new();
    for p in &plan.phases {
        if !caps.contains(&p.capability.as_str()) {
            caps.push(&p.capability);
        }
    }
    for cap in caps {
        let _ = writeln!(out, "  subgraph cluster_{} {{", ident(cap));
        let _ = writeln!(out, "    label=\"{}\";", esc(cap));
        for p in plan.phases.iter().filter(|p| p.capability == cap) {
            let mut lines = vec![
                format!("{} ({})", p.id, serde_plain(&p.kind())),
                match p.kind() {
                    PhaseKind::Grpo | PhaseKind::Sft => {
                        format!("levels {} · {}", levels(p), p.order)
                    }
                    _ => format!("levels {}", levels(p)),
                },
            ];
            if p.mix.is_some() {
                lines.push(format!("mix {}", mix(p)));
            }
            if let Some(r) = &p.reward {
                let terms: Vec<String> = r
                    .terms
                    .iter()
                    .map(|t| format!("{} {}", t.weight, t.term))
                    .collect();
                lines.push(format!("reward {}", terms.join(" + ")));
            }
            if let Some(g) = p.settings.grpo() {
                lines.push(format!(
                    "G={} × {} prompts, lr {:e}, β {}",
                    g.group_size, g.prompts_per_step, g.optim.lr, g.beta
                ));
            }
            if let Some(pr) = p.settings.probe() {
                lines.push(format!("K={} rollouts, T={}", pr.rollouts, pr.temperature));
            }
            if let Some(e) = p.settings.eval() {
                lines.push(format!("n={} per capability × level", e.n));
            }
            if !p.freeze.is_empty() {
                lines.push(format!("frozen: {}", p.freeze.join(", ")));
            }
            let label: Vec<String> = lines.iter().map(|l| esc(l)).collect();
            let _ = writeln!(
                out,
                "    \"{}\" [label=\"{}\"];",
                esc(&p.id),
                label.join("\\n")
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for e in &plan.edges {
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{}\\n{}\"];",
            esc(&e.from),
            esc(&e.to),
            esc(&e.condition),
            esc(&e.handoff.to_string())
        );
    }
    out.push_str("}\n");
    out
}
