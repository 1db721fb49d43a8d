//! Checkpoint directories: round trips, dtypes, and errors that name the file and the field.

mod common;

use common::{fixture, scratch};
use rrhf::checkpoint::{SaveDtype, load_model, save_model};
use rrhf::device::cpu_device;
use rrhf::model::LlamaConfig;
use rrhf::tokenizer::Tokenizer;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn load_save_load_is_bit_identical() {
    let dev = cpu_device();
    for name in ["tiny-gqa", "tiny-tied"] {
        let src = fixture(name);
        let first = load_model(&src, &dev.device).unwrap();
        let out = scratch(&format!("roundtrip-{name}"));
        let saved = out.join("model");
        save_model(&first, Some(&src), &saved, SaveDtype::F32).unwrap();
        let second = load_model(&saved, &dev.device).unwrap();
        let (a, b) = (first.checkpoint_weights(), second.checkpoint_weights());
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(ta.shape, tb.shape, "{na}");
            let same = ta
                .data
                .iter()
                .zip(&tb.data)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{name}: {na} changed in the round trip");
        }
        // Saving again gives the same bytes.
        let again = out.join("again");
        save_model(&second, Some(&src), &again, SaveDtype::F32).unwrap();
        assert_eq!(
            std::fs::read(saved.join("model.safetensors")).unwrap(),
            std::fs::read(again.join("model.safetensors")).unwrap()
        );
        // The tokenizer and template came along, and the config keeps its keys.
        assert!(saved.join("tokenizer.json").exists());
        Tokenizer::load(&saved, &second.config).unwrap();
        let cfg: serde_json::Value = common::json(&saved.join("config.json"));
        assert_eq!(cfg["dtype"], "float32");
        assert_eq!(
            cfg["tie_word_embeddings"],
            common::json(&src.join("config.json"))["tie_word_embeddings"]
        );
    }
}

#[test]
fn bf16_checkpoints_load_as_their_exact_values() {
    // tiny-tied is stored in bf16: a bf16 save of it must reproduce the file's values exactly.
    let dev = cpu_device();
    let src = fixture("tiny-tied");
    let model = load_model(&src, &dev.device).unwrap();
    let out = scratch("bf16").join("model");
    save_model(&model, Some(&src), &out, SaveDtype::Bf16).unwrap();
    let back = load_model(&out, &dev.device).unwrap();
    for ((n, a), (_, b)) in model
        .checkpoint_weights()
        .iter()
        .zip(&back.checkpoint_weights())
    {
        assert!(
            a.data
                .iter()
                .zip(&b.data)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n}"
        );
    }
    assert_eq!(common::json(&out.join("config.json"))["dtype"], "bfloat16");
}

#[test]
fn large_checkpoints_are_sharded_with_an_index() {
    let dev = cpu_device();
    let src = fixture("tiny-tied");
    let model = load_model(&src, &dev.device).unwrap();
    let out = scratch("sharded");
    rrhf::checkpoint::safetensors_dir::write_weights(
        &out,
        &model.checkpoint_weights(),
        SaveDtype::F32,
        50_000,
    )
    .unwrap();
    std::fs::copy(src.join("config.json"), out.join("config.json")).unwrap();
    let index = common::json(&out.join("model.safetensors.index.json"));
    let files: std::collections::BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(files.len() > 2, "{files:?}");
    let back = load_model(&out, &dev.device).unwrap();
    assert_eq!(back.checkpoint_weights(), model.checkpoint_weights());
}

fn error_of(dir: &std::path::Path) -> String {
    match load_model(dir, &cpu_device().device) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn missing_or_corrupt_weights_are_named() {
    let dir = scratch("bad-weights");
    copy_dir(&fixture("tiny-tied"), &dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = error_of(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains(dir.to_str().unwrap()),
        "{err}"
    );

    // Truncated file.
    let bytes = std::fs::read(fixture("tiny-tied").join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = error_of(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("not fully covered"),
        "{err}"
    );

    // Garbage header.
    std::fs::write(
        dir.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
    )
    .unwrap();
    let err = error_of(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = scratch("missing-tensor");
    copy_dir(&fixture("tiny-gqa"), &dir);
    // Drop one shard: the tensors it held are missing.
    let index = common::json(&dir.join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().unwrap();
    let file = map
        .iter()
        .find(|(k, _)| k.contains("layers.1.mlp.up_proj"))
        .unwrap()
        .1
        .as_str()
        .unwrap()
        .to_string();
    let removed: Vec<&String> = map
        .iter()
        .filter(|(_, v)| v.as_str() == Some(&file))
        .map(|(k, _)| k)
        .collect();
    let kept: serde_json::Map<_, _> = map
        .iter()
        .filter(|(_, v)| v.as_str() != Some(&file))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": kept}).to_string(),
    )
    .unwrap();
    std::fs::remove_file(dir.join(&file)).unwrap();
    let err = error_of(&dir);
    assert!(
        removed
            .iter()
            .any(|n| err.contains(&format!("missing tensor `{n}`"))),
        "{err} (removed {removed:?})"
    );
}

#[test]
fn config_with_missing_field_is_named() {
    let dir = scratch("bad-config");
    copy_dir(&fixture("tiny-tied"), &dir);
    let mut cfg = common::json(&dir.join("config.json"));
    cfg.as_object_mut().unwrap().remove("num_attention_heads");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let err = error_of(&dir);
    assert!(
        err.contains("config.json") && err.contains("missing field `num_attention_heads`"),
        "{err}"
    );

    std::fs::write(dir.join("config.json"), "{ \"vocab_size\": 320, ").unwrap();
    let err = error_of(&dir);
    assert!(
        err.contains("config.json") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn wrong_shapes_and_foreign_tokenizers_are_named() {
    // A config whose hidden size disagrees with the weights.
    let dir = scratch("bad-shape");
    copy_dir(&fixture("tiny-tied"), &dir);
    let mut cfg = common::json(&dir.join("config.json"));
    cfg["intermediate_size"] = 128.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = error_of(&dir);
    assert!(
        err.contains("gate_proj.weight") && err.contains("[96, 64]") && err.contains("[128, 64]"),
        "{err}"
    );

    // A tokenizer with more tokens than the model's vocabulary.
    let dir = scratch("bad-tokenizer");
    copy_dir(&fixture("tiny-tied"), &dir);
    let mut cfg = common::json(&dir.join("config.json"));
    cfg["vocab_size"] = 300.into();
    let config = LlamaConfig::from_json_str(&cfg.to_string()).unwrap();
    let err = match Tokenizer::load(&dir, &config) {
        Ok(_) => panic!("loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("tokenizer.json")
            && err.contains("vocab_size")
            && err.contains("320")
            && err.contains("300"),
        "{err}"
    );
}
