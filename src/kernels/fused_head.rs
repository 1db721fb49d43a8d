//! The fused language-model head + sequence log-prob: from the final hidden states `[S, T, d]`
//! and the head weight `[V, d]`, the summed target log-probs of each sequence, a vocabulary chunk
//! at a time, so that no `[S, T, V]` logits tensor exists in the forward or the backward pass.
//! Peak temporary memory is `[S·T, chunk]` instead of `[S, T, V]` (twice, with its gradient).
//!
//! Written over a backend's primitives, so that it runs unchanged on the CPU backend, on
//! `CubeBackend` and under burn's fusion (where its chunk matmuls are the autotuned, fused ones).
//! The row reductions over a chunk's logits run as burn ops (`RowOps::BurnOps`: the reference, and
//! the CPU path) or as the backend's sequence log-prob kernels (`RowOps::Kernels`, every GPU): the
//! forward kernel gives the chunk's logsumexp per row in one pass, the backward kernel
//! `g·(onehot − softmax)` in one pass, with targets outside the chunk matching no column. The
//! backward recomputes each chunk's logits from the saved logsumexp (one more head matmul than
//! the unfused path, the price of not keeping the logits).

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::{FloatDType, IndexingUpdateOp, Shape, Slice};

/// What the fused head needs of a backend beyond burn's ops: the two sequence log-prob kernels.
/// Every backend of the kernels' trait has them (the blanket impl in `contract.rs`); declared
/// here so that this file depends on nothing of the trait it supplies default methods to.
pub trait RowKernels: Backend {
    /// `(sum [S], lse [S, T])` of logits `[S, T, V]`, as `RrhfKernels::seq_logprob_forward`.
    fn row_logprob_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `d logits [S, T, V]`, as `RrhfKernels::seq_logprob_backward`.
    fn row_logprob_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// What computes the row reductions over each chunk of logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOps {
    /// burn tensor ops: the reference.
    BurnOps,
    /// The sequence log-prob kernels of the tensors' backend.
    Kernels,
}

/// `(sum [S], lse [S·T])`: the summed masked target log-probs and every row's logsumexp (padding
/// rows included, so that the backward's `exp(logit - lse)` stays at most 1 everywhere).
pub fn forward<B: RowKernels>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    mask: FloatTensor<B>,
    chunk: usize,
    rows: RowOps,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [s, t, d] = hidden.shape().dims::<3>();
    let n = s * t;
    let h = B::float_reshape(hidden, Shape::new([n, d]));
    let device = h.device();
    let targets = B::int_reshape(targets, Shape::new([n]));
    // Running max and sum of exp(logit - max) per row `[N, 1]`, merged chunk by chunk.
    let mut running: Option<(FloatTensor<B>, FloatTensor<B>)> = None;
    for (start, end) in chunks(vocab::<B>(&weight), chunk) {
        let logits = chunk_logits::<B>(&h, &weight, start, end);
        let (max, sum) = match rows {
            RowOps::BurnOps => {
                let max = B::float_max_dim(logits.clone(), 1);
                let sum = B::float_sum_dim(B::float_exp(B::float_sub(logits, max.clone())), 1);
                (max, sum)
            }
            // The chunk's logsumexp as the max, with a sum of one. Every row is "scored" (the
            // kernel skips masked rows), for every row's logsumexp; its log-prob sum is unused.
            RowOps::Kernels => {
                let c = end - start;
                let (_, lse) = B::row_logprob_forward(
                    B::float_reshape(logits, Shape::new([1, n, c])),
                    B::int_reshape(
                        B::int_mul_scalar(targets.clone(), 0.into()),
                        Shape::new([1, n]),
                    ),
                    B::float_ones(Shape::new([1, n]), &device, FloatDType::F32),
                );
                let ones = B::float_ones(Shape::new([n, 1]), &device, FloatDType::F32);
                (B::float_reshape(lse, Shape::new([n, 1])), ones)
            }
        };
        running = Some(match running {
            None => (max, sum),
            Some((m0, s0)) => {
                let m = B::float_max_dim(B::float_cat(vec![m0.clone(), max.clone()], 1), 1);
                let rescaled =
                    |sum, from| B::float_mul(sum, B::float_exp(B::float_sub(from, m.clone())));
                let s = B::float_add(rescaled(s0, m0), rescaled(sum, max));
                (m, s)
            }
        });
    }
    let (max, sum) = running.expect("a vocabulary of at least one token (config.json is checked)");
    let lse = B::float_add(B::float_log(sum), max);
    let target_rows = B::float_select(weight, 0, targets);
    let target_logit = B::float_sum_dim(B::float_mul(h, target_rows), 1);
    let mask = B::float_reshape(mask, Shape::new([n, 1]));
    let token_logp = B::float_mul(B::float_sub(target_logit, lse.clone()), mask);
    let sums = B::float_sum_dim(B::float_reshape(token_logp, Shape::new([s, t])), 1);
    (
        B::float_reshape(sums, Shape::new([s])),
        B::float_reshape(lse, Shape::new([n])),
    )
}

