//! The GPU kernels, written once in CubeCL: cubecl compiles them for whichever runtime the device
//! has (SPIR-V on Vulkan, MSL on Metal, WGSL on DX12 and browsers; CUDA/ROCm if enabled).
//! `shaders/` holds the WGSL they compile to, for reading (`tests/kernels.rs` keeps it current).
//!
//! Rules every kernel here keeps: every global access is bounds-checked by hand (cubecl clamps an
//! out-of-range index in checked mode rather than dropping it, so an unguarded write would land on
//! the last element); accumulation is in f32; any vocabulary size and row count works, not only
//! multiples of the cube size; no infinity literal (WGSL rejects one: a finite sentinel stands in);
//! reductions go through shared memory, which every runtime has (plane operations are missing on
//! CPU adapters); no float atomics, so results are reproducible; every unit of a cube reaches
//! every barrier.
//!
//! Indices are `usize`, which the WGSL runtime lowers to 32 bits: tensors are limited to 2^32
//! elements (`kernels::check_logits_fit`).
//!
//! A `let mut` whose initial value is a constant must be written `f32::new(..)` or a literal of
//! its own: cubecl keeps other constant expressions at compile time, and mutating one in a loop
//! miscompiles.

use cubecl::prelude::*;

/// The smallest finite f32: the running maximum's starting value.
const LOWEST: f32 = -3.4028235e38;

/// Sequence log-prob, forward: one cube per (sequence, position) row of `logits` `[rows, vocab]`.
///
/// Each unit folds a strided slice of the row into a running (max, sum of exp) pair, the pairs are
/// merged in shared memory, and unit 0 writes the row's logsumexp and the log-prob of its target.
/// Rows whose mask is 0 (query tokens, padding) skip the vocabulary and get 0 for both.
/// log_softmax over the vocabulary is never stored.
#[cube(launch)]
pub fn seq_logprob_forward(
    logits: &Tensor<f32>,
    targets: &Tensor<i32>,
    mask: &Tensor<f32>,
    token_logp: &mut Tensor<f32>,
    lse_out: &mut Tensor<f32>,
    rows: u32,
    vocab: u32,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS;
    let n_rows = rows as usize;
    let n_vocab = vocab as usize;
    let unit = UNIT_POS_X as usize;
    // Cube-uniform conditions: every unit of the cube takes the same path to each barrier.
    let in_range = row < n_rows;
    let scored = in_range && mask[row] != 0.0;
    let end = select(scored, n_vocab, 0usize);
    let base = row * n_vocab;
    let mut part_max = Shared::<[f32]>::new_slice(cube_size);
    let mut part_sum = Shared::<[f32]>::new_slice(cube_size);

    let mut m = f32::new(LOWEST);
    let mut s = f32::new(0.0);
    let mut v = unit;
    while v < end {
        let x = logits[base + v];
        if x > m {
            s = s * (m - x).exp() + 1.0;
            m = x;
        } else {
            s += (x - m).exp();
        }
        v += cube_size;
    }
    part_max[unit] = m;
    part_sum[unit] = s;
    sync_cube();

    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            let m1 = part_max[unit];
            let m2 = part_max[unit + stride];
            let mm = max(m1, m2);
            part_sum[unit] =
                part_sum[unit] * (m1 - mm).exp() + part_sum[unit + stride] * (m2 - mm).exp();
            part_max[unit] = mm;
        }
        sync_cube();
        stride /= 2;
    }

    if unit == 0 && in_range {
        let mut lse = f32::new(0.0);
        let mut logp = f32::new(0.0);
        if scored {
            lse = part_max[0] + part_sum[0].ln();
            let target = max(min(targets[row], n_vocab as i32 - 1), 0i32);
            logp = logits[base + target as usize] - lse;
        }
        lse_out[row] = lse;
        token_logp[row] = logp;
    }
}

