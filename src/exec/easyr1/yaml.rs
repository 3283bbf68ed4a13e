//! A small YAML writer for EasyR1 configs: block mappings, flow lists of scalars, and a
//! comment after any key. EasyR1 reads configs with PyYAML (YAML 1.1) through OmegaConf, so
//! floats are written the way YAML 1.1 recognises them (`1.0e-06`, never `1e-6`, which it
//! reads as a string) and strings are quoted unless they are plainly words or paths.

use std::collections::BTreeMap;

use serde_json::Value;

/// `root` as YAML; `notes` maps a dotted key path to a comment written after it.
pub fn to_yaml(root: &Value, notes: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    if let Value::Object(m) = root {
        write_map(m, "", 0, notes, &mut out);
    }
    out
}

fn write_map(
    m: &serde_json::Map<String, Value>,
    prefix: &str,
    indent: usize,
    notes: &BTreeMap<String, String>,
    out: &mut String,
) {
    for (k, v) in m {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let pad = " ".repeat(indent);
        let note = notes
            .get(&path)
            .map(|n| format!("  # {n}"))
            .unwrap_or_default();
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push_str(&format!("{pad}{k}:{note}\n"));
                write_map(inner, &path, indent + 2, notes, out);
            }
            _ => out.push_str(&format!("{pad}{k}: {}{note}\n", scalar(v))),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if !n.is_i64() && !n.is_u64() => float(x),
            _ => n.to_string(),
        },
        Value::String(s) => string(s),
        Value::Array(a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(", ")),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", string(k), scalar(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A float as YAML 1.1 reads it: a digit and a dot before any exponent, and a signed
/// exponent.
pub fn float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            ".nan".into()
        } else if x > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    if x == x.trunc() && x.abs() < 1e15 {
        return format!("{x:.1}");
    }
    if (1e-4..1e15).contains(&x.abs()) {
        return format!("{x}");
    }
    let e = format!("{x:e}");
    let (mantissa, exp) = e.split_once('e').expect("`{:e}` has an exponent");
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    let exp = match exp.strip_prefix('-') {
        Some(d) => format!("-{d:0>2}"),
        None => format!("+{exp:0>2}"),
    };
    format!("{mantissa}e{exp}")
}

fn string(s: &str) -> String {
    const WORDS: &[&str] = &[
        "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n",
    ];
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '.' || c == '/' || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        serde_json::to_string(s).expect("a string serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_back_as_floats_under_yaml_1_1() {
        assert_eq!(float(1e-6), "1.0e-06");
        assert_eq!(float(2.5e-5), "2.5e-05");
        assert_eq!(float(1e-4), "0.0001");
        assert_eq!(float(0.2), "0.2");
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(-3.0), "-3.0");
        assert_eq!(float(1e20), "1.0e+20");
        assert_eq!(float(1e9), "1000000000.0");
    }

    #[test]
    fn strings_are_quoted_when_yaml_would_read_them_otherwise() {
        assert_eq!(string("token"), "token");
        assert_eq!(
            string("./reward.py:compute_score"),
            "\"./reward.py:compute_score\""
        );
        assert_eq!(
            string("Qwen/Qwen2.5-VL-3B-Instruct"),
            "Qwen/Qwen2.5-VL-3B-Instruct"
        );
        assert_eq!(string("no"), "\"no\"");
        assert_eq!(string("1e5"), "\"1e5\"");
        assert_eq!(string(""), "\"\"");
        assert_eq!(string("a b"), "\"a b\"");
    }

    #[test]
    fn nested_maps_lists_and_notes() {
        let v = serde_json::json!({"a": {"b": 1, "c": [1.5, "x"], "d": {}}, "e": null});
        let notes = BTreeMap::from([("a.b".to_string(), "curric: mu".to_string())]);
        assert_eq!(
            to_yaml(&v, &notes),
            "a:\n  b: 1  # curric: mu\n  c: [1.5, x]\n  d: {}\ne: null\n"
        );
    }
}
