//! [`Policy`]: a model with its tokenizer and variables — batched sampling with a KV cache,
//! per-token log-probs with gradients, freezing by name prefix, checkpoints. The model is the
//! built-in tiny VLM (or a text-only HF Qwen2 checkpoint) or a Qwen2-VL / Qwen2.5-VL /
//! Qwen3-VL checkpoint; the batch layout, sampling and scoring are the same for both.
//!
//! Batch layout: prompts (vision tokens spliced in at `<image>`, or prepended when the prompt
//! has no placeholder) are left-padded to a common length, so every row's last prompt token
//! sits at the same column; completions follow, right-padded. Padding is masked out of
//! attention and positions count only real tokens, so a row's result does not depend on what
//! else is in the batch. Qwen-VL prompts go through the checkpoint's chat template and carry
//! M-RoPE positions; their completions continue from the prompt's last position.
//!
//! Scoring a GRPO batch, where every prompt comes G times, computes each distinct prompt once
//! (`shared_prompt_logits`, on the fused CPU layer): the completions attend to their prompt's
//! keys and values and hand them back the gradient of all G rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use super::config::{self, VlmConfig};
use super::mrope::rope_index;
use super::nn::causal_mask;
use super::qwen2::{log_softmax, Decoder, KvCache};
use super::qwen_vl::{self, Layout, QwenVl};
use super::qwen_vl_image::{ImageProcessorConfig, Patches};
use super::tokenizer as tok;
use super::vlm::Vlm;
use super::TokenLogProbs;
use super::{checkpoint, Completion, ModelError, PolicyInput, PolicyModel, SamplingParams};

/// One position of a prompt: a token, or token `1` of batch image `0`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item {
    Tok(u32),
    Vis(usize, usize),
}

/// One prompt: its items, their (temporal, row, column) positions, and the position of the
/// first token after it.
struct PromptRow {
    items: Vec<Item>,
    pos: [Vec<i64>; 3],
    next: i64,
}

/// The prompts of one batch and the distinct images they show, with each image's patches
/// (Qwen-VL) and its first row among the batch's image tokens.
struct Prompts<'a> {
    rows: Vec<PromptRow>,
    /// Prompts are left-padded to at least this width (see [`Policy::sample_split`]).
    min_width: usize,
    images: Vec<&'a image::RgbImage>,
    patches: Vec<Patches>,
    offsets: Vec<usize>,
}

/// Embedded rows of one batch: `emb` `[B, W, d]`, key validity per row and column, positions
/// per axis (`B · W`, row-major), DeepStack addends `[B, W, d]`, and the width of the
/// left-padded prompt part.
struct Batch {
    emb: Tensor,
    valid: Vec<Vec<bool>>,
    axes: [Vec<i64>; 3],
    addends: Vec<Tensor>,
    prompt_width: usize,
}

/// What a policy is built from, besides its tensors.
#[derive(Clone)]
enum Spec {
    Tiny(Box<VlmConfig>),
    QwenVl(Box<QwenSpec>),
}

#[derive(Clone)]
struct QwenSpec {
    cfg: qwen_vl::Config,
    images: ImageProcessorConfig,
    template: ChatTemplate,
    layout: Layout,
    /// Ids that end a completion: `eos_token_id` of config.json and generation_config.json.
    stops: Vec<u32>,
    /// config.json and the tokenizer and processor files, written back unchanged on save.
    files: Vec<(String, Vec<u8>)>,
}

/// Files a Qwen-VL checkpoint carries besides its weights.
const QWEN_FILES: [&str; 11] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "vocab.json",
    "merges.txt",
];

enum Net {
    Tiny(Vlm),
    QwenVl(QwenVl),
}

/// A trainable (or frozen) policy.
pub struct Policy {
    spec: Spec,
    /// The decoder's config (and the built-in model's vision tower).
    cfg: VlmConfig,
    net: Net,
    varmap: VarMap,
    tokenizer: Tokenizer,
    device: Device,
    /// The variables' dtype, and the one the model computes in (f32 or bf16).
    dtype: DType,
    frozen: Vec<String>,
    /// The model over detached weights when the vision tower is frozen: its tower is the one
    /// images go through.
    frozen_tower: Option<Net>,
    /// A reference copy: no variable is trainable, its model runs over detached weights and
    /// log-probs come back detached.
    reference: bool,
    eos: u32,
    stops: Vec<u32>,
    pad: u32,
    image_token: Option<u32>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("model", &self.family())
            .field("params", &self.num_params())
            .field("frozen", &self.frozen)
            .field("reference", &self.reference)
            .finish()
    }
}

impl Policy {
    /// The built-in tiny VLM `preset` with the built-in tokenizer covering the built-in
    /// suite's vocabulary.
    pub fn tiny(preset: &str, seed: u64, device: &Device) -> Result<Self, ModelError> {
        Self::tiny_with_words(preset, &crate::data::suite::vocabulary(), seed, device)
    }

    /// The built-in tiny VLM with a tokenizer that also covers `words` (e.g. a suite's
    /// vocabulary). Initialisation is a pure function of `seed`.
    pub fn tiny_with_words(
        preset: &str,
        words: &[String],
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let tokenizer = tok::build(words);
        let mut cfg = config::preset(preset, tokenizer.get_vocab_size(true))?;
        cfg.eos_token_id = tokenizer.token_to_id(tok::EOS);
        cfg.pad_token_id = tokenizer.token_to_id(tok::PAD);
        Self::random(cfg, tokenizer, seed, device)
    }

    /// A randomly initialised model of any config: normal(0, 0.02) weights, zero biases, unit
    /// norm scales, drawn in name order from one seeded stream.
    pub fn random(
        cfg: VlmConfig,
        tokenizer: Tokenizer,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let p = Self::build(Spec::Tiny(Box::new(cfg)), tokenizer, device, DType::F32)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        p.initialise(|shape| {
            let v: Vec<f32> = (0..shape.elem_count())
                .map(|_| 0.02 * normal(&mut rng))
                .collect();
            Tensor::from_vec(v, shape, device)
        })?;
        Ok(p)
    }

