//! `grammar/README.md`'s key tables are the key table's: each generated block equals what
//! `spec::keys::markdown` renders now. `UPDATE_GOLDEN=1` rewrites the blocks.

use curric::spec::keys::{markdown, Scope};

const README: &str = "grammar/README.md";

const BLOCKS: &[(&str, Scope)] = &[
    ("header", Scope::Header),
    ("source", Scope::Source),
    ("stage", Scope::Stage),
    ("call", Scope::Call),
    ("handoff", Scope::Handoff),
    ("difficulty", Scope::Difficulty),
];

/// (start of the block's body, end of it) for `<!-- keys:NAME … -->` … `<!-- /keys:NAME -->`.
fn body(text: &str, name: &str) -> (usize, usize) {
    let open = format!("<!-- keys:{name} ");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("{README} has no `{open}` block"));
    let start = start + text[start..].find("-->\n").expect("closed marker") + 4;
    let end = start
        + text[start..]
            .find(&format!("<!-- /keys:{name} -->"))
            .unwrap_or_else(|| panic!("{README}: block `{name}` is not closed"));
    (start, end)
}

#[test]
fn grammar_readme_key_tables_are_generated_from_the_key_table() {
    let mut text = std::fs::read_to_string(README).unwrap();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (name, scope) in BLOCKS {
        let (a, b) = body(&text, name);
        let want = markdown(*scope);
        if text[a..b] != want {
            if update {
                text.replace_range(a..b, &want);
            } else {
                stale.push(*name);
            }
        }
    }
    if update {
        std::fs::write(README, text).unwrap();
    }
    assert!(
        stale.is_empty(),
        "{README}: key tables {stale:?} differ from src/spec/keys.rs; rerun with UPDATE_GOLDEN=1"
    );
}
