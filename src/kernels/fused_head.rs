//! The fused language-model head + sequence log-prob: from the final hidden states `[S, T, d]`
//! and the head weight `[V, d]`, the summed target log-probs of each sequence, a vocabulary chunk
//! at a time, so that no `[S, T, V]` logits tensor exists in the forward or the backward pass.
//! Peak temporary memory is `[S·T, chunk]` instead of `[S, T, V]` (twice, with its gradient).
//!
//! Each chunk's matmuls are the backend's own tuned ones. The row reductions over a chunk's
//! logits run as burn ops (`RowOps::BurnOps`: the reference, and the CPU path) or, on wgpu, as
//! the sequence log-prob WGSL kernels (`RowOps::Kernels`): the forward kernel gives the chunk's
//! logsumexp per row in one pass, the backward kernel `g·(onehot − softmax)` in one pass, with
//! targets outside the chunk matching no column. The backward recomputes each chunk's logits from
//! the saved logsumexp (one more head matmul than the unfused path, the price of not keeping the
//! logits).

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

use super::{seq_logprob_with_lse, sequence_logprob_backward};

/// What computes the row reductions over each chunk of logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOps {
    /// burn tensor ops: the reference.
    BurnOps,
    /// The sequence log-prob kernels of the tensors' backend (WGSL on wgpu).
    Kernels,
}

/// `(sum [S], lse [S·T])`: the summed masked target log-probs and every row's logsumexp (padding
/// rows included, so that the backward's `exp(logit - lse)` stays at most 1 everywhere).
pub fn forward(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    chunk: usize,
    rows: RowOps,
) -> (Tensor<1>, Tensor<1>) {
    let [s, t, d] = hidden.dims();
    let n = s * t;
    let h = hidden.reshape([n, d]);
    let device = h.device();
    // Running max and sum of exp(logit - max) per row, merged chunk by chunk.
    let mut running: Option<(Tensor<1>, Tensor<1>)> = None;
    for (start, end) in chunks(weight.dims()[0], chunk) {
        let logits = chunk_logits(&h, &weight, start, end);
        let (max, sum) = match rows {
            RowOps::BurnOps => {
                let max = logits.clone().max_dim(1).reshape([n]);
                let sum = (logits - max.clone().reshape([n, 1]))
                    .exp()
                    .sum_dim(1)
                    .reshape([n]);
                (max, sum)
            }
            // The chunk's logsumexp as the max, with a sum of one. Every row is "scored" (the
            // kernel skips masked rows), for every row's logsumexp; its log-prob sum is unused.
            RowOps::Kernels => {
                let c = end - start;
                let (_, lse) = seq_logprob_with_lse(
                    logits.reshape([1, n, c]),
                    Tensor::zeros([1, n], &device),
                    Tensor::ones([1, n], &device),
                );
                (lse.reshape([n]), Tensor::ones([n], &device))
            }
        };
        running = Some(match running {
            None => (max, sum),
            Some((m0, s0)) => {
                let m = m0.clone().max_pair(max.clone());
                let s = s0 * (m0 - m.clone()).exp() + sum * (max - m.clone()).exp();
                (m, s)
            }
        });
    }
    let (max, sum) = running.expect("a vocabulary of at least one token");
    let lse = sum.log() + max;
    let targets = targets.reshape([n]);
    let target_logit = (h * weight.select(0, targets)).sum_dim(1).reshape([n]);
    let token_logp = (target_logit - lse.clone()) * mask.reshape([n]);
    (token_logp.reshape([s, t]).sum_dim(1).reshape([s]), lse)
}

