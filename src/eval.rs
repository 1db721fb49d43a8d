//! Evaluation of a model's answers: greedy generation (up to 128 new tokens, the paper's
//! setting) on held-out queries, their reward's mean and spread, the perplexity of the queries'
//! reference responses, and the win rate of one model against another under the same reward.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::checkpoint::load_model;
use crate::data::{QueryLine, ScoredBatch};
use crate::model::Llama;
use crate::rewards::{Reward, mean_std, score_responses};
use crate::sampling::{SamplingConfig, generate};
use crate::scoring::{HeadPath, final_hidden, sequence_logprobs};
use crate::tokenizer::{Prompt, TemplateMode, Tokenizer};
use burn::tensor::Device;

/// One model's answers and how they scored.
#[derive(Debug, Clone)]
pub struct ModelEval {
    pub model: String,
    pub answers: Vec<String>,
    pub rewards: Vec<f64>,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Of the queries' reference responses, when the file has any.
    pub perplexity: Option<f64>,
    pub mean_answer_tokens: f64,
    pub tokens_per_sec: f64,
}

/// How answers are produced.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    pub sampling: SamplingConfig,
    pub template: TemplateMode,
    /// Queries generated together.
    pub batch: usize,
}

pub fn evaluate_model(
    dir: &Path,
    device: &Device,
    lines: &[QueryLine],
    reward: &mut dyn Reward,
    settings: &EvalSettings,
) -> Result<ModelEval> {
    evaluate_loaded(dir, device, lines, reward, settings)
        .with_context(|| format!("evaluating {}", dir.display()))
}

fn evaluate_loaded(
    dir: &Path,
    device: &Device,
    lines: &[QueryLine],
    reward: &mut dyn Reward,
    settings: &EvalSettings,
) -> Result<ModelEval> {
    let model = load_model(dir, device)?;
    let tokenizer = Tokenizer::load(dir, &model.config)?;
    let prompts: Vec<Prompt> = lines.iter().map(|l| l.query.clone()).collect();
    let started = Instant::now();
    let (answers, tokens) = answer_queries(&model, &tokenizer, &prompts, settings)?;
    let seconds = started.elapsed().as_secs_f64();
    let rewards = score_answers(reward, &prompts, &answers)?;
    let (reward_mean, reward_std) = mean_std(&rewards);
    Ok(ModelEval {
        model: dir.display().to_string(),
        perplexity: reference_perplexity(&model, &tokenizer, lines, settings)?,
        mean_answer_tokens: tokens as f64 / answers.len().max(1) as f64,
        tokens_per_sec: tokens as f64 / seconds,
        answers,
        rewards,
        reward_mean,
        reward_std,
    })
}

/// Each query's answer (special tokens dropped) and the number of tokens generated in all.
pub fn answer_queries(
    model: &Llama,
    tokenizer: &Tokenizer,
    queries: &[Prompt],
    settings: &EvalSettings,
) -> Result<(Vec<String>, usize)> {
    let mut answers = Vec::with_capacity(queries.len());
    let mut tokens = 0;
    for chunk in queries.chunks(settings.batch.max(1)) {
        let prompts = chunk
            .iter()
            .map(|q| tokenizer.encode_query(q, settings.template))
            .collect::<Result<Vec<_>>>()?;
        for out in generate(model, &prompts, &settings.sampling, tokenizer.stop_ids())? {
            tokens += out.tokens.len();
            answers.push(tokenizer.response_text(&out.tokens)?);
        }
    }
    Ok((answers, tokens))
}

/// Each query's answer's reward (one call to the reward for all of them).
pub fn score_answers(
    reward: &mut dyn Reward,
    queries: &[Prompt],
    answers: &[String],
) -> Result<Vec<f64>> {
    let nested: Vec<Vec<String>> = answers.iter().map(|a| vec![a.clone()]).collect();
    Ok(score_responses(reward, queries, &nested)?
        .into_iter()
        .flatten()
        .collect())
}

/// exp of the mean negative log-likelihood per token (EOS included) of the reference responses.
pub fn reference_perplexity(
    model: &Llama,
    tokenizer: &Tokenizer,
    lines: &[QueryLine],
    settings: &EvalSettings,
) -> Result<Option<f64>> {
    let pairs = lines
        .iter()
        .filter_map(|l| l.reference().map(|r| (&l.query, r)))
        .map(|(q, r)| {
            Ok((
                tokenizer.encode_query(q, settings.template)?,
                tokenizer.encode_response(r)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let (mut nll, mut count) = (0.0f64, 0.0f64);
    for chunk in pairs.chunks(settings.batch.max(1)) {
        let batch = ScoredBatch::pack(chunk);
        let hidden = final_hidden(model, &batch);
        let (sums, counts) = sequence_logprobs(model, &batch, HeadPath::default(), hidden);
        let sums = crate::device::to_host(sums)?;
        let counts = crate::device::to_host(counts)?;
        nll -= sums.iter().map(|&s| s as f64).sum::<f64>();
        count += counts.iter().map(|&c| c as f64).sum::<f64>();
    }
    let perplexity = (nll / count).exp();
    ensure!(
        nll.is_finite(),
        "the reference responses' log-probability is {}, not a finite number: the model's \
         weights or config are broken",
        -nll
    );
    Ok(Some(perplexity))
}

/// The fraction of queries where `a` scored higher than `b`, ties counting half.
pub fn win_rate(a: &[f64], b: &[f64]) -> f64 {
    let total: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| match x.total_cmp(y) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Less => 0.0,
        })
        .sum();
    total / a.len().max(1) as f64
}
