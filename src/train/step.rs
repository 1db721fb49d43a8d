//! One optimizer step, as `rrhf train` and `rrhf bench step` both run it: the step's queries in
//! micro-batches (dealt to the ranks under MPI, `parallel.rs`), each micro-batch's share of the
//! step's mean loss differentiated (times the f16 loss scale) and the gradients summed, the
//! losses and the gradients' global norm read back in the step's one host synchronisation, the
//! gradients clipped to `max_grad_norm`, and AdamW at the step's learning rate.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Tensor;

use super::checkpointing::{Checkpointing, loss_forward};
use super::config::TrainConfig;
use super::loss_scale::LossScale;
use super::optimizer::{AdamW, GradientBuffer};
use crate::data::{RankBatch, TokenizedExample};
use crate::kernels::PairLoss;
use crate::loss::{LossConfig, RrhfLoss, reward_model_loss, rrhf_loss};
use crate::model::Llama;
use crate::scoring::{sequence_logprobs, sequence_rewards};

/// The loss a run trains: RRHF's on a policy, or a reward model's pair loss on its scores.
#[derive(Debug, Clone, PartialEq)]
pub enum Objective {
    Rrhf(LossConfig),
    RewardModel(PairLoss),
}

impl Objective {
    /// The objective `config` trains.
    pub fn of(config: &TrainConfig) -> Self {
        match &config.reward_model {
            None => Self::Rrhf(config.loss.clone()),
            Some(rm) => Self::RewardModel(rm.pair_loss),
        }
    }

    /// The loss of `batch` from its final hidden states `[S, T, d]`.
    pub fn loss(&self, model: &Llama, batch: &RankBatch, hidden: Tensor<3>) -> RrhfLoss {
        match self {
            Self::Rrhf(config) => {
                let head = config.head_path();
                let sums = sequence_logprobs(model, &batch.sequences, head, hidden).0;
                rrhf_loss(sums, batch, config, &model.device())
            }
            Self::RewardModel(kind) => {
                let rewards = sequence_rewards(model, &batch.sequences, hidden);
                reward_model_loss(rewards, batch, *kind, &model.device())
            }
        }
    }
}

/// The summed total, rank and fine-tune losses of some queries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSums {
    pub total: f32,
    pub rank: f32,
    pub ft: f32,
}

impl LossSums {
    /// The means over `queries`.
    pub fn mean(self, queries: usize) -> LossSums {
        let n = queries as f32;
        LossSums {
            total: self.total / n,
            rank: self.rank / n,
            ft: self.ft / n,
        }
    }
}

/// What a step's micro-batches added up to, read from the device once.
#[derive(Debug, Clone, Copy)]
pub struct StepFigures {
    pub sums: LossSums,
    /// The global norm of the gradients, unscaled, before clipping.
    pub grad_norm: f32,
    /// Tokens the model read (without padding).
    pub tokens: usize,
    /// f16 loss scaling overflowed: the step made no update.
    pub skipped: bool,
    /// Trainable parameters (elements).
    pub trainable: usize,
}

/// Wall-clock seconds of a step's phases, for `bench step`. A timed step waits for the device
/// at the end of each phase (a read or a sync), so that on a queued device (wgpu) each phase's
/// time is its own; an untimed step (`None`) does not.
#[derive(Debug, Clone, Copy)]
pub struct PhaseTimes {
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
    lap_start: Instant,
}

impl PhaseTimes {
    pub fn start() -> Self {
        Self {
            forward: 0.0,
            backward: 0.0,
            optimizer: 0.0,
            lap_start: Instant::now(),
        }
    }

    /// Seconds since the last lap (or the start).
    fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let seconds = (now - self.lap_start).as_secs_f64();
        self.lap_start = now;
        seconds
    }
}

/// How a run takes its optimizer steps.
#[derive(Debug, Clone)]
pub struct OptimizerStep {
    pub objective: Objective,
    pub checkpointing: Checkpointing,
    /// The loss of a step is the mean over this many queries.
    pub queries_per_step: usize,
    /// Clip the gradients' global norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// The training data, named in messages.
    pub data: PathBuf,
}

impl OptimizerStep {
    /// One step over `micro_batches` at learning rate `lr`: the updated model and the step's
    /// figures. With `dropout_seed`, each micro-batch's dropout masks are drawn from it and the
    /// micro-batch's index. A non-finite loss is an error naming the step's data lines; so is a non-finite
    /// gradient norm without loss scaling. With loss scaling, an overflow skips the update and
    /// lowers the scale.
    pub fn run(
        &self,
        model: Llama,
        optimizer: &mut AdamW,
        loss_scale: &mut Option<LossScale>,
        micro_batches: &[Vec<&TokenizedExample>],
        lr: f64,
        dropout_seed: Option<u64>,
        mut phases: Option<&mut PhaseTimes>,
    ) -> Result<(Llama, StepFigures)> {
        let scale = loss_scale.map_or(1.0, |s| s.scale);
        // Under MPI, this rank's micro-batches: every n-th, from its rank on.
        let world = crate::parallel::world();
        let mine: Vec<(usize, &[&TokenizedExample])> = world
            .share(micro_batches)
            .into_iter()
            .map(|i| (i, micro_batches[i].as_slice()))
            .collect();
        let share = self.accumulate(&model, &mine, scale, dropout_seed, phases.as_deref_mut())?;
        let mut grads = GradientBuffer::default();
        let (sums, grad_norm, tokens) = self.gather(share, &model, &mut grads, scale)?;
        if let Some(p) = phases.as_deref_mut() {
            p.backward += p.lap();
        }
        let skipped = !grad_norm.is_finite();
        if skipped && loss_scale.is_none() {
            bail!("the gradient norm is {grad_norm}");
        }
        if let Some(loss_scale) = loss_scale.as_mut() {
            loss_scale.record(!skipped);
        }
        let trainable = grads.tensors().iter().map(|g| g.dims()[0]).sum();
        let model = if skipped {
            model
        } else {
            let clip = if self.max_grad_norm > 0.0 && grad_norm as f64 > self.max_grad_norm {
                (self.max_grad_norm / (grad_norm as f64 + 1e-6)) as f32
            } else {
                1.0
            };
            optimizer.step(model, &grads, lr, clip / scale)
        };
        if let Some(p) = phases {
            if let Some(moment) = optimizer.second.last() {
                crate::device::to_host(moment.clone().sum())?;
            }
            p.optimizer += p.lap();
        }
        let figures = StepFigures {
            sums,
            grad_norm,
            tokens,
            skipped,
            trainable,
        };
        Ok((model, figures))
    }

