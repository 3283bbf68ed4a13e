//! [`Policy`]: a [`Vlm`] with its tokenizer and variables — batched sampling with a KV cache,
//! per-token log-probs with gradients, freezing by name prefix, checkpoints.
//!
//! Batch layout: prompts (vision tokens spliced in at `<image>`, or prepended when the prompt
//! has no placeholder) are left-padded to a common length, so every row's last prompt token
//! sits at the same column; completions follow, right-padded. Padding is masked out of
//! attention and positions count only real tokens, so a row's result does not depend on what
//! else is in the batch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

use super::config::{self, VlmConfig};
use super::nn::causal_mask;
use super::qwen2::{log_softmax, KvCache};
use super::tokenizer as tok;
use super::vlm::Vlm;
use super::TokenLogProbs;
use super::{checkpoint, Completion, ModelError, PolicyInput, PolicyModel, SamplingParams};

/// One position of a prompt: a token, or patch `1` of batch image `0`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item {
    Tok(u32),
    Vis(usize, usize),
}

/// Embedded rows of one batch: `emb` `[B, W, d]`, key validity per row and column,
/// positions `[B, W]` (u32), and the width of the left-padded prompt part.
struct Batch {
    emb: Tensor,
    valid: Vec<Vec<bool>>,
    positions: Tensor,
    prompt_width: usize,
}

