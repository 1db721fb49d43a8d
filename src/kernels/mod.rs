//! The two reductions at the heart of RRHF, each with a forward and a backward pass:
//!
//! - sequence log-prob: from logits `[S, T, V]`, targets `[S, T]` and a target mask `[S, T]`, the
//!   summed log-probability of the masked targets of each sequence, without materialising
//!   `log_softmax` over the vocabulary;
//! - ranking loss: from sequence scores `p [Q, K]`, rewards `[Q, K]` and slot validity `[Q, K]`,
//!   the sum per query over mis-orderable pairs of RRHF's hinge, or of the pairwise logistic
//!   (Bradley-Terry) loss that reward models train with, each with an optional margin; or the
//!   listwise (PRO/ListMLE) loss over the whole ranking.
//!
//! Both live behind one backend-extension trait, [`RrhfKernels`]: CubeCL kernels
//! (`cube_kernels.rs`, launched in `cube.rs`; `shaders/` shows the WGSL they compile to) on every
//! GPU, loops over rows on rayon's threads (`cpu.rs`) on the CPU backend, the burn-ops reference
//! (`reference.rs`) as the oracle of both, and a hand-written autodiff wrapper (`autodiff.rs`)
//! that attaches the backward passes to any of them. The same trait carries AdamW's update
//! (`adamw.rs`): one pass on the CPU, burn ops that fusion merges on a GPU. Under burn's fusion each
//! kernel is one lazy operation of the fused stream (fusion runs around it, not through it), and
//! the fused head is plain burn ops over the backend's primitives, so fusion and autotune see its
//! matmuls and elementwise work.

pub mod adamw;
mod autodiff;
mod contract;
mod cpu;
mod cube;
pub mod cube_kernels;
pub mod fused_head;
pub mod reference;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Dispatch, Flex};
use burn::tensor::{Int, Tensor};

pub use adamw::AdamWStep;
pub use contract::{MAX_LOGITS, PairLoss, RrhfKernels, check_logits_fit};
pub use cube::{RANK_CUBE, ROW_CUBE, wgsl_sources};

/// One AdamW update of a flat parameter: `(weight, m, v)` from the weight, its gradient and the
/// moments (`adamw.rs`). Not differentiable: the optimizer works outside autodiff.
pub fn adamw_update(
    weight: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    step: AdamWStep,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    adamw_on_dispatch(
        <Dispatch as RrhfKernels>::adamw_update,
        [weight, grad, m, v],
        step,
    )
}

/// [`adamw_update`] as burn ops on any device: the oracle of the CPU kernel, for tests.
pub fn adamw_update_reference(
    weight: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    step: AdamWStep,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    adamw_on_dispatch(adamw::reference::<Dispatch>, [weight, grad, m, v], step)
}

type DispatchFloat = FloatTensor<Dispatch>;

