//! A judge behind HTTP (`http://HOST:PORT/PATH` or `https://...`): each batch is one POST of
//! `{"items": [{"query", "response"}, ...]}` as JSON, answered by `{"scores": [...]}` with one
//! finite number per item, in order. A bearer token comes from an environment variable the
//! config names, so it never sits in a config or a run.json. Connection failures, timeouts,
//! 429 and 5xx answers are retried a bounded number of times; a 4xx answer or a malformed body
//! is not (asking again would get the same).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::interface::{Reward, Scoring, quoted_start};

/// Tries of one batch before its failure is the run's.
pub const TRIES: u32 = 3;

pub struct HttpJudge {
    url: String,
    token: Option<String>,
    timeout: Duration,
    agent: ureq::Agent,
    /// Waited before the second try, doubled before each later one.
    first_backoff: Duration,
}

impl HttpJudge {
    /// A judge at `url`, with the bearer token in the environment variable `token_env` if given,
    /// each request allowed `timeout` in all.
    pub fn new(url: &str, token_env: Option<&str>, timeout: Duration) -> Result<Self> {
        let token = match token_env {
            None => None,
            Some(var) => Some(std::env::var(var).with_context(|| {
                format!(
                    "reward `{url}`: the token's environment variable {var} \
                     (online.reward_token_env / --reward-token-env) is not set"
                )
            })?),
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            url: url.to_string(),
            token,
            timeout,
            agent,
            first_backoff: Duration::from_millis(500),
        })
    }

    /// One POST: `Ok(Err(why))` for a failure worth another try, `Err` for one that is not.
    fn post(&self, body: &str) -> Result<std::result::Result<Vec<Value>, String>> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = match request.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => {
                return Ok(Err(format!(
                    "no answer within the timeout of {} s",
                    self.timeout.as_secs_f64()
                )));
            }
            Err(
                e
                @ (ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound),
            ) => {
                return Ok(Err(format!("cannot connect: {e}")));
            }
            Err(e) => bail!("reward `{}`: the request failed: {e}", self.url),
        };
        let status = response.status().as_u16();
        let text = match response.body_mut().read_to_string() {
            Ok(t) => t,
            Err(ureq::Error::Timeout(_)) => {
                return Ok(Err("the answer did not arrive within the timeout".into()));
            }
            Err(e) => return Ok(Err(format!("reading the answer failed: {e}"))),
        };
        if status == 429 || status >= 500 {
            return Ok(Err(format!("HTTP {status}: {}", quoted_start(&text))));
        }
        if status != 200 {
            bail!(
                "reward `{}`: HTTP {status} (not retried): {}",
                self.url,
                quoted_start(&text)
            );
        }
        let answer: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "reward `{}`: the answer is not JSON: {}",
                self.url,
                quoted_start(&text)
            )
        })?;
        match answer.get("scores").and_then(Value::as_array) {
            Some(scores) => Ok(Ok(scores.clone())),
            None => bail!(
                "reward `{}`: the answer has no `scores` array: {}",
                self.url,
                quoted_start(&text)
            ),
        }
    }
}

impl Reward for HttpJudge {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn score(&mut self, items: &[Scoring<'_>]) -> Result<Vec<f64>> {
        let body = json!({ "items": items }).to_string();
        let mut backoff = self.first_backoff;
        let mut failures = Vec::new();
        for attempt in 1..=TRIES {
            match self.post(&body)? {
                Ok(scores) => return numbers(&self.url, &scores, items.len()),
                Err(why) => failures.push(format!("try {attempt}: {why}")),
            }
            if attempt < TRIES {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
        }
        bail!(
            "reward `{}`: {TRIES} tries failed: {}",
            self.url,
            failures.join("; ")
        )
    }
}

/// The answer's `scores` as numbers, one per item, each finite.
fn numbers(url: &str, scores: &[Value], items: usize) -> Result<Vec<f64>> {
    if scores.len() != items {
        bail!(
            "reward `{url}`: the answer has {} scores for {items} items",
            scores.len()
        );
    }
    scores
        .iter()
        .enumerate()
        .map(|(i, s)| match s.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => bail!("reward `{url}`: score {i} of the answer is {s}, not a finite number"),
        })
        .collect()
}
