//! `<output.dir>/run.json`, the run's manifest: what produced it, so that a reviewer can see it
//! and `rrhf compare` can say what differs between two runs. Written (under a temporary name,
//! then renamed) when a run starts; a resume appends a record of its own to `records` rather than
//! overwriting, so the file says where and with what each stretch of the run was computed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::TrainConfig;
use super::run_dir::MANIFEST_FILE;
use crate::checkpoint::outputs::write_file_atomically;
use crate::device::{DeviceChoice, SelectedDevice};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The resolved config: the file's values with every default filled in.
    pub config: Value,
    pub seed: u64,
    pub precision: String,
    /// sha256 of each input file: the training and eval data, the model's weights, config and
    /// tokenizer files (by path as the config names them).
    pub inputs: BTreeMap<String, String>,
    /// The run's first stretch, then one per resume.
    pub records: Vec<Record>,
}

/// Where and with what one stretch of the run (a start or a resume) was computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub started: String,
    /// The step the stretch starts from (0, or the resumed checkpoint's).
    pub from_step: usize,
    pub command_line: Vec<String>,
    /// Where the command ran: the config's relative paths are relative to it.
    #[serde(default)]
    pub working_dir: Option<String>,
    pub rrhf_version: String,
    /// The git commit rrhf was built from (`unknown` without git).
    pub rrhf_commit: String,
    /// burn, cubecl and wgpu, as Cargo.lock pinned them.
    pub libraries: BTreeMap<String, String>,
    pub device: DeviceRecord,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// What the run printed as `device:`.
    pub description: String,
    /// The wgpu adapter (backend, vendor name, driver, f16, compiler, cooperative matrices);
    /// none on the CPU path.
    pub adapter: Option<Value>,
    /// The host CPU, and the threads the CPU path computes on.
    pub cpu_model: Option<String>,
    pub cpu_threads: usize,
}

/// Writes `<dir>/run.json` for a run starting at `from_step`: a new manifest for a fresh run,
/// the existing one with a record added for a resume.
pub fn record_start(
    dir: &Path,
    config: &TrainConfig,
    device: &SelectedDevice,
    from_step: usize,
) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    let record = Record {
        started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        from_step,
        command_line: std::env::args().collect(),
        working_dir: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        rrhf_version: env!("CARGO_PKG_VERSION").into(),
        rrhf_commit: env!("RRHF_GIT_COMMIT").into(),
        libraries: env!("RRHF_LOCKED_VERSIONS")
            .split(',')
            .filter_map(|nv| nv.split_once('='))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        device: DeviceRecord {
            description: device.description.clone(),
            adapter: device.adapter.as_ref().map(|a| {
                let mut a = a.clone();
                if let Some((compiler, matrices)) =
                    crate::device::compiler_and_matrices(&device.device)
                {
                    (a.compiler, a.cooperative_matrices) = (Some(compiler), matrices);
                }
                serde_json::to_value(a).expect("an adapter serializes")
            }),
            cpu_model: crate::device::cpu_model(),
            cpu_threads: crate::device::cpu_threads(),
        },
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
    };
    let manifest = match (from_step, read(&path)?) {
        (0, _) | (_, None) => Manifest {
            config: serde_json::to_value(config).context("serializing the config")?,
            seed: config.train.seed,
            precision: format!("{:?}", config.train.precision).to_lowercase(),
            inputs: hash_inputs(config)?,
            records: vec![record],
        },
        (_, Some(mut manifest)) => {
            manifest.records.push(record);
            manifest
        }
    };
    let text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes") + "\n";
    write_file_atomically(&path, text.as_bytes())
}

/// The config to run the run in `run_dir` again from its run.json alone: into `out`, on `device`
/// if given, with `overrides` (e.g. a data file's path on this machine). Every input must hash
/// as run.json recorded, else it is an error naming the file, unless `allow_changed_inputs`
/// (then a warning).
pub fn reproduction(
    run_dir: &Path,
    out: &Path,
    device: Option<&DeviceChoice>,
    overrides: &[String],
    allow_changed_inputs: bool,
) -> Result<TrainConfig> {
    let path = run_dir.join(MANIFEST_FILE);
    let manifest = read(&path)?.with_context(|| {
        format!(
            "{}: no such file: `rrhf reproduce` takes the output.dir of a run made by rrhf 0.1 \
             or later",
            path.display()
        )
    })?;
    let recorded: TrainConfig = serde_json::from_value(manifest.config.clone())
        .with_context(|| format!("{}: field `config`", path.display()))?;
    let mut all = vec![format!("output.dir={:?}", out.display().to_string())];
    all.extend(device.map(|d| format!("train.device={:?}", d.to_string())));
    all.extend(overrides.iter().cloned());
    let config = recorded.with_overrides(&path, &all)?;
    let here = hash_inputs_where_run(&config, &manifest, &path)?;
    let changes = changed_inputs(&manifest.inputs, &here);
    if changes.is_empty() {
        return Ok(config);
    }
    if !allow_changed_inputs {
        bail!(
            "{}: the inputs are not those of the run:\n  {}\n(pass --allow-changed-inputs to \
             run on them anyway)",
            path.display(),
            changes.join("\n  ")
        );
    }
    for change in &changes {
        eprintln!("warning: {change}");
    }
    Ok(config)
}

