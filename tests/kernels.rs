//! The CubeCL kernels (wgpu device: lavapipe here, under the SPIR-V compiler real Vulkan GPUs
//! get) and the reference path (CPU device) against the burn-ops oracle, forward and backward, on
//! random inputs and on the edges; the gradients against finite differences; the WGSL they
//! compile to against `shaders/`; and the patched cubecl-spirv in use.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rrhf::kernels::{
    AdamWStep, PairLoss, adamw_update, adamw_update_reference, fused_sequence_logprob,
    ranking_loss, ranking_loss_backward, reference, seq_logprob_with_lse, sequence_logprob,
    sequence_logprob_backward,
};

/// Host-side inputs of the sequence log-prob kernel.
struct LogprobCase {
    s: usize,
    t: usize,
    v: usize,
    logits: Vec<f32>,
    targets: Vec<i64>,
    mask: Vec<f32>,
}

impl LogprobCase {
    fn random(s: usize, t: usize, v: usize, scale: f32, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            s,
            t,
            v,
            logits: (0..s * t * v)
                .map(|_| rng.random_range(-1.0..1.0) * scale)
                .collect(),
            targets: (0..s * t).map(|_| rng.random_range(0..v as i64)).collect(),
            mask: (0..s * t)
                .map(|_| f32::from(rng.random_bool(0.7)))
                .collect(),
        }
    }

    fn tensors(&self, device: &Device) -> (Tensor<3>, Tensor<2, Int>, Tensor<2>) {
        let (s, t, v) = (self.s, self.t, self.v);
        (
            Tensor::from_data(TensorData::new(self.logits.clone(), [s, t, v]), device),
            Tensor::from_data(TensorData::new(self.targets.clone(), [s, t]), device),
            Tensor::from_data(TensorData::new(self.mask.clone(), [s, t]), device),
        )
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as().unwrap()
}

/// `|a - b| <= rel * max(|b|, floor)` element-wise, with the worst offender in the message.
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, floor: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g}, want {w}");
        let err = (g - w).abs() / w.abs().max(floor);
        if err > worst.0 {
            worst = (err, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= rel,
        "{what}: relative error {:.3e} at [{i}]: got {}, want {}",
        worst.0,
        got[i],
        want[i]
    );
}

fn check_logprob_case(name: &str, case: &LogprobCase) {
    let mut rng = StdRng::seed_from_u64(7);
    let seq_grad: Vec<f32> = (0..case.s).map(|_| rng.random_range(-2.0..2.0)).collect();
    for dev in common::test_devices() {
        let what = format!("{name} on {dev:?}");
        let device = dev.device.clone().autodiff();

        // Oracle: burn ops, differentiated by burn.
        let (logits, targets, mask) = case.tensors(&device);
        let logits = logits.require_grad();
        let (want_sum, _) = reference::seq_logprob_forward(logits.clone(), targets, mask);
        let g = Tensor::<1>::from_data(TensorData::new(seq_grad.clone(), [case.s]), &device);
        let grads = (want_sum.clone() * g.clone()).sum().backward();
        let want_grad = host(logits.grad(&grads).unwrap());
        let want_sum = host(want_sum);

        // Kernel, through the hand-written autodiff node.
        let (logits, targets, mask) = case.tensors(&device);
        let logits = logits.require_grad();
        let got_sum = sequence_logprob(logits.clone(), targets, mask);
        let grads = (got_sum.clone() * g).sum().backward();
        let got_grad = host(logits.grad(&grads).unwrap());
        assert_close(
            &format!("{what}: sum"),
            &host(got_sum),
            &want_sum,
            1e-5,
            1.0,
        );
        assert_close(
            &format!("{what}: d logits"),
            &got_grad,
            &want_grad,
            1e-5,
            1e-3,
        );

        // The backward kernel on its own, from the logsumexp the forward kernel saved.
        let (logits, targets, mask) = case.tensors(&dev.device);
        let (_, lse) = seq_logprob_with_lse(logits.clone(), targets.clone(), mask.clone());
        let g = Tensor::<1>::from_data(TensorData::new(seq_grad.clone(), [case.s]), &dev.device);
        let direct = sequence_logprob_backward(logits, targets, mask, lse, g);
        assert_close(
            &format!("{what}: backward kernel"),
            &host(direct),
            &want_grad,
            1e-5,
            1e-3,
        );
    }
}

