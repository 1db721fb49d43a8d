//! The RRHF loss, read top to bottom.
//!
//! For a query with responses y_1..y_k and rewards r_1..r_k:
//!
//! - p_i = sum_t log P(y_{i,t} | x, y_{i,<t}) / |y_i|^length_penalty, over the response tokens
//!   and their EOS (the query is never scored);
//! - L_rank = sum over pairs with r_i < r_j of max(0, p_i - p_j), no margin, ties ignored;
//! - L_ft = -sum_t log P(y_{b,t} | ...) on the best response b (first index on ties), divided
//!   by |y_b| (`token_mean`), by 1 (`sum`, the paper's equation) or by the padded sequence
//!   length (`padded_mean`, what the original code computes);
//! - L = rank_weight * L_rank + ft_weight * L_ft per query, averaged over the queries.
//!
//! The two reductions run as kernels (`crate::kernels`), the rest as plain burn ops.
//!
//! A reward model (`rrhf train-rm`) trains on the same ranked data with the same ranking kernel,
//! applied to its scalar scores instead of the log-probs: [`reward_model_loss`] at the end.

use burn::tensor::{Int, Tensor, TensorData};

use crate::data::{RankBatch, ScoredBatch};
use crate::kernels::{PairLoss, fused_sequence_logprob, ranking_loss, sequence_logprob};
use crate::model::{AttentionContext, Llama};

/// Normalisation of the fine-tune term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FtNorm {
    /// Divide by the best response's token count.
    #[default]
    TokenMean,
    /// No division: the paper's equation.
    Sum,
    /// Divide by the padded sequence length, as the original code does.
    PaddedMean,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    pub rank_weight: f32,
    pub ft_weight: f32,
    pub length_penalty: f32,
    pub ft_norm: FtNorm,
    /// Compute the response log-probs from the hidden states a vocabulary chunk at a time
    /// (`kernels::fused_head`), never holding the `[S, T, V]` logits; `false`: the plain head
    /// followed by the sequence log-prob kernel.
    pub fused_head: bool,
    /// Vocabulary rows per chunk of the fused head.
    pub head_chunk: usize,
}

impl LossConfig {
    pub fn head_path(&self) -> HeadPath {
        if self.fused_head {
            HeadPath::Fused {
                chunk: self.head_chunk,
            }
        } else {
            HeadPath::Unfused
        }
    }
}

/// How the response log-probs come out of the model's final hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPath {
    /// Logits `[S, T, V]`, then the sequence log-prob kernel.
    Unfused,
    /// The head and the log-prob together, `chunk` vocabulary rows at a time.
    Fused { chunk: usize },
}

impl Default for HeadPath {
    fn default() -> Self {
        LossConfig::default().head_path()
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            rank_weight: 1.0,
            ft_weight: 1.0,
            length_penalty: 1.0,
            ft_norm: FtNorm::TokenMean,
            fused_head: true,
            head_chunk: 2048,
        }
    }
}

/// The loss of a batch, per query, with the sequence scores it came from.
/// (For a reward model: `total == rank`, `ft` is 0, the scores are its rewards.)
pub struct RrhfLoss {
    /// `[Q]`: rank_weight * L_rank + ft_weight * L_ft.
    pub total: Tensor<1>,
    /// `[Q]`
    pub rank: Tensor<1>,
    /// `[Q]`
    pub ft: Tensor<1>,
    /// `[Q, K]`: the sequence scores p (0 under padded slots).
    pub scores: Tensor<2>,
}

pub fn rrhf_loss(model: &Llama, batch: &RankBatch, config: &LossConfig) -> RrhfLoss {
    rrhf_loss_of(model, batch, config, final_hidden(model, &batch.sequences))
}

/// [`rrhf_loss`] from the batch's final hidden states `[S, T, d]` (the decoder's output after
/// its last norm), however they were computed: layer checkpointing (`train::checkpointing`)
/// builds them on a leaf of its own.
pub fn rrhf_loss_of(
    model: &Llama,
    batch: &RankBatch,
    config: &LossConfig,
    hidden: Tensor<3>,
) -> RrhfLoss {
    let device = model.device();
    let q = batch.queries;
    let logprob_sums = sequence_logprobs_of(model, &batch.sequences, config.head_path(), hidden).0;

    let lengths: Vec<f32> = batch
        .response_lens
        .iter()
        .map(|n| n.powf(config.length_penalty))
        .collect();
    let p = logprob_sums.clone() / host_vector(lengths, &device);
    let scores = scores_by_slot(p, batch, &device);
    let rank = batch_ranking_loss(scores.clone(), batch, PairLoss::Hinge, &device);

    let best: Vec<i64> = batch.best_rows.iter().map(|&r| r as i64).collect();
    let best_logprob = logprob_sums.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(best, [q]), &device),
    );
    let ft_denominators: Vec<f32> = match config.ft_norm {
        FtNorm::TokenMean => batch
            .best_rows
            .iter()
            .map(|&r| batch.response_lens[r])
            .collect(),
        FtNorm::Sum => vec![1.0; q],
        FtNorm::PaddedMean => batch.padded_lens.clone(),
    };
    let ft = -best_logprob / host_vector(ft_denominators, &device);

    let total = rank.clone() * config.rank_weight + ft.clone() * config.ft_weight;
    RrhfLoss {
        total,
        rank,
        ft,
        scores,
    }
}

/// A reward model's loss: `kind` (Bradley-Terry `logistic`, or RRHF's `hinge`) summed over the
/// pairs with r_i < r_j of each query, on the model's scalar scores of query + response.
pub fn reward_model_loss(model: &Llama, batch: &RankBatch, kind: PairLoss) -> RrhfLoss {
    reward_model_loss_of(model, batch, kind, final_hidden(model, &batch.sequences))
}

