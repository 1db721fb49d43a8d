//! A projection: a linear map with an optional LoRA adapter beside it, the leaf that the decoder
//! (`llama.rs`) is built of and that LoRA (`lora.rs`) adds adapters to; with the `[lora]`
//! settings the adapters are made from.

use std::path::PathBuf;

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::precision::Precision;

/// The projections LoRA can target, by their checkpoint names.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The largest `alpha / rank` accepted: far beyond any recipe's (1-2), short of what no
/// optimizer step survives.
const MAX_SCALE: f64 = 1000.0;

/// `[lora]` in a training config, and what `adapter_config.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// `r`: the rank of the update.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f64,
    /// Which projections get adapters (names from `LORA_TARGETS`).
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            // PEFT's default. Dropout costs a random mask per projection input: on burn's CPU
            // backend that is 40% of a LoRA step's time (SmolLM2, 1152 tokens: 6 s of 16).
            dropout: 0.0,
            target_modules: LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl LoraConfig {
    /// Why this config cannot be used, as `(field, reason)`.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        if self.rank == 0 {
            return Some(("rank", "must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Some(("alpha", "must be a positive number".into()));
        }
        if self.scale() > MAX_SCALE {
            return Some((
                "alpha",
                format!(
                    "alpha / rank = {} scales the update by more than {MAX_SCALE}, which diverges \
                     at the first step (PEFT's usual alpha is 1-2x the rank)",
                    self.scale()
                ),
            ));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Some(("dropout", "must be in [0, 1)".into()));
        }
        if self.target_modules.is_empty() {
            return Some(("target_modules", "names no projection".into()));
        }
        if let Some(bad) = self
            .target_modules
            .iter()
            .find(|t| !LORA_TARGETS.contains(&t.as_str()))
        {
            return Some((
                "target_modules",
                format!("`{bad}` is not one of {}", LORA_TARGETS.join(", ")),
            ));
        }
        None
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// What a model with adapters remembers about them: their settings, and the base model
/// directory they apply to (written to `adapter_config.json` on save).
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    pub config: LoraConfig,
    pub base: PathBuf,
}

/// A linear projection with an optional LoRA adapter beside it.
#[derive(Module, Debug)]
pub struct Projection {
    pub base: Linear,
    pub lora: Option<Lora>,
}

#[derive(Module, Debug)]
pub struct Lora {
    /// `[in, r]`
    pub a: Param<Tensor<2>>,
    /// `[r, out]`
    pub b: Param<Tensor<2>>,
    pub dropout: Dropout,
    #[module(skip)]
    pub scale: f64,
}

impl From<Linear> for Projection {
    fn from(base: Linear) -> Self {
        Self { base, lora: None }
    }
}

impl Projection {
    /// `x · W (+ bias) (+ the adapter's update)`, the matmuls in `precision`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, precision: Precision) -> Tensor<D> {
        let base = &self.base;
        let mut y = match precision {
            // burn's own, so the f32 path is exactly what it was.
            Precision::F32 => base.forward(x.clone()),
            _ => {
                let y = precision.matmul(x.clone(), base.weight.val());
                match &base.bias {
                    Some(bias) => y + bias.val().unsqueeze(),
                    None => y,
                }
            }
        };
        if let Some(lora) = &self.lora {
            y = y + lora.forward(x, precision);
        }
        y
    }

    /// `[in, out]`
    pub(super) fn shape(&self) -> [usize; 2] {
        self.base.weight.val().dims()
    }

    /// The base weight with the adapter's update added, and no adapter.
    pub(super) fn merged(self) -> Self {
        let Some(lora) = self.lora else { return self };
        let update = lora.a.val().matmul(lora.b.val()) * lora.scale;
        // A frozen base may be stored in half precision (`precision.rs`); the merge is in f32.
        let weight = self.base.weight.map(|w| w.cast(FloatDType::F32) + update);
        Self {
            base: Linear {
                weight,
                bias: self.base.bias,
            },
            lora: None,
        }
    }
}

impl Lora {
    fn forward<const D: usize>(&self, x: Tensor<D>, precision: Precision) -> Tensor<D> {
        let low = precision.matmul(self.dropout.forward(x), self.a.val());
        precision.matmul(low, self.b.val()) * self.scale
    }

    /// Adapter weights as stored (`a` `[in, r]`, `b` `[r, out]`), trainable.
    pub fn from_weights(
        a: TensorData,
        b: TensorData,
        config: &LoraConfig,
        device: &Device,
    ) -> Self {
        Self {
            a: Param::from_data(a, device),
            b: Param::from_data(b, device),
            dropout: DropoutConfig::new(config.dropout).init(),
            scale: config.scale(),
        }
    }

    /// PEFT's initialisation: `A` uniform in ±1/sqrt(in) (kaiming-uniform with a = sqrt 5), `B` zero.
    pub(super) fn fresh(
        inp: usize,
        out: usize,
        config: &LoraConfig,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Self {
        let r = config.rank;
        let bound = 1.0 / (inp as f32).sqrt();
        let a: Vec<f32> = (0..inp * r)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        Self::from_weights(
            TensorData::new(a, [inp, r]),
            TensorData::new(vec![0.0f32; r * out], [r, out]),
            config,
            device,
        )
    }
}
