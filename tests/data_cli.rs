//! `curric data preview` and `curric data export` end to end.

use std::process::Command;

use curric::data::jsonl::{self, ReadOptions};

fn curric() -> Command {
    Command::new(env!("CARGO_BIN_EXE_curric"))
}

#[test]
fn export_writes_all_capabilities_and_levels_with_valid_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = curric()
        .args(["data", "export", "--out"])
        .arg(dir.path())
        .args(["--n", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cap in ["perception", "text_reasoning", "visual_reasoning"] {
        for level in ["easy", "medium", "hard"] {
            let file = dir.path().join(format!("{cap}_{level}.jsonl"));
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines() {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                for field in [
                    "id",
                    "problem",
                    "answer",
                    "images",
                    "capability",
                    "difficulty",
                    "key_words",
                    "trace",
                ] {
                    assert!(row.get(field).is_some(), "{cap}/{level}: no `{field}`");
                }
                assert_eq!(row["capability"], cap);
                assert_eq!(row["difficulty"], level);
                for img in row["images"].as_array().unwrap() {
                    let decoded = image::open(dir.path().join(img.as_str().unwrap())).unwrap();
                    assert_eq!(decoded.width(), 48);
                }
            }
            // And the reader accepts it whole.
            let loaded = jsonl::read(&file, &ReadOptions::default()).unwrap();
            assert_eq!(loaded.samples.len(), 3);
        }
    }
}

#[test]
fn preview_writes_a_contact_sheet_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("sheet.png");
    let out = curric()
        .args(["data", "preview", "--out"])
        .arg(&png)
        .args(["--seed", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&png).unwrap().to_rgb8();
    // 6 tiles of 216 px with 8 px gaps across, 3 rows of 192 + 8 + 130 px down.
    assert_eq!(img.dimensions(), (8 + 6 * 224, 8 + 3 * 338));
    // Not blank: some pixels are object colours (pure white and greys are not).
    let coloured = img
        .pixels()
        .filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 100)
        .count();
    assert!(coloured > 1000, "{coloured}");
}

#[test]
fn export_to_an_unwritable_place_fails_with_a_message() {
    let out = curric()
        .args(["data", "export", "--out", "/proc/curric-nope", "--n", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/proc/curric-nope"));
}
