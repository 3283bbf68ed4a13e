//! Table-driven tests of every text reward term, built through the registry as a plan would.

use curric::data::{Capability, Sample};
use curric::model::Completion;
use curric::reward::{build, catalog, RewardError, RewardSet, SceneF1};
use serde_json::{json, Map, Value};

fn sample(answer: &str) -> Sample {
    Sample::new(
        "s",
        "<image> q",
        answer,
        Capability::new(Capability::VISUAL_REASONING),
    )
}

/// A completion of `n` tokens (ids do not matter to text rewards), truncated or not.
fn comp(text: &str, n: usize, truncated: bool) -> Completion {
    Completion {
        tokens: vec![5; n],
        text: text.into(),
        truncated,
    }
}

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn score(term: &str, a: Value, s: &Sample, text: &str) -> f32 {
    build(term, &args(a))
        .unwrap()
        .score(s, &comp(text, 4, false))
}

#[test]
fn accuracy_table() {
    // (args, answer, completion, expected)
    let cases: &[(Value, &str, &str, f32)] = &[
        (json!({}), "3", "<think>2+1</think> \\boxed{3}", 1.0),
        (json!({}), "3", "\\boxed{3.0}", 1.0),
        (json!({}), "0.5", "\\boxed{\\frac{1}{2}}", 1.0),
        (json!({}), "0.5", "\\boxed{1/2}", 1.0),
        (json!({}), "-2", "so \\boxed{-2}", 1.0),
        (json!({}), "1000", "\\boxed{1,000}", 1.0),
        (json!({}), "3", "\\boxed{4}", 0.0),
        (json!({}), "red", "\\boxed{ Red }", 1.0),
        (json!({}), "red", "\\boxed{blue}", 0.0),
        (json!({}), "yes", "<answer>Yes</answer>", 1.0),
        (json!({}), "7", "The final answer is: 7.", 1.0),
        (json!({}), "7", "count 3 then 7", 1.0),
        // empty, malformed and truncated completions
        (json!({}), "3", "", 0.0),
        (json!({}), "3", "\\boxed{3", 1.0), // unbalanced box → falls back to the last number
        (json!({"extract": "boxed"}), "3", "\\boxed{3", 0.0),
        (json!({"extract": "boxed"}), "3", "<think>it is 3", 0.0),
        (json!({"extract": "answer_tag"}), "3", "<answer>3", 0.0),
        (json!({"extract": "last_number"}), "3", "\\boxed{4} 3", 1.0),
        // comparisons
        (json!({"compare": "numeric"}), "3", "\\boxed{three}", 0.0),
        (
            json!({"compare": "numeric", "tolerance": 0.01}),
            "100",
            "\\boxed{100.5}",
            1.0,
        ),
        (json!({"compare": "numeric"}), "100", "\\boxed{100.5}", 0.0),
        (json!({"compare": "exact"}), "3", "\\boxed{3.0}", 0.0),
        (
            json!({"compare": "exact"}),
            "Left Side",
            "\\boxed{left side}",
            1.0,
        ),
        (json!({"compare": "choice"}), "B", "\\boxed{(B)}", 1.0),
        (
            json!({"compare": "choice"}),
            "(b)",
            "\\boxed{B. a cat}",
            1.0,
        ),
        (json!({"compare": "choice"}), "B", "\\boxed{b)}", 1.0),
        (json!({"compare": "choice"}), "B", "\\boxed{C}", 0.0),
        (json!({"compare": "choice"}), "B", "\\boxed{}", 0.0),
    ];
    for (a, ans, text, want) in cases {
        let got = score("accuracy", a.clone(), &sample(ans), text);
        assert_eq!(got, *want, "accuracy{a} answer {ans:?} on {text:?}");
    }
}

