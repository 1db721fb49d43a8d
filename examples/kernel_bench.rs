//! Times the sequence log-prob kernel against the burn-ops reference, forward and backward, at
//! the sizes the RRHF issue names (S=24, T=512, V=49152 by default), and prints one JSON line per
//! measurement, with the peak temporary memory each path needs beyond its inputs (measured: the
//! device pool's growth on wgpu, the peak resident set's growth on the CPU path).
//!
//!     cargo run --release --example kernel_bench -- [--device cpu|wgpu-cpu|gpu] [S T V]

use std::time::Instant;

use burn::tensor::{Distribution, Int, Tensor};
use rrhf::device::{DeviceChoice, select};
use rrhf::kernels::{reference, seq_logprob_with_lse, sequence_logprob_backward};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (device_arg, sizes) = match args.first().map(String::as_str) {
        Some("--device") => (args[1].clone(), &args[2..]),
        _ => ("auto".to_string(), &args[..]),
    };
    let size =
        |i: usize, default: usize| sizes.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (s, t, v) = (size(0, 24), size(1, 512), size(2, 49152));
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
    Ok(())
}

const MIB: f64 = (1 << 20) as f64;

/// Memory a computation needs beyond what is already allocated: on a device with a memory pool
/// (wgpu), the growth of the bytes the pool reserves, measured from a cleaned pool; on the CPU
/// path, the growth of the process's peak resident memory (Linux: reset through clear_refs).
fn peak_temporary_bytes(device: &burn::tensor::Device, f: &dyn Fn() -> Vec<f32>) -> u64 {
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
