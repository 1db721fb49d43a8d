//! The RRHF trainer, in the order it runs: load the model and the ranked data, then for each
//! optimizer step take the next queries, split them into micro-batches, accumulate the
//! gradients of the RRHF loss, clip them by their global norm, apply AdamW at the scheduled
//! learning rate, and log, evaluate and checkpoint on their schedules.

pub mod checkpointing;
pub mod config;
pub mod loss_scale;
pub mod manifest;
pub mod online;
pub mod optimizer;
pub mod reward_eval;
pub mod run_dir;
pub mod schedule;
pub mod state;
pub mod step;
pub mod tensorboard;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use burn::module::Module;
use burn::tensor::{FloatDType, Tensor};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::checkpoint::{JsonlWriter, SaveDtype, load_checkpoint, load_model_storing, save_model};
use crate::data::{
    RankBatch, TokenizeOptions, TokenizedExample, check_rankable, read_query_lines, read_ranked,
    tokenize_examples,
};
use crate::device::{SelectedDevice, select_announced};
use crate::model::{Llama, Precision};
use crate::scoring::final_hidden;
use crate::tokenizer::Tokenizer;
use config::KeepBest;
pub use config::TrainConfig;
use loss_scale::LossScale;
use online::OnlineSampler;
use optimizer::AdamW;
use reward_eval::RewardEval;
use run_dir::{BEST_DIR, RunDir, RunStart, TENSORBOARD_DIR};
pub use run_dir::{FINAL_DIR, METRICS_FILE, PLOT_FILE};
use schedule::LrSchedule;
use state::{
    BestSoFar, TrainerState, checkpoint_dir, checkpoint_steps, load_checkpoint_state,
    prune_checkpoints, save_checkpoint,
};
use step::{Objective, OptimizerStep, StepFigures};

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
    let (mut run, mut model) = Run::start(config, options)?;
    while run.state.step < run.end {
        let step;
        (model, step) = run.step(model)?;
        run.after_step(&model, &step)?;
    }
    run.finish(&model)
}

/// A training run between its setup and its end: what the loop carries from step to step
/// besides the model.
struct Run<'a> {
    config: &'a TrainConfig,
    options: &'a RunOptions,
    /// The output directory's lock: rank 0's (the one that writes there).
    _run_dir: Option<RunDir>,
    /// Where the run's model (and tokenizer) came from: the base model, or the resumed checkpoint.
    model_dir: &'a Path,
    tokenizer: Tokenizer,
    /// Offline, every query's responses; online, the slots the current round has filled.
    train_set: Vec<Option<TokenizedExample>>,
    online: Option<OnlineSampler>,
    eval_set: Option<Vec<TokenizedExample>>,
    /// `[eval]`: greedy answers to held-out queries, scored by a reward.
    reward_eval: Option<RewardEval>,
    schedule: LrSchedule,
    stepper: OptimizerStep,
    optimizer: AdamW,
    state: TrainerState,
    /// metrics.jsonl (and TensorBoard's events): rank 0's.
    metrics: Option<MetricsLog>,
    progress: ProgressBar,
    order: QueryOrder,
    /// Queries per micro-batch.
    micro: usize,
    /// The step the run stops after (`stop_after`, or the end of the schedule).
    end: usize,
    last_loss: f32,
    last_eval: Option<EvalResult>,
    /// Online: the mean score of each query's responses in the current round.
    round_scores: HashMap<usize, f64>,
    first_round: bool,
}

/// One step taken: what `after_step` logs.
struct StepDone {
    figures: StepFigures,
    queries: Vec<usize>,
    lr: f64,
    /// The loss scale the step ran with.
    scale: f32,
    seconds: f64,
}

