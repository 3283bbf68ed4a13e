//! `curric data preview` and `curric data export` end to end.

use clap::Parser;
use curric::cli::{Cli, Command};
use curric::data::cli::execute;
use curric::data::jsonl::{self, ReadOptions};
use curric::data::DataError;

/// Parses a command line as the binary does and runs it in-process (the binary in a shared
/// target directory may be another checkout's).
fn curric(args: &[&str]) -> Result<String, DataError> {
    let cli = Cli::try_parse_from(std::iter::once("curric").chain(args.iter().copied()))
        .expect("arguments parse");
    match cli.command {
        Command::Data(cmd) => execute(cmd),
        other => panic!("not a data command: {other:?}"),
    }
}

#[test]
fn export_writes_all_capabilities_and_levels_with_valid_images() {
    let dir = tempfile::tempdir().unwrap();
    let msg = curric(&[
        "data",
        "export",
        "--out",
        dir.path().to_str().unwrap(),
        "--n",
        "3",
    ])
    .unwrap();
    assert!(
        msg.starts_with("wrote 27 samples (18 images) in 9 files"),
        "{msg}"
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
    curric(&[
        "data",
        "preview",
        "--out",
        png.to_str().unwrap(),
        "--seed",
        "4",
    ])
    .unwrap();
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
    let err = curric(&["data", "export", "--out", "/proc/curric-nope", "--n", "1"]).unwrap_err();
    assert!(err.to_string().contains("/proc/curric-nope"), "{err}");
}
