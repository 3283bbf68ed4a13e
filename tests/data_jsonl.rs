//! EasyR1 JSONL sources: parsing, errors with file:line and field, images, skipping.

use std::fs;
use std::path::Path;

use curric::data::jsonl::{self, ReadOptions};
use curric::data::{DataError, Level};
use image::{Rgb, RgbImage};

fn write(dir: &Path, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn png(dir: &Path, name: &str, w: u32, h: u32) {
    RgbImage::from_pixel(w, h, Rgb([10, 200, 30]))
        .save(dir.join(name))
        .unwrap();
}

#[test]
fn reads_fields_images_and_keeps_extra() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("img")).unwrap();
    png(dir.path(), "img/a.png", 20, 10);
    RgbImage::from_pixel(8, 8, Rgb([250, 0, 0]))
        .save(dir.path().join("img/b.jpg"))
        .unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        &[
            r#"{"problem":"<image>What colour?","answer":"green","images":["img/a.png"],"capability":"perception","difficulty":"easy","pass_rate":0.75,"key_words":["green"],"source":"mine","choices":["A","B"]}"#,
            "",
            r#"{"id":"q2","problem":"<image>Which?","answer":3,"images":["img/b.jpg"]}"#,
            r#"{"problem":"1 + 1?","answer":"2"}"#,
        ],
    );
    let opts = ReadOptions {
        image_size: Some((16, 16)),
        ..Default::default()
    };
    let loaded = jsonl::read(&path, &opts).unwrap();
    let s = &loaded.samples;
    assert_eq!(s.len(), 3);
    assert_eq!(
        s[0].id, "train/1",
        "missing ids come from file stem and line"
    );
    assert_eq!(s[0].difficulty, Some(Level::Easy));
    assert_eq!(s[0].pass_rate, Some(0.75));
    assert_eq!(s[0].key_words, ["green"]);
    assert_eq!(s[0].extra["source"], "mine");
    assert_eq!(s[0].extra["choices"][1], "B");
    assert!(!s[0].extra.contains_key("answer"));
    assert_eq!(s[0].images[0].dimensions(), (16, 16), "resized");
    // Blank line 2 is skipped, so the next row is line 3.
    assert_eq!(s[1].id, "q2");
    assert_eq!(s[1].answer, "3", "numeric answers become strings");
    let px = s[1].images[0].get_pixel(8, 8).0;
    assert!(px[0] > 200 && px[1] < 50, "JPEG decodes to red, got {px:?}");
    assert_eq!(s[2].capability.as_str(), "default");
    assert!(s[2].images.is_empty());
    let no_resize = jsonl::read(&path, &ReadOptions::default()).unwrap();
    assert_eq!(no_resize.samples[0].images[0].dimensions(), (20, 10));
}

