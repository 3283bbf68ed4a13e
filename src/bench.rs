//! `curric bench`: rollout and update speed of the built-in presets, or of any checkpoint
//! directory (`--model`; randomly initialised from its config when it has no weights), on a
//! GRPO-shaped batch (G = 8 completions × 16 prompts by default), measured against the time of
//! the update's matrix multiplies alone.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use image::{Rgb, RgbImage};

use crate::grpo::{policy_loss, AdamW, AdamWConfig, LossConfig, LrSchedule};
use crate::model::{ModelError, Policy, PolicyInput, PolicyModel, SamplingParams, VlmConfig};

/// `curric bench` arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Fewer presets and repetitions (under a minute on 2 cores, release build).
    #[arg(long)]
    pub quick: bool,
    /// Preset to measure (repeatable): nano, micro, small, base.
    #[arg(long = "preset")]
    pub presets: Vec<String>,
    /// `cpu` or `cuda:N` (CUDA needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Tokens each completion decodes (the random-init presets never stop early).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub new_tokens: u64,
    /// A checkpoint directory to measure instead of the presets (repeatable). One with a
    /// config but no weights is initialised at random: measure a model's shape without it.
    #[arg(long = "model")]
    pub models: Vec<std::path::PathBuf>,
    /// Prompts per batch.
    #[arg(long, default_value_t = PROMPTS as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub prompts: u64,
    /// Completions per prompt (G).
    #[arg(long, default_value_t = GROUP as u64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub group: u64,
    /// Rows per forward/backward of the update (default: the whole batch at once).
    #[arg(long)]
    pub micro_batch: Option<u64>,
    /// The device's peak TFLOP/s at the dtype it computes in, to report the update's MFU.
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// `f32` or `bf16`: what the policy is held and computed in (as the `.curr` key `dtype`).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub dtype: String,
}

/// Runs `curric bench`, printing each preset's row as soon as it is measured.
pub fn run_cli(args: BenchArgs) -> std::process::ExitCode {
    let result = crate::model::device(&args.device).and_then(|device| {
        let opts = BenchOptions {
            quick: args.quick,
            presets: args.presets,
            device,
            new_tokens: args.new_tokens as usize,
            prompts: args.prompts as usize,
            group: args.group as usize,
            micro_batch: args.micro_batch.map(|m| m as usize),
            dtype: if args.dtype == "bf16" {
                DType::BF16
            } else {
                DType::F32
            },
        };
        if let Err(code) = crate::out::stdout(&header(&opts)) {
            return Ok(Some(code));
        }
        let mut rows = Vec::new();
        if args.models.is_empty() || !opts.presets.is_empty() {
            for name in presets(&opts) {
                rows.push(bench_preset(&name, &opts)?);
                if let Err(code) = crate::out::stdout(&row_line(rows.last().expect("a row"))) {
                    return Ok(Some(code));
                }
            }
        }
        for dir in &args.models {
            rows.push(bench_model(dir, &opts, &args.device)?);
            if let Err(code) = crate::out::stdout(&row_line(rows.last().expect("a row"))) {
                return Ok(Some(code));
            }
        }
        if let Some(peak) = args.peak_tflops {
            for r in &rows {
                let line = format!(
                    "{}: update MFU {:.1} % of {peak} TFLOP/s (decoder matmuls)\n",
                    r.preset,
                    100.0 * r.update_gflops / (peak * 1e3)
                );
                if let Err(code) = crate::out::stdout(&line) {
                    return Ok(Some(code));
                }
            }
        }
        Ok(None)
    });
    match result {
        Ok(Some(code)) => code,
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            crate::errln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prompts per batch and completions per prompt, as in a GRPO step.
pub const PROMPTS: usize = 16;
pub const GROUP: usize = 8;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub quick: bool,
    /// Empty: nano and micro with `quick`, every preset otherwise.
    pub presets: Vec<String>,
    pub device: Device,
    /// Tokens each completion decodes.
    pub new_tokens: usize,
    /// Prompts per batch and completions per prompt.
    pub prompts: usize,
    pub group: usize,
    /// Rows per update forward/backward; none: the whole batch.
    pub micro_batch: Option<usize>,
    pub dtype: DType,
}

impl BenchOptions {
    /// The default batch (G 8 × 16 prompts, one update pass) for `presets` on `device`.
    pub fn new(quick: bool, presets: Vec<String>, device: Device, new_tokens: usize) -> Self {
        BenchOptions {
            quick,
            presets,
            device,
            new_tokens,
            prompts: PROMPTS,
            group: GROUP,
            micro_batch: None,
            dtype: DType::F32,
        }
    }
}

/// One preset's measurements.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub preset: String,
    pub params: usize,
    pub new_tokens: usize,
    pub rollout_tok_s_cache: f64,
    /// Measured on 2 (quick) or 4 prompts' groups: recomputing the prefix is slow.
    pub rollout_tok_s_nocache: f64,
    /// Cached over uncached tokens/s, on the same partial batch.
    pub kv_speedup: f64,
    pub update_ms: f64,
    pub matmul_ms: f64,
    pub grpo_samples_s: f64,
    /// Peak resident memory of the process so far (VmHWM), MiB; on a GPU, the device memory in
    /// use after the rollout or the update, whichever is more.
    pub peak_mib: f64,
    /// This machine's f32 GEMM throughput, measured once at start (GFLOP/s).
    pub gemm_gflops: f64,
    /// Matmul FLOPs of the rollout (2 × decoder params per position, prefill and decode)
    /// over its wall time (GFLOP/s).
    pub rollout_gflops: f64,
    /// Matmul FLOPs of the update (forward and both backward products of every matmul)
    /// over its wall time (GFLOP/s).
    pub update_gflops: f64,
}

