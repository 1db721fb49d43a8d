//! The LLaMA forward pass and greedy generation against Hugging Face transformers, on fixtures
//! written by tests/fixtures/make_tiny_llama.py (GQA + untied head + sharded f32; tied head +
//! llama3 RoPE + bf16), on the CPU path and on wgpu's CPU adapter.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{fixture, json, read_safetensors, test_devices};
use rrhf::checkpoint::load_model;
use rrhf::sampling::{SamplingConfig, generate};

fn logits_match(name: &str) {
    let dir = fixture(name);
    let expected = read_safetensors(&dir.join("expected.safetensors"));
    let (shape, ids) = &expected["input_ids"];
    let (_, mask) = &expected["attention_mask"];
    let (lshape, want) = &expected["logits"];
    let (b, t, v) = (shape[0], shape[1], lshape[2]);
    let key_valid: Vec<bool> = mask.iter().map(|&m| m == 1.0).collect();
    for dev in test_devices() {
        let model = load_model(&dir, &dev.device).unwrap();
        let tokens = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [b, t]),
            &dev.device,
        );
        let got: Vec<f32> = model
            .forward(tokens, Some(&key_valid))
            .try_into_vec_as::<f32>()
            .unwrap();
        let mut worst = 0f64;
        for (pos, valid) in key_valid.iter().enumerate() {
            if !valid {
                continue; // transformers' logits under padding are not defined by the mask
            }
            for k in 0..v {
                let i = pos * v + k;
                worst = worst.max((got[i] as f64 - want[i]).abs());
            }
        }
        eprintln!(
            "{name} on {}: max |logit - transformers| = {worst:.2e}",
            dev.description
        );
        assert!(
            worst < 1e-4,
            "{name} on {}: logits differ from transformers by {worst}",
            dev.description
        );
    }
}

#[test]
fn gqa_untied_sharded_f32_logits_equal_transformers() {
    logits_match("tiny-gqa");
}

#[test]
fn tied_llama3_rope_bf16_logits_equal_transformers() {
    logits_match("tiny-tied");
}

/// All prompts in one left-padded batch give what transformers gives each prompt alone.
fn greedy_matches(name: &str) {
    let dir = fixture(name);
    let expected = json(&dir.join("expected.json"));
    let cases = expected["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            c["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        ..Default::default()
    };
    for dev in test_devices() {
        let model = load_model(&dir, &dev.device).unwrap();
        let out = generate(&model, &prompts, &cfg, &[]).unwrap();
        for (case, got) in cases.iter().zip(&out) {
            let want: Vec<u32> = case["new_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                got.tokens, want,
                "{name} on {}: prompt {}",
                dev.description, case["prompt"]
            );
        }
    }
}

#[test]
fn batched_greedy_generation_equals_transformers_gqa() {
    greedy_matches("tiny-gqa");
}

#[test]
fn batched_greedy_generation_equals_transformers_tied() {
    greedy_matches("tiny-tied");
}

#[test]
fn seeded_sampling_is_reproducible_and_independent_of_the_batch() {
    let dir = fixture("tiny-gqa");
    let dev = rrhf::device::cpu_device();
    let model = load_model(&dir, &dev.device).unwrap();
    let cfg = SamplingConfig {
        max_new_tokens: 10,
        temperature: 1.0,
        top_p: 0.9,
        top_k: 50,
        seed: 42,
    };
    let a = vec![0u32, 292, 293, 287];
    let b = vec![0u32, 296];
    let together = generate(&model, &[a.clone(), b.clone()], &cfg, &[]).unwrap();
    let again = generate(&model, &[a.clone(), b], &cfg, &[]).unwrap();
    assert_eq!(together, again, "same seed, same samples");
    let alone = generate(&model, &[a.clone()], &cfg, &[]).unwrap();
    assert_eq!(
        alone[0], together[0],
        "a prompt samples the same alone or batched"
    );
    let other_seed = generate(
        &model,
        &[a.clone()],
        &SamplingConfig {
            seed: 43,
            ..cfg.clone()
        },
        &[],
    )
    .unwrap();
    assert_ne!(
        other_seed[0].tokens, together[0].tokens,
        "another seed samples differently"
    );
    // Stops at a stop token and reports it.
    let first = together[0].tokens[0];
    let stopped = generate(&model, &[a], &cfg, &[first]).unwrap();
    assert_eq!(stopped[0].tokens, vec![first]);
    assert!(stopped[0].stopped);
}
