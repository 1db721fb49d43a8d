//! Reward models: a `LlamaForSequenceClassification` directory scores like transformers, saves and
//! reloads in the same layout, is told apart from a causal LM, and `train-rm` learns to rank
//! held-out responses.

mod common;

use std::path::Path;

use common::{fixture, scratch};
use rrhf::checkpoint::{SaveDtype, load_config, load_model, load_reward_model, save_model};
use rrhf::device::DeviceChoice;
use rrhf::rewards::{RewardOptions, RewardSpec, Scoring};
use rrhf::train::{RunOptions, TrainConfig, train};
use serde_json::Value;

struct Expected {
    query: String,
    response: String,
    score: f64,
}

fn expected() -> Vec<Expected> {
    let text = std::fs::read_to_string(fixture("tiny-rm/expected.json")).unwrap();
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    rows.iter()
        .map(|r| Expected {
            query: r["query"].as_str().unwrap().into(),
            response: r["response"].as_str().unwrap().into(),
            score: r["score"].as_f64().unwrap(),
        })
        .collect()
}

fn score_with(spec: &str, device: &burn::tensor::Device, items: &[Expected]) -> Vec<f64> {
    let mut reward = RewardSpec::parse(spec)
        .unwrap()
        .build(&RewardOptions {
            device: device.clone(),
            ..Default::default()
        })
        .unwrap();
    let scoring: Vec<Scoring<'_>> = items
        .iter()
        .map(|e| Scoring {
            query: &e.query,
            response: &e.response,
            messages: None,
        })
        .collect();
    reward.score(&scoring).unwrap()
}

#[test]
fn reward_model_scores_match_transformers() {
    let items = expected();
    let spec = format!("model:{}", fixture("tiny-rm").display());
    for dev in common::test_devices() {
        // All four in one right-padded batch of different lengths, as transformers scored them.
        let got = score_with(&spec, &dev.device, &items);
        for (g, e) in got.iter().zip(&items) {
            assert!(
                (g - e.score).abs() < 1e-4,
                "{dev:?}: {:?} scored {g}, transformers {}",
                e.response,
                e.score
            );
        }
    }
}

/// A conversation reaches the reward model as turns, rendered by its own template: one user turn
/// scores as the plain query does, and earlier turns change the score (they are not dropped, nor
/// replaced by the text form the judges read).
#[test]
fn reward_model_renders_conversations_with_its_template() {
    use rrhf::tokenizer::{ChatMessage, Prompt};
    let turn = |role: &str, content: &str| ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    let device = rrhf::device::select(&DeviceChoice::Cpu).unwrap().device;
    let mut reward = RewardSpec::parse(&format!("model:{}", fixture("tiny-rm").display()))
        .unwrap()
        .build(&RewardOptions {
            device,
            ..Default::default()
        })
        .unwrap();
    let queries = [
        Prompt::Text("where is the cat?".into()),
        Prompt::Chat(vec![turn("user", "where is the cat?")]),
        Prompt::Chat(vec![
            turn("user", "hello there"),
            turn("assistant", "hi, ask away"),
            turn("user", "where is the cat?"),
        ]),
    ];
    let responses = vec![vec!["on the mat".to_string()]; 3];
    let s = rrhf::rewards::score_responses(reward.as_mut(), &queries, &responses).unwrap();
    let (plain, one_turn, history) = (s[0][0], s[1][0], s[2][0]);
    assert_eq!(plain, one_turn);
    assert!((history - one_turn).abs() > 1e-6, "{history} vs {one_turn}");
    // The text form of the same conversation, as one user turn, is another input again.
    let text = rrhf::rewards::score_responses(
        reward.as_mut(),
        &[Prompt::Text(queries[2].text().into_owned())],
        &responses[..1],
    )
    .unwrap();
    assert_ne!(text[0][0], history);
}

#[test]
fn reward_model_saves_and_reloads_as_sequence_classification() {
    let device = burn::tensor::Device::flex();
    let model = load_reward_model(&fixture("tiny-rm"), &device).unwrap();
    let out = scratch("rm-save").join("rm");
    save_model(&model, Some(&fixture("tiny-rm")), &out, SaveDtype::F32).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForSequenceClassification");
    assert_eq!(config["id2label"].as_object().unwrap().len(), 1);
    let items = expected();
    let before = score_with(
        &format!("model:{}", fixture("tiny-rm").display()),
        &device,
        &items,
    );
    let after = score_with(&format!("model:{}", out.display()), &device, &items);
    assert_eq!(before, after);
}

