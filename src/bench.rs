//! `rrhf bench`: speed and memory, printed as one JSON line per measurement.
//!
//! - `kernels`: the sequence log-prob kernel against its burn-ops reference (forward and
//!   backward), and the fused head (hidden states + head weight to log-probs, a vocabulary chunk
//!   at a time) against the unfused one (logits, then the kernel), through autodiff.
//! - `allreduce`: data parallel's gradient exchange, under `mpirun -np N`.
//! - `step`: one whole RRHF optimizer step (forward, backward, clipping, AdamW) as the trainer
//!   runs it, on a model directory or a bare `config.json` (random weights), with `k` responses
//!   of `T` tokens per query. `benches/rrhf_step.py` runs the same step in PyTorch with
//!   transformers on the same model and tokens and prints the same fields.
//!
//! Memory is measured, not estimated: on wgpu, the bytes the device's memory pool reserves; on the
//! CPU path, the process's resident set (its peak, `VmHWM`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Distribution, FloatDType, Int, Tensor};
use serde_json::json;

use crate::checkpoint::load_model_storing;
use crate::data::TokenizedExample;
use crate::device::{DeviceChoice, SelectedDevice, select_announced};
use crate::kernels::{
    fused_sequence_logprob, reference, seq_logprob_with_lse, sequence_logprob,
    sequence_logprob_backward,
};
use crate::loss::LossConfig;
use crate::model::{Llama, LlamaConfig, LoraConfig, Precision};
use crate::train::checkpointing::Checkpointing;
use crate::train::config::TrainSection;
use crate::train::loss_scale::{INITIAL_SCALE, LossScale};
use crate::train::optimizer::AdamW;
use crate::train::step::{Objective, OptimizerStep, PhaseTimes};

const MIB: f64 = (1 << 20) as f64;

/// Sizes of the kernel benchmarks (SmolLM2's head at the S=24, T=512 by default).
#[derive(Debug, Clone, clap::Args)]
pub struct KernelBench {
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Sequences.
    #[arg(long, default_value_t = 24)]
    pub s: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    pub t: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 49152)]
    pub v: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 576)]
    pub d: usize,
    /// Vocabulary rows per chunk of the fused head.
    #[arg(long, default_value_t = LossConfig::default().head_chunk)]
    pub chunk: usize,
}

pub fn kernels(args: &KernelBench) -> Result<()> {
    crate::kernels::check_logits_fit(args.s, args.t, args.v)
        .context("--s, --t, --v: the unfused head is measured too")?;
    let selected = select_announced(&args.device, "--device")?;
    bench_seq_logprob(&selected, args);
    bench_head(&selected, args);
    Ok(())
}

/// Seconds per call, after one warm-up call (shader compilation, autotune).
fn time<R>(repeats: usize, f: &dyn Fn() -> R) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..repeats {
        f();
    }
    start.elapsed().as_secs_f64() / repeats as f64
}

