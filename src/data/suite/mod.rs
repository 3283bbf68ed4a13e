//! The built-in "shapes" suite: procedural scenes and task families for the three built-in
//! capabilities, at three levels, with disjoint train and eval splits.
//!
//! Sample `i` of a (capability, level, split) stream is drawn from its own RNG seeded with
//! `seed::mix([seed, split tag, capability tag, level rank, i])`, so a stream's prefix is
//! stable whatever `n` is asked for. Train/eval disjointness does not rest on the seeds alone:
//! the content space is partitioned by a hash of (problem, image pixels) — one quarter of it
//! belongs to eval, the rest to train — and a draw that lands in the other split's part is
//! redrawn. No eval problem can therefore ever equal a train problem.
//!
//! Families (see `tasks.rs` for the knobs per level):
//!
//! | capability | easy | medium | hard |
//! |---|---|---|---|
//! | perception (1–3 / 3–5 / 5–8 objects) | count by colour or shape, colour of a shape, exists, describe | + left/right/above/below | + small/large |
//! | text_reasoning (numbers ≤ 9 / 20 / 50) | one-step add/subtract, two boxes | two steps, three boxes | bags × each then two steps, boxes after a change |
//! | visual_reasoning (2–4 / 4–6 / 6–8 objects) | count then add, compare two colours | total of two colours, compare shapes, difference | most frequent colour, points (count × worth, summed), difference |
//!
//! Why each capability exists, and which paper's setting it mirrors:
//!
//! - `perception` is method B's stage 1 ("questions about image details that a model gets
//!   wrong from the image but right from a caption"): every answer is read off the image, and
//!   the trace says what was seen before answering. Its `describe` family is the caption —
//!   every object, by colour and shape — that method B's caption-SFT arm trains on instead of
//!   perception RL (`families = [describe]` selects it), and that method A's stage-1 rewards
//!   (`scene_f1`, `keyword_recall`) grade.
//! - `text_reasoning` is method B's stage 2 (text-only math): the same operations that visual
//!   reasoning needs (add, subtract, compare, multiply then add), with the numbers given in
//!   words instead of seen, so the reasoning half can be trained without the seeing half
//!   (`freeze = ["visual"]` in that stage).
//! - `visual_reasoning` is method B's stage 3 and method A's RL questions: each problem
//!   composes perception (count what is in the image) with reasoning (compute with the
//!   counts), so it is solved only when both halves work.
//!
//! Levels are the difficulty axis of both methods: more objects and distractor colours and
//! shapes (perception, visual), more steps and larger numbers (text). The shipped base model's
//! held-out pass rates per level are in the README; a probe stage measures pass rates per
//! problem when a curriculum orders by them instead (method A's bands).
//!
//! Example (visual_reasoning, hard): `<image> Each red shape is worth 3 points and each blue
//! shape is worth 2 points. How many points are there in total? Answer with a number.` with
//! trace `<think> red 2 * 3 = 6, blue 1 * 2 = 2, 6 + 2 = 8 </think> \boxed{8}`.

mod preview;
mod scene;
mod tasks;
mod words;

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use preview::{contact_sheet, export, ExportSummary};
pub use scene::{Colour, Object, Scene, SceneConfig, Shape, Size};
pub use tasks::{families, knobs, Builtin, Family, Knobs, Task};
pub use words::{split_words, vocabulary, SPECIAL_TOKENS};

use crate::data::seed;
use crate::data::{Capability, DataError, Level, Sample};

/// Which held-out part of the content space a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Eval,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Split::Train => 0x0074_7261_696e, // "train"
            Split::Eval => 0x6576_616c,       // "eval"
        }
    }
}

/// The three built-in capabilities in curriculum order.
pub fn capabilities() -> Vec<Capability> {
    Builtin::ALL.iter().map(|b| b.capability()).collect()
}

/// Which split a problem's content belongs to: one hash bucket in four is eval.
pub fn content_split(problem: &str, image: Option<&image::RgbImage>) -> Split {
    if content_hash(problem, image)[0].is_multiple_of(4) {
        Split::Eval
    } else {
        Split::Train
    }
}

/// blake3 of the problem text, then the image's size and raw pixels.
pub fn content_hash(problem: &str, image: Option<&image::RgbImage>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(problem.as_bytes());
    if let Some(img) = image {
        h.update(&img.width().to_le_bytes());
        h.update(&img.height().to_le_bytes());
        h.update(img.as_raw());
    }
    *h.finalize().as_bytes()
}

/// The suite's generator, with its scene geometry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suite {
    pub scene: SceneConfig,
}

/// A draw that keeps landing in the other split means the content space is degenerate.
const MAX_REDRAWS: usize = 10_000;

impl Suite {
    pub fn new(scene: SceneConfig) -> Result<Suite, DataError> {
        if scene.rows == 0 || scene.cols == 0 || scene.cell < 4 {
            return Err(DataError::Suite(format!(
                "scene grid {}x{} with {}-px cells is too small (at least 1x1 and 4 px)",
                scene.rows, scene.cols, scene.cell
            )));
        }
        Ok(Suite { scene })
    }

    /// `n` training samples of a built-in capability and level.
    pub fn generate(
        &self,
        cap: &Capability,
        level: Level,
        n: usize,
        seed: u64,
    ) -> Result<Vec<Sample>, DataError> {
        self.stream(cap, level, Split::Train, n, seed)
    }

    /// `n` held-out samples, disjoint in content from every training sample.
    pub fn eval_split(
        &self,
        cap: &Capability,
        level: Level,
        n: usize,
        seed: u64,
    ) -> Result<Vec<Sample>, DataError> {
        self.stream(cap, level, Split::Eval, n, seed)
    }

