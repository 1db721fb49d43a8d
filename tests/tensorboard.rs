//! `output.tensorboard = true`: the tiny model's run writes event files that TensorBoard's own
//! readers (the `tensorboard` Python package, through tests/read_tensorboard.py) read back as
//! exactly the numbers of metrics.jsonl, also after a resume that drops lines.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{TINY_CONFIG, metrics, scratch, tiny_overrides, train_in_own_process};
use rrhf::device::DeviceChoice;
use serde_json::Value;

/// Per tag, the `(step, value)` points in the order they were written.
type Points = BTreeMap<String, Vec<(u64, f32)>>;

/// What metrics.jsonl says TensorBoard must show: every number but `step`, as f32.
fn expected(lines: &[Value]) -> Points {
    let mut out = Points::new();
    for line in lines {
        let object = line.as_object().unwrap();
        let step = object["step"].as_u64().unwrap();
        for (key, value) in object {
            if let (false, Some(x)) = (key == "step", value.as_f64()) {
                out.entry(key.clone()).or_default().push((step, x as f32));
            }
        }
    }
    out
}

/// The scalars TensorBoard reads from `<out>/tensorboard`, as tests/read_tensorboard.py prints
/// them (a failure if Python or the tensorboard package is missing).
fn read_tensorboard(out: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_tensorboard.py");
    let dir = out.join("tensorboard");
    let run = Command::new("python3").arg(&script).arg(&dir).output();
    let run = run.unwrap_or_else(|e| {
        panic!(
            "cannot run python3 {} ({e}): this test needs Python 3",
            script.display()
        )
    });
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.code() != Some(2),
        "this test needs TensorBoard's reader: python3 -m pip install tensorboard \
         (scripts/test.sh installs it): {stderr}"
    );
    assert!(
        run.status.success(),
        "{} {}: {stderr}",
        script.display(),
        dir.display()
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

fn points(read: &Value) -> Points {
    let mut out = Points::new();
    for (tag, list) in read.as_object().unwrap() {
        for point in list.as_array().unwrap() {
            let (step, value) = (point[0].as_u64().unwrap(), point[1].as_f64().unwrap());
            out.entry(tag.clone())
                .or_default()
                .push((step, value as f32));
        }
    }
    out
}

/// Checks that `<out>/tensorboard` holds one event file whose scalars, as the raw loader and as
/// TensorBoard's EventAccumulator read them, are exactly metrics.jsonl's numbers, each once.
fn assert_mirrors_metrics(out: &Path) {
    let lines = metrics(out);
    let want = expected(&lines);
    let read = read_tensorboard(out);
    let files = read["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "one event file: {files:?}");
    let name = files[0].as_str().unwrap();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    assert_eq!(read["versions"], serde_json::json!(["brain.Event:2"]));
    for tag in [
        "loss",
        "rank_loss",
        "ft_loss",
        "lr",
        "grad_norm",
        "eval_loss",
    ] {
        assert!(want.contains_key(tag), "{tag} missing from metrics.jsonl");
    }
    for (what, got) in [
        ("raw loader", points(&read["scalars"])),
        ("EventAccumulator", points(&read["accumulator"])),
    ] {
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{what}: the tags"
        );
        for (tag, points) in &want {
            assert_eq!(&got[tag], points, "{what}: {tag} by step");
        }
    }
}

#[test]
fn tensorboard_reads_every_metric_of_a_run() {
    let out = scratch("tensorboard-run");
    let set = tiny_overrides(&out, &DeviceChoice::Cpu, &["output.tensorboard=true"]);
    train_in_own_process(TINY_CONFIG, &set, None, None);
    assert_mirrors_metrics(&out);
}

/// Stopped at step 5 past a checkpoint at 3 and resumed from 3: steps 4 and 5 are logged twice
/// by the two processes, yet appear once, as the resumed run took them, in TensorBoard too.
#[test]
fn a_resume_leaves_tensorboard_equal_to_metrics_jsonl() {
    let out = scratch("tensorboard-resume");
    let extra = [
        "output.tensorboard=true",
        "train.max_steps=8",
        "output.save_every=3",
    ];
    let set = tiny_overrides(&out, &DeviceChoice::Cpu, &extra);
    train_in_own_process(TINY_CONFIG, &set, None, Some(5));
    assert_mirrors_metrics(&out);

    train_in_own_process(TINY_CONFIG, &set, Some(&out.join("checkpoint-3")), None);
    let lines = metrics(&out);
    let steps: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=8).collect::<Vec<_>>(),
        "metrics.jsonl after the resume"
    );
    assert_mirrors_metrics(&out);
}
