//! `[eval]`: evaluation during training. Before the first step, every `eval.every` steps and
//! after the last, the policy answers the held-out queries greedily, a reward spec scores the
//! answers, and metrics.jsonl gets one line: the mean reward and its spread, the win rate against
//! the start model's answers (ties half: 0.5 at step 0 by definition), and the mean answer length
//! in tokens.
//!
//! `<dir>/samples/eval-<step>.jsonl` holds answers beside the start model's (`query`, `answer`,
//! `reward`, `start_answer`, `start_reward`): the first `eval.samples` of them, or all.
//! `eval-0.jsonl` always holds every query's: the start model's answers are the reference of
//! every later win rate, and a resumed run reads them back from it instead of keeping the start
//! model around.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::config::EvalSection;
use crate::checkpoint::{load_model, write_jsonl_atomically};
use crate::data::{QueryLine, read_query_lines};
use crate::eval::{EvalSettings, answer_queries, score_answers, win_rate};
use crate::model::Llama;
use crate::rewards::{Reward, RewardOptions, mean_std, parse_reward};
use crate::sampling::SamplingConfig;
use crate::tokenizer::{TemplateMode, Tokenizer};

/// The eval queries, the reward that scores their answers, and the start model's answers.
pub struct RewardEval {
    lines: Vec<QueryLine>,
    reward: Box<dyn Reward>,
    settings: EvalSettings,
    samples: Option<usize>,
    dir: PathBuf,
    /// The start model's answers: from the baseline evaluation, or read back on resume.
    start: Option<Answers>,
}

/// One model's answers to the eval queries, with their rewards.
#[derive(Debug, Clone)]
struct Answers {
    texts: Vec<String>,
    rewards: Vec<f64>,
}

