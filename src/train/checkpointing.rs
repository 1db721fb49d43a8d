//! Gradient checkpointing: activations dropped in the forward pass and recomputed in the backward.
//!
//! `layer` (what transformers' `gradient_checkpointing_enable()` does): the forward pass runs
//! without autodiff and keeps only each decoder layer's input `[S, T, d]`; the backward pass walks
//! the layers from the last, recomputing one layer at a time with autodiff and pulling the
//! gradient through it. Peak memory is the stored inputs plus one layer's activations (or the
//! head's), whatever the depth; the price is a second forward pass through the layers.
//!
//! burn differentiates one recorded graph per `backward`, so the chain is cut into pieces that
//! meet at leaves: first the final norm, head and loss, built on a leaf standing for the last
//! layer's output; then each layer, on a leaf for its input, whose output gradient `g` enters as
//! the backward of `sum(y * g)` (a vector-Jacobian product); last the token embedding. Each
//! piece's parameter gradients are summed into the step's `GradientBuffer`.
//!
//! `ops`: burn's balanced checkpointing, which keeps the outputs of compute-bound ops (matmuls,
//! the kernels) and recomputes the elementwise ones around them, everywhere in the graph.

use burn::module::Module;
use burn::tensor::{Device, Gradients, Tensor};
use serde::{Deserialize, Serialize};

use super::optimizer::GradientBuffer;
use crate::data::ScoredBatch;
use crate::loss::RrhfLoss;
use crate::model::Llama;
use crate::scoring::{batch_context, final_hidden, input_tokens};

/// `train.gradient_checkpointing`: `"off"` (or `false`), `"layer"` (or `true`), `"ops"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Checkpointing {
    #[default]
    Off,
    /// Keep each decoder layer's input, recompute the layer in the backward pass.
    Layer,
    /// burn's balanced checkpointing of elementwise ops.
    Ops,
}

impl<'de> Deserialize<'de> for Checkpointing {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Switch(bool),
            Mode(String),
        }
        match Given::deserialize(deserializer)? {
            Given::Switch(false) => Ok(Self::Off),
            Given::Switch(true) => Ok(Self::Layer),
            Given::Mode(mode) => match mode.as_str() {
                "off" => Ok(Self::Off),
                "layer" => Ok(Self::Layer),
                "ops" => Ok(Self::Ops),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not one of off, layer, ops (or true = layer, false = off)"
                ))),
            },
        }
    }
}

impl Checkpointing {
    /// The autodiff device the weights live on for training: `ops` is a property of the device's
    /// tensors in burn; `layer` needs none.
    pub fn training_device(self, device: &Device) -> Device {
        match self {
            Self::Ops => device.clone().autodiff().gradient_checkpointing(),
            Self::Off | Self::Layer => device.clone().autodiff(),
        }
    }
}

/// A micro-batch's loss, with what its backward pass needs.
pub struct LossForward<'a> {
    pub loss: RrhfLoss,
    layers: Option<LayerInputs<'a>>,
}

/// The forward pass of `batch` up to its loss, `loss_of` taking the final hidden states.
pub fn loss_forward<'a>(
    model: &Llama,
    batch: &'a ScoredBatch,
    checkpointing: Checkpointing,
    loss_of: impl FnOnce(Tensor<3>) -> RrhfLoss,
) -> LossForward<'a> {
    match checkpointing {
        Checkpointing::Layer => {
            let layers = LayerInputs::forward(model, batch);
            let loss = loss_of(model.norm.forward(layers.output.clone()));
            LossForward {
                loss,
                layers: Some(layers),
            }
        }
        Checkpointing::Off | Checkpointing::Ops => LossForward {
            loss: loss_of(final_hidden(model, batch)),
            layers: None,
        },
    }
}

impl LossForward<'_> {
    /// Differentiates `objective` (computed from `self.loss`) and adds the gradients of every
    /// trainable weight to `buffer`.
    pub fn backward(self, model: &Llama, objective: Tensor<1>, buffer: &mut GradientBuffer) {
        let grads = objective.backward();
        buffer.accumulate(model, &grads);
        if let Some(layers) = self.layers {
            layers.backward(model, &grads, buffer);
        }
    }
}

/// Each decoder layer's input, computed without autodiff, and the last layer's output as a leaf
/// of the training device's graph (what the head and loss are built on).
struct LayerInputs<'a> {
    batch: &'a ScoredBatch,
    inputs: Vec<Tensor<3>>,
    output: Tensor<3>,
}

impl<'a> LayerInputs<'a> {
    fn forward(model: &Llama, batch: &'a ScoredBatch) -> Self {
        let plain = model.valid();
        let device = model.device().inner();
        let ctx = batch_context(&plain, batch, &device);
        let mut x = plain.embed_tokens.forward(input_tokens(batch, &device));
        let mut inputs = Vec::with_capacity(plain.layers.len());
        for layer in &plain.layers {
            inputs.push(x.clone());
            x = layer.forward(x, &ctx, None);
        }
        Self {
            batch,
            inputs,
            output: x.autodiff().require_grad(),
        }
    }

    /// The pieces below the head, last layer first, given the gradients of the head's piece.
    fn backward(self, model: &Llama, head_grads: &Gradients, buffer: &mut GradientBuffer) {
        let mut grad = self
            .output
            .grad(head_grads)
            .expect("the loss depends on the last layer's output");
        let ctx = batch_context(model, self.batch, &model.device());
        for (layer, input) in model.layers.iter().zip(self.inputs).rev() {
            let input = input.autodiff().require_grad();
            let output = layer.forward(input.clone(), &ctx, None);
            let grads = (output * grad).sum().backward();
            buffer.accumulate(model, &grads);
            grad = input
                .grad(&grads)
                .expect("a layer's output depends on its input");
        }
        if model.embed_tokens.weight.val().is_require_grad() {
            let embedded = model
                .embed_tokens
                .forward(input_tokens(self.batch, &model.device()));
            buffer.accumulate(model, &(embedded * grad).sum().backward());
        }
    }
}