    /// This rank's share summed with the other ranks' (into `grads`, on `device`), and the
    /// step's summed losses and gradient norm (unscaled), read back together.
    fn gather(
        &self,
        share: WorkerGradients,
        model: &Llama,
        grads: &mut GradientBuffer,
        loss_scale: f32,
    ) -> Result<(LossSums, f32, usize)> {
        let world = crate::parallel::world();
        let device = model.device();
        let sums = share.sums.unwrap_or_else(|| Tensor::zeros([3], &device));
        *grads = share.grads;
        if grads.is_empty() {
            // A rank dealt no micro-batch still adds its (zero) part to every sum.
            *grads = GradientBuffer::zeros(model);
        }
        grads.sum_across_ranks(world)?;
        // The norm of the summed gradients is the step's; the losses and tokens are summed in
        // f64 (the identity in a world of one, and exact for token counts).
        let host = crate::device::to_host(Tensor::cat(vec![sums, grads.squared_norm()], 0))?;
        let squared_norm = host[3];
        let mut reduced = [
            host[0] as f64,
            host[1] as f64,
            host[2] as f64,
            share.tokens as f64,
        ];
        world.sum_f64(&mut reduced);
        let tokens = reduced[3] as usize;
        let sums = LossSums {
            total: reduced[0] as f32,
            rank: reduced[1] as f32,
            ft: reduced[2] as f32,
        };
        if [sums.total, sums.rank, sums.ft]
            .iter()
            .any(|x| !x.is_finite())
        {
            let mut lines = share.lines;
            lines.sort_unstable();
            let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
            bail!(
                "the loss is not finite (total {}, rank {}, ft {}); this rank's queries are on {} \
                 lines {}{}",
                sums.total,
                sums.rank,
                sums.ft,
                self.data.display(),
                lines.join(", "),
                world.tag()
            );
        }
        Ok((sums, squared_norm.sqrt() / loss_scale, tokens))
    }

    /// Forward and backward over `micro_batches` (each with its index in the step) on `model`'s
    /// device, accumulating the gradients of each micro-batch's share of the step's mean loss,
    /// times `loss_scale`.
    fn accumulate(
        &self,
        model: &Llama,
        micro_batches: &[(usize, &[&TokenizedExample])],
        loss_scale: f32,
        dropout_seed: Option<u64>,
        mut phases: Option<&mut PhaseTimes>,
    ) -> Result<WorkerGradients> {
        let mut sums: Option<Tensor<1>> = None;
        let (mut tokens, mut lines) = (0, Vec::new());
        let mut grads = GradientBuffer::default();
        for &(index, examples) in micro_batches {
            if let Some(seed) = dropout_seed {
                let seed = crate::sampling::derived_seed(seed, &[index as u64]);
                model.device().seed(seed);
            }
            let batch = RankBatch::new(examples);
            tokens += batch.real_tokens();
            lines.extend(examples.iter().map(|e| e.line));
            let forward = loss_forward(model, &batch.sequences, self.checkpointing, |hidden| {
                self.objective.loss(model, &batch, hidden)
            });
            let loss = &forward.loss;
            let objective = loss.total.clone().sum() * (loss_scale / self.queries_per_step as f32);
            let parts = Tensor::cat(
                [&loss.total, &loss.rank, &loss.ft]
                    .iter()
                    .map(|t| (*t).clone().sum().detach())
                    .collect(),
                0,
            );
            sums = Some(sums.map_or(parts.clone(), |s| s + parts));
            if let Some(p) = phases.as_deref_mut() {
                crate::device::to_host(objective.clone())?;
                p.forward += p.lap();
            }
            forward.backward(model, objective, &mut grads);
            if let Some(p) = phases.as_deref_mut() {
                model.device().sync().context("waiting for the device")?;
                p.backward += p.lap();
            }
        }
        Ok(WorkerGradients {
            sums,
            tokens,
            grads,
            lines,
        })
    }
}

/// What one rank's micro-batches of a step add up to.
struct WorkerGradients {
    /// `[3]` on its device: the summed total, rank and fine-tune losses of its queries, read
    /// with the step's gradient norm (none for a rank dealt no micro-batch).
    sums: Option<Tensor<1>>,
    tokens: usize,
    grads: GradientBuffer,
    /// The data lines of its queries, for messages.
    lines: Vec<usize>,
}
