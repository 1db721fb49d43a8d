//! SmolLM2-135M-Instruct converted from its GGUF by `rrhf convert`, against transformers
//! (tests/fixtures/smollm2_reference.json, written by make_smollm2_reference.py). Skipped with a
//! message when the model directory is absent; scripts/test.sh fetches it.

mod common;

use std::path::PathBuf;

use common::{fixture, json, rrhf_ok as rrhf};

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RRHF_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct")
        });
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: no SmolLM2-135M-Instruct at {} (run scripts/fetch-smollm2.sh)",
            dir.display()
        );
        None
    }
}

#[test]
fn greedy_answer_names_paris_like_transformers() {
    let Some(dir) = model_dir() else { return };
    let reference = json(&fixture("smollm2_reference.json"));
    let answer = rrhf(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "32",
        "--device",
        "cpu",
    ]);
    assert!(answer.contains("Paris"), "{answer}");
    assert_eq!(
        answer.trim(),
        reference["greedy_answer"].as_str().unwrap().trim()
    );
}

#[test]
fn logprob_agrees_with_transformers() {
    let Some(dir) = model_dir() else { return };
    let reference = json(&fixture("smollm2_reference.json"));
    for (mode, key) in [("auto", "template_auto"), ("none", "template_none")] {
        let out = rrhf(&[
            "logprob",
            "--model",
            dir.to_str().unwrap(),
            "--query",
            reference["question"].as_str().unwrap(),
            "--response",
            reference["response"].as_str().unwrap(),
            "--template",
            mode,
            "--device",
            "cpu",
        ]);
        let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let want = &reference["logprob"][key];
        assert_eq!(got["tokens"], want["tokens"]);
        let (g, w) = (got["sum"].as_f64().unwrap(), want["sum"].as_f64().unwrap());
        assert!(
            (g - w).abs() <= 1e-3 * w.abs(),
            "template {mode}: rrhf {g} vs transformers {w}"
        );
    }
}

#[test]
fn tokenizer_rebuilt_from_gguf_matches_reference_ids() {
    let Some(dir) = model_dir() else { return };
    let reference = json(&fixture("smollm2_reference.json"));
    let config = rrhf::checkpoint::load_config(&dir).unwrap();
    let tok = rrhf::tokenizer::Tokenizer::load(&dir, &config).unwrap();
    // transformers building its own tokenizer from the GGUF is the independent reference.
    for (text, ids) in reference["token_ids_transformers_gguf_tokenizer"]
        .as_object()
        .unwrap()
    {
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
    }
    let q = tok
        .encode_query(
            &reference["question"].as_str().unwrap().into(),
            rrhf::tokenizer::TemplateMode::Auto,
        )
        .unwrap();
    let want: Vec<u32> = reference["templated_query_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(q, want);
}

#[test]
fn first_rrhf_loss_equals_pytorch_and_training_lowers_it() {
    let Some(dir) = model_dir() else { return };
    let reference = json(&fixture("smollm2_rrhf_loss.json"));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("smollm2-train");
    let _ = std::fs::remove_dir_all(&out);
    let config = rrhf::train::TrainConfig::load(
        std::path::Path::new("configs/smollm2-test.toml"),
        &[
            format!("model.path={:?}", dir.display().to_string()),
            format!("output.dir={:?}", out.display().to_string()),
        ],
    )
    .unwrap();
    let options = rrhf::train::RunOptions {
        resume: None,
        stop_after: None,
        force: false,
    };
    rrhf::train::train(&config, &options).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = lines.iter().find(|v| v.get("loss").is_some()).unwrap();
    for key in ["loss", "rank_loss", "ft_loss"] {
        let (got, want) = (
            first[key].as_f64().unwrap(),
            reference[key].as_f64().unwrap(),
        );
        assert!(
            (got - want).abs() <= 1e-3 * want.abs(),
            "first {key}: rrhf {got}, PyTorch {want}"
        );
    }
    let evals: Vec<f64> = lines
        .iter()
        .filter_map(|v| v.get("eval_loss").and_then(|x| x.as_f64()))
        .collect();
    assert!(
        evals.last().unwrap() < &(evals[0] * 0.5),
        "loss on the training queries should fall: {evals:?}"
    );
}

/// Diverse beam search gives k different answers where plain beam search gives near-copies.
#[test]
fn diverse_beam_search_answers_differ_where_beam_search_repeats() {
    let Some(dir) = model_dir() else { return };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let queries = out.join("smollm2-sample-queries.jsonl");
    std::fs::write(
        &queries,
        "{\"query\": \"Give me a tip for sleeping better.\"}\n",
    )
    .unwrap();
    let sample = |policy: &str| -> Vec<String> {
        let file = out.join(format!("smollm2-{policy}.jsonl"));
        rrhf(&[
            "sample",
            "--model",
            dir.to_str().unwrap(),
            "--device",
            "cpu",
            "--queries",
            queries.to_str().unwrap(),
            "--policy",
            policy,
            "--k",
            "4",
            "--max-new-tokens",
            "24",
            "--out",
            file.to_str().unwrap(),
        ]);
        let line: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        line["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    // The mean, over pairs, of the share of words two answers begin with in common.
    let overlap = |rs: &[String]| {
        let mut total = 0.0;
        let mut pairs = 0.0;
        for i in 0..rs.len() {
            for j in i + 1..rs.len() {
                let (a, b): (Vec<&str>, Vec<&str>) = (
                    rs[i].split_whitespace().collect(),
                    rs[j].split_whitespace().collect(),
                );
                let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
                total += common as f64 / a.len().min(b.len()).max(1) as f64;
                pairs += 1.0;
            }
        }
        total / pairs
    };
    let diverse = sample("diverse-beam");
    let beam = sample("beam");
    let distinct: std::collections::HashSet<&String> = diverse.iter().collect();
    assert_eq!(distinct.len(), 4, "{diverse:#?}");
    let (d, b) = (overlap(&diverse), overlap(&beam));
    assert!(
        b > 0.8 && d < 0.3,
        "shared-prefix share: beam {b:.2} {beam:#?}, diverse {d:.2} {diverse:#?}"
    );
}
