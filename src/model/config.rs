//! The model's shape, read from a Hugging Face `config.json`.
//!
//! Only what the forward pass needs is parsed into fields; the whole JSON object is kept so that
//! a saved checkpoint carries every key the original had (a user's `architectures`, `pad_token_id`,
//! their own annotations) and transformers reads it back unchanged.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;

/// How rotary position frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq[i] = theta^(-2i/d)`.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// LLaMA 3.1's piecewise rescaling of low frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// What sits on top of the decoder, from `architectures` in config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelHead {
    /// `LlamaForCausalLM`: next-token logits (`lm_head.weight`, or the tied embedding).
    LanguageModel,
    /// `LlamaForSequenceClassification` with one label: a scalar reward (`score.weight`).
    Score,
}

#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    /// All ids that end generation (`eos_token_id` may be a list, as in LLaMA 3).
    pub eos_token_ids: Vec<u32>,
    pub head: ModelHead,
    /// The original JSON, written back on save with only the dtype updated.
    pub raw: Value,
}

/// The fields as they appear in the file; defaults are those of transformers' `LlamaConfig`.
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_act")]
    hidden_act: String,
    model_type: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

/// Model types whose checkpoints have exactly the LLaMA layout and forward pass.
const LLAMA_LIKE: &[&str] = &["llama", "mistral"];

impl LlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json_str(&text)
            .with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let raw: Value = serde_json::from_str(text)?;
        // Parsed from the text, not from `raw`, so that errors carry a line and column.
        let fields: RawConfig = serde_json::from_str(text)?;
        Self::from_fields(fields, raw)
    }

    fn from_fields(f: RawConfig, raw: Value) -> Result<Self> {
        if let Some(model_type) = &f.model_type
            && !LLAMA_LIKE.contains(&model_type.as_str())
        {
            bail!(
                "field `model_type` is {model_type:?}; rrhf runs LLaMA-family models ({LLAMA_LIKE:?})"
            );
        }
        if f.hidden_act != "silu" {
            bail!(
                "field `hidden_act` is {:?}; the LLaMA MLP needs \"silu\"",
                f.hidden_act
            );
        }
        if let Some(window) = raw.get("sliding_window")
            && !window.is_null()
        {
            bail!(
                "field `sliding_window` is set ({window}); sliding-window attention is not supported"
            );
        }
        for (field, size) in [
            ("vocab_size", f.vocab_size),
            ("hidden_size", f.hidden_size),
            ("intermediate_size", f.intermediate_size),
            ("num_hidden_layers", f.num_hidden_layers),
        ] {
            if size == 0 {
                bail!("field `{field}` is 0; a model needs at least one");
            }
        }
        if !(f.rms_norm_eps.is_finite() && f.rms_norm_eps > 0.0) {
            bail!(
                "field `rms_norm_eps` is {}; it must be a positive number",
                f.rms_norm_eps
            );
        }
        let heads = f.num_attention_heads;
        let kv_heads = f.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            bail!(
                "fields `num_attention_heads` ({heads}) and `num_key_value_heads` ({kv_heads}): \
                 the first must be a positive multiple of the second"
            );
        }
        let head_dim = match f.head_dim {
            Some(d) => d,
            None if f.hidden_size % heads == 0 => f.hidden_size / heads,
            None => bail!(
                "field `hidden_size` ({}) is not a multiple of `num_attention_heads` ({heads}) and `head_dim` is absent",
                f.hidden_size
            ),
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("field `head_dim` is {head_dim}; rotary embeddings need an even head size");
        }
        let (rope_theta, rope_scaling) = parse_rope(
            f.rope_theta,
            f.rope_scaling.as_ref(),
            f.rope_parameters.as_ref(),
        )?;
        Ok(Self {
            vocab_size: f.vocab_size,
            hidden_size: f.hidden_size,
            intermediate_size: f.intermediate_size,
            num_hidden_layers: f.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: f.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: f.max_position_embeddings,
            tie_word_embeddings: f.tie_word_embeddings,
            attention_bias: f.attention_bias,
            mlp_bias: f.mlp_bias,
            bos_token_id: token_ids(f.bos_token_id.as_ref(), "bos_token_id")?
                .first()
                .copied(),
            eos_token_ids: token_ids(f.eos_token_id.as_ref(), "eos_token_id")?,
            head: parse_head(&raw)?,
            raw,
        })
    }

    /// The config of a reward model on this backbone: `LlamaForSequenceClassification` with one
    /// label, and a `pad_token_id` (transformers refuses batches without one).
    pub fn as_reward_model(&self) -> Self {
        let mut config = self.clone();
        config.head = ModelHead::Score;
        if let Value::Object(map) = &mut config.raw {
            map.insert(
                "architectures".into(),
                serde_json::json!(["LlamaForSequenceClassification"]),
            );
            map.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
            map.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
            map.remove("num_labels");
            if map.get("pad_token_id").is_none_or(Value::is_null)
                && let Some(&eos) = self.eos_token_ids.first()
            {
                map.insert("pad_token_id".into(), eos.into());
            }
        }
        config
    }

    /// The JSON to write next to saved weights of the given dtype name ("float32", "bfloat16", ...).
    pub fn to_json(&self, dtype: &str) -> Value {
        let mut raw = self.raw.clone();
        if let Value::Object(map) = &mut raw {
            map.insert("dtype".into(), Value::String(dtype.into()));
            map.remove("torch_dtype");
            map.entry("architectures")
                .or_insert_with(|| serde_json::json!(["LlamaForCausalLM"]));
            map.entry("model_type")
                .or_insert_with(|| Value::String("llama".into()));
        }
        raw
    }

    pub fn num_parameters(&self) -> usize {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let layer = d * (q + 2 * kv) + q * d + 3 * d * f + 2 * d;
        let head = match self.head {
            ModelHead::Score => d,
            ModelHead::LanguageModel if self.tie_word_embeddings => 0,
            ModelHead::LanguageModel => v * d,
        };
        v * d + self.num_hidden_layers * layer + d + head
    }
}

