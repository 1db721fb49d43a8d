//! Nothing lost, nothing silent: outputs never destroy what rrhf did not write, one run per
//! output directory, leftovers of killed writes are cleared, numbers are what they say, bad
//! input is an error naming where it is (never a panic), and memory and external scorers stay
//! bounded. Each test is one group of the rules in README.md ("Output directories", "Data").

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TINY_CONFIG, assert_refused, fixture, metrics, rrhf, rrhf_command, scratch, stderr};

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// Every file under `dir` with its bytes, to check that nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
                out.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    b"<dir>".to_vec(),
                );
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Fails naming only the paths that differ (the snapshots hold whole files).
fn assert_same(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    let keys: std::collections::BTreeSet<&PathBuf> = a.keys().chain(b.keys()).collect();
    let differ: Vec<&&PathBuf> = keys.iter().filter(|k| a.get(**k) != b.get(**k)).collect();
    assert!(differ.is_empty(), "{what}: these changed: {differ:?}");
}

/// A directory holding what a user keeps there: a file and a folder with a file.
fn users_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("keep")).unwrap();
    std::fs::write(dir.join("notes.txt"), b"my notes\n").unwrap();
    std::fs::write(dir.join("keep/data.bin"), [1u8, 2, 3]).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Output paths never destroy what rrhf did not write.

