//! `rrhf compare RUN_A RUN_B`: do two runs agree? Their `metrics.jsonl`, step by step, metric by
//! metric (every number a line holds but the timings), against a relative tolerance; and, where
//! both runs have a `run.json`, what differs between the two manifests.
//!
//! Two values agree when `|a − b| ≤ atol` or `|a − b| / max(|a|, |b|) ≤ rtol`. The absolute floor
//! is there for the values that go to zero (the rank loss once the ranking is learned), whose
//! relative difference says nothing: 0 against 1e-9 is a relative difference of 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::train::run_dir::{MANIFEST_FILE, METRICS_FILE};

/// Fields of a metrics line that are not results: wall-clock figures differ between any two runs.
pub const TIMINGS: &[&str] = &[
    "step_seconds",
    "tokens_per_sec",
    "sample_seconds",
    "sample_tokens_per_sec",
];

#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Tolerance {
    /// The relative difference of `a` and `b`, 0 within the absolute floor.
    pub fn relative_difference(&self, a: f64, b: f64) -> f64 {
        let diff = (a - b).abs();
        if diff <= self.atol || a == b {
            0.0
        } else if !diff.is_finite() {
            f64::INFINITY
        } else {
            diff / a.abs().max(b.abs())
        }
    }
}

/// One metric over the steps both runs logged it at.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricAgreement {
    pub metric: String,
    pub steps: usize,
    pub max_relative_difference: f64,
    /// The step of the largest difference.
    pub at_step: u64,
    /// The first step beyond the tolerance, with the two values there.
    pub first_beyond: Option<(u64, f64, f64)>,
}

/// What `compare` found.
#[derive(Debug)]
pub struct Comparison {
    pub metrics: Vec<MetricAgreement>,
    /// Metrics one run logged and the other never did, and steps only one run reached.
    pub unmatched: Vec<String>,
    /// `path: a → b` for each manifest field that differs (empty when either has no manifest).
    pub manifest_differences: Vec<String>,
    /// Why the manifests were not compared, if they were not.
    pub manifest_missing: Option<String>,
}

impl Comparison {
    pub fn agrees(&self) -> bool {
        self.metrics.iter().all(|m| m.first_beyond.is_none())
    }
}

/// The values of a run's metrics: metric → step → value. An eval line and a train line of the
/// same step hold different metrics, so each (metric, step) has one value; a later line wins.
type RunMetrics = BTreeMap<String, BTreeMap<u64, f64>>;

/// Why two runs cannot be compared (exit status 2 of `rrhf compare`).
#[derive(Debug, thiserror::Error)]
#[error("the runs cannot be compared: {0}")]
pub struct Incomparable(pub String);

/// Compares the runs in directories `a` and `b`.
pub fn compare(a: &Path, b: &Path, tolerance: Tolerance) -> Result<Comparison> {
    let (ma, mb) = (read_metrics(a)?, read_metrics(b)?);
    let mut metrics = Vec::new();
    let mut unmatched = Vec::new();
    for (name, va) in &ma {
        let Some(vb) = mb.get(name) else {
            unmatched.push(format!("{name}: only in {}", a.display()));
            continue;
        };
        if let Some(m) = agreement(name, va, vb, tolerance) {
            metrics.push(m);
        }
        let only = |x: &BTreeMap<u64, f64>, y: &BTreeMap<u64, f64>| -> Vec<u64> {
            x.keys().filter(|s| !y.contains_key(s)).copied().collect()
        };
        for (steps, dir) in [(only(va, vb), a), (only(vb, va), b)] {
            if !steps.is_empty() {
                unmatched.push(format!(
                    "{name}: steps {} only in {}",
                    step_ranges(&steps),
                    dir.display()
                ));
            }
        }
    }
    for name in mb.keys().filter(|n| !ma.contains_key(*n)) {
        unmatched.push(format!("{name}: only in {}", b.display()));
    }
    if metrics.is_empty() {
        return Err(Incomparable(format!(
            "{} and {} have no metric at a common step",
            a.display(),
            b.display()
        ))
        .into());
    }
    let (manifest_differences, manifest_missing) = match (read_manifest(a)?, read_manifest(b)?) {
        (Some(x), Some(y)) => (manifest_differences(&x, &y), None),
        (x, _) => {
            let missing = if x.is_none() { a } else { b };
            let why = format!("no {MANIFEST_FILE} in {}", missing.display());
            (Vec::new(), Some(why))
        }
    };
    Ok(Comparison {
        metrics,
        unmatched,
        manifest_differences,
        manifest_missing,
    })
}

