//! Helpers shared by the integration tests: fixture paths, the devices to test on, the `rrhf`
//! binary and the tiny training config, reading expected tensors, and a small GGUF writer
//! (tests write their own GGUF files).
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rrhf::device::{DeviceChoice, SelectedDevice, select};
use rrhf::train::TrainConfig;

/// The tiny model's training config: a few seconds a run.
pub const TINY_CONFIG: &str = "configs/tiny-test.toml";

/// [`TINY_CONFIG`] writing to `out` on `device`, with `extra` `--set` overrides.
pub fn tiny_config(out: &Path, device: &DeviceChoice, extra: &[&str]) -> TrainConfig {
    TrainConfig::load(Path::new(TINY_CONFIG), &tiny_overrides(out, device, extra)).unwrap()
}

/// The `--set` overrides of [`tiny_config`], for a run of `rrhf train` itself.
pub fn tiny_overrides(out: &Path, device: &DeviceChoice, extra: &[&str]) -> Vec<String> {
    let mut set = vec![
        format!("output.dir={:?}", out.display().to_string()),
        format!("train.device={:?}", device.to_string()),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    set
}

/// The binary under test: this build's, or `RRHF_BIN` (to show what another build does with the
/// same input, e.g. one from before a rule).
pub fn bin() -> String {
    std::env::var("RRHF_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rrhf").to_string())
}

/// `rrhf ARGS`, not yet run: for tests that add environment variables, pipes or a kill.
pub fn rrhf_command<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Command {
    let mut command = Command::new(bin());
    command.args(args);
    command
}

/// Runs `rrhf ARGS` to its end.
pub fn rrhf<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    rrhf_command(args).output().unwrap()
}

/// Runs `rrhf ARGS`, which must succeed: passes its stderr on and returns its stdout.
pub fn rrhf_ok<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    let args: Vec<S> = args.into_iter().collect();
    let out = rrhf(&args);
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        out.status.success(),
        "rrhf {shown:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failure with an `error:` line holding every one of `must_contain`, and no panic.
pub fn assert_refused(out: &Output, must_contain: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected a failure, got success: {err}"
    );
    assert!(err.contains("error:"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "a panic, not an error: {err}"
    );
    for s in must_contain {
        assert!(err.contains(s), "expected {s:?} in: {err}");
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The CPU path, plus wgpu's CPU adapter (lavapipe) when there is one. `RRHF_TEST_REQUIRE_WGPU=1`
/// (set by .ci/run) turns a missing adapter into a failure instead of a skipped device.
pub fn test_devices() -> Vec<SelectedDevice> {
    let mut out = vec![select(&DeviceChoice::Cpu).unwrap()];
    match select(&DeviceChoice::WgpuCpu) {
        Ok(d) => out.push(d),
        Err(e) if std::env::var("RRHF_TEST_REQUIRE_WGPU").is_ok_and(|v| v == "1") => {
            panic!("wgpu CPU adapter required but missing: {e}")
        }
        Err(e) => eprintln!("skipping the wgpu device: {e}"),
    }
    out
}

/// The devices to train on, as `train.device` choices (see `test_devices`).
pub fn train_devices() -> Vec<DeviceChoice> {
    test_devices()
        .iter()
        .map(|d| {
            if d.is_wgpu {
                DeviceChoice::WgpuCpu
            } else {
                DeviceChoice::Cpu
            }
        })
        .collect()
}

/// The lines of a run's metrics.jsonl.
pub fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The metrics that must repeat exactly: everything but the wall-clock figures.
pub fn deterministic(lines: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    lines
        .into_iter()
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            for timing in rrhf::compare::TIMINGS {
                o.remove(*timing);
            }
            v
        })
        .collect()
}