/// [`hash_inputs`], with a missing input explained: relative paths resolve against the
/// directory the run was started in.
fn hash_inputs_where_run(
    config: &TrainConfig,
    manifest: &Manifest,
    path: &Path,
) -> Result<BTreeMap<String, String>> {
    for (what, input) in config.inputs() {
        if !input.exists() {
            let started_in = manifest
                .records
                .first()
                .and_then(|r| r.working_dir.as_deref())
                .unwrap_or("the directory it was started in");
            bail!(
                "{}: the run's {what} {} is not here: run from where the run ran ({started_in}) \
                 or point to it with --set",
                path.display(),
                input.display()
            );
        }
    }
    hash_inputs(config)
}

/// How the inputs `now` differ from those run.json `recorded`, one line per file. A file is
/// matched by its path, else by its name (an input moved elsewhere by `--set` is the same file
/// if its bytes are).
fn changed_inputs(
    recorded: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let name = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    };
    let mut unmatched: BTreeMap<&str, &str> =
        now.iter().map(|(p, h)| (p.as_str(), h.as_str())).collect();
    let mut changes = Vec::new();
    for (file, hash) in recorded {
        let found = match now.get_key_value(file) {
            Some((p, h)) => Some((p.as_str(), h.as_str())),
            None => unmatched
                .iter()
                .find(|(p, _)| name(p) == name(file))
                .map(|(p, h)| (*p, *h)),
        };
        match found {
            Some((p, h)) => {
                unmatched.remove(p);
                if h != hash {
                    changes.push(format!(
                        "{p}: sha256 {h}, but run.json recorded {hash} for {file}"
                    ));
                }
            }
            None => changes.push(format!("{file}: read by the run, not among the inputs now")),
        }
    }
    changes.extend(
        unmatched
            .keys()
            .map(|p| format!("{p}: an input now, not read by the run")),
    );
    changes
}

/// The manifest in `path`, if there is one.
pub fn read(path: &Path) -> Result<Option<Manifest>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a run manifest", path.display()))?;
    Ok(Some(manifest))
}

/// The files a run reads (`TrainConfig::inputs`), hashed; of a model directory, its
/// `.safetensors`, `.gguf`, `.json` and `.model` files (weights, config, tokenizer).
fn hash_inputs(config: &TrainConfig) -> Result<BTreeMap<String, String>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for (what, path) in config.inputs() {
        if !path.is_dir() {
            files.push(path.to_path_buf());
            continue;
        }
        let listing = std::fs::read_dir(path)
            .with_context(|| format!("cannot list the {what} directory {}", path.display()))?;
        let mut inside: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| ["safetensors", "gguf", "json", "model"].contains(&e))
            })
            .collect();
        inside.sort();
        files.extend(inside);
    }
    files
        .iter()
        .map(|f| Ok((f.display().to_string(), sha256_file(f)?)))
        .collect()
}

/// The sha256 of a file's bytes, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(p, h)| (p.to_string(), h.to_string()))
            .collect()
    }

    #[test]
    fn inputs_match_by_path_then_by_name_and_every_difference_is_named() {
        let recorded = inputs(&[("data/a.jsonl", "1"), ("m/model.safetensors", "2")]);
        // Moved by --set, same bytes: no change.
        let moved = inputs(&[("/elsewhere/a.jsonl", "1"), ("m/model.safetensors", "2")]);
        assert!(changed_inputs(&recorded, &moved).is_empty());
        let edited = inputs(&[("data/a.jsonl", "9"), ("m/model.safetensors", "2")]);
        assert_eq!(
            changed_inputs(&recorded, &edited),
            ["data/a.jsonl: sha256 9, but run.json recorded 1 for data/a.jsonl"]
        );
        let other = inputs(&[("data/b.jsonl", "1"), ("m/model.safetensors", "2")]);
        assert_eq!(
            changed_inputs(&recorded, &other),
            [
                "data/a.jsonl: read by the run, not among the inputs now",
                "data/b.jsonl: an input now, not read by the run"
            ]
        );
    }
}
