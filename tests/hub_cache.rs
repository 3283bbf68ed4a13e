//! `model = hf("ORG/REPO")` from the local Hugging Face cache, never the network: a Qwen-VL
//! checkpoint in a cache laid out as hf-hub lays it out loads and runs, and the phase's
//! fingerprint names the snapshot, so a new snapshot makes it dirty. One test in its own
//! binary: it sets `HF_HOME` for the process.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use curric::exec::runner::{run_plan, status, RunOptions};

/// `hub/models--ORG--REPO/snapshots/<commit>/` holding the fixture, with `refs/main`.
fn snapshot(home: &Path, commit: &str) {
    let repo = home.join("hub/models--curric--tiny-qwen2.5-vl");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen_vl/tiny_qwen2_5_vl");
    for entry in std::fs::read_dir(fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, snap.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_hub_model_loads_from_the_cache_and_its_snapshot_is_fingerprinted() {
    let home = tempfile::tempdir().unwrap();
    snapshot(home.path(), "1111111111111111111111111111111111111111");
    std::env::set_var("HF_HOME", home.path());
    let text = r#"
name   = "hub"
model  = hf("curric/tiny-qwen2.5-vl")
source shapes { suite = perception  n = 4 }
stage look { kind = eval  capabilities = [perception]  levels = [easy]  n = 2  max_new_tokens = 4 }
"#;
    let checked = curric::check::check_str(text, "hub.curr", None);
    let plan = curric::plan::plan(&checked.curriculum.expect("checks")).expect("plans");
    let runs = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        quiet: true,
        checkpoint_every: 2,
        keep: 2,
        ..RunOptions::new(runs.path().to_path_buf())
    };
    run_plan(&plan, &opts, &AtomicBool::new(false)).expect("runs from the cache");
    assert_eq!(status(&plan, runs.path()).unwrap()["look"], "fresh");
    snapshot(home.path(), "2222222222222222222222222222222222222222");
    let s = status(&plan, runs.path()).unwrap();
    assert!(s["look"].starts_with("dirty"), "{s:?}");
}
