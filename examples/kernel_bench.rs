//! Times the sequence log-prob kernel against the burn-ops reference, forward and backward, and
//! the fused head (hidden states + head weight -> log-probs, a vocabulary chunk at a time)
//! against the unfused one (logits, then the kernel), forward + backward through autodiff, at the
//! sizes the issues name (S=24, T=512, V=49152, d=576: SmolLM2's head, by default). Prints one
//! JSON line per measurement, with the peak temporary memory each path needs beyond its inputs
//! (measured: the device pool's growth on wgpu, the peak resident set's growth on the CPU path).
//!
//!     cargo run --release --example kernel_bench -- [--device cpu|wgpu-cpu|gpu] [S T V [d [chunk]]]
//!
//! (chunk defaults to `loss.head_chunk`'s default).

use std::time::Instant;

use burn::tensor::{Distribution, Int, Tensor};
use rrhf::device::{DeviceChoice, select};
use rrhf::kernels::{
    fused_sequence_logprob, reference, seq_logprob_with_lse, sequence_logprob,
    sequence_logprob_backward,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (device_arg, sizes) = match args.first().map(String::as_str) {
        Some("--device") => (args[1].clone(), &args[2..]),
        _ => ("auto".to_string(), &args[..]),
    };
    let size =
        |i: usize, default: usize| sizes.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (s, t, v) = (size(0, 24), size(1, 512), size(2, 49152));
    let default_chunk = rrhf::loss::LossConfig::default().head_chunk;
    let (d, chunk) = (size(3, 576), size(4, default_chunk));
    let selected = select(
        &device_arg
            .parse::<DeviceChoice>()
            .map_err(anyhow::Error::msg)?,
    )?;
    let device = &selected.device;
    eprintln!("device: {}", selected.description);

    let logits = Tensor::<3>::random([s, t, v], Distribution::Normal(0.0, 3.0), device);
    let targets = Tensor::<2, Int>::random([s, t], Distribution::Uniform(0.0, v as f64), device);
    let mask = Tensor::<2>::random([s, t], Distribution::Bernoulli(0.7), device);
    let grad = Tensor::<1>::ones([s], device);
    let logits_bytes = (s * t * v * 4) as f64;

    let repeats = 3;
    let time = |f: &dyn Fn() -> Vec<f32>| {
        f(); // warm-up: shader compilation, autotune
        let start = Instant::now();
        for _ in 0..repeats {
            f();
        }
        start.elapsed().as_secs_f64() / repeats as f64
    };
    let kernel_fwd = || {
        let (sum, _) = seq_logprob_with_lse(logits.clone(), targets.clone(), mask.clone());
        sum.try_into_vec_as().unwrap()
    };
    let reference_fwd = || {
        let (sum, _) =
            reference::seq_logprob_forward(logits.clone(), targets.clone(), mask.clone());
        sum.try_into_vec_as().unwrap()
    };
    let (_, lse) = seq_logprob_with_lse(logits.clone(), targets.clone(), mask.clone());
    let kernel_bwd = || {
        let d = sequence_logprob_backward(
            logits.clone(),
            targets.clone(),
            mask.clone(),
            lse.clone(),
            grad.clone(),
        );
        d.sum().try_into_vec_as().unwrap()
    };
    let reference_bwd = || {
        let d = reference::seq_logprob_backward(
            logits.clone(),
            targets.clone(),
            mask.clone(),
            lse.clone(),
            grad.clone(),
        );
        d.sum().try_into_vec_as().unwrap()
    };

    // On the CPU path the backend extension runs the reference itself: one line says so.
    let on_cpu = device.memory_pool_usage().is_none();
    let paths: Vec<(&str, &dyn Fn() -> Vec<f32>, &dyn Fn() -> Vec<f32>)> = if on_cpu {
        vec![(
            "burn-ops-reference (the CPU path's kernel)",
            &reference_fwd,
            &reference_bwd,
        )]
    } else {
        vec![
            ("wgsl-kernel", &kernel_fwd, &kernel_bwd),
            ("burn-ops-reference", &reference_fwd, &reference_bwd),
        ]
    };
    for (name, fwd, bwd) in paths {
        // Memory first, from a clean pool, so the timing warm-up does not hide the growth.
        let fwd_temp = peak_temporary_bytes(device, fwd);
        let bwd_temp = peak_temporary_bytes(device, bwd);
        let (fwd_s, bwd_s) = (time(fwd), time(bwd));
        println!(
            "{}",
            serde_json::json!({
                "bench": "seq_logprob", "impl": name, "device": selected.description,
                "S": s, "T": t, "V": v,
                "forward_ms": fwd_s * 1e3, "backward_ms": bwd_s * 1e3,
                "forward_peak_temp_mib": fwd_temp as f64 / MIB,
                "backward_peak_temp_mib": bwd_temp as f64 / MIB,
                "logits_mib": logits_bytes / MIB,
                "forward_logits_gib_per_s": logits_bytes / fwd_s / (MIB * 1024.0),
            })
        );
    }
    drop((logits, lse));
    bench_head(&selected, s, t, v, d, chunk);
    Ok(())
}

