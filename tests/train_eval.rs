//! Evaluation during training on the tiny model: `[eval]` logs the reward of greedy answers, their
//! win rate against the start model and their length at the steps it is due, with values that
//! the samples files reproduce; `output.keep_best` keeps the best evaluation's model,
//! `output.save_total_limit` the last checkpoints; a resumed run scores against the original
//! start answers; bad values are refused by key.

mod common;

use std::path::Path;

use common::{
    TINY_CONFIG, deterministic, json, metrics, scratch, tiny_overrides, train_in_own_process,
};
use rrhf::device::DeviceChoice;
use rrhf::train::TrainConfig;
use serde_json::Value;

const EVAL_QUERIES: &str = "tests/data/tiny_ranked_eval.jsonl";
/// The training data ranks "no no no" best: the untrained model's answers lack the word, the
/// trained model's have it, so the reward and the win rate move.
const REWARD: &str = "rule:contains:word=no";
const MAX_NEW_TOKENS: usize = 6;

/// The tiny config on the CPU, 6 steps, `[eval]` every 2 steps, and `extra`.
fn eval_set(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut set = vec![
        "train.max_steps=6",
        "output.save_every=0",
        "output.eval_every=2",
        "eval.every=2",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    set.push(format!("eval.queries={EVAL_QUERIES:?}"));
    set.push(format!("eval.reward={REWARD:?}"));
    set.push(format!("eval.max_new_tokens={MAX_NEW_TOKENS}"));
    set.extend(extra.iter().map(|s| s.to_string()));
    let extra: Vec<&str> = set.iter().map(String::as_str).collect();
    tiny_overrides(out, &DeviceChoice::Cpu, &extra)
}

/// The lines of metrics.jsonl that carry `key`.
fn lines_with(out: &Path, key: &str) -> Vec<Value> {
    metrics(out)
        .into_iter()
        .filter(|v| v.get(key).is_some())
        .collect()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `rule:contains:word=no`, computed here from the answer's text.
fn contains_no(answer: &str) -> f64 {
    let has = answer
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w.eq_ignore_ascii_case("no"));
    if has { 1.0 } else { 0.0 }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12
}

#[test]
fn eval_logs_reward_win_rate_and_length_that_the_samples_reproduce() {
    let out = scratch("train-eval-logs");
    train_in_own_process(TINY_CONFIG, &eval_set(&out, &[]), None, None);
    let evals = lines_with(&out, "eval_reward");
    let steps: Vec<u64> = evals.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 2, 4, 6], "{evals:?}");
    let queries = std::fs::read_to_string(EVAL_QUERIES)
        .unwrap()
        .lines()
        .count();
    let start = read_jsonl(&out.join("samples/eval-0.jsonl"));
    for line in &evals {
        let step = line["step"].as_u64().unwrap();
        let rows = read_jsonl(&out.join(format!("samples/eval-{step}.jsonl")));
        assert_eq!(rows.len(), queries, "step {step}: every answer is written");
        let (mut rewards, mut wins) = (vec![], 0.0);
        for (row, first) in rows.iter().zip(&start) {
            let reward = row["reward"].as_f64().unwrap();
            assert_eq!(reward, contains_no(row["answer"].as_str().unwrap()));
            // Each line carries the start model's answer to the same query.
            assert_eq!(row["query"], first["query"]);
            assert_eq!(row["start_answer"], first["answer"]);
            let start_reward = row["start_reward"].as_f64().unwrap();
            assert_eq!(start_reward, first["reward"].as_f64().unwrap());
            wins += match reward.total_cmp(&start_reward) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
            rewards.push(reward);
        }
        let n = rewards.len() as f64;
        let mean = rewards.iter().sum::<f64>() / n;
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(close(line["eval_reward"].as_f64().unwrap(), mean), "{line}");
        assert!(
            close(line["eval_reward_std"].as_f64().unwrap(), std),
            "{line}"
        );
        assert!(
            close(line["eval_win_rate"].as_f64().unwrap(), wins / n),
            "{line}"
        );
        let tokens = line["eval_answer_tokens"].as_f64().unwrap();
        assert!(tokens > 0.0 && tokens <= MAX_NEW_TOKENS as f64, "{line}");
    }
    assert_eq!(evals[0]["eval_win_rate"].as_f64(), Some(0.5));
    // Training moves the answers towards the data's best response: the numbers checked above
    // are not all ties.
    let last = evals.last().unwrap();
    assert!(
        last["eval_reward"].as_f64() > evals[0]["eval_reward"].as_f64(),
        "{evals:?}"
    );
    assert!(last["eval_win_rate"].as_f64().unwrap() > 0.5, "{evals:?}");
    assert!(out.join("metrics.png").exists());
}

