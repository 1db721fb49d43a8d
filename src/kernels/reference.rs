//! The kernels written with plain burn tensor ops: the oracle the CubeCL kernels and the CPU
//! kernels (`cpu.rs`) are tested against, and the CPU path's ranking loss.
//!
//! The forward functions are differentiable by burn's own autodiff, which is how the
//! hand-written backward functions beside them are checked.

use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

use super::contract::PairLoss;

/// Per sequence, the summed log-prob of the masked targets `[S]`, and the per-row logsumexp
/// `[S, T]` the backward pass reuses.
pub fn seq_logprob_forward(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> (Tensor<1>, Tensor<2>) {
    let [s, t, _] = logits.dims();
    let lse = logsumexp_last(logits.clone());
    let target_logit = logits.gather(2, targets.reshape([s, t, 1]));
    let token_logp = (target_logit - lse.clone()).reshape([s, t]) * mask;
    (token_logp.sum_dim(1).reshape([s]), lse.reshape([s, t]))
}

/// `d logits = g * mask * (onehot(target) - softmax)`.
pub fn seq_logprob_backward(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    lse: Tensor<2>,
    grad: Tensor<1>,
) -> Tensor<3> {
    let [s, t, _] = logits.dims();
    let weight = (grad.reshape([s, 1]) * mask).reshape([s, t, 1]);
    let softmax = (logits - lse.reshape([s, t, 1])).exp();
    (softmax * -weight.clone()).scatter(
        2,
        targets.reshape([s, t, 1]),
        weight,
        IndexingUpdateOp::Add,
    )
}

fn logsumexp_last(x: Tensor<3>) -> Tensor<3> {
    let max = x.clone().max_dim(2).detach();
    (x - max.clone()).exp().sum_dim(2).log() + max
}

/// The ranking loss per query `[Q]`: the sum over slot pairs with r_i < r_j of
/// max(0, g) (hinge) or log(1 + exp(g)) (logistic), g = p_i - p_j + margin.
pub fn rank_loss_forward(
    p: Tensor<2>,
    rewards: Tensor<2>,
    valid: Tensor<2>,
    kind: PairLoss,
    margin: f32,
) -> Tensor<1> {
    let [q, _] = p.dims();
    let cost = match kind {
        PairLoss::Hinge => relu(pairwise_gap(p).add_scalar(margin)),
        PairLoss::Logistic => {
            let gap = pairwise_gap(p).add_scalar(margin);
            // max(g, 0) + log(1 + exp(-|g|)): log(1 + exp(g)) without overflow.
            relu(gap.clone()) + (-gap.abs()).exp().add_scalar(1.0).log()
        }
        PairLoss::Listwise => return listwise_forward(p, rewards, valid),
    };
    (cost * ordered_pairs(rewards, valid))
        .sum_dim(2)
        .sum_dim(1)
        .reshape([q])
}

/// `d p_i = g * (sum_{j: r_i < r_j} f'(p_i - p_j + m) - sum_{j: r_j < r_i} f'(p_j - p_i + m))`,
/// with f' the step function (hinge; 0 at a zero gap) or the sigmoid (logistic).
pub fn rank_loss_backward(
    p: Tensor<2>,
    rewards: Tensor<2>,
    valid: Tensor<2>,
    grad: Tensor<1>,
    kind: PairLoss,
    margin: f32,
) -> Tensor<2> {
    let [q, k] = p.dims();
    let slope = match kind {
        PairLoss::Hinge => pairwise_gap(p).add_scalar(margin).greater_elem(0.0).float(),
        PairLoss::Logistic => sigmoid(pairwise_gap(p).add_scalar(margin)),
        PairLoss::Listwise => return listwise_backward(p, rewards, valid, grad),
    };
    let active = ordered_pairs(rewards, valid) * slope;
    let as_lower = active.clone().sum_dim(2).reshape([q, k]);
    let as_higher = active.sum_dim(1).reshape([q, k]);
    (as_lower - as_higher) * grad.reshape([q, 1])
}

/// The listwise loss per query `[Q]`: over the heads h (responses that beat at least one
/// other), logsumexp of p over {h} and the responses h beats, minus p_h.
fn listwise_forward(p: Tensor<2>, rewards: Tensor<2>, valid: Tensor<2>) -> Tensor<1> {
    let [q, _] = p.dims();
    let (choice, heads) = listwise_sets(rewards, valid);
    let (lse, _) = masked_logsumexp(p.clone(), choice);
    ((lse - p) * heads).sum_dim(1).reshape([q])
}

/// `d p_j = g * (sum_h head_h * softmax_h(j) - head_j)`, softmax_h over h's choice set.
fn listwise_backward(
    p: Tensor<2>,
    rewards: Tensor<2>,
    valid: Tensor<2>,
    grad: Tensor<1>,
) -> Tensor<2> {
    let [q, k] = p.dims();
    let (choice, heads) = listwise_sets(rewards, valid);
    let (lse, values) = masked_logsumexp(p, choice);
    let softmax = (values - lse.reshape([q, k, 1]).expand([q, k, k])).exp();
    let chosen = (softmax * heads.clone().reshape([q, k, 1]).expand([q, k, k]))
        .sum_dim(1)
        .reshape([q, k]);
    (chosen - heads) * grad.reshape([q, 1])
}

/// `([Q, K, K], [Q, K])`: at `[q, h, j]` 1 where j is in head h's choice set (h itself, and the
/// responses h beats) and h is a head; at `[q, h]` 1 where h beats at least one response.
fn listwise_sets(rewards: Tensor<2>, valid: Tensor<2>) -> (Tensor<3>, Tensor<2>) {
    let [q, k] = rewards.dims();
    // ordered_pairs is 1 at [j, h] where r_j < r_h: its transpose lists what h beats.
    let beaten = ordered_pairs(rewards, valid).swap_dims(1, 2);
    let heads = beaten
        .clone()
        .sum_dim(2)
        .reshape([q, k])
        .greater_elem(0.0)
        .float();
    let itself = Tensor::<2>::eye(k, &heads.device())
        .reshape([1, k, k])
        .expand([q, k, k]);
    let choice = (beaten + itself) * heads.clone().reshape([q, k, 1]).expand([q, k, k]);
    (choice, heads)
}

/// `([Q, K], [Q, K, K])`: log sum_j exp(p_j) over the j with `set[q, h, j] = 1` (0 for an
/// empty set), each row shifted by its own maximum so that gaps of any size stay finite; and
/// p laid out per row with -1e30 outside the set, whose exp is 0.
fn masked_logsumexp(p: Tensor<2>, set: Tensor<3>) -> (Tensor<2>, Tensor<3>) {
    let [q, k] = p.dims();
    let outside = set.clone().equal_elem(0.0);
    let values = p
        .reshape([q, 1, k])
        .expand([q, k, k])
        .mask_fill(outside, -1e30);
    let max = values.clone().max_dim(2).detach();
    let max = max.clone().mask_fill(max.lower_elem(-1e29), 0.0);
    let sum = (values.clone() - max.clone()).exp().sum_dim(2);
    // An empty set (a row that is no head) would take log 0: give it log 1 at the shift.
    let empty = sum.clone().equal_elem(0.0);
    (
        (sum.mask_fill(empty, 1.0).log() + max).reshape([q, k]),
        values,
    )
}

/// `[Q, K, K]`: p_i - p_j at `[q, i, j]`.
fn pairwise_gap(p: Tensor<2>) -> Tensor<3> {
    let [q, k] = p.dims();
    p.clone().reshape([q, k, 1]).expand([q, k, k]) - p.reshape([q, 1, k]).expand([q, k, k])
}

/// `[Q, K, K]`: 1 where both slots are real responses and r_i < r_j.
fn ordered_pairs(rewards: Tensor<2>, valid: Tensor<2>) -> Tensor<3> {
    let [q, k] = rewards.dims();
    let lower = rewards
        .clone()
        .reshape([q, k, 1])
        .expand([q, k, k])
        .lower(rewards.reshape([q, 1, k]).expand([q, k, k]))
        .float();
    let both_valid = valid.clone().reshape([q, k, 1]).expand([q, k, k])
        * valid.reshape([q, 1, k]).expand([q, k, k]);
    lower * both_valid
}