#[test]
fn bad_rows_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (r#"{"answer":"1"}"#, "field `problem`: missing"),
        (
            r#"{"problem":"p","answer":["x"]}"#,
            "field `answer`: expected a string",
        ),
        (
            r#"{"problem":"p","answer":"1","pass_rate":1.5}"#,
            "field `pass_rate`",
        ),
        (
            r#"{"problem":"p","answer":"1","difficulty":"brutal"}"#,
            "field `difficulty`: unknown difficulty level `brutal`",
        ),
        (
            r#"{"problem":"p","answer":"1","key_words":[1]}"#,
            "field `key_words`",
        ),
        (
            r#"{"problem":"<image>p","answer":"1"}"#,
            "field `images`: 0 image(s) listed but `problem` has 1",
        ),
        (r#"{"problem": "p", "answer": "#, "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
    ];
    for (row, want) in cases {
        let path = write(
            dir.path(),
            "d.jsonl",
            &[r#"{"problem":"ok","answer":"1"}"#, row],
        );
        let err = jsonl::read(&path, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        let at = format!("{}:2: ", path.display());
        assert!(err.starts_with(&at), "`{err}` should start with `{at}`");
        assert!(err.contains(want), "`{err}` should contain `{want}`");
    }
}

#[test]
fn missing_image_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "d.jsonl",
        &[r#"{"problem":"<image>p","answer":"1","images":["pics/none.png"]}"#],
    );
    let err = jsonl::read(&path, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::MissingImage { line: 1, .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("pics/none.png") && msg.contains("d.jsonl:1"),
        "{msg}"
    );

    fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
    let path = write(
        dir.path(),
        "e.jsonl",
        &[r#"{"problem":"<image>p","answer":"1","images":["broken.png"]}"#],
    );
    let msg = jsonl::read(&path, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("broken.png"), "{msg}");
}

#[test]
fn skip_bad_rows_counts_them_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a.png", 4, 4);
    let path = write(
        dir.path(),
        "d.jsonl",
        &[
            r#"{"problem":"<image>a","answer":"1","images":["a.png"]}"#,
            r#"{"problem":"b"}"#,
            r#"{"problem":"<image>c","answer":"1","images":["gone.png"]}"#,
            "{oops",
            r#"{"problem":"e","answer":"5"}"#,
        ],
    );
    // Without the option the load fails as a whole.
    assert!(jsonl::read(&path, &ReadOptions::default()).is_err());
    let opts = ReadOptions {
        skip_bad_rows: true,
        ..Default::default()
    };
    let loaded = jsonl::read(&path, &opts).unwrap();
    assert_eq!(
        loaded
            .samples
            .iter()
            .map(|s| s.problem.as_str())
            .collect::<Vec<_>>(),
        ["<image>a", "e"]
    );
    assert_eq!(
        loaded.skipped.iter().map(|r| r.line).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert!(loaded.skipped[0].error.contains("`answer`"));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = jsonl::read(Path::new("/nonexistent/x.jsonl"), &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/x.jsonl"));
}

#[test]
fn write_then_read_keeps_pass_rates_and_extra_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cap = curric::data::Capability::new("perception");
    let mut samples = curric::data::suite::generate(&cap, Level::Easy, 3, 1).unwrap();
    samples[1].pass_rate = Some(0.625);
    samples[2]
        .extra
        .insert("note".into(), serde_json::json!({"k": [1, 2]}));
    let path = dir.path().join("sub/out.jsonl");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let written = jsonl::write(&path, "imgs", &samples).unwrap();
    assert_eq!(written.len(), 3);
    assert!(written[0].starts_with(dir.path().join("sub/imgs")));
    let back = jsonl::read(&path, &ReadOptions::default()).unwrap().samples;
    assert_eq!(back[0].pass_rate, None);
    assert_eq!(back[1].pass_rate, Some(0.625));
    assert_eq!(back[2].extra["note"]["k"][1], 2);
    assert_eq!(back[2].extra["family"], samples[2].extra["family"]);
}

#[test]
fn devices_directories_and_undecodable_images_are_named_errors() {
    // A device would be read forever; a directory is not data.
    for p in [Path::new("/dev/zero"), Path::new("/tmp")] {
        let err = jsonl::read(p, &ReadOptions::default()).unwrap_err();
        assert!(matches!(err, DataError::NotAFile { .. }), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("adir")).unwrap();
    fs::write(dir.path().join("empty.png"), b"").unwrap();
    fs::write(dir.path().join("text.png"), b"not an image").unwrap();
    for (img, what) in [
        ("adir", "is not a regular file"),
        ("empty.png", "cannot be decoded"),
        ("text.png", "cannot be decoded"),
    ] {
        let row = format!(r#"{{"problem": "<image> q", "answer": "1", "images": ["{img}"]}}"#);
        let f = write(dir.path(), "d.jsonl", &["", &row]);
        let err = jsonl::read(&f, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.jsonl:2: field `images`"), "{img}: {err}");
        assert!(err.contains(what), "{img}: {err}");
    }
}

#[test]
fn invalid_utf8_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("u.jsonl");
    fs::write(
        &f,
        b"{\"problem\": \"q\", \"answer\": \"1\"}\n{\"problem\": \"\xff\", \"answer\": \"2\"}\n",
    )
    .unwrap();
    let err = jsonl::read(&f, &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("u.jsonl:2:") && err.contains("invalid UTF-8 at column 14"),
        "{err}"
    );
}
