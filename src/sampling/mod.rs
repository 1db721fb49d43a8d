//! Generation with a KV cache, batched over prompts of different lengths, and the policies that
//! draw k responses per query for RRHF: top-p sampling, beam search, diverse beam search, greedy.
//!
//! Prompts are left-padded to a common length; each row's rotary positions start at its first
//! real token and its padding is masked out of attention, so a prompt's continuation does not
//! depend on what it is batched with. Rows that reach a stop token leave the batch (their cache
//! rows are dropped). Token choice happens on the host: greedy, or temperature with top-k and
//! top-p. Each sampled sequence has a generator of its own, keyed by (seed, round, query, sample)
//! ([`sequence_rng`]), so its draws depend neither on how the queries are batched or ordered nor
//! on the device: two devices draw the same numbers and differ only where their logits do.

use anyhow::{Result, ensure};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::model::Llama;

pub mod beam;
mod decode;
pub use beam::{BeamConfig, beam_search};
pub use decode::Generated;
use decode::{Prefilled, decode_step, prefill};

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

/// Continues every prompt until a token of `stop_ids` or `max_new_tokens`.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    stop_ids: &[u32],
) -> Result<Vec<Generated>> {
    let rngs = (0..prompts.len() as u64)
        .map(|query| sequence_rng(cfg.seed, 0, query, 0))
        .collect();
    generate_rows(model, prompts, cfg, stop_ids, rngs)
}

/// The random generator of one sampled sequence: the seed, the online round (0 outside
/// training), the query's index in its file and the sample's number among the query's k.
/// Keyed by what the sequence is rather than by its place in a batch, so a rerun with other
/// batching, or on another device, draws the same numbers for it.
pub fn sequence_rng(seed: u64, round: u64, query: u64, sample: u64) -> StdRng {
    StdRng::seed_from_u64(derived_seed(seed, &[round, query, sample]))
}

/// A seed for one use of the run's `seed` (a sequence, a step's dropout), from the numbers that
/// name that use, mixed by SplitMix64's finaliser: no part can stand in for another.
pub fn derived_seed(seed: u64, parts: &[u64]) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    parts.iter().fold(mix(seed), |h, &part| mix(h ^ part))
}

/// [`generate`], row `i` drawing from `rngs[i]`.
fn generate_rows(
    model: &Llama,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
    stop_ids: &[u32],
    mut rngs: Vec<StdRng>,
) -> Result<Vec<Generated>> {
    cfg.validate()?;
    let batch = prompts.len();
    debug_assert_eq!(rngs.len(), batch);
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
    let Prefilled {
        mut cache,
        mut logits,
        mut key_valid,
        mut lengths,
    } = prefill(model, prompts)?;
    let device = model.device();

    // `active[i]` is the prompt index of batch row i.
    let mut active: Vec<usize> = (0..batch).collect();
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
            cache.select_rows(&keep, &device);
            active = keep.iter().map(|&r| active[r]).collect();
            next = keep.iter().map(|&r| next[r]).collect();
        }
        logits = decode_step(
            model,
            &mut cache,
            &active,
            &next,
            &mut key_valid,
            &mut lengths,
        )?;
    }
    Ok(out)
}

/// How the k responses of a query are drawn.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// k independent samples at `temperature`, within `top_p` (and `top_k`).
    #[default]
    TopP,
    /// The k best beams.
    Beam,
    /// k beams in `beam_groups` groups pushed apart by `diversity_penalty` (the paper's choice).
    DiverseBeam,
    /// The single most likely continuation: one response per query, whatever k is.
    Greedy,
}

/// Everything that decides the responses drawn for a set of queries: the CLI's `rrhf sample`
/// options and the `[online]` section of a training config are this one type.
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsePolicy {
    #[arg(long, value_enum, default_value = "top-p")]
    pub policy: Policy,
    /// Responses per query.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// top-p: softmax temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// top-p: keep the most likely tokens holding this much probability.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// top-p: and at most this many of them (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// diverse-beam: groups of beams (default: k, one beam per group).
    #[arg(long)]
    pub beam_groups: Option<usize>,
    /// diverse-beam: log-probability taken from a token for each earlier group that chose it.
    #[arg(long, default_value_t = 1.0)]
    pub diversity_penalty: f32,
    /// beams: hypotheses are ranked by summed log-prob / length^length_penalty.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Queries generated together (memory grows with it).
    #[arg(long, default_value_t = 8)]
    pub batch_queries: usize,
}

impl Default for ResponsePolicy {
    fn default() -> Self {
        Self {
            policy: Policy::TopP,
            k: 4,
            max_new_tokens: 128,
            temperature: 1.0,
            top_p: 0.9,
            top_k: 0,
            beam_groups: None,
            diversity_penalty: 1.0,
            length_penalty: 1.0,
            seed: 0,
            batch_queries: 8,
        }
    }
}