fn bench_seq_logprob(selected: &SelectedDevice, args: &KernelBench) {
    let (s, t, v) = (args.s, args.t, args.v);
    let device = &selected.device;
    let logits = Tensor::<3>::random([s, t, v], Distribution::Normal(0.0, 3.0), device);
    let targets = Tensor::<2, Int>::random([s, t], Distribution::Uniform(0.0, v as f64), device);
    let mask = Tensor::<2>::random([s, t], Distribution::Bernoulli(0.7), device);
    let grad = Tensor::<1>::ones([s], device);
    let logits_bytes = (s * t * v * 4) as f64;
    let (_, lse) = seq_logprob_with_lse(logits.clone(), targets.clone(), mask.clone());
    let kernel_fwd = || -> Vec<f32> {
        let (sum, _) = seq_logprob_with_lse(logits.clone(), targets.clone(), mask.clone());
        sum.try_into_vec_as().unwrap()
    };
    let reference_fwd = || -> Vec<f32> {
        let (sum, _) =
            reference::seq_logprob_forward(logits.clone(), targets.clone(), mask.clone());
        sum.try_into_vec_as().unwrap()
    };
    let kernel_bwd = || -> Vec<f32> {
        let d = sequence_logprob_backward(
            logits.clone(),
            targets.clone(),
            mask.clone(),
            lse.clone(),
            grad.clone(),
        );
        d.sum().try_into_vec_as().unwrap()
    };
    let reference_bwd = || -> Vec<f32> {
        let d = reference::seq_logprob_backward(
            logits.clone(),
            targets.clone(),
            mask.clone(),
            lse.clone(),
            grad.clone(),
        );
        d.sum().try_into_vec_as().unwrap()
    };
    type Run<'a> = &'a dyn Fn() -> Vec<f32>;
    // On the CPU path the backend extension runs the reference itself: one line says so.
    let paths: Vec<(&str, Run, Run)> = if selected.is_wgpu {
        vec![
            ("cubecl-kernel", &kernel_fwd, &kernel_bwd),
            ("burn-ops-reference", &reference_fwd, &reference_bwd),
        ]
    } else {
        vec![(
            "burn-ops-reference (the CPU path's kernel)",
            &reference_fwd,
            &reference_bwd,
        )]
    };
    for (name, fwd, bwd) in paths {
        // Memory first, from a clean pool, so the timing warm-up does not hide the growth.
        let fwd_temp = peak_temporary_bytes(device, fwd);
        let bwd_temp = peak_temporary_bytes(device, bwd);
        let (fwd_s, bwd_s) = (time(3, fwd), time(3, bwd));
        println!(
            "{}",
            json!({
                "bench": "seq_logprob", "impl": name, "device": selected.description,
                "S": s, "T": t, "V": v,
                "forward_ms": fwd_s * 1e3, "backward_ms": bwd_s * 1e3,
                "tokens_per_sec": (s * t) as f64 / (fwd_s + bwd_s),
                "forward_peak_temp_mib": fwd_temp as f64 / MIB,
                "backward_peak_temp_mib": bwd_temp as f64 / MIB,
                "logits_mib": logits_bytes / MIB,
                "forward_logits_gib_per_s": logits_bytes / fwd_s / (MIB * 1024.0),
            })
        );
    }
}

