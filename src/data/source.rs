//! Where a pool of samples comes from, as a phase spec names it: a slice of the built-in
//! suite or an EasyR1 JSONL file. Exec resolves each `PoolSpec` with [`load`] and hands the
//! pools to `Sampler::new`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::jsonl::{self, ReadOptions, SkippedRow};
use crate::data::suite::{SceneConfig, Split, Suite};
use crate::data::{Capability, DataError, Level, Sample};

/// JSON: `{"kind": "shapes", "capability": "perception", "levels": ["easy"], "n": 200,
/// "seed": 1}` or `{"kind": "jsonl", "path": "data/train.jsonl", "skip_bad_rows": true}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PoolSpec {
    /// `n` samples per level of one built-in capability.
    Shapes {
        capability: Capability,
        /// Empty = all three levels, easy first.
        #[serde(default)]
        levels: Vec<Level>,
        #[serde(default = "train")]
        split: Split,
        n: usize,
        seed: u64,
        #[serde(default)]
        scene: SceneConfig,
    },
    Jsonl {
        path: PathBuf,
        #[serde(default)]
        skip_bad_rows: bool,
        /// Resize images to (width, height).
        #[serde(default)]
        image_size: Option<(u32, u32)>,
        /// For rows without a `capability` field.
        #[serde(default)]
        capability: Option<Capability>,
    },
}

fn train() -> Split {
    Split::Train
}

/// Samples of a pool, and the rows a JSONL load skipped (to log).
#[derive(Debug, Clone)]
pub struct Pool {
    pub samples: Vec<Sample>,
    pub skipped: Vec<SkippedRow>,
}

/// Loads a pool; all-or-nothing like `jsonl::read`.
pub fn load(spec: &PoolSpec) -> Result<Pool, DataError> {
    match spec {
        PoolSpec::Shapes {
            capability,
            levels,
            split,
            n,
            seed,
            scene,
        } => {
            let suite = Suite::new(*scene)?;
            let levels = if levels.is_empty() {
                Level::ALL.to_vec()
            } else {
                levels.clone()
            };
            let mut samples = Vec::new();
            for level in levels {
                samples.extend(suite.stream(capability, level, *split, *n, *seed)?);
            }
            Ok(Pool {
                samples,
                skipped: Vec::new(),
            })
        }
        PoolSpec::Jsonl {
            path,
            skip_bad_rows,
            image_size,
            capability,
        } => {
            let loaded = jsonl::read(
                path,
                &ReadOptions {
                    image_size: *image_size,
                    skip_bad_rows: *skip_bad_rows,
                    default_capability: capability.clone(),
                },
            )?;
            Ok(Pool {
                samples: loaded.samples,
                skipped: loaded.skipped,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_pool_from_json_spec() {
        let spec: PoolSpec = serde_json::from_str(
            r#"{"kind":"shapes","capability":"visual_reasoning","levels":["hard","easy"],"n":3,"seed":2}"#,
        )
        .unwrap();
        let pool = load(&spec).unwrap();
        let levels: Vec<_> = pool.samples.iter().map(|s| s.difficulty.unwrap()).collect();
        assert_eq!(
            levels,
            [
                Level::Hard,
                Level::Hard,
                Level::Hard,
                Level::Easy,
                Level::Easy,
                Level::Easy
            ]
        );
        assert!(pool.samples[0].id.contains("/train/"));
    }

    #[test]
    fn jsonl_pool_errors_pass_through() {
        let spec = PoolSpec::Jsonl {
            path: "/nonexistent.jsonl".into(),
            skip_bad_rows: false,
            image_size: None,
            capability: None,
        };
        assert!(load(&spec).is_err());
    }
}