/// A trainable (or frozen) policy.
pub struct Policy {
    cfg: VlmConfig,
    vlm: Vlm,
    varmap: VarMap,
    tokenizer: Tokenizer,
    device: Device,
    frozen: Vec<String>,
    /// A reference copy: no variable is trainable and log-probs come back detached.
    reference: bool,
    eos: u32,
    pad: u32,
    image_token: Option<u32>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("preset", &self.cfg.preset)
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
        let p = Self::build(cfg, tokenizer, device)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (name, var) in p.named_vars() {
            let shape = var.shape().clone();
            let n = shape.elem_count();
            let is_norm = name.ends_with("norm.weight")
                || name.ends_with("layernorm.weight")
                || name.ends_with("norm1.weight")
                || name.ends_with("norm2.weight");
            let t = if name.ends_with("bias") {
                Tensor::zeros(shape, DType::F32, device)?
            } else if is_norm {
                Tensor::ones(shape, DType::F32, device)?
            } else {
                let v: Vec<f32> = (0..n).map(|_| 0.02 * normal(&mut rng)).collect();
                Tensor::from_vec(v, shape, device)?
            };
            var.set(&t)?;
        }
        Ok(p)
    }

    /// Builds the variables for `cfg` (values unspecified) and the model over them.
    fn build(cfg: VlmConfig, tokenizer: Tokenizer, device: &Device) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let vlm = Vlm::new(&cfg, vb)?;
        let eos = cfg
            .eos_token_id
            .or_else(|| tokenizer.token_to_id(tok::EOS))
            .or_else(|| tokenizer.token_to_id("<|endoftext|>"))
            .ok_or_else(|| {
                ModelError::Invalid("no EOS token: set eos_token_id in config.json".into())
            })?;
        let pad = cfg.pad_token_id.unwrap_or(eos);
        let image_token = tokenizer.token_to_id(tok::IMAGE);
        Ok(Self {
            cfg,
            vlm,
            varmap,
            tokenizer,
            device: device.clone(),
            frozen: Vec::new(),
            reference: false,
            eos,
            pad,
            image_token,
        })
    }

    /// A policy whose every variable comes from `tensors`; fails naming the first tensor that
    /// is missing, has the wrong shape, or is not used by `cfg`.
    pub fn from_tensors(
        cfg: VlmConfig,
        tokenizer: Tokenizer,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let p = Self::build(cfg, tokenizer, device)?;
        for (name, var) in p.named_vars() {
            let expected = var.dims().to_vec();
            let t = tensors
                .remove(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: name.clone(),
                    expected: expected.clone(),
                })?;
            if t.dims() != expected.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    name,
                    expected,
                    found: t.dims().to_vec(),
                });
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
        }
        let tied = p.cfg.decoder.tie_word_embeddings;
        let mut extras: Vec<&String> = tensors
            .keys()
            .filter(|k| !k.ends_with("rotary_emb.inv_freq"))
            .filter(|k| !(tied && k.as_str() == "lm_head.weight"))
            .collect();
        extras.sort();
        if let Some(k) = extras.first() {
            return Err(ModelError::UnexpectedTensor((*k).clone()));
        }
        Ok(p)
    }

    /// Loads `dir/config.json`, `dir/tokenizer.json` and `dir/model.safetensors` (or the shards
    /// of `model.safetensors.index.json`); bf16 / f16 weights become f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let (cfg, tokenizer, tensors) = checkpoint::read_dir(dir)?;
        Self::from_tensors(cfg, tokenizer, tensors, device)
    }

    /// Loads a checkpoint directory, or a model id from the local Hugging Face cache
    /// (`HF_HOME`, never the network).
    pub fn load_pretrained(name: &str, device: &Device) -> Result<Self, ModelError> {
        let dir = checkpoint::resolve(name, &hf_hub::Cache::from_env())?;
        Self::load(&dir, device)
    }

    /// Writes `model.safetensors`, `config.json` and `tokenizer.json` into `dir` (created if
    /// needed). Atomicity (temp dir + rename) is the caller's job.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let tensors: HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
        let cfg_path = dir.join("config.json");
        std::fs::write(&cfg_path, self.cfg.to_json()).map_err(|e| ModelError::io(cfg_path, e))?;
        self.tokenizer
            .save(dir.join("tokenizer.json"), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
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
        let mut p = Self::from_tensors(
            self.cfg.clone(),
            self.tokenizer.clone(),
            tensors,
            &self.device,
        )?;
        p.reference = true;
        Ok(p)
    }

    /// Excludes variables whose name is a prefix or lies under one (`visual` freezes
    /// `visual.*`). Replaces the previous set.
    pub fn set_frozen(&mut self, prefixes: &[String]) {
        self.frozen = prefixes
            .iter()
            .map(|p| p.trim_end_matches('.').to_string())
            .collect();
    }

    pub fn frozen(&self) -> &[String] {
        &self.frozen
    }

    fn is_frozen(&self, name: &str) -> bool {
        self.reference
            || self.frozen.iter().any(|p| {
                name == p || (name.starts_with(p.as_str()) && name[p.len()..].starts_with('.'))
            })
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

    pub fn config(&self) -> &VlmConfig {
        &self.cfg
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn vlm(&self) -> &Vlm {
        &self.vlm
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

    /// Prompt items per input and the distinct images they refer to.
    fn prompt_items<'a>(
        &self,
        inputs: &'a [PolicyInput],
    ) -> Result<(Vec<Vec<Item>>, Vec<&'a image::RgbImage>), ModelError> {
        let patches = self.cfg.vision.as_ref().map(|v| v.num_patches());
        let mut rows = Vec::with_capacity(inputs.len());
        let mut images: Vec<&'a image::RgbImage> = Vec::new();
        for (i, inp) in inputs.iter().enumerate() {
            let ids = self.encode(&inp.prompt)?;
            let mut row = Vec::with_capacity(ids.len() + patches.unwrap_or(0));
            match &inp.image {
                None => row.extend(ids.iter().map(|&t| Item::Tok(t))),
                Some(img) => {
                    let n = patches.ok_or(ModelError::NoVision { index: i })?;
                    // A group repeats one prompt G times with the same `Arc`'d image: encode
                    // each distinct image once and share its vision tokens between rows.
                    let k = match images.iter().position(|&m| std::ptr::eq(m, img.as_ref())) {
                        Some(k) => k,
                        None => {
                            images.push(img.as_ref());
                            images.len() - 1
                        }
                    };
                    let vis = (0..n).map(|j| Item::Vis(k, j));
                    match ids.iter().position(|&t| Some(t) == self.image_token) {
                        Some(at) => {
                            row.extend(ids[..at].iter().map(|&t| Item::Tok(t)));
                            row.extend(vis);
                            row.extend(ids[at + 1..].iter().map(|&t| Item::Tok(t)));
                        }
                        None => {
                            row.extend(vis);
                            row.extend(ids.iter().map(|&t| Item::Tok(t)));
                        }
                    }
                }
            }
            rows.push(row);
        }
        Ok((rows, images))
    }

    /// Embeddings `[B, W, d]` of rows laid out as `left-padded prompt (width p) + suffix`
    /// (suffix right-padded to the widest), with key validity and positions.
    fn embed_batch(
        &self,
        prompts: &[Vec<Item>],
        suffixes: &[&[u32]],
        images: &[&image::RgbImage],
    ) -> Result<Batch, ModelError> {
        let b = prompts.len();
        let p = prompts.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let c = suffixes.iter().map(|s| s.len()).max().unwrap_or(0);
        let w = p + c;
        let n_patch = self.cfg.vision.as_ref().map_or(0, |v| v.num_patches());
        let mut ids = vec![self.pad; b * w];
        let mut gather: Vec<u32> = (0..(b * w) as u32).collect();
        let mut valid = vec![vec![false; w]; b];
        let mut pos = vec![0u32; b * w];
        for r in 0..b {
            let pr = &prompts[r];
            let start = p - pr.len();
            let mut next = 0u32;
            for (j, item) in pr.iter().enumerate() {
                let col = r * w + start + j;
                match *item {
                    Item::Tok(t) => ids[col] = t,
                    Item::Vis(k, patch) => gather[col] = (b * w + k * n_patch + patch) as u32,
                }
                valid[r][start + j] = true;
                pos[col] = next;
                next += 1;
            }
            for j in 0..c {
                let col = r * w + p + j;
                if let Some(&t) = suffixes[r].get(j) {
                    ids[col] = t;
                    valid[r][p + j] = true;
                }
                pos[col] = next;
                next += 1;
            }
        }
        let max_pos = pos.iter().copied().max().unwrap_or(0) as usize;
        if max_pos >= self.cfg.decoder.max_position_embeddings {
            return Err(ModelError::Invalid(format!(
                "sequence of {} positions exceeds max_position_embeddings = {}",
                max_pos + 1,
                self.cfg.decoder.max_position_embeddings
            )));
        }
        let dev = &self.device;
        let d = self.cfg.decoder.hidden_size;
        let ids_t = Tensor::from_vec(ids, b * w, dev)?;
        let tok_emb = self.vlm.decoder.embed(&ids_t)?;
        let emb = if images.is_empty() {
            tok_emb
        } else {
            let visual = self
                .vlm
                .visual
                .as_ref()
                .ok_or(ModelError::NoVision { index: 0 })?;
            let pixels = visual.pixels(images, dev)?;
            let vis = self
                .vlm
                .forward_vision(&pixels)?
                .reshape((images.len() * n_patch, d))?;
            let all = Tensor::cat(&[&tok_emb, &vis], 0)?;
            all.index_select(&Tensor::from_vec(gather, b * w, dev)?, 0)?
        };
        let positions = Tensor::from_vec(pos, (b, w), dev)?;
        Ok(Batch {
            emb: emb.reshape((b, w, d))?,
            valid,
            positions,
            prompt_width: p,
        })
    }

    /// Next-token logits `[B, C, V]` for every completion position from one full forward
    /// pass (teacher forcing), with the completion mask `[B, C]`.
    pub fn completion_logits(
        &self,
        inputs: &[PolicyInput],
        completions: &[Vec<u32>],
    ) -> Result<(Tensor, Tensor), ModelError> {
        if inputs.len() != completions.len() {
            return Err(ModelError::Invalid(format!(
                "{} inputs but {} completions",
                inputs.len(),
                completions.len()
            )));
        }
        let b = inputs.len();
        let (prompts, images) = self.prompt_items(inputs)?;
        let suffixes: Vec<&[u32]> = completions.iter().map(Vec::as_slice).collect();
        let c = suffixes.iter().map(|s| s.len()).max().unwrap_or(0);
        let dev = &self.device;
        let mut m = vec![0f32; b * c];
        for (r, s) in suffixes.iter().enumerate() {
            m[r * c..r * c + s.len()].fill(1.0);
        }
        let mask_t = Tensor::from_vec(m, (b, c), dev)?;
        if c == 0 {
            let v = self.cfg.decoder.vocab_size;
            return Ok((Tensor::zeros((b, 0, v), DType::F32, dev)?, mask_t));
        }
        let Batch {
            emb,
            valid,
            positions,
            prompt_width: p,
        } = self.embed_batch(&prompts, &suffixes, &images)?;
        let mask = causal_mask(&valid, p + c, dev)?;
        let h = self
            .vlm
            .decoder
            .forward_embeds(&emb, &positions, Some(&mask), None)?;
        // Position p-1+j predicts completion token j; only those reach the vocabulary head.
        let logits = self.vlm.decoder.logits(&h.narrow(1, p - 1, c)?)?;
        Ok((logits, mask_t))
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
        let dec = &self.vlm.decoder;
        let c = completions.iter().map(Vec::len).max().unwrap_or(0);
        let (prompts, images) = self.prompt_items(inputs)?;
        let empty: Vec<&[u32]> = vec![&[]; b];
        let Batch {
            emb,
            mut valid,
            positions,
            prompt_width: p,
        } = self.embed_batch(&prompts, &empty, &images)?;
        let mut cache = KvCache::new(dec.config().num_hidden_layers);
        let mask = causal_mask(&valid, p, dev)?;
        let h = dec.forward_embeds(&emb, &positions, Some(&mask), Some(&mut cache))?;
        let mut steps = vec![dec.logits(&h.narrow(1, p - 1, 1)?)?];
        let mut next_pos: Vec<u32> = prompts.iter().map(|r| r.len() as u32).collect();
        for j in 0..c.saturating_sub(1) {
            let ids: Vec<u32> = completions
                .iter()
                .map(|s| s.get(j).copied().unwrap_or(self.pad))
                .collect();
            for v in valid.iter_mut() {
                v.push(true);
            }
            let ids = Tensor::from_vec(ids, (b, 1), dev)?;
            let pos = Tensor::from_vec(next_pos.clone(), (b, 1), dev)?;
            let mask = causal_mask(&valid, 1, dev)?;
            let h = dec.forward_embeds(&dec.embed(&ids)?, &pos, Some(&mask), Some(&mut cache))?;
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
        let lsm = log_softmax(&logits)?;
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
        if inputs.len() != seeds.len() {
            return Err(ModelError::Invalid(format!(
                "{} inputs but {} seeds",
                inputs.len(),
                seeds.len()
            )));
        }
        let b = inputs.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let dev = &self.device;
        let dec = &self.vlm.decoder;
        let (prompts, images) = self.prompt_items(inputs)?;
        let mut rngs: Vec<ChaCha8Rng> = seeds
            .iter()
            .map(|&s| ChaCha8Rng::seed_from_u64(s))
            .collect();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let empty: Vec<&[u32]> = vec![&[]; b];
        let Batch {
            emb,
            mut valid,
            positions,
            prompt_width: p,
        } = self.embed_batch(&prompts, &empty, &images)?;
        let mut next_pos: Vec<u32> = prompts.iter().map(|r| r.len() as u32).collect();
        let mut cache = KvCache::new(dec.config().num_hidden_layers);
        // Prompt embeddings (with vision tokens) are reused by the no-cache path each step.
        let prompt_emb = emb.detach();
        let mask = causal_mask(&valid, p, dev)?;
        let h = dec.forward_embeds(
            &prompt_emb,
            &positions,
            Some(&mask),
            use_cache.then_some(&mut cache),
        )?;
        let mut last = dec.logits(&h.narrow(1, p - 1, 1)?.squeeze(1)?)?;
        // With the cache, `alive[i]` is the input row at batch position i: a row leaves the
        // batch when it ends. Without it, every row stays and finished ones decode padding.
        let mut alive: Vec<usize> = (0..b).collect();
        for step in 0..params.max_new_tokens {
            let rows: Vec<Vec<f32>> = last.to_device(&Device::Cpu)?.to_vec2()?;
            let mut step_ids = Vec::with_capacity(alive.len());
            let mut keep = Vec::with_capacity(alive.len());
            for (i, &r) in alive.iter().enumerate() {
                if done[r] {
                    step_ids.push(self.pad);
                    continue;
                }
                let t = sample_row(&rows[i], params, &mut rngs[r]);
                out[r].push(t);
                if t == self.eos {
                    done[r] = true;
                } else {
                    keep.push(i);
                }
                step_ids.push(t);
            }
            if done.iter().all(|&d| d) || step + 1 == params.max_new_tokens {
                break;
            }
            if use_cache && keep.len() < alive.len() {
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
                let n = alive.len();
                let ids = Tensor::from_vec(step_ids, (n, 1), dev)?;
                let pos = Tensor::from_vec(next_pos.clone(), (n, 1), dev)?;
                let mask = causal_mask(&valid, 1, dev)?;
                let h =
                    dec.forward_embeds(&dec.embed(&ids)?, &pos, Some(&mask), Some(&mut cache))?;
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
                let mut pos = Vec::with_capacity(b * w);
                for pr in &prompts {
                    let start = p - pr.len();
                    pos.extend((0..w).map(|j| j.saturating_sub(start) as u32));
                }
                let flat: Vec<u32> = gen.concat();
                let gen_ids = Tensor::from_vec(flat, (b, step + 1), dev)?;
                let x = Tensor::cat(&[&prompt_emb, &dec.embed(&gen_ids)?], 1)?;
                let positions = Tensor::from_vec(pos, (b, w), dev)?;
                let mask = causal_mask(&valid, w, dev)?;
                let h = dec.forward_embeds(&x, &positions, Some(&mask), None)?;
                last = dec.logits(&h.narrow(1, w - 1, 1)?.squeeze(1)?)?;
            }
            for np in next_pos.iter_mut() {
                *np += 1;
            }
        }
        out.into_iter()
            .map(|tokens| {
                let truncated = tokens.last() != Some(&self.eos);
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
        Ok(self.sample(inputs, params, seeds, true)?)
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
