//! EasyR1-style JSONL sources: one JSON object per line with `problem` (with `<image>`
//! placeholders), `answer`, `images` (paths relative to the file), and optionally `id`,
//! `pass_rate`, `capability`, `difficulty`, `key_words`, `objects`, `trace`. Any other field
//! is kept in `Sample::extra` for rewards.
//!
//! A load is all-or-nothing: either every row parses (or, with `skip_bad_rows`, every bad row
//! is accounted for) or the caller gets an error naming `file:line` and the field, so a phase
//! never starts on a half-read source.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use serde_json::{Map, Value};

use crate::data::{Capability, DataError, Level, Sample};

/// How to read a source.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Resize every image to (width, height); `None` keeps the stored size.
    pub image_size: Option<(u32, u32)>,
    /// Skip rows that fail to parse (or whose images are missing) instead of failing the load.
    pub skip_bad_rows: bool,
    /// Capability for rows without one; without this such rows get `default`.
    pub default_capability: Option<Capability>,
}

/// A row left out by `skip_bad_rows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    pub line: usize,
    pub error: String,
}

/// The result of a load.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub samples: Vec<Sample>,
    pub skipped: Vec<SkippedRow>,
}

const KNOWN: [&str; 10] = [
    "id",
    "problem",
    "answer",
    "images",
    "capability",
    "difficulty",
    "pass_rate",
    "key_words",
    "objects",
    "trace",
];

/// Reads a JSONL file. Blank lines are ignored; line numbers are 1-based.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<Loaded, DataError> {
    // `/dev/zero` would be read forever, a directory fails with a confusing message.
    let meta = fs::metadata(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let col = at
            - before
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        DataError::Json {
            path: path.to_path_buf(),
            line,
            message: format!("invalid UTF-8 at column {col} (JSONL is UTF-8 text)"),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_row(path, base, &stem, i + 1, line, opts) {
            Ok(s) => samples.push(s),
            Err(e) if opts.skip_bad_rows => {
                tracing::warn!("skipping bad row: {e}");
                skipped.push(SkippedRow {
                    line: i + 1,
                    error: e.to_string(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Loaded { samples, skipped })
}

fn parse_row(
    path: &Path,
    base: &Path,
    stem: &str,
    line: usize,
    text: &str,
    opts: &ReadOptions,
) -> Result<Sample, DataError> {
    let field_err = |field: &str, message: String| DataError::Field {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| DataError::Json {
        path: path.to_path_buf(),
        line,
        message: e.to_string(),
    })?;
    let Value::Object(mut row) = value else {
        return Err(DataError::Json {
            path: path.to_path_buf(),
            line,
            message: "expected an object `{...}`".into(),
        });
    };
    let string = |row: &Map<String, Value>, field: &str| -> Result<Option<String>, DataError> {
        match row.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if field == "answer" || field == "id" => Ok(Some(n.to_string())),
            Some(other) => Err(field_err(
                field,
                format!("expected a string, found {other}"),
            )),
        }
    };
    let strings = |row: &Map<String, Value>, field: &str| -> Result<Vec<String>, DataError> {
        match row.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(field_err(
                        field,
                        format!("expected a list of strings, found item {other}"),
                    )),
                })
                .collect(),
            Some(other) => Err(field_err(
                field,
                format!("expected a list of strings, found {other}"),
            )),
        }
    };
    let problem = string(&row, "problem")?.ok_or_else(|| field_err("problem", "missing".into()))?;
    let answer = string(&row, "answer")?.ok_or_else(|| field_err("answer", "missing".into()))?;
    let id = string(&row, "id")?.unwrap_or_else(|| format!("{stem}/{line}"));
    let capability = string(&row, "capability")?
        .map(Capability::new)
        .or_else(|| opts.default_capability.clone())
        .unwrap_or_else(|| Capability::new("default"));
    let difficulty = string(&row, "difficulty")?
        .map(|d| d.parse::<Level>().map_err(|m| field_err("difficulty", m)))
        .transpose()?;
    let pass_rate = match row.get("pass_rate") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Some(p),
            _ => {
                return Err(field_err(
                    "pass_rate",
                    format!("expected a number in [0, 1], found {n}"),
                ))
            }
        },
        Some(other) => {
            return Err(field_err(
                "pass_rate",
                format!("expected a number in [0, 1], found {other}"),
            ))
        }
    };
    let key_words = strings(&row, "key_words")?;
    let objects = strings(&row, "objects")?;
    let trace = string(&row, "trace")?;
    let image_paths = strings(&row, "images")?;
    let placeholders = problem.matches("<image>").count();
    if placeholders != image_paths.len() {
        return Err(field_err(
            "images",
            format!(
                "{} image(s) listed but `problem` has {placeholders} `<image>` placeholder(s)",
                image_paths.len()
            ),
        ));
    }
    let mut images = Vec::with_capacity(image_paths.len());
    for rel in &image_paths {
        let full = base.join(rel);
        if !full.exists() {
            return Err(DataError::MissingImage {
                file: path.to_path_buf(),
                line,
                image: full,
            });
        }
        let field = |message: String| DataError::Field {
            path: path.to_path_buf(),
            line,
            field: "images".into(),
            message,
        };
        if !full.is_file() {
            return Err(field(format!("`{}` is not a regular file", full.display())));
        }
        let img = load_image(&full, opts.image_size).map_err(|e| match e {
            DataError::Image { path, message } => {
                field(format!("`{}` cannot be decoded: {message}", path.display()))
            }
            other => other,
        })?;
        images.push(Arc::new(img));
    }
    row.retain(|k, _| !KNOWN.contains(&k.as_str()));
    Ok(Sample {
        id,
        problem,
        answer,
        images,
        capability,
        difficulty,
        pass_rate,
        key_words,
        objects,
        trace,
        extra: row,
    })
}

