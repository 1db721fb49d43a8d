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
    let hex = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit())) || commit == "unknown",
        "{commit}"
    );
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

/// A tiny CPU run whose training data is a copy in `dir`, so the test can change it.
fn run_on_copied_data(dir: &Path, steps: usize) -> std::path::PathBuf {
    let data = dir.join("train.jsonl");
    std::fs::copy("tests/data/tiny_ranked_train.jsonl", &data).unwrap();
    let out = dir.join("run");
    let steps = format!("train.max_steps={steps}");
    let train = format!("data.train={:?}", data.display().to_string());
    let set = tiny_overrides(&out, &DeviceChoice::Cpu, &[&steps, &train]);
    train_in_own_process(TINY_CONFIG, &set, None, None);
    out
}

#[test]
fn reproduce_repeats_a_run_from_its_manifest_and_names_a_changed_input() {
    let dir = scratch("reproduce");
    let original = run_on_copied_data(&dir, 4);
    let again = dir.join("again");
    let ok = rrhf([
        "reproduce",
        original.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        common::deterministic(common::metrics(&original)),
        common::deterministic(common::metrics(&again)),
        "same binary, same device: the same bits"
    );
    let recorded = manifest(&again);
    assert_eq!(recorded["inputs"], manifest(&original)["inputs"]);
    assert_eq!(recorded["records"][0]["command_line"][1], "reproduce");
    assert_eq!(
        recorded["config"]["output"]["dir"],
        again.display().to_string()
    );

    // One changed byte in the data: refused, naming the file, until allowed.
    let data = dir.join("train.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, text.replacen("0.", "1.", 1)).unwrap();
    let changed = dir.join("changed");
    let refused = rrhf([
        "reproduce",
        original.to_str().unwrap(),
        "--out",
        changed.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}: sha256", data.display()))
            && err.contains("--allow-changed-inputs"),
        "{err}"
    );
    assert!(!changed.join("metrics.jsonl").exists());
    let allowed = rrhf([
        "reproduce",
        original.to_str().unwrap(),
        "--out",
        changed.to_str().unwrap(),
        "--allow-changed-inputs",
    ]);
    let err = String::from_utf8_lossy(&allowed.stderr);
    assert!(allowed.status.success(), "{err}");
    assert!(
        err.contains("warning: ") && err.contains("train.jsonl: sha256"),
        "{err}"
    );

    let none = rrhf([
        "reproduce",
        "/nonexistent-run",
        "--out",
        changed.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("/nonexistent-run/run.json"));
}

/// `rrhf compare A B` at the default tolerance (1e-3 relative): its exit status and report.
fn compare(a: &Path, b: &Path) -> (Option<i32>, String) {
    let out = rrhf(["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The tiny config made online, as a file `rrhf train` reads: 2 sampled responses per query
/// plus the file's own, scored by a rule, a new round every 2 steps.
fn online_config_file(dir: &Path) -> String {
    let text = std::fs::read_to_string(TINY_CONFIG).unwrap()
        + "\n[online]\nreward = \"rule:length:max_words=3\"\nresample_every = 2\n\
           include_data_responses = true\n\n[online.sampling]\npolicy = \"top_p\"\nk = 2\n\
           max_new_tokens = 6\ntemperature = 1.0\n";
    let path = dir.join("online.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The CPU path and wgpu on lavapipe compute the same curve within 1e-3 (they differ in the
/// order of float additions only): offline, online (where the draws are the host's, keyed by
/// query, so a response can differ only where the logits put a draw on the other side of a
/// token's boundary), and a run checkpointed on the CPU and resumed on lavapipe.
#[test]
fn the_cpu_path_and_lavapipe_agree_and_a_run_moves_between_them() {
    let devices = common::train_devices();
    let Some(wgpu) = devices.iter().find(|d| **d != DeviceChoice::Cpu) else {
        eprintln!("SKIPPED: no wgpu adapter");
        return;
    };
    let steps = ["train.max_steps=20", "output.save_every=0"];
    let run = |name: &str, device: &DeviceChoice, stop: Option<usize>| {
        let out = scratch(name);
        train_in_own_process(
            TINY_CONFIG,
            &tiny_overrides(&out, device, &steps),
            None,
            stop,
        );
        out
    };
    let cpu = run("agree-cpu", &DeviceChoice::Cpu, None);
    let lavapipe = run("agree-lavapipe", wgpu, None);
    let (code, report) = compare(&cpu, &lavapipe);
    eprintln!("offline, CPU against lavapipe:\n{report}");
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("train.device"), "{report}");
    // Two runs on lavapipe, the second reproduced from the first's run.json: the same bits.
    let again = scratch("agree-lavapipe-again");
    let out = rrhf([
        "reproduce",
        lavapipe.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        common::deterministic(common::metrics(&lavapipe)),
        common::deterministic(common::metrics(&again)),
        "two runs on lavapipe differ"
    );

    let moved = run("agree-moved", &DeviceChoice::Cpu, Some(10));
    let set = tiny_overrides(&moved, wgpu, &steps);
    train_in_own_process(TINY_CONFIG, &set, Some(&moved.join("checkpoint-10")), None);
    let (code, report) = compare(&cpu, &moved);
    eprintln!("CPU to step 10, then lavapipe, against CPU throughout:\n{report}");
    assert_eq!(code, Some(0), "{report}");
    let records = manifest(&moved)["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 2);
    assert!(records[0]["device"]["adapter"].is_null(), "{records:?}");
    assert_eq!(records[1]["from_step"], 10);
    let adapter = &records[1]["device"]["adapter"];
    assert!(
        adapter["vendor_id"].as_str().unwrap().starts_with("0x"),
        "{adapter}"
    );
    assert!(adapter["driver"].is_string(), "{adapter}");

    let dir = scratch("agree-online");
    let config = online_config_file(&dir);
    let online = |device: &DeviceChoice| {
        let out = dir.join(device.to_string());
        let set = tiny_overrides(&out, device, &["train.max_steps=6", "output.save_every=0"]);
        train_in_own_process(&config, &set, None, None);
        out
    };
    let (cpu, lavapipe) = (online(&DeviceChoice::Cpu), online(wgpu));
    let mut differing = 0;
    for round in [0, 2, 4] {
        let read = |run: &Path| {
            let file = run.join(format!("samples/round-{round}.jsonl"));
            rrhf::data::read_ranked(&file, &Default::default()).unwrap()
        };
        for (a, b) in read(&cpu).iter().zip(read(&lavapipe)) {
            for (x, y) in a.responses.iter().zip(&b.responses) {
                if x != y {
                    differing += 1;
                    eprintln!("round {round}, {:?}: CPU {x:?}, lavapipe {y:?}", a.query);
                }
            }
        }
    }
    eprintln!("online: {differing} sampled responses differ between the devices");
    let (code, report) = compare(&cpu, &lavapipe);
    eprintln!("online, CPU against lavapipe:\n{report}");
    assert_eq!(code, Some(0), "{report}");
}