impl<'a> Run<'a> {
    /// Setup: the output directory, devices, model, tokenizer, data, schedule and optimizer;
    /// the state of the checkpoint resumed from, if any; and an eval before the first update.
    fn start(config: &'a TrainConfig, options: &'a RunOptions) -> Result<(Self, Llama)> {
        let out = &config.output.dir;
        // Under MPI, rank 0 alone writes (the output directory, metrics, checkpoints, samples);
        // the others only compute.
        let root = crate::parallel::world().is_root();
        let run_dir = match root {
            true => Some(RunDir::open(&RunStart {
                dir: out,
                resume: options.resume.as_deref(),
                force: options.force,
                inputs: config.inputs(),
            })?),
            false => None,
        };
        let (selected, device) = select_devices(config)?;
        let model_dir = options.resume.as_deref().unwrap_or(&config.model.path);
        let model = load_trained_model(config, model_dir, &device)?;
        let tokenizer = Tokenizer::load(model_dir, &model.config)?;
        // Offline, every query's responses are known now; online, they are sampled round by round.
        let (train_set, online, eval_set) = load_data(config, &tokenizer, &selected.device)?;
        check_batches_fit(
            config,
            &train_set,
            eval_set.as_deref(),
            online.as_ref(),
            &model,
        )?;

        let t = &config.train;
        let schedule = schedule_of(t, train_set.len());
        let mut optimizer = AdamW::new(t.adamw());
        let mut state = TrainerState {
            step: 0,
            total_steps: schedule.total,
            seed: t.seed,
            queries_per_step: t.queries_per_step,
            train_queries: train_set.len(),
            loss_scale: (t.precision == Precision::F16).then(|| LossScale::new(t.loss_scale)),
            best: None,
        };
        if let Some(dir) = &options.resume {
            resume_state(dir, &mut state, &mut optimizer, &selected.device)?;
            if root {
                keep_best_of_this_run(config, &mut state)?;
            }
        }
        let micro = t.queries_per_step.div_ceil(t.grad_accum);
        let mut reward_eval = match config.eval.as_ref().filter(|_| root) {
            Some(section) => Some(RewardEval::new(
                section,
                config.data.template,
                micro,
                &config.data.read_options(),
                &selected.device,
                out,
            )?),
            None => None,
        };
        if let Some(eval) = reward_eval.as_mut().filter(|_| state.step > 0) {
            eval.resume(&config.model.path, &selected.device, &tokenizer)?;
        }
        let metrics = match root {
            true => {
                manifest::record_start(out, config, &selected, state.step)?;
                let tensorboard = config.output.tensorboard.then(|| out.join(TENSORBOARD_DIR));
                Some(MetricsLog::open(
                    &out.join(METRICS_FILE),
                    tensorboard.as_deref(),
                    state.step,
                )?)
            }
            false => None,
        };
        let end = options
            .stop_after
            .map_or(schedule.total, |s| s.min(schedule.total));
        let mut run = Run {
            config,
            options,
            _run_dir: run_dir,
            model_dir,
            tokenizer,
            order: QueryOrder::new(train_set.len(), t.seed),
            train_set,
            online,
            eval_set,
            reward_eval,
            progress: match root {
                true => crate::progress::bar("step", "", schedule.total, state.step),
                false => ProgressBar::hidden(),
            },
            schedule,
            stepper: OptimizerStep {
                objective: Objective::of(config),
                checkpointing: t.gradient_checkpointing,
                queries_per_step: t.queries_per_step,
                max_grad_norm: t.max_grad_norm,
                data: config.data.train.clone(),
            },
            optimizer,
            state,
            metrics,
            micro,
            end,
            last_loss: f32::NAN,
            last_eval: None,
            round_scores: HashMap::new(),
            first_round: true,
        };
        // A baseline before the first update, so every run shows where it started.
        if run.state.step == 0 && config.output.eval_every > 0 && root {
            run.evaluate(&model)?;
        }
        if run.state.step == 0 {
            run.evaluate_answers(&model)?;
        }
        Ok((run, model))
    }