impl BenchRow {
    pub fn update_over_matmul(&self) -> f64 {
        self.update_ms / self.matmul_ms
    }

    /// Shares of the machine's GEMM throughput that the rollout and the update reach.
    pub fn fractions_of_gemm(&self) -> (f64, f64) {
        (
            self.rollout_gflops / self.gemm_gflops,
            self.update_gflops / self.gemm_gflops,
        )
    }
}

/// f32 GEMM throughput of `dev` in GFLOP/s: the best of a few `4736 × 256 × 768` products (a
/// 3M-parameter model's projection over a GRPO batch).
pub fn gemm_gflops(dev: &Device) -> Result<f64, ModelError> {
    let (m, k, n) = (4736, 256, 768);
    let a = Tensor::ones((m, k), DType::F32, dev)?;
    let b = Tensor::ones((k, n), DType::F32, dev)?;
    let mut best = f64::INFINITY;
    // Best of many: one product takes ~10 ms on 2 cores, and a busy machine shows in a few.
    for _ in 0..12 {
        let t = Instant::now();
        let y = a.matmul(&b)?;
        dev.synchronize()?;
        drop(y);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}

/// Runs the bench for every requested preset.
pub fn run(opts: &BenchOptions) -> Result<Vec<BenchRow>, ModelError> {
    presets(opts)
        .iter()
        .map(|p| bench_preset(p, opts))
        .collect()
}

fn presets(opts: &BenchOptions) -> Vec<String> {
    if opts.presets.is_empty() {
        let names: &[&str] = if opts.quick {
            &["nano", "micro"]
        } else {
            &crate::model::PRESETS
        };
        names.iter().map(|s| s.to_string()).collect()
    } else {
        opts.presets.clone()
    }
}

/// `n` prompts, three in four with an image; text only for a checkpoint without a vision
/// tower (a plain Qwen2 decoder), which would reject an image.
fn prompts(n: usize, vision: bool) -> Vec<PolicyInput> {
    let with_images = [
        "<image> How many red circles are in the grid?",
        "<image> What colour is the shape in the top - left cell?",
        "<image> Is there a blue square left of the green star? Answer yes or no.",
        "What is 12 + 30?",
    ];
    let text_only = [
        "what is 24 plus 48",
        "what is 26 plus 2",
        "what is 16 plus 32",
        "what is 12 plus 30",
    ];
    let questions = if vision { with_images } else { text_only };
    (0..n)
        .map(|i| {
            let q = questions[i % questions.len()];
            let image = q.starts_with("<image>").then(|| {
                Arc::new(RgbImage::from_fn(48, 48, |x, y| {
                    let c = ((x / 16 + 3 * (y / 16)) as usize + i) % 3;
                    let mut px = [30u8; 3];
                    px[c] = 220;
                    Rgb(px)
                }))
            });
            PolicyInput {
                image,
                prompt: q.to_string(),
            }
        })
        .collect()
}

fn grpo_batch(opts: &BenchOptions, vision: bool) -> (Vec<PolicyInput>, Vec<u64>) {
    let base = prompts(opts.prompts, vision);
    let g = opts.group;
    let mut inputs = Vec::with_capacity(opts.prompts * g);
    let mut seeds = Vec::with_capacity(opts.prompts * g);
    for (i, p) in base.iter().enumerate() {
        for k in 0..g {
            inputs.push(p.clone());
            seeds.push((i * g + k) as u64);
        }
    }
    (inputs, seeds)
}

/// Rollout tokens per second (sampled tokens over wall time).
fn rollout(
    p: &Policy,
    inputs: &[PolicyInput],
    seeds: &[u64],
    new_tokens: usize,
    cache: bool,
) -> Result<(f64, f64, Vec<Vec<u32>>), ModelError> {
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        max_new_tokens: new_tokens,
    };
    let t = Instant::now();
    let out = p.sample(inputs, &params, seeds, cache)?;
    let secs = t.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(|c| c.tokens.len()).sum();
    Ok((
        tokens as f64 / secs,
        secs,
        out.into_iter().map(|c| c.tokens).collect(),
    ))
}

