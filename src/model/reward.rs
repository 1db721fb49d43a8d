//! The reward model: the LLaMA decoder with a scalar head (`score`, `[d, 1]`) read at the last
//! token of each sequence, as transformers' `LlamaForSequenceClassification` with one label.
//!
//! Which token is "last": transformers reads the rightmost token that is not `pad_token_id`. We
//! feed query + response without the response's EOS (see `ScoredBatch`), so the score is read
//! at the response's last token whether or not the pad token is the EOS, and a directory saved
//! here scores the same text the same way in transformers.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;

use super::config::ModelHead;
use super::llama::Llama;
use super::weights::small_normal;

impl Llama {
    /// One reward per row `[B]` of a right-padded batch, read from its final hidden states
    /// `hidden` `[B, T, d]` at the last column that `key_valid` (`[B, T]`) marks as a real token.
    pub fn rewards_of(&self, hidden: Tensor<3>, key_valid: &[bool]) -> Tensor<1> {
        let score = self
            .score
            .as_ref()
            .expect("rewards_of() needs a reward model (a score head)");
        let [b, t, d] = hidden.dims();
        let device = hidden.device();
        let last: Vec<i64> = key_valid
            .chunks(t)
            .enumerate()
            .map(|(row, valid)| {
                let len = valid.iter().rposition(|&v| v).map_or(1, |p| p + 1);
                (row * t + len - 1) as i64
            })
            .collect();
        let last = Tensor::<1, Int>::from_data(TensorData::new(last, [b]), &device);
        let at_last = hidden.reshape([b * t, d]).select(0, last);
        score.forward(at_last).reshape([b])
    }

    /// This model as the start of a reward model: the language-model head is dropped and a scalar
    /// head drawn from N(0, 0.02²) (transformers' initialisation) is added. A reward model is
    /// returned as it is.
    pub fn into_reward_model(self, seed: u64) -> Llama {
        if self.config.head == ModelHead::Score {
            return self;
        }
        let d = self.config.hidden_size;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let weight = TensorData::new(small_normal(&mut rng, d, 0.02), [d, 1]);
        let device = self.device();
        Llama {
            lm_head: None,
            score: Some(Linear {
                weight: Param::from_data(weight, &device),
                bias: None,
            }),
            config: self.config.as_reward_model(),
            ..self
        }
    }
}
