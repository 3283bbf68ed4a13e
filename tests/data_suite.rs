//! The built-in suite: determinism, vocabulary coverage, train/eval disjointness, export.

use std::collections::HashSet;

use curric::data::jsonl::{self, ReadOptions};
use curric::data::suite::{self, content_hash, split_words, vocabulary, Suite};
use curric::data::{Capability, Level};

#[test]
fn generation_is_deterministic_from_the_seed() {
    for cap in suite::capabilities() {
        let a = suite::generate(&cap, Level::Medium, 20, 42).unwrap();
        let b = suite::generate(&cap, Level::Medium, 20, 42).unwrap();
        let c = suite::generate(&cap, Level::Medium, 20, 43).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (&x.problem, &x.answer, &x.trace),
                (&y.problem, &y.answer, &y.trace)
            );
            assert_eq!(
                x.images.iter().map(|i| i.as_raw()).collect::<Vec<_>>(),
                y.images.iter().map(|i| i.as_raw()).collect::<Vec<_>>()
            );
        }
        let same = a
            .iter()
            .zip(&c)
            .filter(|(x, y)| x.problem == y.problem)
            .count();
        assert!(same < 20, "{cap}: another seed gives the same problems");
    }
}

#[test]
fn every_sample_uses_only_vocabulary_words() {
    let vocab: HashSet<String> = vocabulary().into_iter().collect();
    let mut used = HashSet::new();
    for cap in suite::capabilities() {
        for level in Level::ALL {
            for s in suite::generate(&cap, level, 150, 5).unwrap() {
                let text = format!("{} {} {}", s.problem, s.trace.as_deref().unwrap(), s.answer);
                // Written as the model's detokenizer joins tokens: no space before punctuation.
                for p in [" ,", " .", " :", " ?"] {
                    assert!(!text.contains(p), "`{p}` in {text}");
                }
                for w in split_words(&text) {
                    assert!(
                        vocab.contains(&w),
                        "`{w}` missing from vocabulary ({})",
                        s.problem
                    );
                    used.insert(w);
                }
                for k in s.key_words.iter().chain(&s.objects) {
                    for w in split_words(k) {
                        assert!(vocab.contains(&w), "key word `{w}` missing");
                    }
                }
            }
        }
    }
    // The list carries no dead weight either: nearly every word is really used.
    let unused: Vec<_> = vocab.difference(&used).collect();
    assert!(
        unused.len() <= 3,
        "vocabulary words never generated: {unused:?}"
    );
}

#[test]
fn eval_never_equals_train() {
    for cap in suite::capabilities() {
        for level in Level::ALL {
            let train: HashSet<[u8; 32]> = suite::generate(&cap, level, 400, 1)
                .unwrap()
                .iter()
                .map(|s| content_hash(&s.problem, s.images.first().map(|i| i.as_ref())))
                .collect();
            let eval = suite::eval_split(&cap, level, 100, 1).unwrap();
            assert!(eval[0].id.contains("/eval/"));
            for s in &eval {
                let h = content_hash(&s.problem, s.images.first().map(|i| i.as_ref()));
                assert!(!train.contains(&h), "{} also in train", s.id);
            }
        }
    }
}

#[test]
fn levels_differ_in_difficulty_knobs() {
    let cap = Capability::new("perception");
    let mean_objects = |level| {
        let s = suite::generate(&cap, level, 60, 9).unwrap();
        s.iter().map(|s| s.objects.len()).sum::<usize>() as f64 / s.len() as f64
    };
    let (e, m, h) = (
        mean_objects(Level::Easy),
        mean_objects(Level::Medium),
        mean_objects(Level::Hard),
    );
    assert!(e < m && m < h, "{e} {m} {h}");
    let text = Capability::new("text_reasoning");
    let steps = |level| {
        let s = suite::generate(&text, level, 60, 9).unwrap();
        s.iter()
            .map(|s| s.trace.as_deref().unwrap().matches('=').count())
            .max()
            .unwrap()
    };
    assert_eq!(
        (steps(Level::Easy), steps(Level::Medium), steps(Level::Hard)),
        (1, 2, 3)
    );
}

