//! burn's fusion and cubecl's autotune on the GPU path (lavapipe here), checked for the bug they
//! are known for (tracel-ai/burn#5257: wrong results from a cached fused forward pass on Vulkan):
//! the same step repeated gives the same loss and gradients bit for bit, and training with fusion
//! and autotune on follows training with both off to 1e-5 over three steps.

mod common;

use std::path::Path;

use common::{TINY_CONFIG, fixture, rrhf_command, scratch};
use rrhf::data::{RankBatch, TokenizedExample};
use rrhf::loss::LossConfig;
use rrhf::scoring::final_hidden;
use rrhf::train::step::Objective;

/// The loss and the gradient norm of one batch, computed again and again on the same device:
/// later runs replay fusion's cached plans and autotune's choices.
#[test]
fn a_repeated_step_gives_the_same_loss_and_gradients() {
    let Some(gpu) = common::test_devices().into_iter().find(|d| d.is_wgpu) else {
        return;
    };
    let device = gpu.device.clone().autodiff();
    let model = rrhf::checkpoint::load_model(&fixture("tiny-gqa"), &device).unwrap();
    let examples: Vec<TokenizedExample> = (0..3)
        .map(|q| TokenizedExample {
            query: (1..6 + q as u32).collect(),
            responses: vec![vec![7, 8, 9, 1], vec![10, 11, 1], vec![12, 1]],
            scores: vec![0.0, 2.0, 1.0],
            line: q + 1,
        })
        .collect();
    let refs: Vec<&TokenizedExample> = examples.iter().collect();
    let batch = RankBatch::new(&refs);
    let mut seen: Vec<Vec<f32>> = Vec::new();
    for _ in 0..4 {
        let hidden = final_hidden(&model, &batch.sequences);
        let loss = Objective::Rrhf(LossConfig::default()).loss(&model, &batch, hidden);
        let total = loss.total.sum();
        let mut grads = rrhf::train::optimizer::GradientBuffer::default();
        grads.accumulate(&model, &total.clone().backward());
        let both = burn::tensor::Tensor::cat(vec![total.detach(), grads.squared_norm()], 0);
        seen.push(rrhf::device::to_host(both).unwrap());
    }
    for run in &seen[1..] {
        assert_eq!(run, &seen[0], "a repeated step changed: {seen:?}");
    }
}

/// Three training steps of the tiny model on lavapipe with fusion and autotune on, then with
/// both off (each a process of its own: the switches are process-wide): the same losses and
/// gradient norms to 1e-5.
#[test]
fn fusion_and_autotune_follow_the_plain_path_over_three_steps() {
    if !common::test_devices().iter().any(|d| d.is_wgpu) {
        return;
    }
    let run = |name: &str, switch: &str| {
        let out = scratch(name);
        let status = rrhf_command([
            "train",
            "--config",
            TINY_CONFIG,
            "--set",
            &format!("output.dir={:?}", out.display().to_string()),
            "--set",
            "train.device=\"wgpu-cpu\"",
            "--set",
            "train.max_steps=3",
            "--set",
            "output.eval_every=0",
        ])
        .env("RRHF_FUSION", switch)
        .env("RRHF_AUTOTUNE", switch)
        .env("RRHF_CACHE_DIR", out.join("cache"))
        .output()
        .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        common::step_figures(Path::new(&out))
    };
    let on = run("fusion-autotune-on", "1");
    let off = run("fusion-autotune-off", "0");
    assert_eq!(on.len(), 3);
    for (step, (a, b)) in on.iter().zip(&off).enumerate() {
        for (what, x, y) in [("loss", a.0, b.0), ("grad norm", a.1, b.1)] {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                "step {}: {what} {x} with fusion and autotune, {y} without",
                step + 1
            );
        }
    }
}