/// `update` on the primitives of `[weight, grad, m, v]`, its `(weight, m, v)` as tensors again.
fn adamw_on_dispatch(
    update: fn(
        DispatchFloat,
        DispatchFloat,
        DispatchFloat,
        DispatchFloat,
        AdamWStep,
    ) -> (DispatchFloat, DispatchFloat, DispatchFloat),
    [weight, grad, m, v]: [Tensor<1>; 4],
    step: AdamWStep,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (weight, m, v) = update(
        weight.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
    );
    (
        Tensor::from_dispatch(weight),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Summed log-prob of the masked targets of each sequence `[S]`; differentiable in `logits`.
pub fn sequence_logprob(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    seq_logprob_with_lse(logits, targets, mask).0
}

/// [`sequence_logprob`] together with the row logsumexps `[S, T]` it computed.
pub fn seq_logprob_with_lse(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> (Tensor<1>, Tensor<2>) {
    let (sum, lse) = <Dispatch as RrhfKernels>::seq_logprob_forward(
        logits.into_dispatch(),
        targets.into_dispatch(),
        mask.into_dispatch(),
    );
    (Tensor::from_dispatch(sum), Tensor::from_dispatch(lse))
}

/// The backward pass of [`sequence_logprob`] on its own, for tests and benchmarks.
pub fn sequence_logprob_backward(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    lse: Tensor<2>,
    grad: Tensor<1>,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as RrhfKernels>::seq_logprob_backward(
        logits.into_dispatch(),
        targets.into_dispatch(),
        mask.into_dispatch(),
        lse.into_dispatch(),
        grad.into_dispatch(),
    ))
}

/// [`sequence_logprob`] of the logits `hidden · weightᵀ` without materialising them: `hidden`
/// `[S, T, d]` are the final hidden states, `weight` `[V, d]` the head (the tied embedding, or the
/// transposed `lm_head`); differentiable in both. `chunk` vocabulary rows are live at a time.
pub fn fused_sequence_logprob(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    chunk: usize,
) -> Tensor<1> {
    let (sum, _lse) = <Dispatch as RrhfKernels>::fused_head_forward(
        hidden.into_dispatch(),
        weight.into_dispatch(),
        targets.into_dispatch(),
        mask.into_dispatch(),
        chunk,
    );
    Tensor::from_dispatch(sum)
}

/// The ranking loss per query `[Q]`: `kind` of p_i - p_j + `margin` summed over the pairs with
/// r_i < r_j; differentiable in `p`. `valid` is 1 for real response slots and 0 for the padding of queries with fewer
/// responses.
pub fn ranking_loss(
    p: Tensor<2>,
    rewards: Tensor<2>,
    valid: Tensor<2>,
    kind: PairLoss,
    margin: f32,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as RrhfKernels>::rank_loss_forward(
        p.into_dispatch(),
        rewards.into_dispatch(),
        valid.into_dispatch(),
        kind,
        margin,
    ))
}

/// The backward pass of [`ranking_loss`] on its own, for tests and benchmarks.
pub fn ranking_loss_backward(
    p: Tensor<2>,
    rewards: Tensor<2>,
    valid: Tensor<2>,
    grad: Tensor<1>,
    kind: PairLoss,
    margin: f32,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as RrhfKernels>::rank_loss_backward(
        p.into_dispatch(),
        rewards.into_dispatch(),
        valid.into_dispatch(),
        grad.into_dispatch(),
        kind,
        margin,
    ))
}

/// The CPU backend: the log-prob kernels of `cpu.rs` (the fused head's row reductions among
/// them), the AdamW kernel of `adamw.rs`, and the burn-ops reference for the ranking loss (a
/// `[Q, K, K]` computation too small to be worth a kernel) and for inputs the CPU kernels do not
/// read: wrap the primitives as tensors, call the burn-ops functions, unwrap the results.
impl RrhfKernels for Flex {
    fn seq_logprob_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if let Some(out) = cpu::seq_logprob_forward(&logits, &targets, &mask) {
            return out;
        }
        let (sum, lse) = reference::seq_logprob_forward(
            Tensor::from_primitive::<Flex>(logits),
            Tensor::from_primitive::<Flex>(targets),
            Tensor::from_primitive::<Flex>(mask),
        );
        (flex(sum), flex(lse))
    }

    fn seq_logprob_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if let Some(out) = cpu::seq_logprob_backward(&logits, &targets, &mask, &lse, &grad) {
            return out;
        }
        flex(reference::seq_logprob_backward(
            Tensor::from_primitive::<Flex>(logits),
            Tensor::from_primitive::<Flex>(targets),
            Tensor::from_primitive::<Flex>(mask),
            Tensor::from_primitive::<Flex>(lse),
            Tensor::from_primitive::<Flex>(grad),
        ))
    }

    fn rank_loss_forward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self> {
        flex(reference::rank_loss_forward(
            Tensor::from_primitive::<Flex>(p),
            Tensor::from_primitive::<Flex>(rewards),
            Tensor::from_primitive::<Flex>(valid),
            kind,
            margin,
        ))
    }

    fn rank_loss_backward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self> {
        flex(reference::rank_loss_backward(
            Tensor::from_primitive::<Flex>(p),
            Tensor::from_primitive::<Flex>(rewards),
            Tensor::from_primitive::<Flex>(valid),
            Tensor::from_primitive::<Flex>(grad),
            kind,
            margin,
        ))
    }

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

    fn adamw_update(
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        adamw::cpu(weight, grad, m, v, step)
    }
}

fn flex<const D: usize>(t: Tensor<D>) -> FloatTensor<Flex> {
    t.try_into_primitive::<Flex>()
        .expect("the reference keeps tensors on the CPU backend")
}