/// Decodes a PNG or JPEG to RGB, resized to `size` when given (triangle filter).
pub fn load_image(path: &Path, size: Option<(u32, u32)>) -> Result<RgbImage, DataError> {
    let img = image::open(path)
        .map_err(|e| DataError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .to_rgb8();
    Ok(match size {
        Some((w, h)) if img.dimensions() != (w, h) => {
            image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
        }
        _ => img,
    })
}

/// The JSON row for a sample whose images are stored at `image_paths` (relative to the file).
pub fn to_row(sample: &Sample, image_paths: &[String]) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("id".into(), sample.id.clone().into());
    row.insert("problem".into(), sample.problem.clone().into());
    row.insert("answer".into(), sample.answer.clone().into());
    row.insert("images".into(), image_paths.to_vec().into());
    row.insert("capability".into(), sample.capability.as_str().into());
    if let Some(d) = sample.difficulty {
        row.insert("difficulty".into(), d.as_str().into());
    }
    if let Some(p) = sample.pass_rate {
        row.insert("pass_rate".into(), p.into());
    }
    row.insert("key_words".into(), sample.key_words.clone().into());
    if !sample.objects.is_empty() {
        row.insert("objects".into(), sample.objects.clone().into());
    }
    if let Some(t) = &sample.trace {
        row.insert("trace".into(), t.clone().into());
    }
    for (k, v) in &sample.extra {
        row.entry(k.clone()).or_insert_with(|| v.clone());
    }
    row
}

/// Writes `samples` to the JSONL file `path`, their images as PNG files under
/// `<dir of path>/<image_dir>/`, named after the sample id. Returns the image paths written.
pub fn write(path: &Path, image_dir: &str, samples: &[Sample]) -> Result<Vec<PathBuf>, DataError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DataError::Io { path: p, source }
    };
    let img_dir = base.join(image_dir);
    fs::create_dir_all(&img_dir).map_err(io(&img_dir))?;
    let mut out = String::new();
    let mut written = Vec::new();
    for s in samples {
        let stem: String =
            s.id.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
        let mut rels = Vec::new();
        for (j, img) in s.images.iter().enumerate() {
            let rel = format!("{image_dir}/{stem}_{j}.png");
            let full = base.join(&rel);
            img.save(&full).map_err(|e| DataError::Image {
                path: full.clone(),
                message: e.to_string(),
            })?;
            written.push(full);
            rels.push(rel);
        }
        out.push_str(&Value::Object(to_row(s, &rels)).to_string());
        out.push('\n');
    }
    fs::write(path, out).map_err(io(path))?;
    Ok(written)
}
