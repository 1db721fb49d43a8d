//! Reading llama.cpp's GGUF files: metadata, tensor directory, and dequantisation to f32.
//!
//! Format (version 2 and 3, little-endian): magic `GGUF`, version, tensor count, metadata count,
//! the metadata key/values, the tensor infos (name, dims fastest-first, type, offset), then the
//! tensor data aligned to `general.alignment` (32 by default). Every read is bounds-checked, so a
//! truncated or corrupt file is an error that names the file and what was being read.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use half::{bf16, f16};
use memmap2::Mmap;

use crate::model::HostTensor;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            // Through its shortest decimal form, so 1e-5 stays 1e-5 rather than 9.99999974e-6.
            Value::F32(v) => v.to_string().parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The ggml tensor types rrhf can dequantise, with their ids in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::BF16 => 30,
        }
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
        }
    }
}

/// Names of ggml types rrhf does not read, for error messages.
fn ggml_type_name(id: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (9, "Q8_1"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
    ];
    NAMES
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(format!("type id {id}"), |(_, n)| n.to_string())
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: fastest-varying first (a PyTorch `[out, in]` weight is `[in, out]` here).
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in PyTorch order.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The element count, or `None` when it overflows.
    pub fn num_elements(&self) -> Option<usize> {
        self.dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    map: Mmap,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
    alignment: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.with_context(|| {
            format!(
                "file ends at byte {} while {n} more were expected (truncated?)",
                self.bytes.len()
            )
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    /// A count that must fit in what is left of the file, at `min_size` bytes per item.
    fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        ensure!(
            n.saturating_mul(min_size as u64) <= left,
            "a count of {n} items cannot fit in the {left} bytes left (truncated?)"
        );
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.count(1)?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    fn value(&mut self, type_id: u32) -> Result<Value> {
        Ok(match type_id {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::String(self.string()?),
            9 => {
                let elem = self.u32()?;
                let n = self.count(1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => bail!("unknown metadata value type {other}"),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: opened read-only; the file is not modified while mapped by this process.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        Self::parse(path, map)
            .with_context(|| format!("{}: not a readable GGUF file", path.display()))
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self> {
        let mut c = Cursor {
            bytes: &map,
            pos: 0,
        };
        let magic = c.take(4).context("reading the magic number")?;
        ensure!(
            magic == b"GGUF",
            "bad magic {:?} (expected \"GGUF\")",
            String::from_utf8_lossy(magic)
        );
        let version = c.u32()?;
        ensure!(
            (2..=3).contains(&version),
            "GGUF version {version} is not supported (2 or 3)"
        );
        let n_tensors = c.count(24)?;
        let n_kv = c.count(12)?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c
                .string()
                .with_context(|| format!("reading metadata key #{i}"))?;
            let ty = c
                .u32()
                .with_context(|| format!("reading the type of metadata `{key}`"))?;
            let value = c
                .value(ty)
                .with_context(|| format!("reading metadata `{key}`"))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c
                .string()
                .with_context(|| format!("reading the name of tensor #{i}"))?;
            let info = (|| -> Result<TensorInfo> {
                let n_dims = c.u32()? as usize;
                ensure!((1..=4).contains(&n_dims), "{n_dims} dimensions");
                let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
                let type_id = c.u32()?;
                let offset = c.u64()?;
                Ok(TensorInfo {
                    name: name.clone(),
                    dims,
                    type_id,
                    offset,
                })
            })()
            .with_context(|| format!("reading tensor info `{name}`"))?;
            tensors.push(info);
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32) as usize;
        ensure!(
            alignment.is_power_of_two(),
            "field `general.alignment` is {alignment}, not a power of two"
        );
        let data_start = c
            .pos
            .checked_next_multiple_of(alignment)
            .context("the tensor data would start past the end of the address space")?;
        let file = Self {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors,
            data_start,
            alignment,
        };
        for t in &file.tensors {
            if let Some(ty) = GgmlType::from_id(t.type_id) {
                file.data_range(t, ty)?;
            }
        }
        Ok(file)
    }

    /// Where tensor `t`'s data lies in the file, every step of the arithmetic checked: the
    /// offset must be aligned, and the bytes its type and shape need must lie inside the file.
    fn data_range(&self, t: &TensorInfo, ty: GgmlType) -> Result<std::ops::Range<usize>> {
        let (block, bytes) = ty.block();
        let n = t
            .num_elements()
            .with_context(|| format!("tensor `{}`: the shape {:?} overflows", t.name, t.dims))?;
        ensure!(
            t.dims[0] % block as u64 == 0,
            "tensor `{}`: rows of {} elements do not divide into {ty:?} blocks of {block}",
            t.name,
            t.dims[0]
        );
        let size = (n / block).checked_mul(bytes);
        let start = usize::try_from(t.offset)
            .ok()
            .and_then(|o| self.data_start.checked_add(o));
        let end = start.zip(size).and_then(|(s, n)| s.checked_add(n));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.map.len() => {
                ensure!(
                    t.offset % self.alignment as u64 == 0,
                    "tensor `{}`: offset {} is not a multiple of the alignment {}",
                    t.name,
                    t.offset,
                    self.alignment
                );
                Ok(start..end)
            }
            _ => bail!(
                "tensor `{}` (offset {}, {n} {ty:?} elements) lies past the end of the file \
                 (truncated?)",
                t.name,
                t.offset
            ),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A metadata value that must be present, with an error naming the file and the key.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .with_context(|| format!("{}: missing metadata field `{key}`", self.path.display()))
    }

    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?.as_u64().with_context(|| {
            format!(
                "{}: metadata field `{key}` is not an integer",
                self.path.display()
            )
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor `name` as f32, in PyTorch shape.
    pub fn read_f32(&self, name: &str) -> Result<HostTensor> {
        let t = self
            .tensor(name)
            .with_context(|| format!("{}: missing tensor `{name}`", self.path.display()))?;
        let ty = GgmlType::from_id(t.type_id).with_context(|| {
            format!(
                "{}: tensor `{name}` has ggml type {}, which rrhf cannot dequantise \
                 (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                self.path.display(),
                ggml_type_name(t.type_id)
            )
        })?;
        let range = self
            .data_range(t, ty)
            .with_context(|| self.path.display().to_string())?;
        Ok(HostTensor::new(t.shape(), dequantize(&self.map[range], ty)))
    }
}

/// Dequantises whole blocks of `ty` to f32, following ggml's reference `dequantize_row_*`.
pub fn dequantize(bytes: &[u8], ty: GgmlType) -> Vec<f32> {
    let (block, size) = ty.block();
    let mut out = Vec::with_capacity(bytes.len() / size * block);
    let half = |b: &[u8], at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    for b in bytes.chunks_exact(size) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes(b.try_into().unwrap())),
            GgmlType::F16 => out.push(half(b, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = half(b, 0);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
            GgmlType::Q4_0 => {
                let d = half(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| d * ((q & 0xF) as f32 - 8.0)));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as f32 - 8.0)));
            }
            GgmlType::Q4_1 => {
                let (d, m) = (half(b, 0), half(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| d * (q & 0xF) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, rest) = if ty == GgmlType::Q5_0 {
                    (half(b, 0), None, &b[2..])
                } else {
                    (half(b, 0), Some(half(b, 2)), &b[4..])
                };
                let qh = u32::from_le_bytes(rest[0..4].try_into().unwrap());
                let qs = &rest[4..20];
                let value = |q: u32| match m {
                    None => d * (q as f32 - 16.0),
                    Some(m) => d * q as f32 + m,
                };
                let low: Vec<f32> = (0..16)
                    .map(|j| value((qs[j] as u32 & 0xF) | (((qh >> j) << 4) & 0x10)))
                    .collect();
                let high: Vec<f32> = (0..16)
                    .map(|j| value((qs[j] as u32 >> 4) | ((qh >> (j + 12)) & 0x10)))
                    .collect();
                out.extend(low);
                out.extend(high);
            }
            GgmlType::Q2K => dequant_q2k(b, &mut out),
            GgmlType::Q3K => dequant_q3k(b, &mut out),
            GgmlType::Q4K | GgmlType::Q5K => dequant_q45k(b, ty == GgmlType::Q5K, &mut out),
            GgmlType::Q6K => dequant_q6k(b, &mut out),
        }
    }
    out
}

/// The 6-bit scale and min number `j` of the 12 packed bytes of a Q4_K/Q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

fn dequant_q45k(b: &[u8], five_bit: bool, out: &mut Vec<f32>) {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
    let scales = &b[4..16];
    let (qh, qs) = if five_bit {
        (&b[16..48], &b[48..176])
    } else {
        (&b[0..0], &b[16..144])
    };
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        for (half, shift) in [(0usize, 0u8), (1, 4)] {
            let (sc, m) = scale_min_k4(2 * chunk + half, scales);
            let (dl, ml) = (d * sc, dmin * m);
            let bit = 1u8 << (2 * chunk + half);
            for l in 0..32 {
                let mut v = ((q[l] >> shift) & 0xF) as f32;
                if five_bit && qh[l] & bit != 0 {
                    v += 16.0;
                }
                out.push(dl * v - ml);
            }
        }
    }
}

fn dequant_q6k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
    for n in 0..2 {
        let (ql, qh, sc) = (&ql[n * 64..], &qh[n * 32..], &sc[n * 8..]);
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
        out.extend_from_slice(&y);
    }
}

fn dequant_q2k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let d = f16::from_le_bytes([b[80], b[81]]).to_f32();
    let dmin = f16::from_le_bytes([b[82], b[83]]).to_f32();
    let mut is = 0;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        for shift in [0u8, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                for l in 0..16 {
                    out.push(dl * ((q[part * 16 + l] >> shift) & 3) as f32 - ml);
                }
            }
        }
    }
}

fn dequant_q3k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16::from_le_bytes([b[108], b[109]]).to_f32();
    // Unpack sixteen 6-bit scales from 12 bytes, as ggml does with 32-bit masks.
    let word = |i: usize| u32::from_le_bytes(packed[i * 4..i * 4 + 4].try_into().unwrap());
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let aux = [
        (a0 & k2) | ((tmp & k1) << 4),
        (a1 & k2) | (((tmp >> 2) & k1) << 4),
        ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
        ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
    ];
    let scales: Vec<i32> = aux
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|s| s as i8 as i32 - 32)
        .collect();
    let mut is = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        for shift in [0u8, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in part * 16..part * 16 + 16 {
                    let low = ((q[l] >> shift) & 3) as i32;
                    let high = if hmask[l] & m != 0 { 0 } else { 4 };
                    out.push(dl * (low - high) as f32);
                }
            }
            m <<= 1;
        }
    }
}
