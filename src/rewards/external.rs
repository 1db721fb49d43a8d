//! An external scorer: any command that reads `{"query": .., "response": ..}` JSON lines on
//! stdin and writes one number per line on stdout, in order. It runs once per batch (through
//! `sh -c`, so pipelines and arguments work). A scorer that exits with an error, outlives its
//! timeout, or prints something other than one number per response stops the run with an
//! error saying which; nothing already written is touched.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Reward, Scoring};

pub struct ExternalScorer {
    command: String,
    timeout: Duration,
}

impl ExternalScorer {
    pub fn new(command: &str, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            bail!("the scorer timeout must be positive");
        }
        Ok(Self {
            command: command.trim().to_string(),
            timeout,
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
        let (stdout, stderr) = self.run(input)?;
        parse_scores(&stdout, items.len())
            .with_context(|| format!("scorer `{}`{}", self.command, stderr_tail(&stderr)))
    }
}

impl ExternalScorer {
    /// Runs the command on `input`; its stdout and stderr, or an error on failure or timeout.
    fn run(&self, input: String) -> Result<(String, String)> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start scorer `{}`", self.command))?;
        // Feeding and draining in threads: a scorer that writes before it has read everything
        // must not deadlock against us.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let writer = std::thread::spawn(move || {
            // A scorer may exit without reading; its exit status says more than a broken pipe.
            let _ = stdin.write_all(input.as_bytes());
        });
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "scorer `{}` did not finish within {:.0} s (reward timeout); it was stopped",
                    self.command,
                    self.timeout.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = writer.join();
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
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

fn parse_scores(stdout: &str, expected: usize) -> Result<Vec<f64>> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != expected {
        bail!("printed {} numbers for {expected} responses", lines.len());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let value: f64 = line.trim().parse().map_err(|_| {
                anyhow::anyhow!("output line {}: `{}` is not a number", i + 1, line.trim())
            })?;
            if !value.is_finite() {
                bail!(
                    "output line {}: `{}` is not a finite number",
                    i + 1,
                    line.trim()
                );
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
            },
            Scoring {
                query: "q2",
                response: "a longer one",
            },
        ]
    }

    fn run(cmd: &str, timeout_ms: u64) -> Result<Vec<f64>> {
        ExternalScorer::new(cmd, Duration::from_millis(timeout_ms))?.score(&items())
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