#[test]
fn format_table() {
    let headers = json!({"style": "headers"});
    let pebr = "### Image Description: a red circle\n### Rationales: r\n### Let's think step by step.\n### Step 1: x\n### The final answer is: 3";
    let cases: &[(Value, &str, f32)] = &[
        (json!({}), "<think> 1 + 2 </think> \\boxed{3}", 1.0),
        (json!({}), "  <think>a</think>\\boxed{x{y}}", 1.0),
        (json!({}), "<think></think> \\boxed{3}", 0.0), // empty thoughts
        (json!({}), "\\boxed{3}", 0.0),
        (json!({}), "<think> a </think> 3", 0.0),
        (json!({}), "<think> a \\boxed{3}", 0.0), // truncated inside the thoughts
        (json!({}), "<think> a </think> \\boxed{3", 0.0),
        (json!({}), "<think> a </think> </think> \\boxed{3}", 0.0),
        (json!({}), "", 0.0),
        (json!({}), "<think> green </think> \\boxed{}", 0.0), // empty answer
        (json!({}), "<think> green </think> \\boxed{  }", 0.0),
        (json!({}), "<think> a </think> so \\boxed{3}.", 1.0),
        // Text after the answer (a policy that never stops) is not the structure.
        (json!({}), "<think> a </think> \\boxed{3}}}}}", 0.0),
        (json!({}), "<think> a </think> \\boxed{3} and more", 0.0),
        (json!({}), "<think> a </think> \\boxed{3} \\boxed{4}", 0.0),
        (json!({"style": "think_then_answer"}), "<think>a</think> <answer> </answer>", 0.0),
        (json!({"style": "think_then_answer"}), "<think>a</think> <answer>3</answer>", 1.0),
        (json!({"style": "think_then_answer"}), "<think>a</think> <answer>3</answer> more", 0.0),
        (json!({"style": "think_then_answer"}), "<think>a</think> <answer>3", 0.0),
        (headers.clone(), pebr, 1.0),
        (headers.clone(), "### Rationales: r\n### Image Description: d\n### Let's think step by step.\n### The final answer is: 3", 0.0),
        (headers.clone(), "### Image Description: only", 0.0),
        (json!({"style": "headers", "headers": ["A:", "B:"]}), "A: x B: y", 1.0),
        (json!({"style": "regex", "pattern": "[0-9]+"}), "123", 1.0),
        (json!({"style": "regex", "pattern": "[0-9]+"}), "123 abc", 0.0), // whole match
        (json!({"style": "regex", "pattern": "a.*b"}), "a\nb", 1.0),
    ];
    for (a, text, want) in cases {
        assert_eq!(
            score("format", a.clone(), &sample("3"), text),
            *want,
            "format{a} on {text:?}"
        );
    }
}

#[test]
fn length_terms() {
    let so = build("soft_overlong", &args(json!({"max": 20, "buffer": 10}))).unwrap();
    let lc = build("length_cap", &args(json!({"max": 512}))).unwrap();
    let s = sample("3");
    // soft_overlong: 0 up to 10 tokens, then (10 - L)/10, -1 beyond 20
    for (n, want) in [
        (0, 0.0),
        (10, 0.0),
        (15, -0.5),
        (18, -0.8),
        (20, -1.0),
        (25, -1.0),
    ] {
        assert!(
            (so.score(&s, &comp("x", n, n >= 20)) - want).abs() < 1e-6,
            "L={n}"
        );
    }
    // length_cap: 1 up to 512, then 512/L: 1024 → 0.5, 640 → 0.8
    for (n, want) in [(0, 1.0), (512, 1.0), (640, 0.8), (1024, 0.5)] {
        assert!(
            (lc.score(&s, &comp("x", n, false)) - want).abs() < 1e-6,
            "L={n}"
        );
    }
}

#[test]
fn keyword_recall_table() {
    let kr = build("keyword_recall", &Map::new()).unwrap();
    let mut s = sample("3");
    s.key_words = vec![
        "Red".into(),
        "circle".into(),
        "top left".into(),
        "two".into(),
    ];
    let cases: &[(&str, f32)] = &[
        ("A RED circle in the top left, two of them", 1.0),
        ("a red circle", 0.5),
        ("predict circles", 0.0), // whole words only: "red" ⊄ "predict", "circle" ⊄ "circles"
        ("top  left", 0.0),       // phrases match as written
        ("", 0.0),
    ];
    for (text, want) in cases {
        assert_eq!(kr.score(&s, &comp(text, 3, false)), *want, "{text:?}");
    }
    // No key words: defined as 1 (nothing to miss).
    assert_eq!(kr.score(&sample("3"), &comp("anything", 1, false)), 1.0);
}

