//! The RRHF loss of the tiny LLaMA against PyTorch, with no download: every `ft_norm` and
//! `length_penalty` 1 and 0.5, on several queries of different k batched together (the
//! reference runs each query as a batch of its own), through both heads, on every test device.
//! The reference is `tests/fixtures/tiny_rrhf_loss.json`, written by
//! `tests/fixtures/make_tiny_rrhf_loss.py` (transformers on the same weights).

mod common;

use burn::tensor::Tensor;
use common::{fixture, json, test_devices};
use rrhf::data::{RankBatch, TokenizedExample};
use rrhf::loss::{FtNorm, LossConfig, rrhf_loss};
use rrhf::scoring::{final_hidden, sequence_logprobs};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The fixture's queries, as token ids with their responses' rewards.
fn reference_examples(reference: &Value) -> Vec<TokenizedExample> {
    reference["queries"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, q)| TokenizedExample {
            query: ids(&q["query"]),
            responses: q["responses"].as_array().unwrap().iter().map(ids).collect(),
            scores: q["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_f64().unwrap())
                .collect(),
            line: i + 1,
        })
        .collect()
}

fn floats(t: Tensor<1>) -> Vec<f64> {
    t.try_into_vec_as::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-4 * want.abs().max(1.0)
}

#[test]
fn rrhf_loss_equals_pytorch_for_every_normalisation() {
    let reference = json(&fixture("tiny_rrhf_loss.json"));
    let examples = reference_examples(&reference);
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch = RankBatch::new(&refs);
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        6,
        "three ft_norm values times two length penalties"
    );
    for selected in test_devices() {
        let model = rrhf::checkpoint::load_model(&fixture("tiny-gqa"), &selected.device).unwrap();
        for case in cases {
            let ft_norm = match case["ft_norm"].as_str().unwrap() {
                "token_mean" => FtNorm::TokenMean,
                "sum" => FtNorm::Sum,
                "padded_mean" => FtNorm::PaddedMean,
                other => panic!("unknown ft_norm {other}"),
            };
            for fused_head in [true, false] {
                let config = LossConfig {
                    ft_norm,
                    length_penalty: case["length_penalty"].as_f64().unwrap() as f32,
                    fused_head,
                    ..Default::default()
                };
                let what = format!(
                    "{}: {ft_norm:?}, length_penalty {}, fused head {fused_head}",
                    selected.description, config.length_penalty
                );
                let hidden = final_hidden(&model, &batch.sequences);
                let (sums, _) =
                    sequence_logprobs(&model, &batch.sequences, config.head_path(), hidden);
                let loss = rrhf_loss(sums, &batch, &config, &model.device());
                let (total, rank, ft) = (floats(loss.total), floats(loss.rank), floats(loss.ft));
                let n = total.len() as f64;
                let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
                for (name, got, key) in [
                    ("loss", mean(&total), "loss"),
                    ("rank", mean(&rank), "rank_loss"),
                    ("ft", mean(&ft), "ft_loss"),
                ] {
                    let want = case[key].as_f64().unwrap();
                    assert!(close(got, want), "{what}: {name} {got}, PyTorch {want}");
                }
                for (q, part) in case["per_query"].as_array().unwrap().iter().enumerate() {
                    let (want_rank, want_ft) =
                        (part["rank"].as_f64().unwrap(), part["ft"].as_f64().unwrap());
                    assert!(
                        close(rank[q], want_rank) && close(ft[q], want_ft),
                        "{what}: query {q}: (rank, ft) ({}, {}), PyTorch ({want_rank}, {want_ft})",
                        rank[q],
                        ft[q]
                    );
                }
            }
        }
    }
}

/// `loss.rank_loss = "logistic"` with `loss.rank_margin = m`: per query, the sum of
/// log(1 + exp(p_i - p_j + m)) over the pairs with r_i < r_j, checked on the host (f64) from the
/// loss' own sequence scores, on every device.
#[test]
fn the_logistic_rank_loss_is_the_bradley_terry_sum_over_ordered_pairs() {
    let margin = 0.25;
    let reference = json(&fixture("tiny_rrhf_loss.json"));
    let examples = reference_examples(&reference);
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch = RankBatch::new(&refs);
    let config = LossConfig {
        rank_loss: rrhf::kernels::PairLoss::Logistic,
        rank_margin: margin as f32,
        ..Default::default()
    };
    for selected in test_devices() {
        let model = rrhf::checkpoint::load_model(&fixture("tiny-gqa"), &selected.device).unwrap();
        let hidden = final_hidden(&model, &batch.sequences);
        let (sums, _) = sequence_logprobs(&model, &batch.sequences, config.head_path(), hidden);
        let loss = rrhf_loss(sums, &batch, &config, &model.device());
        let rank = floats(loss.rank);
        let scores: Vec<f64> = loss
            .scores
            .try_into_vec_as::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        for (q, example) in examples.iter().enumerate() {
            let p = &scores[q * batch.slots..q * batch.slots + example.responses.len()];
            let mut want = 0.0;
            for (i, ri) in example.scores.iter().enumerate() {
                for (j, rj) in example.scores.iter().enumerate() {
                    if ri < rj {
                        want += (1.0 + (p[i] - p[j] + margin).exp()).ln();
                    }
                }
            }
            assert!(
                close(rank[q], want),
                "{}: query {q}: logistic rank loss {}, host {want}",
                selected.description,
                rank[q]
            );
        }
    }
}