#[test]
fn convert_and_merge_refuse_outputs_that_would_destroy_files() {
    let dir = scratch("rel-outputs");
    let gguf = dir.join("model.gguf");
    std::fs::write(&gguf, b"GGUF not really").unwrap();
    let out = dir.join("out");
    users_dir(&out);
    let before = snapshot(&dir);

    // A non-empty --out: refused, before the GGUF is even read.
    let r = rrhf(&["convert", "--gguf", s(&gguf), "--out", s(&out)]);
    assert_refused(&r, &["exists and is not empty", "--force"]);
    // --out holding the source GGUF, with or without --force.
    let inner = out.join("m.gguf");
    std::fs::copy(&gguf, &inner).unwrap();
    let with_source = snapshot(&dir);
    for force in [false, true] {
        let mut args = vec!["convert", "--gguf", s(&inner), "--out", s(&out)];
        if force {
            args.push("--force");
        }
        assert_refused(&rrhf(&args), &["holds the GGUF file"]);
        assert_same(&snapshot(&dir), &with_source, &format!("force={force}"));
    }
    std::fs::remove_file(&inner).unwrap();
    // --out that is an existing file: an error naming it, and the file stays where it is.
    let file = dir.join("a-file");
    std::fs::write(&file, b"precious").unwrap();
    let r = rrhf(&["convert", "--gguf", s(&gguf), "--out", s(&file), "--force"]);
    assert_refused(&r, &["a-file", "is a file, not a directory"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    std::fs::remove_file(&file).unwrap();
    assert_same(&snapshot(&dir), &before, "convert");

    // merge: --out may not be the base or the adapter, nor lie inside them.
    let base = dir.join("base");
    let adapter = dir.join("adapter");
    copy_dir(&fixture("tiny-gqa"), &base);
    copy_dir(&fixture("tiny-lora"), &adapter);
    let before = snapshot(&dir);
    for (target, what) in [
        (base.clone(), "is the base model"),
        (adapter.clone(), "is the adapter directory"),
        (adapter.join("merged"), "lies inside the adapter directory"),
    ] {
        let r = rrhf(&[
            "merge",
            "--adapter",
            s(&adapter),
            "--base",
            s(&base),
            "--out",
            s(&target),
            "--force",
        ]);
        assert_refused(&r, &[what]);
        assert_same(&snapshot(&dir), &before, what);
    }

    // --force into the user's directory that also holds an older, sharded model: the user's
    // files stay byte for byte, the stale shards and index go, the new model loads.
    for entry in std::fs::read_dir(fixture("tiny-gqa")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, out.join(p.file_name().unwrap())).unwrap();
    }
    let r = rrhf(&[
        "merge",
        "--adapter",
        s(&adapter),
        "--base",
        s(&base),
        "--out",
        s(&out),
        "--force",
    ]);
    assert_ok(&r);
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"my notes\n");
    assert_eq!(std::fs::read(out.join("keep/data.bin")).unwrap(), [1, 2, 3]);
    assert!(out.join("model.safetensors").exists());
    assert!(!out.join("model.safetensors.index.json").exists());
    assert!(!out.join("model-00001-of-00012.safetensors").exists());
    // Files the user made that a model directory also has (expected.json is a test file of
    // the fixture, not an rrhf file) are kept.
    assert!(out.join("expected.json").exists());
    let merged = rrhf::checkpoint::load_model(&out, &rrhf::device::cpu_device().device);
    assert!(merged.is_ok(), "{:#}", merged.err().unwrap());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn file_outputs_are_never_their_own_input() {
    let dir = scratch("rel-file-outputs");
    let file = dir.join("samples.jsonl");
    let line = "{\"query\": \"q\", \"responses\": [\"a\", \"b\"]}\n";
    std::fs::write(&file, line).unwrap();
    let r = rrhf(&[
        "score",
        "--reward",
        "rule:length",
        "--in",
        s(&file),
        "--out",
        s(&file),
    ]);
    assert_refused(&r, &["--out", "is the --in file"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), line);
}

// ---------------------------------------------------------------------------------------------
// 2. One run per output directory, locked while it lives.

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--config",
        TINY_CONFIG,
        "--set",
        &format!("output.dir={out:?}"),
        "--set",
        "train.max_steps=2",
        "--set",
        "output.save_every=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn train_cmd(out: &Path, extra: &[&str]) -> Output {
    let args = train_args(s(out), extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rrhf(&args)
}

#[test]
fn a_second_run_into_a_run_directory_is_refused_and_force_keeps_users_files() {
    let out = scratch("rel-one-run");
    users_dir(&out);
    assert_ok(&train_cmd(&out, &[]));
    let after_first = snapshot(&out);
    let r = train_cmd(&out, &[]);
    assert_refused(
        &r,
        &["holds another run", "--resume", "checkpoint-2", "--force"],
    );
    assert_same(
        &snapshot(&out),
        &after_first,
        "a refused run changes nothing",
    );
    // --force with --resume would remove the checkpoint it resumes.
    let ckpt = out.join("checkpoint-1");
    let r = train_cmd(&out, &["--resume", s(&ckpt), "--force"]);
    assert_refused(&r, &["--force", "--resume"]);
    assert_same(&snapshot(&out), &after_first, "--force with --resume");
    // Resuming in the same directory is what the directory is for.
    assert_ok(&train_cmd(&out, &["--resume", s(&ckpt)]));
    // --force starts over: the run's files are renewed, the user's stay byte for byte.
    std::fs::create_dir_all(out.join("checkpoint-9")).unwrap();
    let r = train_cmd(&out, &["--force"]);
    assert_ok(&r);
    assert!(stderr(&r).contains("removed the previous run's files"));
    assert!(!out.join("checkpoint-9").exists());
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"my notes\n");
    assert_eq!(std::fs::read(out.join("keep/data.bin")).unwrap(), [1, 2, 3]);
    assert_eq!(
        metrics(&out)
            .iter()
            .filter(|l| l.get("loss").is_some())
            .count(),
        2
    );
    // The output directory may not lie inside the model it trains from.
    let inside = fixture("tiny-gqa").join("run");
    assert_refused(&train_cmd(&inside, &[]), &["lies inside the model"]);
    assert!(!inside.exists());
}

