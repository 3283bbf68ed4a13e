//! Task families: each turns a random draw (and, for image tasks, a scene) into a problem with
//! a verifiable answer and a short reference trace. Difficulty knobs per capability and level
//! live in [`knobs`]; which families a level uses lives in [`families`].

use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::scene::{Colour, Scene, SceneConfig, Shape};
use crate::data::{Capability, DataError, Level};

/// The three built-in capabilities, as a closed enum for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    Perception,
    TextReasoning,
    VisualReasoning,
}

impl Builtin {
    pub const ALL: [Builtin; 3] = [
        Builtin::Perception,
        Builtin::TextReasoning,
        Builtin::VisualReasoning,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Perception => Capability::PERCEPTION,
            Builtin::TextReasoning => Capability::TEXT_REASONING,
            Builtin::VisualReasoning => Capability::VISUAL_REASONING,
        }
    }

    pub fn capability(self) -> Capability {
        Capability::new(self.name())
    }

    pub fn parse(cap: &Capability) -> Result<Builtin, DataError> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.name() == cap.as_str())
            .ok_or_else(|| DataError::UnknownCapability(cap.as_str().to_string()))
    }
}

/// The difficulty knobs of one capability at one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knobs {
    /// Objects per scene (inclusive range); more objects = more distractors.
    pub min_objects: usize,
    pub max_objects: usize,
    /// How many colours / shapes (prefixes of the palettes) scenes and questions draw from.
    pub colours: usize,
    pub shapes: usize,
    /// Arithmetic steps in a text problem.
    pub steps: usize,
    /// Largest number a text problem starts from.
    pub max_number: u32,
}

pub fn knobs(cap: Builtin, level: Level) -> Knobs {
    let k = |min_objects, max_objects, colours, shapes, steps, max_number| Knobs {
        min_objects,
        max_objects,
        colours,
        shapes,
        steps,
        max_number,
    };
    match (cap, level) {
        (Builtin::Perception, Level::Easy) => k(1, 3, 3, 3, 0, 0),
        (Builtin::Perception, Level::Medium) => k(3, 5, 4, 3, 0, 0),
        (Builtin::Perception, Level::Hard) => k(5, 8, 5, 4, 0, 0),
        (Builtin::TextReasoning, Level::Easy) => k(0, 0, 0, 0, 1, 9),
        (Builtin::TextReasoning, Level::Medium) => k(0, 0, 0, 0, 2, 20),
        (Builtin::TextReasoning, Level::Hard) => k(0, 0, 0, 0, 3, 50),
        (Builtin::VisualReasoning, Level::Easy) => k(2, 4, 3, 3, 1, 5),
        (Builtin::VisualReasoning, Level::Medium) => k(4, 6, 4, 3, 2, 5),
        (Builtin::VisualReasoning, Level::Hard) => k(6, 8, 5, 4, 3, 5),
    }
}

/// A task family: one kind of question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    CountColour,
    CountShape,
    AttributeColour,
    AttributeSize,
    Exists,
    Position,
    Describe,
    Arithmetic,
    Compare,
    AddMore,
    CompareColours,
    Total,
    CompareShapes,
    Difference,
    MostFrequent,
    Points,
}

impl Family {
    /// The family with this name, among those any capability draws at any level.
    pub fn from_name(name: &str) -> Option<Family> {
        Builtin::ALL
            .iter()
            .flat_map(|c| Level::ALL.iter().flat_map(move |l| families(*c, *l)))
            .copied()
            .find(|f| f.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::CountColour => "count_colour",
            Family::CountShape => "count_shape",
            Family::AttributeColour => "attribute_colour",
            Family::AttributeSize => "attribute_size",
            Family::Exists => "exists",
            Family::Position => "position",
            Family::Describe => "describe",
            Family::Arithmetic => "arithmetic",
            Family::Compare => "compare",
            Family::AddMore => "add_more",
            Family::CompareColours => "compare_colours",
            Family::Total => "total",
            Family::CompareShapes => "compare_shapes",
            Family::Difference => "difference",
            Family::MostFrequent => "most_frequent",
            Family::Points => "points",
        }
    }
}

