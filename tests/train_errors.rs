//! `rrhf train` refuses bad data and configs with an error naming the file, the line and the
//! field (or the key), never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::{TINY_CONFIG, rrhf, scratch};

/// Runs `rrhf train` on the tiny config with `data_line` as an extra training line (or a config
/// override), expecting an error that mentions every one of `expect`.
fn expect_train_error(dir: &Path, set: &[String], expect: &[&str]) {
    let mut args = vec!["train".to_string(), "--config".into(), TINY_CONFIG.into()];
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
    let text = std::fs::read_to_string(TINY_CONFIG)
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
    // The threads-in-one-process data parallel of earlier versions: pointed to MPI.
    expect_train_error(
        &dir,
        &["train.data_parallel=[\"gpu:1\"]".into()],
        &["train.data_parallel", "is retired", "mpirun -np N"],
    );
}
