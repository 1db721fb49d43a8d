//! LoRA adapters in PEFT's layout: `adapter_config.json` (rank, alpha, dropout, target modules,
//! the base model's path) and `adapter_model.safetensors` with, per adapted projection,
//! `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` `[r, in]` and `lora_B.weight`
//! `[out, r]`. A directory of this kind loads wherever a model directory does (the base is read
//! from `base_model_name_or_path`), so `rrhf eval --model run/final` works on a LoRA run's output;
//! `rrhf merge` writes the full model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, FloatDType, TensorData};
use serde_json::{Value, json};

use super::model_dir::{copy_tokenizer_files, load_checkpoint};
use super::safetensors_dir::{SafetensorsFiles, SaveDtype, write_file};
use crate::model::{DecoderLayer, HostTensor, LORA_TARGETS, Llama, Lora, LoraConfig};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// A directory holding adapters rather than a whole model.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).exists() && !dir.join("config.json").exists()
}

fn tensor_name(layer: usize, projection: &str, which: &str) -> String {
    let block = DecoderLayer::block_of(projection);
    format!("base_model.model.model.layers.{layer}.{block}.{projection}.lora_{which}.weight")
}

/// Writes the model's adapters into the existing directory `dir`, with the tokenizer files of
/// `tokenizer_from` when given (so the directory also works as a model directory for rrhf).
pub fn write_adapter_files(model: &Llama, tokenizer_from: Option<&Path>, dir: &Path) -> Result<()> {
    let info = model
        .adapter
        .as_ref()
        .context("the model has no LoRA adapters to save")?;
    let c = &info.config;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": info.base,
        "r": c.rank,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "target_modules": c.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    });
    std::fs::write(
        dir.join(ADAPTER_CONFIG),
        serde_json::to_string_pretty(&config)?,
    )?;
    let mut tensors = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        for (name, projection) in layer.projections() {
            if let Some(lora) = &projection.lora {
                // PEFT keeps torch's `[out, in]` layout: A is `[r, in]`, B is `[out, r]`.
                for (which, weight) in [("A", lora.a.val()), ("B", lora.b.val())] {
                    let weight = weight.transpose();
                    let shape = weight.dims().to_vec();
                    let data = crate::device::to_host(weight)?;
                    tensors.push((tensor_name(i, name, which), HostTensor::new(shape, data)));
                }
            }
        }
    }
    let refs: Vec<&(String, HostTensor)> = tensors.iter().collect();
    write_file(&dir.join(ADAPTER_WEIGHTS), &refs, SaveDtype::F32)?;
    if let Some(src) = tokenizer_from {
        copy_tokenizer_files(src, dir)?;
    }
    Ok(())
}

/// Reads `adapter_config.json`; refuses PEFT features rrhf does not implement rather than
/// loading something that computes a different function.
pub fn read_adapter_config(dir: &Path) -> Result<(LoraConfig, String)> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let field = |name: &str| v.get(name).filter(|x| !x.is_null());
    let bad = |name: &str, why: &str| -> anyhow::Error {
        anyhow::anyhow!("{}: field `{name}`: {why}", path.display())
    };
    match field("peft_type").and_then(Value::as_str) {
        Some("LORA") => {}
        other => {
            return Err(bad(
                "peft_type",
                &format!("is {other:?}; only LORA is supported"),
            ));
        }
    }
    for (name, off) in [
        ("use_dora", json!(false)),
        ("use_rslora", json!(false)),
        ("fan_in_fan_out", json!(false)),
        ("bias", json!("none")),
        ("lora_bias", json!(false)),
        ("use_qalora", json!(false)),
    ] {
        if let Some(x) = field(name)
            && *x != off
        {
            return Err(bad(name, &format!("is {x}; rrhf supports only {off}")));
        }
    }
    for name in ["rank_pattern", "alpha_pattern"] {
        if field(name)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(name, "per-module ranks or alphas are not supported"));
        }
    }
    for name in [
        "modules_to_save",
        "layers_to_transform",
        "layers_pattern",
        "layer_replication",
        "exclude_modules",
        "trainable_token_indices",
        "target_parameters",
    ] {
        if field(name).is_some_and(|x| x.as_array().is_none_or(|a| !a.is_empty())) {
            return Err(bad(
                name,
                "not supported (adapters on every layer's projections only)",
            ));
        }
    }
    let rank = field("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("r", "missing or not a whole number"))? as usize;
    let alpha = field("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| bad("lora_alpha", "missing or not a number"))?;
    let dropout = field("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let target_modules = match field("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => {
            LORA_TARGETS.iter().map(|s| s.to_string()).collect()
        }
        Some(Value::Array(list)) => list
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("target_modules", "not a list of names"))?,
        _ => {
            return Err(bad(
                "target_modules",
                "must be a list of projection names or \"all-linear\"",
            ));
        }
    };
    let config = LoraConfig {
        rank,
        alpha,
        dropout,
        target_modules,
    };
    if let Some((name, why)) = config.invalid() {
        return Err(bad(name, &why));
    }
    let base = field("base_model_name_or_path")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("base_model_name_or_path", "missing"))?
        .to_string();
    Ok((config, base))
}

