//! Reproducing a run: the run.json manifest a run writes (and a resume extends), and
//! `rrhf compare` telling runs that agree from runs that do not, with exit status 0, 1 or 2.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TINY_CONFIG, rrhf, scratch, tiny_overrides, train_in_own_process};
use rrhf::device::DeviceChoice;
use serde_json::Value;

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

/// The file's sha256 as coreutils' `sha256sum` computes it: a reference independent of ours.
fn sha256sum(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn run_json_records_the_config_inputs_build_and_device_and_a_resume_adds_a_record() {
    let out = scratch("manifest-run");
    let set = tiny_overrides(&out, &DeviceChoice::Cpu, &["train.max_steps=4"]);
    train_in_own_process(TINY_CONFIG, &set, None, Some(2));
    let m = manifest(&out);
    // The resolved config: defaults the tiny config leaves out are filled in.
    assert_eq!(m["config"]["train"]["lr"], 3e-3);
    assert!(m["config"]["train"]["max_steps"].is_number());
    assert!(m["config"]["loss"]["ft_norm"].is_string());
    assert_eq!(m["seed"], 1);
    assert_eq!(m["precision"], "f32");
    for file in [
        "tests/data/tiny_ranked_train.jsonl",
        "tests/data/tiny_ranked_eval.jsonl",
        "tests/fixtures/tiny-gqa/model-00001-of-00012.safetensors",
        "tests/fixtures/tiny-gqa/model.safetensors.index.json",
        "tests/fixtures/tiny-gqa/config.json",
        "tests/fixtures/tiny-gqa/tokenizer.json",
    ] {
        assert_eq!(
            m["inputs"][file],
            sha256sum(file),
            "{file}: {}",
            m["inputs"]
        );
    }
    let records = m["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["from_step"], 0);
    assert_eq!(r["rrhf_version"], env!("CARGO_PKG_VERSION"));
    let commit = r["rrhf_commit"].as_str().unwrap();
    assert!(commit.len() == 40 || commit == "unknown", "{commit}");
    assert!(r["libraries"]["burn"].as_str().unwrap().starts_with("0.22"));
    assert!(r["libraries"]["cubecl"].is_string() && r["libraries"]["wgpu"].is_string());
    assert!(
        r["device"]["description"]
            .as_str()
            .unwrap()
            .starts_with("CPU")
    );
    assert!(r["device"]["adapter"].is_null());
    assert!(r["device"]["cpu_threads"].as_u64().unwrap() >= 1);
    assert_eq!(r["os"], std::env::consts::OS);
    assert_eq!(r["arch"], std::env::consts::ARCH);
    assert!(r["command_line"].as_array().unwrap().len() > 3);
    assert!(r["started"].as_str().unwrap().ends_with('Z'));

    train_in_own_process(TINY_CONFIG, &set, Some(&out.join("checkpoint-2")), None);
    let resumed = manifest(&out);
    let records = resumed["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "a resume adds a record");
    assert_eq!(records[1]["from_step"], 2);
    assert_eq!(resumed["config"], m["config"]);
    assert_eq!(resumed["inputs"], m["inputs"]);
}

#[test]
fn compare_passes_identical_runs_and_fails_another_learning_rate() {
    let run = |name: &str, extra: &[&str]| {
        let out = scratch(name);
        let mut all = vec!["train.max_steps=6"];
        all.extend_from_slice(extra);
        let set = tiny_overrides(&out, &DeviceChoice::Cpu, &all);
        train_in_own_process(TINY_CONFIG, &set, None, None);
        out.display().to_string()
    };
    let a = run("compare-a", &[]);
    let b = run("compare-b", &[]);
    let lr = run("compare-lr", &["train.lr=2e-3"]);
    let png = scratch("compare-plot").join("ab.png");

    let same = rrhf(["compare", &a, &b, "--plot", png.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&same.stdout);
    assert_eq!(same.status.code(), Some(0), "{report}");
    assert!(report.contains("agree within"), "{report}");
    // Two runs on the CPU path are bit-identical, not merely close.
    for line in report.lines().filter(|l| l.starts_with("loss ")) {
        assert!(line.contains("0.000e0"), "{line}");
    }
    assert!(report.contains("config.output.dir"), "{report}");
    assert!(
        !report.contains("started"),
        "start times are not a difference: {report}"
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);

    let other = rrhf(["compare", &a, &lr]);
    let report = String::from_utf8_lossy(&other.stdout);
    assert_eq!(other.status.code(), Some(1), "{report}");
    let lr_line = report.lines().find(|l| l.starts_with("lr ")).unwrap();
    assert!(lr_line.contains("2: 0.003 vs 0.002"), "{lr_line}");
    assert!(
        report.contains("config.train.lr: 0.003 → 0.002"),
        "{report}"
    );

    let missing = rrhf(["compare", &a, "/nonexistent-run"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent-run/metrics.jsonl"));
}