    /// One optimizer step (online: after sampling the round it begins, if it begins one).
    fn step(&mut self, model: Llama) -> Result<(Llama, StepDone)> {
        let (t, step) = (&self.config.train, self.state.step);
        let started = Instant::now();
        self.sample_round_if_due(&model)?;
        let queries = self.order.for_step(step, t.queries_per_step);
        let micro_batches: Vec<Vec<&TokenizedExample>> = queries
            .chunks(self.micro)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|&i| {
                        self.train_set[i]
                            .as_ref()
                            .expect("the round sampled every query of its steps")
                    })
                    .collect()
            })
            .collect();
        // Dropout masks drawn from (seed, step, micro-batch) alone: the same in a rerun, after a
        // resume (where the backend's generator would otherwise start from OS entropy), and
        // whichever MPI rank a micro-batch is dealt to.
        let dropout_seed = self
            .config
            .lora
            .as_ref()
            .is_some_and(|l| l.dropout > 0.0)
            .then(|| crate::sampling::derived_seed(t.seed, &[step as u64]));
        let scale = self.state.loss_scale.map_or(1.0, |s| s.scale);
        let lr = self.schedule.at(step);
        let (model, figures) = self
            .stepper
            .run(
                model,
                &mut self.optimizer,
                &mut self.state.loss_scale,
                &micro_batches,
                lr,
                dropout_seed,
                None,
            )
            .map_err(|e| {
                let out = &self.config.output.dir;
                anyhow!(
                    "step {}: {e:#}; stopping. {}",
                    step + 1,
                    last_good(out, step)
                )
            })?;
        self.state.step += 1;
        let seconds = started.elapsed().as_secs_f64();
        let done = StepDone {
            figures,
            queries,
            lr,
            scale,
            seconds,
        };
        Ok((model, done))
    }

    /// Logging, evaluation and checkpoints, each on its schedule, after a step.
    fn after_step(&mut self, model: &Llama, done: &StepDone) -> Result<()> {
        let (config, step) = (self.config, self.state.step);
        let mean = done.figures.sums.mean(config.train.queries_per_step);
        self.last_loss = mean.total;
        self.progress.set_position(step as u64);
        self.progress.set_message(format!(
            "loss {:.4} (rank {:.4}, ft {:.4}) lr {:.2e} {:.0} tok/s",
            mean.total,
            mean.rank,
            mean.ft,
            done.lr,
            done.figures.tokens as f64 / done.seconds
        ));
        let is_last = step == self.end;
        if step % config.output.log_every == 0 || is_last {
            let line = self.step_line(done);
            self.log(line)?;
        }
        if !crate::parallel::world().is_root() {
            // Evaluations and checkpoints are rank 0's: the others go on to the next step.
            return Ok(());
        }
        let eval_due = config.output.eval_every > 0 && step % config.output.eval_every == 0;
        if eval_due || step == self.state.total_steps {
            self.last_eval = self.evaluate(model)?.or(self.last_eval);
        }
        let answers_due = config
            .eval
            .as_ref()
            .is_some_and(|e| e.every > 0 && step % e.every == 0);
        if answers_due || step == self.state.total_steps {
            self.evaluate_answers(model)?;
        }
        let save_due = config.output.save_every > 0 && step % config.output.save_every == 0;
        if save_due || (is_last && step < self.state.total_steps) {
            let out = &config.output.dir;
            save_checkpoint(
                &checkpoint_dir(out, step),
                model,
                &self.optimizer,
                &self.state,
                self.model_dir,
            )?;
            // Only once the new checkpoint is complete, and never the one the run reads from.
            if let Some(keep) = config.output.save_total_limit {
                prune_checkpoints(out, keep, step, self.model_dir)?;
            }
        }
        Ok(())
    }

    /// `[eval]`, if configured: the policy's answers scored and logged.
    fn evaluate_answers(&mut self, model: &Llama) -> Result<()> {
        let Some(eval) = self.reward_eval.as_mut() else {
            return Ok(());
        };
        let line = eval.run(&model.valid(), &self.tokenizer, self.state.step)?;
        let reward = line["eval_reward"].as_f64().unwrap_or(f64::NAN);
        self.log(line)?;
        self.keep_if_best(model, KeepBest::EvalReward, reward)
    }

    /// `output.keep_best`: saves `model` as `best/` when `metric` is the one kept and `value`
    /// beats every earlier evaluation of it.
    fn keep_if_best(&mut self, model: &Llama, metric: KeepBest, value: f64) -> Result<()> {
        if self.config.output.keep_best != Some(metric) || !value.is_finite() {
            return Ok(());
        }
        if let Some(best) = &self.state.best
            && !metric.improves(value, best.value)
        {
            return Ok(());
        }
        self.state.best = Some(BestSoFar {
            metric: metric.key().to_string(),
            step: self.state.step,
            value,
        });
        save_checkpoint(
            &self.config.output.dir.join(BEST_DIR),
            model,
            &self.optimizer,
            &self.state,
            self.model_dir,
        )
    }

    /// The end: the plot, the final model if the schedule is done, and the summary.
    fn finish(self, model: &Llama) -> Result<TrainSummary> {
        self.progress.finish();
        let step = self.state.step;
        let out = &self.config.output.dir;
        let complete = step == self.state.total_steps;
        let saved = match crate::parallel::world().is_root() {
            true => finish_run(out, model, self.model_dir, complete, step)?,
            false => out.join(FINAL_DIR),
        };
        Ok(TrainSummary {
            steps: step,
            last_loss: self.last_loss,
            eval: self.last_eval,
            saved,
        })
    }

    /// Online: the responses of the round that the current step begins (or, first in a resumed
    /// run, the round it is in), sampled from `model` into the training set's slots.
    fn sample_round_if_due(&mut self, model: &Llama) -> Result<()> {
        let step = self.state.step;
        let first_round = std::mem::replace(&mut self.first_round, false);
        let Some(sampler) = self.online.as_mut() else {
            return Ok(());
        };
        if step % sampler.resample_every() != 0 && !first_round {
            return Ok(());
        }
        let reuse = first_round && self.options.resume.is_some();
        let round = next_round(
            sampler,
            model,
            &self.tokenizer,
            &mut self.order,
            step,
            self.state.total_steps,
            &self.config.train,
            reuse,
        )?;
        for (i, example) in round.examples {
            self.train_set[i] = Some(example);
        }
        self.round_scores = round.mean_score;
        if let Some(line) = round.log {
            self.log(line)?;
        }
        Ok(())
    }

    /// Writes `line` to metrics.jsonl (rank 0; the others log nothing).
    fn log(&mut self, line: serde_json::Value) -> Result<()> {
        match self.metrics.as_mut() {
            Some(metrics) => metrics.write(line, &self.progress),
            None => Ok(()),
        }
    }

    /// Evaluates `model` on the eval set, if there is one, and logs the result.
    fn evaluate(&mut self, model: &Llama) -> Result<Option<EvalResult>> {
        let Some(set) = &self.eval_set else {
            return Ok(None);
        };
        let result = evaluate(&model.valid(), set, self.micro, &self.stepper.objective)?;
        let line = json!({
            "step": self.state.step,
            "eval_loss": result.loss,
            "eval_rank_accuracy": result.rank_accuracy,
        });
        self.log(line)?;
        self.keep_if_best(model, KeepBest::EvalLoss, result.loss as f64)?;
        Ok(Some(result))
    }

    /// The metrics.jsonl line of the step just taken.
    fn step_line(&self, done: &StepDone) -> serde_json::Value {
        let t = &self.config.train;
        let step = self.state.step;
        let mean = done.figures.sums.mean(t.queries_per_step);
        let tokens = done.figures.tokens;
        let mut line = json!({
            "step": step,
            "epoch": ((step - 1) * t.queries_per_step) as f64 / self.train_set.len() as f64,
            "loss": mean.total,
            "rank_loss": mean.rank,
            "ft_loss": mean.ft,
            "lr": done.lr,
            "grad_norm": done.figures.grad_norm,
            "tokens": tokens,
            "tokens_per_sec": tokens as f64 / done.seconds,
            "step_seconds": done.seconds,
        });
        if self.state.loss_scale.is_some() {
            line["loss_scale"] = done.scale.into();
            line["skipped"] = done.figures.skipped.into();
        }
        if self.online.is_some() {
            // The mean score (reward, less the KL term if any) of the step's responses.
            let scores: Vec<f64> = done
                .queries
                .iter()
                .filter_map(|i| self.round_scores.get(i).copied())
                .collect();
            line["reward"] = crate::rewards::mean_std(&scores).0.into();
        }
        line
    }
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
            let queries = read_query_lines(&config.data.train, &config.data.read_options())?;
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

