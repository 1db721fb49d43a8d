//! `rrhf convert`: a llama.cpp GGUF file to a Hugging Face model directory.
//!
//! Three things need care: llama.cpp's converter permutes the rows of the Q and K projections
//! for its RoPE layout (undone here); the tokenizer exists only as GGUF metadata (tokens, merges,
//! token types, the pre-tokenizer's name), from which `tokenizer.json` is rebuilt with the
//! `tokenizers` crate; and the chat template travels in `tokenizer_config.json`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value as Json, json};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::gguf::{GgufFile, Value};
use super::model_dir::MAX_SHARD_BYTES;
use super::outputs::{check_output_dir, write_output_dir};
use super::safetensors_dir::{SaveDtype, write_weights};
use crate::model::{HostTensor, LlamaConfig, checkpoint_tensors};

/// llama.cpp's `tokenizer.ggml.token_type` values.
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// LLaMA 3's pre-tokenizer split (llama.cpp: llama3, llama-bpe, ...).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Converts `gguf` into a Hugging Face directory at `out`; weights are written in `dtype`. `out`
/// follows the rules of `--out` directories (`outputs::write_output_dir`): new or empty, or
/// under `force` only rrhf's own files in it are replaced.
pub fn convert_gguf(gguf: &Path, out: &Path, dtype: SaveDtype, force: bool) -> Result<LlamaConfig> {
    let inputs = [("GGUF file", gguf)];
    check_output_dir(out, &inputs, force)?;
    let file = GgufFile::open(gguf)?;
    let config = config_from_gguf(&file)?;
    let weights = weights_from_gguf(&file, &config)?;
    let (tokenizer, tokenizer_config) = tokenizer_from_gguf(&file)?;
    write_output_dir(out, &inputs, force, |dir| {
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config.to_json(dtype.torch_name()))?,
        )?;
        write_weights(dir, &weights, dtype, MAX_SHARD_BYTES)?;
        tokenizer
            .save(dir.join("tokenizer.json"), true)
            .map_err(|e| anyhow::anyhow!("cannot write tokenizer.json: {e}"))?;
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&tokenizer_config)?,
        )?;
        let generation = json!({
            "bos_token_id": config.bos_token_id,
            "eos_token_id": config.eos_token_ids.first(),
        });
        std::fs::write(
            dir.join("generation_config.json"),
            serde_json::to_string_pretty(&generation)?,
        )?;
        Ok(())
    })?;
    Ok(config)
}

fn config_from_gguf(f: &GgufFile) -> Result<LlamaConfig> {
    let arch = f
        .require("general.architecture")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    if arch != "llama" {
        bail!(
            "{}: metadata `general.architecture` is {arch:?}; rrhf converts \"llama\" models",
            f.path.display()
        );
    }
    if f.tensor("rope_freqs.weight").is_some() {
        bail!(
            "{}: tensor `rope_freqs.weight` holds LLaMA 3.1 rope scaling, which a GGUF does not describe \
             in config.json terms; convert from the original Hugging Face checkpoint instead",
            f.path.display()
        );
    }
    let key = |k: &str| format!("{arch}.{k}");
    let u = |k: &str| f.require_u64(&key(k));
    let heads = u("attention.head_count")?;
    let hidden = u("embedding_length")?;
    let vocab = match f.get(&key("vocab_size")).and_then(Value::as_u64) {
        Some(v) => v,
        None => f
            .require("tokenizer.ggml.tokens")?
            .as_array()
            .map_or(0, |a| a.len()) as u64,
    };
    let mut raw = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": u("feed_forward_length")?,
        "num_hidden_layers": u("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": f.get(&key("attention.head_count_kv")).and_then(Value::as_u64).unwrap_or(heads),
        "head_dim": f.get(&key("attention.key_length")).and_then(Value::as_u64).unwrap_or(hidden / heads.max(1)),
        "rms_norm_eps": f.get(&key("attention.layer_norm_rms_epsilon")).and_then(Value::as_f64).unwrap_or(1e-5),
        "rope_theta": f.get(&key("rope.freq_base")).and_then(Value::as_f64).unwrap_or(10000.0),
        "max_position_embeddings": f.get(&key("context_length")).and_then(Value::as_u64).unwrap_or(2048),
        "tie_word_embeddings": f.tensor("output.weight").is_none(),
        "hidden_act": "silu",
        "attention_bias": f.tensor("blk.0.attn_q.bias").is_some(),
        "mlp_bias": false,
        "bos_token_id": f.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64),
        "eos_token_id": f.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64),
        "pad_token_id": f.get("tokenizer.ggml.padding_token_id").and_then(Value::as_u64),
    });
    match f.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        None | Some("none") => {}
        Some("linear") => {
            let factor = f
                .require(&key("rope.scaling.factor"))?
                .as_f64()
                .unwrap_or(1.0);
            raw["rope_scaling"] = json!({"rope_type": "linear", "factor": factor});
        }
        Some(other) => bail!(
            "{}: metadata `{}` is {other:?}; supported: none, linear",
            f.path.display(),
            key("rope.scaling.type")
        ),
    }
    LlamaConfig::from_json_str(&raw.to_string())
        .with_context(|| format!("{}: metadata does not describe a LLaMA", f.path.display()))
}

