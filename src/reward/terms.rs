//! The text-only reward terms.

use std::collections::HashMap;

use super::extract;
use super::{Reward, RewardError};
use crate::data::Sample;
use crate::model::Completion;

/// How an extracted answer is compared with `sample.answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Numeric when both parse as numbers, else exact.
    Auto,
    Numeric,
    Exact,
    Choice,
}

/// 1 if the extracted final answer equals the sample's answer, else 0.
#[derive(Debug, Clone)]
pub struct Accuracy {
    extract: String,
    compare: Compare,
    tolerance: f64,
}

impl Accuracy {
    pub fn new(extract: &str, compare: &str, tolerance: f64) -> Result<Self, RewardError> {
        let bad = |param: &str, msg: String| RewardError::BadParam {
            term: "accuracy".into(),
            param: param.into(),
            msg,
        };
        if !super::catalog::EXTRACTORS.contains(&extract) {
            return Err(bad("extract", format!("unknown extractor `{extract}`")));
        }
        let compare = match compare {
            "auto" => Compare::Auto,
            "numeric" => Compare::Numeric,
            "exact" => Compare::Exact,
            "choice" => Compare::Choice,
            other => return Err(bad("compare", format!("unknown comparison `{other}`"))),
        };
        if !(tolerance >= 0.0 && tolerance.is_finite()) {
            return Err(bad("tolerance", format!("{tolerance} is not >= 0")));
        }
        Ok(Accuracy {
            extract: extract.into(),
            compare,
            tolerance,
        })
    }

    /// Whether `predicted` matches `reference` under this term's comparison.
    pub fn matches(&self, predicted: &str, reference: &str) -> bool {
        let numeric = || match (
            extract::parse_number(predicted),
            extract::parse_number(reference),
        ) {
            (Some(a), Some(b)) => Some(extract::numeric_eq(a, b, self.tolerance)),
            _ => None,
        };
        let exact = || {
            let p = extract::normalize(predicted);
            !p.is_empty() && p == extract::normalize(reference)
        };
        match self.compare {
            Compare::Numeric => numeric().unwrap_or(false),
            Compare::Exact => exact(),
            Compare::Choice => match (
                extract::choice_letter(predicted),
                extract::choice_letter(reference),
            ) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
            Compare::Auto => numeric().unwrap_or_else(exact),
        }
    }
}

impl Reward for Accuracy {
    fn name(&self) -> &str {
        "accuracy"
    }

    fn score(&self, sample: &Sample, completion: &Completion) -> f32 {
        match extract::extract(&completion.text, &self.extract) {
            Some(ans) if self.matches(&ans, &sample.answer) => 1.0,
            _ => 0.0,
        }
    }
}

#[derive(Debug, Clone)]
enum FormatStyle {
    ThinkThenBoxed,
    ThinkThenAnswer,
    Headers(Vec<String>),
    Regex(regex::Regex),
}

/// 1 if the completion has the required structure, else 0.
#[derive(Debug, Clone)]
pub struct Format {
    style: FormatStyle,
}

impl Format {
    pub fn new(
        style: &str,
        headers: Vec<String>,
        pattern: Option<String>,
    ) -> Result<Self, RewardError> {
        let bad = |param: &str, msg: String| RewardError::BadParam {
            term: "format".into(),
            param: param.into(),
            msg,
        };
        let style = match style {
            "think_then_boxed" => FormatStyle::ThinkThenBoxed,
            "think_then_answer" => FormatStyle::ThinkThenAnswer,
            "headers" => {
                if headers.is_empty() {
                    return Err(bad(
                        "headers",
                        "style headers needs at least one header".into(),
                    ));
                }
                FormatStyle::Headers(headers)
            }
            "regex" => {
                let p =
                    pattern.ok_or_else(|| bad("pattern", "style regex needs `pattern`".into()))?;
                // Anchored so that the whole completion must match, as the catalogue says.
                let re = regex::Regex::new(&format!(r"(?s)\A(?:{p})\z"))
                    .map_err(|e| bad("pattern", format!("invalid regex: {e}")))?;
                FormatStyle::Regex(re)
            }
            other => return Err(bad("style", format!("unknown style `{other}`"))),
        };
        Ok(Format { style })
    }