/// The training device (with the checkpointing strategy the config asks for; under MPI, this
/// rank's, `device::for_rank`), able to compute in `train.precision`: checked before anything is
/// loaded, since a device asked for a dtype it cannot compute in can fail in ways that poison it
/// (lavapipe, casting weights to bf16 under SPIR-V).
fn select_devices(config: &TrainConfig) -> Result<(SelectedDevice, burn::tensor::Device)> {
    let choice = crate::device::for_rank(&config.train.device, crate::parallel::world());
    let selected = select_announced(&choice, "field `train.device`")?;
    let device = config
        .train
        .gradient_checkpointing
        .training_device(&selected.device);
    if !config.train.precision.runs_on(&device) {
        bail!(
            "train.precision = \"{}\": device `{choice}` has no arithmetic in it (f32 runs \
             everywhere; f16 needs shader-f16 on a GPU; bf16 runs on the CPU backend only)",
            config.train.precision.name()
        );
    }
    Ok((selected, device))
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
    let (was, is) = (saved.identity(), state.identity());
    if was != is {
        bail!(
            "--resume {}: the checkpoint was made with seed {}, {} queries per step, {} training \
             queries and {} steps; this config gives {}, {}, {} and {}: the data order and \
             schedule would not continue",
            dir.display(),
            was.seed,
            was.queries_per_step,
            was.train_queries,
            was.total_steps,
            is.seed,
            is.queries_per_step,
            is.train_queries,
            is.total_steps
        );
    }
    state.step = saved.step;
    if state.loss_scale.is_some() && saved.loss_scale.is_some() {
        state.loss_scale = saved.loss_scale;
    }
    state.best = saved.best;
    eprintln!("resuming from {} at step {}", dir.display(), state.step);
    Ok(())
}

