//! The `rrhf` command line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Parser, Subcommand};

use crate::bench;
use crate::checkpoint::outputs::{check_against_inputs, check_output_dir, write_output_dir};
use crate::checkpoint::{
    self, SaveDtype, convert::convert_gguf, peft, write_jsonl_atomically, write_model_files,
};
use crate::data::{ReadOptions, ScoredBatch, read_query_lines};
use crate::device::{self, DeviceChoice, SelectedDevice};
use crate::eval::{EvalSettings, ModelEval, evaluate_model, win_rate};
use crate::model::Llama;
use crate::rewards::{RewardOptions, RewardSpec, score_responses};
use crate::sampling::{Draws, ResponsePolicy, SamplingConfig, generate, sample_responses};
use crate::scoring::{HeadPath, final_hidden, sequence_logprobs};
use crate::tokenizer::{Prompt, TemplateMode, Tokenizer};
use crate::train::{RunOptions, TrainConfig, train};

#[derive(Parser)]
#[command(
    name = "rrhf",
    version,
    about = "RRHF alignment of LLaMA-family models on any GPU wgpu reaches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the wgpu adapters (Vulkan, Metal, DX12) and what `--device auto` picks.
    Devices {
        /// One JSON object per adapter instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Convert a llama.cpp GGUF file into a Hugging Face model directory.
    Convert {
        #[arg(long)]
        gguf: PathBuf,
        /// A new or empty directory (see --force).
        #[arg(long)]
        out: PathBuf,
        /// Dtype of the written weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: SaveDtype,
        /// Write into a non-empty --out: replace the files rrhf writes (config, weights,
        /// tokenizer) and keep every other file there.
        #[arg(long)]
        force: bool,
    },
    /// Fold LoRA adapters (a PEFT directory, e.g. a LoRA run's `final`) into their base model and
    /// save the full model.
    Merge {
        /// The adapter directory (adapter_config.json, adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// The base model directory; by default the adapter's `base_model_name_or_path`.
        #[arg(long)]
        base: Option<PathBuf>,
        /// A new or empty directory (see --force), outside the adapter and base directories.
        #[arg(long)]
        out: PathBuf,
        /// Dtype of the written weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: SaveDtype,
        /// Write into a non-empty --out: replace the files rrhf writes (config, weights,
        /// tokenizer) and keep every other file there.
        #[arg(long)]
        force: bool,
    },
    /// Continue prompts with the model.
    Generate(GenerateArgs),
    /// Print the RRHF sequence score of a response: `{"sum", "tokens", "mean"}` of its token log-probs.
    Logprob(LogprobArgs),
    /// Draw k responses per query (top-p, beam, diverse beam or greedy) into a JSONL file.
    Sample(SampleArgs),
    /// Add reward scores to sampled {query, responses} lines.
    Score(ScoreArgs),
    /// Greedy answers to held-out queries: reward mean and spread, reference perplexity, win rate.
    Eval(EvalArgs),
    /// Train with the RRHF loss on ranked data, as a TOML config describes.
    Train(TrainArgs),
    /// Train a reward model (a scalar head on the LLaMA) on ranked or pairwise data; the same
    /// TOML config, whose `[reward_model]` picks the pair loss (logistic by default).
    TrainRm(TrainArgs),
    /// Speed and memory as JSON lines: `kernels` (log-prob kernel vs reference, fused vs unfused
    /// head) and `step` (a whole RRHF step on a model; benches/rrhf_step.py is its PyTorch twin).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Do two runs agree? Their metrics step by step (the largest relative difference of each, and
    /// the first step beyond --rtol) and what differs between their run.json manifests. Exit
    /// status 0 within the tolerance, 1 beyond it, 2 when the runs cannot be compared.
    Compare {
        /// A run's output directory (holding metrics.jsonl).
        run_a: PathBuf,
        run_b: PathBuf,
        /// Values agree when |a - b| / max(|a|, |b|) <= rtol ...
        #[arg(long, default_value_t = 1e-3)]
        rtol: f64,
        /// ... or |a - b| <= atol (for values that go to zero, such as a learned rank loss).
        #[arg(long, default_value_t = 1e-6)]
        atol: f64,
        /// Also draw both loss curves and their difference into this PNG.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Run a run again from its run.json alone (config, seed, precision), checking that every
    /// data and model file hashes as recorded. On the same device and build the metrics are the
    /// same bits; `rrhf compare` the two runs to see.
    Reproduce {
        /// The output directory of the run to repeat (holding run.json).
        run_dir: PathBuf,
        /// Where the new run writes (its output.dir).
        #[arg(long)]
        out: PathBuf,
        /// Run on this device instead of the recorded one (auto, gpu, gpu:N, wgpu-cpu, cpu).
        #[arg(long)]
        device: Option<DeviceChoice>,
        /// Override a config key, e.g. a data file's path on this machine:
        /// `--set data.train=PATH` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Go on, with a warning, when a data or model file differs from the run's.
        #[arg(long)]
        allow_changed_inputs: bool,
        /// Start over in an --out that holds another run (as `train --force`).
        #[arg(long)]
        force: bool,
    },
    /// Draw a run's metrics.jsonl as a PNG: loss (raw, smoothed, eval) beside its rank and
    /// fine-tune parts, and reward (online) or eval accuracy, per step.
    /// `train` writes `<output.dir>/metrics.png` itself at the end of a run.
    Plot {
        /// A metrics.jsonl written by `train` or `train-rm`.
        #[arg(long)]
        metrics: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The sequence log-prob kernel against its burn-ops reference, and the fused head against
    /// the unfused one (SmolLM2's head at S=24, T=512 by default).
    Kernels(bench::KernelBench),
    /// One RRHF optimizer step (forward, backward, AdamW) with k responses of T tokens.
    Step(bench::StepBench),
    /// Data parallel's gradient exchange for a model's trainable parameters: launch it under
    /// `mpirun -np N` (a build with `--features mpi`).
    Allreduce(bench::AllReduceBench),
}

#[derive(Args)]
struct SampleArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL with `query` (or `prompt`) per line; other fields are ignored.
    #[arg(long)]
    queries: PathBuf,
    #[command(flatten)]
    policy: ResponsePolicy,
    /// Where to write {query, responses} lines.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct RewardArgs {
    /// rule:NAME[:key=value,...] (length, contains, arithmetic, format), command:CMD (reads
    /// {query, response} JSON lines, writes one number per line), http(s)://HOST:PORT/PATH (a
    /// judge answering a POST of {"items": [...]} with {"scores": [...]}), or model:DIR (a
    /// reward model).
    #[arg(long)]
    reward: String,
    /// Seconds an external scorer or HTTP judge may take per batch.
    #[arg(long, default_value_t = crate::rewards::DEFAULT_TIMEOUT_SECS)]
    reward_timeout: f64,
    /// The environment variable holding the HTTP judge's bearer token.
    #[arg(long)]
    reward_token_env: Option<String>,
    /// Where a reward model runs: auto | gpu | gpu:N | wgpu-cpu | cpu.
    #[arg(long, default_value = "auto")]
    reward_device: DeviceChoice,
}

impl RewardArgs {
    fn build(&self) -> Result<Box<dyn crate::rewards::Reward>> {
        let spec = RewardSpec::parse(&self.reward)?;
        let device = match spec {
            RewardSpec::Model(_) => {
                device::select(&self.reward_device)
                    .context("--reward-device")?
                    .device
            }
            _ => crate::device::cpu_device().device,
        };
        spec.build(&RewardOptions {
            timeout_secs: self.reward_timeout,
            device,
            token_env: self.reward_token_env.clone(),
        })
    }
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    reward: RewardArgs,
    /// {query, responses} lines, as `rrhf sample` writes them.
    #[arg(long = "in")]
    input: PathBuf,
    /// The same lines with `scores`: ranked data for `rrhf train`.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL queries; a `chosen` or best-scored response, if present, is the reference whose
    /// perplexity is reported.
    #[arg(long)]
    queries: PathBuf,
    #[command(flatten)]
    reward: RewardArgs,
    /// A second model to compare with: the win rate of --model against it.
    #[arg(long)]
    against: Option<PathBuf>,
    #[command(flatten)]
    sampling: SamplingConfig,
    /// Queries generated together.
    #[arg(long, default_value_t = 8)]
    batch_queries: usize,
    /// Also write each query's answers and rewards here (JSONL).
    #[arg(long)]
    answers: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    /// The run's TOML config (see configs/).
    #[arg(long)]
    config: PathBuf,
    /// Override a config key: `--set train.lr=1e-5` (repeatable; the value is TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from a checkpoint directory (`<output.dir>/checkpoint-N`).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this many steps in all, with a checkpoint, as if interrupted; the schedule still
    /// spans the whole run, so `--resume` continues it.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Start over in an output.dir that holds another run: removes that run's files (metrics,
    /// checkpoints, final/, best/, samples/, tensorboard/, plot) and nothing else.
    #[arg(long)]
    force: bool,
}

/// Options every command that runs a model takes.
#[derive(Args)]
struct ModelArgs {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// auto | gpu | gpu:N | wgpu-cpu | cpu
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// `auto` wraps text in the checkpoint's chat template when it has one; `none` uses it raw.
    #[arg(long, value_enum, default_value = "auto")]
    template: TemplateMode,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A prompt; repeat for several, generated as one batch.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    #[command(flatten)]
    sampling: SamplingConfig,
    /// One JSON line per prompt instead of plain text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LogprobArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    query: String,
    #[arg(long)]
    response: String,
}

pub fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Devices { json } => devices(json),
        Command::Convert {
            gguf,
            out,
            dtype,
            force,
        } => {
            let start = Instant::now();
            let config = convert_gguf(&gguf, &out, dtype, force)?;
            eprintln!(
                "wrote {} ({} parameters, {} layers) in {:.1} s",
                out.display(),
                config.num_parameters(),
                config.num_hidden_layers,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Merge {
            adapter,
            base,
            out,
            dtype,
            force,
        } => merge_cmd(&adapter, base.as_deref(), &out, dtype, force),
        Command::Generate(args) => generate_cmd(args),
        Command::Logprob(args) => logprob_cmd(args),
        Command::Sample(args) => sample_cmd(args),
        Command::Score(args) => score_cmd(args),
        Command::Eval(args) => eval_cmd(args),
        Command::Train(args) => train_cmd(args, false),
        Command::TrainRm(args) => train_cmd(args, true),
        Command::Bench {
            what: BenchCommand::Kernels(args),
        } => bench::kernels(&args),
        Command::Bench {
            what: BenchCommand::Step(args),
        } => bench::step(&args),
        Command::Bench {
            what: BenchCommand::Allreduce(args),
        } => bench::allreduce(&args),
        Command::Compare {
            run_a,
            run_b,
            rtol,
            atol,
            plot,
        } => compare_cmd(
            &run_a,
            &run_b,
            crate::compare::Tolerance { rtol, atol },
            plot,
        ),
        Command::Reproduce {
            run_dir,
            out,
            device,
            set,
            allow_changed_inputs,
            force,
        } => {
            let config = crate::train::manifest::reproduction(
                &run_dir,
                &out,
                device.as_ref(),
                &set,
                allow_changed_inputs,
            )?;
            let reward_model = config.reward_model.is_some();
            let options = RunOptions {
                resume: None,
                stop_after: None,
                force,
            };
            run_training(&config, options, reward_model)
        }
        Command::Plot { metrics, out } => {
            check_against_inputs(&out, "--out", &[("metrics file", &metrics)], true)?;
            crate::plot::plot_metrics(&metrics, &out)
        }
    }
}

fn compare_cmd(
    a: &Path,
    b: &Path,
    tolerance: crate::compare::Tolerance,
    plot: Option<PathBuf>,
) -> Result<()> {
    if !(tolerance.rtol >= 0.0 && tolerance.atol >= 0.0) {
        bail!("--rtol and --atol must be numbers >= 0");
    }
    let comparison = crate::compare::compare(a, b, tolerance)?;
    print!("{}", crate::compare::report(&comparison, tolerance));
    if let Some(out) = plot {
        let curves = crate::compare::loss_curves(a, b, tolerance)?;
        let names = [a, b].map(crate::compare::run_name);
        crate::plot::plot_comparison([&names[0], &names[1]], &curves, &out)?;
        println!("plot: {}", out.display());
    }
    if !comparison.agrees() {
        bail!("the runs differ beyond rtol {}", tolerance.rtol);
    }
    Ok(())
}

fn devices(json: bool) -> Result<()> {
    let mut adapters = device::adapters();
    let handles = device::handles(&adapters);
    for (a, handle) in adapters.iter_mut().zip(&handles) {
        if handle != "-" {
            device::probe_compiler(a);
        }
    }
    if json {
        for a in &adapters {
            println!("{}", serde_json::to_string(a)?);
        }
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no wgpu adapters (no Vulkan/Metal/DX12 driver found)");
    }
    for (a, handle) in adapters.iter().zip(handles) {
        let matrices = match a.cooperative_matrices.is_empty() {
            true => "none".to_string(),
            false => a.cooperative_matrices.join(", "),
        };
        println!(
            "{handle:<9} {} [{} {}] driver: {}\n          compiler: {}, cooperative matrices \
             (tensor cores): {matrices}\n          max buffer {} MiB, storage binding {} MiB, \
             workgroup memory {} KiB, {} invocations/workgroup, f16: {}",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.compiler.as_deref().unwrap_or("-"),
            a.max_buffer_size >> 20,
            a.max_storage_buffer_binding_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup,
            if a.supports_f16 { "yes" } else { "no" }
        );
    }
    if let Some(r) = device::runtime_settings() {
        println!(
            "autotune: {} (cache {}), fusion: {}",
            if r.autotune { "on" } else { "off" },
            r.cache
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
            if r.fusion { "on" } else { "off" }
        );
    }
    println!(
        "--device auto uses: {}",
        device::select(&DeviceChoice::Auto)?.description
    );
    Ok(())
}

/// Selects the device and loads model and tokenizer, saying what was chosen.
fn load(args: &ModelArgs) -> Result<(SelectedDevice, Llama, Tokenizer)> {
    let selected = device::select_announced(&args.device, "--device")?;
    let start = Instant::now();
    let model = checkpoint::load_model(&args.model, &selected.device)?;
    let tokenizer = Tokenizer::load(&args.model, &model.config)?;
    if args.template == TemplateMode::Auto && !tokenizer.has_template() {
        eprintln!(
            "note: {} has no chat template; using raw text",
            args.model.display()
        );
    }
    eprintln!(
        "loaded {} in {:.1} s",
        args.model.display(),
        start.elapsed().as_secs_f64()
    );
    Ok((selected, model, tokenizer))
}

fn generate_cmd(args: GenerateArgs) -> Result<()> {
    args.sampling.validate()?;
    let (_, model, tokenizer) = load(&args.model)?;
    let prompts = args
        .prompt
        .iter()
        .map(|p| tokenizer.encode_query(&Prompt::from(p.as_str()), args.model.template))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let outputs = generate(&model, &prompts, &args.sampling, tokenizer.stop_ids())
        .with_context(|| args.model.model.display().to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let new_tokens: usize = outputs.iter().map(|o| o.tokens.len()).sum();
    for (prompt, out) in args.prompt.iter().zip(&outputs) {
        let text = tokenizer.decode(&out.tokens, true)?;
        if args.json {
            let line = serde_json::json!({"prompt": prompt, "response": text, "tokens": out.tokens.len(), "stopped": out.stopped});
            println!("{line}");
        } else {
            println!("{}", text.trim_end());
        }
    }
    eprintln!(
        "{new_tokens} new tokens in {seconds:.2} s ({:.1} tokens/s)",
        new_tokens as f64 / seconds
    );
    Ok(())
}

fn logprob_cmd(args: LogprobArgs) -> Result<()> {
    let (_, model, tokenizer) = load(&args.model)?;
    let query = tokenizer.encode_query(&Prompt::from(args.query.as_str()), args.model.template)?;
    let response = tokenizer.encode_response(&args.response)?;
    let batch = ScoredBatch::pack(&[(query, response)]);
    let hidden = final_hidden(&model, &batch);
    let (sum, count) = sequence_logprobs(&model, &batch, HeadPath::default(), hidden);
    let sum = device::to_host(sum)?[0] as f64;
    let count = device::to_host(count)?[0] as usize;
    ensure!(count > 0, "the response has no tokens");
    ensure!(
        sum.is_finite(),
        "{}: the response's log-probability is {sum}, not a finite number: the model's weights \
         or config are broken",
        args.model.model.display()
    );
    let line = serde_json::json!({"sum": sum, "tokens": count, "mean": sum / count as f64});
    println!("{line}");
    Ok(())
}

fn merge_cmd(
    adapter: &Path,
    base: Option<&Path>,
    out: &Path,
    dtype: SaveDtype,
    force: bool,
) -> Result<()> {
    if !adapter.join(peft::ADAPTER_CONFIG).exists() {
        bail!(
            "{}: no {} (not a LoRA adapter directory)",
            adapter.display(),
            peft::ADAPTER_CONFIG
        );
    }
    let mut inputs = vec![("adapter directory", adapter)];
    inputs.extend(base.map(|b| ("base model", b)));
    check_output_dir(out, &inputs, force)?;
    let device = device::cpu_device().device;
    let model = peft::load_adapter_model(adapter, base, &device, burn::tensor::FloatDType::F32)?;
    let base_dir = model
        .adapter
        .as_ref()
        .expect("load_adapter_model attaches the adapters")
        .base
        .clone();
    let merged = model.merge_lora();
    // The adapter directory's tokenizer files when it has them (a run may have changed none,
    // but they are the ones trained with), else the base model's.
    let tokenizer_from = match adapter.join("tokenizer.json").exists() {
        true => adapter,
        false => &base_dir,
    };
    let inputs = [("adapter directory", adapter), ("base model", &base_dir)];
    write_output_dir(out, &inputs, force, |dir| {
        write_model_files(&merged, Some(tokenizer_from), dir, dtype)
    })?;
    eprintln!(
        "wrote {} (adapters of {} merged into {})",
        out.display(),
        adapter.display(),
        base_dir.display()
    );
    Ok(())
}

fn train_cmd(args: TrainArgs, reward_model: bool) -> Result<()> {
    let mut config = TrainConfig::load(&args.config, &args.set)?;
    match (reward_model, config.reward_model.is_some()) {
        (true, false) => config.reward_model = Some(Default::default()),
        (false, true) => anyhow::bail!(
            "{}: this config has [reward_model]: train it with `rrhf train-rm`",
            args.config.display()
        ),
        _ => {}
    }
    let options = RunOptions {
        resume: args.resume,
        stop_after: args.stop_after,
        force: args.force,
    };
    run_training(&config, options, reward_model)
}

/// Trains as `config` says and prints the summary line: steps, last loss, where the model went.
fn run_training(config: &TrainConfig, options: RunOptions, reward_model: bool) -> Result<()> {
    let started = Instant::now();
    let summary = train(config, &options)?;
    let mut line = serde_json::json!({
        "steps": summary.steps,
        "loss": summary.last_loss,
        "saved": summary.saved,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(eval) = summary.eval {
        line["eval_loss"] = eval.loss.into();
        let name = if reward_model {
            "eval_pairwise_accuracy"
        } else {
            "eval_rank_accuracy"
        };
        line[name] = eval.rank_accuracy.into();
    }
    // Under MPI every rank trains, but the run (its files and this line) is rank 0's.
    if crate::parallel::world().is_root() {
        println!("{line}");
    }
    Ok(())
}

fn sample_cmd(args: SampleArgs) -> Result<()> {
    args.policy.validate()?;
    check_against_inputs(&args.out, "--out", &[("query file", &args.queries)], true)?;
    let lines = read_query_lines(&args.queries, &ReadOptions::default())?;
    let (_, model, tokenizer) = load(&args.model)?;
    let prompts = lines
        .iter()
        .map(|l| tokenizer.encode_query(&l.query, args.model.template))
        .collect::<Result<Vec<_>>>()?;
    let bar = crate::progress::bar("sampling", " queries", prompts.len(), 0);
    let started = Instant::now();
    let mut tokens = 0usize;
    let queries: Vec<usize> = (0..prompts.len()).collect();
    let draws = Draws {
        round: 0,
        queries: &queries,
    };
    let samples = sample_responses(
        &model,
        &prompts,
        draws,
        &args.policy,
        tokenizer.stop_ids(),
        &mut |done, new_tokens| {
            tokens += new_tokens;
            bar.inc(done as u64);
            bar.set_message(format!(
                "{:.1} tokens/s",
                tokens as f64 / started.elapsed().as_secs_f64()
            ));
        },
    )?;
    bar.finish();
    let rows = lines
        .iter()
        .zip(&samples)
        .map(|(line, responses)| {
            let texts = responses
                .iter()
                .map(|g| tokenizer.response_text(&g.tokens))
                .collect::<Result<Vec<_>>>()?;
            Ok(line.query.record(serde_json::json!({"responses": texts})))
        })
        .collect::<Result<Vec<_>>>()?;
    write_jsonl_atomically(&args.out, &rows)?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} queries x {} responses to {}: {tokens} tokens in {seconds:.1} s ({:.1} tokens/s)",
        samples.len(),
        args.policy.responses_per_query(),
        args.out.display(),
        tokens as f64 / seconds
    );
    Ok(())
}

fn score_cmd(args: ScoreArgs) -> Result<()> {
    check_against_inputs(&args.out, "--out", &[("--in file", &args.input)], true)?;
    let lines = read_query_lines(&args.input, &ReadOptions::default())?;
    if let Some(l) = lines.iter().find(|l| l.responses.is_empty()) {
        anyhow::bail!(
            "{}: field `responses` is missing: nothing to score",
            crate::data::location(&args.input, l.line)
        );
    }
    let mut reward = args.reward.build()?;
    let queries: Vec<Prompt> = lines.iter().map(|l| l.query.clone()).collect();
    let responses: Vec<Vec<String>> = lines.iter().map(|l| l.responses.clone()).collect();
    let scores = score_responses(reward.as_mut(), &queries, &responses)?;
    write_jsonl_atomically(
        &args.out,
        lines.iter().zip(&scores).map(|(l, ss)| {
            l.query
                .record(serde_json::json!({"responses": l.responses, "scores": ss}))
        }),
    )?;
    let flat: Vec<f64> = scores.into_iter().flatten().collect();
    let (mean, std) = crate::rewards::mean_std(&flat);
    eprintln!(
        "scored {} responses with {}: mean {mean:.4}, std {std:.4}; wrote {}",
        flat.len(),
        reward.describe(),
        args.out.display()
    );
    Ok(())
}

fn eval_cmd(args: EvalArgs) -> Result<()> {
    args.sampling.validate()?;
    if let Some(answers) = &args.answers {
        check_against_inputs(answers, "--answers", &[("query file", &args.queries)], true)?;
    }
    let lines = read_query_lines(&args.queries, &ReadOptions::default())?;
    let mut reward = args.reward.build()?;
    let selected = device::select_announced(&args.model.device, "--device")?;
    let settings = EvalSettings {
        sampling: args.sampling.clone(),
        template: args.model.template,
        batch: args.batch_queries,
    };
    let mut evals = vec![evaluate_model(
        &args.model.model,
        &selected.device,
        &lines,
        reward.as_mut(),
        &settings,
    )?];
    if let Some(other) = &args.against {
        evals.push(evaluate_model(
            other,
            &selected.device,
            &lines,
            reward.as_mut(),
            &settings,
        )?);
    }
    if let Some(path) = &args.answers {
        let rows = lines.iter().enumerate().map(|(i, line)| {
            let per_model: Vec<serde_json::Value> = evals
                .iter()
                .map(|e| serde_json::json!({"model": e.model, "answer": e.answers[i], "reward": e.rewards[i]}))
                .collect();
            line.query.record(serde_json::json!({"answers": per_model}))
        });
        write_jsonl_atomically(path, rows)?;
    }
    eprintln!("{}", eval_table(&evals, &reward.describe(), lines.len()));
    let summary = |e: &ModelEval| {
        serde_json::json!({
            "model": e.model, "reward_mean": e.reward_mean, "reward_std": e.reward_std,
            "perplexity": e.perplexity, "mean_answer_tokens": e.mean_answer_tokens,
            "tokens_per_sec": e.tokens_per_sec,
        })
    };
    let mut line = serde_json::json!({
        "queries": lines.len(),
        "reward": reward.describe(),
        "max_new_tokens": args.sampling.max_new_tokens,
        "temperature": args.sampling.temperature,
        "seed": args.sampling.seed,
        "models": evals.iter().map(summary).collect::<Vec<_>>(),
    });
    if let [a, b] = &evals[..] {
        line["win_rate"] = win_rate(&a.rewards, &b.rewards).into();
    }
    println!("{line}");
    Ok(())
}

fn eval_table(evals: &[ModelEval], reward: &str, queries: usize) -> String {
    let mut t = format!(
        "{queries} queries, reward {reward}\n{:<40} {:>12} {:>10} {:>11} {:>12}\n",
        "model", "reward mean", "std", "perplexity", "answer toks"
    );
    for e in evals {
        let ppl = e.perplexity.map_or("-".to_string(), |p| format!("{p:.3}"));
        t.push_str(&format!(
            "{:<40} {:>12.4} {:>10.4} {:>11} {:>12.1}\n",
            e.model, e.reward_mean, e.reward_std, ppl, e.mean_answer_tokens
        ));
    }
    if let [a, b] = evals {
        t.push_str(&format!(
            "win rate of {} against {}: {:.3} (ties count half)",
            a.model,
            b.model,
            win_rate(&a.rewards, &b.rewards)
        ));
    }
    t
}