#[test]
fn seq_logprob_matches_reference_on_random_inputs() {
    check_logprob_case("random", &LogprobCase::random(3, 5, 1000, 4.0, 1));
}

#[test]
fn seq_logprob_edges() {
    // T = 1, V below and just above the workgroup size, V and T not multiples of anything.
    check_logprob_case("T=1", &LogprobCase::random(2, 1, 257, 1.0, 2));
    check_logprob_case("V=3", &LogprobCase::random(2, 7, 3, 1.0, 3));
    check_logprob_case("V=1", &LogprobCase::random(1, 4, 1, 1.0, 4));
    // Logits around 1e4 overflow a naive exp: the logsumexp must stay finite.
    check_logprob_case("large logits", &LogprobCase::random(2, 3, 513, 1e4, 5));
    // Fully masked rows and a fully masked sequence score 0 and get no gradient.
    let mut masked = LogprobCase::random(3, 4, 300, 2.0, 6);
    masked.mask[..4].fill(0.0);
    masked.mask[6] = 0.0;
    check_logprob_case("masked rows", &masked);
}

#[test]
fn seq_logprob_of_masked_sequence_is_zero_with_zero_gradient() {
    let mut case = LogprobCase::random(2, 3, 50, 1.0, 8);
    case.mask[..3].fill(0.0);
    for dev in common::test_devices() {
        let device = dev.device.clone().autodiff();
        let (logits, targets, mask) = case.tensors(&device);
        let logits = logits.require_grad();
        let sum = sequence_logprob(logits.clone(), targets, mask);
        let grads = sum.clone().sum().backward();
        assert_eq!(host(sum)[0], 0.0, "{dev:?}");
        let grad = host(logits.grad(&grads).unwrap());
        assert!(grad[..3 * 50].iter().all(|&g| g == 0.0), "{dev:?}");
        assert!(grad[3 * 50..].iter().any(|&g| g != 0.0), "{dev:?}");
    }
}

#[test]
fn seq_logprob_gradient_matches_finite_differences() {
    let case = LogprobCase::random(2, 3, 11, 1.0, 9);
    let eps = 1e-2f32;
    for dev in common::test_devices() {
        let device = dev.device.clone().autodiff();
        let total = |logits: &[f32]| -> f32 {
            let c = LogprobCase {
                logits: logits.to_vec(),
                targets: case.targets.clone(),
                mask: case.mask.clone(),
                ..case
            };
            let (l, t, m) = c.tensors(&dev.device);
            host(sequence_logprob(l, t, m)).iter().sum()
        };
        let (logits, targets, mask) = case.tensors(&device);
        let logits = logits.require_grad();
        let grads = sequence_logprob(logits.clone(), targets, mask)
            .sum()
            .backward();
        let analytic = host(logits.grad(&grads).unwrap());
        for i in (0..case.logits.len()).step_by(5) {
            let mut up = case.logits.clone();
            up[i] += eps;
            let mut down = case.logits.clone();
            down[i] -= eps;
            let numeric = (total(&up) - total(&down)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() < 2e-3,
                "{dev:?}: d/dlogits[{i}] analytic {} numeric {numeric}",
                analytic[i]
            );
        }
    }
}

/// Host-side inputs of the ranking kernel.
struct RankCase {
    q: usize,
    k: usize,
    p: Vec<f32>,
    rewards: Vec<f32>,
    valid: Vec<f32>,
}

impl RankCase {
    fn random(q: usize, k: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            q,
            k,
            p: (0..q * k).map(|_| rng.random_range(-3.0..0.0)).collect(),
            // Few distinct values, so ties occur.
            rewards: (0..q * k).map(|_| rng.random_range(0..4) as f32).collect(),
            valid: (0..q * k)
                .map(|_| f32::from(rng.random_bool(0.85)))
                .collect(),
        }
    }

    fn tensors(&self, device: &Device) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let shape = [self.q, self.k];
        (
            Tensor::from_data(TensorData::new(self.p.clone(), shape), device),
            Tensor::from_data(TensorData::new(self.rewards.clone(), shape), device),
            Tensor::from_data(TensorData::new(self.valid.clone(), shape), device),
        )
    }
}

