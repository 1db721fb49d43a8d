//! Rotary position embeddings, in the "rotate half" layout of Hugging Face LLaMA checkpoints.
//!
//! Frequencies and angles are computed on the host in f32, in the same order of operations as
//! transformers, so positions far into the context agree with it to rounding; only the
//! `[B, 1, T, head_dim]` cos/sin tables travel to the device.

use burn::tensor::{Device, Tensor, TensorData};

use super::config::{LlamaConfig, RopeScaling};

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

/// The cos and sin tables for one batch of positions, shaped `[B, 1, T, head_dim]`.
pub struct RopeTables {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
}

impl Rope {
    pub fn new(config: &LlamaConfig) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta as f32;
        let mut inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
            .collect();
        match config.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor as f32),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                let (factor, low, high, old_ctx) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    old_ctx as f32,
                );
                let low_freq_wavelen = old_ctx / low;
                let high_freq_wavelen = old_ctx / high;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_freq_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_freq_wavelen {
                        // Between the two wavelengths: blend the scaled and unscaled frequency.
                        let smooth = (old_ctx / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        Self { inv_freq }
    }

    /// Tables for `positions`, a row-major `[batch, seq]` grid of absolute positions.
    pub fn tables(
        &self,
        positions: &[usize],
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> RopeTables {
        assert_eq!(positions.len(), batch * seq);
        let half = self.inv_freq.len();
        let dim = 2 * half;
        let mut cos = Vec::with_capacity(positions.len() * dim);
        let mut sin = Vec::with_capacity(positions.len() * dim);
        for &p in positions {
            let angles: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
            // Both halves of the head share the angles (`emb = cat(freqs, freqs)`).
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let shape = [batch, 1, seq, dim];
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }
}

impl RopeTables {
    /// `x * cos + rotate_half(x) * sin` for `x` of shape `[B, heads, T, head_dim]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let dim = x.dims()[3];
        let half = dim / 2;
        let first = x.clone().narrow(3, 0, half);
        let second = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}