impl ResponsePolicy {
    /// Responses each query gets.
    pub fn responses_per_query(&self) -> usize {
        if self.policy == Policy::Greedy {
            1
        } else {
            self.k
        }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.k >= 1, "k must be at least 1");
        ensure!(self.batch_queries >= 1, "batch_queries must be at least 1");
        self.sampling().validate()?;
        if self.policy == Policy::TopP {
            ensure!(
                self.temperature > 0.0,
                "top-p sampling needs a temperature > 0 (use the greedy policy for 0)"
            );
        }
        ensure!(
            self.diversity_penalty.is_finite() && self.diversity_penalty >= 0.0,
            "diversity_penalty must be a number >= 0, got {}",
            self.diversity_penalty
        );
        ensure!(
            self.length_penalty.is_finite(),
            "length_penalty must be a finite number, got {}",
            self.length_penalty
        );
        if let Some(g) = self.beam_groups {
            ensure!(
                g >= 1 && self.k % g == 0,
                "beam_groups ({g}) must divide k ({})",
                self.k
            );
        }
        Ok(())
    }

    fn sampling(&self) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: if self.policy == Policy::Greedy {
                0.0
            } else {
                self.temperature
            },
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        }
    }

    fn beams(&self) -> BeamConfig {
        let groups = match self.policy {
            Policy::DiverseBeam => self.beam_groups.unwrap_or(self.k),
            _ => 1,
        };
        BeamConfig {
            beams: self.k,
            groups,
            diversity_penalty: if groups > 1 {
                self.diversity_penalty
            } else {
                0.0
            },
            length_penalty: self.length_penalty,
            max_new_tokens: self.max_new_tokens,
        }
    }
}

/// Which queries a call of [`sample_responses`] samples, for their generators
/// ([`sequence_rng`]): the online round (0 outside training) and each prompt's index in its
/// query file.
pub struct Draws<'a> {
    pub round: u64,
    pub queries: &'a [usize],
}

/// Draws the responses of every prompt, `policy.batch_queries` prompts at a time, calling
/// `progress(prompts_done, new_tokens)` after each batch.
pub fn sample_responses(
    model: &Llama,
    prompts: &[Vec<u32>],
    draws: Draws<'_>,
    policy: &ResponsePolicy,
    stop_ids: &[u32],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<Generated>>> {
    policy.validate()?;
    ensure!(
        draws.queries.len() == prompts.len(),
        "{} prompts but {} query indices",
        prompts.len(),
        draws.queries.len()
    );
    let mut out = Vec::with_capacity(prompts.len());
    for (chunk_index, chunk) in prompts.chunks(policy.batch_queries).enumerate() {
        let first_prompt = chunk_index * policy.batch_queries;
        let queries = &draws.queries[first_prompt..first_prompt + chunk.len()];
        let responses = match policy.policy {
            Policy::Greedy => generate(model, chunk, &policy.sampling(), stop_ids)?
                .into_iter()
                .map(|g| vec![g])
                .collect(),
            Policy::TopP => {
                let k = policy.k;
                let repeated: Vec<Vec<u32>> = chunk
                    .iter()
                    .flat_map(|p| std::iter::repeat_n(p.clone(), k))
                    .collect();
                let rngs = queries
                    .iter()
                    .flat_map(|&q| {
                        (0..k as u64)
                            .map(move |s| sequence_rng(policy.seed, draws.round, q as u64, s))
                    })
                    .collect();
                let flat = generate_rows(model, &repeated, &policy.sampling(), stop_ids, rngs)?;
                flat.chunks(k).map(<[Generated]>::to_vec).collect()
            }
            Policy::Beam | Policy::DiverseBeam => {
                beam_search(model, chunk, &policy.beams(), stop_ids)?
            }
        };
        let new_tokens = responses
            .iter()
            .flatten()
            .map(|g: &Generated| g.tokens.len())
            .sum();
        out.extend(responses);
        progress(chunk.len(), new_tokens);
    }
    Ok(out)
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

    /// Each part of the key moves the stream, and no part can stand in for another (the old
    /// `seed + round` let seed 1 round 2 draw what seed 3 round 0 drew).
    #[test]
    fn every_part_of_a_sequence_key_gives_its_own_stream() {
        let first =
            |seed, round, query, sample| sequence_rng(seed, round, query, sample).random::<u64>();
        let keys = [
            (1, 2, 0, 0),
            (3, 0, 0, 0),
            (1, 0, 2, 0),
            (1, 0, 0, 2),
            (1, 0, 0, 0),
            (0, 1, 0, 0),
            (0, 0, 1, 0),
            (0, 0, 0, 1),
        ];
        let draws: std::collections::HashSet<u64> =
            keys.iter().map(|&(a, b, c, d)| first(a, b, c, d)).collect();
        assert_eq!(draws.len(), keys.len());
        assert_eq!(first(5, 6, 7, 8), first(5, 6, 7, 8));
    }

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
