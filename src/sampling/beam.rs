//! Beam search and diverse beam search (Vijayakumar et al. 2016), the policies the RRHF paper
//! sampled its responses with.
//!
//! The k beams of a prompt are split into `groups` groups of k / groups beams. Each step, the
//! groups choose in turn; a group's candidate tokens lose `diversity_penalty` of log-probability
//! for every time an earlier group chose the same token at this step (Hamming diversity), which
//! pushes the groups apart. With one group this is plain beam search. A hypothesis is scored by
//! its summed log-probability (penalties included, as in Hugging Face) over its length (EOS
//! counted) to the power `length_penalty`. A group stops when it holds as many finished
//! hypotheses as beams and no live beam can still beat the worst of them; a prompt returns the
//! best hypotheses of each group, group by group.

use anyhow::{Result, ensure};
use std::collections::HashMap;

use super::decode::{Generated, Prefilled, decode_step, prefill};
use crate::model::Llama;

#[derive(Debug, Clone, PartialEq)]
pub struct BeamConfig {
    /// Beams per prompt, and responses returned per prompt.
    pub beams: usize,
    /// Groups the beams are split into; must divide `beams`. 1 is plain beam search.
    pub groups: usize,
    pub diversity_penalty: f32,
    pub length_penalty: f32,
    pub max_new_tokens: usize,
}

/// A log-probability low enough that a beam carrying it is never chosen over a real one.
const IMPOSSIBLE: f64 = -1.0e9;

struct Beam {
    tokens: Vec<u32>,
    score: f64,
}

struct Hypothesis {
    tokens: Vec<u32>,
    stopped: bool,
    /// Length-normalised score.
    score: f64,
}

/// One prompt's search: its beams (group after group) and each group's finished hypotheses.
struct Search {
    beams: Vec<Beam>,
    finished: Vec<Vec<Hypothesis>>,
    group_done: Vec<bool>,
}

impl BeamConfig {
    fn per_group(&self) -> usize {
        self.beams / self.groups
    }

    fn normalised(&self, score: f64, len: usize) -> f64 {
        score / (len.max(1) as f64).powf(self.length_penalty as f64)
    }
}

/// Returns `cfg.beams` responses for each prompt.
pub fn beam_search(
    model: &Llama,
    prompts: &[Vec<u32>],
    cfg: &BeamConfig,
    stop_ids: &[u32],
) -> Result<Vec<Vec<Generated>>> {
    ensure!(cfg.beams >= 1, "beam search needs at least one beam");
    ensure!(
        cfg.groups >= 1 && cfg.beams % cfg.groups == 0,
        "beam groups ({}) must divide the number of beams ({})",
        cfg.groups,
        cfg.beams
    );
    ensure!(
        cfg.diversity_penalty.is_finite() && cfg.diversity_penalty >= 0.0,
        "diversity penalty must be >= 0"
    );
    let k = cfg.beams;
    let mut results: Vec<Vec<Generated>> = vec![Vec::new(); prompts.len()];
    if prompts.is_empty() {
        return Ok(results);
    }
    if cfg.max_new_tokens == 0 {
        let empty = Generated {
            tokens: vec![],
            stopped: false,
        };
        return Ok(vec![vec![empty; k]; prompts.len()]);
    }
    let Prefilled {
        mut cache,
        logits,
        mut key_valid,
        mut lengths,
    } = prefill(model, prompts)?;
    let device = model.device();
    let vocab = logits.len() / prompts.len();

    // Every prompt's cache row, repeated for its k beams. Only the first beam of each group
    // starts live, so a group does not fill its beams with copies of one continuation.
    let rows: Vec<usize> = (0..prompts.len())
        .flat_map(|p| std::iter::repeat_n(p, k))
        .collect();
    cache.select_rows(&rows, &device);
    let mut logits: Vec<f32> = rows
        .iter()
        .flat_map(|&p| logits[p * vocab..(p + 1) * vocab].iter().copied())
        .collect();
    let mut searches: Vec<Search> = (0..prompts.len())
        .map(|_| Search {
            beams: (0..k)
                .map(|b| Beam {
                    tokens: vec![],
                    score: if b % cfg.per_group() == 0 {
                        0.0
                    } else {
                        IMPOSSIBLE
                    },
                })
                .collect(),
            finished: (0..cfg.groups).map(|_| Vec::new()).collect(),
            group_done: vec![false; cfg.groups],
        })
        .collect();
    let mut active: Vec<usize> = (0..prompts.len()).collect();

    for step in 0..cfg.max_new_tokens {
        let last_step = step + 1 == cfg.max_new_tokens;
        let mut parents = Vec::new();
        let mut next_tokens = Vec::new();
        let mut still_active = Vec::new();
        for (slot, &p) in active.iter().enumerate() {
            let row_logits = &logits[slot * k * vocab..(slot + 1) * k * vocab];
            let chosen = advance(&mut searches[p], row_logits, vocab, cfg, stop_ids);
            let search = &mut searches[p];
            if last_step || search.group_done.iter().all(|&d| d) {
                results[p] = finish(search, cfg);
                continue;
            }
            still_active.push(p);
            for (parent_beam, token) in chosen {
                parents.push(slot * k + parent_beam);
                next_tokens.push(token);
            }
        }
        if still_active.is_empty() {
            break;
        }
        cache.select_rows(&parents, &device);
        active = still_active;
        let row_prompts: Vec<usize> = active
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p, k))
            .collect();
        logits = decode_step(
            model,
            &mut cache,
            &row_prompts,
            &next_tokens,
            &mut key_valid,
            &mut lengths,
        )?;
    }
    Ok(results)
}

