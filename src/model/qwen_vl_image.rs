//! The Qwen-VL families' image processor: what a checkpoint's `preprocessor_config.json`
//! asks of an image before its vision tower sees it. The size is snapped to whole merged
//! patches within a pixel budget (`smart_resize`), the pixels are rescaled and normalised,
//! and the image becomes rows of `C · T · P · P` values, one per patch, ordered so that the
//! `merge × merge` patches a merger joins are adjacent (`grid_thw` gives the layout).
//!
//! Parity: `tests/qwen_vl_image.rs` against Hugging Face's processor
//! (`tests/fixtures/qwen_vl/make_image_fixtures.py`). Patches of an image that needs no
//! resize match exactly; a resize is bicubic here as in PIL, but PIL rounds to 8 bits between
//! its two passes and this does not, so resized patches match to a few levels.

use image::RgbImage;
use serde_json::Value;

use super::ModelError;

/// The image settings of a Qwen-VL checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// An image as the vision tower takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    /// Row-major `[grid_t · grid_h · grid_w, C · T · P · P]`.
    pub values: Vec<f32>,
    pub row_len: usize,
    /// `[t, h, w]` in patches.
    pub grid_thw: [usize; 3],
    /// The size the image was resized to, `(height, width)`.
    pub resized: (usize, usize),
}

impl Patches {
    pub fn rows(&self) -> usize {
        self.grid_thw.iter().product()
    }
}

impl ImageProcessorConfig {
    /// Reads `preprocessor_config.json`: `min_pixels` / `max_pixels` at the top level (older
    /// files) or as `size.shortest_edge` / `size.longest_edge` (newer ones).
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Config {
            path: "preprocessor_config.json".into(),
            message,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let int = |keys: &[&[&str]]| -> Result<usize, ModelError> {
            keys.iter()
                .find_map(|path| {
                    path.iter()
                        .try_fold(&v, |v, k| v.get(k))
                        .and_then(Value::as_u64)
                })
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("no `{}`", keys[0].join("."))))
        };
        let triple = |key: &str| -> Result<[f32; 3], ModelError> {
            let a = v
                .get(key)
                .and_then(Value::as_array)
                .filter(|a| a.len() == 3)
                .ok_or_else(|| bad(format!("`{key}` is not three numbers")))?;
            let mut out = [0f32; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x
                    .as_f64()
                    .ok_or_else(|| bad(format!("`{key}` is not three numbers")))?
                    as f32;
            }
            Ok(out)
        };
        let cfg = ImageProcessorConfig {
            patch_size: int(&[&["patch_size"]])?,
            merge_size: int(&[&["merge_size"]])?,
            temporal_patch_size: int(&[&["temporal_patch_size"]])?,
            min_pixels: int(&[&["min_pixels"], &["size", "shortest_edge"]])?,
            max_pixels: int(&[&["max_pixels"], &["size", "longest_edge"]])?,
            image_mean: triple("image_mean")?,
            image_std: triple("image_std")?,
        };
        if cfg.patch_size == 0 || cfg.merge_size == 0 || cfg.temporal_patch_size == 0 {
            return Err(bad(
                "patch, merge and temporal patch sizes must be positive".into(),
            ));
        }
        if cfg.image_std.contains(&0.0) {
            return Err(bad("`image_std` has a zero".into()));
        }
        Ok(cfg)
    }

    /// Patches per side of one merged token.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Tokens the image takes in the decoder: patches / merge².
    pub fn merged_tokens(&self, grid_thw: [usize; 3]) -> usize {
        grid_thw.iter().product::<usize>() / (self.merge_size * self.merge_size)
    }

    /// Resizes, rescales, normalises and patchifies one image.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Patches, ModelError> {
        let (h, w) = (img.height() as usize, img.width() as usize);
        let (rh, rw) = smart_resize(h, w, self.factor(), self.min_pixels, self.max_pixels)?;
        let resized;
        let img = if (rh, rw) == (h, w) {
            img
        } else {
            resized = image::imageops::resize(
                img,
                rw as u32,
                rh as u32,
                image::imageops::FilterType::CatmullRom,
            );
            &resized
        };
        // As Hugging Face: x · (1/255) in f64, then f32 for (x − mean) / std.
        let scale = 1.0f64 / 255.0;
        let mut chw = vec![0f32; 3 * rh * rw];
        for (x, y, px) in img.enumerate_pixels() {
            for c in 0..3 {
                let v = (px.0[c] as f64 * scale) as f32;
                chw[c * rh * rw + y as usize * rw + x as usize] =
                    (v - self.image_mean[c]) / self.image_std[c];
            }
        }
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (gh, gw) = (rh / p, rw / p);
        let row_len = 3 * t * p * p;
        let mut values = Vec::with_capacity(gh * gw * row_len);
        // Rows walk merge blocks, then the patches inside one; a row is channel, then the
        // temporal copy (one image fills every frame), then the patch's pixels.
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for ih in 0..m {
                    for iw in 0..m {
                        let (py, px) = ((bh * m + ih) * p, (bw * m + iw) * p);
                        for c in 0..3 {
                            for _ in 0..t {
                                for yy in 0..p {
                                    let at = c * rh * rw + (py + yy) * rw + px;
                                    values.extend_from_slice(&chw[at..at + p]);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(Patches {
            values,
            row_len,
            grid_thw: [1, gh, gw],
            resized: (rh, rw),
        })
    }
}

/// The size closest to `(height, width)` whose sides are multiples of `factor` and whose area
/// lies in `[min_pixels, max_pixels]`, keeping the aspect ratio as well as that allows.
/// Rounds half to even, as Python's `round` does.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), ModelError> {
    let (hf, wf, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 || factor == 0 {
        return Err(ModelError::Config {
            path: "image".into(),
            message: format!("cannot resize a {height}×{width} image to multiples of {factor}"),
        });
    }
    if hf.max(wf) / hf.min(wf) > 200.0 {
        return Err(ModelError::Config {
            path: "image".into(),
            message: format!("a {height}×{width} image has an aspect ratio above 200"),
        });
    }
    let mut h = (hf / f).round_ties_even() as usize * factor;
    let mut w = (wf / f).round_ties_even() as usize * factor;
    if h * w > max_pixels {
        let beta = (hf * wf / max_pixels as f64).sqrt();
        h = factor.max((hf / beta / f).floor() as usize * factor);
        w = factor.max((wf / beta / f).floor() as usize * factor);
    } else if h * w < min_pixels {
        let beta = (min_pixels as f64 / (hf * wf)).sqrt();
        h = (hf * beta / f).ceil() as usize * factor;
        w = (wf * beta / f).ceil() as usize * factor;
    }
    Ok((h, w))
}
