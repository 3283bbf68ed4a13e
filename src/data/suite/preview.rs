//! What a person looks at: a contact sheet of scenes with their questions and answers, and an
//! EasyR1 export of every capability and level.

use std::fs;
use std::path::{Path, PathBuf};

use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{imageops, Rgb, RgbImage};

use super::{Builtin, Suite};
use crate::data::{jsonl, DataError, Level, Sample};

const TILE_W: u32 = 216;
const PICTURE: u32 = 192;
const LINE_H: u32 = 10;
const TEXT_LINES: u32 = 13;
const GAP: u32 = 8;
const PER_CELL: usize = 2;

/// A contact sheet: one row per capability, `2` samples per level left to right (easy, medium,
/// hard), each scene upscaled with nearest-neighbour, with its question and reference trace
/// (answer in `\boxed{}`) drawn under it in an 8×8 bitmap font.
pub fn contact_sheet(suite: &Suite, seed: u64) -> Result<RgbImage, DataError> {
    let tile_h = PICTURE + GAP + TEXT_LINES * LINE_H;
    let cols = (Level::ALL.len() * PER_CELL) as u32;
    let rows = Builtin::ALL.len() as u32;
    let mut sheet = RgbImage::from_pixel(
        GAP + cols * (TILE_W + GAP),
        GAP + rows * (tile_h + GAP),
        Rgb([255, 255, 255]),
    );
    for (r, cap) in Builtin::ALL.iter().enumerate() {
        for (l, level) in Level::ALL.iter().enumerate() {
            let samples = suite.generate(&cap.capability(), *level, PER_CELL, seed)?;
            for (k, s) in samples.iter().enumerate() {
                let x = GAP + ((l * PER_CELL + k) as u32) * (TILE_W + GAP);
                let y = GAP + r as u32 * (tile_h + GAP);
                draw_tile(&mut sheet, x, y, s, &format!("{}/{}", cap.name(), level));
            }
        }
    }
    Ok(sheet)
}

fn draw_tile(sheet: &mut RgbImage, x: u32, y: u32, s: &Sample, header: &str) {
    let frame = Rgb([200, 200, 200]);
    fill(sheet, x, y, TILE_W, PICTURE, Rgb([230, 230, 235]));
    if let Some(img) = s.images.first() {
        let scale = (PICTURE / img.width().max(img.height()).max(1)).max(1);
        let big = imageops::resize(
            img.as_ref(),
            img.width() * scale,
            img.height() * scale,
            imageops::FilterType::Nearest,
        );
        let ox = x + (TILE_W.saturating_sub(big.width())) / 2;
        imageops::replace(sheet, &big, ox as i64, y as i64);
        // Grid lines make the cell (= patch) structure visible.
        let cell = scale * 16;
        for gx in (0..=big.width()).step_by(cell.max(1) as usize) {
            fill(
                sheet,
                ox + gx.min(big.width() - 1),
                y,
                1,
                big.height(),
                frame,
            );
        }
        for gy in (0..=big.height()).step_by(cell.max(1) as usize) {
            fill(
                sheet,
                ox,
                y + gy.min(big.height() - 1),
                big.width(),
                1,
                frame,
            );
        }
    } else {
        text(
            sheet,
            x + 60,
            y + PICTURE / 2,
            "(text only)",
            Rgb([90, 90, 90]),
        );
    }
    let mut lines = vec![header.to_string()];
    let question = s.problem.trim_start_matches("<image>").trim();
    lines.extend(wrap(question, (TILE_W / 8) as usize));
    if let Some(trace) = &s.trace {
        lines.extend(wrap(trace, (TILE_W / 8) as usize));
    } else {
        lines.extend(wrap(&format!("= {}", s.answer), (TILE_W / 8) as usize));
    }
    let mut ty = y + PICTURE + GAP;
    let mut in_answer = false;
    for (i, line) in lines.iter().take(TEXT_LINES as usize).enumerate() {
        in_answer |= line.starts_with("<think>") || line.starts_with("= ");
        let colour = match i {
            0 => Rgb([120, 120, 120]),
            _ if in_answer => Rgb([0, 110, 0]),
            _ => Rgb([0, 0, 0]),
        };
        text(sheet, x, ty, line, colour);
        ty += LINE_H;
    }
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in s.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Draws `s` with font8x8's basic glyphs (bit i of a row byte is column i).
fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, c: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let Some(glyph) = BASIC_FONTS.get(ch) else {
            continue;
        };
        for (gy, row) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if row >> gx & 1 == 1 {
                    let (px, py) = (x + i as u32 * 8 + gx, y + gy as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, c);
                    }
                }
            }
        }
    }
}

/// What `export` wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// One JSONL file per capability and level: `<capability>_<level>.jsonl`.
    pub files: Vec<PathBuf>,
    pub samples: usize,
    pub images: usize,
}

/// Writes `n` training samples of every built-in capability and level to `dir` as EasyR1
/// JSONL (`<capability>_<level>.jsonl`) with PNG images under `dir/images/`.
pub fn export(suite: &Suite, dir: &Path, n: usize, seed: u64) -> Result<ExportSummary, DataError> {
    fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut summary = ExportSummary {
        files: Vec::new(),
        samples: 0,
        images: 0,
    };
    for cap in Builtin::ALL {
        for level in Level::ALL {
            let samples = suite.generate(&cap.capability(), level, n, seed)?;
            let file = dir.join(format!("{}_{}.jsonl", cap.name(), level));
            summary.images += jsonl::write(&file, "images", &samples)?.len();
            summary.samples += samples.len();
            summary.files.push(file);
        }
    }
    Ok(summary)
}