/// Fused against unfused head, forward and backward (both gradients) through autodiff.
fn bench_head(selected: &SelectedDevice, args: &KernelBench) {
    let (s, t, v, d, chunk) = (args.s, args.t, args.v, args.d, args.chunk);
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
    let mut results = Vec::new();
    for fused in [false, true] {
        let run = || step(fused);
        let temp = peak_temporary_bytes(device, &run);
        let seconds = time(1, &run);
        results.push(run());
        let name = if fused { "fused" } else { "unfused" };
        println!(
            "{}",
            json!({
                "bench": "head_logprob_fwd_bwd", "impl": name, "device": selected.description,
                "S": s, "T": t, "V": v, "d": d, "chunk": if fused { chunk } else { v },
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
        json!({
            "bench": "head_logprob_agreement",
            "sums_rel_l2": rel_l2(&f[0], &u[0]),
            "d_hidden_rel_l2": rel_l2(&f[1], &u[1]),
            "d_weight_rel_l2": rel_l2(&f[2], &u[2]),
        })
    );
}

/// One RRHF step's shape and settings.
#[derive(Debug, Clone, clap::Args)]
pub struct StepBench {
    /// A model directory, or a `config.json` alone (random weights: the speed is the same).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Responses per query.
    #[arg(long, default_value_t = 6)]
    pub k: usize,
    /// Tokens per sequence (query + response), the paper's 192 by default.
    #[arg(long, default_value_t = 192)]
    pub t: usize,
    /// Queries per step (each with k responses), all in one micro-batch.
    #[arg(long, default_value_t = 1)]
    pub queries: usize,
    /// Timed steps, after one warm-up step.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Train LoRA adapters of this rank on every projection instead of all weights.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// Dropout on the adapters' input (`[lora]`'s default, PEFT's too).
    #[arg(long, default_value_t = LoraConfig::default().dropout)]
    pub lora_dropout: f64,
    /// `layer`: keep each decoder layer's input and recompute it in the backward pass; `ops`:
    /// burn's balanced checkpointing of the elementwise ops.
    #[arg(long, value_enum, default_value = "off")]
    pub gradient_checkpointing: Checkpointing,
    /// The plain head (`[S, T, V]` logits) instead of the fused one.
    #[arg(long)]
    pub unfused_head: bool,
    /// The device's peak TFLOP/s for the step's precision, for the MFU (known GPUs have one).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
}

pub fn step(args: &StepBench) -> Result<()> {
    if args.k < 2 || args.t < 4 || args.queries == 0 || args.steps == 0 {
        bail!("--k must be at least 2, --t at least 4, --queries and --steps at least 1");
    }
    let (selected, mut model) = step_model(args)?;
    let config = model.config.clone();
    let examples = synthetic_examples(args, config.vocab_size);
    // All queries in one micro-batch, stepped as the trainer steps (`train::step`).
    let micro_batches = vec![examples.iter().collect::<Vec<_>>()];
    let t = TrainSection::default();
    let stepper = OptimizerStep {
        objective: Objective::Rrhf(LossConfig {
            fused_head: !args.unfused_head,
            ..Default::default()
        }),
        checkpointing: args.gradient_checkpointing,
        queries_per_step: args.queries,
        max_grad_norm: t.max_grad_norm,
        data: PathBuf::from("the synthetic queries"),
    };
    let mut optimizer = AdamW::new(t.adamw());
    let mut losses = Vec::new();
    // The trainer's f16 loss scaling, whose multiply and divide are part of the step's cost.
    let mut loss_scale = (args.precision == Precision::F16).then(|| LossScale::new(INITIAL_SCALE));
    let (mut skipped, mut trainable) = (0, 0);
    let mut phases: Vec<[f64; 3]> = Vec::new();
    let mut counts = StepCounts::default();
    // Warm-up, timed steps, then one counted step. A timed step waits for the device at the end
    // of each phase, so that on a queued device (wgpu) each phase's time is its own; the counted
    // step runs as the trainer does, with its one read of the loss and gradient norm.
    for i in 0..=args.steps + 1 {
        let timed = i <= args.steps;
        let launches = LaunchCounter::start();
        let reads_before = crate::device::host_reads();
        let mut times = PhaseTimes::start();
        let figures;
        (model, figures) = stepper.run(
            model,
            &mut optimizer,
            &mut loss_scale,
            &micro_batches,
            t.lr,
            None,
            timed.then_some(&mut times),
        )?;
        losses.push(figures.sums.mean(args.queries).total);
        trainable = figures.trainable;
        skipped += usize::from(figures.skipped);
        if !timed {
            // The counted step ends where the next one's reads would wait for it.
            model.device().sync().context("waiting for the device")?;
            let reads = crate::device::host_reads();
            counts = StepCounts {
                launches: launches.stop(),
                host_reads: reads.0 - reads_before.0,
                read_bytes: reads.1 - reads_before.1,
            };
            break;
        }
        phases.push([times.forward, times.backward, times.optimizer]);
    }
    let run = StepRun {
        phases,
        losses,
        counts,
        trainable,
        skipped,
    };
    println!("{}", step_report(args, &selected, &config, &run));
    Ok(())
}

/// The device and the model `rrhf bench step` runs: weights or random ones, LoRA adapters if
/// asked, the precision checked against the device before anything is loaded.
fn step_model(args: &StepBench) -> Result<(SelectedDevice, Llama)> {
    let selected = select_announced(&args.device, "--device")?;
    let device = args
        .gradient_checkpointing
        .training_device(&selected.device);
    if !args.precision.runs_on(&device) {
        bail!(
            "--precision {}: {} has no arithmetic in it",
            args.precision.name(),
            selected.description
        );
    }
    let projections = args.precision.projection_storage(args.lora_rank.is_some());
    let model = bench_model(&args.model, &device, projections)?;
    let mut model = with_bench_lora(model, &args.model, args.lora_rank, args.lora_dropout)?;
    model.precision = args.precision;
    if args.unfused_head {
        crate::kernels::check_logits_fit(args.queries * args.k, args.t, model.config.vocab_size)
            .context("--unfused-head: drop it (the fused head holds one chunk of logits at a time), or lower --k, --t or --queries")?;
    }
    Ok((selected, model))
}

/// What the timed and counted steps of `rrhf bench step` gave.
struct StepRun {
    /// Per step (the warm-up first): forward, backward and optimizer seconds.
    phases: Vec<[f64; 3]>,
    losses: Vec<f32>,
    counts: StepCounts,
    trainable: usize,
    skipped: usize,
}

/// The JSON line `rrhf bench step` prints: the median of the timed steps after the warm-up,
/// the model FLOPs and what they make of the device's peak, the counted step's launches and
/// reads, and peak memory.
fn step_report(
    args: &StepBench,
    selected: &SelectedDevice,
    config: &LlamaConfig,
    run: &StepRun,
) -> serde_json::Value {
    let StepRun {
        phases,
        losses,
        counts,
        trainable,
        skipped,
    } = run;
    let trainable = *trainable;
    let median = |f: &dyn Fn(&[f64; 3]) -> f64| {
        let mut v: Vec<f64> = phases[1..].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let step_seconds: Vec<f64> = phases[1..].iter().map(|p| p.iter().sum()).collect();
    let median_step = median(&|p| p.iter().sum());
    let tokens = args.queries * args.k * args.t;
    let (peak, measure) = peak_memory(&selected.device);
    let adapters = (args.lora_rank.is_some()).then_some(trainable);
    let flops = step_flops(&config, tokens, args.t, adapters);
    let tflops = flops / median_step / 1e12;
    let peak_tflops = args
        .peak_tflops
        .or_else(|| known_peak_tflops(&selected.description, args.precision));
    let runtime = crate::device::runtime_settings();
    json!({
            "bench": "rrhf_step", "impl": "rrhf", "device": selected.description,
            "model": args.model.display().to_string(),
            "params": config.num_parameters(), "trainable_params": trainable,
            "queries": args.queries, "k": args.k, "T": args.t, "tokens": tokens,
            "precision": args.precision.name(), "skipped_steps": skipped, "lora_rank": args.lora_rank,
            "lora_dropout": args.lora_rank.map(|_| args.lora_dropout),
            "gradient_checkpointing": args.gradient_checkpointing,
            "fused_head": !args.unfused_head,
            "autotune": runtime.map(|r| r.autotune), "fusion": runtime.map(|r| r.fusion),
            "cpu_threads": (!selected.is_wgpu).then(crate::device::cpu_threads),
            "step_seconds": median_step, "step_seconds_all": step_seconds,
            "forward_seconds": median(&|p| p[0]), "backward_seconds": median(&|p| p[1]),
            "optimizer_seconds": median(&|p| p[2]),
            "tokens_per_sec": tokens as f64 / median_step,
            "model_flops_per_step": flops, "tflops": tflops,
            "peak_tflops": peak_tflops, "mfu": peak_tflops.map(|p| tflops / p),
            "kernel_launches_per_step": counts.launches,
            "host_syncs_per_step": counts.host_reads,
            "bytes_read_back_per_step": counts.read_bytes,
            "peak_mem_mib": peak as f64 / MIB, "peak_mem_measure": measure,
            "first_loss": losses[0], "loss": losses[args.steps],
    })
}

/// What one optimizer step asked of the device and the host.
#[derive(Debug, Default)]
struct StepCounts {
    launches: u64,
    host_reads: u64,
    read_bytes: u64,
}

/// Counts the kernels cubecl launches (fused ones once each) while it lives.
struct LaunchCounter {
    count: std::sync::Arc<LaunchCount>,
    _watching: cubecl::logging::LaunchObservation,
}

#[derive(Default)]
struct LaunchCount(std::sync::atomic::AtomicU64);

impl cubecl::logging::LaunchObserver for LaunchCount {
    fn launched(&self, _kernel: &'static str) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl LaunchCounter {
    fn start() -> Self {
        let count = std::sync::Arc::new(LaunchCount::default());
        let watching = cubecl::logging::LaunchObservation::new(count.clone());
        Self {
            count,
            _watching: watching,
        }
    }

    fn stop(self) -> u64 {
        self.count.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Model FLOPs of one optimizer step over `tokens` tokens of sequences of `t` (PaLM's
/// accounting; recomputation by checkpointing is not counted): every weight a matmul applies costs
/// 2 FLOPs per token forward and 4 backward (input and weight gradients), 2 when the weight is
/// frozen (LoRA's base: input gradient only); LoRA's `adapters` weights cost the full 6. Attention
/// adds 2·2·t·(heads·head_dim) per layer and token forward (scores and weighted values), twice
/// that backward. Embedding lookups and norms are left out; a tied head counts as a matmul.
pub fn step_flops(config: &LlamaConfig, tokens: usize, t: usize, adapters: Option<usize>) -> f64 {
    let (d, f, v) = (
        config.hidden_size as f64,
        config.intermediate_size as f64,
        config.vocab_size as f64,
    );
    let q = (config.num_attention_heads * config.head_dim) as f64;
    let kv = (config.num_key_value_heads * config.head_dim) as f64;
    let layers = config.num_hidden_layers as f64;
    let matmul_weights = layers * (d * (q + 2.0 * kv) + q * d + 3.0 * d * f) + v * d;
    let per_weight = match adapters {
        None => 6.0,
        Some(_) => 4.0,
    };
    let weights = per_weight * matmul_weights + 6.0 * adapters.unwrap_or(0) as f64;
    let attention = 12.0 * layers * q * t as f64;
    (weights + attention) * tokens as f64
}

/// Dense peak TFLOP/s from vendor datasheets, by adapter-name fragment (the first match wins):
/// f32 on the vector units, and f16/bf16 on the tensor cores with f32 accumulation.
const KNOWN_PEAKS: &[(&str, f64, f64)] = &[
    ("H200", 67.0, 989.4),
    ("H100 PCIe", 51.2, 756.0),
    ("H100", 66.9, 989.4),
    ("A100", 19.5, 312.0),
    ("L40S", 91.6, 362.1),
    ("RTX 4090", 82.6, 165.2),
    ("MI300X", 163.4, 1307.4),
];

/// The peak this adapter is known to reach in `precision`, if it is in [`KNOWN_PEAKS`].
fn known_peak_tflops(description: &str, precision: Precision) -> Option<f64> {
    KNOWN_PEAKS
        .iter()
        .find(|(name, _, _)| description.contains(name))
        .map(|&(_, f32_peak, half_peak)| match precision {
            Precision::F32 => f32_peak,
            Precision::F16 | Precision::Bf16 => half_peak,
        })
}

/// Weights from a directory, or random ones for a bare config file.
fn bench_model(path: &Path, device: &Device, projections: FloatDType) -> Result<Llama> {
    if path.is_dir() {
        return load_model_storing(path, device, projections);
    }
    let config = LlamaConfig::from_file(path)?;
    eprintln!(
        "{}: random weights ({:.2}B parameters)",
        path.display(),
        config.num_parameters() as f64 / 1e9
    );
    Ok(Llama::random(config, 0, device, projections))
}

/// `model` with fresh LoRA adapters of `--lora-rank` on every projection, if one is asked for.
fn with_bench_lora(model: Llama, path: &Path, rank: Option<usize>, dropout: f64) -> Result<Llama> {
    let Some(rank) = rank else {
        return Ok(model);
    };
    let lora = LoraConfig {
        rank,
        dropout,
        ..Default::default()
    };
    if let Some((field, why)) = lora.invalid() {
        bail!("--lora-rank: {field} {why}");
    }
    model.with_fresh_lora(&lora, path.to_path_buf(), 0)
}

/// `queries` queries of `T / 4` tokens, each with `k` responses filling the rest of `T`, scored
/// in a fixed order. The ids follow a formula benches/rrhf_step.py repeats, so both sides see
/// the same tokens.
fn synthetic_examples(args: &StepBench, vocab: usize) -> Vec<TokenizedExample> {
    let id = |i: usize| ((i * 7919 + 13) % (vocab - 2) + 2) as u32;
    let query_len = args.t / 4;
    let response_len = args.t - query_len;
    let mut next = 0;
    let mut take = |n: usize| -> Vec<u32> {
        let out = (next..next + n).map(id).collect();
        next += n;
        out
    };
    (0..args.queries)
        .map(|q| TokenizedExample {
            query: take(query_len),
            responses: (0..args.k).map(|_| take(response_len)).collect(),
            scores: (0..args.k).map(|r| r as f64).collect(),
            line: q + 1,
        })
        .collect()
}

/// Memory a computation needs beyond what is already allocated: on a device with a memory pool
/// (wgpu), the growth of the bytes the pool reserves, measured from a cleaned pool; on the CPU
/// path, the growth of the process's peak resident memory (Linux: reset through clear_refs).
fn peak_temporary_bytes<R>(device: &Device, f: &dyn Fn() -> R) -> u64 {
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

/// The most memory the run has held: the device pool's reservation on wgpu (it keeps what it
/// grew to), the process's peak resident set on the CPU path.
fn peak_memory(device: &Device) -> (u64, &'static str) {
    match device.memory_pool_usage() {
        Some(usage) => (usage.bytes_reserved, "device memory pool reserved"),
        None => (resident_kib("VmHWM:") * 1024, "process peak resident set"),
    }
}

fn resident_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The gradient exchange of data parallel (`mpirun -np N rrhf bench allreduce ...`).
#[derive(Debug, Clone, clap::Args)]
pub struct AllReduceBench {
    /// A model directory, or a `config.json` alone (random weights): its trainable parameters
    /// are the floats exchanged.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// LoRA adapters of this rank on every projection: only they are exchanged.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// Timed exchanges; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

/// Times what one optimizer step of data parallel adds: the trainer's sum of the gradients
/// across the ranks (device to host, MPI_Allreduce in buckets, host to device), and the
/// MPI_Allreduce of as many floats alone, from which the bus bandwidth follows (NCCL's
/// convention: a ring all-reduce moves 2(N-1)/N of the bytes through each rank's link).
pub fn allreduce(args: &AllReduceBench) -> Result<()> {
    let world = crate::parallel::world();
    let selected = select_announced(&crate::device::for_rank(&args.device, world), "--device")?;
    // On the training device, where the parameters require gradients as the trainer's do.
    let device = Checkpointing::Off.training_device(&selected.device);
    let model = bench_model(&args.model, &device, FloatDType::F32)?;
    let dropout = LoraConfig::default().dropout;
    let model = with_bench_lora(model, &args.model, args.lora_rank, dropout)?;
    let mut grads = crate::train::optimizer::GradientBuffer::zeros(&model);
    let floats: usize = grads.tensors().iter().map(|g| g.dims()[0]).sum();
    let exchange = crate::parallel::time_slowest_rank(args.repeats, &mut || {
        grads.sum_across_ranks(world)?;
        selected.device.sync().context("waiting for the device")
    })?;
    let mut bucket = vec![1.0f32; floats.min(crate::parallel::BUCKET_FLOATS)];
    let host = crate::parallel::time_slowest_rank(args.repeats, &mut || {
        let mut left = floats;
        while left > 0 {
            let n = left.min(bucket.len());
            world.sum_f32(&mut bucket[..n]);
            left -= n;
        }
        Ok(())
    })?;
    if !world.is_root() {
        return Ok(());
    }
    let bytes = (floats * 4) as f64;
    let n = world.size as f64;
    let bus_gbits = (world.size > 1).then(|| 2.0 * (n - 1.0) / n * bytes * 8.0 / host / 1e9);
    println!(
        "{}",
        json!({
            "bench": "allreduce", "ranks": world.size, "device": selected.description,
            "model": args.model.display().to_string(), "lora_rank": args.lora_rank,
            "floats": floats, "mib": bytes / MIB,
            "buckets": floats.div_ceil(crate::parallel::BUCKET_FLOATS),
            "exchange_seconds": exchange, "allreduce_seconds": host,
            "bus_gbit_per_sec": bus_gbits,
        })
    );
    Ok(())
}