/// One GRPO update exactly as training runs it with μ = 1: log-probs, the clipped surrogate
/// (token-mean, no reference), backward — `micro` rows at a time, gradients accumulated with
/// each micro-batch's share of the tokens — and curric's AdamW with grad-norm clipping and its
/// NaN guard. Returns milliseconds.
fn update_step(
    p: &Policy,
    opt: &mut AdamW,
    inputs: &[PolicyInput],
    completions: &[Vec<u32>],
    adv: &Tensor,
    micro: usize,
) -> Result<f64, ModelError> {
    let grpo = |e: crate::grpo::GrpoError| ModelError::Invalid(e.to_string());
    let t = Instant::now();
    let total: usize = completions.iter().map(Vec::len).sum::<usize>().max(1);
    let mut acc: Option<Vec<Option<Tensor>>> = None;
    for a in (0..inputs.len()).step_by(micro.max(1)) {
        let len = micro.max(1).min(inputs.len() - a);
        let rows = &completions[a..a + len];
        let share = rows.iter().map(Vec::len).sum::<usize>() as f64 / total as f64;
        let lp = p.logprobs(&inputs[a..a + len], rows)?;
        let mask = lp.mask.to_dtype(DType::F32)?;
        let old = lp.logp.detach();
        let (loss, _) = policy_loss(
            &lp.logp,
            &old,
            None,
            &adv.narrow(0, a, len)?,
            &mask,
            &LossConfig::default(),
        )
        .map_err(grpo)?;
        let grads = opt.grads_of(&(loss * share)?.backward()?).map_err(grpo)?;
        match acc.as_mut() {
            None => acc = Some(grads),
            Some(sum) => AdamW::accumulate(sum, grads).map_err(grpo)?,
        }
    }
    if let Some(grads) = acc {
        opt.apply_grads(&grads, opt.steps()).map_err(grpo)?;
    }
    p.device().synchronize()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// The matmuls of one update (forward, and the two of each backward) as `(batch, m, k, n)`.
fn matmul_shapes(
    cfg: &VlmConfig,
    rows: usize,
    seq: usize,
    comp: usize,
    images: usize,
) -> Vec<[usize; 4]> {
    let mut fwd: Vec<[usize; 4]> = Vec::new();
    let d = &cfg.decoder;
    let n = rows * seq;
    let hd = d.head_dim();
    let kvd = d.num_key_value_heads * hd;
    for _ in 0..d.num_hidden_layers {
        fwd.push([1, n, d.hidden_size, d.num_attention_heads * hd]);
        fwd.push([1, n, d.hidden_size, kvd]);
        fwd.push([1, n, d.hidden_size, kvd]);
        fwd.push([1, n, d.num_attention_heads * hd, d.hidden_size]);
        let rep = d.num_attention_heads / d.num_key_value_heads;
        fwd.push([rows * d.num_key_value_heads, rep * seq, hd, seq]);
        fwd.push([rows * d.num_key_value_heads, rep * seq, seq, hd]);
        fwd.push([1, n, d.hidden_size, d.intermediate_size]);
        fwd.push([1, n, d.hidden_size, d.intermediate_size]);
        fwd.push([1, n, d.intermediate_size, d.hidden_size]);
    }
    fwd.push([1, rows * comp, d.hidden_size, d.vocab_size]);
    if let (Some(v), true) = (&cfg.vision, images > 0) {
        let np = v.num_patches();
        let nv = images * np;
        let p2 = 3 * v.patch_size * v.patch_size;
        let vh = v.hidden_size / v.num_attention_heads;
        fwd.push([1, nv, p2, v.hidden_size]);
        for _ in 0..v.num_hidden_layers {
            fwd.push([1, nv, v.hidden_size, 3 * v.hidden_size]);
            fwd.push([images * v.num_attention_heads, np, vh, np]);
            fwd.push([images * v.num_attention_heads, np, np, vh]);
            fwd.push([1, nv, v.hidden_size, v.hidden_size]);
            fwd.push([1, nv, v.hidden_size, v.intermediate_size]);
            fwd.push([1, nv, v.intermediate_size, v.hidden_size]);
        }
        fwd.push([1, nv, v.hidden_size, d.hidden_size]);
        fwd.push([1, nv, d.hidden_size, d.hidden_size]);
    }
    // Backward of C = A·B: dA = dC·Bᵀ (m, n, k) and dB = Aᵀ·dC (k, m, n).
    let mut all = Vec::with_capacity(fwd.len() * 3);
    for [b, m, k, nn] in fwd {
        all.push([b, m, k, nn]);
        all.push([b, m, nn, k]);
        all.push([b, k, m, nn]);
    }
    all
}

/// Milliseconds for running `shapes` as plain matmuls on `dev` (best of `reps`).
fn time_matmuls(shapes: &[[usize; 4]], dev: &Device, reps: usize) -> Result<f64, ModelError> {
    let mut operands = Vec::with_capacity(shapes.len());
    for &[b, m, k, n] in shapes {
        let a = Tensor::ones((b, m, k), DType::F32, dev)?;
        let c = Tensor::ones((b, k, n), DType::F32, dev)?;
        operands.push((a, c));
    }
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        for (a, c) in &operands {
            let y = a.matmul(c)?;
            dev.synchronize()?;
            drop(y);
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

fn bench_preset(name: &str, opts: &BenchOptions) -> Result<BenchRow, ModelError> {
    let p = Policy::tiny(name, 0, &opts.device)?.with_dtype(opts.dtype)?;
    bench_policy(name, &p, opts, || None)
}

/// A checkpoint directory: loaded, or initialised at random from its config when it has no
/// weights.
fn bench_model(
    dir: &std::path::Path,
    opts: &BenchOptions,
    device: &str,
) -> Result<BenchRow, ModelError> {
    let has_weights = ["model.safetensors", "model.safetensors.index.json"]
        .iter()
        .any(|f| dir.join(f).is_file());
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (p, name) = if has_weights {
        (Policy::load(dir, &opts.device)?, name)
    } else {
        (
            Policy::random_like(dir, &opts.device)?,
            format!("{name} (random)"),
        )
    };
    let device = device.to_string();
    bench_policy(&name, &p, opts, || {
        crate::exec::memory::device_memory_used(&device).map(|b| b as f64 / (1u64 << 20) as f64)
    })
}

/// Measures `p`; `device_mib` reads the device memory in use (none on the CPU, where the
/// process's peak resident memory is reported).
fn bench_policy(
    name: &str,
    p: &Policy,
    opts: &BenchOptions,
    device_mib: impl Fn() -> Option<f64>,
) -> Result<BenchRow, ModelError> {
    let (quick, dev, new_tokens) = (opts.quick, &opts.device, opts.new_tokens);
    let gemm = gemm_gflops(dev)?;
    let (inputs, seeds) = grpo_batch(opts, p.sees_images());
    let g = opts.group;
    // Warm up allocator and kernels.
    rollout(p, &inputs[..g], &seeds[..g], 2, true)?;
    let (tok_cache, roll_secs, comps) = rollout(p, &inputs, &seeds, new_tokens, true)?;
    let mut device_peak = device_mib();
    // Recomputing the prefix is slow: measure it on a part of the batch (whole groups).
    let part = (if quick { 2 * g } else { 4 * g }).min(inputs.len());
    let (tok_nocache, _, _) = rollout(p, &inputs[..part], &seeds[..part], new_tokens, false)?;
    // Compare like with like: the cached rollout on the same partial batch.
    let (tok_cache_part, _, _) = rollout(p, &inputs[..part], &seeds[..part], new_tokens, true)?;

    let adv: Vec<f32> = (0..inputs.len())
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let adv = Tensor::from_vec(adv, inputs.len(), dev)?;
    let mut opt = AdamW::new(
        p.trainable_vars(),
        AdamWConfig {
            schedule: LrSchedule::constant(1e-5),
            ..Default::default()
        },
    )
    .map_err(|e| ModelError::Invalid(e.to_string()))?;
    let steps = if quick { 1 } else { 3 };
    let micro = opts.micro_batch.unwrap_or(inputs.len());
    update_step(p, &mut opt, &inputs, &comps, &adv, micro)?;
    let mut update_ms = f64::INFINITY;
    for _ in 0..steps {
        update_ms = update_ms.min(update_step(p, &mut opt, &inputs, &comps, &adv, micro)?);
    }
    device_peak = match (device_peak, device_mib()) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let prompt_len = inputs
        .iter()
        .map(|i| p.prompt_ids(i).map(|t| t.len()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let comp = comps.iter().map(Vec::len).max().unwrap_or(0);
    let images = inputs.iter().filter(|i| i.image.is_some()).count();
    let shapes = matmul_shapes(p.config(), inputs.len(), prompt_len + comp, comp, images);
    let matmul_ms = time_matmuls(&shapes, dev, if quick { 1 } else { 2 })?;
    let update_flops: f64 = shapes
        .iter()
        .map(|[b, m, k, n]| 2.0 * (b * m * k * n) as f64)
        .sum();
    let positions: usize = comps.iter().map(|c| prompt_len + c.len()).sum();
    let rollout_flops = 2.0 * p.num_params() as f64 * positions as f64;
    Ok(BenchRow {
        preset: name.to_string(),
        params: p.num_params(),
        new_tokens,
        rollout_tok_s_cache: tok_cache,
        rollout_tok_s_nocache: tok_nocache,
        kv_speedup: tok_cache_part / tok_nocache,
        update_ms,
        matmul_ms,
        grpo_samples_s: inputs.len() as f64 / (roll_secs + update_ms / 1e3),
        peak_mib: device_peak.unwrap_or_else(peak_rss_mib),
        gemm_gflops: gemm,
        rollout_gflops: rollout_flops / roll_secs / 1e9,
        update_gflops: update_flops / (update_ms / 1e3) / 1e9,
    })
}

/// VmHWM of this process in MiB (0 where /proc is unavailable).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The bench table.
pub fn render(rows: &[BenchRow], opts: &BenchOptions) -> String {
    let mut s = header(opts);
    for r in rows {
        s.push_str(&row_line(r));
    }
    s
}

fn header(opts: &BenchOptions) -> String {
    format!(
        "batch: {} completions x {} prompts; update = logprobs + GRPO loss + backward + clipped AdamW;\n\
         no-kv measured on 2-4 prompts' groups, kv x = kv / no-kv on that same partial batch;\n\
         GF/s = matmul GFLOP/s achieved, % = share of this machine's GEMM GFLOP/s (gemm)\n\
         {:<18} {:>10} {:>7} {:>12} {:>12} {:>7} {:>10} {:>10} {:>9} {:>10} {:>9} {:>7} {:>8} {:>6} {:>8} {:>6}\n",
        opts.group,
        opts.prompts,
        "model",
        "params",
        "tokens",
        "tok/s kv",
        "tok/s no-kv",
        "kv x",
        "update ms",
        "matmul ms",
        "upd/mm",
        "samples/s",
        "peak MiB",
        "gemm",
        "roll GF/s",
        "roll %",
        "upd GF/s",
        "upd %"
    )
}

fn row_line(r: &BenchRow) -> String {
    format!(
        "{:<18} {:>10} {:>7} {:>12.0} {:>12.0} {:>7.1} {:>10.1} {:>10.1} {:>9.2} {:>10.1} {:>9.0} {:>7.0} {:>8.1} {:>6.1} {:>8.1} {:>6.1}\n",
        r.preset,
        r.params,
        r.new_tokens,
        r.rollout_tok_s_cache,
        r.rollout_tok_s_nocache,
        r.kv_speedup,
        r.update_ms,
        r.matmul_ms,
        r.update_over_matmul(),
        r.grpo_samples_s,
        r.peak_mib,
        r.gemm_gflops,
        r.rollout_gflops,
        100.0 * r.fractions_of_gemm().0,
        r.update_gflops,
        100.0 * r.fractions_of_gemm().1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_shapes_cover_forward_and_both_backward_products() {
        let mut cfg = crate::model::config::preset("nano", 100).unwrap();
        cfg.vision = None;
        // nano decoder: d 96, 2 layers, 4 heads × 24, 2 kv heads, ffn 256, vocab 100.
        // rows 2, seq 5, completion 3. Per layer: q 10·96·96, k and v 10·96·48 each, o 10·96·96,
        // scores 2·2 groups × (2·5)·24·5 twice (QK and PV), gate/up/down 10·96·256 each;
        // head 6·96·100.
        let shapes = matmul_shapes(&cfg, 2, 5, 3, 0);
        let macs: usize = shapes.iter().map(|[b, m, k, n]| b * m * k * n).sum();
        let layer = 10 * 96 * 96 * 2 + 10 * 96 * 48 * 2 + 4 * 10 * 24 * 5 * 2 + 3 * 10 * 96 * 256;
        let forward = 2 * layer + 6 * 96 * 100;
        assert_eq!(shapes.len(), 3 * (2 * 9 + 1));
        assert_eq!(macs, 3 * forward);
    }

    #[test]
    fn table_has_one_line_per_row() {
        let row = BenchRow {
            preset: "nano".into(),
            params: 1,
            new_tokens: 32,
            rollout_tok_s_cache: 1000.0,
            rollout_tok_s_nocache: 100.0,
            kv_speedup: 10.0,
            update_ms: 300.0,
            matmul_ms: 100.0,
            grpo_samples_s: 50.0,
            peak_mib: 10.0,
            gemm_gflops: 100.0,
            rollout_gflops: 20.0,
            update_gflops: 60.0,
        };
        assert!((row.update_over_matmul() - 3.0).abs() < 1e-12);
        assert_eq!(row.fractions_of_gemm(), (0.2, 0.6));
        let opts = BenchOptions::new(true, Vec::new(), Device::Cpu, 32);
        let t = render(&[row.clone(), row], &opts);
        assert!(t.starts_with("batch: 8 completions x 16 prompts"));
        assert_eq!(t.lines().count(), 6);
        assert!(t.lines().nth(4).unwrap().starts_with("nano"));
    }
}
