//! The trainer end to end on the tiny fixture model: it learns the ranking, resumes exactly,
//! keeps its checkpoints through kill -9, and rejects bad data and configs with the file, line
//! and field.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    deterministic, metrics, scratch, step_figures, train_devices as devices, train_in_own_process,
};
use rrhf::device::DeviceChoice;
use rrhf::train::{RunOptions, TrainConfig, train};
use serde_json::Value;

const CONFIG: &str = "configs/tiny-test.toml";

fn config(out: &Path, device: &DeviceChoice, extra: &[&str]) -> TrainConfig {
    TrainConfig::load(Path::new(CONFIG), &overrides(out, device, extra)).unwrap()
}

/// The `--set` overrides that put the tiny config's run in `out` on `device`, plus `extra`.
fn overrides(out: &Path, device: &DeviceChoice, extra: &[&str]) -> Vec<String> {
    let mut set = vec![
        format!("output.dir={:?}", out.display().to_string()),
        format!("train.device={:?}", device.to_string()),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    set
}

#[test]
fn tiny_model_learns_the_ranking() {
    for device in devices() {
        let out = scratch(&format!("train-learns-{device}"));
        let summary = train(
            &config(&out, &device, &[]),
            &RunOptions {
                resume: None,
                stop_after: None,
                force: false,
            },
        )
        .unwrap();
        let evals: Vec<Value> = metrics(&out)
            .into_iter()
            .filter(|v| v.get("eval_loss").is_some())
            .collect();
        let first = evals.first().unwrap()["eval_rank_accuracy"]
            .as_f64()
            .unwrap();
        let last = evals.last().unwrap()["eval_rank_accuracy"]
            .as_f64()
            .unwrap();
        assert!(
            first < 0.5,
            "{device}: the untrained model should rank badly, got {first}"
        );
        assert_eq!(last, 1.0, "{device}: eval ranking accuracy after training");
        assert!(
            evals.last().unwrap()["eval_loss"].as_f64().unwrap()
                < evals[0]["eval_loss"].as_f64().unwrap() / 4.0,
            "{device}: eval loss should fall: {evals:?}"
        );
        // The final model is a Hugging Face directory that loads.
        assert_eq!(summary.saved, out.join("final"));
        rrhf::checkpoint::load_model(&summary.saved, &burn::tensor::Device::flex()).unwrap();
        // Every logged step has the fields the issue names.
        for line in metrics(&out).iter().filter(|v| v.get("loss").is_some()) {
            for key in [
                "step",
                "loss",
                "rank_loss",
                "ft_loss",
                "lr",
                "grad_norm",
                "tokens_per_sec",
            ] {
                assert!(line[key].is_number(), "{device}: {key} missing in {line}");
            }
        }
    }
}

/// Each run in its own process: see `train_in_own_process` for why.
#[test]
fn resume_continues_exactly() {
    for device in devices() {
        let extra = ["train.max_steps=8", "output.save_every=0"];
        let whole = scratch(&format!("train-whole-{device}"));
        train_in_own_process(CONFIG, &overrides(&whole, &device, &extra), None, None);

        let split = scratch(&format!("train-split-{device}"));
        let set = overrides(&split, &device, &extra);
        train_in_own_process(CONFIG, &set, None, Some(3));
        let stopped = split.join("checkpoint-3");
        assert!(stopped.join("trainer_state.json").exists(), "{device}");
        train_in_own_process(CONFIG, &set, Some(&stopped), None);

        let (a, b) = (
            deterministic(metrics(&whole)),
            deterministic(metrics(&split)),
        );
        assert_eq!(a.len(), b.len(), "{device}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{device}: resumed run differs");
        }
    }
}

