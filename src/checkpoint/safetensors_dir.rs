//! Weights in the Hugging Face layout: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Files are memory-mapped and each tensor is converted to f32
//! only when the model asks for it, so a bf16 checkpoint never has a second full copy on the host.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use serde_json::json;

use crate::model::HostTensor;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The dtype weights are written in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    F32,
    Bf16,
    F16,
}

impl SaveDtype {
    /// The name config.json uses for it.
    pub fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::Bf16 => "bfloat16",
            SaveDtype::F16 => "float16",
        }
    }

    fn safetensors_dtype(self) -> Dtype {
        match self {
            SaveDtype::F32 => Dtype::F32,
            SaveDtype::Bf16 => Dtype::BF16,
            SaveDtype::F16 => Dtype::F16,
        }
    }

    fn encode(self, data: &[f32]) -> Vec<u8> {
        match self {
            SaveDtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            SaveDtype::Bf16 => data
                .iter()
                .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
                .collect(),
            SaveDtype::F16 => data
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect(),
        }
    }

    fn size(self) -> usize {
        if self == SaveDtype::F32 { 4 } else { 2 }
    }
}

struct Shard {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

/// The safetensors files of one checkpoint directory, opened and indexed.
pub struct SafetensorsFiles {
    shards: Vec<Shard>,
    /// Tensor name to shard number.
    location: HashMap<String, usize>,
}

impl SafetensorsFiles {
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let files = if single.exists() {
            vec![single]
        } else if index.exists() {
            shard_files(&index)?
        } else {
            bail!("{}: no {SINGLE_FILE} or {INDEX_FILE}", dir.display());
        };
        Self::open_files(files)
    }

    /// One safetensors file by its path (an adapter's `adapter_model.safetensors`).
    pub fn open_file(path: &Path) -> Result<Self> {
        Self::open_files(vec![path.to_path_buf()])
    }

    fn open_files(files: Vec<PathBuf>) -> Result<Self> {
        let mut shards = Vec::new();
        let mut location = HashMap::new();
        for path in files {
            let shard = open_shard(&path)?;
            for name in shard.tensors.keys() {
                location.insert(name.clone(), shards.len());
            }
            shards.push(shard);
        }
        Ok(Self { shards, location })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.location.keys().map(String::as_str)
    }

    /// The tensor `name` converted to f32.
    pub fn read_f32(&self, name: &str) -> Result<HostTensor> {
        let &shard_no = self.location.get(name).with_context(|| {
            format!(
                "{}: missing tensor `{name}`",
                self.shards
                    .first()
                    .map_or("?".into(), |s| s.path.display().to_string())
            )
        })?;
        let shard = &self.shards[shard_no];
        let info = &shard.tensors[name];
        let (begin, end) = info.data_offsets;
        // The safetensors crate checked offsets and sizes against dtype, shape and file length
        // when the shard was opened; the range is taken checked all the same.
        let bytes = shard
            .data_start
            .checked_add(begin)
            .zip(shard.data_start.checked_add(end))
            .and_then(|(b, e)| shard.map.get(b..e))
            .with_context(|| {
                format!(
                    "{}: tensor `{name}` lies outside the file",
                    shard.path.display()
                )
            })?;
        let data = decode_f32(bytes, info.dtype)
            .with_context(|| format!("{}: tensor `{name}`", shard.path.display()))?;
        Ok(HostTensor::new(info.shape.clone(), data))
    }
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", index.display()))?;
    let map = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: missing field `weight_map`", index.display()))?;
    let mut files: Vec<String> = map
        .values()
        .map(|v| v.as_str().map(String::from))
        .collect::<Option<_>>()
        .with_context(|| {
            format!(
                "{}: field `weight_map` has a non-string file name",
                index.display()
            )
        })?;
    files.sort();
    files.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the file is opened read-only and not modified while mapped by this process.
    let map =
        unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
    let (header_len, metadata): (usize, Metadata) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| {
        anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display())
    })?;
    let data_start = 8 + header_len;
    let data_len = map.len().saturating_sub(data_start);
    let tensors: HashMap<String, TensorInfo> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.clone()))
        .collect();
    if let Some((name, _)) = tensors.iter().find(|(_, i)| i.data_offsets.1 > data_len) {
        bail!(
            "{}: tensor `{name}` lies past the end of the file (truncated?)",
            path.display()
        );
    }
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        data_start,
        tensors,
    })
}

fn decode_f32(bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        other => bail!("dtype {other:?} is not a float type rrhf can load (F32, F16, BF16, F64)"),
    })
}

/// Writes `tensors` as `model.safetensors`, or as numbered shards plus an index when they are
/// larger than `max_shard_bytes` together.
pub fn write_weights(
    dir: &Path,
    tensors: &[(String, HostTensor)],
    dtype: SaveDtype,
    max_shard_bytes: usize,
) -> Result<()> {
    let mut shards: Vec<Vec<usize>> = vec![vec![]];
    let mut current = 0usize;
    for (i, (_, t)) in tensors.iter().enumerate() {
        let bytes = t.data.len() * dtype.size();
        if current > 0 && current + bytes > max_shard_bytes {
            shards.push(vec![]);
            current = 0;
        }
        shards.last_mut().unwrap().push(i);
        current += bytes;
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (s, members) in shards.iter().enumerate() {
        let file = if n == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", s + 1)
        };
        let members: Vec<&(String, HostTensor)> = members.iter().map(|&i| &tensors[i]).collect();
        total += write_file(&dir.join(&file), &members, dtype)?;
        for (name, _) in members {
            weight_map.insert(name.clone(), file.clone());
        }
    }
    if n > 1 {
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        std::fs::write(dir.join(INDEX_FILE), serde_json::to_string_pretty(&index)?)?;
    }
    Ok(())
}

/// Writes `tensors` into one safetensors file at `path`; returns the bytes of tensor data.
pub fn write_file(
    path: &Path,
    tensors: &[&(String, HostTensor)],
    dtype: SaveDtype,
) -> Result<usize> {
    // A NaN or infinite weight is a broken model: refusing to write it keeps the last good one.
    if let Some((name, t)) = tensors
        .iter()
        .find(|(_, t)| t.data.iter().any(|x| !x.is_finite()))
    {
        let bad = t.data.iter().filter(|x| !x.is_finite()).count();
        bail!(
            "{}: tensor `{name}` has {bad} non-finite values (NaN or infinite); not written",
            path.display()
        );
    }
    if dtype == SaveDtype::F16
        && let Some((name, _)) = tensors
            .iter()
            .find(|(_, t)| t.data.iter().any(|x| x.abs() > f16::MAX.to_f32()))
    {
        bail!(
            "{}: tensor `{name}` has values beyond f16's range (±65504), which would be written \
             as infinities; save in bf16 or f32",
            path.display()
        );
    }
    let encoded: Vec<(&str, Vec<u8>, &HostTensor)> = tensors
        .iter()
        .map(|(name, t)| (name.as_str(), dtype.encode(&t.data), t))
        .collect();
    let views = encoded
        .iter()
        .map(|(name, bytes, t)| {
            let view = safetensors::tensor::TensorView::new(
                dtype.safetensors_dtype(),
                t.shape.clone(),
                bytes,
            )?;
            Ok((name.to_string(), view))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    safetensors::serialize_to_file(views, metadata, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(encoded.iter().map(|(_, bytes, _)| bytes.len()).sum())
}
