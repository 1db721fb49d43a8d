//! The fused language-model head + sequence log-prob: from the final hidden states `[S, T, d]`
//! and the head weight `[V, d]`, the summed target log-probs of each sequence, a vocabulary chunk
//! at a time, so that no `[S, T, V]` logits tensor exists in the forward or the backward pass.
//! Peak temporary memory is `[S·T, chunk]` instead of `[S, T, V]` (twice, with its gradient).
//!
//! Written with burn ops so that each chunk's matmuls are the backend's own tuned ones; the
//! backward recomputes each chunk's logits from the saved logsumexp (one more head matmul than
//! the unfused path, the price of not keeping the logits).

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

/// `(sum [S], lse [S·T])`: the summed masked target log-probs and every row's logsumexp (padding
/// rows included, so that the backward's `exp(logit - lse)` stays at most 1 everywhere).
pub fn forward(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    chunk: usize,
) -> (Tensor<1>, Tensor<1>) {
    let [s, t, d] = hidden.dims();
    let n = s * t;
    let h = hidden.reshape([n, d]);
    // Running max and sum of exp(logit - max) per row, merged chunk by chunk.
    let mut running: Option<(Tensor<1>, Tensor<1>)> = None;
    for (start, end) in chunks(weight.dims()[0], chunk) {
        let logits = chunk_logits(&h, &weight, start, end);
        let max = logits.clone().max_dim(1).reshape([n]);
        let sum = (logits - max.clone().reshape([n, 1]))
            .exp()
            .sum_dim(1)
            .reshape([n]);
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
) -> (Tensor<3>, Option<Tensor<2>>) {
    let [s, t, d] = hidden.dims();
    let n = s * t;
    let h = hidden.reshape([n, d]);
    let g = (grad.reshape([s, 1]) * mask).reshape([n, 1]);
    let lse = lse.reshape([n, 1]);
    let targets = targets.reshape([n]);

    let mut d_h = weight.clone().select(0, targets.clone()) * g.clone();
    let mut d_w_chunks = Vec::new();
    for (start, end) in chunks(weight.dims()[0], chunk) {
        let p = (chunk_logits(&h, &weight, start, end) - lse.clone()).exp() * g.clone();
        let w = weight.clone().slice([start..end, 0..d]);
        d_h = d_h - p.clone().matmul(w);
        if weight_grad {
            d_w_chunks.push(-p.transpose().matmul(h.clone()));
        }
    }
    let d_w = weight_grad.then(|| {
        Tensor::cat(d_w_chunks, 0).select_assign(0, targets, h * g, IndexingUpdateOp::Add)
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