/// `(d hidden [S, T, d], d weight [V, d])` from the gradient of the sums `[S]`, d weight only
/// when `weight_grad`. With
/// g_n = grad[seq(n)] · mask_n and p = softmax(logits_n):
/// d h_n = g_n (W[target_n] - Σ_v p_v W_v), d W_v = Σ_n g_n (1[v = target_n] - p_v) h_n.
pub fn backward(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    lse: Tensor<1>,
    grad: Tensor<1>,
    chunk: usize,
    weight_grad: bool,
    rows: RowOps,
) -> (Tensor<3>, Option<Tensor<2>>) {
    let [s, t, d] = hidden.dims();
    let n = s * t;
    let h = hidden.reshape([n, d]);
    let device = h.device();
    let g = (grad.reshape([s, 1]) * mask).reshape([n, 1]);
    let lse = lse.reshape([n, 1]);
    let targets = targets.reshape([n]);

    // d logits of a chunk, `[N, chunk]`: -g·softmax, plus g at the target for the kernels (the
    // burn-ops path adds the one-hot part once, outside the loop).
    let chunk_grad = |logits: Tensor<2>, start: usize, end: usize| -> Tensor<2> {
        match rows {
            RowOps::BurnOps => -((logits - lse.clone()).exp() * g.clone()),
            RowOps::Kernels => sequence_logprob_backward(
                logits.reshape([1, n, end - start]),
                (targets.clone() - start as i64).reshape([1, n]),
                g.clone().reshape([1, n]),
                lse.clone().reshape([1, n]),
                Tensor::ones([1], &device),
            )
            .reshape([n, end - start]),
        }
    };
    let mut d_h = match rows {
        RowOps::BurnOps => weight.clone().select(0, targets.clone()) * g.clone(),
        RowOps::Kernels => Tensor::zeros([n, d], &device),
    };
    let mut d_w_chunks = Vec::new();
    for (start, end) in chunks(weight.dims()[0], chunk) {
        let d_logits = chunk_grad(chunk_logits(&h, &weight, start, end), start, end);
        let w = weight.clone().slice([start..end, 0..d]);
        d_h = d_h + d_logits.clone().matmul(w);
        if weight_grad {
            d_w_chunks.push(d_logits.transpose().matmul(h.clone()));
        }
    }
    let d_w = weight_grad.then(|| {
        let d_w = Tensor::cat(d_w_chunks, 0);
        match rows {
            RowOps::BurnOps => d_w.select_assign(0, targets, h * g, IndexingUpdateOp::Add),
            RowOps::Kernels => d_w,
        }
    });
    (d_h.reshape([s, t, d]), d_w)
}

/// [`forward`] on one backend's primitives: what the CPU and wgpu backend-extension impls run.
pub fn forward_on<B: Backend>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    mask: FloatTensor<B>,
    chunk: usize,
    rows: RowOps,
) -> (FloatTensor<B>, FloatTensor<B>)
where
    DispatchTensor: DispatchKindConversion<B>,
{
    let (sum, lse) = forward(
        Tensor::from_primitive::<B>(hidden),
        Tensor::from_primitive::<B>(weight),
        Tensor::from_primitive::<B>(targets),
        Tensor::from_primitive::<B>(mask),
        chunk,
        rows,
    );
    (primitive::<B, 1>(sum), primitive::<B, 1>(lse))
}

/// [`backward`] on one backend's primitives.
#[allow(clippy::too_many_arguments)]
pub fn backward_on<B: Backend>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    mask: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    chunk: usize,
    weight_grad: bool,
    rows: RowOps,
) -> (FloatTensor<B>, Option<FloatTensor<B>>)
where
    DispatchTensor: DispatchKindConversion<B>,
{
    let (d_hidden, d_weight) = backward(
        Tensor::from_primitive::<B>(hidden),
        Tensor::from_primitive::<B>(weight),
        Tensor::from_primitive::<B>(targets),
        Tensor::from_primitive::<B>(mask),
        Tensor::from_primitive::<B>(lse),
        Tensor::from_primitive::<B>(grad),
        chunk,
        weight_grad,
        rows,
    );
    (primitive::<B, 3>(d_hidden), d_weight.map(primitive::<B, 2>))
}

fn primitive<B: Backend, const D: usize>(t: Tensor<D>) -> FloatTensor<B>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    t.try_into_primitive::<B>()
        .expect("burn ops keep tensors on the backend of their inputs")
}

/// `[N, end - start]`: the logits of vocabulary rows `start..end`, laid out row-major so that the
/// elementwise work on them runs over contiguous memory.
fn chunk_logits(h: &Tensor<2>, weight: &Tensor<2>, start: usize, end: usize) -> Tensor<2> {
    let d = weight.dims()[1];
    h.clone()
        .matmul(weight.clone().slice([start..end, 0..d]).transpose())
}

fn chunks(v: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..v)
        .step_by(chunk)
        .map(move |start| (start, (start + chunk).min(v)))
}
