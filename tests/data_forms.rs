//! The data forms beside RRHF's own ranked JSONL: conversations, TRL's conversational preference
//! form, Parquet with a column mapping, and pairs grouped by prompt. Each trains the tiny model
//! and takes the steps the same data takes as ranked JSONL; bad records are refused naming the
//! file, the row and the column.

mod common;

use std::path::{Path, PathBuf};

use common::{TINY_CONFIG, assert_refused, fixture, rrhf, rrhf_ok, scratch, step_figures};
use rrhf::data::{ReadOptions, read_ranked, tokenize_examples};
use rrhf::model::LlamaConfig;
use rrhf::tokenizer::{ChatMessage, Prompt, TemplateMode, Tokenizer};

const RANKED: &str = "tests/data/tiny_ranked_train.jsonl";
const CHAT: &str = "tests/data/tiny_chat_train.jsonl";
const PARQUET: &str = "tests/data/tiny_ranked_train.parquet";
/// tiny_ranked_{train,eval}.parquet's names for the ranked columns.
const COLUMNS: [&str; 4] = [
    "data.eval=\"tests/data/tiny_ranked_eval.parquet\"",
    "data.columns.query=\"question\"",
    "data.columns.responses=\"answers\"",
    "data.columns.scores=\"ratings\"",
];

/// `rrhf train` on the tiny config (CPU) with `train` as its training file: its (loss, grad_norm)
/// per step.
fn train_on(out: &Path, train: &str, extra: &[&str]) -> Vec<(f64, f64)> {
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        TINY_CONFIG.into(),
        "--set".into(),
        format!("output.dir={:?}", out.display().to_string()),
        "--set".into(),
        format!("data.train={train:?}"),
    ];
    for s in extra {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    rrhf_ok(&args);
    // The run read `train` (so equal steps below are not one file read twice).
    let inputs = common::json(&out.join("run.json"))["inputs"].clone();
    assert!(inputs.get(train).is_some(), "{train} not among {inputs}");
    step_figures(out)
}

fn assert_same_steps(a: &[(f64, f64)], b: &[(f64, f64)], rel: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts");
    assert!(a.len() >= 10, "{what}: too few steps to compare");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        for (p, q, name) in [(x.0, y.0, "loss"), (x.1, y.1, "grad_norm")] {
            let diff = (p - q).abs() / p.abs().max(1e-12);
            assert!(diff <= rel, "{what}: step {}: {name} {p} vs {q}", i + 1);
        }
    }
}

#[test]
fn conversations_and_parquet_train_as_the_same_ranked_jsonl() {
    let dir = scratch("data-forms-train");
    let ranked = train_on(&dir.join("ranked"), RANKED, &[]);
    // The loss fell: the runs compared below train, they do not just agree.
    assert!(ranked.last().unwrap().0 < 0.8 * ranked[0].0, "{ranked:?}");
    // One user turn through the template is what a plain query becomes: the same tokens.
    let chat = train_on(&dir.join("chat"), CHAT, &[]);
    assert_same_steps(&ranked, &chat, 0.0, "conversations");
    let parquet = train_on(&dir.join("parquet"), PARQUET, &COLUMNS);
    assert_same_steps(&ranked, &parquet, 0.0, "parquet");
}

