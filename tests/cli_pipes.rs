//! A reader that goes away does not crash curric: output to a closed stdout ends the command
//! quietly, and a closed stderr (logs, warnings, progress) never stops it.

use std::process::{Command, Stdio};

fn curric() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_curric"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Runs `cmd` with stdout or stderr connected to a pipe whose read end is already closed, so
/// every write to it fails with EPIPE (deterministically: nothing can be read in between).
/// Returns the exit code and what the other stream said.
fn run_with_closed(mut cmd: Command, close_stdout: bool) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    if close_stdout {
        cmd.stdout(writer).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null()).stderr(writer);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn closed_stdout_ends_plan_and_check_output_quietly() {
    for args in [
        vec!["plan", "curricula/pebr_two_stage.curr", "--json"],
        vec!["plan", "curricula/staged.curr", "--dot"],
        vec!["check", "curricula/staged.curr"],
    ] {
        let mut c = curric();
        c.args(&args);
        let (code, err) = run_with_closed(c, true);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn closed_stderr_does_not_stop_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.curr");
    std::fs::write(
        &file,
        "name = \"t\"\nseed = 1\nmodel = tiny_vlm(nano)\ndevice = cpu\n\
         source s { suite = perception n = 4 }\n\
         // weights that do not sum to 1: a warning on stderr\n\
         stage a { kind = sft mix = 0.3 s stop = steps(2) batch_size = 2 }\n",
    )
    .unwrap();
    let mut c = curric();
    c.arg("run")
        .arg(&file)
        .arg("--run-dir")
        .arg(tmp.path().join("run"));
    let (code, _) = run_with_closed(c, false);
    assert_eq!(code, Some(0));
    let manifest = std::fs::read_to_string(tmp.path().join("run/manifest.toml")).unwrap();
    assert!(manifest.contains("status = \"done\""), "{manifest}");
}
