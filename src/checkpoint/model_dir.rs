//! A Hugging Face model directory of full weights: the files it holds besides config and
//! weights, reading its config, loading its weights onto a device, copying its tokenizer files.
//! The layer under both loaders of `mod.rs` and the adapter directories of `peft.rs`.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::{Device, FloatDType};

use super::safetensors_dir::SafetensorsFiles;
use crate::model::{Llama, LlamaConfig, ModelHead, checkpoint_tensors};

/// The files besides config and weights that make a directory usable by transformers.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "tokenizer.model",
];

/// Shards larger than this are split, as transformers' `save_pretrained` does.
pub const MAX_SHARD_BYTES: usize = 5 << 30;

/// Tensors some checkpoints carry that the forward pass recomputes.
const IGNORED_TENSORS: &[&str] = &["rotary_emb.inv_freq"];

pub fn load_config(dir: &Path) -> Result<LlamaConfig> {
    LlamaConfig::from_file(&dir.join("config.json"))
}

/// Loads a checkpoint directory of either kind onto `device`, casting weights to f32.
pub fn load_checkpoint(dir: &Path, device: &Device, projections: FloatDType) -> Result<Llama> {
    let config = load_config(dir)?;
    let files = SafetensorsFiles::open(dir)?;
    let expected: std::collections::HashSet<String> = checkpoint_tensors(&config)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut unexpected: Vec<&str> = files
        .names()
        .filter(|n| !expected.contains(*n) && !IGNORED_TENSORS.iter().any(|i| n.ends_with(i)))
        .filter(|n| !(config.tie_word_embeddings && *n == "lm_head.weight"))
        .filter(|n| !(config.head == ModelHead::Score && *n == "lm_head.weight"))
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        eprintln!(
            "warning: {}: {} tensors that a LLaMA of this config does not use, e.g. {:?}",
            dir.display(),
            unexpected.len(),
            &unexpected[..unexpected.len().min(3)]
        );
    }
    let mut source = |name: &str, _shape: &[usize]| files.read_f32(name);
    Llama::from_weights(config, &mut source, device, projections)
        .with_context(|| format!("cannot load model from {}", dir.display()))
}

/// Copies the tokenizer files of `from` that exist into `to`.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name))
                .with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(())
}