    /// A randomly initialised model of a checkpoint directory's config, tokenizer and (for
    /// Qwen-VL) processor and chat template, without reading its weights: what `curric bench
    /// --model` measures when a directory holds only the config of a model too large to have
    /// here. Weights are drawn on the device, not reproducibly.
    pub fn random_like(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: cfg_path.clone(),
            message: e.to_string(),
        })?;
        let (spec, tokenizer) = if qwen_vl::Family::detect(&v).is_some() {
            let (spec, tokenizer) = Self::qwen_spec(dir, &v, Layout::Nested)?;
            (Spec::QwenVl(Box::new(spec)), tokenizer)
        } else {
            let cfg = VlmConfig::from_json(&text).map_err(|message| ModelError::Config {
                path: cfg_path,
                message,
            })?;
            (Spec::Tiny(Box::new(cfg)), checkpoint::read_tokenizer(dir)?)
        };
        let p = Self::build(spec, tokenizer, device, DType::F32)?;
        p.initialise(|shape| Tensor::randn(0f32, 0.02, shape, device))?;
        Ok(p)
    }

    /// Sets every variable: biases 0, norm scales 1, other weights from `draw`, in name order.
    fn initialise(
        &self,
        mut draw: impl FnMut(candle_core::Shape) -> candle_core::Result<Tensor>,
    ) -> Result<(), ModelError> {
        for (name, var) in self.named_vars() {
            let shape = var.shape().clone();
            let is_norm = ["norm.weight", "norm1.weight", "norm2.weight", "ln_q.weight"]
                .iter()
                .any(|s| name.ends_with(s));
            let t = if name.ends_with("bias") {
                Tensor::zeros(shape, self.dtype, &self.device)?
            } else if is_norm {
                Tensor::ones(shape, self.dtype, &self.device)?
            } else {
                draw(shape)?.to_dtype(self.dtype)?
            };
            var.set(&t)?;
        }
        Ok(())
    }

    /// Builds the variables for `spec` (values unspecified) and the model over them.
    fn build(
        spec: Spec,
        tokenizer: Tokenizer,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let (cfg, net, stops, image_token) = match &spec {
            Spec::Tiny(cfg) => {
                let eos = cfg
                    .eos_token_id
                    .or_else(|| tokenizer.token_to_id(tok::EOS))
                    .or_else(|| tokenizer.token_to_id("<|endoftext|>"));
                let net = Self::make_net(&spec, vb)?;
                let image = tokenizer.token_to_id(tok::IMAGE);
                ((**cfg).clone(), net, eos.into_iter().collect(), image)
            }
            Spec::QwenVl(q) => {
                let cfg = VlmConfig {
                    decoder: q.cfg.text.clone(),
                    vision: None,
                    preset: None,
                    eos_token_id: q.stops.first().copied(),
                    pad_token_id: q.cfg.pad_token_id,
                };
                let net = Self::make_net(&spec, vb)?;
                (cfg, net, q.stops.clone(), Some(q.cfg.image_token_id))
            }
        };
        let eos = *stops.first().ok_or_else(|| {
            ModelError::Invalid("no EOS token: set eos_token_id in config.json".into())
        })?;
        let pad = cfg.pad_token_id.unwrap_or(eos);
        Ok(Self {
            spec,
            cfg,
            net,
            varmap,
            tokenizer,
            device: device.clone(),
            dtype,
            frozen: Vec::new(),
            frozen_tower: None,
            reference: false,
            eos,
            stops,
            pad,
            image_token,
        })
    }

    fn make_net(spec: &Spec, vb: VarBuilder) -> candle_core::Result<Net> {
        Ok(match spec {
            Spec::Tiny(cfg) => Net::Tiny(Vlm::new(cfg, vb)?),
            Spec::QwenVl(q) => Net::QwenVl(QwenVl::new(&q.cfg, vb)?),
        })
    }

    /// The model over detached views of the variables: the same storage (so it sees every
    /// update and restore), but a forward through it records no graph.
    fn detached_net(&self) -> Result<Net, ModelError> {
        let tensors: HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, self.dtype, &self.device);
        Ok(Self::make_net(&self.spec, vb)?)
    }

    /// A policy whose every variable comes from `tensors`; fails naming the first tensor that
    /// is missing, has the wrong shape, or is not used by `cfg`.
    pub fn from_tensors(
        cfg: VlmConfig,
        tokenizer: Tokenizer,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Self::from_spec(
            Spec::Tiny(Box::new(cfg)),
            tokenizer,
            tensors,
            device,
            DType::F32,
        )
    }

    /// `tensors` are named as the model names its variables.
    fn from_spec(
        spec: Spec,
        tokenizer: Tokenizer,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let p = Self::build(spec, tokenizer, device, dtype)?;
        // Errors name tensors as the checkpoint's files do.
        let file_name = |name: &str| match &p.spec {
            Spec::QwenVl(q) => q.layout.from_model(name),
            Spec::Tiny(_) => name.to_string(),
        };
        for (name, var) in p.named_vars() {
            let expected = var.dims().to_vec();
            let t = tensors
                .remove(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: file_name(&name),
                    expected: expected.clone(),
                })?;
            if t.dims() != expected.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    name: file_name(&name),
                    expected,
                    found: t.dims().to_vec(),
                });
            }
            var.set(&t.to_dtype(dtype)?.to_device(device)?)?;
        }
        let tied = p.cfg.decoder.tie_word_embeddings;
        let mut extras: Vec<&String> = tensors
            .keys()
            .filter(|k| !k.ends_with("rotary_emb.inv_freq"))
            .filter(|k| !(tied && k.as_str() == "lm_head.weight"))
            .collect();
        extras.sort();
        if let Some(k) = extras.first() {
            return Err(ModelError::UnexpectedTensor(file_name(k)));
        }
        Ok(p)
    }

    /// Loads a checkpoint directory: `config.json`, `tokenizer.json` and `model.safetensors`
    /// (or the shards of `model.safetensors.index.json`); bf16 / f16 weights become f32. A
    /// Qwen2-VL, Qwen2.5-VL or Qwen3-VL `config.json` loads that family, with its image processor and
    /// chat template; anything else is the built-in model or a text-only Qwen2.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
        let bad = |message: String| ModelError::Config {
            path: cfg_path.clone(),
            message,
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if qwen_vl::Family::detect(&v).is_some() {
            return Self::load_qwen_vl(dir, &v, device);
        }
        let cfg = VlmConfig::from_json(&text).map_err(bad)?;
        let tokenizer = checkpoint::read_tokenizer(dir)?;
        Self::from_tensors(cfg, tokenizer, checkpoint::read_tensors(dir)?, device)
    }

    fn load_qwen_vl(dir: &Path, v: &Value, device: &Device) -> Result<Self, ModelError> {
        let tensors = checkpoint::read_tensors(dir)?;
        let layout = Layout::of(tensors.keys());
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| (layout.to_model(&k), t))
            .collect();
        let (spec, tokenizer) = Self::qwen_spec(dir, v, layout)?;
        Self::from_spec(
            Spec::QwenVl(Box::new(spec)),
            tokenizer,
            tensors,
            device,
            DType::F32,
        )
    }

    /// Everything of a Qwen-VL checkpoint directory but its weights.
    fn qwen_spec(
        dir: &Path,
        v: &Value,
        layout: Layout,
    ) -> Result<(QwenSpec, Tokenizer), ModelError> {
        let cfg = qwen_vl::Config::from_json(v).map_err(|message| ModelError::Config {
            path: dir.join("config.json"),
            message,
        })?;
        let pre_path = dir.join("preprocessor_config.json");
        let pre = std::fs::read_to_string(&pre_path).map_err(|e| ModelError::io(&pre_path, e))?;
        let images = ImageProcessorConfig::from_json(&pre).map_err(|e| match e {
            ModelError::Config { message, .. } => ModelError::Config {
                path: pre_path.clone(),
                message,
            },
            other => other,
        })?;
        if images.merge_size != cfg.merge_size() {
            return Err(ModelError::Config {
                path: pre_path,
                message: format!(
                    "merge_size {} differs from config.json's spatial_merge_size {}",
                    images.merge_size,
                    cfg.merge_size()
                ),
            });
        }
        let template = ChatTemplate::from_dir(dir)?.ok_or_else(|| ModelError::Config {
            path: dir.join("tokenizer_config.json"),
            message: "no chat template (chat_template.jinja, chat_template.json or \
                      tokenizer_config.json's `chat_template`)"
                .into(),
        })?;
        let tokenizer = checkpoint::read_tokenizer(dir)?;
        let mut stops = cfg.eos_token_ids.clone();
        if let Ok(g) = std::fs::read_to_string(dir.join("generation_config.json")) {
            let g: Value = serde_json::from_str(&g).map_err(|e| ModelError::Config {
                path: dir.join("generation_config.json"),
                message: e.to_string(),
            })?;
            let ids = qwen_vl::token_ids(g.get("eos_token_id"));
            for id in ids {
                if !stops.contains(&id) {
                    stops.push(id);
                }
            }
        }
        let mut files = Vec::new();
        for name in QWEN_FILES {
            let p = dir.join(name);
            match std::fs::read(&p) {
                Ok(bytes) => files.push((name.to_string(), bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ModelError::io(p, e)),
            }
        }
        let spec = QwenSpec {
            cfg,
            images,
            template,
            layout,
            stops,
            files,
        };
        Ok((spec, tokenizer))
    }

    /// Loads a checkpoint directory, or a model id from the local Hugging Face cache
    /// (`HF_HOME`, never the network).
    pub fn load_pretrained(name: &str, device: &Device) -> Result<Self, ModelError> {
        let dir = checkpoint::resolve(name, &hf_hub::Cache::from_env())?;
        Self::load(&dir, device)
    }

    /// Writes a directory [`Self::load`] reads back into `dir` (created if needed): the
    /// weights as `model.safetensors`, with `config.json` and `tokenizer.json` (a Qwen-VL
    /// checkpoint's own files, unchanged, and its tensor names). Atomicity (temp dir +
    /// rename) is the caller's job.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let rename = |n: String| match &self.spec {
            Spec::QwenVl(q) => q.layout.from_model(&n),
            Spec::Tiny(_) => n,
        };
        let tensors: HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (rename(n), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
        match &self.spec {
            Spec::Tiny(cfg) => {
                let cfg_path = dir.join("config.json");
                std::fs::write(&cfg_path, cfg.to_json())
                    .map_err(|e| ModelError::io(cfg_path, e))?;
                self.tokenizer
                    .save(dir.join("tokenizer.json"), true)
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            }
            Spec::QwenVl(q) => {
                for (name, bytes) in &q.files {
                    let p = dir.join(name);
                    std::fs::write(&p, bytes).map_err(|e| ModelError::io(p, e))?;
                }
            }
        }
        Ok(())
    }

    /// Overwrites every variable in place with the weights `save` wrote into `dir` (so an
    /// optimiser built over them stays attached); fails naming a missing or mis-shaped tensor.
    pub fn load_weights(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        for (name, var) in self.named_vars() {
            let file_name = match &self.spec {
                Spec::QwenVl(q) => q.layout.from_model(&name),
                Spec::Tiny(_) => name,
            };
            let t = tensors
                .get(&file_name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: file_name.clone(),
                    expected: var.dims().to_vec(),
                })?;
            if t.dims() != var.dims() {
                return Err(ModelError::ShapeMismatch {
                    name: file_name,
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
            }
            var.set(&t.to_dtype(self.dtype)?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// A detached copy for the GRPO reference: own tensors, nothing trainable, log-probs
    /// returned without a graph.
    pub fn frozen_copy(&self) -> Result<Self, ModelError> {
        let tensors = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| Ok((n, v.as_tensor().copy()?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?;
        let mut p = Self::from_spec(
            self.spec.clone(),
            self.tokenizer.clone(),
            tensors,
            &self.device,
            self.dtype,
        )?;
        p.reference = true;
        // The reference's forward needs no graph at all.
        p.net = p.detached_net()?;
        Ok(p)
    }

    /// The same policy with its variables in `dtype` (f32, or bf16: half the memory for
    /// weights and activations, computed in bf16 with norms, softmax and rotary embeddings in
    /// f32; an optimiser keeps f32 master weights). Frozen prefixes are kept.
    pub fn with_dtype(self, dtype: DType) -> Result<Self, ModelError> {
        if dtype == self.dtype {
            return Ok(self);
        }
        if !matches!(dtype, DType::F32 | DType::BF16) {
            return Err(ModelError::Invalid(format!(
                "dtype {dtype:?}: curric trains in f32 or bf16"
            )));
        }
        let tensors = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        let mut p = Self::from_spec(
            self.spec.clone(),
            self.tokenizer.clone(),
            tensors,
            &self.device,
            dtype,
        )?;
        p.reference = self.reference;
        if p.reference {
            p.net = p.detached_net()?;
        }
        p.set_frozen(&self.frozen)?;
        Ok(p)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Excludes variables whose name is a prefix or lies under one (`visual` freezes
    /// `visual.*`). Replaces the previous set. Qwen-VL names match in either checkpoint
    /// layout, and without the leading `model.`: `visual.merger` freezes
    /// `model.visual.merger.*`.
    pub fn set_frozen(&mut self, prefixes: &[String]) -> Result<(), ModelError> {
        self.frozen = prefixes
            .iter()
            .map(|p| p.trim_end_matches('.').to_string())
            .collect();
        // A frozen vision tower runs over detached weights and builds no graph.
        self.frozen_tower = if !self.reference && self.is_frozen(self.vision_prefix()) {
            Some(self.detached_net()?)
        } else {
            None
        };
        Ok(())
    }

    pub fn frozen(&self) -> &[String] {
        &self.frozen
    }

    fn is_frozen(&self, name: &str) -> bool {
        if self.reference {
            return true;
        }
        let names = match &self.spec {
            Spec::QwenVl(_) => qwen_vl::names_of(name),
            Spec::Tiny(_) => vec![name.to_string()],
        };
        qwen_vl::frozen_by(&names, &self.frozen)
    }

    /// Every variable by checkpoint name, sorted.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let sorted: BTreeMap<String, Var> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        sorted.into_iter().collect()
    }

    /// Trainable variables by name, sorted (frozen prefixes excluded).
    pub fn named_trainable_vars(&self) -> Vec<(String, Var)> {
        self.named_vars()
            .into_iter()
            .filter(|(n, _)| !self.is_frozen(n))
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The decoder's config; the vision tower's for the built-in model.
    pub fn config(&self) -> &VlmConfig {
        &self.cfg
    }

    /// Whether prompts may carry an image: a Qwen-VL checkpoint or the built-in VLM; a plain
    /// Qwen2 decoder reads text only.
    pub fn sees_images(&self) -> bool {
        match &self.spec {
            Spec::Tiny(c) => c.vision.is_some(),
            Spec::QwenVl(_) => true,
        }
    }

    /// `tiny/<preset>`, `qwen2`, or the Qwen-VL family.
    pub fn family(&self) -> String {
        match &self.spec {
            Spec::Tiny(c) => match &c.preset {
                Some(p) => format!("tiny/{p}"),
                None => "qwen2".into(),
            },
            Spec::QwenVl(q) => q.cfg.family.name().to_string(),
        }
    }

    /// Positions the decoder can address.
    pub fn context_len(&self) -> usize {
        self.cfg.decoder.max_position_embeddings
    }

    /// The most decoder tokens one image can take (0 without a vision tower).
    pub fn max_image_tokens(&self) -> usize {
        match &self.spec {
            Spec::Tiny(c) => c.vision.as_ref().map_or(0, |v| v.num_patches()),
            Spec::QwenVl(q) => q.images.max_pixels / (q.images.factor() * q.images.factor()),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The built-in model (none for a Qwen-VL checkpoint).
    pub fn vlm(&self) -> Option<&Vlm> {
        match &self.net {
            Net::Tiny(v) => Some(v),
            Net::QwenVl(_) => None,
        }
    }

    /// The Qwen-VL model (none for the built-in one).
    pub fn qwen_vl(&self) -> Option<&QwenVl> {
        match &self.net {
            Net::QwenVl(q) => Some(q),
            Net::Tiny(_) => None,
        }
    }

    pub fn decoder(&self) -> &Decoder {
        match &self.net {
            Net::Tiny(v) => &v.decoder,
            Net::QwenVl(q) => &q.decoder,
        }
    }

    pub fn eos_token(&self) -> u32 {
        self.eos
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        tok::encode(&self.tokenizer, text)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        tok::decode(&self.tokenizer, ids)
    }

    /// The text a Qwen-VL prompt becomes through the checkpoint's chat template: one user
    /// turn, the image where the prompt has `<image>` (first when it has none), and the
    /// assistant's header.
    pub fn chat_prompt(&self, input: &PolicyInput) -> Result<String, ModelError> {
        let Spec::QwenVl(q) = &self.spec else {
            return Ok(input.prompt.clone());
        };
        let text = |s: &str| json!({"type": "text", "text": s});
        let mut content = Vec::new();
        match (&input.image, input.prompt.find(tok::IMAGE)) {
            (Some(_), Some(at)) => {
                let (before, after) = (&input.prompt[..at], &input.prompt[at + tok::IMAGE.len()..]);
                if !before.trim().is_empty() {
                    content.push(text(before.trim_end()));
                }
                content.push(json!({"type": "image"}));
                if !after.trim().is_empty() {
                    content.push(text(after.trim_start()));
                }
            }
            (Some(_), None) => {
                content.push(json!({"type": "image"}));
                content.push(text(&input.prompt));
            }
            (None, _) => content.push(text(&input.prompt)),
        }
        q.template
            .render(&json!([{"role": "user", "content": content}]), true)
    }

    /// Prompt rows of `inputs` and the distinct images they show.
    fn prompts<'a>(&self, inputs: &'a [PolicyInput]) -> Result<Prompts<'a>, ModelError> {
        let mut images: Vec<&'a image::RgbImage> = Vec::new();
        // A group repeats one prompt G times with the same `Arc`'d image: encode each
        // distinct image once and share its vision tokens between rows.
        let mut image_of = Vec::with_capacity(inputs.len());
        for inp in inputs {
            image_of.push(inp.image.as_ref().map(|img| {
                match images.iter().position(|&m| std::ptr::eq(m, img.as_ref())) {
                    Some(k) => k,
                    None => {
                        images.push(img.as_ref());
                        images.len() - 1
                    }
                }
            }));
        }
        let (patches, sizes) = match &self.spec {
            Spec::Tiny(c) => {
                let n = c.vision.as_ref().map_or(0, |v| v.num_patches());
                (Vec::new(), vec![n; images.len()])
            }
            Spec::QwenVl(q) => {
                let patches = images
                    .iter()
                    .map(|img| q.images.preprocess(img))
                    .collect::<Result<Vec<_>, _>>()?;
                let sizes = patches
                    .iter()
                    .map(|p| q.images.merged_tokens(p.grid_thw))
                    .collect();
                (patches, sizes)
            }
        };
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for n in &sizes {
            offsets.push(at);
            at += n;
        }
        let rows = inputs
            .iter()
            .zip(&image_of)
            .enumerate()
            .map(|(i, (inp, &img))| match &self.spec {
                Spec::Tiny(c) => self.tiny_row(c, i, inp, img, &sizes),
                Spec::QwenVl(q) => self.qwen_row(q, inp, img, &sizes, &patches),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prompts {
            rows,
            min_width: 0,
            images,
            patches,
            offsets,
        })
    }

    /// A built-in prompt: vision tokens at `<image>` (or first), positions counting up.
    fn tiny_row(
        &self,
        cfg: &VlmConfig,
        index: usize,
        inp: &PolicyInput,
        image: Option<usize>,
        sizes: &[usize],
    ) -> Result<PromptRow, ModelError> {
        let ids = self.encode(&inp.prompt)?;
        let mut items = Vec::with_capacity(ids.len());
        match image {
            None => items.extend(ids.iter().map(|&t| Item::Tok(t))),
            Some(k) => {
                cfg.vision.as_ref().ok_or(ModelError::NoVision { index })?;
                let vis = (0..sizes[k]).map(|j| Item::Vis(k, j));
                match ids.iter().position(|&t| Some(t) == self.image_token) {
                    Some(at) => {
                        items.extend(ids[..at].iter().map(|&t| Item::Tok(t)));
                        items.extend(vis);
                        items.extend(ids[at + 1..].iter().map(|&t| Item::Tok(t)));
                    }
                    None => {
                        items.extend(vis);
                        items.extend(ids.iter().map(|&t| Item::Tok(t)));
                    }
                }
            }
        }
        let pos: Vec<i64> = (0..items.len() as i64).collect();
        Ok(PromptRow {
            next: items.len() as i64,
            pos: [pos.clone(), pos.clone(), pos],
            items,
        })
    }

    /// A Qwen-VL prompt: the chat template's text, its `<|image_pad|>` expanded to the image's
    /// merged tokens, with the M-RoPE positions Hugging Face's `get_rope_index` gives.
    fn qwen_row(
        &self,
        q: &QwenSpec,
        inp: &PolicyInput,
        image: Option<usize>,
        sizes: &[usize],
        patches: &[Patches],
    ) -> Result<PromptRow, ModelError> {
        let pad = q.cfg.image_token_id;
        let ids = self.encode(&self.chat_prompt(inp)?)?;
        let pads = ids.iter().filter(|&&t| t == pad).count();
        if pads != usize::from(image.is_some()) {
            return Err(ModelError::Invalid(format!(
                "the chat template gave {pads} image placeholders for {} image(s)",
                usize::from(image.is_some())
            )));
        }
        let mut items = Vec::with_capacity(ids.len());
        let mut tokens = Vec::with_capacity(ids.len());
        for &t in &ids {
            match image {
                Some(k) if t == pad => {
                    items.extend((0..sizes[k]).map(|j| Item::Vis(k, j)));
                    tokens.extend(std::iter::repeat_n(pad, sizes[k]));
                }
                _ => {
                    items.push(Item::Tok(t));
                    tokens.push(t);
                }
            }
        }
        let grids: Vec<[usize; 3]> = image.map(|k| patches[k].grid_thw).into_iter().collect();
        let ri = rope_index(&tokens, pad, &grids, q.cfg.merge_size())?;
        Ok(PromptRow {
            items,
            next: tokens.len() as i64 + ri.delta,
            pos: ri.positions,
        })
    }

    /// Image features (`[tokens, d]`, all images in order) and DeepStack features.
    fn image_features(&self, prompts: &Prompts) -> Result<(Tensor, Vec<Tensor>), ModelError> {
        let dev = &self.device;
        let d = self.cfg.decoder.hidden_size;
        // A frozen tower runs over detached weights (the projector of the built-in model
        // trains on).
        let tower = self.frozen_tower.as_ref().unwrap_or(&self.net);
        match (&self.net, tower) {
            (Net::Tiny(vlm), Net::Tiny(tower)) => {
                let (Some(visual), Some(projector)) = (&tower.visual, &vlm.projector) else {
                    return Err(ModelError::NoVision { index: 0 });
                };
                let pixels = visual.pixels(&prompts.images, dev)?.to_dtype(self.dtype)?;
                let n = prompts.images.len() * self.max_image_tokens();
                let f = candle_core::Module::forward(projector, &visual.forward(&pixels)?)?;
                Ok((f.reshape((n, d))?, Vec::new()))
            }
            (Net::QwenVl(_), Net::QwenVl(model)) => {
                let rows: usize = prompts.patches.iter().map(Patches::rows).sum();
                let row_len = prompts.patches.first().map_or(0, |p| p.row_len);
                let values: Vec<f32> = prompts
                    .patches
                    .iter()
                    .flat_map(|p| p.values.iter().copied())
                    .collect();
                let pixels =
                    Tensor::from_vec(values, (rows, row_len), dev)?.to_dtype(self.dtype)?;
                let grids: Vec<[usize; 3]> = prompts.patches.iter().map(|p| p.grid_thw).collect();
                let f = model.encode_images(&pixels, &grids)?;
                Ok((f.embeds, f.deepstack))
            }
            _ => unreachable!("a frozen tower is built from the same spec"),
        }
    }

    fn vision_prefix(&self) -> &'static str {
        match self.spec {
            Spec::Tiny(_) => "visual",
            Spec::QwenVl(_) => "model.visual",
        }
    }

    /// Positions per axis (`B · W`) of rows laid out as `left-padded prompt (width p) +
    /// suffix (width c)`: pads at 0, suffix tokens continuing from each prompt.
    fn batch_axes(rows: &[PromptRow], p: usize, c: usize) -> [Vec<i64>; 3] {
        let w = p + c;
        let mut axes: [Vec<i64>; 3] = Default::default();
        for (a, axis) in axes.iter_mut().enumerate() {
            axis.reserve(rows.len() * w);
            for r in rows {
                let start = p - r.items.len();
                axis.extend(std::iter::repeat_n(0, start));
                axis.extend(&r.pos[a]);
                axis.extend((0..c as i64).map(|j| r.next + j));
            }
        }
        axes
    }

    /// Embeddings `[B, W, d]` of rows laid out as `left-padded prompt (width p) + suffix`
    /// (suffix right-padded to the widest), with key validity, positions and DeepStack
    /// addends.
    fn embed_batch(&self, prompts: &Prompts, suffixes: &[&[u32]]) -> Result<Batch, ModelError> {
        let rows = &prompts.rows;
        let b = rows.len();
        let p = rows
            .iter()
            .map(|r| r.items.len())
            .max()
            .unwrap_or(0)
            .max(prompts.min_width)
            .max(1);
        let c = suffixes.iter().map(|s| s.len()).max().unwrap_or(0);
        let w = p + c;
        let mut ids = vec![self.pad; b * w];
        let mut gather: Vec<u32> = (0..(b * w) as u32).collect();
        // DeepStack rows: 0 is a zero row, image token `i` is row `1 + i`.
        let mut deep_gather = vec![0u32; b * w];
        let mut valid = vec![vec![false; w]; b];
        for (r, row) in rows.iter().enumerate() {
            let start = p - row.items.len();
            for (j, item) in row.items.iter().enumerate() {
                let col = r * w + start + j;
                match *item {
                    Item::Tok(t) => ids[col] = t,
                    Item::Vis(k, patch) => {
                        let at = prompts.offsets[k] + patch;
                        gather[col] = (b * w + at) as u32;
                        deep_gather[col] = 1 + at as u32;
                    }
                }
                valid[r][start + j] = true;
            }
            for (j, &t) in suffixes[r].iter().enumerate() {
                ids[r * w + p + j] = t;
                valid[r][p + j] = true;
            }
        }
        let axes = Self::batch_axes(rows, p, c);
        self.check_positions(axes.iter().flatten())?;
        let dev = &self.device;
        let d = self.cfg.decoder.hidden_size;
        let ids_t = Tensor::from_vec(ids, b * w, dev)?;
        let tok_emb = self.decoder().embed(&ids_t)?;
        let (emb, addends) = if prompts.images.is_empty() {
            (tok_emb, Vec::new())
        } else {
            let (vis, deepstack) = self.image_features(prompts)?;
            let all = Tensor::cat(&[&tok_emb, &vis], 0)?;
            let emb = all.index_select(&Tensor::from_vec(gather, b * w, dev)?, 0)?;
            let deep_idx = Tensor::from_vec(deep_gather, b * w, dev)?;
            let zero = Tensor::zeros((1, d), self.dtype, dev)?;
            let addends = deepstack
                .iter()
                .map(|f| {
                    Tensor::cat(&[&zero, f], 0)?
                        .index_select(&deep_idx, 0)?
                        .reshape((b, w, d))
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            (emb, addends)
        };
        Ok(Batch {
            emb: emb.reshape((b, w, d))?,
            valid,
            axes,
            addends,
            prompt_width: p,
        })
    }

    /// Hidden states `[B, 1, d]` of one token per row (`ids`) at each row's next position,
    /// attending to the cache (keys valid per `valid`) and appended to it.
    fn decode_step(
        &self,
        ids: Vec<u32>,
        next: &[i64],
        valid: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let dec = self.decoder();
        let (dev, n) = (&self.device, ids.len());
        let p = next.to_vec();
        let rope = dec.rope_tables(&[p.clone(), p.clone(), p], n, 1, dev)?;
        let mask = causal_mask(valid, 1, dev)?;
        let x = dec.embed(&Tensor::from_vec(ids, (n, 1), dev)?)?;
        Ok(dec.forward_rope(&x, &rope, Some(&mask), Some(cache), &[], None)?)
    }

    /// Next-token logits `[B, C, V]` for every completion position from one full forward
    /// pass (teacher forcing), with the completion mask `[B, C]`.
    pub fn completion_logits(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> Result<(Tensor, Tensor), ModelError> {
        one_each(inputs, completions.len(), "completions")?;
        let b = inputs.len();
        let suffixes: Vec<&[u32]> = completions.iter().map(Vec::as_slice).collect();
        let c = suffixes.iter().map(|s| s.len()).max().unwrap_or(0);
        let dev = &self.device;
        let mut m = vec![0f32; b * c];
        for (r, s) in suffixes.iter().enumerate() {
            m[r * c..r * c + s.len()].fill(1.0);
        }
        let mask_t = Tensor::from_vec(m, (b, c), dev)?;
        if c > 0 {
            if let Some(logits) = self.shared_prompt_logits(inputs, completions)? {
                return Ok((logits, mask_t));
            }
        }
        let prompts = self.prompts(inputs)?;
        if c == 0 {
            let v = self.cfg.decoder.vocab_size;
            return Ok((Tensor::zeros((b, 0, v), DType::F32, dev)?, mask_t));
        }
        let (h, p) = self.forward_batch(&prompts, &suffixes, None)?;
        // Position p-1+j predicts completion token j; only those reach the vocabulary head.
        let logits = self.decoder().logits(&h.narrow(1, p - 1, c)?)?;
        Ok((logits, mask_t))
    }

    /// [`Self::completion_logits`]' logits with each distinct prompt computed once: a GRPO
    /// batch holds every prompt G times, and its positions (an image's hundreds of vision
    /// tokens among them) are the same in all G rows, in the forward and in the backward.
    /// The completions attend to their prompt's keys and values, which gather the gradient
    /// of all G. `None` when no prompt repeats or the fused layer does not apply.
    pub fn shared_prompt_logits(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> Result<Option<Tensor>, ModelError> {
        one_each(inputs, completions.len(), "completions")?;
        let dev = &self.device;
        let c = completions.iter().map(Vec::len).max().unwrap_or(0);
        if c == 0 || !super::ops::fused_on(dev, self.dtype) {
            return Ok(None);
        }
        let Some(shared) = Shared::of(inputs) else {
            return Ok(None);
        };
        let dec = self.decoder();
        let prompts = shared.prompts(self, 0)?;
        let (distinct, group) = (&shared.inputs, &shared.group);
        let Batch {
            emb: xp,
            valid: valid_p,
            axes: axes_p,
            addends,
            prompt_width: p,
        } = self.embed_batch(&prompts, &vec![&[][..]; distinct.len()])?;
        let b = inputs.len();
        let mut ids = vec![self.pad; b * c];
        let mut valid = Vec::with_capacity(b);
        let mut pos = Vec::with_capacity(b * c);
        for (r, s) in completions.iter().enumerate() {
            let g = group[r] as usize;
            ids[r * c..r * c + s.len()].copy_from_slice(s);
            let mut v = valid_p[g].clone();
            v.extend((0..c).map(|j| j < s.len()));
            valid.push(v);
            let next = prompts.rows[g].next;
            pos.extend((0..c as i64).map(|j| next + j));
        }
        self.check_positions(&pos)?;
        let xc = dec.embed(&Tensor::from_vec(ids, (b, c), dev)?)?;
        let rope_p = dec.rope_tables(&axes_p, distinct.len(), p, dev)?;
        let rope_c = dec.rope_tables(&[pos.clone(), pos.clone(), pos], b, c, dev)?;
        let mask_p = causal_mask(&valid_p, p, dev)?;
        let mask_c = causal_mask(&valid, c, dev)?;
        let group = Tensor::from_vec(group.clone(), b, dev)?;
        let Some((hp, hc)) = dec.forward_shared(
            &xp,
            (&rope_p, &mask_p),
            &xc,
            (&rope_c, &mask_c),
            &group,
            &addends,
        )?
        else {
            return Ok(None);
        };
        // The prompt's last position predicts completion token 0; completion position j
        // predicts token j + 1.
        let first = hp
            .narrow(1, p - 1, 1)?
            .contiguous()?
            .index_select(&group, 0)?;
        let h = if c > 1 {
            Tensor::cat(&[&first, &hc.narrow(1, 0, c - 1)?], 1)?
        } else {
            first
        };
        Ok(Some(dec.logits(&h)?))
    }

    /// An error unless every position is one the checkpoint has a rotary position for.
    fn check_positions<'a>(
        &self,
        positions: impl IntoIterator<Item = &'a i64>,
    ) -> Result<(), ModelError> {
        let last = positions.into_iter().copied().max().unwrap_or(0) as usize;
        let max = self.cfg.decoder.max_position_embeddings;
        if last >= max {
            return Err(ModelError::Invalid(format!(
                "sequence of {} positions exceeds max_position_embeddings = {max}",
                last + 1
            )));
        }
        Ok(())
    }

    /// Final hidden states `[B, W, d]` of prompts followed by `suffixes`, and the prompt
    /// width; `trace` receives each decoder layer's output.
    fn forward_batch(
        &self,
        prompts: &Prompts,
        suffixes: &[&[u32]],
        trace: Option<&mut Vec<Tensor>>,
    ) -> Result<(Tensor, usize), ModelError> {
        let dec = self.decoder();
        let Batch {
            emb,
            valid,
            axes,
            addends,
            prompt_width: p,
        } = self.embed_batch(prompts, suffixes)?;
        let (b, w) = (
            valid.len(),
            p + suffixes.iter().map(|s| s.len()).max().unwrap_or(0),
        );
        let rope = dec.rope_tables(&axes, b, w, &self.device)?;
        let mask = causal_mask(&valid, w, &self.device)?;
        let h = dec.forward_rope(&emb, &rope, Some(&mask), None, &addends, trace)?;
        Ok((h, p))
    }

    /// Every decoder layer's output and the logits `[B, W, V]` of the prompts followed by
    /// `completions`, the prompts left-padded to width `p` (returned): what parity tests
    /// compare with a reference implementation.
    pub fn trace(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> Result<(Vec<Tensor>, Tensor, usize), ModelError> {
        let prompts = self.prompts(inputs)?;
        let suffixes: Vec<&[u32]> = completions.iter().map(Vec::as_slice).collect();
        let mut layers = Vec::new();
        let (h, p) = self.forward_batch(&prompts, &suffixes, Some(&mut layers))?;
        Ok((layers, self.decoder().logits(&h)?, p))
    }

    /// The prompt ids of `input` as the model reads them (image tokens as the image token).
    pub fn prompt_ids(&self, input: &PolicyInput) -> Result<Vec<u32>, ModelError> {
        let prompts = self.prompts(std::slice::from_ref(input))?;
        let image = self.image_token.unwrap_or(self.pad);
        Ok(prompts.rows[0]
            .items
            .iter()
            .map(|it| match *it {
                Item::Tok(t) => t,
                Item::Vis(..) => image,
            })
            .collect())
    }

    /// The same logits as [`Self::completion_logits`] computed the way generation does:
    /// prefill the prompt into a KV cache, then feed one completion token per step. Rows are
    /// padded on the right with the pad token (those positions are not comparable).
    pub fn cached_completion_logits(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> Result<Tensor, ModelError> {
        let b = inputs.len();
        let dev = &self.device;
        let dec = self.decoder();
        let c = completions.iter().map(Vec::len).max().unwrap_or(0);
        let prompts = self.prompts(inputs)?;
        let empty: Vec<&[u32]> = vec![&[]; b];
        let Batch {
            emb,
            mut valid,
            axes,
            addends,
            prompt_width: p,
        } = self.embed_batch(&prompts, &empty)?;
        let mut cache = KvCache::new(dec.config().num_hidden_layers);
        let mask = causal_mask(&valid, p, dev)?;
        let rope = dec.rope_tables(&axes, b, p, dev)?;
        let h = dec.forward_rope(&emb, &rope, Some(&mask), Some(&mut cache), &addends, None)?;
        let mut steps = vec![dec.logits(&h.narrow(1, p - 1, 1)?)?];
        let mut next_pos: Vec<i64> = prompts.rows.iter().map(|r| r.next).collect();
        for j in 0..c.saturating_sub(1) {
            let ids: Vec<u32> = completions
                .iter()
                .map(|s| s.get(j).copied().unwrap_or(self.pad))
                .collect();
            for v in valid.iter_mut() {
                v.push(true);
            }
            let h = self.decode_step(ids, &next_pos, &valid, &mut cache)?;
            steps.push(dec.logits(&h)?);
            next_pos.iter_mut().for_each(|x| *x += 1);
        }
        Ok(Tensor::cat(&steps, 1)?)
    }

    /// Log-probs of `completions` as [`PolicyModel::logprobs`], with model errors typed.
    pub fn token_logprobs(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> Result<TokenLogProbs, ModelError> {
        let (logits, mask_t) = self.completion_logits(inputs, completions)?;
        let (b, c) = mask_t.dims2()?;
        let dev = &self.device;
        if c == 0 {
            return Ok(TokenLogProbs {
                logp: mask_t.clone(),
                entropy: mask_t.clone(),
                mask: mask_t,
            });
        }
        let lsm = log_softmax(&logits.to_dtype(DType::F32)?)?;
        let mut targets = vec![0u32; b * c];
        for (r, s) in completions.iter().enumerate() {
            targets[r * c..r * c + s.len()].copy_from_slice(s);
        }
        let targets = Tensor::from_vec(targets, (b, c, 1), dev)?;
        let logp = (lsm.gather(&targets, D::Minus1)?.squeeze(D::Minus1)? * &mask_t)?;
        let lsm_d = lsm.detach();
        let entropy = ((lsm_d.exp()? * &lsm_d)?.sum(D::Minus1)?.neg()? * &mask_t)?;
        let logp = if self.reference { logp.detach() } else { logp };
        Ok(TokenLogProbs {
            logp,
            entropy,
            mask: mask_t,
        })
    }

    /// Samples completions; `use_cache = false` recomputes the whole prefix every step (the
    /// bench's baseline; results are the same).
    pub fn sample(
        &self,
        inputs: &[PolicyInput],
        params: &SamplingParams,
        seeds: &[u64],
        use_cache: bool,
    ) -> Result<Vec<Completion>, ModelError> {
        self.sample_padded(inputs, params, seeds, use_cache, 0)
    }

    /// [`Policy::sample`] on the CPU with the rows split into one part per thread, each part
    /// decoded whole on its own thread: rows of a generation never meet, and a decode step is
    /// a dozen small products and kernels per layer which, split op by op between threads,
    /// each cost a wake-up and a wait (a tenth of the rollout on the TRL side-by-side's
    /// model). A part's prompts are left-padded to the whole batch's width, so each row is
    /// computed at the columns it has in one batch: its tokens do not depend on how the batch
    /// was split (tested), even where a kernel's sums would depend on where padding ends
    /// (`gemm` cuts inner dimensions longer than its block, such as long prompts' keys).
    pub fn sample_split(
        &self,
        inputs: &[PolicyInput],
        params: &SamplingParams,
        seeds: &[u64],
    ) -> Result<Vec<Completion>, ModelError> {
        let parts = rayon::current_num_threads().min(inputs.len() / MIN_PART_ROWS);
        self.sample_parts(inputs, params, seeds, parts)
    }

    /// [`Policy::sample_split`] into `parts` parts (one batch where that is under 2).
    pub fn sample_parts(
        &self,
        inputs: &[PolicyInput],
        params: &SamplingParams,
        seeds: &[u64],
        parts: usize,
    ) -> Result<Vec<Completion>, ModelError> {
        let parts = parts.min(inputs.len());
        if parts < 2 || !self.device.is_cpu() || inputs.len() != seeds.len() {
            return self.sample(inputs, params, seeds, true);
        }
        let pools = serial_pools(parts)?;
        let width = self
            .prompts(inputs)?
            .rows
            .iter()
            .map(|r| r.items.len())
            .max()
            .unwrap_or(0);
        let size = inputs.len().div_ceil(parts);
        let done: Vec<Result<Vec<Completion>, ModelError>> = std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .chunks(size)
                .zip(seeds.chunks(size))
                .zip(&pools)
                .map(|((inp, sd), pool)| {
                    s.spawn(move || {
                        pool.install(|| self.sample_padded(inp, params, sd, true, width))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut out = Vec::with_capacity(inputs.len());
        for part in done {
            out.extend(part?);
        }
        Ok(out)
    }

    fn sample_padded(
        &self,
        inputs: &[PolicyInput],
        params: &SamplingParams,
        seeds: &[u64],
        use_cache: bool,
        width: usize,
    ) -> Result<Vec<Completion>, ModelError> {
        one_each(inputs, seeds.len(), "seeds")?;
        let b = inputs.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let dev = &self.device;
        let dec = self.decoder();
        let mut rngs: Vec<ChaCha8Rng> = seeds
            .iter()
            .map(|&s| ChaCha8Rng::seed_from_u64(s))
            .collect();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut cache = KvCache::new(dec.config().num_hidden_layers);
        // A group's rows share their prompt: with the cache, each distinct prompt is
        // prefilled once and every row starts from a copy of its keys and values.
        let shared = if use_cache { Shared::of(inputs) } else { None };
        let (prompts, group) = match &shared {
            Some(sh) => (sh.prompts(self, width)?, Some(sh.group.as_slice())),
            None => (
                Prompts {
                    min_width: width,
                    ..self.prompts(inputs)?
                },
                None,
            ),
        };
        let rows = prompts.rows.len();
        let Batch {
            emb,
            valid,
            axes,
            addends,
            prompt_width: p,
        } = self.embed_batch(&prompts, &vec![&[][..]; rows])?;
        // Prompt embeddings (with vision tokens) are reused by the no-cache path each step.
        let prompt_emb = emb.detach();
        let addends: Vec<Tensor> = addends.iter().map(Tensor::detach).collect();
        let mask = causal_mask(&valid, p, dev)?;
        let rope = dec.rope_tables(&axes, rows, p, dev)?;
        let h = dec.forward_rope(
            &prompt_emb,
            &rope,
            Some(&mask),
            use_cache.then_some(&mut cache),
            &addends,
            None,
        )?;
        let mut last = dec.logits(&h.narrow(1, p - 1, 1)?.squeeze(1)?)?;
        let at: Vec<usize> = match group {
            Some(g) => {
                let idx = Tensor::from_vec(g.to_vec(), b, dev)?;
                cache.keep_rows(&idx)?;
                last = last.index_select(&idx, 0)?;
                g.iter().map(|&k| k as usize).collect()
            }
            None => (0..b).collect(),
        };
        let mut valid: Vec<Vec<bool>> = at.iter().map(|&k| valid[k].clone()).collect();
        let mut next_pos: Vec<i64> = at.iter().map(|&k| prompts.rows[k].next).collect();
        // With the cache, `alive[i]` is the input row at batch position i: finished rows
        // leave the batch once they are an eighth of it (compacting copies every layer's
        // cache, too dear to pay each time one row ends). Until then, and always without the
        // cache, finished rows decode padding that nothing reads.
        let mut alive: Vec<usize> = (0..b).collect();
        for step in 0..params.max_new_tokens {
            let rows: Vec<Vec<f32>> = last
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_vec2()?;
            let mut step_ids = Vec::with_capacity(alive.len());
            let mut keep = Vec::with_capacity(alive.len());
            for (i, &r) in alive.iter().enumerate() {
                if done[r] {
                    step_ids.push(self.pad);
                    continue;
                }
                let t = sample_row(&rows[i], params, &mut rngs[r]);
                out[r].push(t);
                if self.stops.contains(&t) {
                    done[r] = true;
                } else {
                    keep.push(i);
                }
                step_ids.push(t);
            }
            if done.iter().all(|&d| d) || step + 1 == params.max_new_tokens {
                break;
            }
            if use_cache && 8 * (alive.len() - keep.len()) >= alive.len() {
                let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
                cache.keep_rows(&Tensor::from_vec(idx, keep.len(), dev)?)?;
                valid = keep.iter().map(|&i| valid[i].clone()).collect();
                next_pos = keep.iter().map(|&i| next_pos[i]).collect();
                step_ids = keep.iter().map(|&i| step_ids[i]).collect();
                alive = keep.iter().map(|&i| alive[i]).collect();
            }
            for v in valid.iter_mut() {
                v.push(true);
            }
            if use_cache {
                let h = self.decode_step(step_ids, &next_pos, &valid, &mut cache)?;
                last = dec.logits(&h.squeeze(1)?)?;
            } else {
                let gen: Vec<Vec<u32>> = out
                    .iter()
                    .map(|o| {
                        let mut g = o.clone();
                        g.resize(step + 1, self.pad);
                        g
                    })
                    .collect();
                let w = p + step + 1;
                let axes = Self::batch_axes(&prompts.rows, p, step + 1);
                let flat: Vec<u32> = gen.concat();
                let gen_ids = Tensor::from_vec(flat, (b, step + 1), dev)?;
                let x = Tensor::cat(&[&prompt_emb, &dec.embed(&gen_ids)?], 1)?;
                let d = self.cfg.decoder.hidden_size;
                let tail = Tensor::zeros((b, step + 1, d), self.dtype, dev)?;
                let adds = addends
                    .iter()
                    .map(|a| Tensor::cat(&[a, &tail], 1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let rope = dec.rope_tables(&axes, b, w, dev)?;
                let mask = causal_mask(&valid, w, dev)?;
                let h = dec.forward_rope(&x, &rope, Some(&mask), None, &adds, None)?;
                last = dec.logits(&h.narrow(1, w - 1, 1)?.squeeze(1)?)?;
            }
            for np in next_pos.iter_mut() {
                *np += 1;
            }
        }
        out.into_iter()
            .map(|tokens| {
                let truncated = !tokens.last().is_some_and(|t| self.stops.contains(t));
                let body = if truncated {
                    &tokens[..]
                } else {
                    &tokens[..tokens.len() - 1]
                };
                let text = self.decode(body)?;
                Ok(Completion {
                    tokens,
                    text,
                    truncated,
                })
            })
            .collect()
    }
}

/// An error unless there are as many `what` as inputs.
fn one_each(inputs: &[PolicyInput], n: usize, what: &str) -> Result<(), ModelError> {
    if inputs.len() != n {
        return Err(ModelError::Invalid(format!(
            "{} inputs but {n} {what}",
            inputs.len()
        )));
    }
    Ok(())
}

/// The distinct prompts of a batch whose rows repeat some (a GRPO batch holds each G times).
struct Shared {
    inputs: Vec<PolicyInput>,
    /// Row `i` shows prompt `group[i]`.
    group: Vec<u32>,
    /// The first row showing each prompt.
    first: Vec<usize>,
}

impl Shared {
    /// `None` when every row's prompt is its own.
    fn of(rows: &[PolicyInput]) -> Option<Self> {
        let mut s = Shared {
            inputs: Vec::new(),
            group: Vec::with_capacity(rows.len()),
            first: Vec::new(),
        };
        for (i, row) in rows.iter().enumerate() {
            let same = |d: &PolicyInput| {
                d.prompt == row.prompt
                    && match (&d.image, &row.image) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (None, None) => true,
                        _ => false,
                    }
            };
            let k = match s.inputs.iter().position(same) {
                Some(k) => k,
                None => {
                    s.inputs.push(row.clone());
                    s.first.push(i);
                    s.inputs.len() - 1
                }
            };
            s.group.push(k as u32);
        }
        (s.inputs.len() < rows.len()).then_some(s)
    }

    /// The distinct prompts' rows, left-padded to at least `min_width`; errors name the row
    /// as the caller numbered it.
    fn prompts<'a>(&'a self, policy: &Policy, min_width: usize) -> Result<Prompts<'a>, ModelError> {
        let prompts = policy.prompts(&self.inputs).map_err(|e| match e {
            ModelError::NoVision { index } => ModelError::NoVision {
                index: self.first[index],
            },
            e => e,
        })?;
        Ok(Prompts {
            min_width,
            ..prompts
        })
    }
}

/// Batches with fewer rows than this per thread are decoded whole: a part of a few rows
/// fills little more than one of the panel kernel's 6-row tiles. (A floor, not tuned: the
/// rollouts measured had 64 rows per thread.)
const MIN_PART_ROWS: usize = 8;

/// `n` single-thread pools, kept for the process: inside one, every product and kernel runs
/// on that pool's thread alone.
fn serial_pools(n: usize) -> Result<Vec<Arc<rayon::ThreadPool>>, ModelError> {
    static POOLS: Mutex<Vec<Arc<rayon::ThreadPool>>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    while pools.len() < n {
        let i = pools.len();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(move |_| format!("curric-decode-{i}"))
            .build()
            .map_err(|e| ModelError::Invalid(format!("decode thread: {e}")))?;
        pools.push(Arc::new(pool));
    }
    Ok(pools[..n].to_vec())
}

/// One standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Picks the next token of one row: argmax at temperature 0, else nucleus sampling. Draws
/// exactly one uniform per call, so a row's stream depends only on its own seed.
fn sample_row(logits: &[f32], params: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    let u: f64 = rng.random::<f64>();
    if params.temperature <= 0.0 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let t = params.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, ((l as f64 - max) / t).exp()))
        .collect();
    let z: f64 = probs.iter().map(|x| x.1).sum();
    let top_p = params.top_p.clamp(0.0, 1.0);
    if top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (k, (_, pr)) in probs.iter().enumerate() {
            cum += pr / z;
            if cum >= top_p {
                keep = k + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
    }
    let total: f64 = probs.iter().map(|x| x.1).sum();
    let mut target = u * total;
    for &(i, pr) in &probs {
        if target < pr {
            return i as u32;
        }
        target -= pr;
    }
    probs.last().map_or(0, |x| x.0 as u32)
}

impl PolicyModel for Policy {
    fn generate(
        &self,
        inputs: &[PolicyInput],
        params: &SamplingParams,
        seeds: &[u64],
    ) -> candle_core::Result<Vec<Completion>> {
        Ok(self.sample_split(inputs, params, seeds)?)
    }

    fn logprobs(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> candle_core::Result<TokenLogProbs> {
        Ok(self.token_logprobs(inputs, completions)?)
    }

    fn trainable_vars(&self) -> Vec<Var> {
        self.named_trainable_vars()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }
}
