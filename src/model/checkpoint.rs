//! Reading checkpoint directories: `config.json`, `tokenizer.json`, and `model.safetensors` or
//! the shards named by `model.safetensors.index.json`, converted to f32 on the CPU.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tokenizers::Tokenizer;

use super::config::VlmConfig;
use super::ModelError;

/// Config, tokenizer and every tensor (f32) of a checkpoint directory.
pub fn read_dir(dir: &Path) -> Result<(VlmConfig, Tokenizer, HashMap<String, Tensor>), ModelError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let cfg = VlmConfig::from_json(&text).map_err(|message| ModelError::Config {
        path: cfg_path.clone(),
        message,
    })?;
    Ok((cfg, read_tokenizer(dir)?, read_tensors(dir)?))
}

/// `dir/tokenizer.json`.
pub fn read_tokenizer(dir: &Path) -> Result<Tokenizer, ModelError> {
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(ModelError::io(
            &tok_path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
        ));
    }
    Tokenizer::from_file(&tok_path)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", tok_path.display())))
}

/// Every tensor of `model.safetensors` or of the index's shards, as f32 on the CPU.
pub fn read_tensors(dir: &Path) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut tensors = HashMap::new();
    for file in weight_files(dir)? {
        let loaded = candle_core::safetensors::load(&file, &Device::Cpu)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", file.display())))?;
        for (name, t) in loaded {
            let t = if t.dtype() == DType::F32 {
                t
            } else {
                t.to_dtype(DType::F32)?
            };
            tensors.insert(name, t);
        }
    }
    Ok(tensors)
}

/// `model.safetensors`, or the distinct shard files of the index, in sorted order.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: index.clone(),
        message: e.to_string(),
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| ModelError::Config {
            path: index.clone(),
            message: "no `weight_map` object".into(),
        })?;
    let files: BTreeSet<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// A directory with `config.json` as given, else a model id resolved in the local HF `cache`
/// (the snapshot directory holding its `config.json`).
pub fn resolve(name: &str, cache: &hf_hub::Cache) -> Result<PathBuf, ModelError> {
    let p = Path::new(name);
    if p.join("config.json").is_file() {
        return Ok(p.to_path_buf());
    }
    cache
        .model(name.to_string())
        .get("config.json")
        .and_then(|c| c.parent().map(Path::to_path_buf))
        .ok_or_else(|| ModelError::NotFound(name.to_string()))
}
