//! GGUF import: dequantisation against llama.cpp's reference, a GGUF written here from the tiny
//! Hugging Face fixture (with llama.cpp's Q/K row permutation) converted back, and bad files.

mod common;

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use common::{
    GgufWriter, encode_f16, encode_f32, fixture, quantize_q8_0, read_raw_bytes, read_safetensors,
    scratch,
};
use rrhf::checkpoint::convert::{convert_gguf, permute_rope_rows};
use rrhf::checkpoint::gguf::{GgmlType, dequantize};
use rrhf::checkpoint::{SaveDtype, load_model};
use rrhf::device::cpu_device;
use rrhf::model::{Llama, checkpoint_tensors};
use rrhf::tokenizer::{TemplateMode, Tokenizer};

#[test]
fn every_quant_type_dequantises_like_llama_cpp() {
    let path = fixture("gguf_quant_blocks.safetensors");
    let expected = read_safetensors(&path);
    let types = [
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q2_K", GgmlType::Q2K),
        ("Q3_K", GgmlType::Q3K),
        ("Q4_K", GgmlType::Q4K),
        ("Q5_K", GgmlType::Q5K),
        ("Q6_K", GgmlType::Q6K),
    ];
    for (name, ty) in types {
        let raw = read_raw_bytes(&path, &format!("{name}.raw"));
        let want = &expected[&format!("{name}.expected")].1;
        let got = dequantize(&raw, ty);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "{name}[{i}]: {g} vs llama.cpp {w}"
            );
        }
    }
}

/// llama.cpp's name for a Hugging Face tensor name.
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let g = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ]
    .iter()
    .find(|(h, _)| *h == part)
    .unwrap()
    .1;
    format!("blk.{layer}.{g}")
}

/// Writes a tiny fixture as llama.cpp would: permuted Q/K rows, metadata, tokenizer.
/// `matrix_type` encodes the 2-d weights (0 = F32, 1 = F16, 8 = Q8_0). RoPE scaling is not
/// written, so only tiny-gqa (plain RoPE) converts to a model with the same logits.
fn write_tiny_gguf(name: &str, path: &Path, matrix_type: u32) -> Llama {
    write_tiny_gguf_with(name, path, matrix_type, |_| {})
}