    /// Whether `text` has the structure.
    pub fn check(&self, text: &str) -> bool {
        match &self.style {
            // An empty answer is not the structure: GRPO finds `\boxed{}` long before it finds
            // right answers, and a format term that pays for it is reward-hacked.
            FormatStyle::ThinkThenBoxed => think_block(text).is_some_and(boxed_ends),
            FormatStyle::ThinkThenAnswer => think_block(text).is_some_and(|rest| {
                let r = rest.trim();
                r.starts_with("<answer>")
                    && r.ends_with("</answer>")
                    && r.matches("<answer>").count() == 1
                    && r.matches("</answer>").count() == 1
                    && extract::answer_tag(r).is_some_and(|a| !a.is_empty())
            }),
            FormatStyle::Headers(hs) => {
                let mut at = 0;
                hs.iter().all(|h| match text[at..].find(h.as_str()) {
                    Some(p) => {
                        at += p + h.len();
                        true
                    }
                    None => false,
                })
            }
            FormatStyle::Regex(re) => re.is_match(text),
        }
    }
}

/// After a leading `<think>…</think>` (exactly one of each, non-empty thoughts), the rest.
/// One non-empty `\boxed{…}` that ends the completion (a final full stop allowed): text after
/// the answer is not the structure, and rewarding it teaches a policy never to stop.
fn boxed_ends(rest: &str) -> bool {
    let Some(at) = rest.find("\\boxed{") else {
        return false;
    };
    if rest[at + 1..].contains("\\boxed{") {
        return false;
    }
    let inner = &rest[at + "\\boxed{".len()..];
    let mut depth = 1usize;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let after = inner[i + 1..].trim();
                    return !inner[..i].trim().is_empty() && (after.is_empty() || after == ".");
                }
            }
            _ => {}
        }
    }
    false
}

fn think_block(text: &str) -> Option<&str> {
    let t = text.trim_start();
    let body = t.strip_prefix("<think>")?;
    let end = body.find("</think>")?;
    if body[..end].trim().is_empty() || body.matches("<think>").count() > 0 {
        return None;
    }
    let rest = &body[end + "</think>".len()..];
    (!rest.contains("</think>")).then_some(rest)
}

impl Reward for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&self, _sample: &Sample, completion: &Completion) -> f32 {
        if self.check(&completion.text) {
            1.0
        } else {
            0.0
        }
    }
}

/// DAPO's soft overlong penalty over completion tokens: 0 up to `max − buffer`, linear down to
/// −1 at `max`, −1 beyond.
#[derive(Debug, Clone, Copy)]
pub struct SoftOverlong {
    max: usize,
    buffer: usize,
}

impl SoftOverlong {
    pub fn new(max: usize, buffer: usize) -> Result<Self, RewardError> {
        if buffer > max || max == 0 {
            return Err(RewardError::BadParam {
                term: "soft_overlong".into(),
                param: "buffer".into(),
                msg: format!("need 0 <= buffer <= max and max > 0, got buffer {buffer}, max {max}"),
            });
        }
        Ok(SoftOverlong { max, buffer })
    }

    pub fn penalty(&self, len: usize) -> f32 {
        let start = self.max - self.buffer;
        if len <= start {
            0.0
        } else if len <= self.max {
            (start as f32 - len as f32) / self.buffer as f32
        } else {
            -1.0
        }
    }
}

impl Reward for SoftOverlong {
    fn name(&self) -> &str {
        "soft_overlong"
    }

    fn score(&self, _sample: &Sample, completion: &Completion) -> f32 {
        self.penalty(completion.tokens.len())
    }
}

/// 1 up to `max` completion tokens, then max/len (method A's length reward).
#[derive(Debug, Clone, Copy)]
pub struct LengthCap {
    max: usize,
}

impl LengthCap {
    pub fn new(max: usize) -> Result<Self, RewardError> {
        if max == 0 {
            return Err(RewardError::BadParam {
                term: "length_cap".into(),
                param: "max".into(),
                msg: "must be at least 1".into(),
            });
        }
        Ok(LengthCap { max })
    }
}

impl Reward for LengthCap {
    fn name(&self) -> &str {
        "length_cap"
    }

    fn score(&self, _sample: &Sample, completion: &Completion) -> f32 {
        let len = completion.tokens.len();
        if len <= self.max {
            1.0
        } else {
            self.max as f32 / len as f32
        }
    }
}

/// Whether `needle` occurs in `hay` as whole words (both already lowercase), so that "red"
/// is not found in "predict".
fn contains_words(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    hay.match_indices(needle).any(|(i, m)| {
        !is_word(hay[..i].chars().next_back()) && !is_word(hay[i + m.len()..].chars().next())
    })
}

/// Share of `sample.key_words` found in the completion, case-insensitive, as whole words. A
/// sample without key words scores 1: there is nothing to miss, and a constant reward leaves
/// group-relative advantages unchanged.
#[derive(Debug, Clone, Copy)]
pub struct KeywordRecall;

