//! An external scorer: any command that reads `{"query": .., "response": ..}` JSON lines on
//! stdin and writes one number per line on stdout, in order. It runs once per batch (through
//! `sh -c`, so pipelines and arguments work). A scorer that exits with an error, outlives its
//! timeout, or prints something other than one number per response stops the run with an
//! error saying which; nothing already written is touched.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::interface::{Reward, Scoring};

pub struct ExternalScorer {
    command: String,
    timeout: Duration,
}

impl ExternalScorer {
    /// A scorer running `command`, stopped after `timeout_secs` per batch
    /// ([`super::interface::check_timeout`] says which timeouts are allowed).
    pub fn new(command: &str, timeout_secs: f64) -> Result<Self> {
        Ok(Self {
            command: command.trim().to_string(),
            timeout: super::interface::check_timeout(timeout_secs)?,
        })
    }
}

impl Reward for ExternalScorer {
    fn describe(&self) -> String {
        format!("command:{}", self.command)
    }

    fn score(&mut self, items: &[Scoring<'_>]) -> Result<Vec<f64>> {
        let mut input = String::new();
        for item in items {
            input.push_str(&serde_json::to_string(item)?);
            input.push('\n');
        }
        let (stdout, stderr) = self.run(input, items.len())?;
        parse_scores(&stdout, items)
            .with_context(|| format!("scorer `{}`{}", self.command, stderr_tail(&stderr)))
    }
}

/// Most bytes a scorer may print on stdout per response (a number needs a few dozen), and the
/// most of its stderr that is kept (the end of it, for messages).
pub const MAX_OUTPUT_PER_RESPONSE: usize = 64 << 10;

/// What the pipe readers report.
enum Piped {
    Stdout(Option<Vec<u8>>),
    Stderr(Vec<u8>),
}

impl ExternalScorer {
    /// Runs the command on `input` (for `responses` responses); its stdout and stderr, or an
    /// error on failure, timeout or too much output. The scorer runs in a process group of its
    /// own, which is killed whole when it is stopped, so its children do not outlive it.
    fn run(&self, input: String, responses: usize) -> Result<(String, String)> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start scorer `{}`", self.command))?;
        let stop = |child: &mut std::process::Child| {
            #[cfg(unix)]
            // SAFETY: kill(2) with a negative pid signals the process group the scorer leads.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        };
        // Feeding and draining in threads: a scorer that writes before it has read everything
        // must not deadlock against us.
        let mut stdin = child.stdin.take().expect("stdin was piped");
        std::thread::spawn(move || {
            // A scorer may exit without reading; its exit status says more than a broken pipe.
            let _ = stdin.write_all(input.as_bytes());
        });
        let (tx, rx) = mpsc::channel();
        let mut out = child.stdout.take().expect("stdout was piped");
        let limit = MAX_OUTPUT_PER_RESPONSE * responses.max(1);
        let out_tx = tx.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let read = (&mut out).take(limit as u64 + 1).read_to_end(&mut bytes);
            let within = read.is_ok() && bytes.len() <= limit;
            let _ = out_tx.send(Piped::Stdout(within.then_some(bytes)));
        });
        let mut err = child.stderr.take().expect("stderr was piped");
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * MAX_OUTPUT_PER_RESPONSE {
                    tail.drain(..tail.len() - MAX_OUTPUT_PER_RESPONSE);
                }
            }
            let _ = tx.send(Piped::Stderr(tail));
        });
        let deadline = Instant::now() + self.timeout;
        let timed_out = |child: &mut std::process::Child| -> anyhow::Error {
            stop(child);
            anyhow::anyhow!(
                "scorer `{}` did not finish within {:.0} s (reward timeout); it was stopped, with \
                 every process it started",
                self.command,
                self.timeout.as_secs_f64()
            )
        };
        let (mut stdout, mut stderr) = (None, None);
        while stdout.is_none() || stderr.is_none() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Piped::Stdout(Some(bytes))) => stdout = Some(bytes),
                Ok(Piped::Stdout(None)) => {
                    stop(&mut child);
                    bail!(
                        "scorer `{}` printed more than {} KiB for {responses} responses ({} KiB \
                         per response at most); it was stopped",
                        self.command,
                        limit >> 10,
                        MAX_OUTPUT_PER_RESPONSE >> 10
                    );
                }
                Ok(Piped::Stderr(bytes)) => stderr = Some(bytes),
                Err(_) => return Err(timed_out(&mut child)),
            }
        }
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(timed_out(&mut child));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let text =
            |b: Option<Vec<u8>>| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned();
        let (stdout, stderr) = (text(stdout), text(stderr));
        if !status.success() {
            bail!(
                "scorer `{}` failed ({status}){}",
                self.command,
                stderr_tail(&stderr)
            );
        }
        Ok((stdout, stderr))
    }
}

fn parse_scores(stdout: &str, items: &[Scoring<'_>]) -> Result<Vec<f64>> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != items.len() {
        bail!(
            "printed {} numbers for {} responses",
            lines.len(),
            items.len()
        );
    }
    lines
        .iter()
        .zip(items)
        .enumerate()
        .map(|(i, (line, item))| {
            let line = line.trim();
            let what = || {
                format!(
                    "output line {} (the score of a response to query {})",
                    i + 1,
                    super::interface::quoted_start(item.query)
                )
            };
            let value: f64 = line
                .parse()
                .map_err(|_| anyhow::anyhow!("{}: `{line}` is not a number", what()))?;
            if !value.is_finite() {
                bail!("{}: `{line}` is not a finite number", what());
            }
            Ok(value)
        })
        .collect()
}

fn stderr_tail(stderr: &str) -> String {
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    if tail.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = tail.into_iter().rev().collect();
        format!("; its stderr ends:\n{}", lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Scoring<'static>> {
        vec![
            Scoring {
                query: "q1",
                response: "short",
                messages: None,
            },
            Scoring {
                query: "q2",
                response: "a longer one",
                messages: None,
            },
        ]
    }

    fn run(cmd: &str, timeout_ms: u64) -> Result<Vec<f64>> {
        ExternalScorer::new(cmd, timeout_ms as f64 / 1000.0)?.score(&items())
    }

    #[test]
    fn reads_one_number_per_line() {
        // The length of each input line: proves the scorer saw the items, in order.
        let scores = run("while IFS= read -r l; do echo ${#l}; done", 5000).unwrap();
        let expected: Vec<f64> = items()
            .iter()
            .map(|i| serde_json::to_string(i).unwrap().len() as f64)
            .collect();
        assert_eq!(scores, expected);
    }

    #[test]
    fn failures_are_named() {
        let err = |cmd: &str, ms| format!("{:#}", run(cmd, ms).unwrap_err());
        let crash = err("cat >/dev/null; echo boom >&2; exit 3", 5000);
        assert!(
            crash.contains("failed") && crash.contains("boom"),
            "{crash}"
        );
        let hang = err("sleep 30", 300);
        assert!(hang.contains("did not finish within"), "{hang}");
        let words = err("cat >/dev/null; echo 1; echo nan-ish", 5000);
        assert!(
            words.contains("line 2") && words.contains("not a number"),
            "{words}"
        );
        let short = err("cat >/dev/null; echo 1", 5000);
        assert!(short.contains("1 numbers for 2"), "{short}");
    }
}
