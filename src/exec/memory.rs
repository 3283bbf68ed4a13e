//! `curric plan`'s memory table: each training phase's parameters (trainable / frozen) and its
//! estimated peak memory, against what the plan's device has. The model's shape comes from
//! its config files (or, for the built-in presets, from building it), never from its weights.

use std::fmt::Write as _;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::model::checkpoint;
use crate::model::config::{self, VlmConfig};
use crate::model::footprint::{Footprint, ModelShape, Workload, TYPICAL_IMAGE};
use crate::model::qwen_vl::{self, Family};
use crate::model::qwen_vl_image::ImageProcessorConfig;
use crate::model::vlm::Vlm;
use crate::model::ModelError;
use crate::plan::{Phase, Plan};
use crate::spec::{ModelSpec, Settings};

/// Text tokens a plan assumes per prompt, besides its image.
pub const PROMPT_TEXT_TOKENS: u64 = 256;

/// The shape of the policy `model` names.
pub fn shape_of(model: &ModelSpec) -> Result<ModelShape, ModelError> {
    let dir = match model {
        ModelSpec::TinyVlm { preset } => {
            let vocab = crate::model::tokenizer::build(&crate::data::suite::vocabulary())
                .get_vocab_size(true);
            return built(&config::preset(preset, vocab)?);
        }
        ModelSpec::Local { path } => checkpoint::resolve(path, &hf_hub::Cache::from_env())?,
        ModelSpec::Hub { repo } => checkpoint::resolve(repo, &hf_hub::Cache::from_env())?,
    };
    let read = |name: &str| -> Result<String, ModelError> {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| ModelError::io(p, e))
    };
    let bad = |name: &str, message: String| ModelError::Config {
        path: dir.join(name),
        message,
    };
    let text = read("config.json")?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad("config.json", e.to_string()))?;
    if Family::detect(&v).is_some() {
        let cfg = qwen_vl::Config::from_json(&v).map_err(|m| bad("config.json", m))?;
        let images = ImageProcessorConfig::from_json(&read("preprocessor_config.json")?)?;
        return Ok(ModelShape::qwen_vl(&cfg, &images));
    }
    let cfg = VlmConfig::from_json(&text).map_err(|m| bad("config.json", m))?;
    match cfg.vision {
        Some(_) => built(&cfg),
        None => Ok(ModelShape::qwen2(&cfg.decoder)),
    }
}

/// The built-in model's shape from its variables.
fn built(cfg: &VlmConfig) -> Result<ModelShape, ModelError> {
    let varmap = VarMap::new();
    Vlm::new(
        cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let vars: Vec<(String, u64)> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(n, v)| (n.clone(), v.elem_count() as u64))
        .collect();
    Ok(ModelShape::from_vars(cfg, vars))
}

/// Total memory of `device`: the machine's for `cpu`, the GPU's for `cuda:N` (when built
/// with CUDA). None when it cannot be read.
pub fn device_memory(device: &str) -> Option<u64> {
    let d = device.trim().to_ascii_lowercase();
    if d == "cpu" {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        return Some(kb * 1024);
    }
    let ordinal = match d.as_str() {
        "cuda" => 0,
        _ => d.strip_prefix("cuda:")?.parse().ok()?,
    };
    cuda_memory(ordinal)
}

/// Device memory in use on `cuda:N` (total minus free), in a CUDA build; none elsewhere.
pub fn device_memory_used(device: &str) -> Option<u64> {
    let d = device.trim().to_ascii_lowercase();
    let ordinal = match d.as_str() {
        "cuda" => 0,
        _ => d.strip_prefix("cuda:")?.parse().ok()?,
    };
    cuda_used(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_used(ordinal: usize) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    let (free, total) = CudaContext::new(ordinal).ok()?.mem_get_info().ok()?;
    Some((total - free) as u64)
}

#[cfg(not(feature = "cuda"))]
fn cuda_used(_ordinal: usize) -> Option<u64> {
    None
}

#[cfg(feature = "cuda")]
fn cuda_memory(ordinal: usize) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    let ctx = CudaContext::new(ordinal).ok()?;
    ctx.total_mem().ok().map(|b| b as u64)
}

#[cfg(not(feature = "cuda"))]
fn cuda_memory(_ordinal: usize) -> Option<u64> {
    None
}