impl Reward for KeywordRecall {
    fn name(&self) -> &str {
        "keyword_recall"
    }

    fn score(&self, sample: &Sample, completion: &Completion) -> f32 {
        let kws: Vec<String> = sample
            .key_words
            .iter()
            .map(|k| k.trim().to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        if kws.is_empty() {
            return 1.0;
        }
        let text = completion.text.to_lowercase();
        kws.iter().filter(|k| contains_words(&text, k)).count() as f32 / kws.len() as f32
    }
}

const COLOURS: &[&str] = &[
    "red", "green", "blue", "yellow", "orange", "purple", "black", "white", "gray", "grey", "pink",
    "brown", "cyan", "magenta",
];
const SHAPES: &[&str] = &[
    "circle",
    "square",
    "triangle",
    "rectangle",
    "star",
    "diamond",
    "hexagon",
    "pentagon",
    "ellipse",
    "cross",
    "heart",
];
const COUNTS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
];

/// F1 of the objects a completion names against `sample.objects` ("red circle"), as
/// multisets. An object mention is a shape noun (built-in shapes plus the last word of each
/// ground-truth object; plurals accepted) with the attribute word before it when that is a
/// colour (built-in colours plus the other words of the ground truth); a count before it
/// ("two red circles", "2 red circles") repeats it. Both sides empty scores 1.
#[derive(Debug, Clone, Copy)]
pub struct SceneF1;

impl SceneF1 {
    /// The multiset of objects named in `text`.
    pub fn mentions(text: &str, truth: &[String]) -> HashMap<String, usize> {
        let mut nouns: Vec<String> = SHAPES.iter().map(|s| s.to_string()).collect();
        let mut attrs: Vec<String> = COLOURS.iter().map(|s| s.to_string()).collect();
        for o in truth {
            let ws: Vec<String> = o.split_whitespace().map(|w| w.to_lowercase()).collect();
            if let Some((last, rest)) = ws.split_last() {
                nouns.push(last.clone());
                attrs.extend(rest.iter().cloned());
            }
        }
        let words: Vec<String> = text
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let mut out = HashMap::new();
        for (i, w) in words.iter().enumerate() {
            let singular = w
                .strip_suffix("es")
                .filter(|s| nouns.iter().any(|n| n == s))
                .or_else(|| w.strip_suffix('s'))
                .filter(|s| nouns.iter().any(|n| n == s))
                .unwrap_or(w);
            if !nouns.iter().any(|n| n == singular) {
                continue;
            }
            let mut j = i;
            let mut name = singular.to_string();
            if j > 0 && attrs.iter().any(|a| *a == words[j - 1]) {
                name = format!("{} {name}", words[j - 1]);
                j -= 1;
            }
            let count = (j > 0)
                .then(|| {
                    let c = &words[j - 1];
                    c.parse::<usize>()
                        .ok()
                        .or_else(|| COUNTS.iter().position(|n| n == c))
                })
                .flatten()
                .unwrap_or(1)
                .min(64);
            *out.entry(name).or_insert(0) += count;
        }
        out
    }

    /// (precision, recall, f1) of `text` against `truth`.
    pub fn prf(text: &str, truth: &[String]) -> (f32, f32, f32) {
        let pred = Self::mentions(text, truth);
        let mut gt: HashMap<String, usize> = HashMap::new();
        for o in truth {
            let key = o
                .split_whitespace()
                .map(|w| w.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            if !key.is_empty() {
                *gt.entry(key).or_insert(0) += 1;
            }
        }
        let n_pred: usize = pred.values().sum();
        let n_gt: usize = gt.values().sum();
        if n_pred == 0 && n_gt == 0 {
            return (1.0, 1.0, 1.0);
        }
        let tp: usize = pred
            .iter()
            .map(|(k, c)| (*c).min(gt.get(k).copied().unwrap_or(0)))
            .sum();
        if tp == 0 {
            return (0.0, 0.0, 0.0);
        }
        let p = tp as f32 / n_pred as f32;
        let r = tp as f32 / n_gt as f32;
        (p, r, 2.0 * p * r / (p + r))
    }
}

impl Reward for SceneF1 {
    fn name(&self) -> &str {
        "scene_f1"
    }

    fn score(&self, sample: &Sample, completion: &Completion) -> f32 {
        Self::prf(&completion.text, &sample.objects).2
    }

    fn sub_scores(&self, sample: &Sample, completion: &Completion) -> Vec<(&'static str, f32)> {
        let (p, r, _) = Self::prf(&completion.text, &sample.objects);
        vec![("precision", p), ("recall", r)]
    }
}
