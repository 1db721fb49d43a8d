//! `<output.dir>/run.json`, the run's manifest: what produced it, so that a reviewer can see it
//! and `rrhf compare` can say what differs between two runs. Written (under a temporary name,
//! then renamed) when a run starts; a resume appends a record of its own to `records` rather than
//! overwriting, so the file says where and with what each stretch of the run was computed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::TrainConfig;
use super::run_dir::MANIFEST_FILE;
use crate::checkpoint::outputs::write_file_atomically;
use crate::device::SelectedDevice;

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
