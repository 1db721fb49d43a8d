//! The trainer end to end on the tiny fixture model: it learns the ranking, resumes exactly
//! (offline and online, where each round's samples are read back). Bad data and configs are in
//! train_errors.rs, kill -9 in train_kill.rs, checkpointing and precision in train_precision.rs,
//! data parallel over MPI in data_parallel.rs.

mod common;

use std::path::{Path, PathBuf};

use common::{
    TINY_CONFIG, deterministic, metrics, scratch, tiny_config as config,
    tiny_overrides as overrides, train_devices as devices, train_in_own_process,
};
use rrhf::device::DeviceChoice;
use rrhf::train::{RunOptions, TrainConfig, train};
use serde_json::Value;

/// On the CPU path only: lavapipe takes the same steps, to 1e-3 over 20 of them
/// (reproduce.rs, `the_cpu_path_and_lavapipe_agree_and_a_run_moves_between_them`), and a whole
/// run on it costs minutes of CI.
#[test]
fn tiny_model_learns_the_ranking() {
    let device = DeviceChoice::Cpu;
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

/// Each run in its own process: see `train_in_own_process` for why.
#[test]
fn resume_continues_exactly() {
    for device in devices() {
        let extra = ["train.max_steps=8", "output.save_every=0"];
        let whole = scratch(&format!("train-whole-{device}"));
        train_in_own_process(TINY_CONFIG, &overrides(&whole, &device, &extra), None, None);

        let split = scratch(&format!("train-split-{device}"));
        let set = overrides(&split, &device, &extra);
        train_in_own_process(TINY_CONFIG, &set, None, Some(3));
        let stopped = split.join("checkpoint-3");
        assert!(stopped.join("trainer_state.json").exists(), "{device}");
        train_in_own_process(TINY_CONFIG, &set, Some(&stopped), None);

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

/// The tiny config made online: 2 sampled responses per query plus the file's own, scored by a
/// rule, re-sampled every step.
fn online_config(out: &Path) -> TrainConfig {
    let text = std::fs::read_to_string(TINY_CONFIG).unwrap()
        + "\n[online]\nreward = \"rule:length:max_words=3\"\nresample_every = 2\n\
           include_data_responses = true\n\n[online.sampling]\npolicy = \"top_p\"\nk = 2\n\
           max_new_tokens = 6\ntemperature = 1.0\n";
    let set = [
        format!("output.dir={:?}", out.display().to_string()),
        "train.max_steps=4".to_string(),
        "output.save_every=0".to_string(),
        "train.device=\"cpu\"".to_string(),
    ];
    TrainConfig::parse(&text, Path::new(TINY_CONFIG), &set).unwrap()
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
        let round = rrhf::data::read_ranked(
            &whole.join(format!("samples/round-{start}.jsonl")),
            &Default::default(),
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
    assert_eq!(
        deterministic(metrics(&parted)),
        deterministic(metrics(&whole))
    );
}

/// The loss variants train: `loss.rank_loss = "logistic"`, the hinge with a margin, and
/// `"listwise"`; the eval loss falls and the ranking is learnt.
#[test]
fn the_loss_variants_train_the_tiny_model() {
    for (name, variant) in [
        ("logistic", "loss.rank_loss=\"logistic\""),
        ("margin", "loss.rank_margin=0.5"),
        ("listwise", "loss.rank_loss=\"listwise\""),
    ] {
        let out = scratch(&format!("train-{name}"));
        let set = overrides(&out, &DeviceChoice::Cpu, &[variant, "output.save_every=0"]);
        train_in_own_process(TINY_CONFIG, &set, None, None);
        let evals: Vec<(f64, f64)> = metrics(&out)
            .iter()
            .filter(|v| v.get("eval_loss").is_some())
            .map(|v| {
                (
                    v["eval_loss"].as_f64().unwrap(),
                    v["eval_rank_accuracy"].as_f64().unwrap(),
                )
            })
            .collect();
        let (first, last) = (evals[0], *evals.last().unwrap());
        assert!(
            last.0 < first.0 / 2.0,
            "{name}: eval loss should fall: {evals:?}"
        );
        assert!(
            last.1 > first.1 && last.1 >= 0.75,
            "{name}: ranking: {evals:?}"
        );
    }
}