/// Fused against unfused head, forward and backward (both gradients) through autodiff.
fn bench_head(
    selected: &rrhf::device::SelectedDevice,
    s: usize,
    t: usize,
    v: usize,
    d: usize,
    chunk: usize,
) {
    let device = &selected.device.clone().autodiff();
    let hidden = Tensor::<3>::random([s, t, d], Distribution::Normal(0.0, 1.0), device);
    let weight = Tensor::<2>::random([v, d], Distribution::Normal(0.0, 0.05), device);
    let targets = Tensor::<2, Int>::random([s, t], Distribution::Uniform(0.0, v as f64), device);
    let mask = Tensor::<2>::random([s, t], Distribution::Bernoulli(0.7), device);
    let step = |fused: bool| -> [Vec<f32>; 3] {
        let h = hidden.clone().require_grad();
        let w = weight.clone().require_grad();
        let sums = if fused {
            fused_sequence_logprob(h.clone(), w.clone(), targets.clone(), mask.clone(), chunk)
        } else {
            let logits = w
                .clone()
                .matmul(h.clone().reshape([s * t, d]).transpose())
                .transpose()
                .reshape([s, t, v]);
            sequence_logprob(logits, targets.clone(), mask.clone())
        };
        let grads = sums.clone().sum().backward();
        let host = |t: Tensor<2>| t.try_into_vec_as::<f32>().unwrap();
        [
            sums.try_into_vec_as().unwrap(),
            host(h.grad(&grads).unwrap().reshape([s * t, d])),
            host(w.grad(&grads).unwrap()),
        ]
    };
    let unfused = || step(false);
    let fused = || step(true);
    let mut results = Vec::new();
    for (name, f) in [
        ("unfused", &unfused as &dyn Fn() -> [Vec<f32>; 3]),
        ("fused", &fused),
    ] {
        let temp = peak_temporary_bytes(device, f);
        f();
        let start = Instant::now();
        let out = f();
        let seconds = start.elapsed().as_secs_f64();
        results.push(out);
        println!(
            "{}",
            serde_json::json!({
                "bench": "head_logprob_fwd_bwd", "impl": name, "device": selected.description,
                "S": s, "T": t, "V": v, "d": d, "chunk": if name == "fused" { chunk } else { v },
                "forward_backward_ms": seconds * 1e3,
                "tokens_per_sec": (s * t) as f64 / seconds,
                "peak_temp_mib": temp as f64 / MIB,
                "logits_mib": (s * t * v * 4) as f64 / MIB,
            })
        );
    }
    // The two paths compute the same thing: say how closely (relative L2 difference of the
    // sums and of each gradient), beside the figures.
    let rel_l2 = |a: &[f32], b: &[f32]| {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (diff / norm).sqrt()
    };
    let (u, f) = (&results[0], &results[1]);
    println!(
        "{}",
        serde_json::json!({
            "bench": "head_logprob_agreement",
            "sums_rel_l2": rel_l2(&f[0], &u[0]),
            "d_hidden_rel_l2": rel_l2(&f[1], &u[1]),
            "d_weight_rel_l2": rel_l2(&f[2], &u[2]),
        })
    );
}

const MIB: f64 = (1 << 20) as f64;

/// Memory a computation needs beyond what is already allocated: on a device with a memory pool
/// (wgpu), the growth of the bytes the pool reserves, measured from a cleaned pool; on the CPU
/// path, the growth of the process's peak resident memory (Linux: reset through clear_refs).
fn peak_temporary_bytes<R>(device: &burn::tensor::Device, f: &dyn Fn() -> R) -> u64 {
    device.memory_cleanup();
    if let Some(before) = device.memory_pool_usage() {
        f();
        let after = device
            .memory_pool_usage()
            .expect("pool usage was reported before");
        return after.bytes_reserved.saturating_sub(before.bytes_reserved);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = resident_kib("VmHWM:");
    f();
    resident_kib("VmHWM:").saturating_sub(before) * 1024
}

fn resident_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