fn agreement(
    name: &str,
    a: &BTreeMap<u64, f64>,
    b: &BTreeMap<u64, f64>,
    tolerance: Tolerance,
) -> Option<MetricAgreement> {
    let mut m = MetricAgreement {
        metric: name.to_string(),
        steps: 0,
        max_relative_difference: 0.0,
        at_step: 0,
        first_beyond: None,
    };
    for (&step, &x) in a {
        let Some(&y) = b.get(&step) else { continue };
        m.steps += 1;
        let d = tolerance.relative_difference(x, y);
        if m.steps == 1 || d > m.max_relative_difference {
            (m.max_relative_difference, m.at_step) = (d, step);
        }
        if d > tolerance.rtol && m.first_beyond.is_none() {
            m.first_beyond = Some((step, x, y));
        }
    }
    (m.steps > 0).then_some(m)
}

/// `1-3, 7` for `[1, 2, 3, 7]`.
fn step_ranges(steps: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let mut j = i;
        while j + 1 < steps.len() && steps[j + 1] == steps[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            steps[i].to_string()
        } else {
            format!("{}-{}", steps[i], steps[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

fn read_metrics(run: &Path) -> Result<RunMetrics> {
    let path = run.join(METRICS_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Incomparable(format!("cannot read {}: {e}", path.display())))?;
    let mut metrics = RunMetrics::new();
    for (n, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON line", path.display(), n + 1))?;
        let Some(step) = v.get("step").and_then(Value::as_u64) else {
            continue;
        };
        let Some(fields) = v.as_object() else {
            continue;
        };
        for (key, value) in fields {
            if key == "step" || TIMINGS.contains(&key.as_str()) {
                continue;
            }
            if let Some(x) = value.as_f64() {
                metrics.entry(key.clone()).or_default().insert(step, x);
            }
        }
    }
    Ok(metrics)
}

fn read_manifest(run: &Path) -> Result<Option<Value>> {
    let path = run.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON document", path.display()))?;
    Ok(Some(value))
}

/// Manifest fields that differ between any two runs and say nothing about their results.
const CIRCUMSTANTIAL: &[&str] = &["started"];

/// `path: a → b` for every leaf where the two manifests differ, in path order (start times
/// aside).
fn manifest_differences(a: &Value, b: &Value) -> Vec<String> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", a, &mut fa);
    flatten("", b, &mut fb);
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let missing = "(none)".to_string();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .filter(|k| {
            !CIRCUMSTANTIAL
                .iter()
                .any(|c| k.rsplit('.').next() == Some(c))
        })
        .map(|k| {
            let (x, y) = (fa.get(k).unwrap_or(&missing), fb.get(k).unwrap_or(&missing));
            format!("{k}: {x} → {y}")
        })
        .collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&join(k), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), v, out);
            }
        }
        // Absent, as a missing key is: a CPU run's `adapter: null` against a GPU run's adapter
        // lists the adapter's fields, not a null.
        Value::Null => {}
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

/// The report `rrhf compare` prints.
pub fn report(c: &Comparison, tolerance: Tolerance) -> String {
    let mut s = format!(
        "{:<22} {:>6} {:>14} {:>8}  first step beyond rtol {:e}\n",
        "metric", "steps", "max rel diff", "at step", tolerance.rtol
    );
    for m in &c.metrics {
        let beyond = m.first_beyond.map_or("-".to_string(), |(step, a, b)| {
            format!("{step}: {a} vs {b}")
        });
        s += &format!(
            "{:<22} {:>6} {:>14.3e} {:>8}  {beyond}\n",
            m.metric, m.steps, m.max_relative_difference, m.at_step
        );
    }
    for u in &c.unmatched {
        s += &format!("not compared: {u}\n");
    }
    match &c.manifest_missing {
        Some(why) => s += &format!("manifests not compared: {why}\n"),
        None if c.manifest_differences.is_empty() => s += "manifests: no differences\n",
        None => {
            s += "manifests differ:\n";
            for d in &c.manifest_differences {
                s += &format!("  {d}\n");
            }
        }
    }
    s += if c.agrees() {
        "the runs agree within the tolerance\n"
    } else {
        "the runs differ beyond the tolerance\n"
    };
    s
}

