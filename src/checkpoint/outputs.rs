//! Where commands write, and the rules that keep rrhf from destroying what it did not write.
//!
//! - Every file and directory is written under a temporary name beside its destination
//!   (`.NAME.tmp-PID`), flushed, and renamed into place: readers see the old one or the new one,
//!   and a crash (even `kill -9`) leaves the previous one whole.
//! - A directory a user names as `--out` (`convert`, `merge`) must be new or empty. With `--force`
//!   only the files rrhf itself writes there ([`is_model_file`]) are replaced or removed; any
//!   other file or folder in it is left as it was.
//! - An output that is, holds or lies inside one of the command's inputs is refused, and a file
//!   where a directory is wanted (or the reverse) is an error naming the path.
//! - What a killed writer left behind (`.NAME.tmp-PID`, `.NAME.old-PID`) is cleared away by the
//!   next run in that directory ([`clear_leftovers`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::model_dir::TOKENIZER_FILES;
use super::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use super::safetensors_dir::{INDEX_FILE, SINGLE_FILE};

/// Whether rrhf writes a file of this name into a model directory: config, weights (single,
/// sharded, adapters), tokenizer and generation files. `--force` replaces only these.
pub fn is_model_file(name: &str) -> bool {
    [
        "config.json",
        SINGLE_FILE,
        INDEX_FILE,
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
    ]
    .contains(&name)
        || TOKENIZER_FILES.contains(&name)
        || is_shard_name(name)
}

/// `model-00001-of-00003.safetensors`, as `write_weights` names shards.
fn is_shard_name(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("model-")
        .and_then(|r| r.strip_suffix(".safetensors"))
    else {
        return false;
    };
    match rest.split_once("-of-") {
        Some((a, b)) => [a, b]
            .iter()
            .all(|n| n.len() == 5 && n.bytes().all(|c| c.is_ascii_digit())),
        None => false,
    }
}

/// `path` made absolute with its existing part resolved (symbolic links, `..`), so that two
/// spellings of one place compare equal whether or not the place exists yet.
pub fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.clone();
    let mut missing = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => missing.push(name.to_os_string()),
            None => break,
        }
        if !existing.pop() {
            break;
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    out.extend(missing.into_iter().rev());
    out
}