fn check_rank_case(name: &str, case: &RankCase, kind: PairLoss, margin: f32) {
    let mut rng = StdRng::seed_from_u64(11);
    let loss_grad: Vec<f32> = (0..case.q).map(|_| rng.random_range(0.5..2.0)).collect();
    for dev in common::test_devices() {
        let what = format!("{name} ({kind:?}, margin {margin}) on {dev:?}");
        let device = dev.device.clone().autodiff();
        let g = Tensor::<1>::from_data(TensorData::new(loss_grad.clone(), [case.q]), &device);

        let (p, r, valid) = case.tensors(&device);
        let p = p.require_grad();
        let want = reference::rank_loss_forward(p.clone(), r, valid, kind, margin);
        let grads = (want.clone() * g.clone()).sum().backward();
        let want_grad = host(p.grad(&grads).unwrap());
        let want = host(want);

        let (p, r, valid) = case.tensors(&device);
        let p = p.require_grad();
        let got = ranking_loss(p.clone(), r, valid, kind, margin);
        let grads = (got.clone() * g).sum().backward();
        assert_close(&format!("{what}: loss"), &host(got), &want, 1e-5, 1.0);
        assert_close(
            &format!("{what}: d p"),
            &host(p.grad(&grads).unwrap()),
            &want_grad,
            1e-5,
            1.0,
        );

        let (p, r, valid) = case.tensors(&dev.device);
        let g = Tensor::<1>::from_data(TensorData::new(loss_grad.clone(), [case.q]), &dev.device);
        let direct = ranking_loss_backward(p, r, valid, g, kind, margin);
        assert_close(
            &format!("{what}: backward kernel"),
            &host(direct),
            &want_grad,
            1e-5,
            1.0,
        );
    }
}

#[test]
fn ranking_loss_matches_reference() {
    for kind in [PairLoss::Hinge, PairLoss::Logistic, PairLoss::Listwise] {
        for margin in [0.0, 0.5] {
            check_rank_case("random", &RankCase::random(70, 6, 1), kind, margin);
        }
    }
}

#[test]
fn ranking_loss_edges() {
    for kind in [PairLoss::Hinge, PairLoss::Logistic, PairLoss::Listwise] {
        // A margin must not make ties or padding count.
        check_rank_case("k=1", &RankCase::random(3, 1, 2), kind, 1.0);
        let mut tied = RankCase::random(4, 5, 3);
        tied.rewards.fill(1.0);
        check_rank_case("all tied", &tied, kind, 1.0);
        let mut empty_slots = RankCase::random(3, 4, 4);
        empty_slots.valid[4..8].fill(0.0);
        check_rank_case("padded slots", &empty_slots, kind, 1.0);
        // Gaps of +-60 overflow a naive exp in the logistic loss.
        let mut far = RankCase::random(2, 3, 5);
        far.p = vec![60.0, -60.0, 0.0, -60.0, 60.0, 1.0];
        check_rank_case("large gaps", &far, kind, 0.0);
    }
}

#[test]
fn ranking_loss_values_by_hand() {
    // r = [0, 1, 2], p = [-1, -2, -3]: every ordered pair is inverted.
    // (0,1): -1 - -2 = 1; (0,2): 2; (1,2): 1  => 4. Slot 3 is padding and would add more.
    let case = RankCase {
        q: 1,
        k: 4,
        p: vec![-1.0, -2.0, -3.0, 5.0],
        rewards: vec![0.0, 1.0, 2.0, -1.0],
        valid: vec![1.0, 1.0, 1.0, 0.0],
    };
    for dev in common::test_devices() {
        let (p, r, valid) = case.tensors(&dev.device);
        assert_eq!(
            host(ranking_loss(p, r, valid, PairLoss::Hinge, 0.0)),
            vec![4.0],
            "{dev:?}"
        );
        // A margin of 1 adds 1 to each of the three gaps; a pair ranked right by less than
        // the margin (p = [-3, -2.5]) costs what it lacks.
        let (p, r, valid) = case.tensors(&dev.device);
        assert_eq!(
            host(ranking_loss(p, r, valid, PairLoss::Hinge, 1.0)),
            vec![7.0],
            "{dev:?}"
        );
        let close_pair = RankCase {
            q: 1,
            k: 2,
            p: vec![-3.0, -2.5],
            rewards: vec![0.0, 1.0],
            valid: vec![1.0, 1.0],
        };
        let (p, r, valid) = close_pair.tensors(&dev.device);
        assert_eq!(
            host(ranking_loss(p, r, valid, PairLoss::Hinge, 1.0)),
            vec![0.5],
            "{dev:?}"
        );
        // Logistic: 2 ln(1 + e) + ln(1 + e^2).
        let (p, r, valid) = case.tensors(&dev.device);
        let want = 2.0 * (1.0 + 1f32.exp()).ln() + (1.0 + 2f32.exp()).ln();
        let got = host(ranking_loss(p, r, valid, PairLoss::Logistic, 0.0))[0];
        assert!(
            (got - want).abs() < 1e-5,
            "{dev:?}: logistic {got}, want {want}"
        );
        // Listwise: slot 1 is chosen over {1, 0}, slot 2 over {2, 1, 0}; slot 0 beats nothing.
        let (p, r, valid) = case.tensors(&dev.device);
        let e = |x: f32| x.exp();
        let want = ((e(-2.0) + e(-1.0)).ln() + 2.0) + ((e(-3.0) + e(-2.0) + e(-1.0)).ln() + 3.0);
        let got = host(ranking_loss(p, r, valid, PairLoss::Listwise, 0.0))[0];
        assert!(
            (got - want).abs() < 1e-5,
            "{dev:?}: listwise {got}, want {want}"
        );
    }
}