#[test]
fn a_live_run_locks_its_directory_and_a_dead_ones_lock_is_taken_over() {
    use rrhf::train::run_dir::{LOCK_FILE, RunDir, RunStart};
    let out = scratch("rel-lock");
    let held = RunDir::open(&RunStart {
        dir: &out,
        resume: None,
        force: false,
        inputs: vec![],
    })
    .unwrap();
    let r = train_cmd(&out, &[]);
    assert_refused(
        &r,
        &[
            "in use by another rrhf run",
            &format!("pid {}", std::process::id()),
        ],
    );
    drop(held);
    // A lock file left by a process that died (the pid of a child that has exited).
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(out.join(LOCK_FILE), dead.to_string()).unwrap();
    assert_ok(&train_cmd(&out, &[]));
}

#[test]
fn of_two_runs_started_at_once_exactly_one_runs() {
    let out = scratch("rel-race");
    let args = train_args(s(&out), &["--set", "train.max_steps=6"]);
    let spawn = || {
        rrhf_command(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "{:?}", outs.iter().map(stderr).collect::<Vec<_>>());
    let refused = outs.iter().find(|o| !o.status.success()).unwrap();
    let err = stderr(refused);
    assert!(
        err.contains("in use by another rrhf run") || err.contains("holds another run"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 3. Leftovers of writes interrupted by kill -9 are cleared at the next start or resume.

#[test]
fn leftovers_of_killed_writes_are_cleared_on_start_and_resume() {
    let out = scratch("rel-leftovers");
    // What `kill -9` during a checkpoint write leaves (the pid of a dead writer).
    std::fs::create_dir_all(out.join(".checkpoint-4.tmp-4000001/x")).unwrap();
    users_dir(&out);
    assert_ok(&train_cmd(&out, &[]));
    assert!(!out.join(".checkpoint-4.tmp-4000001").exists());
    assert!(out.join("notes.txt").exists());
    // A round file's temporary, and a swap of checkpoint-1 killed between its two renames: the
    // new version complete under its temporary name, the old one set aside. Resuming clears
    // the first and puts the new checkpoint in place.
    std::fs::create_dir_all(out.join("samples")).unwrap();
    std::fs::write(out.join("samples/.round-0.jsonl.tmp-4000002"), b"{").unwrap();
    let ckpt = out.join("checkpoint-1");
    let tmp = out.join(".checkpoint-1.tmp-4000003");
    let old = out.join(".checkpoint-1.old-4000003");
    copy_dir(&ckpt, &tmp);
    std::fs::rename(&ckpt, &old).unwrap();
    assert_ok(&train_cmd(
        &out,
        &["--resume", s(&out.join("checkpoint-2"))],
    ));
    assert!(ckpt.join("trainer_state.json").exists());
    assert!(!tmp.exists() && !old.exists());
    assert!(!out.join("samples/.round-0.jsonl.tmp-4000002").exists());
}

// ---------------------------------------------------------------------------------------------
// 4. Numbers are what they say.

/// Writes `lines` as a data file and runs one step of the tiny model on it (lr 0, so the
/// logged losses show what the data means and nothing else).
fn first_step(name: &str, lines: &[&str], extra: &[&str]) -> Result<serde_json::Value, String> {
    let dir = scratch(name);
    let data = dir.join("data.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let data_set = format!("data.train={:?}", s(&data));
    let mut args = vec![
        "--set",
        &data_set,
        "--set",
        "train.lr=0",
        "--set",
        "train.queries_per_step=2",
        "--set",
        "train.grad_accum=1",
        "--set",
        "train.max_steps=1",
    ];
    args.extend(extra);
    let out = dir.join("run");
    let r = train_cmd(&out, &args);
    if !r.status.success() {
        return Err(stderr(&r));
    }
    Ok(metrics(&out)
        .into_iter()
        .find(|l| l.get("loss").is_some())
        .unwrap())
}

#[test]
fn scores_rank_as_read_beyond_f32() {
    let line = |scores: &str| {
        format!(
            "{{\"query\": \"bird moon?\", \"responses\": [\"no no no\", \"sure, here it is\"], \
             \"scores\": {scores}}}"
        )
    };
    let plain = [line("[1, 2]"), line("[1, 2]")];
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let want = first_step("rel-scores-plain", &plain, &[]).unwrap();
    // Beyond f32's range (as f32 both are infinite: a tie), and closer than f32 can tell.
    for (name, scores) in [("huge", "[1e39, 2e39]"), ("close", "[1.0, 1.0000000001]")] {
        let lines = [line(scores), line(scores)];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let got = first_step(&format!("rel-scores-{name}"), &lines, &[]).unwrap();
        for key in ["rank_loss", "ft_loss"] {
            assert_eq!(got[key], want[key], "{name} {key}: {got} vs {want}");
        }
    }
}

#[test]
fn ties_ambiguous_lines_and_config_domains_are_named() {
    let tie = "{\"query\": \"q?\", \"responses\": [\"a\", \"b\"], \"scores\": [1, 1]}";
    let ranked = "{\"query\": \"q?\", \"responses\": [\"a\", \"b\"], \"scores\": [1, 2]}";
    let err = first_step("rel-all-ties", &[tie, tie], &[]).unwrap_err();
    assert!(
        err.contains("data.jsonl") && err.contains("no query has two responses"),
        "{err}"
    );
    // Some ties: one warning with their count, and the run goes on.
    let dir = scratch("rel-some-ties");
    let data = dir.join("data.jsonl");
    std::fs::write(&data, [tie, ranked, ranked].join("\n")).unwrap();
    let r = train_cmd(
        &dir.join("run"),
        &[
            "--set",
            &format!("data.train={:?}", s(&data)),
            "--set",
            "train.max_steps=1",
        ],
    );
    assert_ok(&r);
    assert_eq!(
        stderr(&r)
            .matches("1 of 3 queries have only tied scores")
            .count(),
        1
    );

    for (bad, field) in [
        (
            "{\"query\": \"q\", \"prompt\": \"p\", \"responses\": [\"a\", \"b\"], \"scores\": [1, 2]}",
            "`query` and `prompt` are both given",
        ),
        (
            "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"scores\": [1, 2]}",
            "`scores` and `chosen` are both given",
        ),
    ] {
        let err = first_step("rel-ambiguous", &[ranked, bad], &[]).unwrap_err();
        assert!(err.contains("data.jsonl:2") && err.contains(field), "{err}");
    }

    // Out-of-domain config numbers are refused at the start, named by their key.
    for (set, key) in [
        ("train.adam_beta1=1.5", "train.adam_beta1"),
        ("train.adam_beta2=1.0", "train.adam_beta2"),
        ("train.adam_eps=0", "train.adam_eps"),
        ("train.weight_decay=-1", "train.weight_decay"),
        ("train.max_grad_norm=nan", "train.max_grad_norm"),
        ("train.lr=100", "train.lr"),
        ("loss.rank_weight=inf", "loss.rank_weight"),
        ("loss.rank_margin=-1", "loss.rank_margin"),
        ("lora.alpha=1e30", "lora.alpha"),
        ("lora.alpha=inf", "lora.alpha"),
        ("lora.rank=100000", "lora.rank"),
        ("data.max_query_length=0", "data.max_query_length"),
    ] {
        let err = first_step("rel-config", &[ranked, ranked], &["--set", set]).unwrap_err();
        assert!(err.contains(&format!("`{key}`")), "{set}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("step 2"),
            "{set}: {err}"
        );
    }
    let listwise_with_margin = [
        "--set",
        "loss.rank_loss=\"listwise\"",
        "--set",
        "loss.rank_margin=0.5",
    ];
    let err = first_step("rel-config", &[ranked, ranked], &listwise_with_margin).unwrap_err();
    assert!(
        err.contains("`loss.rank_margin`") && err.contains("listwise"),
        "{err}"
    );
}

/// The tiny model with one weight poisoned: its log-probs are NaN.
fn broken_model(name: &str) -> PathBuf {
    let dir = scratch(name);
    copy_dir(&fixture("tiny-tied"), &dir);
    poison(&dir.join("model.safetensors"), "model.norm.weight");
    dir
}

/// Rewrites the safetensors file at `path` with tensor `name` set to NaN.
fn poison(path: &Path, name: &str) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = vec![];
    for (n, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if n == name {
            let nan: &[u8] = match view.dtype() {
                safetensors::Dtype::F32 => &[0, 0, 0xC0, 0x7F],
                safetensors::Dtype::BF16 => &[0xC0, 0x7F],
                other => panic!("{other:?}"),
            };
            for c in data.chunks_exact_mut(nan.len()) {
                c.copy_from_slice(nan);
            }
        }
        owned.push((n, view.dtype(), view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, sh, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, sh.clone(), b).unwrap(),
            )
        })
        .collect();
    let found = views.iter().any(|(n, _)| n == name);
    assert!(found, "{name} not in {}", path.display());
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn a_model_with_non_finite_log_probs_exits_non_zero_and_merge_writes_no_nan() {
    let model = broken_model("rel-nan-model");
    let m = s(&model);
    let r = rrhf(&[
        "logprob",
        "--model",
        m,
        "--query",
        "hi",
        "--response",
        "there",
        "--device",
        "cpu",
    ]);
    assert_refused(&r, &["rel-nan-model", "not a finite number"]);
    let r = rrhf(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ]);
    assert_refused(&r, &["rel-nan-model", "not finite"]);
    let queries = model.join("q.jsonl");
    std::fs::write(
        &queries,
        "{\"prompt\": \"hi\", \"chosen\": \"a\", \"rejected\": \"b\"}\n",
    )
    .unwrap();
    let r = rrhf(&[
        "eval",
        "--model",
        m,
        "--queries",
        s(&queries),
        "--reward",
        "rule:length",
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ]);
    assert_refused(&r, &["rel-nan-model", "not finite"]);

    // An adapter with NaN weights: merge refuses to write them.
    let dir = scratch("rel-nan-merge");
    let adapter = dir.join("adapter");
    copy_dir(&fixture("tiny-lora"), &adapter);
    let bytes = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let first = st.names()[0].to_string();
    poison(&adapter.join("adapter_model.safetensors"), &first);
    let out = dir.join("merged");
    let r = rrhf(&[
        "merge",
        "--adapter",
        s(&adapter),
        "--base",
        s(&fixture("tiny-gqa")),
        "--out",
        s(&out),
    ]);
    assert_refused(&r, &["non-finite values", "not written"]);
    assert!(!out.exists());
}

#[test]
fn an_online_scorers_out_of_range_value_is_an_error_and_round_files_stay_valid() {
    let dir = scratch("rel-online-scores");
    let online = |name: &str, scorer: &str| {
        let out = dir.join(name);
        let r = rrhf(&[
            "train",
            "--config",
            TINY_CONFIG,
            "--set",
            &format!("output.dir={:?}", s(&out)),
            "--set",
            "train.max_steps=1",
            "--set",
            "train.queries_per_step=2",
            "--set",
            "train.grad_accum=1",
            "--set",
            &format!("online.reward={:?}", format!("command:{scorer}")),
            "--set",
            "online.sampling.k=2",
            "--set",
            "online.sampling.max_new_tokens=4",
            "--set",
            "online.sampling.policy=\"top_p\"",
        ]);
        (r, out)
    };
    // One score per response: n-th line 1e39 * n, beyond f32.
    let (r, out) = online("huge", "awk '{print NR \"e39\"}'");
    assert_ok(&r);
    let round = out.join("samples/round-0.jsonl");
    let text = std::fs::read_to_string(&round).unwrap();
    assert!(!text.contains("null"), "{text}");
    let read = rrhf::data::read_ranked(&round, &Default::default()).unwrap();
    assert!(
        read.iter().flat_map(|l| &l.scores).all(|s| *s >= 1e39),
        "{read:?}"
    );
    // The round file is ranked data that `rrhf train` accepts.
    let r = train_cmd(
        &dir.join("offline"),
        &["--set", &format!("data.train={:?}", s(&round))],
    );
    assert_ok(&r);
    // A value beyond f64 is no number: the error names the scorer and the query.
    let (r, _) = online("inf", "awk '{print \"1e400\"}'");
    assert_refused(&r, &["scorer `awk", "not a finite number", "query \""]);
}

// ---------------------------------------------------------------------------------------------
// 5. Offsets and sizes of the GGUF reader are checked.

#[test]
fn a_gguf_offset_near_2_pow_64_is_an_error() {
    let dir = scratch("rel-gguf-offset");
    let mut w = common::GgufWriter::default();
    w.string("general.architecture", "llama");
    w.tensor(
        "token_embd.weight",
        &[2, 4],
        0,
        common::encode_f32(&[1.0; 8]),
    );
    let mut bytes = w.to_bytes();
    // The tensor info's offset is the 8 bytes after its type id; overwrite it with 2^64 - 16.
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|x| x == name).unwrap() + name.len();
    let offset_at = at + 4 + 2 * 8 + 4;
    bytes[offset_at..offset_at + 8].copy_from_slice(&(u64::MAX - 15).to_le_bytes());
    let path = dir.join("wrap.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let err = match rrhf::checkpoint::gguf::GgufFile::open(&path) {
        Ok(_) => panic!("a wrapped offset was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("wrap.gguf") && err.contains("past the end"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. No panic from user input.

#[test]
fn user_input_that_reached_asserts_gets_errors_naming_the_field() {
    // An empty query under a tokenizer that adds no BOS (tiny-tied), without a template.
    let r = rrhf(&[
        "logprob",
        "--model",
        s(&fixture("tiny-tied")),
        "--query",
        "",
        "--response",
        "x",
        "--template",
        "none",
        "--device",
        "cpu",
    ]);
    assert_refused(&r, &["`query`", "no tokens"]);
    let dir = scratch("rel-empty-query");
    let data = dir.join("data.jsonl");
    std::fs::write(
        &data,
        "{\"query\": \"q\", \"responses\": [\"a\", \"b\"], \"scores\": [1, 2]}\n\
         {\"query\": \"\", \"responses\": [\"a\", \"b\"], \"scores\": [1, 2]}\n",
    )
    .unwrap();
    let r = train_cmd(
        &dir.join("run"),
        &[
            "--set",
            "model.path=\"tests/fixtures/tiny-tied\"",
            "--set",
            "data.template=\"none\"",
            "--set",
            &format!("data.train={:?}", s(&data)),
        ],
    );
    assert_refused(&r, &["data.jsonl:2", "`query`", "no tokens"]);
    // A negative scorer timeout.
    let r = rrhf(&[
        "score",
        "--reward",
        "command:cat",
        "--reward-timeout=-1",
        "--in",
        s(&data),
        "--out",
        s(&dir.join("o.jsonl")),
    ]);
    assert_refused(&r, &["timeout"]);
    // The unfused head over logits the kernels cannot index: refused before any work.
    let config = dir.join("wide-vocab.json");
    let mut c = common::json(&fixture("tiny-gqa").join("config.json"));
    c["vocab_size"] = (1u64 << 21).into();
    std::fs::write(&config, c.to_string()).unwrap();
    let r = rrhf(&[
        "bench",
        "step",
        "--model",
        s(&config),
        "--device",
        "cpu",
        "--k",
        "4",
        "--t",
        "64",
        "--queries",
        "8",
        "--unfused-head",
    ]);
    assert_refused(&r, &["--unfused-head", "fused head"]);
}

// ---------------------------------------------------------------------------------------------
// 7. Memory on bad input stays bounded.

#[test]
fn a_line_over_max_line_bytes_is_an_error_and_long_texts_cost_their_window() {
    let dir = scratch("rel-long-lines");
    let data = dir.join("data.jsonl");
    let ranked = "{\"query\": \"q?\", \"responses\": [\"a\", \"b\"], \"scores\": [1, 2]}";
    let long = format!(
        "{{\"query\": \"q?\", \"responses\": [\"{}\", \"b\"], \"scores\": [1, 2]}}",
        "word ".repeat(200_000)
    );
    std::fs::write(&data, format!("{ranked}\n{long}\n")).unwrap();
    let data_set = format!("data.train={:?}", s(&data));
    let r = train_cmd(
        &dir.join("run"),
        &["--set", &data_set, "--set", "data.max_line_bytes=100000"],
    );
    assert_refused(
        &r,
        &[
            "data.jsonl:2",
            "longer than 100000 bytes",
            "data.max_line_bytes",
        ],
    );
    // Under the limit, a 1 MB response trains as its first max_length tokens, which are what
    // the whole text's tokenisation gives.
    let r = train_cmd(&dir.join("run2"), &["--set", &data_set]);
    assert_ok(&r);
    let tokenizer_dir = fixture("tiny-gqa");
    let config = rrhf::checkpoint::load_config(&tokenizer_dir).unwrap();
    let tok = rrhf::tokenizer::Tokenizer::load(&tokenizer_dir, &config).unwrap();
    let text = "word ".repeat(200_000);
    let whole = tok.encode_response(&text).unwrap();
    assert_eq!(
        tok.encode_response_truncated(&text, 60).unwrap(),
        whole[..60]
    );
}

// ---------------------------------------------------------------------------------------------
// 8. External scorers: the whole process group goes on timeout, output is bounded.

#[test]
fn a_scorer_is_stopped_with_its_children_and_its_output_is_bounded() {
    let dir = scratch("rel-scorer");
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        "{\"query\": \"q\", \"responses\": [\"a\", \"b\"]}\n",
    )
    .unwrap();
    let pid_file = dir.join("child.pid");
    let scorer = format!("command:sleep 300 & echo $! > {}; wait", s(&pid_file));
    let r = rrhf(&[
        "score",
        "--reward",
        &scorer,
        "--reward-timeout",
        "1",
        "--in",
        s(&input),
        "--out",
        s(&dir.join("out.jsonl")),
    ]);
    assert_refused(&r, &["did not finish within"]);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Gone, or a zombie waiting for a parent that reaps (killed all the same).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = state
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'));
    assert!(
        !alive,
        "the scorer's child {pid} outlived the timeout: {state}"
    );

    let r = rrhf(&[
        "score",
        "--reward",
        "command:yes 1",
        "--in",
        s(&input),
        "--out",
        s(&dir.join("out.jsonl")),
    ]);
    assert_refused(&r, &["printed more than 128 KiB", "stopped"]);
}

// ---------------------------------------------------------------------------------------------
// 9. Messages name the line and the key.

#[test]
fn utf8_bom_and_missing_devices_are_named() {
    let dir = scratch("rel-messages");
    let ranked = "{\"query\": \"q?\", \"responses\": [\"a\", \"b\"], \"scores\": [1, 2]}\n";
    let bad_utf8 = dir.join("bad.jsonl");
    let mut bytes = ranked.as_bytes().to_vec();
    bytes.extend(b"{\"query\": \"\xff\xfe\", \"responses\": [\"a\"], \"scores\": [1]}\n");
    std::fs::write(&bad_utf8, bytes).unwrap();
    let bom = dir.join("bom.jsonl");
    std::fs::write(&bom, format!("\u{feff}{ranked}")).unwrap();
    for (file, want) in [
        (&bad_utf8, "bad.jsonl:2: not valid UTF-8"),
        (&bom, "bom.jsonl:1: the file starts with a byte-order mark"),
    ] {
        let r = train_cmd(
            &dir.join("run"),
            &["--set", &format!("data.train={:?}", s(file))],
        );
        assert_refused(&r, &[want]);
    }
    let r = train_cmd(&dir.join("run"), &["--set", "train.device=\"gpu:7\""]);
    assert_refused(&r, &["train.device", "gpu:7", "the devices here are: cpu"]);
}