/// On resume, the best evaluation so far is the resumed checkpoint's record of it (`state.best`),
/// kept only if it is of the metric `output.keep_best` names now. A `best/` from past the resumed
/// step belongs to a run that went on after that checkpoint, whose steps this run takes again:
/// it is removed, so that `best/` holds only this run's evaluations.
fn keep_best_of_this_run(config: &TrainConfig, state: &mut TrainerState) -> Result<()> {
    let metric = config.output.keep_best.map(KeepBest::key);
    if state.best.as_ref().map(|b| b.metric.as_str()) != metric {
        state.best = None;
    }
    let dir = config.output.dir.join(BEST_DIR);
    if !dir.join(state::STATE_FILE).exists() {
        return Ok(());
    }
    let saved = state::read_trainer_state(&dir)?;
    if saved.step > state.step {
        eprintln!(
            "removing {} (from step {}, past the resumed step {}): this run takes those steps again",
            dir.display(),
            saved.step,
            state.step
        );
        crate::checkpoint::outputs::remove_dir_atomically(&dir)?;
    }
    Ok(())
}

/// A ranked file as tokens; the training set must rank something (`check_rankable`).
fn load_tokenized(
    path: &Path,
    tokenizer: &Tokenizer,
    opts: TokenizeOptions,
    config: &TrainConfig,
    trains: bool,
) -> Result<Vec<TokenizedExample>> {
    let examples = read_ranked(path, &config.data.read_options())?;
    if trains {
        check_rankable(&examples, path)?;
    }
    tokenize_examples(&examples, tokenizer, opts, path)
}

/// Eval loss (mean over queries) and ranking accuracy (over all strictly ordered pairs): for a
/// reward model, its pairwise accuracy.
pub fn evaluate(
    model: &Llama,
    set: &[TokenizedExample],
    batch_queries: usize,
    objective: &Objective,
) -> Result<EvalResult> {
    let (mut total, mut matched, mut pairs) = (0.0f32, 0, 0);
    for chunk in set.chunks(batch_queries.max(1)) {
        let examples: Vec<&TokenizedExample> = chunk.iter().collect();
        let batch = RankBatch::new(&examples);
        let out = objective.loss(model, &batch, final_hidden(model, &batch.sequences));
        total += read_sums([&out.total])?[0];
        let scores = crate::device::to_host(out.scores)?;
        let (m, p) = batch.ordered_pairs(&scores);
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
    let previous = checkpoint_steps(out)
        .into_iter()
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

/// `metrics.jsonl`, appended to, and with `output.tensorboard` the same numbers as TensorBoard
/// scalars. On resume, lines past the resumed step (from a run that went on after its last
/// checkpoint) are dropped first, from both.
struct MetricsLog {
    file: JsonlWriter<File>,
    tensorboard: Option<tensorboard::EventWriter>,
    echo: bool,
}

impl MetricsLog {
    fn open(path: &Path, events_dir: Option<&Path>, keep_through_step: usize) -> Result<Self> {
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
        let mut file = JsonlWriter::new(
            File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        );
        for line in &kept {
            file.write_line(line)?;
        }
        // The event files are started over from the kept lines, so they hold what metrics.jsonl
        // holds, once each.
        let tensorboard = match events_dir {
            Some(dir) => {
                let values: Vec<serde_json::Value> = kept
                    .iter()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect();
                Some(tensorboard::EventWriter::rewrite(dir, &values)?)
            }
            None => None,
        };
        Ok(Self {
            file,
            tensorboard,
            echo: !std::io::stderr().is_terminal(),
        })
    }

    fn write(&mut self, value: serde_json::Value, progress: &ProgressBar) -> Result<()> {
        let line = self.file.write(&value)?;
        self.file.flush()?;
        if let Some(events) = &mut self.tensorboard {
            events.write(&value)?;
        }
        if self.echo {
            eprintln!("{line}");
        } else if value.get("eval_loss").is_some() || value.get("eval_reward").is_some() {
            progress.println(line);
        }
        Ok(())
    }
}
