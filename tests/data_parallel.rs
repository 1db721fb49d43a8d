//! Data parallel over MPI (a build with `--features mpi`): `mpirun -np 2 rrhf train` takes the
//! steps one process takes on the same config (full and LoRA, offline and online), resumes
//! exactly, writes from rank 0 alone, and a rank killed mid-run ends the job with an error and
//! leaves the last checkpoint loadable.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    TINY_CONFIG, bin, deterministic, metrics, newest_checkpoint, scratch, stderr, step_figures,
    tiny_overrides as overrides, train_in_own_process,
};
use rrhf::device::DeviceChoice;

/// `mpirun -np RANKS rrhf train --config CONFIG --set ...`, not yet run. Open MPI refuses to
/// run as root unless told (CI's containers run as root); each rank gets one core.
fn mpirun_train(ranks: usize, config: &str, set: &[String]) -> Command {
    let mut command = Command::new("mpirun");
    command
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["-np", &ranks.to_string(), "--oversubscribe", &bin()])
        .args(["train", "--config", config]);
    for s in set {
        command.args(["--set", s]);
    }
    command
}

fn succeeded(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    out
}

/// Each step's (loss, grad norm) agree to 1e-5 relative, and its token count exactly.
fn assert_same_steps(one: &Path, two: &Path, what: &str) {
    let (a, b) = (step_figures(one), step_figures(two));
    assert_eq!(a.len(), b.len(), "{what}: logged steps");
    assert!(!a.is_empty(), "{what}: no steps logged");
    for (x, y) in a.iter().zip(&b) {
        let close = |p: f64, q: f64| (p - q).abs() <= 1e-5 * p.abs().max(1e-3);
        assert!(
            close(x.0, y.0) && close(x.1, y.1),
            "{what}: (loss, grad norm) {x:?} in one process, {y:?} on two ranks"
        );
    }
    let tokens = |dir: &Path| -> Vec<u64> {
        metrics(dir)
            .iter()
            .filter_map(|v| v["tokens"].as_u64())
            .collect()
    };
    assert_eq!(tokens(one), tokens(two), "{what}: tokens per step");
}

/// The final weights agree to 1e-5 of each tensor's largest value.
fn assert_same_weights(one: &Path, two: &Path, what: &str) {
    let file = |dir: &Path| {
        ["model.safetensors", "adapter_model.safetensors"]
            .iter()
            .map(|f| dir.join("final").join(f))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{what}: no weights in {}", dir.display()))
    };
    let (a, b) = (
        common::read_safetensors(&file(one)),
        common::read_safetensors(&file(two)),
    );
    assert_eq!(a.len(), b.len(), "{what}: tensors");
    for (name, (shape, x)) in &a {
        let (other_shape, y) = &b[name];
        assert_eq!(shape, other_shape, "{what}: {name}");
        let largest = x.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
        let worst = x.iter().zip(y).fold(0f64, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            worst <= 1e-5 * largest,
            "{what}: {name} differs by {worst} (largest {largest})"
        );
    }
}

/// Eight queries a step in four micro-batches: each rank takes two.
const SHARED_STEPS: [&str; 4] = [
    "train.max_steps=4",
    "train.grad_accum=4",
    "output.save_every=0",
    "output.eval_every=2",
];

#[test]
fn two_ranks_take_the_steps_of_one() {
    let lora: &[&str] = &["lora.rank=4", "lora.alpha=8.0", "lora.dropout=0.1"];
    for (what, extra) in [("full", &[][..]), ("lora", lora)] {
        let extra: Vec<&str> = SHARED_STEPS.iter().chain(extra).copied().collect();
        let one = scratch(&format!("dp-one-{what}"));
        train_in_own_process(
            TINY_CONFIG,
            &overrides(&one, &DeviceChoice::Cpu, &extra),
            None,
            None,
        );
        let two = scratch(&format!("dp-two-{what}"));
        let set = overrides(&two, &DeviceChoice::Cpu, &extra);
        let out = succeeded(mpirun_train(2, TINY_CONFIG, &set).output().unwrap(), what);
        assert_same_steps(&one, &two, what);
        assert_same_weights(&one, &two, what);
        // Rank 0 alone writes: each step logged once, one summary line on stdout.
        let logged = metrics(&two)
            .iter()
            .filter(|v| v.get("loss").is_some())
            .count();
        assert_eq!(logged, 4, "{what}: steps in metrics.jsonl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.matches("\"saved\"").count(), 1, "{what}: {stdout}");
        // The evals (rank 0's) match too.
        let evals = |dir: &Path| -> Vec<f64> {
            metrics(dir)
                .iter()
                .filter_map(|v| v["eval_loss"].as_f64())
                .collect()
        };
        let (a, b) = (evals(&one), evals(&two));
        assert_eq!(a.len(), b.len(), "{what}: evals");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs(),
                "{what}: eval loss {x} vs {y}"
            );
        }
    }
}

/// More ranks than a step has micro-batches: the idle rank adds zeros and the step is unchanged.
#[test]
fn a_rank_without_a_micro_batch_changes_nothing() {
    let extra = [
        "train.max_steps=2",
        "train.grad_accum=1",
        "output.save_every=0",
    ];
    let one = scratch("dp-idle-one");
    train_in_own_process(
        TINY_CONFIG,
        &overrides(&one, &DeviceChoice::Cpu, &extra),
        None,
        None,
    );
    let two = scratch("dp-idle-two");
    let set = overrides(&two, &DeviceChoice::Cpu, &extra);
    succeeded(
        mpirun_train(2, TINY_CONFIG, &set).output().unwrap(),
        "grad_accum=1",
    );
    assert_same_steps(&one, &two, "one micro-batch on two ranks");
}