#[test]
fn reference_traces_mention_every_key_word() {
    // keyword_recall on the reference completion is 1: the reward is attainable.
    for cap in suite::capabilities() {
        for level in Level::ALL {
            for s in suite::generate(&cap, level, 100, 8).unwrap() {
                let trace = s.trace.as_deref().unwrap().to_lowercase();
                assert!(!s.key_words.is_empty(), "{}", s.id);
                for k in &s.key_words {
                    assert!(trace.contains(&k.to_lowercase()), "`{k}` not in `{trace}`");
                }
            }
        }
    }
}

#[test]
fn answers_are_consistent_with_the_scene() {
    // Describe answers list the ground truth; count answers never exceed the object count.
    let cap = Capability::new("perception");
    for s in suite::generate(&cap, Level::Hard, 200, 11).unwrap() {
        match s.extra["family"].as_str().unwrap() {
            "describe" => assert_eq!(s.answer, s.objects.join(", ")),
            "count_colour" | "count_shape" => {
                assert!(s.answer.parse::<usize>().unwrap() <= s.objects.len())
            }
            "exists" => {
                let name = s.problem.split("Is there a ").nth(1).unwrap();
                let name = name.split('?').next().unwrap();
                let present = s.objects.iter().any(|o| o == name);
                assert_eq!(s.answer, if present { "yes" } else { "no" });
            }
            _ => {}
        }
    }
}

#[test]
fn export_writes_every_capability_and_level_and_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let suite = Suite::default();
    let summary = suite::export(&suite, dir.path(), 4, 7).unwrap();
    assert_eq!(summary.files.len(), 9);
    assert_eq!(summary.samples, 36);
    assert_eq!(summary.images, 24);
    for cap in suite::capabilities() {
        for level in Level::ALL {
            let file = dir.path().join(format!("{cap}_{level}.jsonl"));
            let loaded = jsonl::read(&file, &ReadOptions::default()).unwrap();
            assert!(loaded.skipped.is_empty());
            let original = suite.generate(&cap, level, 4, 7).unwrap();
            assert_eq!(loaded.samples.len(), original.len());
            for (a, b) in loaded.samples.iter().zip(&original) {
                assert_eq!(a.id, b.id);
                assert_eq!(a.problem, b.problem);
                assert_eq!(a.answer, b.answer);
                assert_eq!(a.capability, b.capability);
                assert_eq!(a.difficulty, b.difficulty);
                assert_eq!(a.key_words, b.key_words);
                assert_eq!(a.objects, b.objects);
                assert_eq!(a.trace, b.trace);
                assert_eq!(a.extra, b.extra);
                assert_eq!(a.images.len(), b.images.len());
                for (x, y) in a.images.iter().zip(&b.images) {
                    assert_eq!(x.as_raw(), y.as_raw(), "PNG round trip changed pixels");
                }
            }
        }
    }
    // Every PNG under images/ decodes.
    let mut decoded = 0;
    for entry in std::fs::read_dir(dir.path().join("images")).unwrap() {
        let img = image::open(entry.unwrap().path()).unwrap();
        assert_eq!((img.width(), img.height()), (48, 48));
        decoded += 1;
    }
    assert_eq!(decoded, 24);
}

#[test]
fn a_family_filter_draws_only_those_families() {
    let cap = Capability::new("perception");
    let only = vec!["describe".to_string()];
    let s = suite::generate_families(&cap, Level::Hard, 12, 5, &only).unwrap();
    assert_eq!(s.len(), 12);
    for x in &s {
        assert_eq!(x.extra["family"], "describe", "{}", x.problem);
        assert!(x.problem.starts_with("<image> Name every object"));
    }
    // A level that draws none of them yields nothing; an unknown name is an error.
    let pos = vec!["position".to_string()];
    assert!(suite::generate_families(&cap, Level::Easy, 4, 5, &pos)
        .unwrap()
        .is_empty());
    assert_eq!(
        suite::generate_families(&cap, Level::Medium, 4, 5, &pos)
            .unwrap()
            .len(),
        4
    );
    assert!(suite::generate_families(&cap, Level::Easy, 4, 5, &["nope".into()]).is_err());
    // No filter: the plain stream.
    let ids = |v: Vec<curric::data::Sample>| v.into_iter().map(|x| x.problem).collect::<Vec<_>>();
    assert_eq!(
        ids(suite::generate_families(&cap, Level::Easy, 6, 5, &[]).unwrap()),
        ids(suite::generate(&cap, Level::Easy, 6, 5).unwrap())
    );
}
