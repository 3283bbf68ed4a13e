//! The spanned syntax tree. Nothing here has meaning yet: `check` decides what a block,
//! a key or a call stands for.

use std::fmt;

/// A byte range into the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.start, s.len()).into()
    }
}

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Block(Block),
    Binding(Binding),
    Attr(Attr),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Block(b) => b.span,
            Item::Binding(b) => b.span,
            Item::Attr(a) => a.span,
        }
    }
}

/// `kind name extends parent { items }`; name and parent are optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub kind: Ident,
    pub name: Option<Ident>,
    pub extends: Option<Ident>,
    pub items: Vec<Item>,
    pub span: Span,
}

/// `kind name = value`, e.g. `reward method_b = 0.9 accuracy + 0.1 format`.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub kind: Ident,
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `key = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Number(f64),
    Str(String),
    Ident(String),
    List(Vec<Expr>),
    /// `lo .. hi`, inclusive at both ends.
    Range(f64, f64),
    Call {
        name: Ident,
        args: Vec<Arg>,
    },
    /// `0.4 clip_score(0.4)`: a weight and a call or name.
    Weighted {
        weight: f64,
        target: Box<Expr>,
    },
    /// `a + b + c`, at least two terms.
    Sum(Vec<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// `a -> b`: a schedule from one value to another.
    Arrow(Box<Expr>, Box<Expr>),
}

/// A call argument, positional or `name = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl ExprKind {
    /// What a user would call this kind of value, for "expected a number, found a list".
    pub fn describe(&self) -> &'static str {
        match self {
            ExprKind::Number(_) => "a number",
            ExprKind::Str(_) => "a string",
            ExprKind::Ident(_) => "a name",
            ExprKind::List(_) => "a list",
            ExprKind::Range(..) => "a range",
            ExprKind::Call { .. } => "a call",
            ExprKind::Weighted { .. } => "a weighted term",
            ExprKind::Sum(_) => "a sum",
            ExprKind::And(_) => "an `and` condition",
            ExprKind::Or(_) => "an `or` condition",
            ExprKind::Arrow(..) => "a schedule `a -> b`",
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join(f: &mut fmt::Formatter<'_>, xs: &[Expr], sep: &str) -> fmt::Result {
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write!(f, "{x}")?;
            }
            Ok(())
        }
        match &self.kind {
            ExprKind::Number(n) => write!(f, "{n}"),
            ExprKind::Str(s) => write!(f, "{s:?}"),
            ExprKind::Ident(s) => f.write_str(s),
            ExprKind::List(xs) => {
                f.write_str("[")?;
                join(f, xs, ", ")?;
                f.write_str("]")
            }
            ExprKind::Range(a, b) => write!(f, "{a}..{b}"),
            ExprKind::Call { name, args } => {
                write!(f, "{}(", name.name)?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if let Some(n) = &a.name {
                        write!(f, "{} = ", n.name)?;
                    }
                    write!(f, "{}", a.value)?;
                }
                f.write_str(")")
            }
            ExprKind::Weighted { weight, target } => write!(f, "{weight} {target}"),
            ExprKind::Sum(xs) => join(f, xs, " + "),
            ExprKind::And(xs) => {
                // `and` binds tighter than `or`, so an `or` inside needs its parentheses back.
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    match x.kind {
                        ExprKind::Or(_) => write!(f, "({x})")?,
                        _ => write!(f, "{x}")?,
                    }
                }
                Ok(())
            }
            ExprKind::Or(xs) => join(f, xs, " or "),
            ExprKind::Arrow(a, b) => write!(f, "{a} -> {b}"),
        }
    }
}
