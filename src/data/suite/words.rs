//! The suite's word list and the splitting rule the model's word-level tokenizer shares.
//!
//! Rule: split on whitespace; inside a chunk, the specials `<think>`, `</think>`, `<image>`
//! and `\boxed` are whole tokens, every ASCII punctuation character and every digit is its own
//! token, and runs of other characters form words. Case is kept.

use super::scene::{Colour, Shape, Size};

/// Tokens that the splitting rule keeps whole although they contain punctuation.
pub const SPECIAL_TOKENS: [&str; 4] = ["<think>", "</think>", "<image>", "\\boxed"];

/// Splits text by the shared rule, e.g. `"\boxed{12}."` → `\boxed`, `{`, `1`, `2`, `}`, `.`.
pub fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        let mut rest = chunk;
        let mut word = String::new();
        while let Some(c) = rest.chars().next() {
            if let Some(special) = SPECIAL_TOKENS.iter().find(|s| rest.starts_with(**s)) {
                flush(&mut word, &mut out);
                out.push(special.to_string());
                rest = &rest[special.len()..];
                continue;
            }
            if c.is_ascii_punctuation() || c.is_ascii_digit() {
                flush(&mut word, &mut out);
                out.push(c.to_string());
            } else {
                word.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
        flush(&mut word, &mut out);
    }
    out
}

fn flush(word: &mut String, out: &mut Vec<String>) {
    if !word.is_empty() {
        out.push(std::mem::take(word));
    }
}

/// Words of the templates in `tasks.rs` (problems, traces and answers), besides the colour,
/// shape and size words which come from the enums. A test checks that generated samples use
/// nothing else.
const TEMPLATE_WORDS: &[&str] = &[
    // perception
    "How", "many", "shapes", "are", "there", "Answer", "with", "a", "number", "count", "none",
    "What", "colour", "is", "the", "Is", "small", "or", "large", "yes", "no", "I", "see", "left",
    "right", "of", "column", "above", "below", "row", "Name", "every", "object", "in", "image",
    "by", "and", "shape", "list", "objects", // visual reasoning
    "You", "add", "more", "now", "Are", "total", "than", "Which", "appears", "most", "often",
    "Each", "worth", "points", // text reasoning
    "A", "B", "C", "box", "Box", "has", "bags", "bag", "each", "take", "out", "put", "fewer",
    "fewest", "balls", "apples", "coins",
];

/// Every word the suite's problems, traces and answers use, split by [`split_words`]: the
/// special tokens, digits, the punctuation used, and the words. Sorted and deduplicated.
pub fn vocabulary() -> Vec<String> {
    let mut v: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    v.extend((0..10).map(|d| d.to_string()));
    v.extend(
        [".", ",", "?", ":", "{", "}", "+", "-", "*", "=", "<", ">"]
            .iter()
            .map(|s| s.to_string()),
    );
    v.extend(TEMPLATE_WORDS.iter().map(|s| s.to_string()));
    for c in Colour::ALL {
        v.push(c.word().to_string());
    }
    for s in Shape::ALL {
        v.push(s.word().to_string());
        v.push(s.plural().to_string());
    }
    for z in [Size::Small, Size::Large] {
        v.push(z.word().to_string());
    }
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rule() {
        assert_eq!(
            split_words("<image> How many? <think> 12 + 3 </think> \\boxed{red circle, no}"),
            [
                "<image>", "How", "many", "?", "<think>", "1", "2", "+", "3", "</think>",
                "\\boxed", "{", "red", "circle", ",", "no", "}"
            ]
        );
        assert_eq!(split_words("a<b"), ["a", "<", "b"]);
    }
}
