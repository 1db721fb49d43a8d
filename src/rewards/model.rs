//! A reward model as a reward: `model:DIR` loads a `LlamaForSequenceClassification` directory
//! (one trained by `rrhf train-rm`, or from Hugging Face) and scores each query + response with
//! its scalar head, templated and tokenised as training data is.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;

use super::interface::{Reward, Scoring};
use crate::checkpoint::load_reward_model;
use crate::data::{RankedExample, ScoredBatch, TokenizeOptions, tokenize_example};
use crate::model::Llama;
use crate::scoring::{final_hidden, sequence_rewards};
use crate::tokenizer::{Prompt, TemplateMode, Tokenizer};

/// Sequences scored in one forward pass.
const BATCH: usize = 8;

/// Longest query + response scored; longer responses keep their beginning.
const MAX_LENGTH: usize = 1024;

pub struct ModelReward {
    dir: PathBuf,
    model: Llama,
    tokenizer: Tokenizer,
}

impl ModelReward {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let model = load_reward_model(dir, device)?;
        let tokenizer = Tokenizer::load(dir, &model.config)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
        })
    }

    fn tokens(&self, item: &Scoring<'_>) -> Result<(Vec<u32>, Vec<u32>)> {
        let example = RankedExample {
            query: match item.messages {
                Some(turns) => Prompt::Chat(turns.to_vec()),
                None => item.query.into(),
            },
            responses: vec![item.response.to_string()],
            scores: vec![0.0],
            line: 0,
        };
        let opts = TokenizeOptions {
            max_length: MAX_LENGTH,
            max_query_length: Some(MAX_LENGTH / 2),
            template: TemplateMode::Auto,
        };
        let mut t = tokenize_example(&example, &self.tokenizer, opts)?;
        Ok((t.query, t.responses.remove(0)))
    }
}

impl Reward for ModelReward {
    fn describe(&self) -> String {
        format!("model:{}", self.dir.display())
    }

    fn score(&mut self, items: &[Scoring<'_>]) -> Result<Vec<f64>> {
        let pairs = items
            .iter()
            .map(|it| self.tokens(it))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("reward model {}", self.dir.display()))?;
        let mut scores = Vec::with_capacity(items.len());
        for chunk in pairs.chunks(BATCH) {
            let batch = ScoredBatch::pack(chunk);
            let hidden = final_hidden(&self.model, &batch);
            let rewards = crate::device::to_host(sequence_rewards(&self.model, &batch, hidden))?;
            scores.extend(rewards.into_iter().map(f64::from));
        }
        Ok(scores)
    }
}
