//! The two reductions at the heart of RRHF, each with a reference made of plain burn tensor ops.
//!
//! Sequence log-prob: from logits `[S, T, V]`, targets `[S, T]` and a target mask `[S, T]`, the
//! summed log-probability of the masked targets per sequence and their count.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Reference sequence log-prob: `(sum [S], count [S])`.
///
/// Materialises `log_softmax` over the whole vocabulary; the oracle the kernels are tested against.
pub fn seq_logprob_reference(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> (Tensor<1>, Tensor<1>) {
    let [s, t, _] = logits.dims();
    let token_logp = log_softmax(logits, 2)
        .gather(2, targets.reshape([s, t, 1]))
        .reshape([s, t]);
    let sum = (token_logp * mask.clone()).sum_dim(1).reshape([s]);
    let count = mask.sum_dim(1).reshape([s]);
    (sum, count)
}
