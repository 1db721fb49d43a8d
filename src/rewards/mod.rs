//! Rewards: what ranks the k responses of a query. Three kinds behind one interface:
//! built-in verifiable rules (`rule:NAME[:key=value,...]`, see `rules.rs`), an external scorer
//! command (`command:CMD`, see `external.rs`), a judge behind HTTP (`http://HOST:PORT/PATH`,
//! see `http.rs`), and a reward model (`model:DIR`, a LLaMA with a scalar head).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

use crate::tokenizer::Prompt;

pub mod external;
pub mod http;
mod interface;
pub mod model;
pub mod rules;

pub use interface::{DEFAULT_TIMEOUT_SECS, Reward, Scoring, check_timeout, quoted_start};

#[derive(Debug, Clone)]
pub struct RewardOptions {
    /// How long an external scorer may take for one batch before it is stopped.
    pub timeout_secs: f64,
    /// Where a reward model runs.
    pub device: Device,
    /// The environment variable holding an HTTP judge's bearer token.
    pub token_env: Option<String>,
}

impl Default for RewardOptions {
    fn default() -> Self {
        Self {
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            device: crate::device::cpu_device().device,
            token_env: None,
        }
    }
}

/// A parsed `--reward` spec, not yet built (a reward model is not loaded yet).
#[derive(Debug, Clone)]
pub enum RewardSpec {
    Rule(rules::Rule),
    Command(String),
    Http(String),
    Model(PathBuf),
}

impl RewardSpec {
    /// `rule:NAME[:k=v,...]`, `command:CMD`, `http(s)://HOST[:PORT]/PATH` or `model:DIR` (the
    /// syntax only: files are read and servers reached by [`RewardSpec::build`]).
    pub fn parse(spec: &str) -> Result<Self> {
        let (kind, rest) = spec.split_once(':').with_context(|| {
            format!(
                "reward `{spec}`: expected rule:NAME[:key=value,...], command:CMD, \
                 http://HOST:PORT/PATH or model:DIR"
            )
        })?;
        match kind {
            "rule" => Ok(Self::Rule(
                rules::Rule::parse(rest).with_context(|| format!("reward `{spec}`"))?,
            )),
            "command" | "cmd" => {
                if rest.trim().is_empty() {
                    bail!("reward `{spec}`: the command is empty");
                }
                Ok(Self::Command(rest.to_string()))
            }
            "http" | "https" => {
                let host = rest.strip_prefix("//").unwrap_or("");
                if host.is_empty() || host.starts_with('/') {
                    bail!("reward `{spec}`: expected {kind}://HOST[:PORT]/PATH");
                }
                Ok(Self::Http(spec.to_string()))
            }
            // Checked when built: a config may name a reward model that an earlier step of the
            // same job trains.
            "model" => {
                if rest.trim().is_empty() {
                    bail!("reward `{spec}`: the directory is empty");
                }
                Ok(Self::Model(PathBuf::from(rest)))
            }
            other => {
                bail!(
                    "reward `{spec}`: unknown kind `{other}` (expected rule, command, http(s) \
                     or model)"
                )
            }
        }
    }

    pub fn build(self, options: &RewardOptions) -> Result<Box<dyn Reward>> {
        Ok(match self {
            Self::Rule(rule) => Box::new(rule),
            Self::Command(command) => Box::new(external::ExternalScorer::new(
                &command,
                options.timeout_secs,
            )?),
            Self::Http(url) => Box::new(http::HttpJudge::new(
                &url,
                options.token_env.as_deref(),
                crate::rewards::check_timeout(options.timeout_secs)?,
            )?),
            Self::Model(dir) => Box::new(
                model::ModelReward::load(&dir, &options.device)
                    .with_context(|| format!("reward `model:{}`", dir.display()))?,
            ),
        })
    }
}

/// Builds the reward a spec names (see [`RewardSpec::parse`]).
pub fn parse_reward(spec: &str, options: &RewardOptions) -> Result<Box<dyn Reward>> {
    RewardSpec::parse(spec)?.build(options)
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
            "{} gave response {} a non-finite score {} (query: {})",
            reward.describe(),
            i + 1,
            scores[i],
            quoted_start(items[i].query)
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
    queries: &[Prompt],
    responses: &[Vec<String>],
) -> Result<Vec<Vec<f64>>> {
    let texts: Vec<_> = queries.iter().map(Prompt::text).collect();
    let items: Vec<Scoring<'_>> = queries
        .iter()
        .zip(&texts)
        .zip(responses)
        .flat_map(|((q, text), rs)| {
            rs.iter().map(move |r| Scoring {
                query: text,
                response: r,
                messages: match q {
                    Prompt::Chat(turns) => Some(turns.as_slice()),
                    Prompt::Text(_) => None,
                },
            })
        })
        .collect();
    let mut flat = score_all(reward, &items)?.into_iter();
    Ok(responses
        .iter()
        .map(|rs| flat.by_ref().take(rs.len()).collect())
        .collect())
}
