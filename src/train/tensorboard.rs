//! TensorBoard event files (`output.tensorboard = true`): every numeric field of every
//! metrics.jsonl line, as a scalar named by the field, under `<output.dir>/tensorboard/`.
//!
//! An event file is a sequence of TFRecords, each holding one serialized `tensorflow.Event`
//! protobuf. The few protobuf fields TensorBoard needs for scalars are encoded here by hand
//! (see [`encode_event`]), so the build needs no protobuf code generator.
//!
//! The directory mirrors metrics.jsonl: when a run (re)starts, [`EventWriter::rewrite`] writes one
//! fresh file holding the lines metrics.jsonl kept, and only then removes the older event files,
//! so a crash at any point leaves at least one whole event file and never a duplicated step.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// What TensorBoard's loader recognises an event file by: `events.out.tfevents.` in its name.
const FILE_PREFIX: &str = "events.out.tfevents.";
/// The first event of every file: the format version TensorBoard's reader expects.
const FILE_VERSION: &str = "brain.Event:2";

/// An open event file, appended to one record per metrics line.
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Starts `dir` over with one new event file holding the scalars of `kept` (the metrics lines
    /// a resumed run keeps; none for a fresh run), then removes the other event files in it.
    pub fn rewrite(dir: &Path, kept: &[serde_json::Value]) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = format!("{FILE_PREFIX}{}.{}", unix_seconds(), hostname());
        let path = dir.join(&name);
        let mut bytes = record(&encode_event(
            wall_time(),
            0,
            &Body::FileVersion(FILE_VERSION),
        ));
        for line in kept {
            if let Some((step, scalars)) = scalars_of(line) {
                bytes.extend(record(&encode_event(
                    wall_time(),
                    step,
                    &Body::Scalars(&scalars),
                )));
            }
        }
        // Written whole under a temporary name (which the run directory clears if a crash leaves
        // it) and renamed into place: the old files stay until the new one is there.
        crate::checkpoint::write_file_atomically(&path, &bytes)?;
        remove_other_event_files(dir, &name)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot append to {}", path.display()))?;
        Ok(Self { file, path })
    }

    /// Appends the scalars of one metrics line (if it has a step and any number), flushed so a
    /// crash loses nothing written.
    pub fn write(&mut self, line: &serde_json::Value) -> Result<()> {
        let Some((step, scalars)) = scalars_of(line) else {
            return Ok(());
        };
        let bytes = record(&encode_event(wall_time(), step, &Body::Scalars(&scalars)));
        // One write per record: an interrupted run leaves at most a cut-off last record, which
        // TensorBoard's reader skips.
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// A metrics line's step and its scalars: every numeric field but `step`, as f32 (TensorBoard's
/// `simple_value`). None without a step or without a number besides it.
pub fn scalars_of(line: &serde_json::Value) -> Option<(i64, Vec<(String, f32)>)> {
    let object = line.as_object()?;
    let step = i64::try_from(object.get("step")?.as_u64()?).ok()?;
    let scalars: Vec<(String, f32)> = object
        .iter()
        .filter(|(key, _)| *key != "step")
        .filter_map(|(key, value)| Some((key.clone(), value.as_f64()? as f32)))
        .collect();
    (!scalars.is_empty()).then_some((step, scalars))
}

/// Removes the event files of `dir` other than `keep`; other files are not rrhf's to remove.
fn remove_other_event_files(dir: &Path, keep: &str) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_PREFIX) && name != keep && entry.path().is_file() {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An event's `wall_time`: seconds since the epoch, as TensorBoard's relative-time axis wants.
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The machine's name, for the event file's name as TensorFlow's writers name them; characters
/// other than letters, digits, `-`, `_` and `.` become `_` so the name stays one path component.
fn hostname() -> String {
    let raw = raw_hostname().unwrap_or_default();
    let clean: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

#[cfg(unix)]
fn raw_hostname() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for the length passed, and gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    Some(String::from_utf8_lossy(&buffer[..end]).into_owned())
}

#[cfg(not(unix))]
fn raw_hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

// ---- TFRecord framing -------------------------------------------------------------------------

/// One TFRecord: the data's length (u64, little-endian), the masked CRC-32C of those 8 bytes,
/// the data, and the masked CRC-32C of the data.
pub fn record(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant, because a CRC of data
/// that holds CRCs is weak (TensorFlow's `crc32c::Mask`).
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

// ---- The protobuf subset ------------------------------------------------------------------------

/// What an event carries besides its time and step.
pub enum Body<'a> {
    /// `Event.file_version` (field 3): the first event of a file.
    FileVersion(&'a str),
    /// `Event.summary` (field 5): a `Summary` of `(tag, simple_value)` scalars.
    Scalars(&'a [(String, f32)]),
}

/// Protobuf wire types: how the bytes after a field's key are to be read.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

/// A serialized `tensorflow.Event`: `wall_time` (field 1, double), `step` (field 2, int64) and
/// the body. Fields are written in number order, as protobuf's own encoders do.
pub fn encode_event(wall_time: f64, step: i64, body: &Body) -> Vec<u8> {
    let mut out = Vec::new();
    put_key(&mut out, 1, FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut out, 2, VARINT);
    // int64 is encoded as the varint of its two's-complement u64.
    put_varint(&mut out, step as u64);
    match body {
        Body::FileVersion(version) => put_bytes(&mut out, 3, version.as_bytes()),
        Body::Scalars(scalars) => put_bytes(&mut out, 5, &encode_summary(scalars)),
    }
    out
}

/// A serialized `tensorflow.Summary`: one `value` (field 1, repeated) per scalar, each a
/// `Summary.Value` of `tag` (field 1, string) and `simple_value` (field 2, float).
fn encode_summary(scalars: &[(String, f32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, value) in scalars {
        let mut item = Vec::new();
        put_bytes(&mut item, 1, tag.as_bytes());
        put_key(&mut item, 2, FIXED32);
        item.extend_from_slice(&value.to_le_bytes());
        put_bytes(&mut out, 1, &item);
    }
    out
}

/// A field's key: its number and wire type in one varint.
fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// A length-delimited field: key, the length as a varint, then the bytes.
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LENGTH_DELIMITED);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A varint: 7 bits per byte, least significant first, the high bit set on all but the last.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// CRC-32C's check value and RFC 3720's (iSCSI) test vectors: the polynomial, not CRC-32's.
    #[test]
    fn crc32c_matches_known_vectors() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        // The mask by its definition, on a value whose rotation is easy to see.
        let crc = crc32c::crc32c(b"123456789");
        let by_hand = ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc(b"123456789"), by_hand);
    }

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        let encode = |v: u64| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(1), [0x01]);
        assert_eq!(encode(127), [0x7f]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(u64::MAX).len(), 10);
    }

    /// A reader written from the format's description, independent of the writer's helpers.
    fn read_records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mask = |crc: u32| ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
            assert_eq!(
                len_crc,
                mask(crc32c::crc32c(&bytes[..8])),
                "length checksum"
            );
            let data = &bytes[12..12 + len];
            let data_crc = u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap());
            assert_eq!(data_crc, mask(crc32c::crc32c(data)), "data checksum");
            out.push(data.to_vec());
            bytes = &bytes[16 + len..];
        }
        out
    }

    fn read_varint(bytes: &mut &[u8]) -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let b = bytes[0];
            *bytes = &bytes[1..];
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    /// A protobuf message's fields as (number, raw payload) pairs; varints as their value's bytes.
    fn read_fields(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let key = read_varint(&mut bytes);
            let payload = match key & 7 {
                0 => read_varint(&mut bytes).to_le_bytes().to_vec(),
                1 => take(&mut bytes, 8),
                2 => {
                    let len = read_varint(&mut bytes) as usize;
                    take(&mut bytes, len)
                }
                5 => take(&mut bytes, 4),
                other => panic!("unexpected wire type {other}"),
            };
            out.push((key >> 3, payload));
        }
        out
    }

    fn take(bytes: &mut &[u8], n: usize) -> Vec<u8> {
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        head.to_vec()
    }

    #[test]
    fn an_event_file_reads_back_field_by_field() {
        let line = json!({"step": 300, "loss": 0.25, "rank_loss": 1.5, "note": "x", "eval": null});
        let (step, scalars) = scalars_of(&line).unwrap();
        assert_eq!(step, 300);
        let mut bytes = record(&encode_event(12.5, 0, &Body::FileVersion(FILE_VERSION)));
        bytes.extend(record(&encode_event(13.0, step, &Body::Scalars(&scalars))));
        let records = read_records(&bytes);
        assert_eq!(records.len(), 2);

        let first = read_fields(&records[0]);
        assert_eq!(first[0], (1, 12.5f64.to_le_bytes().to_vec()));
        assert_eq!(first[2], (3, FILE_VERSION.as_bytes().to_vec()));

        let second = read_fields(&records[1]);
        assert_eq!(second[0], (1, 13.0f64.to_le_bytes().to_vec()));
        assert_eq!(second[1], (2, 300u64.to_le_bytes().to_vec()));
        assert_eq!(second[2].0, 5);
        let values: Vec<(String, f32)> = read_fields(&second[2].1)
            .into_iter()
            .map(|(field, value)| {
                assert_eq!(field, 1, "Summary.value");
                let parts = read_fields(&value);
                assert_eq!((parts[0].0, parts[1].0), (1, 2));
                let tag = String::from_utf8(parts[0].1.clone()).unwrap();
                (tag, f32::from_le_bytes(parts[1].1[..].try_into().unwrap()))
            })
            .collect();
        // Numbers only, `step` not among them.
        assert_eq!(
            values,
            [("loss".to_string(), 0.25), ("rank_loss".to_string(), 1.5)]
        );
    }

    #[test]
    fn lines_without_a_step_or_a_number_give_no_event() {
        assert!(scalars_of(&json!({"loss": 1.0})).is_none());
        assert!(scalars_of(&json!({"step": 3, "note": "x"})).is_none());
        assert!(scalars_of(&json!([1, 2])).is_none());
    }

    #[test]
    fn rewrite_leaves_one_file_with_the_kept_lines() {
        let dir = std::env::temp_dir().join(format!("rrhf-tb-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("events.out.tfevents.1.old"), b"stale").unwrap();
        std::fs::write(dir.join("notes.txt"), b"the user's").unwrap();
        let mut writer = EventWriter::rewrite(&dir, &[json!({"step": 1, "loss": 2.0})]).unwrap();
        writer.write(&json!({"step": 2, "loss": 1.0})).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[1], "notes.txt");
        assert!(names[0].starts_with(FILE_PREFIX) && names[0] != "events.out.tfevents.1.old");
        let records = read_records(&std::fs::read(dir.join(&names[0])).unwrap());
        let steps: Vec<Vec<u8>> = records[1..]
            .iter()
            .map(|r| read_fields(r)[1].1.clone())
            .collect();
        assert_eq!(
            steps,
            [1u64.to_le_bytes().to_vec(), 2u64.to_le_bytes().to_vec()]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