#[test]
fn samples_caps_the_answers_written_but_not_the_start_answers() {
    let out = scratch("train-eval-samples");
    let set = eval_set(
        &out,
        &["eval.samples=2", "eval.max_queries=5", "train.max_steps=2"],
    );
    train_in_own_process(TINY_CONFIG, &set, None, None);
    assert_eq!(read_jsonl(&out.join("samples/eval-0.jsonl")).len(), 5);
    assert_eq!(read_jsonl(&out.join("samples/eval-2.jsonl")).len(), 2);
}

/// The step of the best value of `key` in metrics.jsonl (the first on ties), and the value.
fn best_logged(out: &Path, key: &str, higher_is_better: bool) -> (u64, f64) {
    let mut best: Option<(u64, f64)> = None;
    for line in lines_with(out, key) {
        let (step, value) = (line["step"].as_u64().unwrap(), line[key].as_f64().unwrap());
        let better = best.is_none_or(|(_, b)| {
            if higher_is_better {
                value > b
            } else {
                value < b
            }
        });
        if better {
            best = Some((step, value));
        }
    }
    best.unwrap()
}

/// The step and value `best/` records.
fn best_recorded(out: &Path) -> (u64, f64, String) {
    let state = json(&out.join("best/trainer_state.json"));
    let best = &state["best"];
    assert_eq!(best["step"], state["step"], "{state}");
    (
        best["step"].as_u64().unwrap(),
        best["value"].as_f64().unwrap(),
        best["metric"].as_str().unwrap().to_string(),
    )
}

#[test]
fn keep_best_keeps_the_best_evaluation_and_save_total_limit_the_last_checkpoints() {
    let out = scratch("train-eval-best-reward");
    let set = eval_set(
        &out,
        &[
            "output.keep_best=\"eval_reward\"",
            "output.save_every=1",
            "output.save_total_limit=2",
        ],
    );
    train_in_own_process(TINY_CONFIG, &set, None, None);
    let (step, value) = best_logged(&out, "eval_reward", true);
    let (best_step, best_value, metric) = best_recorded(&out);
    assert_eq!((best_step, metric.as_str()), (step, "eval_reward"));
    assert!(step > 0, "the reward rises with training");
    assert!(close(best_value, value), "{best_value} vs {value}");
    rrhf::checkpoint::load_model(&out.join("best"), &burn::tensor::Device::flex()).unwrap();
    // Checkpoints at steps 1..=6: the last two are left.
    let mut checkpoints: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("checkpoint-") || n.starts_with(".checkpoint"))
        .collect();
    checkpoints.sort();
    assert_eq!(checkpoints, ["checkpoint-5", "checkpoint-6"]);
    assert!(out.join("final").is_dir() && out.join("best").is_dir());

    // eval_loss: the lowest is kept.
    let out = scratch("train-eval-best-loss");
    let set = eval_set(&out, &["output.keep_best=\"eval_loss\""]);
    train_in_own_process(TINY_CONFIG, &set, None, None);
    let (step, value) = best_logged(&out, "eval_loss", false);
    let (best_step, best_value, metric) = best_recorded(&out);
    assert_eq!((best_step, metric.as_str()), (step, "eval_loss"));
    assert!(step > 0, "the tiny model's eval loss falls");
    assert!((best_value - value).abs() <= 1e-6 * value.abs());
}

