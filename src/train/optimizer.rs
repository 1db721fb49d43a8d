//! Gradient accumulation, clipping by the global norm, and AdamW, over the model's parameters
//! in their fixed visiting order.
//!
//! Written here rather than taken from burn-optim for two reasons: burn clips each parameter
//! tensor by its own norm, whereas training recipes (and PyTorch's `clip_grad_norm_`) mean the
//! norm over all parameters together; and exact resume needs the moments in a file we control.
//! The update is PyTorch's `AdamW` (decoupled weight decay, bias-corrected moments).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

use crate::kernels::{AdamWStep, adamw_update};
use crate::model::Llama;

/// Summed gradients of the micro-batches of one step, one flat tensor per parameter.
#[derive(Default)]
pub struct GradientBuffer {
    grads: Vec<Tensor<1>>,
}

impl GradientBuffer {
    pub fn accumulate(&mut self, model: &Llama, grads: &Gradients) {
        let mut visitor = Accumulate {
            grads,
            buffer: &mut self.grads,
            index: 0,
        };
        model.visit(&mut visitor);
    }

    /// Zero gradients for every trainable parameter of `model`: the part of a rank that was
    /// dealt no micro-batch.
    pub fn zeros(model: &Llama) -> Self {
        struct Zeros(Vec<Tensor<1>>);
        impl ModuleVisitor for Zeros {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if trainable(param) {
                    let value = param.val();
                    let n = value.shape().num_elements();
                    self.0.push(Tensor::zeros([n], &value.inner().device()));
                }
            }
        }
        let mut zeros = Zeros(Vec::new());
        model.visit(&mut zeros);
        GradientBuffer { grads: zeros.0 }
    }

    /// Sums the gradients across the ranks (MPI_Allreduce), tensor by tensor through the host:
    /// one tensor's host copy at a time, sent in buckets. A world of one has nothing to add.
    pub fn sum_across_ranks(&mut self, world: &crate::parallel::World) -> anyhow::Result<()> {
        if world.size == 1 {
            return Ok(());
        }
        for grad in &mut self.grads {
            let device = grad.device();
            let mut host = crate::device::to_host(grad.clone())?;
            world.sum_f32(&mut host);
            *grad = Tensor::from_data(
                burn::tensor::TensorData::new(host, [grad.dims()[0]]),
                &device,
            );
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// The summed gradients, one flat tensor per trainable parameter in visiting order.
    pub fn tensors(&self) -> &[Tensor<1>] {
        &self.grads
    }

    /// The squared L2 norm over every parameter's gradient, `[1]`, left on the device (the
    /// trainer reads it together with the step's losses: one host synchronisation per step).
    pub fn squared_norm(&self) -> Tensor<1> {
        let squares: Vec<Tensor<1>> = self
            .grads
            .iter()
            .map(|g| blocked_sum(g.clone().square()))
            .collect();
        blocked_sum(Tensor::cat(squares, 0))
    }

    pub fn clear(&mut self) {
        self.grads.clear();
    }
}

struct Accumulate<'a> {
    grads: &'a Gradients,
    buffer: &'a mut Vec<Tensor<1>>,
    index: usize,
}

/// Frozen weights (the base of a LoRA model) take no gradient and have no moments; the
/// buffers and moments are indexed over the trainable parameters only.
fn trainable<const D: usize>(param: &Param<Tensor<D>>) -> bool {
    param.val().is_require_grad()
}

impl ModuleVisitor for Accumulate<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !trainable(param) {
            return;
        }
        let value = param.val();
        let n = value.shape().num_elements();
        // A weight outside this backward's graph (another piece of a layer-checkpointed one,
        // see `checkpointing.rs`) adds nothing.
        let grad = value.grad(self.grads).map(|g| g.reshape([n]));
        match (self.buffer.get_mut(self.index), grad) {
            (Some(sum), Some(grad)) => *sum = sum.clone() + grad,
            (Some(_), None) => {}
            (None, Some(grad)) => self.buffer.push(grad),
            (None, None) => self
                .buffer
                .push(Tensor::zeros([n], &value.inner().device())),
        }
        self.index += 1;
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// AdamW with its first and second moments, flat, in parameter order.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates made so far (for bias correction).
    pub steps: u64,
    pub first: Vec<Tensor<1>>,
    pub second: Vec<Tensor<1>>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            steps: 0,
            first: vec![],
            second: vec![],
        }
    }

    /// One update with learning rate `lr`; every gradient is multiplied by `grad_scale` first
    /// (the clipping factor). Each parameter is one call of the AdamW kernel (`kernels::adamw`).
    pub fn step(
        &mut self,
        model: Llama,
        grads: &GradientBuffer,
        lr: f64,
        grad_scale: f32,
    ) -> Llama {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let mut update = Update {
            step: AdamWStep {
                grad_scale,
                beta1: c.beta1 as f32,
                one_minus_beta1: (1.0 - c.beta1) as f32,
                beta2: c.beta2 as f32,
                one_minus_beta2: (1.0 - c.beta2) as f32,
                eps: c.eps as f32,
                decay: (1.0 - lr * c.weight_decay) as f32,
                step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
                sqrt_bias2: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            },
            optimizer: self,
            grads: &grads.grads,
            index: 0,
        };
        model.map(&mut update)
    }
}

