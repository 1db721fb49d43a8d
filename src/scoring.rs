//! Running a batch through the model to sequence scores: the decoder's final hidden states of a
//! packed batch, and from them each sequence's summed response log-probability (a policy) or
//! its scalar reward (a reward model). What the loss (`loss.rs`), evaluation, online sampling
//! and `rrhf logprob` read.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::ScoredBatch;
use crate::kernels::{fused_sequence_logprob, sequence_logprob};
use crate::model::{AttentionContext, Llama};

/// Vocabulary rows per chunk of the fused head, by default.
pub const DEFAULT_HEAD_CHUNK: usize = 2048;

/// How the response log-probs come out of the model's final hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPath {
    /// Logits `[S, T, V]`, then the sequence log-prob kernel.
    Unfused,
    /// The head and the log-prob together, `chunk` vocabulary rows at a time.
    Fused { chunk: usize },
}

impl Default for HeadPath {
    fn default() -> Self {
        HeadPath::Fused {
            chunk: DEFAULT_HEAD_CHUNK,
        }
    }
}

/// The decoder's final hidden states `[S, T, d]` of `batch` (after its last norm).
pub fn final_hidden(model: &Llama, batch: &ScoredBatch) -> Tensor<3> {
    let device = model.device();
    let ctx = batch_context(model, batch, &device);
    model.hidden_states(input_tokens(batch, &device), &ctx, None)
}

/// Per sequence of `batch`, from its final hidden states `[S, T, d]` (however they were
/// computed: layer checkpointing, `train::checkpointing`, builds them on a leaf of its own):
/// the summed log-probability of the response tokens, and their count.
pub fn sequence_logprobs(
    model: &Llama,
    batch: &ScoredBatch,
    head: HeadPath,
    hidden: Tensor<3>,
) -> (Tensor<1>, Tensor<1>) {
    let device = model.device();
    let shape = [batch.rows, batch.width];
    let targets =
        Tensor::<2, Int>::from_data(TensorData::new(batch.targets.clone(), shape), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(batch.target_mask.clone(), shape), &device);
    let count = mask.clone().sum_dim(1).reshape([batch.rows]);
    let sums = match head {
        HeadPath::Unfused => sequence_logprob(model.logits(hidden), targets, mask),
        HeadPath::Fused { chunk } => {
            fused_sequence_logprob(hidden, model.head_rows(), targets, mask, chunk)
        }
    };
    (sums, count)
}

/// A reward model's score of each sequence of `batch` `[rows]`, read at its last input token,
/// from its final hidden states.
pub fn sequence_rewards(model: &Llama, batch: &ScoredBatch, hidden: Tensor<3>) -> Tensor<1> {
    model.rewards_of(hidden, &batch.key_valid)
}

/// What attention needs to see `batch` whole on `device`: positions from 0, its padding masked.
pub fn batch_context(model: &Llama, batch: &ScoredBatch, device: &Device) -> AttentionContext {
    AttentionContext::full_sequence(
        model,
        Some(&batch.key_valid),
        batch.rows,
        batch.width,
        device,
    )
}

/// The model inputs of `batch` as a `[rows, width]` tensor.
pub fn input_tokens(batch: &ScoredBatch, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(batch.tokens.clone(), [batch.rows, batch.width]),
        device,
    )
}
