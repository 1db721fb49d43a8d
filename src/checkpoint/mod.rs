//! Checkpoint I/O: model directories in the Hugging Face layout (config.json, safetensors
//! weights, tokenizer files), and import from llama.cpp's GGUF files.

pub mod convert;
pub mod gguf;
pub mod outputs;
pub mod peft;
pub mod safetensors_dir;

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, FloatDType};

use crate::model::{Llama, LlamaConfig, ModelHead, checkpoint_tensors};
pub use outputs::{write_dir_atomically, write_file_atomically};
pub use safetensors_dir::{SafetensorsFiles, SaveDtype};

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

/// Loads a causal language model (`LlamaForCausalLM`) onto `device`, casting weights to f32.
///
/// A directory of LoRA adapters (PEFT layout) loads as its base model with the adapters attached.
pub fn load_model(dir: &Path, device: &Device) -> Result<Llama> {
    load_model_storing(dir, device, FloatDType::F32)
}

/// [`load_model`] with the decoder's projection weights stored in `projections` (a half
/// precision for a LoRA run's frozen base), each cast on its way to the device.
pub fn load_model_storing(dir: &Path, device: &Device, projections: FloatDType) -> Result<Llama> {
    if peft::is_adapter_dir(dir) {
        return peft::load_adapter_model(dir, None, device, projections);
    }
    if load_config(dir)?.head == ModelHead::Score {
        bail!(
            "{} is a reward model (LlamaForSequenceClassification): it scores text but has no \
             language-model head to generate or train a policy with",
            dir.display()
        );
    }
    load_checkpoint(dir, device, projections)
}

/// Loads a reward model (`LlamaForSequenceClassification`, one label) onto `device`.
pub fn load_reward_model(dir: &Path, device: &Device) -> Result<Llama> {
    if peft::is_adapter_dir(dir) {
        bail!(
            "{} holds LoRA adapters of a causal language model, not a reward model",
            dir.display()
        );
    }
    if load_config(dir)?.head != ModelHead::Score {
        bail!(
            "{} is a causal language model, not a reward model (LlamaForSequenceClassification); \
             train one with `rrhf train-rm`",
            dir.display()
        );
    }
    load_checkpoint(dir, device, FloatDType::F32)
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

/// Saves `model` as a Hugging Face directory, with the tokenizer files of `tokenizer_from` when
/// given. The directory is written under a temporary name and renamed into place.
pub fn save_model(
    model: &Llama,
    tokenizer_from: Option<&Path>,
    dir: &Path,
    dtype: SaveDtype,
) -> Result<()> {
    write_dir_atomically(dir, |tmp| {
        write_model_files(model, tokenizer_from, tmp, dtype)
    })
}

/// Writes the files of a Hugging Face directory into the existing directory `dir`; a model with
/// LoRA adapters writes only the adapters (PEFT layout), which name their base model.
pub fn write_model_files(
    model: &Llama,
    tokenizer_from: Option<&Path>,
    dir: &Path,
    dtype: SaveDtype,
) -> Result<()> {
    if model.adapter.is_some() {
        return peft::write_adapter_files(model, tokenizer_from, dir);
    }
    let config = model.config.to_json(dtype.torch_name());
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    safetensors_dir::write_weights(dir, &model.checkpoint_weights(), dtype, MAX_SHARD_BYTES)?;
    if let Some(src) = tokenizer_from {
        copy_tokenizer_files(src, dir)?;
    }
    Ok(())
}

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
