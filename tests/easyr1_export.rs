//! `curric export easyr1`: every shipped curriculum is exported or refused with its reasons;
//! every config written passes EasyR1's own parsing and start-up checks (`validate.py` from
//! `../shared/easyr1`, over a pinned copy of EasyR1's config dataclasses); reward.py scores a
//! golden table exactly as curric's Rust rewards do; a probe's results become the next
//! phases' data.
//!
//! The Python side needs `omegaconf==2.3.0` (see `support/python.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use curric::data::{Capability, Sample};
use curric::exec::easyr1::{self, ExportError, ExportOptions};
use curric::model::Completion;
use serde_json::{json, Value};

#[path = "support/python.rs"]
mod python;
use python::{python_path, validator};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs validate.py on `dir/config.yaml` from `dir`, as EasyR1 would run there, with the
/// absolute data paths run.sh passes.
fn validate(dir: &Path) -> Result<(), String> {
    let out = Command::new("python3")
        .arg(validator())
        .arg("config.yaml")
        .arg(format!(
            "data.train_files={}",
            dir.join("train.jsonl").display()
        ))
        .arg(format!(
            "data.val_files={}",
            dir.join("val.jsonl").display()
        ))
        .current_dir(dir)
        .env("PYTHONPATH", python_path())
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn plan_of(path: &Path) -> curric::plan::Plan {
    let text = std::fs::read_to_string(path).unwrap();
    let c = curric::check::check_str(&text, &path.display().to_string(), path.parent())
        .curriculum
        .unwrap_or_else(|| panic!("{} checks", path.display()));
    curric::plan::plan(&c).unwrap()
}

fn opts(file: &Path, out: &Path) -> ExportOptions {
    ExportOptions {
        out: out.to_path_buf(),
        curriculum_file: file.to_path_buf(),
        model: Some("Qwen/Qwen2.5-VL-3B-Instruct".into()),
        nodes: 1,
        gpus_per_node: 8,
        accept: vec!["mask_truncated".into()],
        pass_rates: None,
        only: None,
    }
}

fn shipped() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["curricula", "examples"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "curr") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Every shipped curriculum exports, and each config it writes passes EasyR1's checks.
#[test]
fn every_shipped_curriculum_exports_configs_easyr1_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    // With --model and --accept mask_truncated every shipped curriculum exports; refusals have
    // their own test below.
    for file in shipped() {
        let plan = plan_of(&file);
        let out = tmp.path().join(&plan.name);
        let m = easyr1::export(&plan, &opts(&file, &out))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(m.phases.len(), plan.phases.len());
        for p in &m.phases {
            let dir = out.join(&p.dir);
            if p.kind == "sft" {
                // curric trains it: run.sh, no EasyR1 config.
                let sh = std::fs::read_to_string(dir.join("run.sh")).unwrap();
                assert!(sh.contains(&format!("--only {}", p.id)), "{sh}");
                assert!(!dir.join("config.yaml").exists());
                continue;
            }
            if p.data_after.is_some() {
                assert!(!dir.join("train.jsonl").exists());
                continue;
            }
            if let Err(e) = validate(&dir) {
                failures.push(e);
            }
        }
        assert!(out.join("manifest.json").exists() && out.join("pipeline.sh").exists());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn staged_export() -> (tempfile::TempDir, easyr1::Manifest) {
    let file = root().join("curricula/staged_plus_difficulty.curr");
    let tmp = tempfile::tempdir().unwrap();
    let m = easyr1::export(&plan_of(&file), &opts(&file, tmp.path())).unwrap();
    (tmp, m)
}

/// The train file is the sampler's walk: steps × prompts rows, easy before hard, every row
/// carrying its answer and the data the rewards read in `ground_truth`.
#[test]
fn train_rows_follow_curric_order_and_carry_the_reward_data() {
    let (tmp, m) = staged_export();
    let p = &m.phases[0];
    assert_eq!(p.train_rows, Some(80 * 8));
    let text = std::fs::read_to_string(tmp.path().join(&p.dir).join("train.jsonl")).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rank = |r: &Value| match r["difficulty"].as_str().unwrap() {
        "easy" => 0,
        "medium" => 1,
        _ => 2,
    };
    // easy -> hard within each pass over the pool (200 samples).
    for pass in rows.chunks(200) {
        assert!(pass.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
    }
    for r in &rows {
        let gt: Value = serde_json::from_str(r["ground_truth"].as_str().unwrap()).unwrap();
        assert_eq!(gt["answer"], r["answer"]);
        assert_eq!(gt["id"], r["id"]);
        for img in r["images"].as_array().unwrap() {
            assert!(tmp.path().join(&p.dir).join(img.as_str().unwrap()).exists());
        }
        assert!(r["problem"].as_str().unwrap().contains("<image>"));
    }
    let cfg = std::fs::read_to_string(tmp.path().join(&p.dir).join("config.yaml")).unwrap();
    for line in [
        "max_steps: 80",
        "n: 8  # curric: group_size = 8",
        "shuffle: false",
        "temperature: 1.2  # curric: temperature = 1.2",
        "disable_kl: true  # curric: beta = 0",
        "lr: 0.0001  # curric: lr = 0.0001",
    ] {
        assert!(cfg.contains(line), "config lacks `{line}`:\n{cfg}");
    }
    let second = std::fs::read_to_string(tmp.path().join("02_text_reasoning/config.yaml")).unwrap();
    assert!(second.contains("freeze_vision_tower: true  # curric: freeze = [\"visual\"]"));
}

/// pipeline.sh runs the phases in plan order and starts each from its parent's merged
/// checkpoint; the manifest names the EasyR1 commit, fingerprints and mapping decisions.
#[test]
fn pipeline_hands_each_phase_its_parents_merged_weights() {
    let (tmp, m) = staged_export();
    let sh = std::fs::read_to_string(tmp.path().join("pipeline.sh")).unwrap();
    let order: Vec<usize> = m
        .phases
        .iter()
        .map(|p| sh.find(&format!("run {}", p.dir)).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]));
    assert!(sh.contains("run 01_perception \"$BASE\"\nW_1=\"$(merged 01_perception)\""));
    assert!(sh.contains("run 02_text_reasoning \"$W_1\""));
    // An eval changes no weights: it reads the last trained phase's.
    assert!(sh.contains("run 04_final_eval \"$W_3\""));
    let st = Command::new("bash")
        .args(["-n", "pipeline.sh"])
        .current_dir(tmp.path())
        .status()
        .unwrap();
    assert!(st.success(), "pipeline.sh is not valid bash");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["easyr1_commit"], easyr1::EASYR1_COMMIT);
    assert_eq!(
        manifest["phases"][0]["fingerprint"].as_str().unwrap().len(),
        64
    );
    let decisions = manifest["decisions"].as_array().unwrap();
    let has = |c: &str, e: &str| {
        decisions
            .iter()
            .any(|d| d["curric"] == c && d["easyr1"] == e)
    };
    assert!(has("mu = 1", "worker.actor.ppo_epochs"));
    assert!(has("group_size = 8", "worker.rollout.n"));
    assert!(has(
        "mask_truncated = true",
        "not exported (--accept mask_truncated)"
    ));
}

