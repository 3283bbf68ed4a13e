//! The `.curr` surface syntax: the pest grammar in `grammar/curric.pest` and a spanned tree
//! ([`ast`]) built from it. Parsing knows no keys or names; `check` gives them meaning.
//!
//! Input arrives as bytes ([`decode`]) so that a file that is not UTF-8 is a diagnostic,
//! not a crash.

pub mod ast;
mod parser;

pub use ast::*;
pub use parser::{parse, MAX_DEPTH};

/// What went wrong before a tree exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxErrorKind {
    InvalidUtf8,
    Syntax,
    TooDeep,
    /// The grammar accepted something the tree builder did not expect: a bug in curric.
    Internal,
}

impl SyntaxErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            SyntaxErrorKind::InvalidUtf8 => "curric::invalid-utf8",
            SyntaxErrorKind::Syntax => "curric::syntax",
            SyntaxErrorKind::TooDeep => "curric::too-deep",
            SyntaxErrorKind::Internal => "curric::internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub kind: SyntaxErrorKind,
    pub span: Span,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
}

/// Bytes → text. On invalid UTF-8 returns the lossy text (for rendering) and an error that
/// points at the first bad byte.
pub fn decode(bytes: &[u8]) -> (String, Option<SyntaxError>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(e) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            // Offsets in the lossy text shift after the first replacement, but the first bad
            // byte sits at the same offset in both.
            let at = e.valid_up_to();
            let end = text[at..]
                .chars()
                .next()
                .map(|c| at + c.len_utf8())
                .unwrap_or(at);
            let err = SyntaxError {
                kind: SyntaxErrorKind::InvalidUtf8,
                span: Span::new(at, end),
                message: format!("the file is not valid UTF-8 (first bad byte at offset {at})"),
                label: "invalid UTF-8".into(),
                help: Some("save the file as UTF-8".into()),
            };
            (text, Some(err))
        }
    }
}