/// The base model directory an adapter names: as written (relative to the working directory),
/// else relative to the adapter directory.
fn resolve_base(dir: &Path, base: &str) -> Result<PathBuf> {
    let candidates = [PathBuf::from(base), dir.join(base)];
    candidates
        .into_iter()
        .find(|p| p.join("config.json").exists())
        .with_context(|| {
            format!(
                "{}: field `base_model_name_or_path` is `{base}`, which is not a model directory \
                 here (rrhf reads local directories only; download the base model and edit the \
                 field, or give its path with `rrhf merge --base`)",
                dir.join(ADAPTER_CONFIG).display()
            )
        })
}

/// Loads an adapter directory: its base model (from `adapter_config.json`, or `base` when given)
/// with the adapters attached, trainable, and every base weight frozen.
pub fn load_adapter_model(
    dir: &Path,
    base: Option<&Path>,
    device: &Device,
    projections: FloatDType,
) -> Result<Llama> {
    let (config, named_base) = read_adapter_config(dir)?;
    let base = match base {
        Some(b) => b.to_path_buf(),
        None => resolve_base(dir, &named_base)?,
    };
    let model = load_checkpoint(&base, device, projections)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let files = SafetensorsFiles::open_file(&path)?;
    let expected_layers = model.config.num_hidden_layers;
    let mut used = 0usize;
    let model = model.with_lora(&config, base, |layer, name, [inp, out]| {
        let r = config.rank;
        let mut read = |which: &str, shape: [usize; 2]| -> Result<TensorData> {
            let tensor_name = tensor_name(layer, name, which);
            let t = files.read_f32(&tensor_name)?;
            if t.shape != shape {
                bail!(
                    "{}: tensor `{tensor_name}` has shape {:?}; r = {r} and the base model imply {shape:?}",
                    path.display(),
                    t.shape
                );
            }
            used += 1;
            // Back from torch's `[out, in]` to burn's `[in, out]`.
            let t = t.transposed();
            Ok(TensorData::new(t.data, [shape[1], shape[0]]))
        };
        let a = read("A", [r, inp])?;
        let b = read("B", [out, r])?;
        Ok(Lora::from_weights(a, b, &config, device))
    })?;
    let stored = files.names().count();
    if stored != used {
        let mut extra: Vec<&str> = files
            .names()
            .filter(|n| {
                !(0..expected_layers).any(|i| {
                    LORA_TARGETS.iter().any(|p| {
                        config.target_modules.iter().any(|t| t == p)
                            && (*n == tensor_name(i, p, "A") || *n == tensor_name(i, p, "B"))
                    })
                })
            })
            .collect();
        extra.sort();
        bail!(
            "{}: {} tensors that the adapter config's target modules do not explain, e.g. {:?}",
            path.display(),
            extra.len(),
            &extra[..extra.len().min(3)]
        );
    }
    Ok(model)
}