#[test]
fn ranking_loss_gradient_matches_finite_differences() {
    let case = RankCase::random(4, 5, 12);
    let eps = 1e-3f32;
    for (dev, (kind, margin)) in common::test_devices().into_iter().flat_map(|d| {
        [
            (PairLoss::Hinge, 0.0),
            (PairLoss::Logistic, 0.0),
            (PairLoss::Hinge, 0.3),
            (PairLoss::Logistic, 0.3),
            (PairLoss::Listwise, 0.0),
        ]
        .map(|k| (d.clone(), k))
    }) {
        let total = |p: &[f32]| -> f32 {
            let c = RankCase {
                p: p.to_vec(),
                rewards: case.rewards.clone(),
                valid: case.valid.clone(),
                ..case
            };
            let (p, r, v) = c.tensors(&dev.device);
            host(ranking_loss(p, r, v, kind, margin)).iter().sum()
        };
        let device = dev.device.clone().autodiff();
        let (p, r, valid) = case.tensors(&device);
        let p = p.require_grad();
        let grads = ranking_loss(p.clone(), r, valid, kind, margin)
            .sum()
            .backward();
        let analytic = host(p.grad(&grads).unwrap());
        for i in 0..case.p.len() {
            let mut up = case.p.clone();
            up[i] += eps;
            let mut down = case.p.clone();
            down[i] -= eps;
            let numeric = (total(&up) - total(&down)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() < 1e-2,
                "{dev:?} {kind:?} margin {margin}: d/dp[{i}] analytic {} numeric {numeric}",
                analytic[i]
            );
        }
    }
}

/// The fused head against the unfused path (burn-ops logits, the reference log-prob and burn's
/// own autodiff): loss and both gradients, for chunk sizes that do and do not divide V, a chunk
/// larger than V, and a fully masked sequence.
#[test]
fn fused_head_matches_unfused_head() {
    let (s, t, d, v) = (3, 7, 16, 50);
    let mut rng = StdRng::seed_from_u64(21);
    let mut normal = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| rng.random_range(-1.0..1.0) * scale)
            .collect()
    };
    let hidden = normal(s * t * d, 1.0);
    let weight = normal(v * d, 0.8);
    let grad = normal(s, 1.0);
    let mut rng = StdRng::seed_from_u64(22);
    let targets: Vec<i64> = (0..s * t).map(|_| rng.random_range(0..v as i64)).collect();
    let mut mask: Vec<f32> = (0..s * t)
        .map(|_| f32::from(rng.random_bool(0.7)))
        .collect();
    mask[t..2 * t].fill(0.0);

    for dev in common::test_devices() {
        let device = dev.device.clone().autodiff();
        let inputs = || {
            (
                Tensor::<3>::from_data(TensorData::new(hidden.clone(), [s, t, d]), &device)
                    .require_grad(),
                Tensor::<2>::from_data(TensorData::new(weight.clone(), [v, d]), &device)
                    .require_grad(),
                Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [s, t]), &device),
                Tensor::<2>::from_data(TensorData::new(mask.clone(), [s, t]), &device),
                Tensor::<1>::from_data(TensorData::new(grad.clone(), [s]), &device),
            )
        };
        let (h, w, tg, m, g) = inputs();
        let logits = h
            .clone()
            .reshape([s * t, d])
            .matmul(w.clone().transpose())
            .reshape([s, t, v]);
        let want = reference::seq_logprob_forward(logits, tg, m).0;
        let grads = (want.clone() * g).sum().backward();
        let (want_dh, want_dw) = (host(h.grad(&grads).unwrap()), host(w.grad(&grads).unwrap()));
        let want = host(want);

        for chunk in [7, 16, 50, 64] {
            let what = format!("chunk {chunk} on {dev:?}");
            let (h, w, tg, m, g) = inputs();
            let got = fused_sequence_logprob(h.clone(), w.clone(), tg, m, chunk);
            let grads = (got.clone() * g).sum().backward();
            assert_close(&format!("{what}: sums"), &host(got), &want, 1e-4, 1.0);
            assert_close(
                &format!("{what}: d hidden"),
                &host(h.grad(&grads).unwrap()),
                &want_dh,
                1e-4,
                1.0,
            );
            assert_close(
                &format!("{what}: d weight"),
                &host(w.grad(&grads).unwrap()),
                &want_dw,
                1e-4,
                1.0,
            );
        }
        // A frozen head (LoRA) takes no weight gradient; d hidden is unchanged.
        let (h, w, tg, m, g) = inputs();
        let w = w.set_require_grad(false);
        let got = fused_sequence_logprob(h.clone(), w.clone(), tg, m, 16);
        let grads = (got * g).sum().backward();
        assert!(w.grad(&grads).is_none(), "a frozen head got a gradient");
        assert_close(
            &format!("frozen head on {dev:?}: d hidden"),
            &host(h.grad(&grads).unwrap()),
            &want_dh,
            1e-4,
            1.0,
        );
    }
}

