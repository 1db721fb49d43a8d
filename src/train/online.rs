//! Online RRHF: the policy samples its own responses while it trains. Every `resample_every`
//! steps a round begins: the queries of the round's steps get k responses from the current
//! weights (plus, if asked, the data file's own), the reward scores them, a KL term against the
//! starting model is subtracted if asked, and the steps train on that. Each round is written to
//! `<output.dir>/samples/round-<step>.jsonl` (ranked JSONL, usable by offline training), which is
//! also what a resumed run reads back, so resuming mid-round continues exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::config::OnlineSection;
use crate::checkpoint::{load_model, write_jsonl_atomically};
use crate::data::{
    QueryLine, RankedExample, ReadOptions, ScoredBatch, TokenizeOptions, TokenizedExample,
    read_ranked, tokenize_examples,
};
use crate::model::Llama;
use crate::rewards::{Reward, RewardOptions, mean_std, parse_reward, score_responses};
use crate::sampling::{Draws, sample_responses};
use crate::scoring::{HeadPath, final_hidden, sequence_logprobs};
use crate::tokenizer::{Prompt, Tokenizer};

pub struct OnlineSampler {
    section: OnlineSection,
    reward: Box<dyn Reward>,
    kl_reference: KlReference,
    queries: Vec<QueryLine>,
    opts: TokenizeOptions,
    max_line_bytes: usize,
    dir: PathBuf,
}

/// What the KL term holds the policy near.
enum KlReference {
    /// No KL term (`kl_coef = 0`).
    None,
    /// The starting model, loaded beside the policy.
    StartModel(Llama),
    /// The base model under the policy's LoRA adapters: the same weights, no second copy.
    AdapterBase,
}

/// What one round produced, by query index.
pub struct Round {
    pub examples: HashMap<usize, TokenizedExample>,
    /// Mean score of each query's responses.
    pub mean_score: HashMap<usize, f64>,
    /// The round's line in metrics.jsonl (none for a round read back: it is logged already).
    pub log: Option<serde_json::Value>,
}

impl OnlineSampler {
    pub fn new(
        section: &OnlineSection,
        queries: Vec<QueryLine>,
        opts: TokenizeOptions,
        max_line_bytes: usize,
        start_model_dir: &Path,
        trains_adapters: bool,
        device: &burn::tensor::Device,
        out: &Path,
    ) -> Result<Self> {
        let reward = parse_reward(
            &section.reward,
            &RewardOptions {
                timeout_secs: section.reward_timeout_secs,
                device: device.clone(),
                token_env: section.reward_token_env.clone(),
            },
        )?;
        let kl_reference = match (section.kl_coef > 0.0, trains_adapters) {
            (false, _) => KlReference::None,
            (true, true) => KlReference::AdapterBase,
            (true, false) => KlReference::StartModel(load_model(start_model_dir, device)?),
        };
        Ok(Self {
            section: section.clone(),
            reward,
            kl_reference,
            queries,
            opts,
            max_line_bytes,
            dir: out.join(super::run_dir::SAMPLES_DIR),
        })
    }

    /// The most responses a query of a round can have.
    pub fn most_responses(&self) -> usize {
        let from_data = match self.section.include_data_responses {
            true => self
                .queries
                .iter()
                .map(|q| q.responses.len())
                .max()
                .unwrap_or(0),
            false => 0,
        };
        self.section.sampling.responses_per_query() + from_data
    }

    pub fn resample_every(&self) -> usize {
        self.section.resample_every
    }

    pub fn round_file(&self, start_step: usize) -> PathBuf {
        self.dir.join(format!("round-{start_step}.jsonl"))
    }

