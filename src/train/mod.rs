//! The RRHF trainer, in the order it runs: load the model and the ranked data, then for each
//! optimizer step take the next queries, split them into micro-batches, accumulate the
//! gradients of the RRHF loss, clip them by their global norm, apply AdamW at the scheduled
//! learning rate, and log, evaluate and checkpoint on their schedules.

pub mod checkpointing;
pub mod config;
pub mod loss_scale;
pub mod online;
pub mod optimizer;
pub mod run_dir;
pub mod schedule;
pub mod state;

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{FloatDType, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::checkpoint::{SaveDtype, load_checkpoint, load_model_storing, save_model};
use crate::data::{
    RankBatch, TokenizeOptions, TokenizedExample, check_rankable, read_query_lines,
    read_ranked_jsonl, tokenize_examples,
};
use crate::device::{SelectedDevice, select};
use crate::loss::{RrhfLoss, final_hidden, ranked_pairs, reward_model_loss_of, rrhf_loss_of};
use crate::model::{Llama, Precision};
use crate::tokenizer::Tokenizer;
use checkpointing::loss_forward;
pub use config::TrainConfig;
use loss_scale::LossScale;
use online::OnlineSampler;
use optimizer::{AdamW, AdamWConfig, GradientBuffer};
use run_dir::{RunDir, RunStart};
use schedule::LrSchedule;
use state::{TrainerState, checkpoint_dir, load_checkpoint_state, save_checkpoint};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const FINAL_DIR: &str = "final";
/// Loss and reward (or eval accuracy) per step, drawn at the end of a run.
pub const PLOT_FILE: &str = "metrics.png";

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub last_loss: f32,
    pub eval: Option<EvalResult>,
    /// Where the model was saved: `final`, or the checkpoint written at `stop_after`.
    pub saved: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct EvalResult {
    pub loss: f32,
    pub rank_accuracy: f32,
}

pub struct RunOptions {
    /// Continue from this checkpoint directory.
    pub resume: Option<PathBuf>,
    /// End the run after this many steps in total (the schedule still spans the whole run).
    pub stop_after: Option<usize>,
    /// Start over in an output directory that holds another run (removing that run's files).
    pub force: bool,
}

pub fn train(config: &TrainConfig, options: &RunOptions) -> Result<TrainSummary> {
    let out = &config.output.dir;
    let _run_dir = RunDir::open(&RunStart {
        dir: out,
        resume: options.resume.as_deref(),
        force: options.force,
        inputs: config.inputs(),
    })?;
    let (selected, device, replica_devices) = select_devices(config)?;
    let model_dir = options.resume.as_deref().unwrap_or(&config.model.path);
    let mut model = load_trained_model(config, model_dir, &device)?;
    let tokenizer = Tokenizer::load(model_dir, &model.config)?;

    // Offline, every query's responses are known now; online, they are sampled round by round.
    let (mut train_set, mut online, eval_set) = load_data(config, &tokenizer, &selected.device)?;
    check_batches_fit(
        config,
        &train_set,
        eval_set.as_deref(),
        online.as_ref(),
        &model,
    )?;

    let t = &config.train;
    let schedule = schedule_of(t, train_set.len());
    let total_steps = schedule.total;
    let mut optimizer = AdamW::new(AdamWConfig {
        beta1: t.adam_beta1,
        beta2: t.adam_beta2,
        eps: t.adam_eps,
        weight_decay: t.weight_decay,
    });
    let mut state = TrainerState {
        step: 0,
        total_steps,
        seed: t.seed,
        queries_per_step: t.queries_per_step,
        train_queries: train_set.len(),
        loss_scale: (t.precision == Precision::F16).then(|| LossScale::new(t.loss_scale)),
    };
    if let Some(dir) = &options.resume {
        resume_state(dir, &mut state, &mut optimizer, &selected.device)?;
    }

    let mut metrics = MetricsLog::open(&out.join(METRICS_FILE), state.step)?;
    let end = options
        .stop_after
        .map_or(total_steps, |s| s.min(total_steps));
    let progress = progress_bar(total_steps, state.step);
    let mut order = QueryOrder::new(train_set.len(), t.seed);
    let micro = t.queries_per_step.div_ceil(t.grad_accum);
    let mut grads = GradientBuffer::default();
    let mut last_loss = f32::NAN;
    let mut last_eval = None;

    // A baseline before the first update, so every run shows where it started.
    if let Some(set) = &eval_set
        && state.step == 0
        && config.output.eval_every > 0
    {
        let result = evaluate(&model.valid(), set, micro, config)?;
        metrics.write(eval_line(0, result), &progress)?;
    }

    let mut round_scores = std::collections::HashMap::new();
    let mut first_round = true;
    while state.step < end {
        let step = state.step;
        let started = Instant::now();
        if let Some(sampler) = online.as_mut()
            && (step % sampler.resample_every() == 0 || first_round)
        {
            let reuse = first_round && options.resume.is_some();
            let round = next_round(
                sampler,
                &model,
                &tokenizer,
                &mut order,
                step,
                total_steps,
                t,
                reuse,
            )?;
            for (i, example) in round.examples {
                train_set[i] = Some(example);
            }
            round_scores = round.mean_score;
            if let Some(line) = round.log {
                metrics.write(line, &progress)?;
            }
        }
        first_round = false;
        let queries = order.for_step(step, t.queries_per_step);
        let micro_batches: Vec<&[usize]> = queries.chunks(micro).collect();
        let scale = state.loss_scale.map_or(1.0, |s| s.scale);
        let shares = compute_shares(
            &model,
            &replica_devices,
            &micro_batches,
            &train_set,
            config,
            scale,
        );
        let figures = gather_step(shares, &mut grads, &device, scale, config).map_err(|e| {
            anyhow::anyhow!(
                "step {}: {e:#}; stopping. {}",
                step + 1,
                last_good(out, step)
            )
        })?;
        let lr = schedule.at(step);
        let skipped = !figures.grad_norm.is_finite();
        if skipped && state.loss_scale.is_none() {
            bail!(
                "step {}: the gradient norm is {}; stopping. {}",
                step + 1,
                figures.grad_norm,
                last_good(out, step)
            );
        }
        model = update(
            model,
            &mut optimizer,
            &grads,
            lr,
            figures.grad_norm,
            scale,
            &mut state,
            t,
        );
        grads.clear();
        state.step += 1;

        let n = t.queries_per_step as f32;
        last_loss = figures.sums[0] / n;
        let seconds = started.elapsed().as_secs_f64();
        progress.set_position(state.step as u64);
        progress.set_message(format!(
            "loss {:.4} (rank {:.4}, ft {:.4}) lr {lr:.2e} {:.0} tok/s",
            last_loss,
            figures.sums[1] / n,
            figures.sums[2] / n,
            figures.tokens as f64 / seconds
        ));
        let is_last = state.step == end;
        if state.step % config.output.log_every == 0 || is_last {
            let mut line = step_line(state.step, &figures, lr, seconds, config, train_set.len());
            if state.loss_scale.is_some() {
                line["loss_scale"] = scale.into();
                line["skipped"] = skipped.into();
            }
            if online.is_some() {
                // The mean score (reward, less the KL term if any) of the step's responses.
                let scores: Vec<f64> = queries
                    .iter()
                    .filter_map(|i| round_scores.get(i).copied())
                    .collect();
                line["reward"] = crate::rewards::mean_std(&scores).0.into();
            }
            metrics.write(line, &progress)?;
        }
        let eval_due = config.output.eval_every > 0 && state.step % config.output.eval_every == 0;
        if let Some(set) = &eval_set
            && (eval_due || state.step == total_steps)
        {
            let result = evaluate(&model.valid(), set, micro, config)?;
            metrics.write(eval_line(state.step, result), &progress)?;
            last_eval = Some(result);
        }
        let save_due = config.output.save_every > 0 && state.step % config.output.save_every == 0;
        if save_due || (is_last && state.step < total_steps) {
            save_checkpoint(
                &checkpoint_dir(out, state.step),
                &model,
                &optimizer,
                &state,
                model_dir,
            )?;
        }
    }
    progress.finish();
    let saved = finish_run(
        out,
        &model,
        model_dir,
        state.step == total_steps,
        state.step,
    )?;
    Ok(TrainSummary {
        steps: state.step,
        last_loss,
        eval: last_eval,
        saved,
    })
}

/// The end of a run: its plot, and the final model when the run is complete (`complete`); the
/// directory that holds what was saved last.
fn finish_run(
    out: &Path,
    model: &Llama,
    model_dir: &Path,
    complete: bool,
    step: usize,
) -> Result<PathBuf> {
    // The plot is a convenience: a run that trained is not failed by a missing font.
    let plot = out.join(PLOT_FILE);
    if let Err(e) = crate::plot::plot_metrics(&out.join(METRICS_FILE), &plot) {
        eprintln!("warning: no plot written: {e:#}");
    }
    if !complete {
        return Ok(checkpoint_dir(out, step));
    }
    let dir = out.join(FINAL_DIR);
    save_model(&model.valid(), Some(model_dir), &dir, SaveDtype::F32)?;
    Ok(dir)
}

/// The tokenised training set (offline; online its slots are filled round by round by the
/// sampler returned beside it) and the eval set.
#[allow(clippy::type_complexity)]
fn load_data(
    config: &TrainConfig,
    tokenizer: &Tokenizer,
    device: &burn::tensor::Device,
) -> Result<(
    Vec<Option<TokenizedExample>>,
    Option<OnlineSampler>,
    Option<Vec<TokenizedExample>>,
)> {
    let opts = TokenizeOptions {
        max_length: config.data.max_length,
        max_query_length: config.data.max_query_length,
        template: config.data.template,
    };
    let (train_set, online) = match &config.online {
        None => (
            load_tokenized(&config.data.train, tokenizer, opts, config, true)?
                .into_iter()
                .map(Some)
                .collect(),
            None,
        ),
        Some(section) => {
            let queries = read_query_lines(&config.data.train, config.data.max_line_bytes)?;
            let sampler = OnlineSampler::new(
                section,
                queries.clone(),
                opts,
                config.data.max_line_bytes,
                &config.model.path,
                config.lora.is_some(),
                device,
                &config.output.dir,
            )?;
            (vec![None; queries.len()], Some(sampler))
        }
    };
    let eval_set = match &config.data.eval {
        Some(path) => Some(load_tokenized(path, tokenizer, opts, config, false)?),
        None => None,
    };
    Ok((train_set, online, eval_set))
}

/// The learning-rate schedule over the whole run: `max_steps`, or `epochs` over `train_queries`.
fn schedule_of(t: &config::TrainSection, train_queries: usize) -> LrSchedule {
    let steps_per_epoch = train_queries.div_ceil(t.queries_per_step);
    let total_steps = t.max_steps.unwrap_or(t.epochs * steps_per_epoch);
    let warmup = t
        .warmup_steps
        .unwrap_or((t.warmup_ratio * total_steps as f64).ceil() as usize);
    LrSchedule {
        peak: t.lr,
        warmup,
        total: total_steps,
        kind: t.schedule,
    }
}

/// The online round that `step` belongs to: responses sampled for the queries of its steps (or
/// read back from its file, `reuse`, when a resumed run starts mid-round).
#[allow(clippy::too_many_arguments)]
fn next_round(
    sampler: &mut OnlineSampler,
    model: &Llama,
    tokenizer: &Tokenizer,
    order: &mut QueryOrder,
    step: usize,
    total_steps: usize,
    t: &config::TrainSection,
    reuse: bool,
) -> Result<online::Round> {
    let start = step - step % sampler.resample_every();
    let mut indices = Vec::new();
    for s in start..(start + sampler.resample_every()).min(total_steps) {
        for i in order.for_step(s, t.queries_per_step) {
            if !indices.contains(&i) {
                indices.push(i);
            }
        }
    }
    sampler.round(&model.valid(), tokenizer, start, &indices, reuse)
}

/// The training device (with the checkpointing strategy the config asks for) and the
/// data-parallel ones, each able to compute in `train.precision`: checked before anything is
/// loaded, since a device asked for a dtype it cannot compute in can fail in ways that poison it
/// (lavapipe, casting weights to bf16 under SPIR-V).
fn select_devices(
    config: &TrainConfig,
) -> Result<(
    SelectedDevice,
    burn::tensor::Device,
    Vec<burn::tensor::Device>,
)> {
    let selected = select(&config.train.device).context("field `train.device`")?;
    eprintln!("device: {}", selected.description);
    let training_device =
        |d: &burn::tensor::Device| config.train.gradient_checkpointing.training_device(d);
    let device = training_device(&selected.device);
    let mut replica_devices = Vec::new();
    for choice in &config.train.data_parallel {
        let extra = select(choice).context("field `train.data_parallel`")?;
        eprintln!("data parallel: also {}", extra.description);
        replica_devices.push(training_device(&extra.device));
    }
    for (choice, device) in std::iter::once(&config.train.device)
        .chain(&config.train.data_parallel)
        .zip(std::iter::once(&device).chain(&replica_devices))
    {
        if !config.train.precision.runs_on(device) {
            bail!(
                "train.precision = \"{}\": device `{choice}` has no arithmetic in it (f32 runs \
                 everywhere; f16 needs shader-f16 on a GPU; bf16 runs on the CPU backend only)",
                config.train.precision.name()
            );
        }
    }
    Ok((selected, device, replica_devices))
}

/// The model the run trains, from `model_dir`: a policy (with fresh or loaded LoRA adapters), or
/// a reward model (a causal LM gets a fresh scalar head; a reward model is kept).
fn load_trained_model(
    config: &TrainConfig,
    model_dir: &Path,
    device: &burn::tensor::Device,
) -> Result<Llama> {
    let mut model = match &config.reward_model {
        None => load_model_storing(
            model_dir,
            device,
            config
                .train
                .precision
                .projection_storage(config.lora.is_some()),
        )?,
        Some(_) => load_checkpoint(model_dir, device, FloatDType::F32)?
            .into_reward_model(config.train.seed),
    };
    // A resumed LoRA run loads its adapters with the model; a fresh one starts them here.
    match (&config.lora, &model.adapter) {
        (Some(lora), None) => {
            model = model.with_fresh_lora(lora, config.model.path.clone(), config.train.seed)?
        }
        (Some(lora), Some(loaded)) if *lora != loaded.config => bail!(
            "{}: the adapters there have {:?}, but [lora] asks for {:?}",
            model_dir.display(),
            loaded.config,
            lora
        ),
        _ => {}
    }
    model.precision = config.train.precision;
    Ok(model)
}

/// The largest logits a micro-batch can hold (the fused head: one vocabulary chunk of them) must
/// fit the kernels' indexing: refused before any step, with the key to change.
fn check_batches_fit(
    config: &TrainConfig,
    train_set: &[Option<TokenizedExample>],
    eval_set: Option<&[TokenizedExample]>,
    online: Option<&OnlineSampler>,
    model: &Llama,
) -> Result<()> {
    let most_responses = train_set
        .iter()
        .flatten()
        .chain(eval_set.into_iter().flatten())
        .map(|e| e.responses.len())
        .chain(online.map(OnlineSampler::most_responses))
        .max()
        .unwrap_or(1);
    let micro_queries = config
        .train
        .queries_per_step
        .div_ceil(config.train.grad_accum);
    let vocab = model.config.vocab_size;
    let (columns, fix) = match config.loss.fused_head {
        true => (
            config.loss.head_chunk.min(vocab),
            "field `loss.head_chunk`: use a smaller chunk",
        ),
        false => (vocab, "field `loss.fused_head` = false: use the fused head"),
    };
    crate::kernels::check_logits_fit(
        micro_queries * most_responses,
        config.data.max_length,
        columns,
    )
    .with_context(|| {
        format!("{fix}, or fewer sequences per micro-batch (train.queries_per_step / grad_accum)")
    })
}

/// Continues from the checkpoint `dir`: its step, loss scale and AdamW moments, once the run it
/// was made by is shown to be this one (same seed, batch, data size and schedule).
fn resume_state(
    dir: &Path,
    state: &mut TrainerState,
    optimizer: &mut AdamW,
    device: &burn::tensor::Device,
) -> Result<()> {
    let saved = load_checkpoint_state(dir, optimizer, device)?;
    let identity = |s: &TrainerState| (s.seed, s.queries_per_step, s.train_queries, s.total_steps);
    if identity(&saved) != identity(state) {
        bail!(
            "--resume {}: the checkpoint was made with seed {}, {} queries per step, {} training \
             queries and {} steps; this config gives {}, {}, {} and {}: the data order and \
             schedule would not continue",
            dir.display(),
            saved.seed,
            saved.queries_per_step,
            saved.train_queries,
            saved.total_steps,
            state.seed,
            state.queries_per_step,
            state.train_queries,
            state.total_steps
        );
    }
    state.step = saved.step;
    if state.loss_scale.is_some() && saved.loss_scale.is_some() {
        state.loss_scale = saved.loss_scale;
    }
    eprintln!("resuming from {} at step {}", dir.display(), state.step);
    Ok(())
}

/// What a step's shares add up to, read from the device once.
struct StepFigures {
    /// Summed total, rank and fine-tune losses of the step's queries.
    sums: [f32; 3],
    /// The global norm of the gradients, unscaled.
    grad_norm: f32,
    tokens: usize,
}

/// Merges the workers' shares of a step into `grads` on `device`, and reads the summed losses
/// and the gradients' norm back in the step's one host synchronisation. A non-finite loss is an
/// error naming the step's data lines.
fn gather_step(
    shares: Vec<Result<Share>>,
    grads: &mut GradientBuffer,
    device: &burn::tensor::Device,
    loss_scale: f32,
    config: &TrainConfig,
) -> Result<StepFigures> {
    let mut sums: Option<Tensor<1>> = None;
    let mut tokens = 0;
    let mut lines = Vec::new();
    for share in shares {
        let share = share?;
        if let Some(share_sums) = share.sums.map(|t| t.to_device(device)) {
            sums = Some(sums.map_or(share_sums.clone(), |s| s + share_sums));
        }
        tokens += share.tokens;
        lines.extend(share.lines);
        grads.merge(share.grads);
    }
    let sums = sums.expect("a step has at least one micro-batch");
    let host = crate::device::to_host(Tensor::cat(vec![sums, grads.squared_norm()], 0))?;
    let sums = [host[0], host[1], host[2]];
    if sums.iter().any(|x| !x.is_finite()) {
        lines.sort_unstable();
        let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
        bail!(
            "the loss is not finite (total {}, rank {}, ft {}) on {} lines {}",
            sums[0],
            sums[1],
            sums[2],
            config.data.train.display(),
            lines.join(", ")
        );
    }
    Ok(StepFigures {
        sums,
        grad_norm: host[3].sqrt() / loss_scale,
        tokens,
    })
}

/// What one worker's micro-batches of a step add up to.
struct Share {
    /// `[3]` on its device: the summed total, rank and fine-tune losses of its queries, read
    /// with the step's gradient norm (none for a worker that got no micro-batch).
    sums: Option<Tensor<1>>,
    tokens: usize,
    grads: GradientBuffer,
    /// The data lines of its queries, for messages.
    lines: Vec<usize>,
}

/// The step's gradients, one share per worker: this device, then each data-parallel device with
/// a copy of the weights in its own thread, each taking every n-th micro-batch.
fn compute_shares(
    model: &Llama,
    replica_devices: &[burn::tensor::Device],
    micro_batches: &[&[usize]],
    train_set: &[Option<TokenizedExample>],
    config: &TrainConfig,
    loss_scale: f32,
) -> Vec<Result<Share>> {
    let workers = 1 + replica_devices.len();
    let share = |w: usize| -> Vec<&[usize]> {
        micro_batches
            .iter()
            .skip(w)
            .step_by(workers)
            .copied()
            .collect()
    };
    if workers == 1 {
        return vec![accumulate_share(
            model,
            &share(0),
            train_set,
            config,
            loss_scale,
        )];
    }
    let share = &share;
    std::thread::scope(|scope| {
        let handles: Vec<_> = std::iter::once(model.clone())
            .chain(replica_devices.iter().map(|d| model.clone().fork(d)))
            .enumerate()
            .map(|(w, replica)| {
                scope.spawn(move || {
                    accumulate_share(&replica, &share(w), train_set, config, loss_scale)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a data-parallel worker panicked")))
            })
            .collect()
    })
}

/// Forward and backward over `micro_batches` (query indices) on `model`'s device, accumulating
/// the gradients of each micro-batch's share of the step's mean loss, times `loss_scale`.
fn accumulate_share(
    model: &Llama,
    micro_batches: &[&[usize]],
    train_set: &[Option<TokenizedExample>],
    config: &TrainConfig,
    loss_scale: f32,
) -> Result<Share> {
    let mut sums: Option<Tensor<1>> = None;
    let (mut tokens, mut lines) = (0, Vec::new());
    let mut grads = GradientBuffer::default();
    for chunk in micro_batches {
        let examples: Vec<&TokenizedExample> = chunk
            .iter()
            .map(|&i| {
                train_set[i]
                    .as_ref()
                    .expect("the round sampled every query of its steps")
            })
            .collect();
        let batch = RankBatch::new(&examples);
        tokens += batch.real_tokens();
        lines.extend(examples.iter().map(|e| e.line));
        let forward = loss_forward(
            model,
            &batch.sequences,
            config.train.gradient_checkpointing,
            |hidden| batch_loss_of(model, &batch, config, hidden),
        );
        let loss = &forward.loss;
        let objective =
            loss.total.clone().sum() * (loss_scale / config.train.queries_per_step as f32);
        let parts = Tensor::cat(
            [&loss.total, &loss.rank, &loss.ft]
                .iter()
                .map(|t| (*t).clone().sum().detach())
                .collect(),
            0,
        );
        sums = Some(sums.map_or(parts.clone(), |s| s + parts));
        forward.backward(model, objective, &mut grads);
    }
    Ok(Share {
        sums,
        tokens,
        grads,
        lines,
    })
}

/// AdamW's step at `lr` on the gradients clipped to `train.max_grad_norm` (they carry the loss
/// scale, undone here), unless f16 loss scaling overflowed (`grad_norm` not finite): then the
/// step makes no update and the scale comes down.
#[allow(clippy::too_many_arguments)]
fn update(
    model: Llama,
    optimizer: &mut AdamW,
    grads: &GradientBuffer,
    lr: f64,
    grad_norm: f32,
    scale: f32,
    state: &mut TrainerState,
    t: &config::TrainSection,
) -> Llama {
    let skipped = !grad_norm.is_finite();
    if let Some(loss_scale) = state.loss_scale.as_mut() {
        loss_scale.record(!skipped);
    }
    if skipped {
        return model;
    }
    let clip = if t.max_grad_norm > 0.0 && grad_norm as f64 > t.max_grad_norm {
        (t.max_grad_norm / (grad_norm as f64 + 1e-6)) as f32
    } else {
        1.0
    };
    optimizer.step(model, grads, lr, clip / scale)
}

/// The metrics.jsonl line of the step that made `done` steps in all.
fn step_line(
    done: usize,
    figures: &StepFigures,
    lr: f64,
    seconds: f64,
    config: &TrainConfig,
    train_queries: usize,
) -> serde_json::Value {
    let n = config.train.queries_per_step as f32;
    json!({
        "step": done,
        "epoch": ((done - 1) * config.train.queries_per_step) as f64 / train_queries as f64,
        "loss": figures.sums[0] / n,
        "rank_loss": figures.sums[1] / n,
        "ft_loss": figures.sums[2] / n,
        "lr": lr,
        "grad_norm": figures.grad_norm,
        "tokens": figures.tokens,
        "tokens_per_sec": figures.tokens as f64 / seconds,
        "step_seconds": seconds,
    })
}

fn eval_line(step: usize, result: EvalResult) -> serde_json::Value {
    json!({"step": step, "eval_loss": result.loss, "eval_rank_accuracy": result.rank_accuracy})
}

/// A ranked file as tokens; the training set must rank something (`check_rankable`).
fn load_tokenized(
    path: &Path,
    tokenizer: &Tokenizer,
    opts: TokenizeOptions,
    config: &TrainConfig,
    trains: bool,
) -> Result<Vec<TokenizedExample>> {
    let examples = read_ranked_jsonl(path, config.data.max_line_bytes)?;
    if trains {
        check_rankable(&examples, path)?;
    }
    tokenize_examples(&examples, tokenizer, opts, path)
}

/// The loss the config trains: RRHF's on the policy, or the reward model's pair loss.
fn batch_loss(model: &Llama, batch: &RankBatch, config: &TrainConfig) -> RrhfLoss {
    batch_loss_of(model, batch, config, final_hidden(model, &batch.sequences))
}

/// [`batch_loss`] from the batch's final hidden states.
fn batch_loss_of(
    model: &Llama,
    batch: &RankBatch,
    config: &TrainConfig,
    hidden: Tensor<3>,
) -> RrhfLoss {
    match &config.reward_model {
        None => rrhf_loss_of(model, batch, &config.loss, hidden),
        Some(rm) => reward_model_loss_of(model, batch, rm.pair_loss, hidden),
    }
}

/// Eval loss (mean over queries) and ranking accuracy (over all strictly ordered pairs): for a
/// reward model, its pairwise accuracy.
pub fn evaluate(
    model: &Llama,
    set: &[TokenizedExample],
    batch_queries: usize,
    config: &TrainConfig,
) -> Result<EvalResult> {
    let (mut total, mut matched, mut pairs) = (0.0f32, 0, 0);
    for chunk in set.chunks(batch_queries.max(1)) {
        let examples: Vec<&TokenizedExample> = chunk.iter().collect();
        let batch = RankBatch::new(&examples);
        let out = batch_loss(model, &batch, config);
        total += read_sums([&out.total])?[0];
        let scores = crate::device::to_host(out.scores)?;
        let (m, p) = ranked_pairs(&scores, &batch);
        matched += m;
        pairs += p;
    }
    Ok(EvalResult {
        loss: total / set.len() as f32,
        rank_accuracy: if pairs == 0 {
            f32::NAN
        } else {
            matched as f32 / pairs as f32
        },
    })
}

/// The sums of several `[Q]` tensors, read back from the device together.
fn read_sums<const N: usize>(parts: [&Tensor<1>; N]) -> Result<[f32; N]> {
    let sums: Vec<Tensor<1>> = parts.iter().map(|t| (*t).clone().sum()).collect();
    let host = crate::device::to_host(Tensor::cat(sums, 0).detach())?;
    Ok(host.try_into().expect("one sum per part"))
}

fn last_good(out: &Path, step: usize) -> String {
    let previous = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse::<usize>()
                .ok()
        })
        .filter(|&s| s <= step)
        .max();
    match previous {
        Some(s) => format!(
            "The last good checkpoint is {}",
            checkpoint_dir(out, s).display()
        ),
        None => "No checkpoint was written before it.".into(),
    }
}

/// The order queries are visited in: a fresh seeded shuffle per epoch. Step `s` takes the
/// queries at positions `s * per_step ..` of the endless sequence of epochs, so the data position
/// of a resumed run follows from its step alone.
struct QueryOrder {
    len: usize,
    seed: u64,
    epoch: Option<(usize, Vec<usize>)>,
}

impl QueryOrder {
    fn new(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed,
            epoch: None,
        }
    }

    fn for_step(&mut self, step: usize, per_step: usize) -> Vec<usize> {
        (step * per_step..(step + 1) * per_step)
            .map(|g| self.at(g))
            .collect()
    }

    fn at(&mut self, global: usize) -> usize {
        let (epoch, pos) = (global / self.len, global % self.len);
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<usize> = (0..self.len).collect();
            let mut rng = StdRng::seed_from_u64(
                self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            order.shuffle(&mut rng);
            self.epoch = Some((epoch, order));
        }
        self.epoch.as_ref().unwrap().1[pos]
    }
}

/// `metrics.jsonl`, appended to. On resume, lines past the resumed step (from a run that went
/// on after its last checkpoint) are dropped first.
struct MetricsLog {
    file: File,
    echo: bool,
}

impl MetricsLog {
    fn open(path: &Path, keep_through_step: usize) -> Result<Self> {
        let kept: Vec<String> = if keep_through_step > 0 && path.exists() {
            BufReader::new(File::open(path)?)
                .lines()
                .map_while(Result::ok)
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= keep_through_step)
                })
                .collect()
        } else {
            vec![]
        };
        let mut file =
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        for line in kept {
            writeln!(file, "{line}")?;
        }
        Ok(Self {
            file,
            echo: !std::io::stderr().is_terminal(),
        })
    }

    fn write(&mut self, value: serde_json::Value, progress: &ProgressBar) -> Result<()> {
        let line = value.to_string();
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        if self.echo {
            eprintln!("{line}");
        } else if value.get("eval_loss").is_some() {
            progress.println(line);
        }
        Ok(())
    }
}

fn progress_bar(total: usize, done: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("step {pos}/{len} [{bar:30}] {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(done as u64);
    bar
}
