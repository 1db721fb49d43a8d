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
use burn::module::Module;
use rand::SeedableRng;

use super::llama::{DecoderLayer, Llama};
use super::projection::{AdapterInfo, Lora, LoraConfig, Projection};

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
