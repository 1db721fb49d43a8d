//! Data files as records: one JSON object per line of a JSONL file, or per row of a Parquet
//! file (how Hugging Face datasets are stored), chosen by the file's extension. Each record comes
//! with its number, and every error names the file and the line or row.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;

/// Whether `path` is read as Parquet (`.parquet`, `.pq`) rather than JSONL.
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"))
}

/// Where record `number` (1-based) of `path` is, for messages: `file:line` or `file: row N`.
pub fn location(path: &Path, number: usize) -> String {
    match is_parquet(path) {
        true => format!("{}: row {number}", path.display()),
        false => format!("{}:{number}", path.display()),
    }
}

/// Calls `each(record, number)` on every record of `path` in order, blank JSONL lines skipped;
/// errors are prefixed with the record's location. `what` names the file's role in messages.
/// A JSONL line may be at most `max_line_bytes` long, so memory stays in proportion to that.
pub fn for_each_record(
    path: &Path,
    what: &str,
    max_line_bytes: usize,
    mut each: impl FnMut(Value, usize) -> Result<()>,
) -> Result<()> {
    let mut count = 0;
    let mut counted = |value: Value, number: usize| {
        count += 1;
        each(value, number).with_context(|| location(path, number))
    };
    match is_parquet(path) {
        true => for_each_row(path, what, &mut counted)?,
        false => for_each_line(path, what, max_line_bytes, &mut counted)?,
    }
    if count == 0 {
        bail!("{}: no examples", path.display());
    }
    Ok(())
}

fn for_each_line(
    path: &Path,
    what: &str,
    max_line_bytes: usize,
    each: &mut dyn FnMut(Value, usize) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut bytes = Vec::new();
    for number in 1.. {
        bytes.clear();
        let at = location(path, number);
        (&mut reader)
            .take(max_line_bytes as u64 + 1)
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("cannot read {what} {at}"))?;
        if bytes.is_empty() {
            break;
        }
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        } else if bytes.len() > max_line_bytes {
            bail!(
                "{at}: the line is longer than {max_line_bytes} bytes (data.max_line_bytes); \
                 split it or raise the limit"
            );
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if number == 1 && bytes.starts_with(b"\xEF\xBB\xBF") {
            bail!(
                "{at}: the file starts with a byte-order mark (BOM, bytes EF BB BF); JSONL is \
                 UTF-8 without one: save it without the BOM"
            );
        }
        let line = std::str::from_utf8(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{at}: not valid UTF-8 (at byte {} of the line); JSONL must be UTF-8",
                e.valid_up_to() + 1
            )
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value = parse_json(line).with_context(|| at.clone())?;
        each(value, number)?;
    }
    Ok(())
}

fn parse_json(line: &str) -> Result<Value> {
    serde_json::from_str(line).map_err(|e| {
        // Python's json module writes NaN and Infinity, which JSON does not have.
        match ["NaN", "Infinity"].iter().any(|w| line.contains(w)) {
            true => anyhow::anyhow!(
                "not valid JSON ({e}); field `scores`: NaN and Infinity are not scores"
            ),
            false => anyhow::anyhow!("not valid JSON: {e}"),
        }
    })
}

/// Rows come one at a time through parquet's record reader (a row group's pages at a time), as
/// JSON objects: strings, numbers, lists and structs map onto their JSON kinds, so a row is
/// checked by the same rules as a JSONL line.
fn for_each_row(
    path: &Path,
    what: &str,
    each: &mut dyn FnMut(Value, usize) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| anyhow::anyhow!("{}: not a readable Parquet file: {e}", path.display()))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| anyhow::anyhow!("{}: cannot read its rows: {e}", path.display()))?;
    for (i, row) in rows.enumerate() {
        let number = i + 1;
        let row = row.map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot read it: {}",
                location(path, number),
                codec_hint(e)
            )
        })?;
        each(without_nulls(row.to_json_value()), number)?;
    }
    Ok(())
}

/// A table has every column in every row, so a column that a row's form does not use is null
/// there (a ranked row's `chosen`): null at the top of a row means absent, as in a JSONL line
/// that leaves the field out.
fn without_nulls(mut row: Value) -> Value {
    if let Value::Object(fields) = &mut row {
        fields.retain(|_, v| !v.is_null());
    }
    row
}

/// Parquet's message for a codec left out of this build, with what to do about it.
fn codec_hint(e: parquet::errors::ParquetError) -> String {
    let text = e.to_string();
    match text.contains("Disabled feature") || text.contains("not supported") {
        true => format!(
            "{text}; rrhf reads uncompressed and Snappy-compressed Parquet (pyarrow's and \
             Hugging Face datasets' default): rewrite it with \
             pyarrow.parquet.write_table(table, path, compression=\"snappy\")"
        ),
        false => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_say_line_or_row() {
        assert_eq!(location(Path::new("a.jsonl"), 3), "a.jsonl:3");
        assert_eq!(location(Path::new("a.Parquet"), 3), "a.Parquet: row 3");
    }
}
