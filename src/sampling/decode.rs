//! The decoding steps that every generation policy shares: reading the prompts into a KV cache
//! (`prefill`), feeding one token per cache row (`decode_step`), and what one prompt produced.
//! `mod.rs` (sampling, greedy) and `beam.rs` (beam search) are both built on it.

use anyhow::{Result, ensure};
use burn::tensor::{Int, Tensor, TensorData};

use crate::model::{AttentionContext, KvCache, Llama};

/// What one prompt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// New tokens, including the stop token if one ended it.
    pub tokens: Vec<u32>,
    pub stopped: bool,
}

/// The state after every prompt has been read: its KV cache (one row per prompt) and the logits
/// of its next token.
pub(crate) struct Prefilled {
    pub cache: KvCache,
    /// `[prompts * V]` on the host.
    pub logits: Vec<f32>,
    /// Per prompt, which cache columns hold real tokens (prompts are left-padded).
    pub key_valid: Vec<Vec<bool>>,
    /// Per prompt, the tokens it holds so far: the rotary position of the next one.
    pub lengths: Vec<usize>,
}

/// Reads every prompt at once, left-padded to the longest.
pub(crate) fn prefill(model: &Llama, prompts: &[Vec<u32>]) -> Result<Prefilled> {
    ensure!(
        prompts.iter().all(|p| !p.is_empty()),
        "every prompt needs at least one token"
    );
    let device = model.device();
    let batch = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let tokens: Vec<i64> = prompts
        .iter()
        .zip(&pads)
        .flat_map(|(p, &pad)| std::iter::repeat_n(0, pad).chain(p.iter().map(|&t| t as i64)))
        .collect();
    let positions: Vec<usize> = pads
        .iter()
        .flat_map(|&pad| (0..width).map(move |j| j.saturating_sub(pad)))
        .collect();
    let key_valid: Vec<Vec<bool>> = pads
        .iter()
        .map(|&pad| (0..width).map(|j| j >= pad).collect())
        .collect();
    let flat: Vec<bool> = key_valid.concat();
    let ctx = AttentionContext::new(model, &positions, Some(&flat), batch, width, 0, &device);
    let mut cache = KvCache::default();
    let input = Tensor::<2, Int>::from_data(TensorData::new(tokens, [batch, width]), &device);
    let hidden = model.hidden_states(input, &ctx, Some(&mut cache));
    Ok(Prefilled {
        cache,
        logits: last_logits(model, hidden)?,
        key_valid,
        lengths: prompts.iter().map(Vec::len).collect(),
    })
}

/// Feeds one new token to each cache row; `row_prompts[i]` is the prompt of row i (several rows
/// may share one, as beams do). Returns the next logits, `[rows * V]` on the host.
pub(crate) fn decode_step(
    model: &Llama,
    cache: &mut KvCache,
    row_prompts: &[usize],
    tokens: &[u32],
    key_valid: &mut [Vec<bool>],
    lengths: &mut [usize],
) -> Result<Vec<f32>> {
    let device = model.device();
    let rows = row_prompts.len();
    let past = cache.len();
    let positions: Vec<usize> = row_prompts.iter().map(|&p| lengths[p]).collect();
    let mut seen = vec![false; lengths.len()];
    for &p in row_prompts {
        if !std::mem::replace(&mut seen[p], true) {
            lengths[p] += 1;
            key_valid[p].push(true);
        }
    }
    let flat: Vec<bool> = row_prompts
        .iter()
        .flat_map(|&p| key_valid[p].iter().copied())
        .collect();
    let ctx = AttentionContext::new(model, &positions, Some(&flat), rows, 1, past, &device);
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(tokens.iter().map(|&t| t as i64).collect(), [rows, 1]),
        &device,
    );
    let hidden = model.hidden_states(input, &ctx, Some(cache));
    last_logits(model, hidden)
}

/// Host copy of the logits at the last position of each row: `[B * V]`.
fn last_logits(model: &Llama, hidden: Tensor<3>) -> Result<Vec<f32>> {
    let [_, t, _] = hidden.dims();
    let logits = model.logits(hidden.narrow(1, t - 1, 1));
    let host = crate::device::to_host(logits)?;
    // A broken checkpoint would otherwise pick tokens from NaNs and print text as if all were well.
    ensure!(
        host.iter().all(|x| x.is_finite()),
        "the model's logits are not finite (NaN or infinite): its weights or config are broken"
    );
    Ok(host)
}
