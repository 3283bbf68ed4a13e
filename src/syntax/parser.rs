//! Source text → [`File`]. Naming rule (after just): `expect_*` helpers report a user
//! error; `presume_*` ones state what the grammar guarantees, so their failure is a bug in
//! curric and still surfaces as a diagnostic, never a panic.

use pest::iterators::Pair;
use pest::Parser as _;
use pest_derive::Parser;

use super::ast::*;
use super::{SyntaxError, SyntaxErrorKind};

#[derive(Parser)]
#[grammar = "../grammar/curric.pest"]
struct CurrParser;

/// Deeper nesting than this is refused before pest sees it: pest's recursive descent would
/// otherwise overflow the stack on `((((…` and no real curriculum nests more than a few levels.
pub const MAX_DEPTH: usize = 64;

/// Stack for the parsing thread. pest's recursive descent takes tens of KB per nesting
/// level in unoptimised builds, more than a 2 MB test thread has at [`MAX_DEPTH`]; the
/// space is reserved, not committed, so a large value costs nothing.
const PARSE_STACK: usize = 64 << 20;

/// Parses a whole `.curr` file, on a thread with a known stack so that the depth limit holds
/// whatever thread the caller runs on.
pub fn parse(src: &str) -> Result<File, SyntaxError> {
    check_depth(src)?;
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("curric-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || parse_here(src))
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| presume(None, "a result from the parser thread")),
            // No thread to be had: parse here, within the caller's stack.
            Err(_) => parse_here(src),
        }
    })
}

fn parse_here(src: &str) -> Result<File, SyntaxError> {
    let mut pairs = CurrParser::parse(Rule::file, src).map_err(from_pest)?;
    let file = presume(pairs.next(), "a file")?;
    let span = span_of(&file);
    let mut items = Vec::new();
    for p in file.into_inner() {
        if p.as_rule() == Rule::EOI {
            break;
        }
        items.push(build_item(p)?);
    }
    Ok(File { items, span })
}