/// Stopped after step 3 and resumed: the evaluations, the win rates against the start answers
/// among them, and the best checkpoint are those of the whole run; and a run that began without
/// `[eval]` gets the start model's answers on resume.
#[test]
fn resume_scores_against_the_original_start_answers() {
    let extra = ["output.keep_best=\"eval_reward\"", "output.save_every=3"];
    let whole = scratch("train-eval-whole");
    train_in_own_process(TINY_CONFIG, &eval_set(&whole, &extra), None, None);

    let split = scratch("train-eval-split");
    let set = eval_set(&split, &extra);
    train_in_own_process(TINY_CONFIG, &set, None, Some(3));
    let start_file = split.join("samples/eval-0.jsonl");
    let start_answers = std::fs::read(&start_file).unwrap();
    train_in_own_process(TINY_CONFIG, &set, Some(&split.join("checkpoint-3")), None);
    assert_eq!(std::fs::read(&start_file).unwrap(), start_answers);
    let (a, b) = (
        deterministic(lines_with(&whole, "eval_reward")),
        deterministic(lines_with(&split, "eval_reward")),
    );
    assert_eq!(a, b, "the resumed run's evaluations differ");
    assert_eq!(a.len(), 4);
    assert_eq!(best_recorded(&whole), best_recorded(&split));

    // Begun without [eval] (no eval-0.jsonl), resumed with it: the start model answers for the
    // win rate, as it did at step 0 of the whole run.
    let late = scratch("train-eval-late");
    let plain = tiny_overrides(
        &late,
        &DeviceChoice::Cpu,
        &[
            "train.max_steps=6",
            "output.save_every=3",
            "output.eval_every=2",
        ],
    );
    train_in_own_process(TINY_CONFIG, &plain, None, Some(3));
    let set = eval_set(&late, &["output.save_every=3"]);
    train_in_own_process(TINY_CONFIG, &set, Some(&late.join("checkpoint-3")), None);
    assert_eq!(
        std::fs::read(late.join("samples/eval-0.jsonl")).unwrap(),
        std::fs::read(whole.join("samples/eval-0.jsonl")).unwrap()
    );
    let late_evals = deterministic(lines_with(&late, "eval_reward"));
    assert_eq!(late_evals, a[2..], "evaluations at steps 4 and 6");
}

fn refused(text: &str, set: &[&str], key: &str, why: &str) {
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    let err = TrainConfig::parse(text, Path::new("c.toml"), &set)
        .err()
        .unwrap_or_else(|| panic!("{set:?} was accepted"));
    let err = format!("{err:#}");
    assert!(err.contains(key) && err.contains(why), "{set:?}: {err}");
}

#[test]
fn bad_eval_and_output_values_are_refused_by_key() {
    let tiny = std::fs::read_to_string(TINY_CONFIG).unwrap();
    let with_eval = format!("{tiny}\n[eval]\nqueries = {EVAL_QUERIES:?}\nreward = {REWARD:?}\n");
    TrainConfig::parse(&with_eval, Path::new("c.toml"), &[]).unwrap();
    refused(
        &with_eval,
        &["eval.reward=\"rule:nope\""],
        "eval.reward",
        "unknown rule",
    );
    refused(
        &with_eval,
        &["eval.reward=\"nothing\""],
        "eval.reward",
        "expected rule",
    );
    refused(
        &with_eval,
        &["eval.max_new_tokens=0"],
        "eval.max_new_tokens",
        "at least 1",
    );
    refused(
        &with_eval,
        &["eval.max_queries=0"],
        "eval.max_queries",
        "at least 1",
    );
    refused(
        &with_eval,
        &["eval.reward_timeout_secs=-1"],
        "eval.reward_timeout_secs",
        "",
    );
    refused(&with_eval, &["eval.evry=2"], "evry", "");
    refused(
        &with_eval,
        &["reward_model.pair_loss=\"hinge\""],
        "`eval`",
        "reward model",
    );
    refused(
        &with_eval,
        &["output.save_total_limit=0"],
        "output.save_total_limit",
        "at least 1",
    );
    refused(
        &with_eval,
        &["output.keep_best=\"eval_acc\""],
        "eval_acc",
        "eval_reward",
    );
    // A metric the run never computes.
    refused(
        &tiny,
        &["output.keep_best=\"eval_reward\""],
        "output.keep_best",
        "[eval]",
    );
    let no_eval_data = tiny.replace("eval = \"tests/data/tiny_ranked_eval.jsonl\"\n", "");
    assert_ne!(no_eval_data, tiny);
    refused(
        &no_eval_data,
        &["output.keep_best=\"eval_loss\""],
        "output.keep_best",
        "data.eval",
    );
    TrainConfig::parse(
        &with_eval,
        Path::new("c.toml"),
        &["output.keep_best=\"eval_reward\"".into()],
    )
    .unwrap();
}
