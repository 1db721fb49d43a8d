//! Checkpoint I/O: model directories in the Hugging Face layout (config.json, safetensors
//! weights, tokenizer files), and import from llama.cpp's GGUF files.

pub mod convert;
pub mod gguf;
pub mod model_dir;
pub mod outputs;
pub mod peft;
pub mod safetensors_dir;

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::{Device, FloatDType};

use crate::model::{Llama, ModelHead};
pub use model_dir::{
    MAX_SHARD_BYTES, TOKENIZER_FILES, copy_tokenizer_files, load_checkpoint, load_config,
};
pub use outputs::{
    JsonlWriter, write_dir_atomically, write_file_atomically, write_jsonl_atomically,
};
pub use safetensors_dir::{SafetensorsFiles, SaveDtype};

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
