//! LoRA (Hu et al., 2021): a targeted projection keeps its pretrained weight `W` frozen and learns
//! a low-rank update, `y = x·W + (alpha / r) · dropout(x)·A·B` with `A` `[in, r]` and `B`
//! `[r, out]`. Only `A` and `B` take gradients and optimizer moments, so a LoRA run holds one
//! copy of the model plus a few million adapter weights.
//!
//! Initialised as PEFT does (`A` uniform in ±1/sqrt(in), `B` zero: the adapted model starts equal
//! to the base), saved and loaded in PEFT's layout by `checkpoint::peft`, and folded into the base
//! weights by [`Llama::merge_lora`] (`rrhf merge`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::llama::{DecoderLayer, Llama};
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
    fn shape(&self) -> [usize; 2] {
        self.base.weight.val().dims()
    }

    /// The base weight with the adapter's update added, and no adapter.
    fn merged(self) -> Self {
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
    fn fresh(
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

impl DecoderLayer {
    /// The projections LoRA can target, by name, in `LORA_TARGETS` order.
    pub fn projections(&self) -> [(&'static str, &Projection); 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ]
    }

    fn projections_mut(&mut self) -> [(&'static str, &mut Projection); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            ("q_proj", &mut a.q_proj),
            ("k_proj", &mut a.k_proj),
            ("v_proj", &mut a.v_proj),
            ("o_proj", &mut a.o_proj),
            ("gate_proj", &mut m.gate_proj),
            ("up_proj", &mut m.up_proj),
            ("down_proj", &mut m.down_proj),
        ]
    }

    /// Where (`"self_attn"` or `"mlp"`) a projection sits, for checkpoint names.
    pub fn block_of(projection: &str) -> &'static str {
        match projection {
            "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
            _ => "mlp",
        }
    }
}

impl Llama {
    /// Freezes every weight and adds fresh adapters to the targeted projections (seeded).
    pub fn with_fresh_lora(self, config: &LoraConfig, base: PathBuf, seed: u64) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let device = self.device();
        self.with_lora(config, base, |_, name, [inp, out]| {
            if config.rank > inp.min(out) {
                bail!(
                    "field `lora.rank`: {} is more than the smaller side of the {inp}x{out} \
                     {name} projection (a rank beyond it adds weights and no expressiveness)",
                    config.rank
                );
            }
            Ok(Lora::fresh(inp, out, config, &mut rng, &device))
        })
    }

    /// Freezes every weight and adds the adapter `make(layer, projection, [in, out])` to each
    /// targeted projection.
    pub fn with_lora(
        self,
        config: &LoraConfig,
        base: PathBuf,
        mut make: impl FnMut(usize, &str, [usize; 2]) -> Result<Lora>,
    ) -> Result<Self> {
        if self.adapter.is_some() {
            bail!("the model already has LoRA adapters");
        }
        let mut model = self.no_grad();
        for (i, layer) in model.layers.iter_mut().enumerate() {
            for (name, projection) in layer.projections_mut() {
                if config.target_modules.iter().any(|t| t == name) {
                    let lora = make(i, name, projection.shape())?;
                    projection.lora = Some(lora);
                }
            }
        }
        model.adapter = Some(AdapterInfo {
            config: config.clone(),
            base,
        });
        Ok(model)
    }

    /// The same model with the adapters' updates folded into the base weights (`rrhf merge`).
    pub fn merge_lora(mut self) -> Self {
        for layer in &mut self.layers {
            for (_, projection) in layer.projections_mut() {
                *projection = projection.clone().merged();
            }
        }
        self.adapter = None;
        self
    }

    /// The base model the adapters apply to, sharing its weights (no copy): the reference for
    /// the KL term of a LoRA run.
    pub fn without_lora(&self) -> Self {
        let mut model = self.clone();
        for layer in &mut model.layers {
            for (_, projection) in layer.projections_mut() {
                projection.lora = None;
            }
        }
        model.adapter = None;
        model
    }
}