fn check_depth(src: &str) -> Result<(), SyntaxError> {
    let bytes = src.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    // `i` sits on an ASCII byte, so it is a char boundary.
                    return Err(SyntaxError {
                        kind: SyntaxErrorKind::TooDeep,
                        span: Span::new(i, i + 1),
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        label: "too deep here".into(),
                        help: Some(
                            "flatten the expression; curricula need only a few levels".into(),
                        ),
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// What a user calls each rule, for "expected …" messages (exhaustive, as in jj).
fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::WHITESPACE | Rule::COMMENT => "whitespace",
        Rule::file => "a file",
        Rule::block => "a block",
        Rule::name => "a block name",
        Rule::extends | Rule::kw_extends => "`extends`",
        Rule::binding => "a binding `kind name = value`",
        Rule::attr => "an attribute `key = value`",
        Rule::expr | Rule::disj | Rule::conj | Rule::sum => "a value",
        Rule::weighted => "a weighted term",
        Rule::target => "a name or call",
        Rule::call => "a call",
        Rule::arg => "an argument",
        Rule::argname => "an argument name",
        Rule::list => "a list",
        Rule::paren => "`(`",
        Rule::range => "a range",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::chars => "string characters",
        Rule::ident => "a name",
        Rule::kw_or => "`or`",
        Rule::kw_and => "`and`",
        Rule::arrow => "`->`",
        Rule::item => "a block or an attribute",
        Rule::atom => "a value",
        Rule::ident_char => "a name character",
        Rule::keyword => "a keyword",
    }
}

fn from_pest(e: pest::error::Error<Rule>) -> SyntaxError {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let message = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().map(|r| rule_name(*r)).collect();
            names.dedup();
            let mut seen = Vec::new();
            for n in names {
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            match seen.len() {
                0 => "unexpected input".to_string(),
                1 => format!("expected {}", seen[0]),
                _ => {
                    let last = seen.pop().unwrap_or_default();
                    format!("expected {} or {}", seen.join(", "), last)
                }
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let col = match e.line_col {
        pest::error::LineColLocation::Pos((_, c))
        | pest::error::LineColLocation::Span((_, c), _) => c,
    };
    let help = Some(syntax_help(e.line(), col.saturating_sub(1)));
    SyntaxError {
        kind: SyntaxErrorKind::Syntax,
        span: Span::new(pos, pos),
        message,
        label: "here".into(),
        help,
    }
}

/// A hint for a syntax error at char column `col` (0-based) of `line`, from what stands
/// there: the common slips first, then the shape of a file.
fn syntax_help(line: &str, col: usize) -> String {
    let chars: Vec<char> = line.chars().collect();
    let here = chars.get(col).copied();
    // A number glued to letters (`0x10`, `10k`) before the error: the parser took the letters
    // for a new key and fails later on the line. `k3` or `stage2` are names, `1e-3` a number.
    let upto = &chars[..col.min(chars.len())];
    let word_start = |i: usize| {
        let mut j = i;
        while j > 0 && (upto[j - 1].is_alphanumeric() || upto[j - 1] == '_' || upto[j - 1] == '.') {
            j -= 1;
        }
        j
    };
    let glued = upto.windows(2).enumerate().any(|(i, w)| {
        w[0].is_ascii_digit()
            && w[1].is_alphabetic()
            && !matches!(w[1], 'e' | 'E')
            && upto[word_start(i)].is_ascii_digit()
    });
    match here {
        _ if glued && !line.contains('"') => {
            "numbers are decimal, like `16`, `0.5` or `1e-3`; a duration is a string, like `time(\"90m\")`".into()
        }
        Some('\'') => "strings are written in double quotes: `\"…\"`".into(),
        Some(':') => "a key is set with `=`: `key = value`".into(),
        Some(',') => "keys in a block are separated by spaces or new lines, not commas; commas separate list items and call arguments".into(),
        Some('}') | Some('\n') => "every key needs a value: `key = value`".into(),
        None => "the line ends inside a block or expression: is a `}`, `)` or `]` missing?".into(),
        _ => "a file is blocks `KIND [NAME] [extends OTHER] { key = value … }` and `reward NAME = …` lines; grammar/README.md has every form".into(),
    }
}

fn span_of(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn presume<T>(x: Option<T>, what: &str) -> Result<T, SyntaxError> {
    x.ok_or_else(|| SyntaxError {
        kind: SyntaxErrorKind::Internal,
        span: Span::default(),
        message: format!("internal parser error: missing {what}"),
        label: "here".into(),
        help: Some("this is a bug in curric; please report it".into()),
    })
}

fn ident(p: Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(&p),
    }
}

fn build_item(p: Pair<'_, Rule>) -> Result<Item, SyntaxError> {
    let span = span_of(&p);
    match p.as_rule() {
        Rule::block => {
            let mut inner = p.into_inner().peekable();
            let kind = ident(presume(inner.next(), "block kind")?);
            let mut name = None;
            let mut extends = None;
            let mut items = Vec::new();
            for q in inner {
                match q.as_rule() {
                    Rule::name => name = Some(ident(presume(q.into_inner().next(), "name")?)),
                    Rule::extends => {
                        let mut e = q.into_inner();
                        let _kw = e.next();
                        extends = Some(ident(presume(e.next(), "extends name")?));
                    }
                    _ => items.push(build_item(q)?),
                }
            }
            Ok(Item::Block(Block {
                kind,
                name,
                extends,
                items,
                span,
            }))
        }
        Rule::binding => {
            let mut inner = p.into_inner();
            let kind = ident(presume(inner.next(), "binding kind")?);
            let name = ident(presume(inner.next(), "binding name")?);
            let value = build_expr(presume(inner.next(), "binding value")?)?;
            Ok(Item::Binding(Binding {
                kind,
                name,
                value,
                span,
            }))
        }
        Rule::attr => {
            let mut inner = p.into_inner();
            let key = ident(presume(inner.next(), "key")?);
            let value = build_expr(presume(inner.next(), "value")?)?;
            Ok(Item::Attr(Attr { key, value, span }))
        }
        _ => presume(None, "item"),
    }
}

fn number(p: &Pair<'_, Rule>) -> Result<f64, SyntaxError> {
    let text = p.as_str();
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(SyntaxError {
            kind: SyntaxErrorKind::Syntax,
            span: span_of(p),
            message: format!("number `{text}` is out of range"),
            label: "not a finite number".into(),
            help: None,
        }),
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn build_expr(p: Pair<'_, Rule>) -> Result<Expr, SyntaxError> {
    let span = span_of(&p);
    let kind = match p.as_rule() {
        Rule::expr => {
            let mut inner = p.into_inner().filter(|q| q.as_rule() != Rule::arrow);
            let a = build_expr(presume(inner.next(), "value")?)?;
            match inner.next() {
                None => return Ok(a),
                Some(b) => ExprKind::Arrow(Box::new(a), Box::new(build_expr(b)?)),
            }
        }
        Rule::disj | Rule::conj | Rule::sum => {
            let rule = p.as_rule();
            let mut xs = Vec::new();
            for q in p.into_inner() {
                if matches!(q.as_rule(), Rule::kw_or | Rule::kw_and) {
                    continue;
                }
                xs.push(build_expr(q)?);
            }
            if xs.len() == 1 {
                return presume(xs.pop(), "value");
            }
            match rule {
                Rule::disj => ExprKind::Or(xs),
                Rule::conj => ExprKind::And(xs),
                _ => ExprKind::Sum(xs),
            }
        }
        Rule::weighted => {
            let mut inner = p.into_inner();
            let w = number(&presume(inner.next(), "weight")?)?;
            let target = presume(inner.next(), "weighted target")?;
            let t = presume(target.into_inner().next(), "weighted target")?;
            ExprKind::Weighted {
                weight: w,
                target: Box::new(build_expr(t)?),
            }
        }
        Rule::call => {
            let mut inner = p.into_inner();
            let name = ident(presume(inner.next(), "call name")?);
            let mut args = Vec::new();
            for a in inner {
                let mut ai = a.into_inner().peekable();
                let mut aname = None;
                if ai.peek().map(|q| q.as_rule()) == Some(Rule::argname) {
                    let n = presume(ai.next(), "argument name")?;
                    aname = Some(ident(presume(n.into_inner().next(), "argument name")?));
                }
                let value = build_expr(presume(ai.next(), "argument value")?)?;
                args.push(Arg { name: aname, value });
            }
            ExprKind::Call { name, args }
        }
        Rule::list => {
            let mut xs = Vec::new();
            for q in p.into_inner() {
                xs.push(build_expr(q)?);
            }
            ExprKind::List(xs)
        }
        Rule::paren => return build_expr(presume(p.into_inner().next(), "value")?),
        Rule::range => {
            let mut inner = p.into_inner();
            let a = number(&presume(inner.next(), "range start")?)?;
            let b = number(&presume(inner.next(), "range end")?)?;
            ExprKind::Range(a, b)
        }
        Rule::number => ExprKind::Number(number(&p)?),
        Rule::string => {
            let raw = p.into_inner().next().map(|q| q.as_str()).unwrap_or("");
            ExprKind::Str(unescape(raw))
        }
        Rule::ident => ExprKind::Ident(p.as_str().to_string()),
        _ => return presume(None, "value"),
    };
    Ok(Expr { kind, span })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(src: &str) -> String {
        let f = parse(&format!("x = {src}")).expect("parses");
        match &f.items[0] {
            Item::Attr(a) => format!("{}", a.value),
            other => panic!("not an attr: {other:?}"),
        }
    }

    macro_rules! roundtrip {
        ($name:ident, $src:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(expr($src), $want);
            }
        };
    }

    roundtrip!(number, "1e-6", "0.000001");
    roundtrip!(negative, "-2.5", "-2.5");
    roundtrip!(string_escape, r#""a\"b""#, r#""a\"b""#);
    roundtrip!(list, "[easy, medium,]", "[easy, medium]");
    roundtrip!(range, "0.1 .. 0.9", "0.1..0.9");
    roundtrip!(range_tight, "0..1", "0..1");
    roundtrip!(hyphen_ident, "token-mean", "token-mean");
    roundtrip!(
        reward_sum,
        "0.9 accuracy(extract = boxed) + 0.1 format(think_then_boxed)",
        "0.9 accuracy(extract = boxed) + 0.1 format(think_then_boxed)"
    );
    roundtrip!(
        precedence,
        "steps(10) or epochs(1) and min_steps(3)",
        "steps(10) or epochs(1) and min_steps(3)"
    );
    roundtrip!(
        parens_kept,
        "(steps(1) or epochs(2)) and min_steps(3)",
        "(steps(1) or epochs(2)) and min_steps(3)"
    );
    roundtrip!(
        arrow,
        "1 easy -> 0.5 easy + 0.5 hard",
        "1 easy -> 0.5 easy + 0.5 hard"
    );
    roundtrip!(arrow_no_space, "a->b", "a -> b");
    roundtrip!(keyword_prefix_is_ident, "order", "order");

    #[test]
    fn weight_does_not_cross_lines() {
        let f = parse("seed = 7\nstage a { }").expect("parses");
        assert_eq!(f.items.len(), 2);
        assert!(matches!(f.items[1], Item::Block(_)));
    }

    #[test]
    fn number_then_attr_on_one_line() {
        let f = parse("source s { n = 48  seed = 101 }").expect("parses");
        let Item::Block(b) = &f.items[0] else {
            panic!("block")
        };
        assert_eq!(b.items.len(), 2);
    }

    #[test]
    fn block_with_extends_and_binding() {
        let f = parse("stage b extends a { lr = 1 }\nreward r = accuracy").expect("parses");
        let Item::Block(b) = &f.items[0] else {
            panic!("block")
        };
        assert_eq!(b.kind.name, "stage");
        assert_eq!(b.name.as_ref().map(|n| n.name.as_str()), Some("b"));
        assert_eq!(b.extends.as_ref().map(|n| n.name.as_str()), Some("a"));
        assert_eq!(b.span, Span::new(0, 28));
        assert!(matches!(f.items[1], Item::Binding(_)));
    }

    #[test]
    fn spans_point_at_source() {
        let src = "lr = 1e-6";
        let f = parse(src).expect("parses");
        let Item::Attr(a) = &f.items[0] else {
            panic!("attr")
        };
        assert_eq!(&src[a.value.span.start..a.value.span.end], "1e-6");
        assert_eq!(&src[a.key.span.start..a.key.span.end], "lr");
    }

    #[test]
    fn error_names_what_was_expected() {
        let e = parse("lr = ").unwrap_err();
        assert_eq!(e.span.start, 5);
        assert!(e.message.starts_with("expected"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let src = format!("x = {}1{}", "(".repeat(10_000), ")".repeat(10_000));
        let e = parse(&src).unwrap_err();
        assert_eq!(e.kind, SyntaxErrorKind::TooDeep);
    }

    #[test]
    fn huge_number_is_an_error() {
        let e = parse("x = 1e999").unwrap_err();
        assert!(e.message.contains("out of range"));
    }
}