/// Every ranked line of `RANKED` as all its pairs (the better response chosen), pairwise lines as
/// they are: what a pairwise dataset of the same preferences looks like.
fn as_pairs(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(RANKED).unwrap();
    let mut out = String::new();
    let mut prompts = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let query = v.get("query").or(v.get("prompt")).unwrap().clone();
        assert!(
            prompts.insert(query.to_string()),
            "a repeated query: {query}"
        );
        let Some(responses) = v["responses"].as_array() else {
            out += &format!("{line}\n");
            continue;
        };
        let scores = v["scores"].as_array().unwrap();
        for i in 0..responses.len() {
            for j in i + 1..responses.len() {
                let (c, r) = match scores[i].as_f64() > scores[j].as_f64() {
                    true => (i, j),
                    false => (j, i),
                };
                let pair = serde_json::json!({"prompt": query, "chosen": responses[c], "rejected": responses[r]});
                out += &format!("{pair}\n");
            }
        }
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn grouped_pairs_rank_like_the_ranked_file() {
    let dir = scratch("data-forms-pairs");
    let pairs = as_pairs(&dir);
    let grouped_opts = ReadOptions {
        group_pairs: true,
        ..ReadOptions::default()
    };
    let original = read_ranked(Path::new(RANKED), &ReadOptions::default()).unwrap();
    let grouped = read_ranked(&pairs, &grouped_opts).unwrap();
    assert_eq!(grouped.len(), original.len());
    // Wins in a full round of pairs order the responses as the scores did.
    for (g, o) in grouped.iter().zip(&original) {
        assert_eq!(g.query, o.query);
        let mut by_score: Vec<(&String, f64)> = o.responses.iter().zip(o.scores.clone()).collect();
        let mut by_wins: Vec<(&String, f64)> = g.responses.iter().zip(g.scores.clone()).collect();
        by_score.sort_by(|a, b| a.1.total_cmp(&b.1));
        by_wins.sort_by(|a, b| a.1.total_cmp(&b.1));
        let order = |v: &[(&String, f64)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(order(&by_score), order(&by_wins), "line {}", o.line);
    }
    let ranked = train_on(&dir.join("ranked"), RANKED, &[]);
    let pairs = pairs.display().to_string();
    let grouped_run = train_on(&dir.join("grouped"), &pairs, &["data.group_pairs=true"]);
    // The responses come in another order within each query: the same loss up to summation order.
    assert_same_steps(&ranked, &grouped_run, 1e-5, "grouped pairs");
}

fn turn(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

/// tiny-gqa's template writes BOS and its tokenizer adds one too: a query of any form carries
/// exactly one, and a conversation is rendered turn by turn by the template.
#[test]
fn one_bos_in_every_form_and_conversations_rendered_by_the_template() {
    let dir = fixture("tiny-gqa");
    let config =
        LlamaConfig::from_json_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .unwrap();
    let tok = Tokenizer::load(&dir, &config).unwrap();
    let bos = tok.encode("<s>", false).unwrap()[0];
    let history = Prompt::Chat(vec![
        turn("user", "hi"),
        turn("assistant", "hello"),
        turn("user", "2+2?"),
    ]);
    assert_eq!(
        tok.query_text(&history, TemplateMode::Auto).unwrap(),
        "<s>[INST] hi [/INST] hello</s>[INST] 2+2? [/INST]"
    );
    // The precondition: without the rule, the templated text encodes to two BOS.
    let text = tok.query_text(&history, TemplateMode::Auto).unwrap();
    assert_eq!(tok.encode(&text, true).unwrap()[..2], [bos, bos]);
    let scratch_dir = scratch("data-forms-bos");
    let trl = scratch_dir.join("trl.jsonl");
    std::fs::write(
        &trl,
        r#"{"chosen": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}], "rejected": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "red"}]}"#,
    )
    .unwrap();
    let opts = rrhf::data::TokenizeOptions {
        max_length: 64,
        max_query_length: None,
        template: TemplateMode::Auto,
    };
    let columns = ReadOptions {
        columns: rrhf::data::Columns {
            query: Some("question".into()),
            responses: Some("answers".into()),
            scores: Some("ratings".into()),
            ..Default::default()
        },
        ..ReadOptions::default()
    };
    for (path, read) in [
        (Path::new(RANKED), ReadOptions::default()),
        (Path::new(CHAT), ReadOptions::default()),
        (Path::new(PARQUET), columns),
        (trl.as_path(), ReadOptions::default()),
    ] {
        let examples = read_ranked(path, &read).unwrap();
        for ex in tokenize_examples(&examples, &tok, opts, path).unwrap() {
            let count = ex.query.iter().filter(|&&t| t == bos).count();
            assert_eq!(
                (ex.query[0], count),
                (bos, 1),
                "{}:{}",
                path.display(),
                ex.line
            );
            assert!(ex.responses.iter().all(|r| !r.contains(&bos)));
        }
    }
}

#[test]
fn bad_records_name_the_file_row_and_column() {
    let dir = scratch("data-forms-errors");
    let train = |file: &str, extra: &[&str]| {
        let mut args = vec![
            "train".to_string(),
            "--config".into(),
            TINY_CONFIG.into(),
            "--set".into(),
            format!("output.dir={:?}", dir.join("out").display().to_string()),
            "--set".into(),
            format!("data.train={file:?}"),
        ];
        for s in extra {
            args.extend(["--set".to_string(), s.to_string()]);
        }
        rrhf(&args)
    };
    assert_refused(
        &train("tests/data/tiny_bad_scores.parquet", &[]),
        &[
            "tiny_bad_scores.parquet: row 2",
            "field `scores[1]`: expected a finite number, got null",
        ],
    );
    // The file's own column names, in the message as in the config.
    assert_refused(
        &train(PARQUET, &[]),
        &[
            "tiny_ranked_train.parquet: row 2",
            "field `query` is missing",
        ],
    );
    assert_refused(
        &train(PARQUET, &COLUMNS[..3]),
        &[
            "tiny_ranked_train.parquet: row 2",
            "field `scores` is missing",
        ],
    );
    assert_refused(
        &train("tests/data/tiny_zstd.parquet", &[]),
        &["tiny_zstd.parquet", "zstd", "snappy"],
    );
    assert_refused(
        &train(RANKED, &["data.columns.answer=\"x\""]),
        &["unknown field `answer`"],
    );
    let chat = dir.join("chat.jsonl");
    std::fs::write(
        &chat,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"responses\": [\"x\", \"y\"], \"scores\": [1, 0]}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"b\"}, {\"role\": \"user\"}], \"responses\": [\"x\", \"y\"], \"scores\": [1, 0]}\n",
    )
    .unwrap();
    assert_refused(
        &train(chat.to_str().unwrap(), &[]),
        &["chat.jsonl:2", "field `messages[1].content` is missing"],
    );
    // A conversation needs the template: with it turned off, the first line says so.
    assert_refused(
        &train(CHAT, &["data.template=\"none\""]),
        &[
            "tiny_chat_train.jsonl:1",
            "the query is a conversation",
            "chat template",
        ],
    );
}
