//! One phase's EasyR1 `config.yaml`: every section of EasyR1's `PPOConfig` written out, the
//! keys a curric setting decides taken from the phase's settings, the rest at EasyR1's
//! defaults. Each mapped key carries a comment naming the curric setting it came from, and
//! the same mapping is recorded as a [`Decision`] for `manifest.json`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::spec::{GrpoSettings, KlEstimator, LossAgg, LrSchedule, Optim};

/// One line of the mapping from curric to EasyR1, as `manifest.json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub phase: String,
    /// The curric setting, as the `.curr` file writes it (`mu = 1`).
    pub curric: String,
    /// Where it went: an EasyR1 key, a file, or "not exported".
    pub easyr1: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// An EasyR1 config being written, with its comments and decisions.
pub struct Config {
    phase: String,
    root: Value,
    notes: BTreeMap<String, String>,
    pub decisions: Vec<Decision>,
}

impl Config {
    pub fn new(phase: &str) -> Config {
        Config {
            phase: phase.into(),
            root: Value::Object(Map::new()),
            notes: BTreeMap::new(),
            decisions: Vec::new(),
        }
    }

    /// Sets `path` (dotted) to an EasyR1 value that no curric setting decides.
    pub fn set(&mut self, path: &str, v: impl Into<Value>) {
        let mut at = &mut self.root;
        let mut parts = path.split('.').peekable();
        while let Some(k) = parts.next() {
            let m = at
                .as_object_mut()
                .expect("config paths go through mappings");
            if parts.peek().is_none() {
                m.insert(k.to_string(), v.into());
                return;
            }
            at = m
                .entry(k.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }

    /// Sets `path` from the curric setting `curric` (`"mu = 1"`), noting where it came from.
    pub fn map(&mut self, path: &str, v: impl Into<Value>, curric: impl Into<String>) {
        let curric = curric.into();
        self.set(path, v);
        self.notes.insert(path.into(), format!("curric: {curric}"));
        self.decisions.push(Decision {
            phase: self.phase.clone(),
            curric,
            easyr1: path.into(),
            note: String::new(),
        });
    }

    /// Like [`Config::map`], where the mapping is not one to one: `note` says how.
    pub fn map_with(
        &mut self,
        path: &str,
        v: impl Into<Value>,
        curric: impl Into<String>,
        note: &str,
    ) {
        self.map(path, v, curric);
        if let Some(d) = self.decisions.last_mut() {
            d.note = note.into();
        }
    }

    /// A decision that is not one key (a file written, a behaviour EasyR1 has on its own).
    pub fn decide(&mut self, curric: impl Into<String>, easyr1: impl Into<String>, note: &str) {
        self.decisions.push(Decision {
            phase: self.phase.clone(),
            curric: curric.into(),
            easyr1: easyr1.into(),
            note: note.into(),
        });
    }

    pub fn to_yaml(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        out.push_str(&super::yaml::to_yaml(&self.root, &self.notes));
        out
    }
}

/// What every phase's config shares: where the job runs and what it starts from.
pub struct Common<'a> {
    pub curriculum: &'a str,
    pub phase: &'a str,
    pub seed: u64,
    pub model: &'a str,
    pub nodes: u64,
    pub gpus_per_node: u64,
    pub max_prompt_length: u64,
    /// The phase's order, as the `.curr` file writes it.
    pub order: String,
}

/// What differs between a training job and a validation-only one.
pub struct Job {
    pub rollout_batch_size: u64,
    pub max_response_length: u64,
    pub n: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub max_steps: Option<u64>,
    /// The phase's stop condition as the `.curr` file writes it.
    pub stop: String,
    pub val_only: bool,
    /// Validate every this many steps (-1: only after training).
    pub val_freq: i64,
    /// Checkpoint every this many steps (-1: only at the end).
    pub save_freq: i64,
    /// `val_override_config` for the validation rollouts.
    pub val_rollout: Value,
    pub format_prompt: Option<&'static str>,
    pub reward_kwargs: Value,
}

/// The config of a GRPO phase, or the training-free skeleton of a probe or eval job when
/// `grpo` is `None` (EasyR1's defaults there, since nothing trains).
pub fn build(c: &Common<'_>, job: &Job, grpo: Option<&GrpoSettings>, freeze: bool) -> Config {
    let mut cfg = Config::new(c.phase);
    data(&mut cfg, c, job);
    algorithm(&mut cfg, grpo);
    worker(&mut cfg, c, job, grpo, freeze);
    trainer(&mut cfg, c, job, grpo);
    cfg
}

fn data(cfg: &mut Config, c: &Common<'_>, job: &Job) {
    cfg.set("data.train_files", "train.jsonl");
    cfg.set("data.val_files", "val.jsonl");
    cfg.set("data.prompt_key", "problem");
    // The answer travels with the per-sample data the rewards read (reward.py).
    cfg.set("data.answer_key", "ground_truth");
    cfg.set("data.image_key", "images");
    cfg.set("data.video_key", "videos");
    cfg.set("data.image_dir", ".");
    cfg.set("data.video_fps", 2.0);
    cfg.set("data.max_prompt_length", c.max_prompt_length);
    cfg.map(
        "data.max_response_length",
        job.max_response_length,
        format!("max_new_tokens = {}", job.max_response_length),
    );
    if job.val_only {
        cfg.set("data.rollout_batch_size", job.rollout_batch_size);
    } else {
        cfg.map(
            "data.rollout_batch_size",
            job.rollout_batch_size,
            format!("prompts_per_step = {}", job.rollout_batch_size),
        );
    }
    cfg.set("data.mini_rollout_batch_size", Value::Null);
    cfg.set("data.val_batch_size", -1);
    cfg.set("data.format_prompt", job.format_prompt);
    cfg.set("data.override_chat_template", Value::Null);
    cfg.map_with(
        "data.shuffle",
        false,
        format!("order = {}", c.order),
        "train.jsonl is already in the order curric's sampler draws (mix, levels, order)",
    );
    cfg.map("data.seed", c.seed, format!("seed = {}", c.seed));
    cfg.set("data.min_pixels", 262144);
    cfg.set("data.max_pixels", 4194304);
    cfg.set("data.filter_overlong_prompts", true);
    cfg.set("data.filter_overlong_prompts_workers", 16);
}

fn algorithm(cfg: &mut Config, grpo: Option<&GrpoSettings>) {
    cfg.set("algorithm.gamma", 1.0);
    cfg.set("algorithm.lam", 1.0);
    cfg.set("algorithm.adv_estimator", "grpo");
    let Some(g) = grpo else {
        cfg.set("algorithm.disable_kl", true);
        cfg.set("algorithm.use_kl_loss", false);
        cfg.set("algorithm.kl_penalty", "low_var_kl");
        cfg.set("algorithm.kl_coef", 0.0);
        for (k, v) in [
            ("kl_type", json!("fixed")),
            ("kl_horizon", json!(10000.0)),
            ("kl_target", json!(0.1)),
            ("online_filtering", json!(false)),
            ("filter_key", json!("overall")),
            ("filter_low", json!(0.01)),
            ("filter_high", json!(0.99)),
        ] {
            cfg.set(&format!("algorithm.{k}"), v);
        }
        return;
    };
    cfg.decide(
        format!("advantage = {:?}", g.advantage).to_lowercase(),
        "algorithm.adv_estimator = grpo",
        "(r − group mean) / (group std + eps)",
    );
    cfg.map_with(
        "algorithm.disable_kl",
        g.beta == 0.0,
        format!("beta = {}", g.beta),
        "β = 0: no reference model",
    );
    cfg.map_with(
        "algorithm.use_kl_loss",
        g.beta > 0.0,
        format!("beta = {}", g.beta),
        "curric's KL is a loss term, not a reward penalty",
    );
    let (word, estimator) = match g.kl {
        KlEstimator::K1 => ("k1", "kl"),
        KlEstimator::K3 => ("k3", "low_var_kl"),
    };
    cfg.map("algorithm.kl_penalty", estimator, format!("kl = {word}"));
    cfg.map("algorithm.kl_coef", g.beta, format!("beta = {}", g.beta));
    cfg.set("algorithm.kl_type", "fixed");
    cfg.set("algorithm.kl_horizon", 10000.0);
    cfg.set("algorithm.kl_target", 0.1);
    cfg.map(
        "algorithm.online_filtering",
        g.dynamic_sampling,
        format!("dynamic_sampling = {}", g.dynamic_sampling),
    );
    cfg.set("algorithm.filter_key", "overall");
    cfg.set("algorithm.filter_low", 0.01);
    cfg.set("algorithm.filter_high", 0.99);
}

/// A divisor of `total` no larger than `want` (at least 1): EasyR1 requires the experience
/// micro-batch to divide the rollout batch.
fn divisor_at_most(total: u64, want: u64) -> u64 {
    (1..=want.clamp(1, total.max(1)))
        .rev()
        .find(|d| total.is_multiple_of(*d))
        .unwrap_or(1)
}

fn optim(cfg: &mut Config, prefix: &str, o: Option<&Optim>) {
    let p = |k: &str| format!("{prefix}.optim.{k}");
    match o {
        Some(o) => {
            cfg.map(&p("lr"), o.lr, format!("lr = {}", o.lr));
            cfg.set(&p("betas"), json!([0.9, 0.999]));
            cfg.map(
                &p("weight_decay"),
                o.weight_decay,
                format!("weight_decay = {}", o.weight_decay),
            );
            cfg.set(&p("strategy"), "adamw");
            cfg.set(&p("lr_warmup_ratio"), 0.0);
            cfg.map(
                &p("lr_warmup_steps"),
                o.warmup_steps,
                format!("warmup_steps = {}", o.warmup_steps),
            );
            let (word, kind) = match o.lr_schedule {
                LrSchedule::Constant => ("constant", "constant"),
                LrSchedule::Cosine => ("cosine", "cosine"),
            };
            if o.lr_schedule == LrSchedule::Cosine {
                cfg.map_with(
                    &p("min_lr_ratio"),
                    0.0,
                    "lr_schedule = cosine",
                    "curric's cosine decays to 0",
                );
            } else {
                cfg.set(&p("min_lr_ratio"), Value::Null);
            }
            cfg.map(
                &p("lr_scheduler_type"),
                kind,
                format!("lr_schedule = {word}"),
            );
        }
        None => {
            cfg.set(&p("lr"), 1e-6);
            cfg.set(&p("betas"), json!([0.9, 0.999]));
            cfg.set(&p("weight_decay"), 1e-2);
            cfg.set(&p("strategy"), "adamw");
            cfg.set(&p("lr_warmup_ratio"), 0.0);
            cfg.set(&p("lr_warmup_steps"), Value::Null);
            cfg.set(&p("min_lr_ratio"), Value::Null);
            cfg.set(&p("lr_scheduler_type"), "constant");
        }
    }
}

fn fsdp(cfg: &mut Config, prefix: &str, cpu_offload: bool) {
    for (k, v) in [
        ("enable_full_shard", json!(true)),
        ("enable_cpu_offload", json!(cpu_offload)),
        ("enable_rank0_init", json!(true)),
        ("use_orig_params", json!(false)),
        ("torch_dtype", Value::Null),
        ("fsdp_size", json!(-1)),
        ("mp_param_dtype", json!("bf16")),
        ("mp_reduce_dtype", json!("fp32")),
        ("mp_buffer_dtype", json!("fp32")),
    ] {
        cfg.set(&format!("{prefix}.fsdp.{k}"), v);
    }
    cfg.set(&format!("{prefix}.offload.offload_params"), false);
    cfg.set(&format!("{prefix}.offload.offload_optimizer"), false);
}

fn model(cfg: &mut Config, prefix: &str, path: Option<&str>, freeze: Option<bool>) {
    let p = |k: &str| format!("{prefix}.model.{k}");
    cfg.set(&p("model_path"), path);
    cfg.set(&p("tokenizer_path"), Value::Null);
    cfg.set(&p("override_config"), json!({}));
    cfg.set(&p("enable_gradient_checkpointing"), true);
    cfg.set(&p("trust_remote_code"), false);
    match freeze {
        Some(true) => cfg.map(&p("freeze_vision_tower"), true, "freeze = [\"visual\"]"),
        _ => cfg.set(&p("freeze_vision_tower"), false),
    }
    cfg.set(&p("lora.rank"), 0);
    cfg.set(&p("lora.alpha"), 64);
    cfg.set(&p("lora.target_modules"), "all-linear");
    cfg.set(&p("lora.exclude_modules"), Value::Null);
}

fn worker(cfg: &mut Config, c: &Common<'_>, job: &Job, g: Option<&GrpoSettings>, freeze: bool) {
    let world = (c.nodes * c.gpus_per_node).max(1);
    let rows = job.rollout_batch_size * job.n;
    cfg.set("worker.hybrid_engine", true);
    let a = "worker.actor";
    cfg.set(&format!("{a}.strategy"), "fsdp");
    match g {
        Some(g) => {
            cfg.map_with(
                &format!("{a}.global_batch_size"),
                g.prompts_per_step,
                format!("prompts_per_step = {}", g.prompts_per_step),
                "one optimiser update per pass over the step's rollouts, as in curric",
            );
            let per_device = g.micro_batch.div_ceil(world).max(1);
            cfg.map_with(
                &format!("{a}.micro_batch_size_per_device_for_update"),
                per_device,
                format!("micro_batch = {}", g.micro_batch),
                "completions per forward, split over the GPUs; a memory setting in both",
            );
            cfg.map_with(
                &format!("{a}.micro_batch_size_per_device_for_experience"),
                divisor_at_most(rows, per_device),
                format!("micro_batch = {}", g.micro_batch),
                "the largest divisor of the rollout batch not above the update micro-batch",
            );
            if g.optim.grad_clip > 0.0 {
                cfg.map(
                    &format!("{a}.max_grad_norm"),
                    g.optim.grad_clip,
                    format!("grad_clip = {}", g.optim.grad_clip),
                );
            } else {
                cfg.map_with(
                    &format!("{a}.max_grad_norm"),
                    1e9,
                    "grad_clip = 0",
                    "no clipping: EasyR1 always clips, at a norm no gradient reaches",
                );
            }
            cfg.map(
                &format!("{a}.clip_ratio_low"),
                g.eps_low,
                format!("eps_low = {}", g.eps_low),
            );
            cfg.map(
                &format!("{a}.clip_ratio_high"),
                g.eps_high,
                format!("eps_high = {}", g.eps_high),
            );
            cfg.set(&format!("{a}.clip_ratio_dual"), 3.0);
            let (word, mode) = match g.loss_agg {
                LossAgg::TokenMean => ("token-mean", "token"),
                LossAgg::SeqMeanTokenMean => ("seq-mean-token-mean", "seq"),
                // Refused before a config is built.
                LossAgg::SeqMeanTokenSumNorm => ("seq-mean-token-sum-norm", "token"),
            };
            cfg.map(
                &format!("{a}.loss_avg_mode"),
                mode,
                format!("loss_agg = {word}"),
            );
            cfg.set(&format!("{a}.loss_type"), "default");
            cfg.map(&format!("{a}.ppo_epochs"), g.mu, format!("mu = {}", g.mu));
        }
        None => {
            cfg.set(&format!("{a}.global_batch_size"), job.rollout_batch_size);
            cfg.set(&format!("{a}.micro_batch_size_per_device_for_update"), 1);
            cfg.set(
                &format!("{a}.micro_batch_size_per_device_for_experience"),
                1,
            );
            cfg.set(&format!("{a}.max_grad_norm"), 1.0);
            cfg.set(&format!("{a}.clip_ratio_low"), 0.2);
            cfg.set(&format!("{a}.clip_ratio_high"), 0.3);
            cfg.set(&format!("{a}.clip_ratio_dual"), 3.0);
            cfg.set(&format!("{a}.loss_avg_mode"), "token");
            cfg.set(&format!("{a}.loss_type"), "default");
            cfg.set(&format!("{a}.ppo_epochs"), 1);
        }
    }
    for (k, v) in [
        ("padding_free", json!(true)),
        ("dynamic_batching", json!(true)),
        ("ulysses_size", json!(1)),
        ("use_torch_compile", json!(true)),
        ("tau_positive", json!(1.0)),
        ("tau_negative", json!(1.05)),
    ] {
        cfg.set(&format!("{a}.{k}"), v);
    }
    model(cfg, a, Some(c.model), Some(freeze));
    optim(cfg, a, g.map(|g| &g.optim));
    fsdp(cfg, a, false);

    // GRPO has no critic; EasyR1 still parses the section.
    let cr = "worker.critic";
    for (k, v) in [
        ("strategy", json!("fsdp")),
        ("global_batch_size", json!(256)),
        ("micro_batch_size_per_device_for_update", json!(4)),
        ("micro_batch_size_per_device_for_experience", json!(16)),
        ("max_grad_norm", json!(1.0)),
        ("cliprange_value", json!(0.5)),
        ("loss_avg_mode", json!("token")),
        ("ppo_epochs", json!(1)),
        ("padding_free", json!(false)),
        ("dynamic_batching", json!(true)),
        ("ulysses_size", json!(1)),
    ] {
        cfg.set(&format!("{cr}.{k}"), v);
    }
    model(cfg, cr, None, None);
    optim(cfg, cr, None);
    fsdp(cfg, cr, false);

    cfg.set("worker.ref.strategy", "fsdp");
    fsdp(cfg, "worker.ref", true);

    cfg.set("worker.reward.reward_function", "./reward.py:compute_score");
    cfg.set(
        "worker.reward.reward_function_kwargs",
        job.reward_kwargs.clone(),
    );
    cfg.set("worker.reward.skip_special_tokens", true);
    cfg.set("worker.reward.num_cpus", 1);

    let r = "worker.rollout";
    cfg.set(&format!("{r}.name"), "vllm");
    match g {
        Some(g) => {
            cfg.map(
                &format!("{r}.n"),
                g.group_size,
                format!("group_size = {}", g.group_size),
            );
            cfg.map(
                &format!("{r}.temperature"),
                g.temperature,
                format!("temperature = {}", g.temperature),
            );
            cfg.map(
                &format!("{r}.top_p"),
                g.top_p,
                format!("top_p = {}", g.top_p),
            );
        }
        None => {
            cfg.set(&format!("{r}.n"), job.n);
            cfg.set(&format!("{r}.temperature"), job.temperature);
            cfg.set(&format!("{r}.top_p"), job.top_p);
        }
    }
    cfg.set(&format!("{r}.top_k"), -1);
    cfg.map(&format!("{r}.seed"), c.seed, format!("seed = {}", c.seed));
    for (k, v) in [
        ("limit_images", json!(0)),
        ("dtype", json!("bf16")),
        ("gpu_memory_utilization", json!(0.6)),
        ("ignore_eos", json!(false)),
        ("enforce_eager", json!(false)),
        ("enable_chunked_prefill", json!(false)),
        ("tensor_parallel_size", json!(1)),
        ("max_model_len", Value::Null),
        ("max_num_batched_tokens", json!(8192)),
        ("disable_log_stats", json!(true)),
        ("disable_tqdm", json!(false)),
    ] {
        cfg.set(&format!("{r}.{k}"), v);
    }
    cfg.set(&format!("{r}.val_override_config"), job.val_rollout.clone());
}

fn trainer(cfg: &mut Config, c: &Common<'_>, job: &Job, g: Option<&GrpoSettings>) {
    let t = "trainer";
    cfg.set(&format!("{t}.total_epochs"), 1);
    match job.max_steps {
        Some(n) => cfg.map(&format!("{t}.max_steps"), n, format!("stop = {}", job.stop)),
        None => cfg.set(&format!("{t}.max_steps"), Value::Null),
    }
    cfg.set(&format!("{t}.project_name"), c.curriculum);
    cfg.set(&format!("{t}.experiment_name"), c.phase);
    // `file` writes experiment_log.jsonl, the metrics a driver reads between chunks.
    cfg.set(&format!("{t}.logger"), json!(["console", "file"]));
    cfg.set(&format!("{t}.nnodes"), c.nodes);
    cfg.set(&format!("{t}.n_gpus_per_node"), c.gpus_per_node);
    match g {
        Some(g) => cfg.map_with(
            &format!("{t}.max_try_make_batch"),
            g.max_retries,
            format!("max_retries = {}", g.max_retries),
            "EasyR1 counts generation rounds per batch where curric counts refills",
        ),
        None => cfg.set(&format!("{t}.max_try_make_batch"), 20),
    }
    cfg.set(&format!("{t}.critic_warmup"), 0);
    cfg.set(&format!("{t}.val_freq"), job.val_freq);
    cfg.set(&format!("{t}.val_before_train"), job.val_only);
    cfg.set(&format!("{t}.val_only"), job.val_only);
    cfg.set(&format!("{t}.val_generations_to_log"), 0);
    cfg.set(&format!("{t}.save_freq"), job.save_freq);
    cfg.set(&format!("{t}.save_limit"), 2);
    cfg.set(&format!("{t}.save_model_only"), false);
    cfg.set(&format!("{t}.save_checkpoint_path"), "checkpoints");
    cfg.set(&format!("{t}.load_checkpoint_path"), Value::Null);
    cfg.set(&format!("{t}.ray_timeline"), Value::Null);
    cfg.set(&format!("{t}.find_last_checkpoint"), true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experience_micro_batches_divide_the_rollout_batch() {
        assert_eq!(divisor_at_most(64, 8), 8);
        assert_eq!(divisor_at_most(48, 10), 8);
        assert_eq!(divisor_at_most(7, 4), 1);
        assert_eq!(divisor_at_most(64, 0), 1);
        assert_eq!(divisor_at_most(4, 100), 4);
    }
}