struct Update<'a> {
    step: AdamWStep,
    optimizer: &'a mut AdamW,
    grads: &'a [Tensor<1>],
    index: usize,
}

impl ModuleMapper for Update<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !trainable(&param) {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        // The new weight leaves autodiff and comes back; `from_inner` would give it burn's
        // default (no checkpointing), so it is given back the strategy it had.
        let strategy = tensor.gradient_checkpointing_strategy();
        let i = self.index;
        self.index += 1;
        let dims = tensor.dims();
        let weight = tensor.inner();
        let n = weight.shape().num_elements();
        let weight = weight.reshape([n]);
        if self.optimizer.first.len() == i {
            self.optimizer
                .first
                .push(Tensor::zeros([n], &weight.device()));
            self.optimizer
                .second
                .push(Tensor::zeros([n], &weight.device()));
        }
        // The moments are moved out, not cloned, so that the CPU kernel owns their buffers
        // and updates them in place.
        let placeholder = || Tensor::<1>::empty([0], &weight.device());
        let m = std::mem::replace(&mut self.optimizer.first[i], placeholder());
        let v = std::mem::replace(&mut self.optimizer.second[i], placeholder());
        let (weight, m, v) = adamw_update(weight, self.grads[i].clone(), m, v, self.step);
        self.optimizer.first[i] = m;
        self.optimizer.second[i] = v;
        let mut out = Tensor::from_inner(weight.reshape(dims));
        if let Some(strategy) = strategy {
            out = out.with_gradient_checkpointing_strategy(strategy);
        }
        let out = out.require_grad();
        Param::from_mapped_value(id, out, mapper)
    }
}

/// Values summed per block of this many: rows short enough for every backend's reduction.
const SUM_BLOCK: usize = 1024;

/// The sum of a flat tensor, `[1]`, as a tree: rows of [`SUM_BLOCK`] values summed along their
/// dimension, then those sums, and so on. Not burn's `sum`/`sum_dim` over the whole tensor, for
/// three reasons found on real gradients (SmolLM2's embedding has 28M values):
/// - on wgpu through lavapipe, burn's reduction of one long row loses most of it (the sum of 1M
///   ones comes out as 262132; `tests/large_sums.rs`), and that made the clipped step of a
///   full fine-tune differ from the CPU path's;
/// - burn's CPU backend adds a whole tensor of 4M+ values in rayon chunks whose order depends
///   on work stealing, so two identical runs differed in the last bits;
/// - on a GPU, a whole-tensor sum autotunes into a kernel that adds with float atomics.
///
/// The blocks fix the order of the additions, so the result is the same in every run and at
/// every thread count, and each partial sum stays short, which also rounds less.
pub fn blocked_sum(t: Tensor<1>) -> Tensor<1> {
    let mut t = t;
    loop {
        let n = t.dims()[0];
        if n <= SUM_BLOCK {
            return t.reshape([1, n]).sum_dim(1).reshape([1]);
        }
        let rows = n / SUM_BLOCK;
        let full = rows * SUM_BLOCK;
        let mut sums = vec![
            t.clone()
                .slice(0..full)
                .reshape([rows, SUM_BLOCK])
                .sum_dim(1)
                .reshape([rows]),
        ];
        if full < n {
            sums.push(
                t.slice(full..n)
                    .reshape([1, n - full])
                    .sum_dim(1)
                    .reshape([1]),
            );
        }
        t = Tensor::cat(sums, 0);
    }
}