/// What EasyR1 cannot run is refused, each with its stage and feature.
#[test]
fn features_easyr1_cannot_express_are_refused_by_stage() {
    let text = r#"
name = "r"
seed = 1
model = hf("Qwen/Qwen2.5-VL-3B-Instruct")
device = cpu
source s { suite = perception n = 8 }
reward acc = 1.0 accuracy(boxed)
defaults { kind = grpo mix = s stop = steps(2) reward = acc }
stage a { order = adarft(0.1, 2, 0.5) }
stage b { after = a  stop = steps(4) or plateau(5, 0.01)  freeze = ["visual.merger"] }
stage c { after = b  loss_agg = seq-mean-token-sum-norm  mask_truncated = true
          handoff b { optimizer = keep } }
stage d { after = c  kind = sft }
"#;
    let c = curric::check::check_str(text, "r.curr", None)
        .curriculum
        .expect("checks");
    let plan = curric::plan::plan(&c).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(Path::new("r.curr"), &tmp.path().join("out"));
    o.model = None;
    o.accept.clear();
    let Err(ExportError::Refused(rs)) = easyr1::export(&plan, &o) else {
        panic!("exported");
    };
    let got: Vec<(String, String)> = rs
        .iter()
        .map(|r| (r.stage.clone(), r.feature.clone()))
        .collect();
    for (stage, feature) in [
        ("a", "order = adarft"),
        ("b", "stop = steps(4) or plateau(5, 0.01)"),
        ("b", "freeze = [\"visual.merger\"]"),
        ("c", "loss_agg = seq-mean-token-sum-norm"),
        ("c", "mask_truncated = true"),
        ("c", "handoff b { optimizer = keep }"),
    ] {
        assert!(
            got.iter()
                .any(|(s, f)| s == stage && f.starts_with(feature)),
            "no refusal of {feature} in {stage}: {got:?}"
        );
    }
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(rs
        .iter()
        .find(|r| r.feature.starts_with("mask_truncated"))
        .unwrap()
        .to_string()
        .contains("--accept mask_truncated"),);
    assert!(!tmp.path().join("out").exists());
}

