//! The RRHF loss, read top to bottom.
//!
//! For a query with responses y_1..y_k and rewards r_1..r_k:
//!
//! - p_i = sum_t log P(y_{i,t} | x, y_{i,<t}) / |y_i|^length_penalty, over the response tokens
//!   and their EOS (the query is never scored);
//! - L_rank = sum over pairs with r_i < r_j of max(0, p_i - p_j), no margin, ties ignored
//!   (`loss.rank_margin = m`: of max(0, p_i - p_j + m); `loss.rank_loss = "logistic"`: of
//!   log(1 + exp(p_i - p_j + m)), Bradley-Terry's pair loss, which keeps pushing a pair apart
//!   once it is in order; `"listwise"`: PRO's/ListMLE's sum over each response that beats
//!   another of -log softmax of its score among itself and those it beats);
//! - L_ft = -sum_t log P(y_{b,t} | ...) on the best response b (first index on ties), divided
//!   by |y_b| (`token_mean`), by 1 (`sum`, the paper's equation) or by the padded sequence
//!   length (`padded_mean`, what the original code computes);
//! - L = rank_weight * L_rank + ft_weight * L_ft per query, averaged over the queries.
//!
//! The loss starts from each sequence's summed response log-probability, which
//! `crate::scoring` computes from the model (the sequence log-prob kernel); the ranking runs as
//! a kernel too (`crate::kernels`), the rest as plain burn ops.
//!
//! A reward model (`rrhf train-rm`) trains on the same ranked data with the same ranking kernel,
//! applied to its scalar scores instead of the log-probs: [`reward_model_loss`] at the end.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::RankBatch;
use crate::kernels::{PairLoss, ranking_loss};
use crate::scoring::{DEFAULT_HEAD_CHUNK, HeadPath};

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
    /// The term of L_rank: RRHF's `hinge` (the paper's), `logistic` or `listwise`.
    pub rank_loss: PairLoss,
    /// m in f(p_i - p_j + m): a pair counts as ranked only once p_j leads by m (0: the paper's).
    pub rank_margin: f32,
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

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            rank_loss: PairLoss::Hinge,
            rank_margin: 0.0,
            rank_weight: 1.0,
            ft_weight: 1.0,
            length_penalty: 1.0,
            ft_norm: FtNorm::TokenMean,
            fused_head: true,
            head_chunk: DEFAULT_HEAD_CHUNK,
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

/// The loss of `batch` from the summed response log-probability of each of its sequences
/// `[S]` (`scoring::sequence_logprobs`), its constants made on `device`.
pub fn rrhf_loss(
    logprob_sums: Tensor<1>,
    batch: &RankBatch,
    config: &LossConfig,
    device: &Device,
) -> RrhfLoss {
    let q = batch.queries;
    let lengths: Vec<f32> = batch
        .response_lens
        .iter()
        .map(|n| n.powf(config.length_penalty))
        .collect();
    let p = logprob_sums.clone() / host_vector(lengths, device);
    let scores = scores_by_slot(p, batch, device);
    let rank = batch_ranking_loss(
        scores.clone(),
        batch,
        (config.rank_loss, config.rank_margin),
        device,
    );

    let best: Vec<i64> = batch.best_rows.iter().map(|&r| r as i64).collect();
    let best_logprob = logprob_sums.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(best, [q]), device),
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
    let ft = -best_logprob / host_vector(ft_denominators, device);

    let total = rank.clone() * config.rank_weight + ft.clone() * config.ft_weight;
    RrhfLoss {
        total,
        rank,
        ft,
        scores,
    }
}

/// A reward model's loss: `kind` (Bradley-Terry `logistic`, or RRHF's `hinge`) summed over the
/// pairs with r_i < r_j of each query, on the model's scalar scores of query + response
/// (`scoring::sequence_rewards`, `[S]`).
pub fn reward_model_loss(
    rewards: Tensor<1>,
    batch: &RankBatch,
    kind: PairLoss,
    device: &Device,
) -> RrhfLoss {
    let scores = scores_by_slot(rewards, batch, device);
    let rank = batch_ranking_loss(scores.clone(), batch, (kind, 0.0), device);
    RrhfLoss {
        total: rank.clone(),
        rank,
        ft: Tensor::zeros([batch.queries], device),
        scores,
    }
}

/// The ranking loss per query `[Q]` of slot scores `[Q, K]` under the batch's rewards: the pair
/// loss `kind` of the gaps plus `margin`.
fn batch_ranking_loss(
    scores: Tensor<2>,
    batch: &RankBatch,
    (kind, margin): (PairLoss, f32),
    device: &Device,
) -> Tensor<1> {
    let shape = [batch.queries, batch.slots];
    ranking_loss(
        scores,
        host_matrix(batch.rewards.clone(), shape, device),
        host_matrix(batch.valid.clone(), shape, device),
        kind,
        margin,
    )
}

/// Lays the per-sequence scores `[S]` out as `[Q, K]`, with 0 in padded slots.
fn scores_by_slot(p: Tensor<1>, batch: &RankBatch, device: &Device) -> Tensor<2> {
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

fn host_vector(data: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

fn host_matrix(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}
