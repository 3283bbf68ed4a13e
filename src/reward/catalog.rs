//! The reward terms curric knows, with their parameters. Pure data: `check` reads it to
//! validate reward sets, `reward::build` reads it to fill defaults.
//!
//! In a plan, a term's arguments are a JSON object with every parameter of the term present
//! (defaults filled in), keyed by the parameter names below.

/// What a parameter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Any finite number.
    Number,
    /// A non-negative integer.
    Int,
    /// A quoted string.
    Str,
    /// A list of quoted strings.
    StrList,
    /// One of a fixed set of bare words.
    Choice(&'static [&'static str]),
}

/// A parameter's default, in the parameter's kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// The parameter must be given.
    Required,
    /// The parameter may be left out and is then absent from the plan.
    Absent,
    Number(f64),
    Str(&'static str),
    StrList(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct ParamInfo {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: Default,
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct TermInfo {
    pub name: &'static str,
    /// Parameters in positional order: `length_cap(512)` fills the first.
    pub params: &'static [ParamInfo],
    pub help: &'static str,
}

pub const EXTRACTORS: &[&str] = &["auto", "boxed", "answer_tag", "final_answer", "last_number"];
pub const COMPARISONS: &[&str] = &["auto", "numeric", "exact", "choice"];
pub const FORMAT_STYLES: &[&str] = &["think_then_boxed", "think_then_answer", "headers", "regex"];

/// Method A's response headers, the default for `format(headers)`.
pub const PEBR_HEADERS: &[&str] = &[
    "### Image Description:",
    "### Rationales:",
    "### Let's think step by step.",
    "### The final answer is:",
];

pub const TERMS: &[TermInfo] = &[
    TermInfo {
        name: "accuracy",
        help: "1 if the extracted final answer equals the sample's answer, else 0",
        params: &[
            ParamInfo {
                name: "extract",
                kind: ParamKind::Choice(EXTRACTORS),
                default: Default::Str("auto"),
                help: "where the answer is read from: \\boxed{}, <answer>…</answer>, \"The final answer is:\", the last number, or the first of these found (auto)",
            },
            ParamInfo {
                name: "compare",
                kind: ParamKind::Choice(COMPARISONS),
                default: Default::Str("auto"),
                help: "numeric (with tolerance), exact (case- and space-insensitive), choice (multiple-choice letter), or auto (numeric when both parse as numbers, else exact)",
            },
            ParamInfo {
                name: "tolerance",
                kind: ParamKind::Number,
                default: Default::Number(1e-6),
                help: "relative tolerance of numeric comparison",
            },
        ],
    },
    TermInfo {
        name: "format",
        help: "1 if the completion has the required structure, else 0",
        params: &[
            ParamInfo {
                name: "style",
                kind: ParamKind::Choice(FORMAT_STYLES),
                default: Default::Str("think_then_boxed"),
                help: "<think>…</think> then \\boxed{}, <think>…</think> then <answer>…</answer>, ordered headers, or a regex",
            },
            ParamInfo {
                name: "headers",
                kind: ParamKind::StrList,
                default: Default::StrList(PEBR_HEADERS),
                help: "headers that must appear in order (style headers)",
            },
            ParamInfo {
                name: "pattern",
                kind: ParamKind::Str,
                default: Default::Absent,
                help: "a regex the whole completion must match (style regex)",
            },
        ],
    },
    TermInfo {
        name: "soft_overlong",
        help: "DAPO's soft overlong penalty: 0 up to max - buffer tokens, then linear down to -1 at max",
        params: &[
            ParamInfo {
                name: "max",
                kind: ParamKind::Int,
                default: Default::Required,
                help: "the length (tokens) at which the penalty reaches -1",
            },
            ParamInfo {
                name: "buffer",
                kind: ParamKind::Int,
                default: Default::Required,
                help: "how many tokens before max the penalty starts",
            },
        ],
    },
    TermInfo {
        name: "length_cap",
        help: "1 up to max tokens, then max/len",
        params: &[ParamInfo {
            name: "max",
            kind: ParamKind::Int,
            default: Default::Required,
            help: "the length (tokens) above which the reward decays",
        }],
    },
    TermInfo {
        name: "keyword_recall",
        help: "share of the sample's key_words found in the completion, case-insensitive",
        params: &[],
    },
    TermInfo {
        name: "scene_f1",
        help: "F1 of the objects the completion names against the built-in scene's ground truth",
        params: &[],
    },
    TermInfo {
        name: "clip_score",
        help: "CLIP/SigLIP cosine similarity s of the image and the completion's description: 1 if s >= threshold else s/threshold",
        params: &[
            ParamInfo {
                name: "threshold",
                kind: ParamKind::Number,
                default: Default::Number(0.4),
                help: "similarity at which the reward saturates",
            },
            ParamInfo {
                name: "model",
                kind: ParamKind::Str,
                default: Default::Absent,
                help: "directory of a CLIP checkpoint (config.json, model.safetensors, tokenizer.json)",
            },
        ],
    },
];

/// The term with this name, if curric knows it.
pub fn term(name: &str) -> Option<&'static TermInfo> {
    TERMS.iter().find(|t| t.name == name)
}