/// `(d hidden [S, T, d], d weight [V, d])` from the gradient of the sums `[S]`, d weight only
/// when `weight_grad`. With g_n = grad[seq(n)] · mask_n and p = softmax(logits_n):
/// d h_n = g_n (W[target_n] - Σ_v p_v W_v), d W_v = Σ_n g_n (1[v = target_n] - p_v) h_n.
#[allow(clippy::too_many_arguments)]
pub fn backward<B: RowKernels>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    mask: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    chunk: usize,
    weight_grad: bool,
    rows: RowOps,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let [s, t, d] = hidden.shape().dims::<3>();
    let n = s * t;
    let h = B::float_reshape(hidden, Shape::new([n, d]));
    let device = h.device();
    let g = B::float_reshape(
        B::float_mul(B::float_reshape(grad, Shape::new([s, 1])), mask),
        Shape::new([n, 1]),
    );
    let lse = B::float_reshape(lse, Shape::new([n, 1]));
    let targets = B::int_reshape(targets, Shape::new([n]));

    // d logits of a chunk, `[N, chunk]`: -g·softmax, plus g at the target for the kernels (the
    // burn-ops path adds the one-hot part once, outside the loop).
    let chunk_grad = |logits: FloatTensor<B>, start: usize, end: usize| -> FloatTensor<B> {
        match rows {
            RowOps::BurnOps => B::float_neg(B::float_mul(
                B::float_exp(B::float_sub(logits, lse.clone())),
                g.clone(),
            )),
            RowOps::Kernels => {
                let c = end - start;
                let shifted = B::int_sub_scalar(targets.clone(), (start as i64).into());
                let d_logits = B::row_logprob_backward(
                    B::float_reshape(logits, Shape::new([1, n, c])),
                    B::int_reshape(shifted, Shape::new([1, n])),
                    B::float_reshape(g.clone(), Shape::new([1, n])),
                    B::float_reshape(lse.clone(), Shape::new([1, n])),
                    B::float_ones(Shape::new([1]), &device, FloatDType::F32),
                );
                B::float_reshape(d_logits, Shape::new([n, c]))
            }
        }
    };
    let mut d_h = match rows {
        RowOps::BurnOps => B::float_mul(
            B::float_select(weight.clone(), 0, targets.clone()),
            g.clone(),
        ),
        RowOps::Kernels => B::float_zeros(Shape::new([n, d]), &device, FloatDType::F32),
    };
    let mut d_w_chunks = Vec::new();
    for (start, end) in chunks(vocab::<B>(&weight), chunk) {
        let d_logits = chunk_grad(chunk_logits::<B>(&h, &weight, start, end), start, end);
        let w = B::float_slice(
            weight.clone(),
            &[Slice::from(start..end), Slice::from(0..d)],
        );
        d_h = B::float_add(d_h, B::float_matmul(d_logits.clone(), w));
        if weight_grad {
            d_w_chunks.push(B::float_matmul(B::float_transpose(d_logits), h.clone()));
        }
    }
    let d_w = weight_grad.then(|| {
        let d_w = B::float_cat(d_w_chunks, 0);
        match rows {
            RowOps::BurnOps => {
                B::float_select_assign(d_w, 0, targets, B::float_mul(h, g), IndexingUpdateOp::Add)
            }
            RowOps::Kernels => d_w,
        }
    });
    (B::float_reshape(d_h, Shape::new([s, t, d])), d_w)
}

fn vocab<B: Backend>(weight: &FloatTensor<B>) -> usize {
    weight.shape().dims::<2>()[0]
}

/// `[N, end - start]`: the logits of vocabulary rows `start..end`, laid out row-major so that the
/// elementwise work on them runs over contiguous memory.
fn chunk_logits<B: Backend>(
    h: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    start: usize,
    end: usize,
) -> FloatTensor<B> {
    let d = weight.shape().dims::<2>()[1];
    let rows = B::float_slice(
        weight.clone(),
        &[Slice::from(start..end), Slice::from(0..d)],
    );
    B::float_matmul(h.clone(), B::float_transpose(rows))
}

fn chunks(v: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..v)
        .step_by(chunk)
        .map(move |start| (start, (start + chunk).min(v)))
}
