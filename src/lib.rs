//! curric: a declarative curriculum engine for RL post-training of vision-language models.
//!
//! The pipeline shows in the module tree:
//! `syntax` (pest grammar → spanned AST) → `check` (names, axes, numbers → diagnostics, producing
//! the `spec` vocabulary that every later layer consumes unchanged)
//! → `plan` (petgraph DAG of phases, pure data) → `exec` (the only layer that touches disk or
//! device). Beside `exec` sit the layers it drives: `data` (the built-in suite, JSONL sources,
//! samplers, pass rates), `model` (policies on candle), `rollout` (group sampling + scoring),
//! `reward` (verifiable reward terms) and `grpo` (the loss, advantages and optimiser).

pub mod bench;
pub mod check;
pub mod cli;
pub mod data;
pub mod exec;
pub mod grpo;
pub mod model;
pub mod out;
pub mod plan;
pub mod reward;
pub mod rollout;
pub mod spec;
pub mod syntax;