    /// The round starting at `start_step` for the queries `indices`: sampled from `policy`, or
    /// read back from its file when `reuse` is set and the file exists (a resumed run).
    pub fn round(
        &mut self,
        policy: &Llama,
        tokenizer: &Tokenizer,
        start_step: usize,
        indices: &[usize],
        reuse: bool,
    ) -> Result<Round> {
        let path = self.round_file(start_step);
        if reuse && path.exists() {
            // Round files are rrhf's own: its field names, whatever `[data.columns]` says.
            let own = ReadOptions {
                max_line_bytes: self.max_line_bytes,
                ..ReadOptions::default()
            };
            let examples = read_ranked(&path, &own)?;
            anyhow::ensure!(
                examples.len() == indices.len(),
                "{}: {} lines, but the round has {} queries; it belongs to another run",
                path.display(),
                examples.len(),
                indices.len()
            );
            return self.finish(tokenizer, indices, examples, &path, None);
        }
        let started = Instant::now();
        // Under MPI each rank samples and scores every n-th query of the round; the round is
        // then put together on every rank (each trains on some of it), and rank 0 writes it.
        let world = crate::parallel::world();
        let mine: Vec<usize> = world
            .share(indices)
            .into_iter()
            .map(|p| indices[p])
            .collect();
        let sampled = self.sample(policy, tokenizer, start_step, &mine)?;
        let (mut by_query, tokens) = gather_samples(world, &mine, sampled)?;
        let sample_seconds = started.elapsed().as_secs_f64();
        let mut rewards = Vec::with_capacity(indices.len());
        let examples: Vec<RankedExample> = indices
            .iter()
            .map(|i| {
                let q = by_query
                    .remove(i)
                    .expect("every query of the round was sampled");
                rewards.push(q.rewards);
                RankedExample {
                    query: self.queries[*i].query.clone(),
                    responses: q.responses,
                    scores: q.scores,
                    line: self.queries[*i].line,
                }
            })
            .collect();
        let (reward_mean, reward_std) = mean_std(&rewards.concat());
        if world.is_root() {
            write_round(&path, &examples)?;
        }
        let log = json!({
            "step": start_step,
            "round_queries": indices.len(),
            "sample_reward_mean": reward_mean,
            "sample_reward_std": reward_std,
            "sample_tokens": tokens,
            "sample_seconds": sample_seconds,
            "sample_tokens_per_sec": tokens as f64 / sample_seconds,
        });
        // The scores survive the JSON round trip exactly (finite f64s, written in their
        // shortest exact form), so a resumed run reading the file back trains on the same thing.
        self.finish(tokenizer, indices, examples, &path, Some(log))
    }

    /// The responses to the queries `indices`, sampled from `policy` for the round starting at
    /// `start_step`, and their rewards (less the KL term, if any).
    fn sample(
        &mut self,
        policy: &Llama,
        tokenizer: &Tokenizer,
        start_step: usize,
        indices: &[usize],
    ) -> Result<SampledShare> {
        if indices.is_empty() {
            // A rank of a round with fewer queries than ranks.
            return Ok(SampledShare {
                queries: Vec::new(),
                tokens: 0,
            });
        }
        let prompts = indices
            .iter()
            .map(|&i| tokenizer.encode_query(&self.queries[i].query, self.opts.template))
            .collect::<Result<Vec<_>>>()?;
        let mut tokens = 0;
        // A different draw every round, the same draw for the same round of a rerun.
        let draws = Draws {
            round: start_step as u64,
            queries: indices,
        };
        let samples = sample_responses(
            policy,
            &prompts,
            draws,
            &self.section.sampling,
            tokenizer.stop_ids(),
            &mut |_, n| tokens += n,
        )?;
        let texts: Vec<Vec<String>> = indices
            .iter()
            .zip(&samples)
            .map(|(&i, generated)| {
                let mut responses = generated
                    .iter()
                    .map(|g| tokenizer.response_text(&g.tokens))
                    .collect::<Result<Vec<_>>>()?;
                if self.section.include_data_responses {
                    responses.extend(self.queries[i].responses.iter().cloned());
                }
                Ok(responses)
            })
            .collect::<Result<_>>()?;
        let asked: Vec<Prompt> = indices
            .iter()
            .map(|&i| self.queries[i].query.clone())
            .collect();
        let rewards = score_responses(self.reward.as_mut(), &asked, &texts)
            .with_context(|| format!("online round at step {start_step}"))?;
        let mut examples: Vec<RankedExample> = indices
            .iter()
            .zip(asked)
            .zip(texts)
            .zip(&rewards)
            .map(|(((&i, query), responses), r)| RankedExample {
                query,
                responses,
                scores: r.clone(),
                line: self.queries[i].line,
            })
            .collect();
        match &self.kl_reference {
            KlReference::None => {}
            KlReference::StartModel(start) => {
                self.subtract_kl(policy, start, tokenizer, &mut examples)?
            }
            KlReference::AdapterBase => {
                self.subtract_kl(policy, &policy.without_lora(), tokenizer, &mut examples)?
            }
        }
        let queries = examples
            .into_iter()
            .zip(rewards)
            .map(|(ex, rewards)| SampledQuery {
                responses: ex.responses,
                scores: ex.scores,
                rewards,
            })
            .collect();
        Ok(SampledShare { queries, tokens })
    }

