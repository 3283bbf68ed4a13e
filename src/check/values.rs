//! Reading typed values out of expressions. Each reader reports its own diagnostic and
//! returns `None`, so the caller keeps going and every problem shows at once.

use crate::syntax::{Arg, Expr, ExprKind, Ident, Span};

use super::diagnostic::{suggest, Diag, ErrorKind};

pub struct Ctx {
    pub diags: Vec<Diag>,
}

/// `token-mean` and `token_mean` name the same choice.
pub fn norm(word: &str) -> String {
    word.replace('-', "_")
}

impl Ctx {
    pub fn new() -> Self {
        Ctx { diags: Vec::new() }
    }

    pub fn push(&mut self, d: Diag) {
        self.diags.push(d);
    }

    pub fn type_error(&mut self, e: &Expr, key: &str, want: &str) {
        self.push(
            Diag::error(
                ErrorKind::Type,
                e.span,
                format!("`{key}` expects {want}, found {}", e.kind.describe()),
            )
            .label(format!("expected {want}")),
        );
    }

    pub fn out_of_range(
        &mut self,
        span: Span,
        key: &str,
        value: impl std::fmt::Display,
        want: &str,
    ) {
        self.push(
            Diag::error(
                ErrorKind::OutOfRange,
                span,
                format!("`{key}` = {value} is out of range"),
            )
            .label(format!("must be {want}"))
            .help(format!("`{key}` must be {want}")),
        );
    }

    pub fn num(&mut self, e: &Expr, key: &str) -> Option<f64> {
        match e.kind {
            ExprKind::Number(n) => Some(n),
            _ => {
                self.type_error(e, key, "a number");
                None
            }
        }
    }

    /// A number checked by `ok`, described by `want` ("> 0", "in (0, 1)").
    pub fn num_in(
        &mut self,
        e: &Expr,
        key: &str,
        want: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let n = self.num(e, key)?;
        if ok(n) {
            Some(n)
        } else {
            self.out_of_range(e.span, key, n, want);
            None
        }
    }

    pub fn uint(&mut self, e: &Expr, key: &str) -> Option<u64> {
        let n = self.num(e, key)?;
        if n >= 0.0 && n.fract() == 0.0 && n <= 9.0e15 {
            Some(n as u64)
        } else {
            self.out_of_range(e.span, key, n, "a whole number ≥ 0");
            None
        }
    }

    pub fn uint_min(&mut self, e: &Expr, key: &str, min: u64) -> Option<u64> {
        let n = self.uint(e, key)?;
        if n >= min {
            Some(n)
        } else {
            self.out_of_range(e.span, key, n, &format!("≥ {min}"));
            None
        }
    }

    pub fn string(&mut self, e: &Expr, key: &str) -> Option<String> {
        match &e.kind {
            ExprKind::Str(s) => Some(s.clone()),
            _ => {
                self.type_error(e, key, "a string");
                None
            }
        }
    }