fn rrhf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rrhf"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `rrhf train` on the tiny config with `data_line` as an extra training line (or a config
/// override), expecting an error that mentions every one of `expect`.
fn expect_train_error(dir: &Path, set: &[String], expect: &[&str]) {
    let mut args = vec!["train".to_string(), "--config".into(), CONFIG.into()];
    let mut all = vec![format!(
        "output.dir={:?}",
        dir.join("out").display().to_string()
    )];
    all.extend(set.iter().cloned());
    for s in &all {
        args.push("--set".into());
        args.push(s.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rrhf(&refs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure for {set:?}");
    assert!(
        !stderr.contains("panicked"),
        "panic instead of an error: {stderr}"
    );
    for e in expect {
        assert!(stderr.contains(e), "expected {e:?} in: {stderr}");
    }
}

fn data_file(dir: &Path, name: &str, bad_line: &str) -> PathBuf {
    let good = std::fs::read_to_string("tests/data/tiny_ranked_train.jsonl").unwrap();
    let mut lines: Vec<&str> = good.lines().take(3).collect();
    lines.push(bad_line);
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn bad_data_names_file_line_and_field() {
    let dir = scratch("train-bad-data");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "malformed.jsonl",
            r#"{"query": "q", "responses": ["a"], "#,
            &["malformed.jsonl:4", "not valid JSON"],
        ),
        (
            "lengths.jsonl",
            r#"{"query": "q", "responses": ["a", "b"], "scores": [1]}"#,
            &["lengths.jsonl:4", "`scores`", "1 scores for 2 responses"],
        ),
        (
            "empty.jsonl",
            r#"{"query": "q", "responses": [], "scores": []}"#,
            &["empty.jsonl:4", "`responses`", "empty"],
        ),
        (
            "nan.jsonl",
            r#"{"query": "q", "responses": ["a", "b"], "scores": [NaN, 1]}"#,
            &["nan.jsonl:4", "`scores`", "NaN"],
        ),
        (
            "null.jsonl",
            r#"{"query": "q", "responses": ["a", "b"], "scores": [null, 1]}"#,
            &["null.jsonl:4", "`scores[0]`"],
        ),
    ];
    for (name, line, expect) in cases {
        let path = data_file(&dir, name, line);
        expect_train_error(
            &dir,
            &[format!("data.train={:?}", path.display().to_string())],
            expect,
        );
    }
    // A query longer than max_length.
    let long = format!(
        r#"{{"query": "{}", "responses": ["a"], "scores": [1]}}"#,
        "word ".repeat(200)
    );
    let path = data_file(&dir, "long.jsonl", &long);
    expect_train_error(
        &dir,
        &[format!("data.train={:?}", path.display().to_string())],
        &["long.jsonl:4", "`query`", "max_length = 64"],
    );
}

#[test]
fn bad_config_names_the_key() {
    let dir = scratch("train-bad-config");
    let text = std::fs::read_to_string(CONFIG)
        .unwrap()
        .replace("[train]\n", "[train]\nlearning_rate = 0.1\n");
    let path = dir.join("typo.toml");
    std::fs::write(&path, text).unwrap();
    let out = rrhf(&["train", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("typo.toml") && stderr.contains("learning_rate") && stderr.contains("line"),
        "{stderr}"
    );
    expect_train_error(&dir, &["train.lr_typo=1".into()], &["lr_typo"]);
    expect_train_error(&dir, &["train.grad_accum=0".into()], &["train.grad_accum"]);
}

#[test]
fn kill_during_checkpoint_writes_keeps_checkpoints_loadable() {
    let dir = scratch("train-kill");
    let out = dir.join("out");
    // A checkpoint after every step, so kills land during writes.
    for delay_ms in [150, 260, 370, 480, 590] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rrhf"))
            .args([
                "train",
                "--config",
                CONFIG,
                "--set",
                "output.save_every=1",
                "--set",
            ])
            .arg(format!("output.dir={:?}", out.display().to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for entry in std::fs::read_dir(&out).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("checkpoint-") {
                rrhf::checkpoint::load_model(&entry.path(), &burn::tensor::Device::flex())
                    .unwrap_or_else(|e| panic!("{name} after kill at {delay_ms} ms: {e:#}"));
                let state =
                    std::fs::read_to_string(entry.path().join("trainer_state.json")).unwrap();
                serde_json::from_str::<Value>(&state).unwrap();
            }
        }
    }
    // And a resumed run from the newest checkpoint finishes.
    let newest = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("checkpoint-")?
                .parse::<usize>()
                .ok()
        })
        .max()
        .expect("some checkpoint survived");
    let resumed = rrhf(&[
        "train",
        "--config",
        CONFIG,
        "--set",
        &format!("output.dir={:?}", out.display().to_string()),
        "--resume",
        out.join(format!("checkpoint-{newest}")).to_str().unwrap(),
    ]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}

/// The tiny config made online: 2 sampled responses per query plus the file's own, scored by a
/// rule, re-sampled every step.
fn online_config(out: &Path) -> TrainConfig {
    let text = std::fs::read_to_string(CONFIG).unwrap()
        + "\n[online]\nreward = \"rule:length:max_words=3\"\nresample_every = 2\n\
           include_data_responses = true\n\n[online.sampling]\npolicy = \"top_p\"\nk = 2\n\
           max_new_tokens = 6\ntemperature = 1.0\n";
    let set = [
        format!("output.dir={:?}", out.display().to_string()),
        "train.max_steps=4".to_string(),
        "output.save_every=0".to_string(),
        "train.device=\"cpu\"".to_string(),
    ];
    TrainConfig::parse(&text, Path::new(CONFIG), &set).unwrap()
}

#[test]
fn online_rounds_sample_score_and_resume_exactly() {
    let whole = scratch("train-online-whole");
    let run = |out: &Path, resume: Option<PathBuf>, stop_after| {
        train(
            &online_config(out),
            &RunOptions {
                resume,
                stop_after,
                force: false,
            },
        )
        .unwrap()
    };
    run(&whole, None, None);
    // Rounds at steps 0 and 2, each 2 steps x 8 queries, each query with 2 samples + its own.
    for start in [0, 2] {
        let round = rrhf::data::read_ranked_jsonl(
            &whole.join(format!("samples/round-{start}.jsonl")),
            rrhf::data::DEFAULT_MAX_LINE_BYTES,
        )
        .unwrap();
        assert!(!round.is_empty() && round.len() <= 16);
        for line in &round {
            assert!(line.responses.len() >= 3, "{line:?}");
            for (r, s) in line.responses.iter().zip(&line.scores) {
                let words = r.split_whitespace().count();
                let expected = if words == 0 {
                    0.0
                } else if words <= 3 {
                    1.0
                } else {
                    3.0 / words as f64
                };
                assert!((s - expected).abs() < 1e-6, "{r:?} scored {s}");
            }
        }
    }
    let lines = metrics(&whole);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.get("sample_reward_mean").is_some())
            .count(),
        2
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.get("loss").is_some())
            .all(|l| l["reward"].is_number())
    );

    // Stopped mid-round (after step 3) and resumed: step 4 trains on the round read back.
    let parted = scratch("train-online-parted");
    run(&parted, None, Some(3));
    run(&parted, Some(parted.join("checkpoint-3")), None);
    let strip = |lines: Vec<Value>| {
        deterministic(lines)
            .into_iter()
            .map(|mut v| {
                let o = v.as_object_mut().unwrap();
                o.remove("sample_seconds");
                o.remove("sample_tokens_per_sec");
                v
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(metrics(&parted)), strip(metrics(&whole)));
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
        for lora in [false, true] {
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
        for lora in [false, true] {
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

/// `train.data_parallel`: the step's micro-batches are shared between devices and the gradients
/// summed on the first; the steps are those of one device doing all the micro-batches. On this
/// machine the second device is lavapipe when there is one (else a second CPU worker).
#[test]
fn data_parallel_takes_the_same_steps() {
    let second = devices().last().unwrap().clone();
    let run = |data_parallel: &str| {
        let out = scratch(&format!("train-dp-{}", data_parallel.len()));
        let set = ["train.max_steps=3", "train.grad_accum=4", data_parallel];
        train(
            &config(&out, &DeviceChoice::Cpu, &set),
            &RunOptions {
                resume: None,
                stop_after: None,
                force: false,
            },
        )
        .unwrap();
        let tokens: Vec<u64> = metrics(&out)
            .iter()
            .filter_map(|v| v["tokens"].as_u64())
            .collect();
        (step_figures(&out), tokens)
    };
    let (single, single_tokens) = run("train.data_parallel=[]");
    let (shared, shared_tokens) = run(&format!("train.data_parallel=[{:?}]", second.to_string()));
    assert_eq!(single.len(), 3);
    assert_eq!(single_tokens, shared_tokens, "tokens per step");
    for (a, b) in single.iter().zip(&shared) {
        assert!(
            (a.0 - b.0).abs() <= 1e-5 * a.0.abs() && (a.1 - b.1).abs() <= 1e-5 * a.1.abs(),
            "(loss, grad norm) {a:?} on one device, {b:?} shared with {second}"
        );
    }
}