#[test]
fn causal_lm_and_reward_model_are_told_apart() {
    let device = burn::tensor::Device::flex();
    let lm = fixture("tiny-tied");
    let err = RewardSpec::parse(&format!("model:{}", lm.display()))
        .unwrap()
        .build(&RewardOptions::default())
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("not a reward model"), "{err:#}");
    let err = load_model(&fixture("tiny-rm"), &device).unwrap_err();
    assert!(format!("{err:#}").contains("is a reward model"), "{err:#}");
    // Two labels is a classifier, not a reward model.
    let dir = scratch("rm-two-labels");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny-rm/config.json")).unwrap())
            .unwrap();
    config["id2label"] = serde_json::json!({"0": "NEG", "1": "POS"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = load_config(&dir).unwrap_err();
    assert!(format!("{err:#}").contains("2 labels"), "{err:#}");
}

/// `train-rm` from the tiny causal LM on the tiny ranked set: pairwise accuracy on the held-out
/// split (other queries) goes from chance to near perfect, for both pair losses.
#[test]
fn train_rm_ranks_held_out_responses() {
    let cases = [
        ("cpu", "logistic"),
        ("cpu", "hinge"),
        ("wgpu-cpu", "logistic"),
    ];
    for (device, pair_loss) in cases {
        let device: DeviceChoice = device.parse().unwrap();
        if device == DeviceChoice::WgpuCpu && !common::test_devices().iter().any(|d| d.is_wgpu) {
            continue;
        }
        let out = scratch(&format!("train-rm-{device}-{pair_loss}"));
        let set = [
            format!("output.dir={:?}", out.display().to_string()),
            format!("train.device={:?}", device.to_string()),
            format!("reward_model.pair_loss={pair_loss:?}"),
            "train.lr=1e-3".to_string(),
        ];
        let config = TrainConfig::load(Path::new("configs/tiny-test.toml"), &set).unwrap();
        assert!(config.reward_model.is_some());
        let summary = train(
            &config,
            &RunOptions {
                resume: None,
                stop_after: None,
                force: false,
            },
        )
        .unwrap();
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let evals: Vec<f64> = metrics
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter_map(|v| v["eval_rank_accuracy"].as_f64())
            .collect();
        let (first, last) = (evals[0], *evals.last().unwrap());
        assert!(
            last >= 0.9 && last > first + 0.3,
            "{device} {pair_loss}: held-out pairwise accuracy {first} -> {last}"
        );
        // The result is a reward model directory that scores.
        let rm = load_reward_model(&summary.saved, &burn::tensor::Device::flex()).unwrap();
        assert!(rm.score.is_some() && rm.lm_head.is_none());
    }
}

/// A reward model reads its score off the final hidden states, so layer checkpointing cuts its
/// backward pass at the same place as a policy's: the steps are those taken without it.
#[test]
fn train_rm_with_layer_checkpointing_takes_the_same_steps() {
    let run = |checkpointing: &str| {
        let out = scratch(&format!("train-rm-ckpt-{checkpointing}"));
        let set = [
            format!("output.dir={:?}", out.display().to_string()),
            "train.device=\"cpu\"".to_string(),
            "reward_model.pair_loss=\"logistic\"".to_string(),
            "train.max_steps=3".to_string(),
            format!("train.gradient_checkpointing={checkpointing}"),
        ];
        let config = TrainConfig::load(Path::new("configs/tiny-test.toml"), &set).unwrap();
        train(
            &config,
            &RunOptions {
                resume: None,
                stop_after: None,
                force: false,
            },
        )
        .unwrap();
        common::step_figures(&out)
    };
    let (plain, layered) = (run("off"), run("layer"));
    assert_eq!(plain.len(), 3);
    for (a, b) in plain.iter().zip(&layered) {
        assert!(
            (a.0 - b.0).abs() <= 1e-5 * a.0.abs() && (a.1 - b.1).abs() <= 1e-5 * a.1.abs(),
            "(loss, grad norm) {a:?} without checkpointing, {b:?} by layer"
        );
    }
}