/// Sequence log-prob, backward: one cube per row, writing the whole row of the gradient:
/// `d logits[v] = g · mask · ([v == target] − exp(logit_v − lse))` with g the gradient of the
/// row's sequence, the softmax recomputed from the logsumexp the forward saved. Rows whose mask is
/// 0 get zeros. A target outside `0..vocab` (the fused head passes each vocabulary chunk its
/// targets shifted to it) matches no column.
#[cube(launch)]
pub fn seq_logprob_backward(
    logits: &Tensor<f32>,
    targets: &Tensor<i32>,
    mask: &Tensor<f32>,
    lse: &Tensor<f32>,
    grad_seq: &Tensor<f32>,
    grad_logits: &mut Tensor<f32>,
    rows: u32,
    vocab: u32,
    positions: u32,
    #[comptime] cube_size: usize,
) {
    let row = CUBE_POS;
    if row < rows as usize {
        let n_vocab = vocab as usize;
        let g = grad_seq[row / positions as usize] * mask[row];
        let row_lse = lse[row];
        let target = targets[row];
        let base = row * n_vocab;
        let mut v = UNIT_POS_X as usize;
        while v < n_vocab {
            let mut d = f32::new(0.0);
            if g != 0.0 {
                d = -g * (logits[base + v] - row_lse).exp();
                if v as i32 == target {
                    d += g;
                }
            }
            grad_logits[base + v] = d;
            v += cube_size;
        }
    }
}

/// log(1 + exp(g)) without overflow for large g.
#[cube]
fn softplus(g: f32) -> f32 {
    max(g, 0.0) + (1.0 + (-g.abs()).exp()).ln()
}

/// The pair loss' slope f'(g): the hinge's step (0 at g = 0, as the reference has it) or the
/// logistic's sigmoid.
#[cube]
fn pair_slope(g: f32, #[comptime] logistic: bool) -> f32 {
    if logistic {
        1.0 / (1.0 + (-g).exp())
    } else {
        select(g > 0.0, 1.0f32, 0.0f32)
    }
}

/// Ranking loss, forward: one unit per query of `p`, `rewards`, `valid` `[queries, slots]`.
/// `loss[q]` sums f(p_i − p_j + margin) over the slot pairs with r_i < r_j, f being RRHF's hinge
/// max(0, g) or the logistic log(1 + exp(g)) (reward models). Ties and padded slots
/// (`valid == 0`) add nothing.
#[cube(launch)]
pub fn rank_loss_forward(
    p: &Tensor<f32>,
    rewards: &Tensor<f32>,
    valid: &Tensor<f32>,
    loss: &mut Tensor<f32>,
    queries: u32,
    slots: u32,
    margin: f32,
    #[comptime] logistic: bool,
) {
    let q = ABSOLUTE_POS;
    if q < queries as usize {
        let k = slots as usize;
        let base = q * k;
        let mut total = f32::new(0.0);
        for i in 0..k {
            if valid[base + i] != 0.0 {
                for j in 0..k {
                    if valid[base + j] != 0.0 && rewards[base + i] < rewards[base + j] {
                        let g = p[base + i] - p[base + j] + margin;
                        if logistic {
                            total += softplus(g);
                        } else {
                            total += max(g, 0.0);
                        }
                    }
                }
            }
        }
        loss[q] = total;
    }
}

/// Ranking loss, backward: one unit per (query, slot). A pair (i, j) with r_i < r_j and gap
/// g = p_i − p_j + margin adds f'(g)·grad to dp_i and −f'(g)·grad to dp_j.
#[cube(launch)]
pub fn rank_loss_backward(
    p: &Tensor<f32>,
    rewards: &Tensor<f32>,
    valid: &Tensor<f32>,
    grad_loss: &Tensor<f32>,
    grad_p: &mut Tensor<f32>,
    queries: u32,
    slots: u32,
    margin: f32,
    #[comptime] logistic: bool,
) {
    let at = ABSOLUTE_POS;
    let k = slots as usize;
    if at < queries as usize * k {
        let q = at / k;
        let base = q * k;
        let mut d = f32::new(0.0);
        if valid[at] != 0.0 {
            let pi = p[at];
            let ri = rewards[at];
            for j in 0..k {
                if valid[base + j] != 0.0 {
                    let pj = p[base + j];
                    let rj = rewards[base + j];
                    if ri < rj {
                        d += pair_slope(pi - pj + margin, logistic);
                    }
                    if rj < ri {
                        d -= pair_slope(pj - pi + margin, logistic);
                    }
                }
            }
        }
        grad_p[at] = d * grad_loss[q];
    }
}

