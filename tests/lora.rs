//! LoRA: adapters in PEFT's layout compute what PEFT computes (tests/fixtures/make_tiny_lora.py),
//! merge into the weights PEFT's `merge_and_unload` gives, save and reload unchanged, train only
//! themselves, resume exactly, and bad adapter directories are refused with the file and field.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{
    deterministic, fixture, metrics, read_safetensors, rrhf, scratch, test_devices, train_devices,
    train_in_own_process,
};
use rrhf::checkpoint::{SaveDtype, load_model, load_model_storing, save_model};
use rrhf::device::DeviceChoice;
use rrhf::model::Llama;
use rrhf::train::TrainConfig;
use serde_json::Value;

struct Batch {
    ids: Vec<i64>,
    shape: [usize; 2],
    valid: Vec<bool>,
}

fn expected() -> (Batch, Vec<f64>, Vec<f64>) {
    let e = read_safetensors(&fixture("tiny-lora/expected.safetensors"));
    let (shape, ids) = &e["input_ids"];
    let batch = Batch {
        ids: ids.iter().map(|&x| x as i64).collect(),
        shape: [shape[0], shape[1]],
        valid: e["attention_mask"].1.iter().map(|&m| m == 1.0).collect(),
    };
    (batch, e["logits"].1.clone(), e["merged_logits"].1.clone())
}

fn logits(model: &Llama, batch: &Batch, device: &Device) -> Vec<f32> {
    let tokens =
        Tensor::<2, Int>::from_data(TensorData::new(batch.ids.clone(), batch.shape), device);
    model
        .forward(tokens, Some(&batch.valid))
        .try_into_vec_as()
        .unwrap()
}

/// The largest difference over the positions that hold real tokens.
fn worst(got: &[f32], want: &[f64], valid: &[bool]) -> f64 {
    let v = got.len() / valid.len();
    valid
        .iter()
        .enumerate()
        .filter(|(_, ok)| **ok)
        .flat_map(|(pos, _)| (0..v).map(move |k| pos * v + k))
        .map(|i| (got[i] as f64 - want[i]).abs())
        .fold(0.0, f64::max)
}

#[test]
fn adapters_and_merge_match_peft() {
    let (batch, want, want_merged) = expected();
    for dev in test_devices() {
        let model = load_model(&fixture("tiny-lora"), &dev.device).unwrap();
        let adapted = logits(&model, &batch, &dev.device);
        let d = worst(&adapted, &want, &batch.valid);
        eprintln!(
            "{}: max |base + adapters - PEFT| = {d:.2e}",
            dev.description
        );
        assert!(d < 1e-4, "{}: differs from PEFT by {d}", dev.description);

        // The adapters do something: without them the logits are the base model's.
        let plain = logits(&model.without_lora(), &batch, &dev.device);
        assert!(worst(&plain, &want, &batch.valid) > 0.05);

        let merged = logits(&model.merge_lora(), &batch, &dev.device);
        let d = worst(&merged, &want_merged, &batch.valid);
        eprintln!("{}: max |merged - PEFT merged| = {d:.2e}", dev.description);
        assert!(
            d < 1e-4,
            "{}: merged differs from PEFT by {d}",
            dev.description
        );
        let as_f64: Vec<f64> = adapted.iter().map(|&x| x as f64).collect();
        let d = worst(&merged, &as_f64, &batch.valid);
        assert!(
            d < 1e-5,
            "{}: merged vs base + adapters: {d}",
            dev.description
        );
    }
}

/// A LoRA model for half precision loads its frozen projections in that precision (the
/// adapters, norms and embedding stay f32); its logits stay PEFT's within f16's rounding, and
/// its merge is an f32 model.
#[test]
fn half_precision_stores_the_frozen_base_in_half() {
    use burn::tensor::{DType, FloatDType};
    use rrhf::model::Precision;
    let (batch, want, _) = expected();
    for dev in test_devices() {
        if !Precision::F16.runs_on(&dev.device) {
            continue;
        }
        let mut model =
            load_model_storing(&fixture("tiny-lora"), &dev.device, FloatDType::F16).unwrap();
        model.precision = Precision::F16;
        let q = &model.layers[0].self_attn.q_proj;
        assert_eq!(q.base.weight.val().dtype(), DType::F16);
        assert_eq!(q.lora.as_ref().unwrap().a.val().dtype(), DType::F32);
        assert_eq!(model.embed_tokens.weight.val().dtype(), DType::F32);
        let d = worst(&logits(&model, &batch, &dev.device), &want, &batch.valid);
        eprintln!("{}: f16, max |logits - PEFT| = {d:.2e}", dev.description);
        assert!(
            d < 2e-2,
            "{}: f16 differs from PEFT by {d}",
            dev.description
        );
        let merged = model.merge_lora();
        let w = merged.layers[0].self_attn.q_proj.base.weight.val();
        assert_eq!(w.dtype(), FloatDType::F32.into());
    }
}