/// The checkpoint name of each GGUF tensor, and the head count its rows were permuted with.
fn gguf_name(hf: &str, config: &LlamaConfig) -> (String, Option<usize>) {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return (g.to_string(), None);
    }
    let rest = hf
        .strip_prefix("model.layers.")
        .expect("every other tensor is in a layer");
    let (layer, part) = rest
        .split_once('.')
        .expect("layer tensors are named model.layers.N.x");
    let (module, suffix) = part
        .rsplit_once('.')
        .expect("tensors end in .weight or .bias");
    let (g, permute) = match module {
        "input_layernorm" => ("attn_norm", None),
        "self_attn.q_proj" => ("attn_q", Some(config.num_attention_heads)),
        "self_attn.k_proj" => ("attn_k", Some(config.num_key_value_heads)),
        "self_attn.v_proj" => ("attn_v", None),
        "self_attn.o_proj" => ("attn_output", None),
        "post_attention_layernorm" => ("ffn_norm", None),
        "mlp.gate_proj" => ("ffn_gate", None),
        "mlp.up_proj" => ("ffn_up", None),
        "mlp.down_proj" => ("ffn_down", None),
        other => unreachable!("no GGUF name for {other}"),
    };
    (format!("blk.{layer}.{g}.{suffix}"), permute)
}

fn weights_from_gguf(f: &GgufFile, config: &LlamaConfig) -> Result<Vec<(String, HostTensor)>> {
    checkpoint_tensors(config)
        .into_iter()
        .map(|(hf, shape)| {
            let (g, permuted_heads) = gguf_name(&hf, config);
            let mut t = f.read_f32(&g)?;
            // 1-d tensors (norms, biases) keep their shape; GGUF stores them as [n].
            ensure!(
                t.shape == shape,
                "{}: tensor `{g}` has shape {:?}, the metadata implies {shape:?}",
                f.path.display(),
                t.shape
            );
            if let Some(heads) = permuted_heads {
                t = unpermute_rope_rows(&t, heads);
            }
            Ok((hf, t))
        })
        .collect()
}

/// Undoes llama.cpp's row permutation of Q/K projections (and their biases).
///
/// llama.cpp reorders each head's rows from `[first half; second half]` ("rotate half", the
/// Hugging Face layout) to interleaved pairs: stored row `2i + j` of a head is original row
/// `j * head_dim/2 + i`.
pub fn unpermute_rope_rows(t: &HostTensor, heads: usize) -> HostTensor {
    move_rope_rows(t, heads, false)
}

/// What llama.cpp's converter does; the inverse of [`unpermute_rope_rows`]. Used to write test files.
pub fn permute_rope_rows(t: &HostTensor, heads: usize) -> HostTensor {
    move_rope_rows(t, heads, true)
}

fn move_rope_rows(t: &HostTensor, heads: usize, to_interleaved: bool) -> HostTensor {
    let rows = t.shape[0];
    let cols: usize = t.shape[1..].iter().product();
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; t.data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let interleaved = h * head_dim + 2 * i + j;
                let halves = h * head_dim + j * half + i;
                let (from, to) = if to_interleaved {
                    (halves, interleaved)
                } else {
                    (interleaved, halves)
                };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&t.data[from * cols..(from + 1) * cols]);
            }
        }
    }
    HostTensor::new(t.shape.clone(), out)
}

fn string_array(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    let values = f
        .require(key)?
        .as_array()
        .with_context(|| format!("{}: `{key}` is not an array", f.path.display()))?;
    values
        .iter()
        .map(|v| v.as_str().map(String::from))
        .collect::<Option<_>>()
        .with_context(|| format!("{}: `{key}` holds a non-string", f.path.display()))
}

