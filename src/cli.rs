//! The `rrhf` command line.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use clap::{Args, Parser, Subcommand};

use crate::checkpoint::{self, SaveDtype, convert::convert_gguf};
use crate::data::ScoredBatch;
use crate::device::{self, DeviceChoice, SelectedDevice};
use crate::loss::sequence_logprobs;
use crate::model::Llama;
use crate::sampling::{SamplingConfig, generate};
use crate::tokenizer::{TemplateMode, Tokenizer};
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
        #[arg(long)]
        out: PathBuf,
        /// Dtype of the written weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: SaveDtype,
    },
    /// Continue prompts with the model.
    Generate(GenerateArgs),
    /// Print the RRHF sequence score of a response: `{"sum", "tokens", "mean"}` of its token log-probs.
    Logprob(LogprobArgs),
    /// Train with the RRHF loss on ranked data, as a TOML config describes.
    Train(TrainArgs),
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
        Command::Convert { gguf, out, dtype } => {
            let start = Instant::now();
            let config = convert_gguf(&gguf, &out, dtype)?;
            eprintln!(
                "wrote {} ({} parameters, {} layers) in {:.1} s",
                out.display(),
                config.num_parameters(),
                config.num_hidden_layers,
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Generate(args) => generate_cmd(args),
        Command::Logprob(args) => logprob_cmd(args),
        Command::Train(args) => train_cmd(args),
    }
}

fn devices(json: bool) -> Result<()> {
    let adapters = device::adapters();
    if json {
        for a in &adapters {
            println!("{}", serde_json::to_string(a)?);
        }
        return Ok(());
    }
    if adapters.is_empty() {
        println!("no wgpu adapters (no Vulkan/Metal/DX12 driver found)");
    }
    let mut gpu_index = 0;
    for a in &adapters {
        let handle = if a.is_gpu {
            gpu_index += 1;
            format!("gpu:{}", gpu_index - 1)
        } else if a.device_type == "Cpu" {
            "wgpu-cpu".into()
        } else {
            "-".into()
        };
        println!(
            "{handle:<9} {} [{} {}] driver: {}\n          max buffer {} MiB, storage binding {} MiB, workgroup memory {} KiB, \
             {} invocations/workgroup, f16: {}",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.max_buffer_size >> 20,
            a.max_storage_buffer_binding_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup,
            if a.supports_f16 { "yes" } else { "no" }
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
    let selected = device::select(&args.device)?;
    eprintln!("device: {}", selected.description);
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
    let (_, model, tokenizer) = load(&args.model)?;
    let prompts = args
        .prompt
        .iter()
        .map(|p| tokenizer.encode_query(p, args.model.template))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let outputs = generate(&model, &prompts, &args.sampling, tokenizer.stop_ids())?;
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
    let query = tokenizer.encode_query(&args.query, args.model.template)?;
    let response = tokenizer.encode_response(&args.response)?;
    let batch = ScoredBatch::pack(&[(query, response)]);
    let (sum, count) = sequence_logprobs(&model, &batch);
    let sum: f64 = sum.into_scalar::<f32>() as f64;
    let count = count.into_scalar::<f32>() as usize;
    ensure!(count > 0, "the response has no tokens");
    let line = serde_json::json!({"sum": sum, "tokens": count, "mean": sum / count as f64});
    println!("{line}");
    Ok(())
}

fn train_cmd(args: TrainArgs) -> Result<()> {
    let config = TrainConfig::load(&args.config, &args.set)?;
    let started = Instant::now();
    let summary = train(
        &config,
        &RunOptions {
            resume: args.resume,
            stop_after: args.stop_after,
        },
    )?;
    let mut line = serde_json::json!({
        "steps": summary.steps,
        "loss": summary.last_loss,
        "saved": summary.saved,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if let Some(eval) = summary.eval {
        line["eval_loss"] = eval.loss.into();
        line["eval_rank_accuracy"] = eval.rank_accuracy.into();
    }
    println!("{line}");
    Ok(())
}
