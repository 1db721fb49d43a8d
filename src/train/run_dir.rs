//! A training run's output directory: one run per directory, and one process per run.
//!
//! - While a run lives, it holds an exclusive lock on `<dir>/.rrhf.lock` (which records its pid).
//!   The operating system releases the lock when the process ends, however it ends, so a lock
//!   file left by a dead process is simply taken over; of two runs started at once, one runs and
//!   the other is refused with the pid of the first.
//! - A fresh run into a directory that holds another run's files (metrics, checkpoints, `final/`,
//!   samples, plot, TensorBoard events) is refused with how to resume it; `--force` starts over,
//!   removing only those files (never the user's others), and never one that this run reads.
//! - Leftovers of writes that a `kill -9` interrupted (`.checkpoint-N.tmp-PID`) are cleared at
//!   every start and resume (`checkpoint::outputs::clear_leftovers`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::checkpoint::outputs::{check_against_inputs, clear_leftovers, remove_path, resolved};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const FINAL_DIR: &str = "final";
/// `output.keep_best`: the checkpoint of the best evaluation so far.
pub const BEST_DIR: &str = "best";
/// Loss and reward (or eval accuracy) per step, drawn at the end of a run.
pub const PLOT_FILE: &str = "metrics.png";
pub const LOCK_FILE: &str = ".rrhf.lock";
pub const SAMPLES_DIR: &str = "samples";
/// `output.tensorboard`: the run's TensorBoard event files (`train::tensorboard`).
pub const TENSORBOARD_DIR: &str = "tensorboard";
/// The run's manifest (`train::manifest`): what produced it.
pub const MANIFEST_FILE: &str = "run.json";

/// The output directory of a live run, locked for as long as this value lives.
pub struct RunDir {
    _lock: RunLock,
}

/// The held lock file; the pid it records is cleared when it is let go.
struct RunLock(File);

impl Drop for RunLock {
    fn drop(&mut self) {
        // The lock itself goes with the file handle.
        let _ = self.0.set_len(0);
    }
}

/// How a run means to use its directory.
pub struct RunStart<'a> {
    pub dir: &'a Path,
    /// The checkpoint it continues from, if any.
    pub resume: Option<&'a Path>,
    /// Start over in a directory that holds another run.
    pub force: bool,
    /// What the run reads (model, data), each with what it is, for the messages.
    pub inputs: Vec<(&'a str, &'a Path)>,
}

impl RunDir {
    pub fn open(start: &RunStart) -> Result<Self> {
        let dir = start.dir;
        check_against_inputs(dir, "output.dir", &start.inputs, true)?;
        if dir.exists() && !dir.is_dir() {
            bail!(
                "output.dir {} is a file, not a directory; choose a directory path",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = lock(dir)?;
        // Holding the lock, every leftover in the directory is a dead writer's.
        clear_leftovers(dir)?;
        clear_leftovers(&dir.join(SAMPLES_DIR))?;
        clear_leftovers(&dir.join(TENSORBOARD_DIR))?;
        let inside = start
            .resume
            .is_some_and(|r| resolved(r).starts_with(resolved(dir)));
        let found = run_files(dir)?;
        if !found.is_empty() && !inside {
            if !start.force {
                bail!("{}", another_run_message(dir, &found));
            }
            let mut reads: Vec<(&str, &Path)> = start.inputs.clone();
            reads.extend(start.resume.map(|r| ("checkpoint to resume", r)));
            for file in &found {
                let f = resolved(file);
                if let Some((what, path)) = reads.iter().find(|(_, p)| resolved(p).starts_with(&f))
                {
                    bail!(
                        "--force would remove {}, which holds the {what} {} that this run reads; \
                         choose another output.dir",
                        file.display(),
                        path.display()
                    );
                }
            }
            for file in &found {
                remove_path(file)?;
            }
            eprintln!(
                "--force: removed the previous run's files in {} ({})",
                dir.display(),
                names(&found)
            );
        } else if start.force && inside {
            bail!(
                "--force starts a run over, removing the checkpoints in {}; it cannot be combined \
                 with --resume {}",
                dir.display(),
                start.resume.unwrap_or(dir).display()
            );
        }
        Ok(Self { _lock: lock })
    }
}

/// Takes `<dir>/.rrhf.lock`, or says which process holds it.
fn lock(dir: &Path) -> Result<RunLock> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let pid = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            bail!(
                "{} is in use by another rrhf run{pid}; wait for it to end, or choose another \
                 output.dir",
                dir.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(RunLock(file))
}

/// The files and folders of a run in `dir`: metrics, plot, checkpoints, `final/`, `best/`,
/// samples, TensorBoard events.
pub fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_checkpoint = super::state::checkpoint_step(&name).is_some();
        let own = [
            METRICS_FILE,
            PLOT_FILE,
            FINAL_DIR,
            BEST_DIR,
            SAMPLES_DIR,
            TENSORBOARD_DIR,
        ];
        if is_checkpoint || own.contains(&&*name) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

fn names(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.join(", ")
}

fn another_run_message(dir: &Path, found: &[PathBuf]) -> String {
    let latest = found
        .iter()
        .filter_map(|p| Some((super::state::checkpoint_step(p.file_name()?.to_str()?)?, p)))
        .max_by_key(|(step, _)| *step);
    let how = match latest {
        Some((_, checkpoint)) => format!("resume it with --resume {}, ", checkpoint.display()),
        None if found.iter().any(|p| p.ends_with(FINAL_DIR)) => {
            "it has finished (final/); ".to_string()
        }
        None => String::new(),
    };
    format!(
        "output.dir {} holds another run ({}): {how}choose another output.dir (--set \
         output.dir=...), or add --force to start over (which removes only that run's files)",
        dir.display(),
        names(found)
    )
}