/// The families a capability uses at a level. Harder visual levels swap in families with more
/// reasoning steps; harder perception levels add families on top of the easy ones.
pub fn families(cap: Builtin, level: Level) -> &'static [Family] {
    use Family::*;
    match (cap, level) {
        (Builtin::Perception, Level::Easy) => {
            &[CountColour, CountShape, AttributeColour, Exists, Describe]
        }
        (Builtin::Perception, Level::Medium) => &[
            CountColour,
            CountShape,
            AttributeColour,
            Exists,
            Describe,
            Position,
        ],
        (Builtin::Perception, Level::Hard) => &[
            CountColour,
            CountShape,
            AttributeColour,
            Exists,
            Describe,
            Position,
            AttributeSize,
        ],
        (Builtin::TextReasoning, _) => &[Arithmetic, Compare],
        (Builtin::VisualReasoning, Level::Easy) => &[AddMore, CompareColours],
        (Builtin::VisualReasoning, Level::Medium) => &[Total, CompareShapes, Difference],
        (Builtin::VisualReasoning, Level::Hard) => &[MostFrequent, Points, Difference],
    }
}

/// A generated problem before it becomes a `Sample`.
#[derive(Debug, Clone)]
pub struct Task {
    pub family: Family,
    pub problem: String,
    pub answer: String,
    /// The words inside `<think> … </think>`.
    pub steps: String,
    pub key_words: Vec<String>,
    pub scene: Option<Scene>,
}

impl Task {
    pub fn trace(&self) -> String {
        format!("<think> {} </think> \\boxed{{{}}}", self.steps, self.answer)
    }
}

/// Draws one task of the given capability and level. Families whose preconditions a scene
/// does not meet (a tie, too few objects) are redrawn, so this always returns a task.
/// `only` restricts the level's families (empty: all of them); the caller makes sure at least
/// one of them is drawn at this level.
pub fn draw<R: Rng>(
    rng: &mut R,
    cap: Builtin,
    level: Level,
    cfg: &SceneConfig,
    only: &[Family],
) -> Task {
    let k = knobs(cap, level);
    let fams: Vec<Family> = families(cap, level)
        .iter()
        .copied()
        .filter(|f| only.is_empty() || only.contains(f))
        .collect();
    loop {
        let family = *fams.choose(rng).expect("the level draws one of `only`");
        let task = match cap {
            Builtin::TextReasoning => Some(text_task(rng, family, &k)),
            _ => {
                let count = rng.random_range(k.min_objects..=k.max_objects);
                let colours = &Colour::ALL[..k.colours];
                let shapes = &Shape::ALL[..k.shapes];
                let scene = Scene::random(rng, cfg, count, colours, shapes);
                image_task(rng, family, &scene, colours, shapes).map(|t| Task {
                    scene: Some(scene),
                    ..t
                })
            }
        };
        if let Some(t) = task {
            return t;
        }
    }
}

