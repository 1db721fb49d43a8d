//! The `rrhf` binary: logprob equals transformers on the fixtures, generate runs, and bad input
//! gets an `error:` line naming the file, never a panic.

mod common;

use std::process::Output;

use common::{assert_refused, fixture, json, rrhf, scratch};

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-6)
}

#[test]
fn logprob_equals_transformers_with_and_without_template() {
    for name in ["tiny-gqa", "tiny-tied"] {
        let dir = fixture(name);
        let expected = json(&dir.join("expected.json"))["logprob"].clone();
        let (q, r) = (
            expected["query"].as_str().unwrap(),
            expected["response"].as_str().unwrap(),
        );
        for (mode, key) in [("auto", "template_auto"), ("none", "template_none")] {
            for device in ["cpu", "wgpu-cpu"] {
                let out = rrhf(&[
                    "logprob",
                    "--model",
                    dir.to_str().unwrap(),
                    "--query",
                    q,
                    "--response",
                    r,
                    "--template",
                    mode,
                    "--device",
                    device,
                ]);
                if device == "wgpu-cpu"
                    && !out.status.success()
                    && std::env::var("RRHF_TEST_REQUIRE_WGPU").as_deref() != Ok("1")
                {
                    eprintln!(
                        "skipping wgpu-cpu: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    continue;
                }
                let got = stdout_json(&out);
                let want = &expected[key];
                assert_eq!(got["tokens"], want["tokens"], "{name} {mode} {device}");
                for field in ["sum", "mean"] {
                    let (g, w) = (got[field].as_f64().unwrap(), want[field].as_f64().unwrap());
                    assert!(
                        close(g, w, 1e-5),
                        "{name} {mode} {device} {field}: {g} vs transformers {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn generate_prints_text_and_speed() {
    let dir = fixture("tiny-tied");
    let out = rrhf(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "Hello",
        "--prompt",
        "The capital of",
        "--max-new-tokens",
        "5",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["prompt"], "The capital of");
    assert!(lines.iter().all(|l| l["tokens"].as_u64().unwrap() <= 5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("device: CPU") && stderr.contains("tokens/s"),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_an_error_line_not_a_panic() {
    let out = rrhf(&[
        "logprob",
        "--model",
        "/nonexistent/model",
        "--query",
        "q",
        "--response",
        "r",
        "--device",
        "cpu",
    ]);
    assert_refused(&out, &["/nonexistent/model/config.json"]);

    let dir = scratch("cli-bad-config");
    std::fs::write(
        dir.join("config.json"),
        r#"{"vocab_size": 10, "hidden_size": 8}"#,
    )
    .unwrap();
    let out = rrhf(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "x",
        "--device",
        "cpu",
    ]);
    assert_refused(&out, &["config.json", "missing field `intermediate_size`"]);

    let gguf = dir.join("broken.gguf");
    std::fs::write(&gguf, b"GGUF\x03\x00\x00\x00").unwrap();
    let out = rrhf(&[
        "convert",
        "--gguf",
        gguf.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert_refused(&out, &["broken.gguf"]);

    let out = rrhf(&[
        "generate", "--model", "x", "--prompt", "x", "--device", "tpu",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device \"tpu\""));
}

#[test]
fn devices_lists_adapters_and_the_auto_choice() {
    let out = rrhf(&["devices"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--device auto uses:"));
}

/// `rrhf bench step` runs the trainer's step on a model and reports it: the adapters' weight
/// count for LoRA, the same first loss with and without checkpointing by layer, f16's loss
/// scaling at work, and a refused precision named.
#[test]
fn bench_step_reports_the_step() {
    let model = fixture("tiny-gqa");
    let config = json(&model.join("config.json"));
    let dim = |k: &str| config[k].as_u64().unwrap();
    let (d, f, layers) = (
        dim("hidden_size"),
        dim("intermediate_size"),
        dim("num_hidden_layers"),
    );
    let (q, kv) = (
        dim("num_attention_heads") * dim("head_dim"),
        dim("num_key_value_heads") * dim("head_dim"),
    );
    // r · (in + out) per projection: q, k, v, o, gate, up, down.
    let per_layer = (d + q) + 2 * (d + kv) + (q + d) + 3 * (d + f);
    let rank = 4;
    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "step",
            "--model",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--k",
            "3",
            "--t",
            "16",
            "--steps",
            "2",
            "--lora-rank",
            "4",
        ];
        args.extend(extra);
        stdout_json(&rrhf(&args))
    };
    let plain = run(&[]);
    assert_eq!(
        plain["trainable_params"].as_u64().unwrap(),
        layers * rank * per_layer
    );
    let layered = run(&["--gradient-checkpointing", "layer"]);
    for key in ["first_loss", "loss"] {
        let (a, b) = (plain[key].as_f64().unwrap(), layered[key].as_f64().unwrap());
        assert!(close(b, a, 1e-5), "{key}: {a} plain, {b} by layer");
    }
    let half = run(&["--precision", "f16"]);
    assert_eq!(half["precision"], "f16");
    assert!(close(
        half["first_loss"].as_f64().unwrap(),
        plain["first_loss"].as_f64().unwrap(),
        1e-3
    ));
    assert!(half["skipped_steps"].as_u64().is_some());
    let refused = rrhf(&[
        "bench",
        "step",
        "--model",
        model.to_str().unwrap(),
        "--device",
        "wgpu-cpu",
        "--k",
        "3",
        "--t",
        "16",
        "--precision",
        "bf16",
    ]);
    if common::test_devices().iter().any(|d| d.is_wgpu) {
        assert_refused(&refused, &["--precision bf16"]);
    }
}
