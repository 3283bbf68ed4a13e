//! The checker and planner never panic, whatever the bytes: a property test over mutated
//! valid curricula (byte flips, deletions, insertions, splices) plus fixed hostile inputs.

use std::path::Path;

use proptest::prelude::*;

const SEEDS: &[&str] = &[
    include_str!("../curricula/staged_plus_difficulty.curr"),
    include_str!("../curricula/staged.curr"),
    include_str!("../curricula/difficulty_only.curr"),
    include_str!("../curricula/merged.curr"),
    include_str!("../curricula/reversed.curr"),
    include_str!("../curricula/pebr_two_stage.curr"),
];

/// Everything a user can trigger from a file: check, plan and every rendering.
fn exercise(bytes: &[u8]) {
    let checked = curric::check::check_bytes(bytes, "fuzz.curr", Some(Path::new("curricula")));
    let rendered = checked.report.render();
    if checked.report.has_errors() {
        assert!(checked.curriculum.is_none());
        assert!(
            rendered.contains("curric::"),
            "an error renders with its code"
        );
    }
    if let Some(c) = checked.curriculum {
        let plan = curric::plan::plan(&c).expect("a clean check always plans");
        let _ = curric::plan::render_table(&plan, None);
        let _ = curric::plan::render_dot(&plan);
        let json = plan.to_json();
        let back: curric::plan::Plan = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.phases.len(), plan.phases.len());
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    /// Copy `len` bytes from another seed file at `from` to position `at`.
    Splice {
        seed: usize,
        from: usize,
        len: usize,
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let tokens: Vec<Vec<u8>> = [
        "{", "}", "(", ")", "[", "]", "=", "+", "->", "..", "\"", "or", "and", "extends", "\n",
        "0", "-1", "1e309", "stage", "source", "after = ", "mix", "\u{0}", "\u{ff}", "é",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), prop::sample::select(tokens)).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (0..SEEDS.len(), any::<usize>(), 1usize..200, any::<usize>()).prop_map(
            |(seed, from, len, at)| Mutation::Splice {
                seed,
                from,
                len,
                at
            }
        ),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::Flip(i, b) => {
            if !buf.is_empty() {
                let k = i % buf.len();
                buf[k] ^= b | 1;
            }
        }
        Mutation::Delete(i, n) => {
            let s = at(*i, buf.len());
            let e = (s + n).min(buf.len());
            buf.drain(s..e);
        }
        Mutation::Insert(i, bytes) => {
            let s = at(*i, buf.len());
            buf.splice(s..s, bytes.iter().copied());
        }
        Mutation::Splice {
            seed,
            from,
            len,
            at: to,
        } => {
            let src = SEEDS[*seed].as_bytes();
            let s = from % src.len();
            let e = (s + len).min(src.len());
            let p = at(*to, buf.len());
            buf.splice(p..p, src[s..e].iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_curricula_never_panic(
        seed in 0..SEEDS.len(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut buf = SEEDS[seed].as_bytes().to_vec();
        for m in &muts {
            apply(&mut buf, m);
        }
        exercise(&buf);
    }
}

#[test]
fn seeds_are_clean() {
    for s in SEEDS {
        let c = curric::check::check_bytes(s.as_bytes(), "seed.curr", Some(Path::new("curricula")));
        assert!(!c.report.has_errors(), "{}", c.report.render());
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe\x00\x01".to_vec(),
        (0..=255u8).cycle().take(64 * 1024).collect(),
        format!("x = {}", "[".repeat(100_000)).into_bytes(),
        format!("x = {}1{}", "(".repeat(5000), ")".repeat(5000)).into_bytes(),
        format!("stage a {{ {} }}", "stage b { ".repeat(1000)).into_bytes(),
        format!("name = \"{}\"", "a".repeat(4 * 1024 * 1024)).into_bytes(),
        format!("x = {}", "1 a + ".repeat(100_000)).into_bytes(),
        format!("x = {}", "steps(1) or ".repeat(50_000)).into_bytes(),
        "\"unterminated".into(),
        // Exactly at the nesting limit: accepted by the depth guard, so pest must cope.
        format!("x = {}1{}", "(".repeat(63), ")".repeat(63)).into_bytes(),
        format!("x = {}1{}", "[f(".repeat(21), ")]".repeat(21)).into_bytes(),
        "stage \u{202e} { }".into(),
    ];
    // A multi-megabyte line inside an otherwise valid file.
    let mut long = SEEDS[0].as_bytes().to_vec();
    long.extend(format!("\n// {}\n", "x".repeat(3 * 1024 * 1024)).bytes());
    inputs.push(long);
    for input in &inputs {
        let checked = curric::check::check_bytes(input, "hostile.curr", None);
        // Rendering a 4 MB line is slow but must not panic; keep it to the small ones.
        if input.len() < 1024 * 1024 {
            let _ = checked.report.render();
        }
        if let Some(c) = checked.curriculum {
            let _ = curric::plan::plan(&c);
        }
    }
}

#[test]
fn nesting_at_the_limit_parses_on_a_small_stack() {
    // Callers may run on small threads (2 MB here); the parser must still reach its limit.
    let d = curric::syntax::MAX_DEPTH - 1;
    let src = format!("x = {}1{}", "(".repeat(d), ")".repeat(d));
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || curric::syntax::parse(&src).map(|f| f.items.len()))
        .expect("thread");
    assert_eq!(h.join().expect("no stack overflow"), Ok(1));
}