/// `(loss, grad_norm)` of each logged step of a run.
pub fn step_figures(dir: &Path) -> Vec<(f64, f64)> {
    metrics(dir)
        .into_iter()
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// All tensors of a safetensors file as (shape, f64 values).
pub fn read_safetensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let d = view.data();
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::U8 => d.iter().map(|&b| b as f64).collect(),
                other => panic!("unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

pub fn read_raw_bytes(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().to_vec()
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fresh directory under the target dir, removed first if it exists.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The newest checkpoint-N directory of `out`, if any.
pub fn newest_checkpoint(out: &Path) -> Option<usize> {
    std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("checkpoint-")?
                .parse::<usize>()
                .ok()
        })
        .max()
}

/// Writes GGUF version 3 files.
#[derive(Default)]
pub struct GgufWriter {
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

impl GgufWriter {
    pub fn string(&mut self, key: &str, v: &str) -> &mut Self {
        self.kv.push((key.into(), 8, gguf_string(v)));
        self
    }
    pub fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv.push((key.into(), 4, v.to_le_bytes().to_vec()));
        self
    }
    pub fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.kv.push((key.into(), 6, v.to_le_bytes().to_vec()));
        self
    }
    pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.kv.push((key.into(), 7, vec![v as u8]));
        self
    }
    pub fn strings(&mut self, key: &str, v: &[String]) -> &mut Self {
        let mut out = 8u32.to_le_bytes().to_vec();
        out.extend((v.len() as u64).to_le_bytes());
        for s in v {
            out.extend(gguf_string(s));
        }
        self.kv.push((key.into(), 9, out));
        self
    }
    pub fn i32s(&mut self, key: &str, v: &[i32]) -> &mut Self {
        let mut out = 5u32.to_le_bytes().to_vec();
        out.extend((v.len() as u64).to_le_bytes());
        for x in v {
            out.extend(x.to_le_bytes());
        }
        self.kv.push((key.into(), 9, out));
        self
    }
    /// A tensor of PyTorch shape `shape`, already encoded as ggml type `type_id`.
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        type_id: u32,
        bytes: Vec<u8>,
    ) -> &mut Self {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name.into(), dims, type_id, bytes));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            out.extend(gguf_string(k));
            out.extend(ty.to_le_bytes());
            out.extend(v);
        }
        let mut offset = 0u64;
        let mut offsets = vec![];
        for (name, dims, ty, bytes) in &self.tensors {
            out.extend(gguf_string(name));
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset += (bytes.len() as u64).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for (_, _, _, bytes) in &self.tensors {
            let start = out.len();
            out.extend(bytes);
            out.resize(start + bytes.len().div_ceil(32) * 32, 0);
        }
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).unwrap();
    }
}

pub fn encode_f32(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn encode_f16(data: &[f32]) -> Vec<u8> {
    data.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// ggml's reference Q8_0 quantiser: blocks of 32, scale = max|x| / 127.
pub fn quantize_q8_0(data: &[f32]) -> Vec<u8> {
    let mut out = vec![];
    for block in data.chunks(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|x| (x * inv).round() as i8 as u8));
    }
    out
}

/// Runs `rrhf train --config <config>` with `set` overrides in a process of its own, as a user's
/// run and its resume are, and panics with the run's stderr if it fails.
///
/// The resume tests compare whole and resumed runs made this way, not by calling `train` three
/// times in the test's process: there a resumed lavapipe run once differed from the whole run
/// in the last bit (CI: grad_norm at step 5 ending in ...839 against ...841). The cause is not
/// pinned down; the suspect is state burn's fusion keeps across runs in one process (the plans
/// it found), which can put a step's elementwise ops into other kernels that round differently.
/// Separate processes, with autotune's picks cached (see `device::configure_runtime`), give the
/// same bits.
pub fn train_in_own_process(
    config: &str,
    set: &[String],
    resume: Option<&Path>,
    stop_after: Option<usize>,
) {
    let mut command = rrhf_command(["train", "--config", config]);
    for s in set {
        command.args(["--set", s]);
    }
    if let Some(dir) = resume {
        command.arg("--resume").arg(dir);
    }
    if let Some(n) = stop_after {
        command.args(["--stop-after", &n.to_string()]);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "rrhf train {set:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