/// `shaders/` holds exactly the WGSL the kernels compile to (scripts/update-shaders.sh writes it).
#[test]
fn shaders_are_current() {
    let Some(gpu) = common::test_devices().into_iter().find(|d| d.is_wgpu) else {
        return;
    };
    let sources = rrhf::kernels::wgsl_sources(&gpu.device).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let on_disk = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".wgsl"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    if std::env::var("RRHF_UPDATE_SHADERS").as_deref() == Ok("1") {
        std::fs::create_dir_all(&dir).unwrap();
        for name in on_disk() {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        for (name, source) in &sources {
            std::fs::write(dir.join(name), source).unwrap();
        }
    }
    let mut names: Vec<String> = sources.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        on_disk(),
        names,
        "shaders/ is stale: run scripts/update-shaders.sh"
    );
    for (name, source) in &sources {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(
            committed == *source,
            "shaders/{name} is stale: run scripts/update-shaders.sh"
        );
    }
}

/// lavapipe runs cubecl's SPIR-V compiler (what Vulkan GPUs get), and a reduction through shared
/// memory, which crashes the driver with cubecl-spirv 0.11.3 as released, gives the host's sum:
/// the vendored, patched crate is the one in use.
#[test]
fn lavapipe_runs_the_patched_spirv_compiler() {
    let Some(gpu) = common::test_devices().into_iter().find(|d| d.is_wgpu) else {
        return;
    };
    let (compiler, _) = rrhf::device::compiler_and_matrices(&gpu.device).unwrap();
    assert_eq!(compiler, "SPIR-V", "{gpu:?}");
    let values: Vec<f32> = (0..100_000)
        .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
        .collect();
    let want: f64 = values.iter().map(|&x| x as f64).sum();
    let x = Tensor::<1>::from_data(TensorData::new(values, [100_000]), &gpu.device);
    let got = host(x.sum())[0] as f64;
    assert!(
        (got - want).abs() < 1e-2,
        "sum {got} against the host's {want}"
    );
    let patched = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/vendor/cubecl-spirv/src/ops/memory.rs"
    ))
    .unwrap();
    assert!(
        patched.contains(
            "let value_ty = ty_to_spirv_dialect(ctx, slice.value_ty(ctx).get_type(ctx));"
        )
    );
}

/// The constants of a mid-run AdamW update with weight decay and clipping, so that every term of
/// the formula matters.
fn adamw_step() -> AdamWStep {
    let (lr, beta1, beta2, eps, weight_decay, t) = (3e-4f64, 0.9f64, 0.95f64, 1e-8f64, 0.1, 7);
    AdamWStep {
        grad_scale: 0.37,
        beta1: beta1 as f32,
        one_minus_beta1: (1.0 - beta1) as f32,
        beta2: beta2 as f32,
        one_minus_beta2: (1.0 - beta2) as f32,
        eps: eps as f32,
        decay: (1.0 - lr * weight_decay) as f32,
        step_size: (lr / (1.0 - beta1.powi(t))) as f32,
        sqrt_bias2: (1.0 - beta2.powi(t)).sqrt() as f32,
    }
}

