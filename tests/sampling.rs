//! Beam search, diverse beam search and the k-response policies on the tiny fixture model.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::fixture;
use rrhf::checkpoint::load_model;
use rrhf::model::Llama;
use rrhf::sampling::{
    BeamConfig, Draws, Policy, ResponsePolicy, SamplingConfig, beam_search, generate,
    sample_responses,
};

fn tiny() -> Llama {
    load_model(&fixture("tiny-gqa"), &burn::tensor::Device::flex()).unwrap()
}

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![5, 17, 42, 8], vec![99, 3]]
}

fn beams(beams: usize, groups: usize, penalty: f32, max_new_tokens: usize) -> BeamConfig {
    BeamConfig {
        beams,
        groups,
        diversity_penalty: penalty,
        length_penalty: 1.0,
        max_new_tokens,
    }
}

#[test]
fn one_beam_is_greedy() {
    let model = tiny();
    let greedy = generate(
        &model,
        &prompts(),
        &SamplingConfig {
            max_new_tokens: 8,
            ..Default::default()
        },
        &[],
    )
    .unwrap();
    let beam = beam_search(&model, &prompts(), &beams(1, 1, 0.0, 8), &[]).unwrap();
    for (g, b) in greedy.iter().zip(&beam) {
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].tokens, g.tokens);
    }
}

/// log-softmax of the logits at the last position of `tokens`.
fn next_logprobs(model: &Llama, tokens: &[u32]) -> Vec<f64> {
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(
            tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, tokens.len()],
        ),
        &model.device(),
    );
    let logits: Vec<f32> = model.forward(input, None).try_into_vec_as().unwrap();
    let v = model.config.vocab_size;
    let row = &logits[(tokens.len() - 1) * v..];
    let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

#[test]
fn a_beam_per_token_finds_the_best_two_token_continuation() {
    let model = tiny();
    let v = model.config.vocab_size;
    let prompt = prompts()[1].clone();
    // Exhaustive: the best log P(a) + log P(b | a) over all pairs.
    let first = next_logprobs(&model, &prompt);
    let mut best = (f64::MIN, 0, 0);
    for a in 0..v {
        let mut seq = prompt.clone();
        seq.push(a as u32);
        let second = next_logprobs(&model, &seq);
        for (b, lp) in second.iter().enumerate() {
            if first[a] + lp > best.0 {
                best = (first[a] + lp, a, b);
            }
        }
    }
    let found = beam_search(&model, &[prompt], &beams(v, 1, 0.0, 2), &[]).unwrap();
    assert_eq!(found[0].len(), v);
    assert_eq!(found[0][0].tokens, vec![best.1 as u32, best.2 as u32]);
}

#[test]
fn diverse_groups_differ_and_top_p_repeats_with_its_seed() {
    let model = tiny();
    let diverse = beam_search(&model, &prompts(), &beams(4, 4, 5.0, 6), &[]).unwrap();
    for responses in &diverse {
        assert_eq!(responses.len(), 4);
        let firsts: std::collections::HashSet<u32> =
            responses.iter().map(|r| r.tokens[0]).collect();
        assert_eq!(
            firsts.len(),
            4,
            "each group starts with its own token: {responses:?}"
        );
    }
    let policy = |seed, batch_queries| ResponsePolicy {
        policy: Policy::TopP,
        k: 3,
        max_new_tokens: 6,
        seed,
        batch_queries,
        ..Default::default()
    };
    let draw_round = |p: &ResponsePolicy, prompts: &[Vec<u32>], queries: &[usize], round| {
        let draws = Draws { round, queries };
        sample_responses(&model, prompts, draws, p, &[], &mut |_, _| {}).unwrap()
    };
    let draw = |p: &ResponsePolicy| draw_round(p, &prompts(), &[0, 1], 0);
    let a = draw(&policy(7, 2));
    assert_eq!(
        a,
        draw(&policy(7, 1)),
        "a sample must not depend on the batching"
    );
    // Keyed by the query, not by its place: the queries in the other order draw the same.
    let reversed: Vec<Vec<u32>> = prompts().into_iter().rev().collect();
    let mut b = draw_round(&policy(7, 2), &reversed, &[1, 0], 0);
    b.reverse();
    assert_eq!(a, b, "a sample must not depend on the order of the queries");
    assert_ne!(a, draw(&policy(8, 2)), "another seed, another sample");
    assert_ne!(
        a,
        draw_round(&policy(7, 2), &prompts(), &[0, 1], 2),
        "another round, another sample"
    );
}
