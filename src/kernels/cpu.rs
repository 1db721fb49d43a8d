//! The sequence log-prob kernels of the CPU path: the same contract as the CubeCL kernels
//! (`cube_kernels.rs`), written as loops over rows split across rayon's threads.
//!
//! burn's ops take six passes over the logits for the forward (max, subtract, exp, sum, log,
//! gather), each allocating a tensor of the logits' size, and five for the backward; these take
//! one each, and write nothing but their outputs. On SmolLM2's head (1152 rows of 49152 logits,
//! 2 cores) that took the fused head's row reductions from 0.32 s + 0.33 s to the figures in the
//! README's CPU table. A masked row is skipped: its logsumexp is 0 and its gradient 0, as on
//! the GPU.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// Rows per rayon task: a few hundred KiB of logits, so two threads or sixteen share the work
/// evenly.
const ROWS_PER_TASK: usize = 4;

/// Host views of a log-prob kernel's inputs, when they are contiguous and of the dtypes the
/// loops read; `None` sends the caller to the burn-ops reference.
struct Rows<'a> {
    logits: &'a [f32],
    targets: Vec<usize>,
    mask: &'a [f32],
    vocab: usize,
}

impl<'a> Rows<'a> {
    fn of(
        logits: &'a FloatTensor<Flex>,
        targets: &IntTensor<Flex>,
        mask: &'a FloatTensor<Flex>,
    ) -> Option<Self> {
        let [_, _, vocab] = logits.shape().dims::<3>();
        let logits = logits.as_slice::<f32>()?;
        let mask = mask.as_slice::<f32>()?;
        // A target outside `0..vocab` matches no column (the fused head's chunks shift the
        // targets by the chunk's start): `usize::MAX` stands for it.
        let column = |t: i64| {
            usize::try_from(t)
                .ok()
                .filter(|&t| t < vocab)
                .unwrap_or(usize::MAX)
        };
        let targets: Vec<usize> = match targets.dtype() {
            DType::I64 => targets
                .as_slice::<i64>()?
                .iter()
                .map(|&t| column(t))
                .collect(),
            DType::I32 => targets
                .as_slice::<i32>()?
                .iter()
                .map(|&t| column(t as i64))
                .collect(),
            _ => return None,
        };
        let rows = mask.len();
        let fits = logits.len() == rows * vocab && targets.len() == rows;
        fits.then_some(Self {
            logits,
            targets,
            mask,
            vocab,
        })
    }
}

/// `(sum [S], lse [S, T])`, or `None` for inputs the loops do not read.
pub fn seq_logprob_forward(
    logits: &FloatTensor<Flex>,
    targets: &IntTensor<Flex>,
    mask: &FloatTensor<Flex>,
) -> Option<(FloatTensor<Flex>, FloatTensor<Flex>)> {
    let [s, t, _] = logits.shape().dims::<3>();
    let rows = Rows::of(logits, targets, mask)?;
    let v = rows.vocab;
    let scored = |row: usize| rows.mask[row] != 0.0;
    if (0..s * t).any(|row| scored(row) && rows.targets[row] == usize::MAX) {
        return None; // no target logit to score: the reference says what that means
    }
    // Per row: its logsumexp and its masked target log-prob.
    let mut per_row = vec![(0.0f32, 0.0f32); s * t];
    per_row
        .par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, out)| {
            for (i, out) in out.iter_mut().enumerate() {
                let row = task * ROWS_PER_TASK + i;
                let weight = rows.mask[row];
                if weight == 0.0 {
                    continue;
                }
                let x = &rows.logits[row * v..(row + 1) * v];
                let lse = logsumexp(x);
                *out = (lse, (x[rows.targets[row]] - lse) * weight);
            }
        });
    // Each sequence's sum in token order, on one thread: S·T additions.
    let sums: Vec<f32> = per_row
        .chunks(t.max(1))
        .map(|seq| seq.iter().map(|&(_, logp)| logp).sum())
        .collect();
    let lse: Vec<f32> = per_row.iter().map(|&(lse, _)| lse).collect();
    Some((
        FlexTensor::from_data(TensorData::new(sums, [s])),
        FlexTensor::from_data(TensorData::new(lse, [s, t])),
    ))
}

/// `d logits [S, T, V] = g[s] · mask[s, t] · (onehot(target) − softmax)`, or `None` for inputs
/// the loops do not read.
pub fn seq_logprob_backward(
    logits: &FloatTensor<Flex>,
    targets: &IntTensor<Flex>,
    mask: &FloatTensor<Flex>,
    lse: &FloatTensor<Flex>,
    grad: &FloatTensor<Flex>,
) -> Option<FloatTensor<Flex>> {
    let [s, t, _] = logits.shape().dims::<3>();
    let rows = Rows::of(logits, targets, mask)?;
    let lse = lse.as_slice::<f32>()?;
    let grad = grad.as_slice::<f32>()?;
    if lse.len() != s * t || grad.len() != s {
        return None;
    }
    let v = rows.vocab;
    let mut out = vec![0.0f32; s * t * v];
    out.par_chunks_mut(v * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, out)| {
            for (i, out) in out.chunks_mut(v).enumerate() {
                let row = task * ROWS_PER_TASK + i;
                if rows.mask[row] == 0.0 {
                    continue;
                }
                let weight = grad[row / t] * rows.mask[row];
                let x = &rows.logits[row * v..(row + 1) * v];
                let (lse, minus_weight) = (lse[row], -weight);
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = (x - lse).exp() * minus_weight;
                }
                if let Some(o) = out.get_mut(rows.targets[row]) {
                    *o += weight;
                }
            }
        });
    Some(FlexTensor::from_data(TensorData::new(out, [s, t, v])))
}

/// log Σ exp(x), shifted by the row's maximum so that nothing overflows.
fn logsumexp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f32 = x.iter().map(|&x| (x - max).exp()).sum();
    max + sum.ln()
}