    fn finish(
        &self,
        tokenizer: &Tokenizer,
        indices: &[usize],
        examples: Vec<RankedExample>,
        path: &Path,
        log: Option<serde_json::Value>,
    ) -> Result<Round> {
        let tokenized = tokenize_examples(&examples, tokenizer, self.opts, path)?;
        let mean_score = indices
            .iter()
            .zip(&examples)
            .map(|(&i, ex)| {
                let s: f64 = ex.scores.iter().sum();
                (i, s / ex.scores.len() as f64)
            })
            .collect();
        Ok(Round {
            examples: indices.iter().copied().zip(tokenized).collect(),
            mean_score,
            log,
        })
    }

    /// reward - kl_coef * (log p_policy(y) - log p_start(y)), summed over the response's tokens.
    fn subtract_kl(
        &self,
        policy: &Llama,
        start: &Llama,
        tokenizer: &Tokenizer,
        examples: &mut [RankedExample],
    ) -> Result<()> {
        let tokenized = tokenize_examples(examples, tokenizer, self.opts, &self.dir)?;
        for (ex, tok) in examples.iter_mut().zip(&tokenized) {
            let pairs: Vec<(Vec<u32>, Vec<u32>)> = tok
                .responses
                .iter()
                .map(|r| (tok.query.clone(), r.clone()))
                .collect();
            let batch = ScoredBatch::pack(&pairs);
            let read = |m: &Llama| -> Result<Vec<f32>> {
                let hidden = final_hidden(m, &batch);
                crate::device::to_host(sequence_logprobs(m, &batch, HeadPath::default(), hidden).0)
            };
            let (lp_policy, lp_start) = (read(policy)?, read(start)?);
            for ((score, p), s) in ex.scores.iter_mut().zip(lp_policy).zip(lp_start) {
                *score -= self.section.kl_coef * (p - s) as f64;
                if !score.is_finite() {
                    anyhow::bail!(
                        "the reward less the KL term is {score} for a response to query {} \
                         (log-probs {p} under the policy, {s} under the start model)",
                        crate::rewards::quoted_start(&ex.query.text())
                    );
                }
            }
        }
        Ok(())
    }
}

/// One query's part of a round, as one rank sampled it.
struct SampledQuery {
    responses: Vec<String>,
    /// The rewards less the KL term: what the query is ranked by.
    scores: Vec<f64>,
    /// The rewards alone, for the round's log line.
    rewards: Vec<f64>,
}

struct SampledShare {
    queries: Vec<SampledQuery>,
    tokens: usize,
}

/// Every rank's sampled queries (`mine` are this rank's), by query index, on every rank, and
/// the tokens sampled in all (in a world of one, this rank's own). The floats cross as their bits, so every rank ranks by exactly
/// the scores the sampling rank computed.
fn gather_samples(
    world: &crate::parallel::World,
    mine: &[usize],
    share: SampledShare,
) -> Result<(HashMap<usize, SampledQuery>, usize)> {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
    let records: Vec<serde_json::Value> = mine
        .iter()
        .zip(&share.queries)
        .map(|(i, q)| {
            json!({"i": i, "responses": q.responses, "scores": bits(&q.scores),
                   "rewards": bits(&q.rewards)})
        })
        .collect();
    let sent = serde_json::to_vec(&json!({"tokens": share.tokens, "queries": records}))?;
    let mut by_query = HashMap::new();
    let mut tokens = 0;
    for (rank, bytes) in world.all_gather(sent).into_iter().enumerate() {
        let share: GatheredShare = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading rank {rank}'s share of the online round"))?;
        tokens += share.tokens;
        for q in share.queries {
            let floats = |v: Vec<u64>| v.into_iter().map(f64::from_bits).collect();
            let query = SampledQuery {
                responses: q.responses,
                scores: floats(q.scores),
                rewards: floats(q.rewards),
            };
            by_query.insert(q.i, query);
        }
    }
    Ok((by_query, tokens))
}

#[derive(serde::Deserialize)]
struct GatheredShare {
    tokens: usize,
    queries: Vec<GatheredQuery>,
}

#[derive(serde::Deserialize)]
struct GatheredQuery {
    i: usize,
    responses: Vec<String>,
    scores: Vec<u64>,
    rewards: Vec<u64>,
}

fn write_round(path: &Path, examples: &[RankedExample]) -> Result<()> {
    write_jsonl_atomically(
        path,
        examples.iter().map(|ex| {
            ex.query
                .record(json!({"responses": ex.responses, "scores": ex.scores}))
        }),
    )
}