#[test]
fn scene_f1_table() {
    let sf = build("scene_f1", &Map::new()).unwrap();
    let mut s = sample("3");
    s.objects = vec![
        "red circle".into(),
        "red circle".into(),
        "blue square".into(),
    ];
    let cases: &[(&str, f32)] = &[
        ("two red circles and a blue square", 1.0),
        ("a red circle and a blue square", 0.8), // P 2/2, R 2/3 → F1 0.8
        ("a red circle", 0.5),                   // P 1, R 1/3 → 0.5
        ("2 red circles, 1 blue square, a green triangle", 6.0 / 7.0), // P 3/4 R 1 → 6/7
        ("a green star", 0.0),
        ("", 0.0),
        ("<think> a red", 0.0), // truncated before the noun
    ];
    for (text, want) in cases {
        let got = sf.score(&s, &comp(text, 3, false));
        assert!((got - want).abs() < 1e-6, "{text:?}: {got} vs {want}");
    }
    let (p, r, f) = SceneF1::prf("a red circle", &s.objects);
    assert!((p - 1.0).abs() < 1e-6 && (r - 1.0 / 3.0).abs() < 1e-6 && (f - 0.5).abs() < 1e-6);
    let subs = sf.sub_scores(&s, &comp("a red circle", 3, false));
    assert_eq!(subs.len(), 2);
    // Empty scene, nothing named: perfect.
    assert_eq!(sf.score(&sample("3"), &comp("nothing here", 2, false)), 1.0);
    assert_eq!(sf.score(&sample("3"), &comp("a red circle", 2, false)), 0.0);
}

#[test]
fn registry_errors_and_defaults() {
    let err = |name: &str, a: Value| build(name, &args(a)).err().unwrap();
    assert!(matches!(
        err("nope", json!({})),
        RewardError::UnknownTerm(_)
    ));
    assert!(matches!(
        err("accuracy", json!({"tolerence": 1})),
        RewardError::UnknownParam { .. }
    ));
    assert!(matches!(
        err("accuracy", json!({"extract": "magic"})),
        RewardError::BadParam { .. }
    ));
    assert!(matches!(
        err("format", json!({"style": "regex"})),
        RewardError::BadParam { .. }
    ));
    let e = err("format", json!({"style": "regex", "pattern": "(unclosed"}));
    assert!(e.to_string().contains("invalid regex"), "{e}");
    assert!(matches!(
        err("soft_overlong", json!({"max": 10})),
        RewardError::BadParam { .. }
    ));
    assert!(matches!(
        err("soft_overlong", json!({"max": 10, "buffer": 11})),
        RewardError::BadParam { .. }
    ));
    assert!(matches!(
        err("length_cap", json!({"max": -1})),
        RewardError::BadParam { .. }
    ));
    assert!(matches!(
        err("clip_score", json!({})),
        RewardError::BadParam { .. }
    ));
    assert!(matches!(
        err("clip_score", json!({"model": "/nonexistent/clip"})),
        RewardError::ClipModel { .. }
    ));
    // Every catalogue term except clip_score (needs a model) builds from its defaults plus
    // its required parameters.
    for t in catalog::TERMS.iter().filter(|t| t.name != "clip_score") {
        let mut a = Map::new();
        for p in t.params {
            if p.default == catalog::Default::Required {
                a.insert(p.name.into(), json!(16));
            }
        }
        let r = build(t.name, &a).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(r.name(), t.name);
    }
}

#[test]
fn reward_set_weights_terms() {
    // Method B: 0.9·accuracy + 0.1·format
    let empty = Map::new();
    let set = RewardSet::from_spec([("accuracy", 0.9, &empty), ("format", 0.1, &empty)]).unwrap();
    assert_eq!(set.labels(), vec!["accuracy", "format"]);
    let s = sample("3");
    let r = set.score(&s, &comp("<think> 1+2 </think> \\boxed{3}", 8, false));
    assert!((r.total - 1.0).abs() < 1e-6 && r.terms == vec![1.0, 1.0]);
    let r = set.score(&s, &comp("\\boxed{3}", 3, false));
    assert!((r.total - 0.9).abs() < 1e-6 && r.terms == vec![1.0, 0.0]);
    let r = set.score(&s, &comp("<think> hm </think> \\boxed{4}", 8, false));
    assert!((r.total - 0.1).abs() < 1e-6);
    let r = set.score(&s, &comp("", 0, true));
    assert_eq!((r.total, r.terms.clone()), (0.0, vec![0.0, 0.0]));
    // Repeated terms get unique labels.
    let set = RewardSet::from_spec([("format", 0.5, &empty), ("format", 0.5, &empty)]).unwrap();
    assert_eq!(set.labels(), vec!["format", "format#2"]);
}
