//! Generation with a KV cache, batched over prompts of different lengths.
//!
//! Prompts are left-padded to a common length; each row's rotary positions start at its first
//! real token and its padding is masked out of attention, so a prompt's continuation does not
//! depend on what it is batched with. Rows that reach a stop token leave the batch (their cache
//! rows are dropped). Token choice happens on the host: greedy, or temperature with top-k and
//! top-p, each row with its own seeded generator.

use anyhow::{Result, ensure};
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::model::{AttentionContext, KvCache, Llama};

#[derive(Debug, Clone, clap::Args, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Most tokens to generate per prompt.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens whose probabilities sum to p (1: no limit).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler; the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.temperature >= 0.0 && self.temperature.is_finite(),
            "temperature must be >= 0, got {}",
            self.temperature
        );
        ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "top_p must be in (0, 1], got {}",
            self.top_p
        );
        Ok(())
    }
}

/// What one prompt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// New tokens, including the stop token if one ended it.
    pub tokens: Vec<u32>,
    pub stopped: bool,
}

/// Continues every prompt until a token of `stop_ids` or `max_new_tokens`.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    stop_ids: &[u32],
) -> Result<Vec<Generated>> {
    cfg.validate()?;
    ensure!(
        prompts.iter().all(|p| !p.is_empty()),
        "every prompt needs at least one token"
    );
    let device = model.device();
    let batch = prompts.len();
    let mut out: Vec<Generated> = vec![
        Generated {
            tokens: vec![],
            stopped: false
        };
        batch
    ];
    if batch == 0 || cfg.max_new_tokens == 0 {
        return Ok(out);
    }
    let width = prompts.iter().map(Vec::len).max().unwrap();
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let mut rngs: Vec<StdRng> = (0..batch)
        .map(|row| {
            StdRng::seed_from_u64(cfg.seed ^ (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        })
        .collect();

    // Prefill: every prompt at once, left-padded.
    let tokens: Vec<i64> = prompts
        .iter()
        .zip(&pads)
        .flat_map(|(p, &pad)| std::iter::repeat_n(0, pad).chain(p.iter().map(|&t| t as i64)))
        .collect();
    let positions: Vec<usize> = pads
        .iter()
        .flat_map(|&pad| (0..width).map(move |j| j.saturating_sub(pad)))
        .collect();
    let mut key_valid: Vec<Vec<bool>> = pads
        .iter()
        .map(|&pad| (0..width).map(|j| j >= pad).collect())
        .collect();
    let flat: Vec<bool> = key_valid.concat();
    let ctx = AttentionContext::new(model, &positions, Some(&flat), batch, width, 0, &device);
    let mut cache = KvCache::default();
    let input = Tensor::<2, Int>::from_data(TensorData::new(tokens, [batch, width]), &device);
    let hidden = model.hidden_states(input, &ctx, Some(&mut cache));
    let mut logits = last_logits(model, hidden)?;

    // `active[i]` is the prompt index of batch row i.
    let mut active: Vec<usize> = (0..batch).collect();
    let mut lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    for step in 0..cfg.max_new_tokens {
        let vocab = logits.len() / active.len();
        let mut next = Vec::with_capacity(active.len());
        for (row, &p) in active.iter().enumerate() {
            let token = choose(&logits[row * vocab..(row + 1) * vocab], cfg, &mut rngs[p]);
            out[p].tokens.push(token);
            out[p].stopped = stop_ids.contains(&token);
            next.push(token);
        }
        let keep: Vec<usize> = (0..active.len())
            .filter(|&r| !out[active[r]].stopped)
            .collect();
        if keep.is_empty() || step + 1 == cfg.max_new_tokens {
            break;
        }
        if keep.len() < active.len() {
            cache.retain_rows(&keep, &device);
            active = keep.iter().map(|&r| active[r]).collect();
            next = keep.iter().map(|&r| next[r]).collect();
        }
        let b = active.len();
        let past = cache.len();
        let positions: Vec<usize> = active.iter().map(|&p| lengths[p]).collect();
        for &p in &active {
            lengths[p] += 1;
            key_valid[p].push(true);
        }
        let flat: Vec<bool> = active
            .iter()
            .flat_map(|&p| key_valid[p].iter().copied())
            .collect();
        let ctx = AttentionContext::new(model, &positions, Some(&flat), b, 1, past, &device);
        let input = Tensor::<2, Int>::from_data(
            TensorData::new(next.iter().map(|&t| t as i64).collect(), [b, 1]),
            &device,
        );
        let hidden = model.hidden_states(input, &ctx, Some(&mut cache));
        logits = last_logits(model, hidden)?;
    }
    Ok(out)
}

/// Host copy of the logits at the last position of each row: `[B * V]`.
fn last_logits(model: &Llama, hidden: Tensor<3>) -> Result<Vec<f32>> {
    let [_, t, _] = hidden.dims();
    let logits = model.logits(hidden.narrow(1, t - 1, 1));
    logits
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))
}

/// Picks the next token from one row of logits.
fn choose(logits: &[f32], cfg: &SamplingConfig, rng: &mut StdRng) -> u32 {
    if cfg.temperature == 0.0 {
        // First maximum, as torch.argmax.
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if cfg.top_k > 0 {
        order.truncate(cfg.top_k);
    }
    let t = cfg.temperature as f64;
    let max = logits[order[0]] as f64 / t;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| (logits[i] as f64 / t - max).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    // Nucleus: the shortest prefix of the sorted tokens holding at least top_p of the mass.
    let mut kept = weights.len();
    if cfg.top_p < 1.0 {
        let mut mass = 0.0;
        for (i, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= cfg.top_p as f64 {
                kept = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut u = rng.random::<f64>() * kept_total;
    for (i, w) in weights[..kept].iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return order[i] as u32;
        }
    }
    order[kept - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32, top_k: usize, top_p: f32) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: 1,
            temperature,
            top_k,
            top_p,
            seed: 0,
        }
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            choose(&[0.0, 3.0, 3.0, 1.0], &cfg(0.0, 0, 1.0), &mut rng),
            1
        );
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(
                choose(&[0.5, 0.1, 2.0, 1.9], &cfg(1.0, 1, 1.0), &mut rng),
                2
            );
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities ~ [0.665, 0.245, 0.090]: p = 0.8 keeps the first two only.
        let logits = [2.0, 1.0, 0.0];
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = [0usize; 3];
        for _ in 0..2000 {
            seen[choose(&logits, &cfg(1.0, 0, 0.8), &mut rng) as usize] += 1;
        }
        assert_eq!(seen[2], 0);
        let frac = seen[0] as f64 / 2000.0;
        assert!((frac - 0.731).abs() < 0.04, "{frac}"); // 0.665 / (0.665 + 0.245)
    }
}
