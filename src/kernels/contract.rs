//! The contract of the kernels: the backend-extension trait [`RrhfKernels`] that every backend
//! implements (`mod.rs` for the CPU, `cube.rs` for every GPU, `autodiff.rs` around either), the
//! pair losses its ranking methods take, and the size limit of the logits they index. A layer
//! below the implementations, so that each of them depends on it and not on `mod.rs`.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
#[allow(unused_imports)] // `Autodiff` and `Fusion` are named by the macro's selector list.
use burn::backend::{Autodiff, Flex, backend_extension};
use burn::tensor::{DType, Shape};

use super::adamw::{self, AdamWStep};
use super::fused_head;

/// The most logits `[S, T, V]` a batch may hold outside the fused head: the GPU kernels index
/// them with 32-bit integers.
pub const MAX_LOGITS: usize = u32::MAX as usize;

/// Refuses logits of `rows x width x vocab` beyond [`MAX_LOGITS`], before anything is computed.
pub fn check_logits_fit(rows: usize, width: usize, vocab: usize) -> anyhow::Result<()> {
    let n = rows.checked_mul(width).and_then(|n| n.checked_mul(vocab));
    if n.is_none_or(|n| n > MAX_LOGITS) {
        anyhow::bail!(
            "logits of {rows} sequences x {width} tokens x {vocab} columns exceed the {} elements \
             the log-prob kernels index",
            MAX_LOGITS
        );
    }
    Ok(())
}

/// What a pair of responses with r_i < r_j costs, as a function of the gap g = p_i - p_j + m,
/// m being the margin (`loss.rank_margin`; 0, the paper's, unless set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairLoss {
    /// RRHF: max(0, g). With no margin a pair in the right order costs nothing; with a margin
    /// m it costs until p_j exceeds p_i by m.
    #[default]
    Hinge,
    /// Bradley-Terry: log(1 + exp(g)) = -log sigmoid(p_j - p_i). Keeps pushing the right order
    /// apart, so the scores become calibrated log-odds, as reward models want.
    Logistic,
    /// Not a pair loss but the whole ranking at once (PRO, ListMLE): each response that beats
    /// another is a softmax choice over itself and the responses it beats,
    /// -log(exp(p_i) / (exp(p_i) + sum_{j: r_j < r_i} exp(p_j))), summed. Ties are in neither's
    /// set, as the pair losses ignore them; the margin does not apply.
    Listwise,
}

#[backend_extension(Autodiff, Cube, Flex, Fusion)]
pub trait RrhfKernels: burn::backend::Backend {
    /// `(sum [S], lse [S, T])`: summed masked target log-probs, and the row logsumexps
    /// (0 on masked rows) that the backward pass reuses.
    #[fusion(meta = |logits, _targets, _mask| {
        let [s, t, _] = logits.shape.dims::<3>();
        (TensorSpec::new(Shape::new([s]), DType::F32), TensorSpec::new(Shape::new([s, t]), DType::F32))
    })]
    fn seq_logprob_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `d logits [S, T, V]` from the gradient of the sums `[S]`.
    #[fusion(meta = |logits, _targets, _mask, _lse, _grad| TensorSpec::new(logits.shape.clone(), DType::F32))]
    fn seq_logprob_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The pair-loss sum per query `[Q]`.
    #[fusion(meta = |p, _rewards, _valid, _kind, _margin| TensorSpec::new(Shape::new([p.shape[0]]), DType::F32))]
    fn rank_loss_forward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self>;

    /// `d p [Q, K]` from the gradient of the per-query losses `[Q]`.
    #[fusion(meta = |p, _rewards, _valid, _grad, _kind, _margin| TensorSpec::new(p.shape.clone(), DType::F32))]
    fn rank_loss_backward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self>;

    /// The fused head (`fused_head.rs`): `(sum [S], lse [S·T])` from the hidden states
    /// `[S, T, d]` and the head weight `[V, d]`, `chunk` vocabulary rows at a time. By default
    /// each chunk's row reductions are this trait's log-prob kernels.
    #[fusion(default)]
    fn fused_head_forward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        fused_head::forward::<Self>(
            hidden,
            weight,
            targets,
            mask,
            chunk,
            fused_head::RowOps::Kernels,
        )
    }

    /// `(d hidden [S, T, d], d weight [V, d])` from the gradient of the sums `[S]`; d weight
    /// only when `weight_grad` (a frozen head, as under LoRA, skips a third of the work).
    #[allow(clippy::too_many_arguments)]
    #[fusion(default)]
    fn fused_head_backward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
        weight_grad: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        fused_head::backward::<Self>(
            hidden,
            weight,
            targets,
            mask,
            lse,
            grad,
            chunk,
            weight_grad,
            fused_head::RowOps::Kernels,
        )
    }

    /// One AdamW update `(weight, m, v)` (`adamw.rs`). By default burn ops, which fusion merges
    /// into one kernel on a GPU; the CPU backend has a one-pass kernel of its own.
    #[fusion(default)]
    fn adamw_update(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adamw::reference::<Self>(weight, grad, m, v, step)
    }
}

impl<B: RrhfKernels> fused_head::RowKernels for B {
    fn row_logprob_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        B::seq_logprob_forward(logits, targets, mask)
    }

    fn row_logprob_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        B::seq_logprob_backward(logits, targets, mask, lse, grad)
    }
}
