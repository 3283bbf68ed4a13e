//! The built-in word-level tokenizer.
//!
//! Words are split on whitespace; every punctuation character and every digit becomes its own
//! token, so numbers are read digit by digit. The tags `<think>`, `</think>`, `<answer>`,
//! `</answer>`, `<image>` and the command `\boxed` are added tokens, matched before splitting.
//!
//! Decoding convention: the tokenizer itself has no decoder (so `Tokenizer::decode` joins tokens
//! with single spaces); [`detokenize`] joins them the way the built-in suite writes text: no space
//! between consecutive digits, none between `\boxed` and `{`, none inside `{ }`, none before
//! `. , ? ! : ; ) ] }` or `%` and none after `( [ {`. Hence `\boxed{12}` and `3.5` decode back
//! exactly, and `What is 3 + 4?` decodes to itself.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::ModelError;

pub const PAD: &str = "[PAD]";
pub const UNK: &str = "[UNK]";
pub const EOS: &str = "[EOS]";
pub const IMAGE: &str = "<image>";
/// Added tokens that are part of the text (not skipped when decoding).
pub const TAGS: [&str; 5] = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed"];

/// Words of questions, reasoning traces and answers that any curriculum is likely to use.
const BASE_WORDS: &str = "
a an the is are was were be been being am do does did done have has had having it its this that
these those there here what which who whom whose where when why how many much more most less least
fewer few of in on at to from by with without into onto over under above below between among
behind front next near far left right top bottom middle center centre upper lower corner row column
grid cell cells image picture photo scene shown show shows see seen look find count counting number
numbers total sum difference product plus minus times divided equal equals than and or not no yes
true false if then else so because therefore thus answer answers question step steps first second
third fourth fifth sixth seventh eighth ninth last final result therefore same different each every
all any some none both either neither only one two three four five six seven eight nine ten zero
eleven twelve color colour colors colours shape shapes object objects item items size big small large
tiny larger smaller largest smallest biggest red green blue yellow orange purple pink brown black white
gray grey cyan magenta circle circles square squares triangle triangles star stars rectangle
rectangles diamond diamonds cross crosses hexagon hexagons ellipse ellipses dot dots line lines
position positions located location side sides contain contains containing there's let's we i you
he she they them us our your their my me think thinking reason reasoning check so solve solution
option options choose choice select letter letters correct wrong describe describes description
caption list name names word words can could should would will must may might also then next
after before again once twice half double triple odd even greater smaller less least per
how's what's isn't aren't don't doesn't
";

/// Builds the built-in tokenizer: specials `[PAD]` (id 0), `[UNK]`, `[EOS]`, `<image>`, the tags,
/// then the base vocabulary and `words` (each also capitalised), digits and ASCII punctuation.
pub fn build(words: &[String]) -> Tokenizer {
    let mut vocab: Vec<String> = [PAD, UNK, EOS, IMAGE]
        .iter()
        .chain(TAGS.iter())
        .map(|s| s.to_string())
        .collect();
    let mut seen: BTreeSet<String> = vocab.iter().cloned().collect();
    let mut push = |w: String, vocab: &mut Vec<String>| {
        if !w.is_empty() && seen.insert(w.clone()) {
            vocab.push(w);
        }
    };
    for d in '0'..='9' {
        push(d.to_string(), &mut vocab);
    }
    for c in (0x21u8..0x7f)
        .map(char::from)
        .filter(char::is_ascii_punctuation)
    {
        push(c.to_string(), &mut vocab);
    }
    for c in ('a'..='z').chain('A'..='Z') {
        push(c.to_string(), &mut vocab);
    }
    // Split user words the same way the pre-tokenizer will, so that e.g. `top-left` adds
    // `top`, `-`, `left` rather than an unreachable `top-left` entry.
    let given = words.iter().flat_map(|w| pieces(w));
    let base = BASE_WORDS.split_whitespace().flat_map(pieces);
    for w in base.chain(given) {
        let cap = capitalise(&w);
        push(w, &mut vocab);
        push(cap, &mut vocab);
    }
    let vocab_map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = [PAD, UNK, EOS, IMAGE]
        .iter()
        .map(|t| (t, true))
        .chain(TAGS.iter().map(|t| (t, false)))
        .map(|(t, special)| {
            json!({
                "id": vocab.iter().position(|w| w == t).unwrap_or(0),
                "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": special
            })
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "WhitespaceSplit"},
                {"type": "Punctuation", "behavior": "Isolated"},
                {"type": "Digits", "individual_digits": true}
            ]
        },
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": UNK}
    });
    // The spec is built from constants and validated by the tokenizer tests, so a failure here
    // is a bug in this function, not a user error.
    spec.to_string()
        .parse()
        .expect("built-in tokenizer spec is valid")
}