fn task(family: Family, problem: String, answer: String, steps: String, kw: Vec<String>) -> Task {
    Task {
        family,
        problem,
        answer,
        steps,
        key_words: kw,
        scene: None,
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn image_task<R: Rng>(
    rng: &mut R,
    family: Family,
    scene: &Scene,
    colours: &[Colour],
    shapes: &[Shape],
) -> Option<Task> {
    let objs = &scene.objects;
    let colour = *colours.choose(rng)?;
    let shape = *shapes.choose(rng)?;
    let t = match family {
        Family::CountColour => {
            let members: Vec<&str> = objs
                .iter()
                .filter(|o| o.colour == colour)
                .map(|o| o.shape.word())
                .collect();
            let n = members.len();
            let c = colour.word();
            let mut kw = vec![c.to_string()];
            kw.extend(members.iter().map(|s| s.to_string()));
            task(
                family,
                format!("<image> How many {c} shapes are there? Answer with a number."),
                n.to_string(),
                format!("{c} shapes: {}. count {n}", list_or_none(&members)),
                kw,
            )
        }
        Family::CountShape => {
            let members: Vec<&str> = objs
                .iter()
                .filter(|o| o.shape == shape)
                .map(|o| o.colour.word())
                .collect();
            let n = members.len();
            let p = shape.plural();
            let mut kw = vec![shape.word().to_string()];
            kw.extend(members.iter().map(|s| s.to_string()));
            task(
                family,
                format!("<image> How many {p} are there? Answer with a number."),
                n.to_string(),
                format!("{p}: {}. count {n}", list_or_none(&members)),
                kw,
            )
        }
        Family::AttributeColour => {
            let unique: Vec<_> = objs
                .iter()
                .filter(|o| scene.count_shape(o.shape) == 1)
                .collect();
            let o = unique.choose(rng)?;
            let (s, c) = (o.shape.word(), o.colour.word());
            task(
                family,
                format!("<image> What colour is the {s}? Answer with a colour."),
                c.to_string(),
                format!("the {s} is {c}"),
                vec![s.to_string(), c.to_string()],
            )
        }
        Family::AttributeSize => {
            let o = objs.choose(rng)?;
            let (n, z) = (o.name(), o.size.word());
            task(
                family,
                format!("<image> Is the {n} small or large? Answer small or large."),
                z.to_string(),
                format!("the {n} is {z}"),
                vec![n, z.to_string()],
            )
        }
        Family::Exists => {
            let present = rng.random_bool(0.5);
            let name = if present {
                objs.choose(rng)?.name()
            } else {
                let absent: Vec<(Colour, Shape)> = colours
                    .iter()
                    .flat_map(|&c| shapes.iter().map(move |&s| (c, s)))
                    .filter(|&(c, s)| scene.find(c, s).is_none())
                    .collect();
                let (c, s) = absent.choose(rng)?;
                format!("{} {}", c.word(), s.word())
            };
            let (answer, steps) = if present {
                ("yes", format!("I see a {name}"))
            } else {
                ("no", format!("I see no {name}"))
            };
            task(
                family,
                format!("<image> Is there a {name}? Answer yes or no."),
                answer.to_string(),
                steps,
                vec![name],
            )
        }
        Family::Position => {
            if objs.len() < 2 {
                return None;
            }
            let picked: Vec<_> = objs.choose_multiple(rng, 2).collect();
            let (a, b) = (picked[0], picked[1]);
            let horizontal = a.col != b.col && (a.row == b.row || rng.random_bool(0.5));
            let (an, bn) = (a.name(), b.name());
            if horizontal {
                let (x, y) = (a.col + 1, b.col + 1);
                let (ans, rel) = if x < y { ("left", '<') } else { ("right", '>') };
                task(
                    family,
                    format!("<image> Is the {an} left or right of the {bn}? Answer left or right."),
                    ans.to_string(),
                    format!("{an} column {x}, {bn} column {y}, {x} {rel} {y}"),
                    vec![an, bn],
                )
            } else {
                let (x, y) = (a.row + 1, b.row + 1);
                let (ans, rel) = if x < y {
                    ("above", '<')
                } else {
                    ("below", '>')
                };
                task(
                    family,
                    format!("<image> Is the {an} above or below the {bn}? Answer above or below."),
                    ans.to_string(),
                    format!("{an} row {x}, {bn} row {y}, {x} {rel} {y}"),
                    vec![an, bn],
                )
            }
        }
        Family::Describe => {
            let names = scene.names();
            task(
                family,
                "<image> Name every object in the image by colour and shape. Answer with a list."
                    .to_string(),
                names.join(", "),
                format!("I see {} objects", names.len()),
                names,
            )
        }
        Family::AddMore => {
            let n = scene.count_shape(shape);
            let k = rng.random_range(1..=5);
            let p = shape.plural();
            task(
                family,
                format!("<image> You add {k} more {p}. How many {p} are there now? Answer with a number."),
                (n + k).to_string(),
                format!("{p} {n}, {n} + {k} = {}", n + k),
                vec![shape.word().to_string()],
            )
        }
        Family::CompareColours => {
            let (a, b) = two_distinct(rng, colours)?;
            let (na, nb) = (scene.count_colour(a), scene.count_colour(b));
            if na == nb {
                return None;
            }
            let (aw, bw) = (a.word(), b.word());
            let (win, rel) = if na > nb { (aw, '>') } else { (bw, '<') };
            task(
                family,
                format!("<image> Are there more {aw} shapes or {bw} shapes? Answer {aw} or {bw}."),
                win.to_string(),
                format!("{aw} {na}, {bw} {nb}, {na} {rel} {nb}"),
                vec![aw.to_string(), bw.to_string()],
            )
        }
        Family::Total => {
            let (a, b) = two_distinct(rng, colours)?;
            let (na, nb) = (scene.count_colour(a), scene.count_colour(b));
            let (aw, bw) = (a.word(), b.word());
            task(
                family,
                format!("<image> How many {aw} shapes and {bw} shapes are there in total? Answer with a number."),
                (na + nb).to_string(),
                format!("{aw} {na}, {bw} {nb}, {na} + {nb} = {}", na + nb),
                vec![aw.to_string(), bw.to_string()],
            )
        }
        Family::CompareShapes => {
            let (a, b) = two_distinct(rng, shapes)?;
            let (na, nb) = (scene.count_shape(a), scene.count_shape(b));
            if na == nb {
                return None;
            }
            let (ap, bp) = (a.plural(), b.plural());
            let (win, rel) = if na > nb {
                (a.word(), '>')
            } else {
                (b.word(), '<')
            };
            task(
                family,
                format!(
                    "<image> Are there more {ap} or {bp}? Answer {} or {}.",
                    a.word(),
                    b.word()
                ),
                win.to_string(),
                format!("{ap} {na}, {bp} {nb}, {na} {rel} {nb}"),
                vec![a.word().to_string(), b.word().to_string()],
            )
        }
        Family::Difference => {
            let (a, b) = two_distinct(rng, colours)?;
            let (na, nb) = (scene.count_colour(a), scene.count_colour(b));
            let ((a, na), (b, nb)) = if na >= nb {
                ((a, na), (b, nb))
            } else {
                ((b, nb), (a, na))
            };
            let (aw, bw) = (a.word(), b.word());
            task(
                family,
                format!("<image> How many more {aw} shapes than {bw} shapes are there? Answer with a number."),
                (na - nb).to_string(),
                format!("{aw} {na}, {bw} {nb}, {na} - {nb} = {}", na - nb),
                vec![aw.to_string(), bw.to_string()],
            )
        }
        Family::MostFrequent => {
            let counts: Vec<(Colour, usize)> = colours
                .iter()
                .map(|&c| (c, scene.count_colour(c)))
                .filter(|&(_, n)| n > 0)
                .collect();
            let max = counts.iter().map(|&(_, n)| n).max()?;
            let winners: Vec<_> = counts.iter().filter(|&&(_, n)| n == max).collect();
            if winners.len() != 1 {
                return None;
            }
            let steps = counts
                .iter()
                .map(|(c, n)| format!("{} {n}", c.word()))
                .collect::<Vec<_>>()
                .join(", ");
            task(
                family,
                "<image> Which colour appears most often? Answer with a colour.".to_string(),
                winners[0].0.word().to_string(),
                steps,
                counts.iter().map(|(c, _)| c.word().to_string()).collect(),
            )
        }
        Family::Points => {
            let (a, b) = two_distinct(rng, colours)?;
            let (na, nb) = (scene.count_colour(a), scene.count_colour(b));
            let (pa, pb) = (rng.random_range(2..=5), rng.random_range(2..=5));
            let (aw, bw) = (a.word(), b.word());
            let (ta, tb) = (na * pa, nb * pb);
            task(
                family,
                format!("<image> Each {aw} shape is worth {pa} points and each {bw} shape is worth {pb} points. How many points are there in total? Answer with a number."),
                (ta + tb).to_string(),
                format!("{aw} {na} * {pa} = {ta}, {bw} {nb} * {pb} = {tb}, {ta} + {tb} = {}", ta + tb),
                vec![aw.to_string(), bw.to_string()],
            )
        }
        Family::Arithmetic | Family::Compare => return None,
    };
    Some(t)
}

fn two_distinct<R: Rng, T: Copy>(rng: &mut R, items: &[T]) -> Option<(T, T)> {
    let picked: Vec<T> = items.choose_multiple(rng, 2).copied().collect();
    match picked[..] {
        [a, b] => Some((a, b)),
        _ => None,
    }
}

const ITEMS: [&str; 3] = ["balls", "apples", "coins"];
const BOXES: [&str; 3] = ["A", "B", "C"];

fn text_task<R: Rng>(rng: &mut R, family: Family, k: &Knobs) -> Task {
    let item = *ITEMS.choose(rng).expect("non-empty");
    let max = k.max_number.max(2);
    match family {
        Family::Compare => compare_task(rng, k.steps, item, max),
        _ => arithmetic_task(rng, k.steps, item, max),
    }
}

/// `steps` operations on a box's count; the hard level opens with a multiplication.
fn arithmetic_task<R: Rng>(rng: &mut R, steps: usize, item: &str, max: u32) -> Task {
    let mut sentences = Vec::new();
    let mut work = Vec::new();
    let mut value: u32;
    let mut remaining = steps;
    if steps >= 3 {
        let (bags, each) = (rng.random_range(2..=5), rng.random_range(2..=9));
        value = bags * each;
        sentences.push(format!(
            "A box has {bags} bags with {each} {item} in each bag."
        ));
        work.push(format!("{bags} * {each} = {value}"));
        remaining -= 1;
    } else {
        value = rng.random_range(1..=max);
        sentences.push(format!("A box has {value} {item}."));
    }
    for _ in 0..remaining {
        let before = value;
        if value > 1 && rng.random_bool(0.5) {
            let b = rng.random_range(1..=value.min(max));
            value -= b;
            sentences.push(format!("You take out {b} {item}."));
            work.push(format!("{before} - {b} = {value}"));
        } else {
            let b = rng.random_range(1..=max);
            value += b;
            sentences.push(format!("You put in {b} more {item}."));
            work.push(format!("{before} + {b} = {value}"));
        }
    }
    sentences.push(format!(
        "How many {item} are in the box now? Answer with a number."
    ));
    task(
        Family::Arithmetic,
        sentences.join(" "),
        value.to_string(),
        work.join(", "),
        vec![value.to_string()],
    )
}

/// Easy: two boxes; medium: three boxes; hard: two boxes after one change.
fn compare_task<R: Rng>(rng: &mut R, steps: usize, item: &str, max: u32) -> Task {
    let more = rng.random_bool(0.5);
    let n_boxes = if steps == 2 { 3 } else { 2 };
    let mut counts: Vec<u32> = Vec::new();
    while counts.len() < n_boxes {
        let v = rng.random_range(1..=max);
        if !counts.contains(&v) {
            counts.push(v);
        }
    }
    let boxes = &BOXES[..n_boxes];
    let listing = match n_boxes {
        3 => format!(
            "Box A has {} {item}, box B has {} {item} and box C has {} {item}.",
            counts[0], counts[1], counts[2]
        ),
        _ => format!(
            "Box A has {} {item} and box B has {} {item}.",
            counts[0], counts[1]
        ),
    };
    let mut problem = vec![listing];
    let mut work: Vec<String> = boxes
        .iter()
        .zip(&counts)
        .map(|(b, v)| format!("{b} {v}"))
        .collect();
    let mut finals = counts.clone();
    if steps >= 3 {
        // A change that may flip the order; redraw until no tie remains.
        let who = rng.random_range(0..2);
        loop {
            let add = rng.random_range(1..=max);
            let v = counts[who] + add;
            if v != counts[1 - who] {
                finals[who] = v;
                problem.push(format!("You put {add} more {item} in box {}.", BOXES[who]));
                work[who] = format!("{} {} + {add} = {v}", BOXES[who], counts[who]);
                break;
            }
        }
    }
    let best = if more {
        (0..n_boxes).max_by_key(|&i| finals[i])
    } else {
        (0..n_boxes).min_by_key(|&i| finals[i])
    }
    .expect("at least two boxes");
    let word = match (n_boxes, more) {
        (2, true) => "more",
        (2, false) => "fewer",
        (_, true) => "the most",
        (_, false) => "the fewest",
    };
    let now = if steps >= 3 { " now" } else { "" };
    let options = match n_boxes {
        3 => "A, B or C",
        _ => "A or B",
    };
    problem.push(format!(
        "Which box has {word} {item}{now}? Answer {options}."
    ));
    work.push(format!("{word} is {}", BOXES[best]));
    task(
        Family::Compare,
        problem.join(" "),
        BOXES[best].to_string(),
        work.join(", "),
        vec![BOXES[best].to_string()],
    )
}