/// What one step of a training phase runs; none for phases that do not train.
pub fn workload(p: &Phase, shape: &ModelShape) -> Option<Workload> {
    let images = u64::from(shape.vision.is_some());
    let prompt = PROMPT_TEXT_TOKENS + images * shape.image_tokens;
    let bytes = match p.dtype {
        crate::spec::Dtype::F32 => 4,
        crate::spec::Dtype::Bf16 => 2,
    };
    match &p.settings {
        Settings::Grpo(g) => Some(Workload {
            rollout_rows: g.group_size * g.prompts_per_step,
            micro_batch: g.micro_batch.min(g.group_size * g.prompts_per_step),
            prompt_tokens: prompt,
            new_tokens: g.max_new_tokens,
            images_per_row: images,
            reference: g.beta > 0.0,
            bytes,
        }),
        Settings::Sft(s) => Some(Workload {
            rollout_rows: 0,
            micro_batch: s.batch_size,
            prompt_tokens: prompt,
            new_tokens: s.max_tokens,
            images_per_row: images,
            reference: false,
            bytes,
        }),
        _ => None,
    }
}

/// Bytes with a binary unit.
pub fn human_bytes(b: u64) -> String {
    if b == 0 {
        return "-".into();
    }
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// The memory table of `plan`'s training phases, with a warning line for each phase that needs
/// more than the device has.
pub fn render(plan: &Plan) -> String {
    let shape = match shape_of(&plan.model) {
        Ok(s) => s,
        Err(e) => return format!("memory: cannot read the model's shape: {e}\n"),
    };
    let mut rows = vec![[
        "phase",
        "trainable",
        "frozen",
        "weights",
        "grads",
        "AdamW",
        "reference",
        "KV cache",
        "activations",
        "peak",
    ]
    .map(String::from)
    .to_vec()];
    let mut peaks: Vec<(&str, u64)> = Vec::new();
    for p in &plan.phases {
        let Some(w) = workload(p, &shape) else {
            continue;
        };
        let (trainable, frozen) = shape.params(&p.freeze);
        let f: Footprint = shape.footprint(&p.freeze, &w);
        peaks.push((&p.id, f.peak()));
        rows.push(vec![
            p.id.clone(),
            human_count(trainable),
            human_count(frozen),
            human_bytes(f.weights),
            human_bytes(f.grads),
            human_bytes(f.moments),
            human_bytes(f.reference),
            human_bytes(f.kv_cache),
            human_bytes(f.activations),
            human_bytes(f.peak()),
        ]);
    }
    let mut out = String::new();
    if peaks.is_empty() {
        return out;
    }
    let image = match (&shape.vision, shape.qwen_vl) {
        (Some(_), true) => format!(
            " + one {}×{} image ({} tokens)",
            TYPICAL_IMAGE.0, TYPICAL_IMAGE.1, shape.image_tokens
        ),
        (Some(_), false) => format!(" + one image ({} tokens)", shape.image_tokens),
        (None, _) => String::new(),
    };
    let _ = writeln!(
        out,
        "\nmemory at the peak of a step ({}; estimate for prompts of {PROMPT_TEXT_TOKENS} text tokens{image}):",
        plan.dtype
    );
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
    }
    match device_memory(&plan.device) {
        Some(total) => {
            let _ = writeln!(out, "device {}: {}", plan.device, human_bytes(total));
            for (id, peak) in peaks.iter().filter(|(_, b)| *b > total) {
                let _ = writeln!(
                    out,
                    "warning: phase `{id}` needs about {} at its peak, more than {}'s {}",
                    human_bytes(*peak),
                    plan.device,
                    human_bytes(total)
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "device {}: memory unknown (not readable in this build)",
                plan.device
            );
        }
    }
    out
}

/// `curric plan FILE`: the phase table, the summary and the memory table.
pub fn plan_table(path: &Path) -> std::process::ExitCode {
    let (c, _) = match crate::check::load(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let p = match crate::plan::plan(&c) {
        Ok(p) => p,
        Err(e) => {
            crate::errln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    crate::out::print(&format!(
        "{}{}\n{}",
        crate::plan::render_table(&p, None),
        crate::plan::summary(&p),
        render(&p)
    ))
}