/// Listwise loss: log of the sum of exp(p_j) over head `h`'s choice set (h itself, and the
/// valid slots h beats), shifted by the set's maximum. Only called for a valid h.
#[cube]
fn listwise_lse(
    p: &Tensor<f32>,
    rewards: &Tensor<f32>,
    valid: &Tensor<f32>,
    base: usize,
    k: usize,
    h: usize,
) -> f32 {
    let rh = rewards[base + h];
    let mut m = p[base + h];
    for j in 0..k {
        if valid[base + j] != 0.0 && rewards[base + j] < rh {
            m = max(m, p[base + j]);
        }
    }
    let mut sum = f32::new(0.0);
    for j in 0..k {
        if j == h || (valid[base + j] != 0.0 && rewards[base + j] < rh) {
            sum += (p[base + j] - m).exp();
        }
    }
    m + sum.ln()
}

/// Whether valid slot `h` beats another valid slot of its query: a head of the listwise loss.
#[cube]
fn beats_another(
    rewards: &Tensor<f32>,
    valid: &Tensor<f32>,
    base: usize,
    k: usize,
    h: usize,
) -> bool {
    let mut found = false;
    if valid[base + h] != 0.0 {
        for j in 0..k {
            if valid[base + j] != 0.0 && rewards[base + j] < rewards[base + h] {
                found = true;
            }
        }
    }
    found
}

/// Listwise loss (PRO, ListMLE), forward: one unit per query. `loss[q]` sums, over the heads h
/// (slots that beat another), logsumexp(p over h and the slots h beats) − p_h.
#[cube(launch)]
pub fn listwise_loss_forward(
    p: &Tensor<f32>,
    rewards: &Tensor<f32>,
    valid: &Tensor<f32>,
    loss: &mut Tensor<f32>,
    queries: u32,
    slots: u32,
) {
    let q = ABSOLUTE_POS;
    if q < queries as usize {
        let k = slots as usize;
        let base = q * k;
        let mut total = f32::new(0.0);
        for h in 0..k {
            if beats_another(rewards, valid, base, k, h) {
                total += listwise_lse(p, rewards, valid, base, k, h) - p[base + h];
            }
        }
        loss[q] = total;
    }
}

/// Listwise loss, backward: one unit per (query, slot) a. d p_a = grad · (sum over heads h whose
/// choice set holds a of exp(p_a − lse_h), minus 1 if a is a head).
#[cube(launch)]
pub fn listwise_loss_backward(
    p: &Tensor<f32>,
    rewards: &Tensor<f32>,
    valid: &Tensor<f32>,
    grad_loss: &Tensor<f32>,
    grad_p: &mut Tensor<f32>,
    queries: u32,
    slots: u32,
) {
    let at = ABSOLUTE_POS;
    let k = slots as usize;
    if at < queries as usize * k {
        let q = at / k;
        let base = q * k;
        let a = at - base;
        let mut d = f32::new(0.0);
        if valid[at] != 0.0 {
            for h in 0..k {
                if beats_another(rewards, valid, base, k, h) {
                    let in_set = h == a || rewards[at] < rewards[base + h];
                    if in_set {
                        let lse = listwise_lse(p, rewards, valid, base, k, h);
                        d += (p[at] - lse).exp();
                        if h == a {
                            d -= 1.0;
                        }
                    }
                }
            }
        }
        grad_p[at] = d * grad_loss[q];
    }
}