/// [`reward_model_loss`] from the batch's final hidden states `[S, T, d]`.
pub fn reward_model_loss_of(
    model: &Llama,
    batch: &RankBatch,
    kind: PairLoss,
    hidden: Tensor<3>,
) -> RrhfLoss {
    let device = model.device();
    let q = batch.queries;
    let rewards = model.rewards_of(hidden, &batch.sequences.key_valid);
    let scores = scores_by_slot(rewards, batch, &device);
    let rank = batch_ranking_loss(scores.clone(), batch, kind, &device);
    RrhfLoss {
        total: rank.clone(),
        rank,
        ft: Tensor::zeros([q], &device),
        scores,
    }
}

/// The ranking loss per query `[Q]` of slot scores `[Q, K]` under the batch's rewards.
fn batch_ranking_loss(
    scores: Tensor<2>,
    batch: &RankBatch,
    kind: PairLoss,
    device: &burn::tensor::Device,
) -> Tensor<1> {
    let shape = [batch.queries, batch.slots];
    ranking_loss(
        scores,
        host_matrix(batch.rewards.clone(), shape, device),
        host_matrix(batch.valid.clone(), shape, device),
        kind,
    )
}

/// Lays the per-sequence scores `[S]` out as `[Q, K]`, with 0 in padded slots.
fn scores_by_slot(p: Tensor<1>, batch: &RankBatch, device: &burn::tensor::Device) -> Tensor<2> {
    let rows = batch.sequences.rows;
    // Padded slots read an extra zero appended after the last sequence.
    let with_zero = Tensor::cat(vec![p, Tensor::zeros([1], device)], 0);
    let index: Vec<i64> = batch
        .slot_rows
        .iter()
        .map(|r| r.unwrap_or(rows) as i64)
        .collect();
    let index =
        Tensor::<1, Int>::from_data(TensorData::new(index, [batch.slot_rows.len()]), device);
    with_zero
        .select(0, index)
        .reshape([batch.queries, batch.slots])
}

/// Per sequence of `batch`: summed log-probability of the response tokens, and their count.
pub fn sequence_logprobs(
    model: &Llama,
    batch: &ScoredBatch,
    head: HeadPath,
) -> (Tensor<1>, Tensor<1>) {
    sequence_logprobs_of(model, batch, head, final_hidden(model, batch))
}

/// [`sequence_logprobs`] from the batch's final hidden states `[S, T, d]`.
fn sequence_logprobs_of(
    model: &Llama,
    batch: &ScoredBatch,
    head: HeadPath,
    hidden: Tensor<3>,
) -> (Tensor<1>, Tensor<1>) {
    let device = model.device();
    let shape = [batch.rows, batch.width];
    let targets =
        Tensor::<2, Int>::from_data(TensorData::new(batch.targets.clone(), shape), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(batch.target_mask.clone(), shape), &device);
    let count = mask.clone().sum_dim(1).reshape([batch.rows]);
    let sums = match head {
        HeadPath::Unfused => sequence_logprob(model.logits(hidden), targets, mask),
        HeadPath::Fused { chunk } => {
            fused_sequence_logprob(hidden, model.head_rows(), targets, mask, chunk)
        }
    };
    (sums, count)
}

/// The decoder's final hidden states `[S, T, d]` of `batch`.
pub fn final_hidden(model: &Llama, batch: &ScoredBatch) -> Tensor<3> {
    let device = model.device();
    let ctx = batch_context(model, batch, &device);
    model.hidden_states(input_tokens(batch, &device), &ctx, None)
}

/// What attention needs to see `batch` whole on `device`: positions from 0, its padding masked.
pub fn batch_context(
    model: &Llama,
    batch: &ScoredBatch,
    device: &burn::tensor::Device,
) -> AttentionContext {
    AttentionContext::full_sequence(
        model,
        Some(&batch.key_valid),
        batch.rows,
        batch.width,
        device,
    )
}

/// A reward model's score of each sequence of `batch` `[rows]`, read at its last input token.
pub fn sequence_rewards(model: &Llama, batch: &ScoredBatch) -> Tensor<1> {
    model.rewards_of(final_hidden(model, batch), &batch.key_valid)
}

/// The model inputs of `batch` as a `[rows, width]` tensor.
pub fn input_tokens(batch: &ScoredBatch, device: &burn::tensor::Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(batch.tokens.clone(), [batch.rows, batch.width]),
        device,
    )
}

/// Pairs (r_i < r_j) whose scores are ordered the same way (p_i < p_j), and all such pairs:
/// the ranking accuracy of one batch is `matched / pairs`.
pub fn ranked_pairs(scores: &[f32], batch: &RankBatch) -> (usize, usize) {
    let k = batch.slots;
    let (mut matched, mut pairs) = (0, 0);
    for q in 0..batch.queries {
        for i in 0..k {
            for j in 0..k {
                let (a, b) = (q * k + i, q * k + j);
                if batch.valid[a] == 1.0
                    && batch.valid[b] == 1.0
                    && batch.rewards[a] < batch.rewards[b]
                {
                    pairs += 1;
                    matched += usize::from(scores[a] < scores[b]);
                }
            }
        }
    }
    (matched, pairs)
}

fn host_vector(data: Vec<f32>, device: &burn::tensor::Device) -> Tensor<1> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

fn host_matrix(data: Vec<f32>, shape: [usize; 2], device: &burn::tensor::Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}