/// The update in f64 on the host, element by element: an oracle independent of burn. Each value
/// comes with the sum of its terms' magnitudes, the scale its f32 rounding is relative to (a
/// moment whose two terms cancel is exact only to that).
fn adamw_on_host(w: f32, g: f32, m: f32, v: f32, s: &AdamWStep) -> [(f64, f64); 3] {
    let g = g as f64 * s.grad_scale as f64;
    let (m_old, m_new) = (m as f64 * s.beta1 as f64, g * s.one_minus_beta1 as f64);
    let m = m_old + m_new;
    let v = v as f64 * s.beta2 as f64 + g * g * s.one_minus_beta2 as f64;
    let w_old = w as f64 * s.decay as f64;
    let step = m / (v.sqrt() / s.sqrt_bias2 as f64 + s.eps as f64) * s.step_size as f64;
    [
        (w_old - step, w_old.abs() + step.abs()),
        (m, m_old.abs() + m_new.abs()),
        (v, v),
    ]
}

#[test]
fn adamw_kernel_equals_its_reference_bit_for_bit() {
    let step = adamw_step();
    for selected in common::test_devices() {
        let device = &selected.device;
        // Sizes around the CPU kernel's chunk of 16K elements, and a norm-sized one.
        for (n, seed) in [(1usize, 1u64), (576, 2), (16 * 1024 + 3, 3), (100_003, 4)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut values = |scale: f32| -> Vec<f32> {
                (0..n)
                    .map(|_| rng.random_range(-1.0..1.0) * scale)
                    .collect()
            };
            let (w, g, m) = (values(1.0), values(3.0), values(0.1));
            let v: Vec<f32> = values(0.01).iter().map(|x| x.abs()).collect();
            let tensor =
                |x: &[f32]| Tensor::<1>::from_data(TensorData::new(x.to_vec(), [n]), device);
            let (kw, km, kv) = adamw_update(tensor(&w), tensor(&g), tensor(&m), tensor(&v), step);
            let (rw, rm, rv) =
                adamw_update_reference(tensor(&w), tensor(&g), tensor(&m), tensor(&v), step);
            let what = format!("{} n={n}", selected.description);
            for (name, got, want) in [("weight", kw, rw), ("m", km, rm), ("v", kv, rv)] {
                let (got, want) = (host(got), host(want));
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{what}: the kernel's {name} differs from the reference"
                );
            }
            let (rw, rm, rv) =
                adamw_update_reference(tensor(&w), tensor(&g), tensor(&m), tensor(&v), step);
            let (rw, rm, rv) = (host(rw), host(rm), host(rv));
            for i in 0..n {
                let exact = adamw_on_host(w[i], g[i], m[i], v[i], &step);
                for (name, got, (want, scale)) in [
                    ("weight", rw[i], exact[0]),
                    ("m", rm[i], exact[1]),
                    ("v", rv[i], exact[2]),
                ] {
                    let err = (got as f64 - want).abs() / scale.max(1e-30);
                    assert!(err < 1e-5, "{what}: {name}[{i}] = {got}, f64 gives {want}");
                }
            }
        }
    }
}

#[test]
fn adamw_kernel_leaves_shared_buffers_and_views_alone() {
    let step = adamw_step();
    let device = &common::test_devices()[0].device;
    let n = 40_000;
    let mut rng = StdRng::seed_from_u64(9);
    let whole: Vec<f32> = (0..2 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let big = Tensor::<1>::from_data(TensorData::new(whole.clone(), [2 * n]), device);
    // A view into the second half of a larger buffer, and a weight someone else still holds.
    let weight = big.clone().slice(n..2 * n);
    let grad = Tensor::<1>::from_data(TensorData::new(whole[..n].to_vec(), [n]), device);
    let zeros = Tensor::<1>::zeros([n], device);
    let (kw, _, _) = adamw_update(
        weight.clone(),
        grad.clone(),
        zeros.clone(),
        zeros.clone(),
        step,
    );
    let (rw, _, _) = adamw_update_reference(weight, grad, zeros.clone(), zeros.clone(), step);
    assert_eq!(host(kw), host(rw), "the update of a view");
    assert_eq!(
        host(big),
        whole,
        "the buffer the view was taken from changed"
    );
    assert!(
        host(zeros).iter().all(|&x| x == 0.0),
        "a shared moment changed"
    );
}