impl RewardEval {
    /// Reads the queries (the first `eval.max_queries`, read as `[data]` reads its files) and
    /// builds the reward; answers are generated greedily, `batch` queries at a time.
    pub fn new(
        section: &EvalSection,
        template: TemplateMode,
        batch: usize,
        read: &crate::data::ReadOptions,
        device: &burn::tensor::Device,
        out: &Path,
    ) -> Result<Self> {
        let mut lines = read_query_lines(&section.queries, read).context("field `eval.queries`")?;
        ensure!(
            !lines.is_empty(),
            "field `eval.queries`: {} has no queries",
            section.queries.display()
        );
        if let Some(n) = section.max_queries {
            lines.truncate(n);
        }
        let options = RewardOptions {
            timeout_secs: section.reward_timeout_secs,
            device: device.clone(),
            token_env: section.reward_token_env.clone(),
        };
        let reward = parse_reward(&section.reward, &options).context("field `eval.reward`")?;
        let sampling = SamplingConfig {
            max_new_tokens: section.max_new_tokens,
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        Ok(Self {
            lines,
            reward,
            settings: EvalSettings {
                sampling,
                template,
                batch,
            },
            samples: section.samples,
            dir: out.join(super::run_dir::SAMPLES_DIR),
            start: None,
        })
    }

    pub fn samples_file(&self, step: usize) -> PathBuf {
        self.dir.join(format!("eval-{step}.jsonl"))
    }

    /// A resumed run's reference answers: read back from `eval-0.jsonl`, or, when the run began
    /// without `[eval]`, answered now by the start model (loaded from `start_model_dir`).
    pub fn resume(
        &mut self,
        start_model_dir: &Path,
        device: &burn::tensor::Device,
        tokenizer: &Tokenizer,
    ) -> Result<()> {
        let path = self.samples_file(0);
        if path.exists() {
            self.start = Some(self.read_start(&path)?);
            return Ok(());
        }
        eprintln!(
            "[eval]: no {}; answering the eval queries with the start model {} for the win rate",
            path.display(),
            start_model_dir.display()
        );
        let start = load_model(start_model_dir, device)?;
        let answers = self.answer(&start, tokenizer, 0)?.0;
        self.write_samples(0, &answers, &answers)?;
        self.start = Some(answers);
        Ok(())
    }

    /// Evaluates `model`, which has taken `step` steps (at step 0: the start model, whose answers
    /// become the reference), writes its samples file, and returns its metrics.jsonl line.
    pub fn run(&mut self, model: &Llama, tokenizer: &Tokenizer, step: usize) -> Result<Value> {
        let (answers, tokens) = self.answer(model, tokenizer, step)?;
        if self.start.is_none() {
            ensure!(
                step == 0,
                "[eval] at step {step}: the start model's answers are missing"
            );
            self.start = Some(answers.clone());
        }
        let start = self.start.as_ref().expect("set above");
        self.write_samples(step, &answers, start)?;
        let (mean, std) = mean_std(&answers.rewards);
        Ok(json!({
            "step": step,
            "eval_reward": mean,
            "eval_reward_std": std,
            "eval_win_rate": win_rate(&answers.rewards, &start.rewards),
            "eval_answer_tokens": tokens as f64 / answers.texts.len() as f64,
        }))
    }

    /// `model`'s greedy answers, their rewards, and the tokens generated in all.
    fn answer(
        &mut self,
        model: &Llama,
        tokenizer: &Tokenizer,
        step: usize,
    ) -> Result<(Answers, usize)> {
        let queries: Vec<crate::tokenizer::Prompt> =
            self.lines.iter().map(|l| l.query.clone()).collect();
        let (texts, tokens) = answer_queries(model, tokenizer, &queries, &self.settings)
            .with_context(|| format!("[eval] at step {step}: answering the queries"))?;
        let rewards = score_answers(self.reward.as_mut(), &queries, &texts)
            .with_context(|| format!("[eval] at step {step}: scoring the answers"))?;
        Ok((Answers { texts, rewards }, tokens))
    }

    /// `eval-<step>.jsonl`: every answer at step 0, else the first `samples`.
    fn write_samples(&self, step: usize, answers: &Answers, start: &Answers) -> Result<()> {
        let count = match (step, self.samples) {
            (0, _) | (_, None) => self.lines.len(),
            (_, Some(n)) => n,
        };
        let rows = (0..self.lines.len().min(count)).map(|i| {
            self.lines[i].query.record(json!({
                "answer": answers.texts[i],
                "reward": answers.rewards[i],
                "start_answer": start.texts[i],
                "start_reward": start.rewards[i],
            }))
        });
        write_jsonl_atomically(&self.samples_file(step), rows)
    }

    /// The start model's answers from `eval-0.jsonl`, which must be for these queries.
    fn read_start(&self, path: &Path) -> Result<Answers> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let rows: Vec<&str> = text.lines().collect();
        ensure!(
            rows.len() == self.lines.len(),
            "{}: {} answers, but [eval] has {} queries: the file was written for other queries \
             (eval.queries, eval.max_queries)",
            path.display(),
            rows.len(),
            self.lines.len()
        );
        let mut answers = Answers {
            texts: vec![],
            rewards: vec![],
        };
        for (n, (row, line)) in rows.iter().zip(&self.lines).enumerate() {
            let at = || format!("{}:{}", path.display(), n + 1);
            let v: Value =
                serde_json::from_str(row).with_context(|| format!("{}: not JSON", at()))?;
            ensure!(
                {
                    let (field, query) = line.query.json_field();
                    v[field] == query
                },
                "{}: the query differs from line {} of eval.queries: the file was written for \
                 other queries",
                at(),
                line.line
            );
            let (Some(answer), Some(reward)) = (v["answer"].as_str(), v["reward"].as_f64()) else {
                bail!("{}: expected a string `answer` and a number `reward`", at());
            };
            answers.texts.push(answer.to_string());
            answers.rewards.push(reward);
        }
        Ok(answers)
    }
}