    pub fn word<'e>(&mut self, e: &'e Expr, key: &str) -> Option<&'e str> {
        match &e.kind {
            ExprKind::Ident(s) => Some(s),
            _ => {
                self.type_error(e, key, "a name");
                None
            }
        }
    }

    /// One of `options`, by name; returns the index.
    pub fn choice(&mut self, e: &Expr, key: &str, options: &[&str]) -> Option<usize> {
        let w = self.word(e, key)?;
        let w = norm(w);
        if let Some(i) = options.iter().position(|o| *o == w) {
            return Some(i);
        }
        let shown: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
        self.push(
            Diag::error(
                ErrorKind::UnknownValue,
                e.span,
                format!("unknown value `{w}` for `{key}`"),
            )
            .label("not one of the allowed values")
            .help(
                suggest(&w, options.iter().copied())
                    .unwrap_or_else(|| format!("`{key}` is one of {}", shown.join(", "))),
            ),
        );
        None
    }

    pub fn boolean(&mut self, e: &Expr, key: &str) -> Option<bool> {
        self.choice(e, key, &["false", "true"]).map(|i| i == 1)
    }

    /// A name or a list of names.
    pub fn names(&mut self, e: &Expr, key: &str) -> Option<Vec<Ident>> {
        match &e.kind {
            ExprKind::Ident(s) => Some(vec![Ident {
                name: s.clone(),
                span: e.span,
            }]),
            ExprKind::List(xs) => {
                let mut out = Vec::new();
                for x in xs {
                    match &x.kind {
                        ExprKind::Ident(s) => out.push(Ident {
                            name: s.clone(),
                            span: x.span,
                        }),
                        _ => {
                            self.type_error(x, key, "a name");
                            return None;
                        }
                    }
                }
                Some(out)
            }
            _ => {
                self.type_error(e, key, "a name or a list of names");
                None
            }
        }
    }

    pub fn strings(&mut self, e: &Expr, key: &str) -> Option<Vec<String>> {
        match &e.kind {
            ExprKind::Str(s) => Some(vec![s.clone()]),
            ExprKind::List(xs) => {
                let mut out = Vec::new();
                for x in xs {
                    out.push(self.string(x, key)?);
                }
                Some(out)
            }
            _ => {
                self.type_error(e, key, "a string or a list of strings");
                None
            }
        }
    }

    /// `lo .. hi` inside [0, 1].
    pub fn band(&mut self, e: &Expr, key: &str) -> Option<(f64, f64)> {
        match e.kind {
            ExprKind::Range(lo, hi) => {
                if (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && lo <= hi {
                    Some((lo, hi))
                } else {
                    self.out_of_range(
                        e.span,
                        key,
                        format!("{lo}..{hi}"),
                        "a range lo..hi with 0 ≤ lo ≤ hi ≤ 1",
                    );
                    None
                }
            }
            _ => {
                self.type_error(e, key, "a range `lo .. hi`");
                None
            }
        }
    }

    /// Binds a call's arguments to `params` (positional in order, or by name). Returns one
    /// slot per parameter; `None` when an argument is wrong (already reported).
    pub fn bind<'e>(
        &mut self,
        call: &Ident,
        args: &'e [Arg],
        params: &[&str],
        required: &[&str],
    ) -> Option<Vec<Option<&'e Expr>>> {
        let mut slots: Vec<Option<&Expr>> = vec![None; params.len()];
        let mut ok = true;
        let mut next = 0;
        for a in args {
            match &a.name {
                None => {
                    if next >= params.len() {
                        self.push(
                            Diag::error(
                                ErrorKind::Type,
                                a.value.span,
                                format!(
                                    "`{}` takes at most {} argument{}",
                                    call.name,
                                    params.len(),
                                    if params.len() == 1 { "" } else { "s" }
                                ),
                            )
                            .label("extra argument")
                            .help(signature(&call.name, params)),
                        );
                        ok = false;
                        continue;
                    }
                    slots[next] = Some(&a.value);
                    next += 1;
                }
                Some(n) => match params.iter().position(|p| *p == n.name) {
                    Some(i) if slots[i].is_some() => {
                        self.push(
                            Diag::error(
                                ErrorKind::DuplicateKey,
                                n.span,
                                format!("argument `{}` given twice", n.name),
                            )
                            .label("given again here"),
                        );
                        ok = false;
                    }
                    Some(i) => slots[i] = Some(&a.value),
                    None => {
                        self.push(
                            Diag::error(
                                ErrorKind::UnknownParam,
                                n.span,
                                format!("`{}` has no parameter `{}`", call.name, n.name),
                            )
                            .label("unknown parameter")
                            .help(
                                suggest(&n.name, params.iter().copied())
                                    .unwrap_or_else(|| signature(&call.name, params)),
                            ),
                        );
                        ok = false;
                    }
                },
            }
        }
        for r in required {
            if let Some(i) = params.iter().position(|p| p == r) {
                if slots[i].is_none() {
                    self.push(
                        Diag::error(
                            ErrorKind::MissingKey,
                            call.span,
                            format!("`{}` needs the argument `{r}`", call.name),
                        )
                        .label(format!("`{r}` missing"))
                        .help(signature(&call.name, params)),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(slots)
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}

pub fn signature(name: &str, params: &[&str]) -> String {
    if params.is_empty() {
        format!("`{name}` takes no arguments")
    } else {
        format!("usage: {name}({})", params.join(", "))
    }
}
