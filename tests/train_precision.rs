//! What saves memory or time takes the steps the plain run takes: gradient checkpointing (by
//! layer or by op, full training and LoRA), mixed precision (f16 and bf16 against f32) with f16's
//! dynamic loss scale (overflow, resume), and the optimizer keeping the checkpointing strategy.

mod common;

use std::path::{Path, PathBuf};

use common::{
    deterministic, metrics, scratch, step_figures, tiny_config as config, train_devices as devices,
};
use rrhf::device::DeviceChoice;
use rrhf::train::{RunOptions, train};
use serde_json::Value;

/// Whether to train with LoRA, for each run on `device`: both on the CPU path; on lavapipe LoRA
/// alone, where frozen and updated weights could part. Full training there is the CPU path's
/// graph on the same kernels LoRA runs (the half-precision ones included), and each lavapipe
/// configuration costs CI minutes of kernel compiles.
fn lora_cases(device: &DeviceChoice) -> &'static [bool] {
    if *device == DeviceChoice::Cpu {
        &[false, true]
    } else {
        &[true]
    }
}

/// `train.gradient_checkpointing` recomputes activations in the backward pass, by decoder layer
/// (`layer`: the backward pass is cut into one piece per layer) or by op (`ops`): the steps it
/// takes are the same as without it, for full training and for LoRA (whose frozen and updated
/// weights must keep sharing the device's strategy after each update, or burn refuses to mix
/// them).
#[test]
fn gradient_checkpointing_takes_the_same_steps() {
    for device in devices() {
        let run = |checkpointing: &str, lora: bool| {
            let out = scratch(&format!("train-ckpt-{device}-{checkpointing}-{lora}"));
            let mut set = vec![
                "train.max_steps=3".to_string(),
                format!("train.gradient_checkpointing={checkpointing}"),
            ];
            if lora {
                set.extend(["lora.rank=4".into(), "lora.dropout=0.0".into()]);
            }
            let set: Vec<&str> = set.iter().map(String::as_str).collect();
            train(
                &config(&out, &device, &set),
                &RunOptions {
                    resume: None,
                    stop_after: None,
                    force: false,
                },
            )
            .unwrap();
            step_figures(&out)
        };
        for &lora in lora_cases(&device) {
            let plain = run("off", lora);
            assert_eq!(plain.len(), 3);
            for mode in ["layer", "ops"] {
                let recomputed = run(mode, lora);
                assert_eq!(recomputed.len(), 3);
                for (a, b) in plain.iter().zip(&recomputed) {
                    assert!(
                        (a.0 - b.0).abs() <= 1e-5 * a.0.abs()
                            && (a.1 - b.1).abs() <= 1e-5 * a.1.abs(),
                        "{device} (lora {lora}): (loss, grad norm) {a:?} without checkpointing, \
                         {b:?} with {mode}"
                    );
                }
            }
        }
    }
}

