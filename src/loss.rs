//! RRHF's sequence scores, and (with the ranking kernel) its loss.
//!
//! The score of response i is p_i = sum_t log P(y_t | x, y_<t) / |y|^length_penalty over its
//! tokens and its EOS; the query is never scored.

use burn::tensor::{Int, Tensor, TensorData};

use crate::data::ScoredBatch;
use crate::kernels::sequence_logprob;
use crate::model::Llama;

/// Per sequence of `batch`: summed log-probability of the response tokens, and their count.
pub fn sequence_logprobs(model: &Llama, batch: &ScoredBatch) -> (Tensor<1>, Tensor<1>) {
    let device = model.device();
    let shape = [batch.rows, batch.width];
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(batch.tokens.clone(), shape), &device);
    let targets =
        Tensor::<2, Int>::from_data(TensorData::new(batch.targets.clone(), shape), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(batch.target_mask.clone(), shape), &device);
    let logits = model.forward(tokens, Some(&batch.key_valid));
    let count = mask.clone().sum_dim(1).reshape([batch.rows]);
    (sequence_logprob(logits, targets, mask), count)
}