    pub fn stream(
        &self,
        cap: &Capability,
        level: Level,
        split: Split,
        n: usize,
        seed: u64,
    ) -> Result<Vec<Sample>, DataError> {
        self.stream_from(cap, level, split, n, seed, &[])
    }

    /// [`Suite::stream`] restricted to the families `only` (empty: all); a level that draws
    /// none of them yields no samples.
    pub fn stream_from(
        &self,
        cap: &Capability,
        level: Level,
        split: Split,
        n: usize,
        seed: u64,
        only: &[Family],
    ) -> Result<Vec<Sample>, DataError> {
        let builtin = Builtin::parse(cap)?;
        if !only.is_empty() && !families(builtin, level).iter().any(|f| only.contains(f)) {
            return Ok(Vec::new());
        }
        (0..n)
            .map(|i| self.sample_from(builtin, level, split, i, seed, only))
            .collect()
    }

    /// Sample `index` of one stream; independent of every other index.
    pub fn sample(
        &self,
        cap: Builtin,
        level: Level,
        split: Split,
        index: usize,
        seed: u64,
    ) -> Result<Sample, DataError> {
        self.sample_from(cap, level, split, index, seed, &[])
    }

    /// Sample `index` of the stream restricted to the families `only` (empty: all), which
    /// must include one the level draws.
    pub fn sample_from(
        &self,
        cap: Builtin,
        level: Level,
        split: Split,
        index: usize,
        seed: u64,
        only: &[Family],
    ) -> Result<Sample, DataError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed::mix(&[
            seed,
            split.tag(),
            seed::tag(cap.name()),
            level.rank() as u64,
            index as u64,
        ]));
        for _ in 0..MAX_REDRAWS {
            let task = tasks::draw(&mut rng, cap, level, &self.scene, only);
            let image = task.scene.as_ref().map(|s| s.render(&self.scene));
            if content_split(&task.problem, image.as_ref()) != split {
                continue;
            }
            let mut extra = serde_json::Map::new();
            extra.insert("family".into(), task.family.name().into());
            return Ok(Sample {
                id: format!(
                    "shapes/{}/{}/{}/{index:06}",
                    cap.name(),
                    level.as_str(),
                    split.as_str()
                ),
                trace: Some(task.trace()),
                objects: task.scene.as_ref().map(Scene::names).unwrap_or_default(),
                problem: task.problem,
                answer: task.answer,
                images: image.into_iter().map(Arc::new).collect(),
                capability: cap.capability(),
                difficulty: Some(level),
                pass_rate: None,
                key_words: task.key_words,
                extra,
            });
        }
        Err(DataError::Suite(format!(
            "no {} problem found for {}/{} after {MAX_REDRAWS} draws",
            split.as_str(),
            cap.name(),
            level
        )))
    }
}

/// `n` training samples with the default 3×3 grid of 16-px cells.
pub fn generate(
    cap: &Capability,
    level: Level,
    n: usize,
    seed: u64,
) -> Result<Vec<Sample>, DataError> {
    Suite::default().generate(cap, level, n, seed)
}

/// `n` training samples of the named task families only (default geometry). A level that
/// draws none of them yields no samples; an unknown name is an error.
pub fn generate_families(
    cap: &Capability,
    level: Level,
    n: usize,
    seed: u64,
    names: &[String],
) -> Result<Vec<Sample>, DataError> {
    let only = names
        .iter()
        .map(|name| {
            Family::from_name(name)
                .ok_or_else(|| DataError::Suite(format!("no task family `{name}`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Suite::default().stream_from(cap, level, Split::Train, n, seed, &only)
}

/// `n` held-out samples with the default geometry.
pub fn eval_split(
    cap: &Capability,
    level: Level,
    n: usize,
    seed: u64,
) -> Result<Vec<Sample>, DataError> {
    Suite::default().eval_split(cap, level, n, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_prefixes_and_unique() {
        let cap = Capability::new("perception");
        let a = generate(&cap, Level::Medium, 5, 3).unwrap();
        let b = generate(&cap, Level::Medium, 8, 3).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.id, y.id);
            assert_eq!(x.problem, y.problem);
            assert_eq!(x.images[0].as_raw(), y.images[0].as_raw());
        }
        assert_eq!(b[7].id, "shapes/perception/medium/train/000007");
        let mut ids: Vec<_> = b.iter().map(|s| s.id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 8);
    }

    #[test]
    fn unknown_capability_is_an_error() {
        let err = generate(&Capability::new("geometry"), Level::Easy, 1, 0).unwrap_err();
        assert!(err.to_string().contains("geometry"));
    }

    #[test]
    fn text_tasks_have_no_image_and_image_tasks_one() {
        for cap in capabilities() {
            for s in generate(&cap, Level::Hard, 10, 1).unwrap() {
                let wants_image = cap.as_str() != Capability::TEXT_REASONING;
                assert_eq!(s.images.len(), usize::from(wants_image));
                assert_eq!(s.problem.starts_with("<image>"), wants_image);
                let trace = s.trace.as_deref().unwrap();
                assert!(trace.starts_with("<think> "));
                assert!(trace.ends_with(&format!("</think> \\boxed{{{}}}", s.answer)));
            }
        }
    }

    #[test]
    fn configurable_grid_changes_image_size() {
        let suite = Suite::new(SceneConfig {
            rows: 2,
            cols: 4,
            cell: 8,
        })
        .unwrap();
        let s = suite
            .generate(&Capability::new("visual_reasoning"), Level::Hard, 3, 0)
            .unwrap();
        assert_eq!(s[0].images[0].dimensions(), (32, 16));
        assert!(Suite::new(SceneConfig {
            rows: 0,
            cols: 3,
            cell: 16
        })
        .is_err());
    }
}
