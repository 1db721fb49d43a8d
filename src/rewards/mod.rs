//! Rewards: what ranks the k responses of a query. Three kinds behind one interface:
//! built-in verifiable rules (`rule:NAME[:key=value,...]`, see `rules.rs`), an external scorer
//! command (`command:CMD`, see `external.rs`), and a reward model (`model:DIR`, a LLaMA with a
//! scalar head).

use std::time::Duration;

use anyhow::{Context, Result, bail};

pub mod external;
pub mod rules;

/// One response to score, with the query it answers (raw text, no chat template).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Scoring<'a> {
    pub query: &'a str,
    pub response: &'a str,
}

pub trait Reward {
    /// What `--reward` named, for logs and summaries.
    fn describe(&self) -> String;
    /// One finite score per item, in order.
    fn score(&mut self, items: &[Scoring<'_>]) -> Result<Vec<f64>>;
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardOptions {
    /// How long an external scorer may take for one batch before it is stopped.
    pub timeout_secs: f64,
}

impl Default for RewardOptions {
    fn default() -> Self {
        Self {
            timeout_secs: 120.0,
        }
    }
}

/// Builds the reward a spec names: `rule:NAME[:k=v,...]` or `command:CMD`.
pub fn parse_reward(spec: &str, options: &RewardOptions) -> Result<Box<dyn Reward>> {
    let (kind, rest) = spec.split_once(':').with_context(|| {
        format!("reward `{spec}`: expected rule:NAME[:key=value,...] or command:CMD")
    })?;
    match kind {
        "rule" => Ok(Box::new(
            rules::Rule::parse(rest).with_context(|| format!("reward `{spec}`"))?,
        )),
        "command" | "cmd" => {
            if rest.trim().is_empty() {
                bail!("reward `{spec}`: the command is empty");
            }
            Ok(Box::new(external::ExternalScorer::new(
                rest,
                Duration::from_secs_f64(options.timeout_secs),
            )?))
        }
        other => bail!("reward `{spec}`: unknown kind `{other}` (expected rule or command)"),
    }
}

/// Scores every (query, response) pair with `reward`, checking that each score is finite.
pub fn score_all(reward: &mut dyn Reward, items: &[Scoring<'_>]) -> Result<Vec<f64>> {
    let scores = reward.score(items)?;
    if scores.len() != items.len() {
        bail!(
            "{} returned {} scores for {} responses",
            reward.describe(),
            scores.len(),
            items.len()
        );
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!(
            "{} gave response {} a non-finite score {}",
            reward.describe(),
            i + 1,
            scores[i]
        );
    }
    Ok(scores)
}

/// Mean and (population) standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Scores each query's responses: one call to the reward for all of them.
pub fn score_responses(
    reward: &mut dyn Reward,
    queries: &[String],
    responses: &[Vec<String>],
) -> Result<Vec<Vec<f64>>> {
    let items: Vec<Scoring<'_>> = queries
        .iter()
        .zip(responses)
        .flat_map(|(q, rs)| {
            rs.iter().map(move |r| Scoring {
                query: q,
                response: r,
            })
        })
        .collect();
    let mut flat = score_all(reward, &items)?.into_iter();
    Ok(responses
        .iter()
        .map(|rs| flat.by_ref().take(rs.len()).collect())
        .collect())
}
