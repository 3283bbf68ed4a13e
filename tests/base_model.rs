//! The shipped base model (`models/shapes-base`) is the one `curricula/base.curr` declares:
//! its weights hash to what `provenance.json` records, and that record names the base
//! curriculum's current fingerprint, so an edit to `base.curr` (or to its data) without
//! re-exporting the weights fails here. Every shipped curriculum starts from it.
//!
//! Retraining reproduces the weights bit for bit on the same CPU kind (curric's runs are
//! deterministic per thread count and instruction set); that check trains for minutes, so it
//! is `#[ignore]`d: `cargo test --release --test base_model -- --ignored`.

use std::path::{Path, PathBuf};

use curric::exec::export::{export_model, Provenance};
use curric::exec::fingerprint::assess;
use curric::exec::fingerprint::hash_file;
use curric::exec::runner::{phase_inputs, run_plan, RunOptions};
use curric::spec::ModelSpec;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plan_of(path: &Path) -> curric::plan::Plan {
    let checked = curric::check::check_file(path).unwrap();
    let c = checked
        .curriculum
        .unwrap_or_else(|| panic!("{}:\n{}", path.display(), checked.report.render()));
    curric::plan::plan(&c).unwrap()
}

#[test]
fn shipped_base_is_the_one_base_curr_declares() {
    let dir = root().join("models/shapes-base");
    let prov = Provenance::load(&dir).unwrap();
    assert_eq!(
        hash_file(&dir.join("model.safetensors")).unwrap(),
        prov.weights_blake3,
        "models/shapes-base/model.safetensors is not the file provenance.json records"
    );
    let plan = plan_of(&root().join("curricula/base.curr"));
    assert_eq!(plan.name, prov.curriculum);
    let fresh = assess(&phase_inputs(&plan), None).unwrap();
    let f = fresh
        .iter()
        .find(|f| f.id == prov.phase)
        .unwrap_or_else(|| panic!("base.curr has no phase `{}`", prov.phase));
    assert_eq!(
        f.fingerprint, prov.fingerprint,
        "curricula/base.curr changed since models/shapes-base was exported: rerun it and \
         `curric export model runs/shapes_base --phase {} --out models/shapes-base`",
        prov.phase
    );
}

#[test]
fn every_shipped_curriculum_starts_from_the_base() {
    let base = root().join("models/shapes-base").canonicalize().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("curricula"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "curr"))
        .filter(|p| p.file_stem().is_some_and(|s| s != "base"))
        .collect();
    files.push(root().join("examples/quickstart.curr"));
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let plan = plan_of(&f);
        match &plan.model {
            ModelSpec::Local { path } => assert_eq!(
                Path::new(path).canonicalize().unwrap(),
                base,
                "{}",
                f.display()
            ),
            other => panic!(
                "{} starts from {other:?}, not the shipped base",
                f.display()
            ),
        }
    }
}

#[test]
#[ignore = "trains the base for minutes; run with --release -- --ignored"]
fn rerunning_base_curr_reproduces_the_shipped_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan_of(&root().join("curricula/base.curr"));
    let opts = RunOptions {
        quiet: true,
        checkpoint_every: 500,
        keep: 1,
        ..RunOptions::new(tmp.path().join("run"))
    };
    run_plan(&plan, &opts, &std::sync::atomic::AtomicBool::new(false)).unwrap();
    let shipped = Provenance::load(&root().join("models/shapes-base")).unwrap();
    let out = tmp.path().join("export");
    let made = export_model(&opts.run_dir, Some(&shipped.phase), &out).unwrap();
    assert_eq!(made.fingerprint, shipped.fingerprint);
    assert_eq!(made.weights_blake3, shipped.weights_blake3);
}