/// `train.precision`: f16 and bf16 matmuls on f32 weights take the steps f32 takes, to within
/// the rounding of their 11- and 8-bit mantissas, for full training and LoRA (with f16's loss
/// scaling on). A device without the arithmetic is refused by name.
#[test]
fn mixed_precision_follows_f32() {
    use rrhf::model::Precision;
    for device in devices() {
        let selected = rrhf::device::select(&device).unwrap();
        let run = |precision: &str, lora: bool| {
            let out = scratch(&format!("train-precision-{device}-{precision}-{lora}"));
            let mut set = vec![
                "train.max_steps=3".to_string(),
                format!("train.precision={precision:?}"),
                // The tiny model's gradients are large: 2^16 (the default) overflows f16 at once.
                "train.loss_scale=1024".to_string(),
            ];
            if lora {
                set.extend(["lora.rank=4".into(), "lora.dropout=0.0".into()]);
            }
            let set: Vec<&str> = set.iter().map(String::as_str).collect();
            let result = train(
                &config(&out, &device, &set),
                &RunOptions {
                    resume: None,
                    stop_after: None,
                    force: false,
                },
            );
            result.map(|_| (step_figures(&out), metrics(&out)))
        };
        for &lora in lora_cases(&device) {
            let (exact, _) = run("f32", lora).unwrap();
            // (loss, grad norm) relative tolerances; measured on the 3rd step: f16 3e-4 and 1e-4,
            // bf16 3e-3 and 8e-2 (the gradient norm after two updates in 8-bit mantissas).
            for (precision, name, loss_tol, grad_tol) in [
                (Precision::F16, "f16", 2e-3, 1e-2),
                (Precision::Bf16, "bf16", 1e-2, 0.15),
            ] {
                if !precision.runs_on(&selected.device) {
                    let err = run(name, lora).unwrap_err();
                    assert!(format!("{err:#}").contains("train.precision"), "{err:#}");
                    eprintln!("{device}: no {name} arithmetic, refused as it should be");
                    continue;
                }
                let (mixed, lines) = run(name, lora).unwrap();
                assert_eq!(mixed.len(), 3);
                for (a, b) in exact.iter().zip(&mixed) {
                    eprintln!("{device} {name} lora {lora}: f32 {a:?}, mixed {b:?}");
                    assert!(
                        (a.0 - b.0).abs() <= loss_tol * a.0.abs()
                            && (a.1 - b.1).abs() <= grad_tol * a.1.abs(),
                        "{device} {name} (lora {lora}): (loss, grad norm) {a:?} in f32, {b:?}"
                    );
                }
                let scaled = lines
                    .iter()
                    .filter(|l| l.get("loss_scale").is_some())
                    .count();
                assert_eq!(scaled, if name == "f16" { 3 } else { 0 }, "{lines:?}");
            }
        }
    }
}

/// f16 training whose scaled gradients overflow skips the update and halves the loss scale,
/// and the weights it saves are the ones it started from.
#[test]
fn f16_overflow_skips_the_step_and_halves_the_scale() {
    let device = DeviceChoice::Cpu;
    let out = scratch("train-f16-overflow");
    let scale = 2f64.powi(100);
    let set = [
        "train.max_steps=2".to_string(),
        "train.precision=\"f16\"".to_string(),
        format!("train.loss_scale={scale:e}"),
    ];
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    let summary = train(
        &config(&out, &device, &set),
        &RunOptions {
            resume: None,
            stop_after: None,
            force: false,
        },
    )
    .unwrap();
    let steps: Vec<Value> = metrics(&out)
        .into_iter()
        .filter(|v| v.get("loss").is_some())
        .collect();
    assert_eq!(steps.len(), 2);
    for (i, line) in steps.iter().enumerate() {
        assert_eq!(line["skipped"], Value::Bool(true), "{line}");
        assert_eq!(
            line["loss_scale"].as_f64().unwrap(),
            scale / 2f64.powi(i as i32)
        );
    }
    let weights = |dir: &Path| {
        let mut all = std::collections::HashMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("model") && name.ends_with(".safetensors") {
                all.extend(common::read_safetensors(&path));
            }
        }
        all
    };
    let (before, after) = (
        weights(&common::fixture("tiny-gqa")),
        weights(&summary.saved),
    );
    assert!(!before.is_empty());
    for (name, (_, values)) in &before {
        assert_eq!(&after[name].1, values, "{name} changed on a skipped step");
    }
}

