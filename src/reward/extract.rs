//! Reading final answers out of completions, and comparing them with reference answers.

/// Contents of the last `\boxed{…}`, with nested braces; `None` if absent or unbalanced.
pub fn boxed(text: &str) -> Option<String> {
    let mut found = None;
    let mut from = 0;
    while let Some(pos) = text[from..].find("\\boxed{") {
        let start = from + pos + "\\boxed{".len();
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in text[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(start + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(e) => {
                found = Some(text[start..e].trim().to_string());
                from = e + 1;
            }
            None => break,
        }
    }
    found
}

/// Contents of the last `<answer>…</answer>`.
pub fn answer_tag(text: &str) -> Option<String> {
    let close = text.rfind("</answer>")?;
    let open = text[..close].rfind("<answer>")?;
    Some(text[open + "<answer>".len()..close].trim().to_string())
}

/// What follows the last "The final answer is:" (case-insensitive) on its line.
pub fn final_answer(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    // Lowercasing may change byte offsets for some scripts; only trust an ASCII match.
    if lower.len() != text.len() {
        return None;
    }
    let key = "the final answer is";
    let pos = lower.rfind(key)? + key.len();
    let rest = text[pos..].trim_start_matches([':', ' ', '*']);
    let line = rest.lines().next().unwrap_or("").trim();
    let line = line.trim_end_matches(['.', '*']).trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// The last number in the text (integers, decimals, fractions, thousands separators).
pub fn last_number(text: &str) -> Option<String> {
    let re = number_re();
    re.find_iter(text).last().map(|m| m.as_str().to_string())
}

fn number_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?").expect("valid regex")
    })
}

/// The answer by `method`: boxed, answer_tag, final_answer, last_number, or auto (the first of
/// those found, in that order).
pub fn extract(text: &str, method: &str) -> Option<String> {
    match method {
        "boxed" => boxed(text),
        "answer_tag" => answer_tag(text),
        "final_answer" => final_answer(text),
        "last_number" => last_number(text),
        _ => boxed(text)
            .or_else(|| answer_tag(text))
            .or_else(|| final_answer(text))
            .or_else(|| last_number(text)),
    }
}

/// Parses "3", "3.0", "-2", "1/2", "1,000", "\frac{1}{2}", "$5", "50%" (as 50) into a number.
pub fn parse_number(s: &str) -> Option<f64> {
    let mut t: String = s.trim().chars().filter(|c| !c.is_whitespace()).collect();
    for p in ["$", "\\$", "\\%", "%", "\\(", "\\)", "\\!"] {
        t = t.replace(p, "");
    }
    let t = t.trim_end_matches('.').trim_start_matches('+');
    if let Some(inner) = t
        .strip_prefix("\\frac{")
        .or_else(|| t.strip_prefix("\\dfrac{"))
        .or_else(|| t.strip_prefix("-\\frac{").map(|_| ""))
    {
        if inner.is_empty() {
            return parse_number(&t[1..]).map(|x| -x);
        }
        let (a, b) = inner.strip_suffix('}')?.split_once("}{")?;
        return Some(parse_number(a)? / parse_number(b)?).filter(|x| x.is_finite());
    }
    if let Some((a, b)) = t.split_once('/') {
        let (a, b) = (parse_plain(a)?, parse_plain(b)?);
        return Some(a / b).filter(|x| x.is_finite());
    }
    parse_plain(t)
}

fn parse_plain(t: &str) -> Option<f64> {
    let t = if number_re()
        .find(t)
        .is_some_and(|m| m.start() == 0 && m.end() == t.len() && t.contains(','))
    {
        t.replace(',', "")
    } else {
        t.to_string()
    };
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) {
        return None;
    }
    t.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Numbers equal within relative tolerance `tol` (absolute for magnitudes below 1).
pub fn numeric_eq(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

/// Case- and whitespace-insensitive equality, ignoring a trailing period and `\text{}`.
pub fn normalize(s: &str) -> String {
    let s = s.replace("\\text{", "").replace("\\mathrm{", "");
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(|c| c.to_lowercase())
        .collect();
    let s = if s.len() != s.trim_end_matches('.').len() {
        s.trim_end_matches('.').to_string()
    } else {
        s
    };
    // `\text{red}` leaves a stray closing brace.
    if s.matches('}').count() > s.matches('{').count() {
        s.trim_end_matches('}').to_string()
    } else {
        s
    }
}

/// The multiple-choice letter of "B", "(B)", "B.", "b)", "B: text", "(B) text".
pub fn choice_letter(s: &str) -> Option<char> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^\s*(?:option\s+)?\(?([A-Za-z])\)?(?:[.):]|\s|$)").expect("valid regex")
    });
    let c = re.captures(s)?.get(1)?.as_str().chars().next()?;
    Some(c.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractors() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "x \\boxed{3} y \\boxed{\\frac{1}{2}}",
                "boxed",
                Some("\\frac{1}{2}"),
            ),
            ("\\boxed{a{b}c}", "boxed", Some("a{b}c")),
            ("\\boxed{3", "boxed", None),
            ("", "boxed", None),
            ("<answer> 42 </answer>", "answer_tag", Some("42")),
            (
                "<answer>1</answer><answer>2</answer>",
                "answer_tag",
                Some("2"),
            ),
            ("<answer>1", "answer_tag", None),
            (
                "### The final answer is: **B**.\nmore",
                "final_answer",
                Some("B"),
            ),
            ("the final answer is 7", "final_answer", Some("7")),
            ("The final answer is:", "final_answer", None),
            ("we get 1,234 then -5.5 end", "last_number", Some("-5.5")),
            ("no digits", "last_number", None),
            ("<answer>4</answer> \\boxed{5}", "auto", Some("5")),
            ("<answer>4</answer> 9", "auto", Some("4")),
            ("so 3 and 8", "auto", Some("8")),
        ];
        for (text, m, want) in cases {
            assert_eq!(extract(text, m).as_deref(), *want, "{m} on {text:?}");
        }
    }

    #[test]
    fn numbers() {
        let cases: &[(&str, Option<f64>)] = &[
            ("3", Some(3.0)),
            ("3.0", Some(3.0)),
            ("-2", Some(-2.0)),
            ("1/2", Some(0.5)),
            ("1,000", Some(1000.0)),
            ("12,345.5", Some(12345.5)),
            ("\\frac{3}{4}", Some(0.75)),
            ("$5", Some(5.0)),
            ("+7.", Some(7.0)),
            ("1/0", None),
            ("red", None),
            ("", None),
            ("3 apples", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_number(s), *want, "{s:?}");
        }
        assert!(numeric_eq(3.0, 3.0000001, 1e-6));
        assert!(!numeric_eq(3.0, 3.01, 1e-6));
        assert!(numeric_eq(1e6, 1e6 + 0.5, 1e-6));
    }

    #[test]
    fn letters_and_normalization() {
        for s in ["B", "(B)", "B.", "b)", "B: a cat", "(b) a cat", "option B"] {
            assert_eq!(choice_letter(s), Some('B'), "{s:?}");
        }
        assert_eq!(choice_letter("Blue"), None);
        assert_eq!(choice_letter(""), None);
        assert_eq!(normalize(" Red  Circle. "), "redcircle");
        assert_eq!(normalize("\\text{Yes}"), "yes");
    }
}
