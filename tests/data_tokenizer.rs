//! The contract between the suite and the built-in tokenizer: every word the suite writes is in
//! the vocabulary, and traces decode back to themselves.

use curric::data::suite::{self, vocabulary};
use curric::data::Level;
use curric::model::tokenizer::{build, decode, encode};

#[test]
fn suite_text_tokenizes_without_unknowns_and_traces_round_trip() {
    let tok = build(&vocabulary());
    let unk = tok.token_to_id("[UNK]").unwrap();
    for cap in suite::capabilities() {
        for level in Level::ALL {
            for s in suite::generate(&cap, level, 100, 2).unwrap() {
                let trace = s.trace.clone().unwrap();
                for text in [&s.problem, &trace, &s.answer] {
                    let ids = encode(&tok, text).unwrap();
                    assert!(!ids.contains(&unk), "[UNK] in `{text}`");
                }
                let ids = encode(&tok, &trace).unwrap();
                assert_eq!(decode(&tok, &ids).unwrap(), trace);
            }
        }
    }
}