/// `rope_theta` + `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5).
/// `LlamaForSequenceClassification` is a reward model, which must have exactly one label (its
/// score); anything else is read as a causal language model.
fn parse_head(raw: &Value) -> Result<ModelHead> {
    let is_classifier = raw["architectures"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n == "LlamaForSequenceClassification"));
    if !is_classifier {
        return Ok(ModelHead::LanguageModel);
    }
    // transformers: `num_labels` is the size of `id2label`, 2 when neither is given.
    let labels = match (raw.get("id2label"), raw.get("num_labels")) {
        (Some(Value::Object(m)), _) => m.len() as u64,
        (_, Some(n)) => n.as_u64().unwrap_or(0),
        _ => 2,
    };
    if labels != 1 {
        bail!(
            "field `id2label`/`num_labels`: a LlamaForSequenceClassification with {labels} labels; \
             a reward model has one (its score)"
        );
    }
    Ok(ModelHead::Score)
}

fn parse_rope(
    theta: Option<f64>,
    scaling: Option<&Value>,
    parameters: Option<&Value>,
) -> Result<(f64, RopeScaling)> {
    let (field, spec) = match (parameters, scaling) {
        (Some(p), _) if !p.is_null() => ("rope_parameters", Some(p)),
        (_, Some(s)) if !s.is_null() => ("rope_scaling", Some(s)),
        _ => ("rope_scaling", None),
    };
    let theta_in_spec = spec
        .and_then(|s| s.get("rope_theta"))
        .and_then(Value::as_f64);
    let theta = theta_in_spec.or(theta).unwrap_or(10000.0);
    if !(theta.is_finite() && theta > 1.0) {
        bail!("field `rope_theta` is {theta}; it must be a number greater than 1");
    }
    let Some(spec) = spec else {
        return Ok((theta, RopeScaling::None));
    };
    let kind = spec
        .get("rope_type")
        .or_else(|| spec.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| -> Result<f64> {
        spec.get(key).and_then(Value::as_f64).with_context(|| {
            format!("field `{field}.{key}` is missing or not a number (rope_type {kind:?})")
        })
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: number("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?,
        },
        other => {
            bail!("field `{field}.rope_type` is {other:?}; supported: default, linear, llama3")
        }
    };
    Ok((theta, scaling))
}

/// A token id field that may be absent, null, a number or a list of numbers.
fn token_ids(value: Option<&Value>, field: &str) -> Result<Vec<u32>> {
    let as_id = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("field `{field}` holds {v}, not a token id"))
    };
    match value {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items.iter().map(as_id).collect(),
        Some(v) => Ok(vec![as_id(v)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2}"#;

    #[test]
    fn defaults_follow_transformers() {
        let c = LlamaConfig::from_json_str(MINIMAL).unwrap();
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.rms_norm_eps, 1e-6);
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn missing_field_is_named() {
        let err = LlamaConfig::from_json_str(r#"{"vocab_size": 10}"#).unwrap_err();
        assert!(
            format!("{err:#}").contains("missing field `hidden_size`"),
            "{err:#}"
        );
    }

    #[test]
    fn both_rope_spellings() {
        let old = MINIMAL.replace('}', r#", "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#);
        let new = MINIMAL.replace('}', r#", "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#);
        let (a, b) = (
            LlamaConfig::from_json_str(&old).unwrap(),
            LlamaConfig::from_json_str(&new).unwrap(),
        );
        assert_eq!(a.rope_theta, 500000.0);
        assert_eq!(a.rope_scaling, b.rope_scaling);
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn unsupported_rope_and_activation_are_named() {
        let yarn = MINIMAL.replace(
            '}',
            r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#,
        );
        let err = format!("{:#}", LlamaConfig::from_json_str(&yarn).unwrap_err());
        assert!(
            err.contains("rope_scaling.rope_type") && err.contains("yarn"),
            "{err}"
        );
        let gelu = MINIMAL.replace('}', r#", "hidden_act": "gelu"}"#);
        let err = format!("{:#}", LlamaConfig::from_json_str(&gelu).unwrap_err());
        assert!(err.contains("hidden_act"), "{err}");
    }

    #[test]
    fn eos_may_be_a_list() {
        let c = LlamaConfig::from_json_str(&MINIMAL.replace('}', r#", "eos_token_id": [5, 7]}"#))
            .unwrap();
        assert_eq!(c.eos_token_ids, vec![5, 7]);
    }
}