/// Refuses an output that is, lies inside, or (unless `may_hold`) holds one of `inputs`, each
/// given with what it is (`("base model", dir)`): writing there could destroy what is read.
pub fn check_against_inputs(
    out: &Path,
    what_out: &str,
    inputs: &[(&str, &Path)],
    may_hold: bool,
) -> Result<()> {
    let o = resolved(out);
    for (what, input) in inputs {
        let i = resolved(input);
        if o == i {
            bail!(
                "{what_out} {} is the {what} this command reads; choose another",
                out.display()
            );
        }
        if o.starts_with(&i) {
            bail!(
                "{what_out} {} lies inside the {what} {}; choose a directory outside it",
                out.display(),
                input.display()
            );
        }
        if !may_hold && i.starts_with(&o) {
            bail!(
                "{what_out} {} holds the {what} {}, which this command reads; choose a \
                 directory that does not contain it",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// What is at a `--out` path the user named.
enum OutputDir {
    Missing,
    Empty,
    NotEmpty,
}

/// Checks a `--out` directory by the rules above, before any work is done: it must not overlap
/// an input, must not be a file, and must be new or empty unless `force`.
pub fn check_output_dir(out: &Path, inputs: &[(&str, &Path)], force: bool) -> Result<()> {
    output_dir_state(out, inputs, force).map(|_| ())
}

fn output_dir_state(out: &Path, inputs: &[(&str, &Path)], force: bool) -> Result<OutputDir> {
    check_against_inputs(out, "--out", inputs, false)?;
    let state = match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => bail!(
            "--out {} is a file, not a directory; choose a directory path",
            out.display()
        ),
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
            if entries.next().is_some() {
                OutputDir::NotEmpty
            } else {
                OutputDir::Empty
            }
        }
        Err(_) => OutputDir::Missing,
    };
    if matches!(state, OutputDir::NotEmpty) && !force {
        bail!(
            "--out {} exists and is not empty; choose a new directory, or add --force to \
             replace the model files rrhf writes there (config, weights, tokenizer; any other \
             file is kept)",
            out.display()
        );
    }
    Ok(state)
}

/// Writes a model directory at a path the user named (`--out`), by the rules above: `fill`
/// writes the files into a fresh temporary directory, which then becomes `out` (new or empty),
/// or, under `force`, whose files replace rrhf's own files in `out` (the others stay).
pub fn write_output_dir(
    out: &Path,
    inputs: &[(&str, &Path)],
    force: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    match output_dir_state(out, inputs, force)? {
        OutputDir::Missing => write_dir_atomically(out, fill),
        OutputDir::Empty => {
            std::fs::remove_dir(out)
                .with_context(|| format!("cannot replace {}", out.display()))?;
            write_dir_atomically(out, fill)
        }
        OutputDir::NotEmpty => replace_model_files(out, fill),
    }
}

/// `--force` into a non-empty directory: the new files are written beside it first, then each
/// replaces its namesake; rrhf's files that the new model no longer has (stale shards, an
/// adapter where a full model now is) are removed. Nothing else in `out` is touched.
fn replace_model_files(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_name(out, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = fill(&tmp).and_then(|_| sync_dir_files(&tmp)).and_then(|_| {
        let names = file_names(&tmp)?;
        for old in file_names(out)? {
            let path = out.join(&old);
            if is_model_file(&old) && !names.contains(&old) && path.is_file() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        for name in &names {
            let target = out.join(name);
            if target.is_dir() {
                bail!(
                    "{} is a directory where rrhf writes a file; move it away first",
                    target.display()
                );
            }
            std::fs::rename(tmp.join(name), &target)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&tmp);
    written
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// `.NAME.KIND-PID` beside `path`: the temporary (`tmp`) or set-aside (`old`) name of a write.
fn temporary_name(path: &Path, kind: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{kind}-{}", std::process::id()))
}

/// The parent directory of `path`, created if missing (`.` for a bare name).
fn parent_dir(path: &Path) -> Result<PathBuf> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    Ok(parent)
}

/// Fills a fresh temporary directory with `fill`, then swaps it in for `dir` (a directory of
/// rrhf's own, such as a run's checkpoint). A crash at any point leaves either the old directory
/// or the new one complete at `dir`, or, during the swap itself, both under their hidden names,
/// from which [`clear_leftovers`] restores the new one.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    dir.file_name()
        .with_context(|| format!("{}: not a directory name", dir.display()))?;
    parent_dir(dir)?;
    if dir.exists() && !dir.is_dir() {
        bail!(
            "{} is a file where rrhf writes a directory; move it away first",
            dir.display()
        );
    }
    let tmp = temporary_name(dir, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = fill(&tmp).and_then(|_| sync_dir_files(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = temporary_name(dir, "old");
        std::fs::rename(dir, &old)
            .with_context(|| format!("cannot move {} aside", dir.display()))?;
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    }
    Ok(())
}

/// Removes the directory `dir` (one of rrhf's own) so that it is never seen half removed: it is
/// renamed to a temporary name first, which [`clear_leftovers`] clears if a crash interrupts the
/// removal.
pub fn remove_dir_atomically(dir: &Path) -> Result<()> {
    let doomed = temporary_name(dir, "tmp");
    if doomed.exists() {
        remove_path(&doomed)?;
    }
    std::fs::rename(dir, &doomed).with_context(|| format!("cannot remove {}", dir.display()))?;
    remove_path(&doomed)
}

/// Flushes every file so the rename that follows never publishes half-written data.
fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)?.sync_all()?;
        }
    }
    Ok(())
}

/// Writes `contents` to a temporary name beside `path`, flushes it, and renames it into place:
/// readers see the old file or the new one, never half of one.
pub fn write_file_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    path.file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    if path.is_dir() {
        bail!(
            "{} is a directory where rrhf writes a file; choose a file path",
            path.display()
        );
    }
    parent_dir(path)?;
    let tmp = temporary_name(path, "tmp");
    let write = || -> Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.context(format!("cannot write {}", path.display()))
    })
}

