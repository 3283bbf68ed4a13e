//! Diagnostics: one error-kind enum with stable codes, one diagnostic type for syntax and
//! semantic problems alike, and a report that carries them all (miette `related()`).

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use crate::syntax::{Span, SyntaxError, SyntaxErrorKind};

/// Every problem the checker reports. The code (`curric::…`) is stable: tests and users
/// match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidUtf8,
    Syntax,
    TooDeep,
    Internal,
    UnknownBlock,
    UnknownKey,
    UnknownSource,
    UnknownReward,
    UnknownTerm,
    UnknownParam,
    UnknownStage,
    UnknownValue,
    DuplicateName,
    DuplicateKey,
    MissingKey,
    KeyNotAllowed,
    Type,
    Cycle,
    UnboundedPhase,
    OutOfRange,
    BadWeight,
    MixNormalised,
    BatchMismatch,
    MissingFile,
    LevelUnused,
    NeedsProbe,
    EmptyMix,
    UnusedDefinition,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidUtf8 => SyntaxErrorKind::InvalidUtf8.code(),
            ErrorKind::Syntax => SyntaxErrorKind::Syntax.code(),
            ErrorKind::TooDeep => SyntaxErrorKind::TooDeep.code(),
            ErrorKind::Internal => SyntaxErrorKind::Internal.code(),
            ErrorKind::UnknownBlock => "curric::unknown-block",
            ErrorKind::UnknownKey => "curric::unknown-key",
            ErrorKind::UnknownSource => "curric::unknown-source",
            ErrorKind::UnknownReward => "curric::unknown-reward",
            ErrorKind::UnknownTerm => "curric::unknown-term",
            ErrorKind::UnknownParam => "curric::unknown-param",
            ErrorKind::UnknownStage => "curric::unknown-stage",
            ErrorKind::UnknownValue => "curric::unknown-value",
            ErrorKind::DuplicateName => "curric::duplicate-name",
            ErrorKind::DuplicateKey => "curric::duplicate-key",
            ErrorKind::MissingKey => "curric::missing-key",
            ErrorKind::KeyNotAllowed => "curric::key-not-allowed",
            ErrorKind::Type => "curric::type",
            ErrorKind::Cycle => "curric::cycle",
            ErrorKind::UnboundedPhase => "curric::unbounded-phase",
            ErrorKind::OutOfRange => "curric::out-of-range",
            ErrorKind::BadWeight => "curric::bad-weight",
            ErrorKind::MixNormalised => "curric::mix-normalised",
            ErrorKind::BatchMismatch => "curric::batch-mismatch",
            ErrorKind::MissingFile => "curric::missing-file",
            ErrorKind::LevelUnused => "curric::level-unused",
            ErrorKind::NeedsProbe => "curric::needs-probe",
            ErrorKind::EmptyMix => "curric::empty-mix",
            ErrorKind::UnusedDefinition => "curric::unused",
        }
    }

    fn from_syntax(k: SyntaxErrorKind) -> Self {
        match k {
            SyntaxErrorKind::InvalidUtf8 => ErrorKind::InvalidUtf8,
            SyntaxErrorKind::Syntax => ErrorKind::Syntax,
            SyntaxErrorKind::TooDeep => ErrorKind::TooDeep,
            SyntaxErrorKind::Internal => ErrorKind::Internal,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, with where it is and what to do about it.
#[derive(Debug, Clone)]
pub struct Diag {
    pub kind: ErrorKind,
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
    /// Further places involved (e.g. the first definition of a duplicate).
    pub notes: Vec<(Span, String)>,
    src: Option<Arc<NamedSource<String>>>,
}

impl Diag {
    pub fn error(kind: ErrorKind, span: Span, message: impl Into<String>) -> Self {
        Diag {
            kind,
            severity: Severity::Error,
            message: message.into(),
            span,
            label: String::new(),
            help: None,
            notes: Vec::new(),
            src: None,
        }
    }

    pub fn warning(kind: ErrorKind, span: Span, message: impl Into<String>) -> Self {
        Diag {
            severity: Severity::Warning,
            ..Diag::error(kind, span, message)
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn note(mut self, span: Span, text: impl Into<String>) -> Self {
        self.notes.push((span, text.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// miette lays a snippet out by column and panics past column 65,535. A line that long is
    /// data rather than something to read, so such a diagnostic is printed with its position
    /// instead of a snippet.
    fn render_without_snippet(&self, file: &str) -> Option<String> {
        const LONG_LINE: usize = 4096;
        let text = self.src.as_ref()?.inner();
        let spans = std::iter::once(self.span).chain(self.notes.iter().map(|(s, _)| *s));
        let long = spans.into_iter().any(|sp| {
            let at = sp.start.min(text.len());
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            end - start > LONG_LINE
        });
        if !long {
            return None;
        }
        let at = self.span.start.min(text.len());
        let line = text[..at].matches('\n').count() + 1;
        let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        let mut out = format!(
            "{}\n\n  × {}\n  at {file}:{line}:{col}: {} (the line is too long to show)\n",
            self.code(),
            self.message,
            self.label
        );
        if let Some(h) = &self.help {
            out.push_str(&format!("  help: {h}\n"));
        }
        Some(out)
    }
}

impl From<SyntaxError> for Diag {
    fn from(e: SyntaxError) -> Self {
        Diag::error(ErrorKind::from_syntax(e.kind), e.span, e.message)
            .label(e.label)
            .maybe_help(e.help)
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.kind.code()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.src
            .as_ref()
            .map(|s| s.as_ref() as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let label = (!self.label.is_empty()).then(|| self.label.clone());
        let mut spans = vec![LabeledSpan::new_primary_with_span(label, self.span)];
        for (s, t) in &self.notes {
            spans.push(LabeledSpan::new_with_span(Some(t.clone()), *s));
        }
        Some(Box::new(spans.into_iter()))
    }
}

/// All diagnostics of one file. Renders every problem at once: the report itself is the
/// summary and each problem is a `related()` diagnostic with its own snippet.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: String,
    pub diagnostics: Vec<Diag>,
}

impl Report {
    pub fn new(file: impl Into<String>, text: String, mut diagnostics: Vec<Diag>) -> Self {
        let file = file.into();
        let src = Arc::new(NamedSource::new(file.clone(), text));
        // Source order, then errors before warnings at the same place: stable output.
        diagnostics.sort_by_key(|d| (d.span.start, d.severity == Severity::Warning, d.span.end));
        for d in &mut diagnostics {
            d.src = Some(src.clone());
        }
        Report { file, diagnostics }
    }

    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    /// Every diagnostic rendered without colour, deterministic (fixed width, unicode).
    pub fn render(&self) -> String {
        self.render_themed(GraphicalTheme::unicode_nocolor())
    }

    pub fn render_themed(&self, theme: GraphicalTheme) -> String {
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        for d in &self.diagnostics {
            if let Some(plain) = d.render_without_snippet(&self.file) {
                out.push_str(&plain);
                continue;
            }
            if handler.render_report(&mut out, d).is_err() {
                out.push_str(&format!("{}: {}\n", d.code(), d.message));
            }
        }
        out
    }

    /// `2 errors, 1 warning`.
    pub fn counts(&self) -> String {
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        format!(
            "{}, {}",
            plural(self.errors(), "error"),
            plural(self.warnings(), "warning")
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.counts())
    }
}

impl std::error::Error for Report {}

impl Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("curric::check"))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(
            self.diagnostics.iter().map(|d| d as &dyn Diagnostic),
        ))
    }
}

/// "did you mean `x`?" for the closest candidate by edit distance, if close enough.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        // Transpositions count once: `bsae` is one slip from `base`.
        let d = strsim::damerau_levenshtein(name, c);
        let limit = (name.len().max(c.len()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}