/// Rebuilds `tokenizer.json` (byte-level BPE) and `tokenizer_config.json` from GGUF metadata.
fn tokenizer_from_gguf(f: &GgufFile) -> Result<(tokenizers::Tokenizer, Json)> {
    let model = f
        .require("tokenizer.ggml.model")?
        .as_str()
        .unwrap_or_default();
    if model != "gpt2" {
        bail!(
            "{}: metadata `tokenizer.ggml.model` is {model:?}; rrhf rebuilds byte-level BPE (\"gpt2\") \
             vocabularies only. Convert from the Hugging Face checkpoint, or copy its tokenizer.json",
            f.path.display()
        );
    }
    let tokens = string_array(f, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = string_array(f, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| {
                    format!(
                        "{}: merge {m:?} in `tokenizer.ggml.merges` has no space",
                        f.path.display()
                    )
                })
        })
        .collect::<Result<_>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: the vocabulary and merges do not form a BPE model: {e}",
                f.path.display()
            )
        })?;
    let mut tok = tokenizers::Tokenizer::new(bpe);

    let pre = f
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    tok.with_pre_tokenizer(Some(
        pre_tokenizer(pre)
            .with_context(|| format!("{}: `tokenizer.ggml.pre`", f.path.display()))?,
    ));
    tok.with_decoder(Some(ByteLevelDecoder::default()));

    let types: Vec<i64> = match f.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
        Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
        None => vec![1; tokens.len()],
    };
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == TOKEN_CONTROL)
        .map(|(s, _)| AddedToken::from(s.clone(), true).normalized(false))
        .collect();
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == TOKEN_USER_DEFINED)
        .map(|(s, _)| AddedToken::from(s.clone(), false).normalized(false))
        .collect();
    tok.add_special_tokens(&specials);
    tok.add_tokens(&user);

    let token_of = |key: &str| -> Option<String> {
        f.get(key)
            .and_then(Value::as_u64)
            .and_then(|id| tokens.get(id as usize).cloned())
    };
    let bos = token_of("tokenizer.ggml.bos_token_id");
    let eos = token_of("tokenizer.ggml.eos_token_id");
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let add_eos = f
        .get("tokenizer.ggml.add_eos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    tok.with_post_processor(Some(post_processor(
        &tokens,
        bos.as_deref(),
        eos.as_deref(),
        add_bos,
        add_eos,
    )?));

    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": token_of("tokenizer.ggml.unknown_token_id"),
        "pad_token": token_of("tokenizer.ggml.padding_token_id"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(template) = f.get("tokenizer.chat_template").and_then(Value::as_str) {
        config["chat_template"] = Json::String(template.to_string());
    }
    Ok((tok, config))
}

/// The pre-tokenizer llama.cpp applies for a `tokenizer.ggml.pre` name.
fn pre_tokenizer(name: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = |regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    Ok(match name {
        // GPT-2's split.
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => byte_level(true),
        // GPT-2's split after isolating every digit (SmolLM, StarCoder).
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ]))
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                byte_level(false),
            ]))
        }
        other => bail!(
            "pre-tokenizer {other:?} is not supported (gpt2, smollm/starcoder, llama3 families)"
        ),
    })
}

fn post_processor(
    tokens: &[String],
    bos: Option<&str>,
    eos: Option<&str>,
    add_bos: bool,
    add_eos: bool,
) -> Result<PostProcessorWrapper> {
    if !add_bos && !add_eos {
        return Ok(PostProcessorWrapper::ByteLevel(ByteLevel::new(
            false, false, true,
        )));
    }
    let ids: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut special = Vec::new();
    let mut wrap = |piece: &str, seq: &str, out_single: bool| {
        if out_single {
            single.push(format!("{piece}{seq}"));
        }
        pair.push(format!("{piece}{seq}"));
    };
    let bos_tok = if add_bos {
        bos.context("add_bos_token is set but there is no bos_token_id")?
    } else {
        ""
    };
    let eos_tok = if add_eos {
        eos.context("add_eos_token is set but there is no eos_token_id")?
    } else {
        ""
    };
    for (seq, type_id) in [("$A", 0), ("$B", 1)] {
        if add_bos {
            wrap(bos_tok, &format!(":{type_id}"), seq == "$A");
        }
        wrap(seq, &format!(":{type_id}"), seq == "$A");
        if add_eos {
            wrap(eos_tok, &format!(":{type_id}"), seq == "$A");
        }
    }
    for t in [bos_tok, eos_tok].into_iter().filter(|t| !t.is_empty()) {
        special.push((t.to_string(), ids[t]));
    }
    let template = TemplateProcessing::builder()
        .try_single(single.join(" "))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .try_pair(pair.join(" "))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .special_tokens(special)
        .build()?;
    Ok(PostProcessorWrapper::Template(template))
}