/// The tiny config made online (as in tests/train.rs): each rank samples its share of a round's
/// queries; rank 0 writes the round, which is the one a single process samples.
fn online_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(TINY_CONFIG).unwrap().replace(
        "\"tests/",
        &format!("\"{}/tests/", env!("CARGO_MANIFEST_DIR")),
    ) + "\n[online]\nreward = \"rule:length:max_words=3\"\nresample_every = 2\n\
          include_data_responses = true\n\n[online.sampling]\npolicy = \"top_p\"\nk = 2\n\
          max_new_tokens = 6\ntemperature = 1.0\n";
    let path = dir.join("online.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn online_rounds_are_shared_between_ranks() {
    let dir = scratch("dp-online");
    let config = online_config(&dir);
    let config = config.to_str().unwrap();
    let extra = [
        "train.max_steps=4",
        "train.grad_accum=4",
        "output.save_every=0",
    ];
    let (one, two) = (dir.join("one"), dir.join("two"));
    train_in_own_process(
        config,
        &overrides(&one, &DeviceChoice::Cpu, &extra),
        None,
        None,
    );
    let set = overrides(&two, &DeviceChoice::Cpu, &extra);
    succeeded(mpirun_train(2, config, &set).output().unwrap(), "online");
    for round in ["round-0.jsonl", "round-2.jsonl"] {
        let read = |d: &Path| std::fs::read_to_string(d.join("samples").join(round)).unwrap();
        assert_eq!(read(&one), read(&two), "{round}: one process and two ranks");
    }
    assert_same_steps(&one, &two, "online");

    // Rounds of one query: rank 1 samples nothing and trains on nothing.
    let extra = [
        "train.max_steps=2",
        "train.queries_per_step=1",
        "train.grad_accum=1",
        "online.resample_every=1",
        "output.save_every=0",
    ];
    let (one, two) = (dir.join("one-query"), dir.join("two-query"));
    train_in_own_process(
        config,
        &overrides(&one, &DeviceChoice::Cpu, &extra),
        None,
        None,
    );
    let set = overrides(&two, &DeviceChoice::Cpu, &extra);
    succeeded(
        mpirun_train(2, config, &set).output().unwrap(),
        "one-query rounds",
    );
    assert_same_steps(&one, &two, "online, one query a round");
}

/// Stopped under MPI and resumed under MPI: the metrics are those of the run that never stopped.
#[test]
fn a_run_of_two_ranks_resumes_exactly() {
    let extra = [
        "train.max_steps=6",
        "train.grad_accum=4",
        "output.save_every=0",
    ];
    let cpu = DeviceChoice::Cpu;
    let whole = scratch("dp-resume-whole");
    succeeded(
        mpirun_train(2, TINY_CONFIG, &overrides(&whole, &cpu, &extra))
            .output()
            .unwrap(),
        "whole run",
    );
    let split = scratch("dp-resume-split");
    let set = overrides(&split, &cpu, &extra);
    let mut first = mpirun_train(2, TINY_CONFIG, &set);
    first.args(["--stop-after", "3"]);
    succeeded(first.output().unwrap(), "first part");
    let mut second = mpirun_train(2, TINY_CONFIG, &set);
    second.arg("--resume").arg(split.join("checkpoint-3"));
    succeeded(second.output().unwrap(), "resumed part");
    assert_eq!(
        deterministic(metrics(&split)),
        deterministic(metrics(&whole))
    );
}

/// The pid of the rrhf process that is rank `rank` of the job writing to `out`.
fn rank_pid(rank: usize, out: &Path) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let has = |bytes: &[u8], s: &str| bytes.split(|&b| b == 0).any(|p| p == s.as_bytes());
            let cmdline_text = String::from_utf8_lossy(&cmdline);
            (has(&environ, &wanted)
                && cmdline_text.contains(&out.display().to_string())
                && has(&cmdline, &bin()))
            .then_some(pid)
        })
}

#[test]
fn a_killed_rank_ends_the_job_and_keeps_the_last_checkpoint() {
    let out = scratch("dp-kill");
    let log = scratch("dp-kill-log").join("stderr");
    let cpu = DeviceChoice::Cpu;
    // A long run that saves often, so the kill lands between (or during) checkpoint writes.
    let set = overrides(
        &out,
        &cpu,
        &[
            "train.max_steps=100000",
            "output.save_every=20",
            "output.eval_every=0",
        ],
    );
    let mut job = mpirun_train(2, TINY_CONFIG, &set)
        .stdout(Stdio::null())
        // A file, not a pipe: the run echoes its metrics there, more than a pipe holds.
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while newest_checkpoint(&out).is_none_or(|n| n < 40) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint-40 in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rank_pid(1, &out).expect("rank 1's process");
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // The job ends, with an error, instead of rank 0 waiting forever in the next all-reduce.
    let killed_at = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "the job still runs 60 s after rank 1 was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "the job reported success after losing a rank"
    );
    assert!(
        message.contains("rank 1"),
        "the error names no rank: {message}"
    );
    // Every checkpoint it shows loads, and a run resumes from the newest.
    let newest = newest_checkpoint(&out).unwrap();
    for entry in std::fs::read_dir(&out).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("checkpoint-")
        {
            rrhf::checkpoint::load_model(&entry.path(), &burn::tensor::Device::flex())
                .unwrap_or_else(|e| panic!("{}: {e:#}\n{message}", entry.path().display()));
        }
    }
    let mut resumed = mpirun_train(2, TINY_CONFIG, &set);
    resumed
        .args(["--stop-after", &(newest + 2).to_string()])
        .arg("--resume")
        .arg(out.join(format!("checkpoint-{newest}")));
    succeeded(resumed.output().unwrap(), "resumed after the kill");
}