/// The two runs' `loss` curves and their relative difference per step, as `(step, value)`.
pub fn loss_curves(a: &Path, b: &Path, tolerance: Tolerance) -> Result<[Vec<(f64, f64)>; 3]> {
    let (ma, mb) = (read_metrics(a)?, read_metrics(b)?);
    let empty = BTreeMap::new();
    let (la, lb) = (
        ma.get("loss").unwrap_or(&empty),
        mb.get("loss").unwrap_or(&empty),
    );
    let curve = |m: &BTreeMap<u64, f64>| m.iter().map(|(&s, &v)| (s as f64, v)).collect();
    let difference = la
        .iter()
        .filter_map(|(s, &x)| {
            lb.get(s)
                .map(|&y| (*s as f64, tolerance.relative_difference(x, y)))
        })
        .collect();
    Ok([curve(la), curve(lb), difference])
}

/// The run directories' names, for legends.
pub fn run_name(dir: &Path) -> String {
    let dir: PathBuf = dir.components().collect();
    dir.file_name()
        .map_or(dir.display().to_string(), |n| n.to_string_lossy().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        rtol: 1e-3,
        atol: 1e-6,
    };

    fn run(name: &str, lines: &[&str], manifest: Option<&str>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rrhf-compare-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(METRICS_FILE), lines.join("\n") + "\n").unwrap();
        if let Some(m) = manifest {
            std::fs::write(dir.join(MANIFEST_FILE), m).unwrap();
        }
        dir
    }

    #[test]
    fn relative_difference_has_an_absolute_floor() {
        assert_eq!(TOL.relative_difference(0.0, 1e-9), 0.0);
        assert_eq!(TOL.relative_difference(2.0, 2.0), 0.0);
        assert!((TOL.relative_difference(1.0, 1.01) - 0.01 / 1.01).abs() < 1e-12);
        assert_eq!(TOL.relative_difference(1.0, f64::NAN), f64::INFINITY);
    }

    #[test]
    fn finds_the_first_step_beyond_the_tolerance_and_the_manifest_fields_that_differ() {
        let a = run(
            "a",
            &[
                r#"{"step":0,"eval_loss":2.0}"#,
                r#"{"step":1,"loss":1.0,"grad_norm":3.0,"step_seconds":0.1}"#,
                r#"{"step":2,"loss":0.5,"grad_norm":2.0,"step_seconds":0.1}"#,
            ],
            Some(r#"{"seed":1,"device":{"name":"cpu"},"start":"x"}"#),
        );
        let b = run(
            "b",
            &[
                r#"{"step":0,"eval_loss":2.0000001}"#,
                r#"{"step":1,"loss":1.0000001,"grad_norm":3.0,"step_seconds":0.5}"#,
                r#"{"step":2,"loss":0.6,"grad_norm":2.0,"step_seconds":0.5}"#,
                r#"{"step":3,"loss":0.4,"grad_norm":1.0}"#,
            ],
            Some(r#"{"seed":1,"device":{"name":"lavapipe"}}"#),
        );
        let c = compare(&a, &b, TOL).unwrap();
        assert!(!c.agrees());
        let loss = c.metrics.iter().find(|m| m.metric == "loss").unwrap();
        assert_eq!(loss.steps, 2);
        assert_eq!(loss.first_beyond, Some((2, 0.5, 0.6)));
        assert_eq!(loss.at_step, 2);
        assert!((loss.max_relative_difference - 0.1 / 0.6).abs() < 1e-12);
        let eval = c.metrics.iter().find(|m| m.metric == "eval_loss").unwrap();
        assert_eq!(eval.first_beyond, None);
        assert!(c.metrics.iter().all(|m| m.metric != "step_seconds"));
        assert!(
            c.unmatched
                .iter()
                .any(|u| u.starts_with("loss: steps 3 only")),
            "{:?}",
            c.unmatched
        );
        assert_eq!(
            c.manifest_differences,
            vec![
                r#"device.name: "cpu" → "lavapipe""#.to_string(),
                r#"start: "x" → (none)"#.to_string()
            ],
            "`start` is not `started`, which is left out"
        );
        let report = report(&c, TOL);
        assert!(report.contains("differ beyond"), "{report}");
    }

    #[test]
    fn runs_without_a_common_step_cannot_be_compared() {
        let a = run("early", &[r#"{"step":1,"loss":1.0}"#], None);
        let b = run("late", &[r#"{"step":2,"loss":1.0}"#], None);
        let err = compare(&a, &b, TOL).unwrap_err();
        assert!(err.downcast_ref::<Incomparable>().is_some(), "{err:#}");
        let missing = compare(&a, Path::new("/nonexistent-run"), TOL).unwrap_err();
        assert!(
            format!("{missing:#}").contains("metrics.jsonl"),
            "{missing:#}"
        );
    }
}