/// Layer checkpointing cuts the backward pass into one piece per decoder layer, plus the head's
/// and the embedding's: every weight's gradient is the one the uncut backward gives, with an
/// untied head (the embedding's own piece) and a tied one (its gradient from two pieces).
#[test]
fn layer_checkpointing_gives_every_gradient() {
    use rrhf::data::{RankBatch, TokenizedExample};
    use rrhf::loss::LossConfig;
    use rrhf::train::checkpointing::{Checkpointing, loss_forward};
    use rrhf::train::optimizer::GradientBuffer;
    use rrhf::train::step::Objective;
    let examples = vec![
        TokenizedExample {
            query: vec![1, 5, 9, 14],
            responses: vec![vec![20, 21, 22], vec![30, 31], vec![7, 8, 9, 10, 11]],
            scores: vec![0.5, 2.0, 1.0],
            line: 1,
        },
        TokenizedExample {
            query: vec![1, 3],
            responses: vec![vec![40, 41, 42, 43], vec![50]],
            scores: vec![1.0, 0.0],
            line: 2,
        },
    ];
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch = RankBatch::new(&refs);
    for name in ["tiny-gqa", "tiny-tied"] {
        let gradients = |mode: Checkpointing| {
            let device = mode.training_device(&burn::tensor::Device::flex());
            let model = rrhf::checkpoint::load_model(&common::fixture(name), &device).unwrap();
            let forward = loss_forward(&model, &batch.sequences, mode, |hidden| {
                Objective::Rrhf(LossConfig::default()).loss(&model, &batch, hidden)
            });
            let objective = forward.loss.total.clone().sum();
            let mut buffer = GradientBuffer::default();
            forward.backward(&model, objective, &mut buffer);
            buffer
                .tensors()
                .iter()
                .map(|g| g.clone().try_into_vec_as::<f32>().unwrap())
                .collect::<Vec<_>>()
        };
        let (whole, layered) = (
            gradients(Checkpointing::Off),
            gradients(Checkpointing::Layer),
        );
        assert_eq!(whole.len(), layered.len());
        for (i, (a, b)) in whole.iter().zip(&layered).enumerate() {
            let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt();
            assert!(norm > 0.0, "{name}: parameter {i} has no gradient");
            assert!(
                diff <= 1e-5 * norm,
                "{name}: parameter {i}: |layered - whole| = {diff}, |whole| = {norm}"
            );
        }
    }
}

/// The dynamic loss scale is part of an f16 run's state: a run resumed after its scale has
/// backed off continues with the backed-off scale, and takes the uninterrupted run's steps.
#[test]
fn f16_resume_keeps_the_loss_scale() {
    let device = DeviceChoice::Cpu;
    let extra = [
        "train.max_steps=6",
        "output.save_every=0",
        "train.precision=\"f16\"",
        "lora.rank=4",
    ];
    let whole = scratch("train-f16-whole");
    let run = |out: &Path, resume: Option<PathBuf>, stop_after: Option<usize>| {
        train(
            &config(out, &device, &extra),
            &RunOptions {
                resume,
                stop_after,
                force: false,
            },
        )
        .unwrap()
    };
    run(&whole, None, None);
    let split = scratch("train-f16-split");
    let stopped = run(&split, None, Some(3));
    run(&split, Some(stopped.saved), None);

    let whole = deterministic(metrics(&whole));
    let skipped_early = whole
        .iter()
        .any(|l| l["skipped"] == Value::Bool(true) && l["step"].as_u64().unwrap() <= 3);
    assert!(
        skipped_early,
        "the test needs an overflow before the checkpoint: {whole:?}"
    );
    assert_eq!(whole, deterministic(metrics(&split)));
}

/// An AdamW step rebuilds every weight it updates; they must come back with the device's
/// checkpointing strategy, or checkpointing silently stops after the first step.
#[test]
fn optimizer_step_keeps_the_checkpointing_strategy() {
    use burn::tensor::{GradientCheckpointingStrategy, Int, Tensor, TensorData};
    use rrhf::train::optimizer::{AdamW, AdamWConfig, GradientBuffer};
    let device = burn::tensor::Device::flex()
        .autodiff()
        .gradient_checkpointing();
    let model = rrhf::checkpoint::load_model(&common::fixture("tiny-gqa"), &device).unwrap();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 5, 7, 9], [1, 4]), &device);
    let mut grads = GradientBuffer::default();
    grads.accumulate(&model, &model.forward(tokens, None).sum().backward());
    let mut adam = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    });
    let model = adam.step(model, &grads, 1e-3, 1.0);
    for weight in [
        model.embed_tokens.weight.val(),
        model.layers[1].mlp.down_proj.base.weight.val(),
    ] {
        assert_eq!(
            weight.gradient_checkpointing_strategy(),
            Some(GradientCheckpointingStrategy::Balanced)
        );
    }
}