/// Splits a word like the pre-tokenizer: punctuation and digits become single pieces.
fn pieces(word: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in word.chars() {
        if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if c.is_ascii_digit() || c.is_ascii_punctuation() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(c.to_string());
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Encodes text to ids (no special tokens added).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, ModelError> {
    tok.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| ModelError::Tokenizer(e.to_string()))
}

/// Decodes ids to text, skipping special tokens. A tokenizer with its own decoder (real
/// checkpoints) uses it; the built-in one (no decoder) follows the module's join convention.
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String, ModelError> {
    if tok.get_decoder().is_some() {
        return tok
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()));
    }
    let pieces: Vec<String> = ids
        .iter()
        .filter_map(|&id| {
            let t = tok.id_to_token(id)?;
            let special = [PAD, UNK, EOS, IMAGE].contains(&t.as_str());
            (!special).then_some(t)
        })
        .collect();
    Ok(detokenize(&pieces))
}

/// Joins word-level pieces following the module's convention.
pub fn detokenize<S: AsRef<str>>(pieces: &[S]) -> String {
    let mut out = String::new();
    let mut prev: Option<&str> = None;
    for p in pieces {
        let p = p.as_ref();
        let glue = match prev {
            None => true,
            Some(q) => {
                let digit = |s: &str| s.len() == 1 && s.as_bytes()[0].is_ascii_digit();
                (digit(q) && digit(p))
                    || (digit(q) && p == ".")
                    || (q == "." && digit(p) && out.len() >= 2 && {
                        // `3.5`: a dot directly after a digit glues to the next digit.
                        let b = out.as_bytes();
                        b[b.len() - 2].is_ascii_digit()
                    })
                    || q == "\\boxed"
                    || matches!(q, "(" | "[" | "{")
                    || matches!(p, "." | "," | "?" | "!" | ":" | ";" | ")" | "]" | "}" | "%")
            }
        };
        if !glue {
            out.push(' ');
        }
        out.push_str(p);
        prev = Some(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_have_fixed_ids() {
        let t = build(&[]);
        assert_eq!(t.token_to_id(PAD), Some(0));
        assert_eq!(t.token_to_id(UNK), Some(1));
        assert_eq!(t.token_to_id(EOS), Some(2));
        assert_eq!(t.token_to_id(IMAGE), Some(3));
    }

    #[test]
    fn digits_and_punctuation_split() {
        let t = build(&[]);
        let ids = encode(&t, "\\boxed{12}").unwrap();
        let toks: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert_eq!(toks, ["\\boxed", "{", "1", "2", "}"]);
    }

    #[test]
    fn suite_sentence_round_trips_without_unk() {
        let words = vec!["teal".to_string(), "top-left".to_string()];
        let t = build(&words);
        let text = "<image> How many red circles are in the top-left cell? \
                    <think> I count 2 red circles, then 10 + 2 = 12. </think> \\boxed{12}";
        let ids = encode(&t, text).unwrap();
        assert!(!ids.contains(&1), "unexpected [UNK] in {ids:?}");
        // `<image>` is special, so decoding drops it.
        let back = decode(&t, &ids).unwrap();
        assert_eq!(
            back,
            "How many red circles are in the top - left cell? \
             <think> I count 2 red circles, then 10 + 2 = 12. </think> \\boxed{12}"
        );
        let teal = encode(&t, "Teal teal 3.5").unwrap();
        assert!(!teal.contains(&1));
        assert_eq!(decode(&t, &teal).unwrap(), "Teal teal 3.5");
    }

    #[test]
    fn unknown_words_map_to_unk() {
        let t = build(&[]);
        assert_eq!(encode(&t, "zyzzyva").unwrap(), vec![1]);
    }
}