#[test]
fn saved_adapters_reload_and_merge_from_the_cli() {
    let (batch, want, want_merged) = expected();
    let device = Device::flex();
    let dir = scratch("lora-saved");
    let saved = dir.join("adapters");
    let model = load_model(&fixture("tiny-lora"), &device).unwrap();
    save_model(&model, Some(&fixture("tiny-gqa")), &saved, SaveDtype::F32).unwrap();
    for name in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
    ] {
        assert!(saved.join(name).exists(), "{name} not written");
    }
    assert!(
        !saved.join("model.safetensors").exists(),
        "the base must not be copied"
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(
        (config["r"].as_u64(), config["lora_alpha"].as_f64()),
        (Some(4), Some(8.0))
    );

    let reloaded = load_model(&saved, &device).unwrap();
    let d = worst(&logits(&reloaded, &batch, &device), &want, &batch.valid);
    assert!(d < 1e-4, "reloaded adapters differ from PEFT by {d}");

    let merged_dir = dir.join("merged");
    let out = rrhf([
        OsStr::new("merge"),
        OsStr::new("--adapter"),
        saved.as_os_str(),
        OsStr::new("--out"),
        merged_dir.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(merged_dir.join("config.json").exists() && merged_dir.join("tokenizer.json").exists());
    let merged = load_model(&merged_dir, &device).unwrap();
    assert!(merged.adapter.is_none());
    let d = worst(
        &logits(&merged, &batch, &device),
        &want_merged,
        &batch.valid,
    );
    eprintln!("rrhf merge: max |merged - PEFT merged| = {d:.2e}");
    assert!(
        d < 1e-4,
        "merged directory differs from PEFT's merge by {d}"
    );
}

/// The `--set` overrides of a LoRA run of the tiny config in `out` on `device`, plus `extra`.
fn lora_overrides(out: &Path, device: &DeviceChoice, extra: &[&str]) -> Vec<String> {
    let mut set = vec![
        format!("output.dir={:?}", out.display().to_string()),
        format!("train.device={:?}", device.to_string()),
        "lora.rank=4".into(),
        "lora.alpha=8.0".into(),
        // Dropout masks are drawn from (seed, step), so the run still repeats and resumes exactly.
        "lora.dropout=0.1".into(),
        "train.lr=1e-2".into(),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    set
}

/// Each run in its own process: see `train_in_own_process` for why.
#[test]
fn lora_run_trains_only_the_adapters_and_resumes_exactly() {
    let devices = train_devices();
    let host = Device::flex();
    let base = load_model(&fixture("tiny-gqa"), &host).unwrap();
    for device in devices {
        let extra = [
            "train.max_steps=8",
            "output.save_every=0",
            "output.eval_every=8",
        ];
        let whole = scratch(&format!("lora-whole-{device}"));
        let tiny = common::TINY_CONFIG;
        train_in_own_process(tiny, &lora_overrides(&whole, &device, &extra), None, None);
        let evals: Vec<f64> = deterministic(metrics(&whole))
            .iter()
            .filter_map(|v| v["eval_loss"].as_f64())
            .collect();
        assert!(
            evals.last().unwrap() < &(evals[0] * 0.8),
            "{device}: LoRA training should lower the eval loss: {evals:?}"
        );

        // The output is adapters only; the base weights under them are the untouched original.
        let saved = whole.join("final");
        assert!(saved.join("adapter_model.safetensors").exists());
        let trained = load_model(&saved, &host).unwrap();
        assert_eq!(
            trained.without_lora().checkpoint_weights(),
            base.checkpoint_weights(),
            "{device}: a frozen weight changed"
        );
        let b = trained.layers[0]
            .self_attn
            .q_proj
            .lora
            .as_ref()
            .unwrap()
            .b
            .val();
        assert!(
            b.abs().max().into_scalar::<f32>() > 0.0,
            "{device}: B never moved off zero"
        );

        let split = scratch(&format!("lora-split-{device}"));
        let set = lora_overrides(&split, &device, &extra);
        train_in_own_process(tiny, &set, None, Some(3));
        train_in_own_process(tiny, &set, Some(&split.join("checkpoint-3")), None);
        assert_eq!(
            deterministic(metrics(&whole)),
            deterministic(metrics(&split)),
            "{device}: resumed run differs"
        );
    }
}

/// A copy of the fixture adapter with `edit` applied to its adapter_config.json.
fn edited_adapter(name: &str, edit: impl FnOnce(&mut Value)) -> std::path::PathBuf {
    let dir = scratch(name);
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture("tiny-lora").join(file), dir.join(file)).unwrap();
    }
    let path = dir.join("adapter_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["base_model_name_or_path"] = fixture("tiny-gqa").display().to_string().into();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

#[test]
fn bad_adapters_are_refused_with_file_and_field() {
    let device = Device::flex();
    let cases: Vec<(&str, Box<dyn FnOnce(&mut Value)>, &[&str])> = vec![
        (
            "lora-dora",
            Box::new(|c| c["use_dora"] = true.into()),
            &["adapter_config.json", "use_dora"],
        ),
        (
            "lora-rank",
            Box::new(|c| c["r"] = 3.into()),
            &["adapter_model.safetensors", "lora_A", "r = 3"],
        ),
        (
            "lora-target",
            Box::new(|c| c["target_modules"] = serde_json::json!(["q_proj", "lm_head"])),
            &["target_modules", "lm_head"],
        ),
        (
            "lora-fewer",
            Box::new(|c| c["target_modules"] = serde_json::json!(["q_proj"])),
            &["adapter_model.safetensors", "do not explain"],
        ),
        (
            "lora-base",
            Box::new(|c| c["base_model_name_or_path"] = "no/such/model".into()),
            &["base_model_name_or_path", "no/such/model"],
        ),
    ];
    for (name, edit, expect) in cases {
        let dir = edited_adapter(name, edit);
        let err = format!("{:#}", load_model(&dir, &device).unwrap_err());
        for e in expect {
            assert!(err.contains(e), "{name}: `{e}` not in: {err}");
        }
    }
    let text = "[model]\npath = \"m\"\n[data]\ntrain = \"t.jsonl\"\n[output]\ndir = \"o\"\n[lora]\nrank = 0\n";
    let err = TrainConfig::parse(text, Path::new("c.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.toml") && err.contains("lora.rank"), "{err}");
}