/// One step of one prompt's search. `logits` holds its k beams' rows. Returns, for each new
/// beam, the old beam it extends and the token it adds (the token to feed the model next).
fn advance(
    search: &mut Search,
    logits: &[f32],
    vocab: usize,
    cfg: &BeamConfig,
    stop_ids: &[u32],
) -> Vec<(usize, u32)> {
    let m = cfg.per_group();
    let mut chosen_this_step: HashMap<u32, usize> = HashMap::new();
    let mut new_beams: Vec<(usize, Beam)> = Vec::with_capacity(search.beams.len());
    for g in 0..cfg.groups {
        let group = g * m..(g + 1) * m;
        if search.group_done[g] {
            // A finished group keeps its rows; what they compute is never used.
            for b in group {
                let beam = Beam {
                    tokens: search.beams[b].tokens.clone(),
                    score: IMPOSSIBLE,
                };
                new_beams.push((b, beam));
            }
            continue;
        }
        // Candidates: each beam's 2m best tokens after the diversity penalty (more when there
        // are several stop tokens, so that every group can always keep m live beams).
        let mut candidates: Vec<(f64, usize, u32)> = Vec::new();
        for b in group.clone() {
            let row = &logits[b * vocab..(b + 1) * vocab];
            let lse = log_sum_exp(row);
            // Log-probabilities, less the penalty for tokens earlier groups chose this step.
            let mut adjusted: Vec<f64> = row.iter().map(|&x| x as f64 - lse).collect();
            for (&t, &used) in &chosen_this_step {
                adjusted[t as usize] -= cfg.diversity_penalty as f64 * used as f64;
            }
            let mut ids: Vec<usize> = (0..vocab).collect();
            let take = (2 * m).max(m + stop_ids.len()).min(vocab);
            ids.select_nth_unstable_by(take - 1, |&a, &b| adjusted[b].total_cmp(&adjusted[a]));
            for &t in &ids[..take] {
                candidates.push((search.beams[b].score + adjusted[t], b, t as u32));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut kept = Vec::with_capacity(m);
        for (rank, &(score, b, t)) in candidates.iter().enumerate() {
            if kept.len() == m {
                break;
            }
            let mut tokens = search.beams[b].tokens.clone();
            tokens.push(t);
            if stop_ids.contains(&t) {
                // An ending that ranks among the group's best becomes a hypothesis; the others
                // are dropped, as a beam cannot continue past its end.
                if rank < m && score > IMPOSSIBLE / 2.0 {
                    let len = tokens.len();
                    search.finished[g].push(Hypothesis {
                        tokens,
                        stopped: true,
                        score: cfg.normalised(score, len),
                    });
                }
                continue;
            }
            kept.push((b, Beam { tokens, score }));
        }
        for (_, beam) in &kept {
            *chosen_this_step
                .entry(*beam.tokens.last().unwrap())
                .or_default() += 1;
        }
        search.group_done[g] = group_is_done(&search.finished[g], &kept, cfg);
        new_beams.extend(kept);
    }
    let chosen = new_beams
        .iter()
        .map(|(parent, beam)| (*parent, beam.tokens.last().copied().unwrap_or(0)))
        .collect();
    search.beams = new_beams.into_iter().map(|(_, beam)| beam).collect();
    chosen
}

/// Enough finished hypotheses, and the best live beam cannot beat the worst kept one (its score
/// only falls as it grows, for length_penalty <= 1 as in Hugging Face's heuristic).
fn group_is_done(finished: &[Hypothesis], live: &[(usize, Beam)], cfg: &BeamConfig) -> bool {
    let m = cfg.per_group();
    if finished.len() < m {
        return false;
    }
    let mut scores: Vec<f64> = finished.iter().map(|h| h.score).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    let worst_kept = scores[m - 1];
    let best_live = live
        .iter()
        .map(|(_, b)| cfg.normalised(b.score, b.tokens.len()))
        .fold(f64::NEG_INFINITY, f64::max);
    worst_kept >= best_live
}

/// The best `per_group` hypotheses of each group; beams still live count as unfinished ones.
fn finish(search: &mut Search, cfg: &BeamConfig) -> Vec<Generated> {
    let m = cfg.per_group();
    let mut out = Vec::with_capacity(cfg.beams);
    for g in 0..cfg.groups {
        let mut hyps = std::mem::take(&mut search.finished[g]);
        if !search.group_done[g] {
            for beam in &search.beams[g * m..(g + 1) * m] {
                if beam.score > IMPOSSIBLE / 2.0 {
                    hyps.push(Hypothesis {
                        tokens: beam.tokens.clone(),
                        stopped: false,
                        score: cfg.normalised(beam.score, beam.tokens.len()),
                    });
                }
            }
        }
        hyps.sort_by(|a, b| b.score.total_cmp(&a.score));
        hyps.truncate(m);
        out.extend(hyps.into_iter().map(|h| Generated {
            tokens: h.tokens,
            stopped: h.stopped,
        }));
    }
    out
}

fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
}