fn write_tiny_gguf_with(
    name: &str,
    path: &Path,
    matrix_type: u32,
    extra: impl FnOnce(&mut GgufWriter),
) -> Llama {
    let src = fixture(name);
    let model = load_model(&src, &cpu_device().device).unwrap();
    let c = &model.config;
    let mut w = GgufWriter::default();
    w.string("general.architecture", "llama")
        .u32("llama.block_count", c.num_hidden_layers as u32)
        .u32("llama.context_length", c.max_position_embeddings as u32)
        .u32("llama.embedding_length", c.hidden_size as u32)
        .u32("llama.feed_forward_length", c.intermediate_size as u32)
        .u32("llama.attention.head_count", c.num_attention_heads as u32)
        .u32(
            "llama.attention.head_count_kv",
            c.num_key_value_heads as u32,
        )
        .f32("llama.rope.freq_base", c.rope_theta as f32)
        .f32(
            "llama.attention.layer_norm_rms_epsilon",
            c.rms_norm_eps as f32,
        );
    // The tokenizer as GGUF metadata, from the fixture's tokenizer.json.
    let tj = common::json(&src.join("tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    let merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            _ => panic!(),
        })
        .collect();
    let specials: Vec<u64> = tj["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let types: Vec<i32> = (0..tokens.len() as u64)
        .map(|i| if specials.contains(&i) { 3 } else { 1 })
        .collect();
    let template = std::fs::read_to_string(src.join("chat_template.jinja")).unwrap();
    let adds_bos = tj["post_processor"]["type"] == "TemplateProcessing";
    w.string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", "default")
        .strings("tokenizer.ggml.tokens", &tokens)
        .strings("tokenizer.ggml.merges", &merges)
        .i32s("tokenizer.ggml.token_type", &types)
        .u32("tokenizer.ggml.bos_token_id", 0)
        .u32("tokenizer.ggml.eos_token_id", c.eos_token_ids[0])
        .bool("tokenizer.ggml.add_bos_token", adds_bos)
        .string("tokenizer.chat_template", &template);
    let heads = |hf: &str| {
        if hf.ends_with("q_proj.weight") {
            Some(c.num_attention_heads)
        } else if hf.ends_with("k_proj.weight") {
            Some(c.num_key_value_heads)
        } else {
            None
        }
    };
    for (name, t) in model.checkpoint_weights() {
        let t = match heads(&name) {
            Some(h) => permute_rope_rows(&t, h),
            None => t,
        };
        let (ty, bytes) = match (t.shape.len(), matrix_type) {
            (1, _) | (_, 0) => (0, encode_f32(&t.data)),
            (_, 1) => (1, encode_f16(&t.data)),
            (_, 8) => (8, quantize_q8_0(&t.data)),
            _ => unreachable!(),
        };
        w.tensor(&gguf_name(&name), &t.shape, ty, bytes);
    }
    extra(&mut w);
    w.write(path);
    model
}

fn logits(model: &Llama) -> Vec<f32> {
    let expected = read_safetensors(&fixture("tiny-gqa").join("expected.safetensors"));
    let (shape, ids) = &expected["input_ids"];
    let tokens = Tensor::<2, Int>::from_data(
        TensorData::new(
            ids.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            [shape[0], shape[1]],
        ),
        &model.device(),
    );
    model
        .forward(tokens, None)
        .try_into_vec_as::<f32>()
        .unwrap()
}

#[test]
fn f32_gguf_converts_back_to_the_same_model_and_tokenizer() {
    for name in ["tiny-gqa", "tiny-tied"] {
        let dir = scratch(&format!("gguf-f32-{name}"));
        let gguf = dir.join("tiny.gguf");
        let original = write_tiny_gguf(name, &gguf, 0);
        let out = dir.join("hf");
        convert_gguf(&gguf, &out, SaveDtype::F32, false).unwrap();
        let converted = load_model(&out, &cpu_device().device).unwrap();
        // Same weights bit for bit: the permutation is undone exactly.
        assert_eq!(
            converted.checkpoint_weights(),
            original.checkpoint_weights(),
            "{name}"
        );
        assert_eq!(
            converted.config.tie_word_embeddings,
            original.config.tie_word_embeddings
        );

        // The rebuilt tokenizer encodes (BOS included) and templates like the original.
        let a = Tokenizer::load(&fixture(name), &original.config).unwrap();
        let b = Tokenizer::load(&out, &converted.config).unwrap();
        for text in [
            "The capital of France is Paris.",
            "  two  spaces\nnew line 1234",
            "<|im_start|>user\nHi<|im_end|>",
            "héllo wörld ✓",
        ] {
            assert_eq!(
                a.encode(text, true).unwrap(),
                b.encode(text, true).unwrap(),
                "{name}: {text:?}"
            );
            assert_eq!(
                a.encode_query(&text.into(), TemplateMode::Auto).unwrap(),
                b.encode_query(&text.into(), TemplateMode::Auto).unwrap()
            );
        }
        assert_eq!(a.eos_id(), b.eos_id());
        assert_eq!(
            b.decode(&b.encode("héllo wörld", false).unwrap(), false)
                .unwrap(),
            "héllo wörld"
        );
    }
}

/// The model with every 2-d weight rounded through ggml type `ty`, as the GGUF holds it.
fn rounded(model: &Llama, ty: u32) -> Llama {
    let weights: std::collections::HashMap<String, rrhf::model::HostTensor> = model
        .checkpoint_weights()
        .into_iter()
        .map(|(n, mut t)| {
            if t.shape.len() == 2 {
                t.data = match ty {
                    1 => dequantize(&encode_f16(&t.data), GgmlType::F16),
                    8 => dequantize(&quantize_q8_0(&t.data), GgmlType::Q8_0),
                    _ => unreachable!(),
                };
            }
            (n, t)
        })
        .collect();
    let mut source = |name: &str, _: &[usize]| Ok(weights[name].clone());
    Llama::from_weights(
        model.config.clone(),
        &mut source,
        &cpu_device().device,
        burn::tensor::FloatDType::F32,
    )
    .unwrap()
}

#[test]
fn quantised_gguf_converts_to_the_quantised_model() {
    let dir = scratch("gguf-quantised");
    for ty in [1u32, 8] {
        let gguf = dir.join(format!("tiny-{ty}.gguf"));
        let original = write_tiny_gguf("tiny-gqa", &gguf, ty);
        let out = dir.join(format!("hf-{ty}"));
        convert_gguf(&gguf, &out, SaveDtype::F32, false).unwrap();
        let converted = load_model(&out, &cpu_device().device).unwrap();
        let (want, got, before) = (
            logits(&rounded(&original, ty)),
            logits(&converted),
            logits(&original),
        );
        let gap = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        eprintln!(
            "ggml type {ty}: |converted - rounded| = {:.1e}, |converted - f32| = {:.1e}",
            gap(&got, &want),
            gap(&got, &before)
        );
        assert!(gap(&got, &want) < 1e-5, "type {ty}");
        assert!(
            gap(&got, &before) > 1e-4,
            "rounding through type {ty} should show"
        );
    }
}

fn convert_error(bytes: &[u8], name: &str) -> String {
    let dir = scratch(&format!("gguf-bad-{name}"));
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    match convert_gguf(&path, &dir.join("out"), SaveDtype::F32, false) {
        Ok(_) => panic!("{name} converted"),
        Err(e) => {
            assert!(
                !dir.join("out").exists(),
                "a failed conversion leaves no output"
            );
            format!("{e:#}")
        }
    }
}

#[test]
fn bad_gguf_files_get_clear_errors() {
    let dir = scratch("gguf-good");
    let good = dir.join("tiny.gguf");
    write_tiny_gguf("tiny-gqa", &good, 8);
    let bytes = std::fs::read(&good).unwrap();

    let err = convert_error(b"NOPE and some more bytes", "magic");
    assert!(
        err.contains("magic.gguf") && err.contains("bad magic"),
        "{err}"
    );

    let err = convert_error(&bytes[..bytes.len() / 2], "truncated");
    assert!(
        err.contains("truncated.gguf") && err.contains("past the end"),
        "{err}"
    );

    for cut in [20, 200, 5000] {
        let err = convert_error(&bytes[..cut], &format!("cut{cut}"));
        assert!(
            err.contains(&format!("cut{cut}.gguf")) && err.contains("truncated"),
            "{err}"
        );
    }

    // LLaMA 3.1 files carry their RoPE scaling as a tensor that config.json cannot express.
    let llama31 = dir.join("llama31.gguf");
    write_tiny_gguf_with("tiny-gqa", &llama31, 0, |w| {
        w.tensor("rope_freqs.weight", &[8], 0, encode_f32(&[1.0; 8]));
    });
    let err = format!(
        "{:#}",
        convert_gguf(&llama31, &dir.join("o31"), SaveDtype::F32, false).unwrap_err()
    );
    assert!(
        err.contains("llama31.gguf") && err.contains("rope_freqs.weight"),
        "{err}"
    );

    let missing = scratch("gguf-missing").join("absent.gguf");
    let err = format!(
        "{:#}",
        convert_gguf(&missing, &dir.join("o"), SaveDtype::F32, false).unwrap_err()
    );
    assert!(err.contains("absent.gguf"), "{err}");

    // An unsupported tensor type (IQ2_XXS = 16) on one weight.
    let mut w = GgufWriter::default();
    w.string("general.architecture", "llama");
    let model = load_model(&fixture("tiny-tied"), &cpu_device().device).unwrap();
    let c = &model.config;
    w.u32("llama.block_count", 1)
        .u32("llama.embedding_length", c.hidden_size as u32)
        .u32("llama.feed_forward_length", c.intermediate_size as u32)
        .u32("llama.attention.head_count", c.num_attention_heads as u32)
        .string("tokenizer.ggml.model", "gpt2")
        .strings(
            "tokenizer.ggml.tokens",
            &(0..320).map(|i| format!("t{i}")).collect::<Vec<_>>(),
        )
        .strings("tokenizer.ggml.merges", &[]);
    let mut cfg = c.clone();
    cfg.num_hidden_layers = 1;
    cfg.num_key_value_heads = cfg.num_attention_heads;
    for (name, shape) in checkpoint_tensors(&cfg) {
        let n: usize = shape.iter().product();
        let (ty, bytes) = if name.contains("q_proj") {
            (16u32, vec![0u8; n])
        } else {
            (0, encode_f32(&vec![0.0; n]))
        };
        w.tensor(&gguf_name(&name), &shape, ty, bytes);
    }
    let err = convert_error(&w.to_bytes(), "iq2");
    assert!(
        err.contains("iq2.gguf") && err.contains("blk.0.attn_q.weight") && err.contains("IQ2_XXS"),
        "{err}"
    );
}
