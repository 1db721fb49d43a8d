//! The backward passes of the kernels, attached to burn-autodiff by hand.
//!
//! Each forward records one node whose only differentiable parent is the float input (logits,
//! or the scores p); targets, masks and rewards are data. The state the backward needs
//! (inputs and, for the log-prob, the row logsumexps) is kept on the node.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend};

use super::contract::{PairLoss, RrhfKernels};

#[derive(Debug)]
struct SeqLogprobBackward;

impl<B: RrhfKernels> Backward<B, 1> for SeqLogprobBackward {
    type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, mask, lse) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::seq_logprob_backward(logits, targets, mask, lse, grad)
        });
    }
}

#[derive(Debug)]
struct RankLossBackward;

impl<B: RrhfKernels> Backward<B, 1> for RankLossBackward {
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        PairLoss,
        f32,
    );

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (p, rewards, valid, kind, margin) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::rank_loss_backward(p, rewards, valid, grad, kind, margin)
        });
    }
}

#[derive(Debug)]
struct FusedHeadBackward;

impl<B: RrhfKernels> Backward<B, 2> for FusedHeadBackward {
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        IntTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        usize,
    );

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (hidden, weight, targets, mask, lse, chunk) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        // One pass over the vocabulary gives both gradients, so `binary`'s one closure per
        // parent does not fit.
        let [hidden_node, weight_node] = ops.parents;
        let (d_hidden, d_weight) = B::fused_head_backward(
            hidden,
            weight,
            targets,
            mask,
            lse,
            grad,
            chunk,
            weight_node.is_some(),
        );
        if let Some(node) = hidden_node {
            grads.register::<B>(node.id, d_hidden);
        }
        if let (Some(node), Some(d_weight)) = (weight_node, d_weight) {
            grads.register::<B>(node.id, d_weight);
        }
    }
}

impl<B: RrhfKernels, C: CheckpointStrategy> RrhfKernels for Autodiff<B, C> {
    fn seq_logprob_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let guard = logits.node();
        let logits = logits.into_primitive();
        let mask = mask.into_primitive();
        let (sum, lse) = B::seq_logprob_forward(logits.clone(), targets.clone(), mask.clone());
        let sum = match SeqLogprobBackward
            .prepare::<C>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((logits, targets, mask, lse.clone()), sum),
            OpsKind::UnTracked(prep) => prep.finish(sum),
        };
        (sum, Self::from_inner(lse))
    }

    fn seq_logprob_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::seq_logprob_backward(
            logits.into_primitive(),
            targets,
            mask.into_primitive(),
            lse.into_primitive(),
            grad.into_primitive(),
        ))
    }

    fn rank_loss_forward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self> {
        let guard = p.node();
        let p = p.into_primitive();
        let rewards = rewards.into_primitive();
        let valid = valid.into_primitive();
        let loss = B::rank_loss_forward(p.clone(), rewards.clone(), valid.clone(), kind, margin);
        match RankLossBackward
            .prepare::<C>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((p, rewards, valid, kind, margin), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        }
    }

    fn rank_loss_backward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::rank_loss_backward(
            p.into_primitive(),
            rewards.into_primitive(),
            valid.into_primitive(),
            grad.into_primitive(),
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
        let parents = [hidden.node(), weight.node()];
        let hidden = hidden.into_primitive();
        let weight = weight.into_primitive();
        let mask = mask.into_primitive();
        let (sum, lse) = B::fused_head_forward(
            hidden.clone(),
            weight.clone(),
            targets.clone(),
            mask.clone(),
            chunk,
        );
        let sum = match FusedHeadBackward
            .prepare::<C>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish((hidden, weight, targets, mask, lse.clone(), chunk), sum)
            }
            OpsKind::UnTracked(prep) => prep.finish(sum),
        };
        (sum, Self::from_inner(lse))
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
        let (d_hidden, d_weight) = B::fused_head_backward(
            hidden.into_primitive(),
            weight.into_primitive(),
            targets,
            mask.into_primitive(),
            lse.into_primitive(),
            grad.into_primitive(),
            chunk,
            weight_grad,
        );
        (Self::from_inner(d_hidden), d_weight.map(Self::from_inner))
    }
}