/// Runs an exported `pipeline.sh` against the EasyR1 stand-in (tests/fixtures/easyr1_standin).
fn run_pipeline(out: &Path, curriculum: &Path) {
    let o = Command::new("bash")
        .arg(out.join("pipeline.sh"))
        .env("EASYR1", root().join("tests/fixtures/easyr1_standin"))
        .env("EASYR1_VALIDATE", validator())
        .env("PYTHONPATH", python_path())
        .env("CURRIC", env!("CARGO_BIN_EXE_curric"))
        .env("CURRIC_FILE", curriculum)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pipeline.sh failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn launches(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("launches.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The exported pipeline runs end to end on the stand-in: every phase once, each started from
/// its parent's merged checkpoint; a rerun skips them all.
#[test]
fn the_exported_pipeline_runs_and_hands_weights_on() {
    let (tmp, m) = staged_export();
    let file = root().join("curricula/staged_plus_difficulty.curr");
    run_pipeline(tmp.path(), &file);
    for p in &m.phases {
        assert!(tmp.path().join(&p.dir).join("DONE").exists(), "{}", p.dir);
    }
    let second = launches(&tmp.path().join("02_text_reasoning"));
    assert_eq!(second.len(), 1);
    assert!(second[0]["model_path"]
        .as_str()
        .unwrap()
        .ends_with("01_perception/checkpoints/global_step_80/actor/huggingface"));
    let eval = launches(&tmp.path().join("04_final_eval"));
    assert!(eval[0]["model_path"]
        .as_str()
        .unwrap()
        .ends_with("03_visual_reasoning/checkpoints/global_step_80/actor/huggingface"));
    run_pipeline(tmp.path(), &file);
    assert_eq!(launches(&tmp.path().join("02_text_reasoning")).len(), 1);
}

/// Method A's curriculum end to end through the exported pipeline: the probe on EasyR1 (the
/// stand-in), its hard samples to an sft phase that curric trains itself (the shipped base
/// model, on CPU), then GRPO on EasyR1 from the sft phase's Hugging Face-format weights.
#[test]
fn pebr_two_stage_runs_through_the_pipeline_with_curric_training_its_sft_phase() {
    let file = root().join("curricula/pebr_two_stage.curr");
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&file, tmp.path());
    o.model = Some(root().join("models/shapes-base").display().to_string());
    let m = easyr1::export(&plan_of(&file), &o).unwrap();
    let sft = &m.phases[1];
    assert_eq!(
        (sft.id.as_str(), sft.runs_on.as_str()),
        ("remedial_sft", "curric")
    );
    let o = Command::new("bash")
        .arg(tmp.path().join("pipeline.sh"))
        .env("EASYR1", root().join("tests/fixtures/easyr1_standin"))
        .env("EASYR1_VALIDATE", validator())
        .env("PYTHONPATH", python_path())
        .env("CURRIC", env!("CARGO_BIN_EXE_curric"))
        .env("DEVICE", "cpu")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let hf = tmp.path().join("02_remedial_sft/hf");
    assert!(hf.join("model.safetensors").exists() && hf.join("provenance.json").exists());
    let rl = launches(&tmp.path().join("03_perception_rl"));
    assert_eq!(rl[0]["model_path"], hf.display().to_string());
    for p in &m.phases {
        assert!(tmp.path().join(&p.dir).join("DONE").exists(), "{}", p.dir);
    }
}

/// A probe phase is a validation-only job whose reward function logs every rollout; the
/// pipeline turns those results into the data of the phases after it.
#[test]
fn probe_results_become_the_next_phases_data() {
    let text = r#"
name = "p"
seed = 3
model = hf("Qwen/Qwen2.5-VL-3B-Instruct")
device = cpu
source s { suite = perception n = 6 }
difficulty { from = probe(probe) easy = 0.75 .. 1.0 medium = 0.125 .. 0.625 hard = 0.0 .. 0.0 }
reward acc = 1.0 accuracy(boxed)
stage probe { kind = probe mix = s rollouts = 4 reward = acc }
stage rl { after = probe kind = grpo mix = s levels = [easy] stop = steps(2)
           group_size = 4 prompts_per_step = 2 reward = acc }
"#;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.curr");
    std::fs::write(&file, text).unwrap();
    let plan = plan_of(&file);
    let out = tmp.path().join("out");
    let m = easyr1::export(&plan, &opts(&file, &out)).unwrap();
    assert_eq!(m.phases[1].data_after.as_deref(), Some("probe"));
    assert!(!out.join("02_rl/train.jsonl").exists());
    validate(&out.join("01_probe")).unwrap();
    let cfg = std::fs::read_to_string(out.join("01_probe/config.yaml")).unwrap();
    assert!(cfg.contains("val_only: true"));
    let sh = std::fs::read_to_string(out.join("pipeline.sh")).unwrap();
    assert!(sh.contains("data_from 01_probe rl"));

    run_pipeline(&out, &file);
    let results: Vec<Value> = std::fs::read_to_string(out.join("01_probe/results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 18 * 4, "6 samples × 3 levels × 4 rollouts");
    let mut passes = std::collections::BTreeMap::<String, u64>::new();
    for r in &results {
        *passes.entry(r["id"].as_str().unwrap().into()).or_default() +=
            r["passed"].as_bool().unwrap() as u64;
    }
    let easy: Vec<&String> = passes
        .iter()
        .filter(|(_, &k)| k >= 3)
        .map(|(id, _)| id)
        .collect();
    assert!(!easy.is_empty() && easy.len() < passes.len(), "{passes:?}");
    validate(&out.join("02_rl")).unwrap();
    let rows: Vec<Value> = std::fs::read_to_string(out.join("02_rl/train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "2 steps × 2 prompts");
    for r in &rows {
        assert!(
            easy.contains(&&r["id"].as_str().unwrap().to_string()),
            "{r}"
        );
    }
    assert!(out.join("02_rl/DONE").exists());
    assert_eq!(launches(&out.join("02_rl"))[0]["max_steps"], 2);
}

/// Completions that exercise every extractor, comparison, format style and length rule.
const COMPLETIONS: &[&str] = &[
    "<think>2+1</think> \\boxed{3}",
    "<think>2+1</think> \\boxed{3}.",
    "<think>2+1</think> \\boxed{3} and more",
    "<think></think> \\boxed{3}",
    "<think>a</think><think>b</think> \\boxed{3}",
    "\\boxed{3}",
    "<think>x</think> \\boxed{}",
    "<think>x</think> \\boxed{\\frac{3}{1}}",
    "<think>x</think> \\boxed{1,000}",
    "<think>x</think> \\boxed{3.0000001}",
    "<think>x</think> \\boxed{a{b}c}",
    "<think>x</think> \\boxed{3",
    "<think>x</think> <answer> 3 </answer>",
    "<think>x</think> <answer>B</answer>",
    "<think>x</think> <answer></answer>",
    "<think>x</think> <answer>1</answer><answer>2</answer>",
    "### Image Description: two red circles\n### Rationales: count\n### Let's think step by step. ok\n### The final answer is: **B**.\nmore",
    "the final answer is 7",
    "The final answer is:",
    "I see two red circles and a blue square.",
    "2 red circles, one blue squares, three green triangles",
    "Red circle. RED circles! predict redness",
    "no digits here",
    "we get 1,234 then -5.5 end",
    "(B) a cat",
    "option b",
    "Blue",
    "\\text{Yes}.",
    "<think>x</think> \\boxed{$5}",
    "<think>x</think> \\boxed{50\\%}",
    "  <think>x</think>  \\boxed{red circle}  ",
    "crosses and hexagons: 2 stars",
];

/// (answer, key_words, objects) the completions are scored against.
fn samples() -> Vec<Sample> {
    let s = |answer: &str, kw: &[&str], objects: &[&str]| Sample {
        key_words: kw.iter().map(|k| k.to_string()).collect(),
        objects: objects.iter().map(|o| o.to_string()).collect(),
        ..Sample::new(
            "g",
            "<image> q",
            answer,
            Capability::new(Capability::PERCEPTION),
        )
    };
    vec![
        s(
            "3",
            &["red", "circle"],
            &["red circle", "red circle", "blue square"],
        ),
        s("B", &[], &[]),
        s(
            "7",
            &["Blue", "  ", "green triangle"],
            &["green triangle", "star"],
        ),
        s("yes", &["pred"], &["red circle"]),
        s("red circle", &["red circle"], &["red circle", "hexagon"]),
    ]
}

fn term_configs() -> Vec<(&'static str, Value)> {
    vec![
        ("accuracy", json!({})),
        ("accuracy", json!({"extract": "boxed"})),
        (
            "accuracy",
            json!({"extract": "answer_tag", "compare": "choice"}),
        ),
        (
            "accuracy",
            json!({"extract": "final_answer", "compare": "exact"}),
        ),
        (
            "accuracy",
            json!({"extract": "last_number", "compare": "numeric", "tolerance": 0.01}),
        ),
        ("accuracy", json!({"extract": "auto", "compare": "choice"})),
        ("format", json!({"style": "think_then_boxed"})),
        ("format", json!({"style": "think_then_answer"})),
        ("format", json!({"style": "headers"})),
        (
            "format",
            json!({"style": "regex", "pattern": "<think>.*</think>.*"}),
        ),
        ("soft_overlong", json!({"max": 12, "buffer": 4})),
        ("length_cap", json!({"max": 10})),
        ("keyword_recall", json!({})),
        ("scene_f1", json!({})),
    ]
}

fn golden_rows() -> Vec<Value> {
    let mut rows = Vec::new();
    for (ci, text) in COMPLETIONS.iter().enumerate() {
        // Token counts are the reward's input too (EasyR1's response_length).
        let tokens = 3 + ci * 2 % 17;
        for (si, s) in samples().iter().enumerate() {
            for (term, args) in term_configs() {
                // Terms that read only the text need one sample; answers need three.
                let reads = match term {
                    "keyword_recall" | "scene_f1" => 5,
                    "accuracy" => 3,
                    _ => 1,
                };
                if si >= reads {
                    continue;
                }
                let r = curric::reward::build(term, args.as_object().unwrap()).unwrap();
                let c = Completion {
                    tokens: vec![5; tokens],
                    text: text.to_string(),
                    truncated: false,
                };
                let score = r.score(s, &c);
                // reward.py is handed every parameter, defaults filled in.
                let args = easyr1::with_defaults(term, args.as_object().unwrap().clone());
                rows.push(json!({
                    "term": term, "args": args, "completion": text, "tokens": tokens,
                    "sample": {"answer": s.answer, "key_words": s.key_words, "objects": s.objects},
                    "score": score as f64,
                }));
            }
        }
    }
    rows
}

/// curric's Rust rewards score the golden table as it is written (UPDATE_GOLDEN=1 rewrites
/// it), and reward.py scores it the same: one table, two implementations.
#[test]
fn reward_py_and_curric_score_the_golden_table_alike() {
    let path = root().join("tests/golden/rewards.jsonl");
    let rows = golden_rows();
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("tests/golden/rewards.jsonl");
    assert!(
        want == text,
        "curric's rewards no longer score tests/golden/rewards.jsonl as written \
         (UPDATE_GOLDEN=1 rewrites it after a deliberate change)"
    );
    let distinct: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r["score"].to_string()).collect();
    assert!(
        distinct.len() >= 8,
        "the table exercises few scores: {distinct:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("reward.py"), easyr1::reward_py(&[])).unwrap();
    let script = "import importlib.util, json, sys\n\
        spec = importlib.util.spec_from_file_location('r', 'reward.py')\n\
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n\
        bad = 0\n\
        for i, line in enumerate(open(sys.argv[1])):\n\
        \x20   r = json.loads(line)\n\
        \x20   got = m.score_term(r['term'], r['args'], r['completion'], r['tokens'], r['sample'])\n\
        \x20   if abs(got - r['score']) > 1e-6:\n\
        \x20       bad += 1\n\
        \x20       print(f\"row {i+1}: {r['term']} {r['args']} on {r['completion']!r}: python {got}, rust {r['score']}\")\n\
        print(f'{bad} mismatches')\n\
        sys.exit(1 if bad else 0)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A phase's reward.py has its terms, weights and labels, and `overall` is their weighted sum.
#[test]
fn a_phase_reward_py_weighs_its_terms_like_curric() {
    let (tmp, _) = staged_export();
    let dir = tmp.path().join("01_perception");
    let s = &samples()[0];
    let gt = easyr1::ground_truth(s);
    let texts = [
        "<think>x</think> \\boxed{3}",
        "\\boxed{3}",
        "<think>x</think> \\boxed{4}",
    ];
    let set = curric::reward::RewardSet::from_spec([
        (
            "accuracy",
            0.9f32,
            &json!({"extract": "boxed"}).as_object().unwrap().clone(),
        ),
        (
            "format",
            0.1f32,
            &json!({"style": "think_then_boxed"})
                .as_object()
                .unwrap()
                .clone(),
        ),
    ])
    .unwrap();
    let want: Vec<f32> = texts
        .iter()
        .map(|t| {
            set.score(
                s,
                &Completion {
                    tokens: vec![1; 5],
                    text: t.to_string(),
                    truncated: false,
                },
            )
            .total
        })
        .collect();
    let inputs: Vec<Value> = texts
        .iter()
        .map(|t| json!({"response": t, "response_length": 5, "ground_truth": gt}))
        .collect();
    let script = format!(
        "import importlib.util, json\n\
         spec = importlib.util.spec_from_file_location('r', 'reward.py')\n\
         m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n\
         print(json.dumps(m.compute_score(json.loads({:?}))))\n",
        serde_json::to_string(&inputs).unwrap()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g["overall"].as_f64().unwrap() - *w as f64).abs() < 1e-6,
            "{g} vs {w}"
        );
        assert!(g.get("accuracy").is_some() && g.get("format").is_some());
    }
    assert_eq!(want, vec![1.0, 0.9, 0.1]);
}