/// JSON Lines, the format of every `.jsonl` file rrhf writes (`metrics.jsonl`, an online run's
/// `samples/round-N.jsonl`, the outputs of `sample`, `score` and `eval --answers`): one value a
/// line as compact JSON (serde_json's `to_string`), each line ended by `\n`.
pub struct JsonlWriter<W: Write> {
    out: W,
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Writes `value` as one line and returns the line's text (without its newline).
    pub fn write(&mut self, value: &impl Serialize) -> Result<String> {
        let line = serde_json::to_string(value)?;
        self.write_line(&line)?;
        Ok(line)
    }

    /// Writes a line that is JSON Lines already (one read back from such a file) as it is.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.out.write_all(&bytes)?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Writes `values` as a JSON Lines file ([`JsonlWriter`]) by [`write_file_atomically`].
pub fn write_jsonl_atomically<T: Serialize>(
    path: &Path,
    values: impl IntoIterator<Item = T>,
) -> Result<()> {
    let mut writer = JsonlWriter::new(Vec::new());
    for value in values {
        writer.write(&value)?;
    }
    write_file_atomically(path, &writer.into_inner())
}

/// A leftover of an interrupted write in a directory: `.NAME.tmp-PID` or `.NAME.old-PID`.
fn leftover(file_name: &str) -> Option<(&str, &str, u32)> {
    let rest = file_name.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once('-')?;
    let pid: u32 = pid.parse().ok()?;
    let (name, kind) = stem.rsplit_once('.')?;
    (["tmp", "old"].contains(&kind) && !name.is_empty()).then_some((name, kind, pid))
}

/// Clears what writers killed mid-write left in `dir` (the caller makes sure none of them is
/// still running, e.g. by holding the directory's run lock): temporary files and directories are
/// removed, and a directory set aside during a swap whose new version never arrived is put back
/// (or replaced by the new version, which was complete before the swap began). Returns how many
/// leftovers were cleared.
pub fn clear_leftovers(dir: &Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut found: Vec<(String, String, u32)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (target, kind, pid) = leftover(&name)?;
            (pid != std::process::id()).then(|| (target.to_string(), kind.to_string(), pid))
        })
        .collect();
    // Set-aside directories first: they may need their temporary twin.
    found.sort_by_key(|(_, kind, _)| kind != "old");
    let mut cleared = 0;
    for (target, kind, pid) in found {
        let at = dir.join(format!(".{target}.{kind}-{pid}"));
        if !at.exists() {
            continue;
        }
        let destination = dir.join(&target);
        if kind == "old" && !destination.exists() {
            let twin = dir.join(format!(".{target}.tmp-{pid}"));
            let restore = if twin.is_dir() { &twin } else { &at };
            std::fs::rename(restore, &destination).with_context(|| {
                format!(
                    "cannot restore {} from {}",
                    destination.display(),
                    restore.display()
                )
            })?;
        }
        if at.exists() {
            remove_path(&at)?;
        }
        cleared += 1;
    }
    Ok(cleared)
}

/// Removes a file or a directory tree.
pub fn remove_path(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.with_context(|| format!("cannot remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_file_names() {
        for name in [
            "config.json",
            "model.safetensors",
            "model-00002-of-00003.safetensors",
            "tokenizer.json",
            "adapter_model.safetensors",
        ] {
            assert!(is_model_file(name), "{name}");
        }
        for name in [
            "notes.txt",
            "model-1-of-3.safetensors",
            "data.jsonl",
            "config.toml",
        ] {
            assert!(!is_model_file(name), "{name}");
        }
    }

    #[test]
    fn leftover_names() {
        assert_eq!(
            leftover(".checkpoint-4.tmp-1234"),
            Some(("checkpoint-4", "tmp", 1234))
        );
        assert_eq!(
            leftover(".metrics.jsonl.tmp-7"),
            Some(("metrics.jsonl", "tmp", 7))
        );
        assert_eq!(leftover(".final.old-99"), Some(("final", "old", 99)));
        assert_eq!(leftover(".rrhf.lock"), None);
        assert_eq!(leftover("checkpoint-4"), None);
        assert_eq!(leftover(".x.tmp-abc"), None);
    }
}
