//! What every reward is: the [`Reward`] interface and the item it scores, the scorer timeout
//! rule, and how messages quote a query. The layer under `rules.rs`, `external.rs`, `model.rs`
//! and the parsing in `mod.rs`.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::tokenizer::ChatMessage;

/// One response to score, with the query it answers (raw text, no chat template). A query that
/// is a conversation comes as text (its turns as `role: content` paragraphs) and as its turns,
/// which external scorers and HTTP judges receive as `messages` and reward models render with
/// their own chat template.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Scoring<'a> {
    pub query: &'a str,
    pub response: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<&'a [ChatMessage]>,
}

pub trait Reward {
    /// What `--reward` named, for logs and summaries.
    fn describe(&self) -> String;
    /// One finite score per item, in order.
    fn score(&mut self, items: &[Scoring<'_>]) -> Result<Vec<f64>>;
}

/// How long an external scorer may take for one batch unless told otherwise.
pub const DEFAULT_TIMEOUT_SECS: f64 = 120.0;

/// A scorer timeout must be a positive number of seconds, at most a year.
pub fn check_timeout(secs: f64) -> Result<Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 365.0 * 86400.0) {
        bail!(
            "the scorer timeout must be a positive number of seconds (at most a year), got {secs}"
        );
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The start of `text` in quotes, for messages that name a query or quote an answer.
pub fn quoted_start(text: &str) -> String {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}...", &text[..end]),
        None => format!("{text:?}"),
    }
}
