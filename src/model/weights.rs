//! The mapping between the module and the tensors of a Hugging Face LLaMA checkpoint.
//!
//! Names and shapes are those of `LlamaForCausalLM.state_dict()`. The file formats themselves
//! (safetensors, GGUF) live in `checkpoint`; this file only knows which tensor goes where.

use anyhow::Result;
use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use super::config::{LlamaConfig, ModelHead};
use super::llama::{Attention, DecoderLayer, Llama, Mlp};
use super::precision::Precision;
use super::projection::Projection;
use super::rope::Rope;

/// A tensor on the host in f32, with its checkpoint shape (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// The transpose of a 2-d tensor.
    pub fn transposed(&self) -> Self {
        let [rows, cols] = self.shape[..] else {
            panic!("transpose of a {}-d tensor", self.shape.len())
        };
        let mut out = vec![0.0f32; self.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                out[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self::new(vec![cols, rows], out)
    }
}

/// Where weights come from: called with a checkpoint name and the shape the config implies.
pub type WeightSource<'a> = dyn FnMut(&str, &[usize]) -> Result<HostTensor> + 'a;

/// `(name, shape)` of every tensor a checkpoint of this config holds, in the order of the module.
pub fn checkpoint_tensors(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.hidden_size;
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let f = config.intermediate_size;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![config.vocab_size, d],
    )];
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut push = |name: &str, shape: Vec<usize>| out.push((format!("{p}.{name}"), shape));
        push("input_layernorm.weight", vec![d]);
        for (proj, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            push(&format!("self_attn.{proj}.weight"), vec![rows, d]);
            if config.attention_bias {
                push(&format!("self_attn.{proj}.bias"), vec![rows]);
            }
        }
        push("self_attn.o_proj.weight", vec![d, q]);
        if config.attention_bias {
            push("self_attn.o_proj.bias", vec![d]);
        }
        push("post_attention_layernorm.weight", vec![d]);
        for (proj, shape) in [
            ("gate_proj", vec![f, d]),
            ("up_proj", vec![f, d]),
            ("down_proj", vec![d, f]),
        ] {
            let rows = shape[0];
            push(&format!("mlp.{proj}.weight"), shape);
            if config.mlp_bias {
                push(&format!("mlp.{proj}.bias"), vec![rows]);
            }
        }
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    match config.head {
        ModelHead::Score => out.push(("score.weight".to_string(), vec![1, d])),
        ModelHead::LanguageModel if !config.tie_word_embeddings => {
            out.push(("lm_head.weight".to_string(), vec![config.vocab_size, d]))
        }
        ModelHead::LanguageModel => {}
    }
    out
}

struct Loader<'s, 'a> {
    source: &'s mut WeightSource<'a>,
    device: Device,
    /// What the decoder's projection weights are stored in on the device.
    projections: FloatDType,
}

impl Loader<'_, '_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = (self.source)(name, shape)?;
        anyhow::ensure!(
            t.shape == shape,
            "tensor `{name}` has shape {:?}, config.json implies {shape:?}",
            t.shape
        );
        Ok(t)
    }

    fn param<const D: usize>(&self, t: HostTensor) -> Param<Tensor<D>> {
        let shape: [usize; D] = t.shape.try_into().expect("rank checked by the caller");
        Param::from_data(TensorData::new(t.data, shape), &self.device)
    }

    /// A projection of the decoder, without adapters, its weight cast as it arrives.
    fn projection(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Projection> {
        let mut linear = self.linear(name, out, inp, bias)?;
        if self.projections != FloatDType::F32 {
            let dtype = self.projections;
            linear.weight = linear.weight.map(|w| w.cast(dtype));
        }
        Ok(linear.into())
    }

    /// A checkpoint `[out, in]` weight (and optional bias) as a burn `[in, out]` linear.
    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let w = self
            .tensor(&format!("{name}.weight"), &[out, inp])?
            .transposed();
        let bias = match bias {
            true => {
                let b = self.tensor(&format!("{name}.bias"), &[out])?;
                Some(self.param(b))
            }
            false => None,
        };
        Ok(Linear {
            weight: self.param(w),
            bias,
        })
    }

    fn norm(&mut self, name: &str, d: usize, eps: f64) -> Result<RmsNorm> {
        let gamma = self.tensor(name, &[d])?;
        Ok(RmsNorm {
            gamma: self.param(gamma),
            epsilon: eps,
        })
    }
}

impl Llama {
    /// Builds the model from checkpoint tensors, each converted to f32 by `source`; the
    /// decoder's projection weights are stored in `projections` on the device (f32, or a half
    /// precision for the frozen base of a LoRA run: see `precision.rs`), one tensor at a time.
    pub fn from_weights(
        config: LlamaConfig,
        source: &mut WeightSource,
        device: &Device,
        projections: FloatDType,
    ) -> Result<Self> {
        let mut l = Loader {
            source,
            device: device.clone(),
            projections,
        };
        let (d, f, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let (h, kv, hd) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let eps = config.rms_norm_eps;
        let embed = l.tensor("model.embed_tokens.weight", &[v, d])?;
        let embed_tokens = Embedding {
            weight: l.param(embed),
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let (ab, mb) = (config.attention_bias, config.mlp_bias);
            layers.push(DecoderLayer {
                input_layernorm: l.norm(&format!("{p}.input_layernorm.weight"), d, eps)?,
                self_attn: Attention {
                    q_proj: l.projection(&format!("{p}.self_attn.q_proj"), h * hd, d, ab)?,
                    k_proj: l.projection(&format!("{p}.self_attn.k_proj"), kv * hd, d, ab)?,
                    v_proj: l.projection(&format!("{p}.self_attn.v_proj"), kv * hd, d, ab)?,
                    o_proj: l.projection(&format!("{p}.self_attn.o_proj"), d, h * hd, ab)?,
                    num_heads: h,
                    num_kv_heads: kv,
                    head_dim: hd,
                },
                post_attention_layernorm: l.norm(
                    &format!("{p}.post_attention_layernorm.weight"),
                    d,
                    eps,
                )?,
                mlp: Mlp {
                    gate_proj: l.projection(&format!("{p}.mlp.gate_proj"), f, d, mb)?,
                    up_proj: l.projection(&format!("{p}.mlp.up_proj"), f, d, mb)?,
                    down_proj: l.projection(&format!("{p}.mlp.down_proj"), d, f, mb)?,
                },
            });
        }
        let norm = l.norm("model.norm.weight", d, eps)?;
        let (lm_head, score) = match config.head {
            ModelHead::Score => (None, Some(l.linear("score", 1, d, false)?)),
            ModelHead::LanguageModel if config.tie_word_embeddings => (None, None),
            ModelHead::LanguageModel => (Some(l.linear("lm_head", v, d, false)?), None),
        };
        let rope = Rope::new(&config);
        Ok(Llama {
            embed_tokens,
            layers,
            norm,
            lm_head,
            score,
            config,
            rope,
            adapter: None,
            precision: Precision::F32,
        })
    }

    /// A model with random weights (normal, std 0.02; norms at one), for tests and benchmarks;
    /// `projections` as in [`Llama::from_weights`].
    pub fn random(
        config: LlamaConfig,
        seed: u64,
        device: &Device,
        projections: FloatDType,
    ) -> Self {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut source = |name: &str, shape: &[usize]| -> Result<HostTensor> {
            let n = shape.iter().product();
            let data = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                small_normal(&mut rng, n, 0.02)
            };
            Ok(HostTensor::new(shape.to_vec(), data))
        };
        Self::from_weights(config, &mut source, device, projections)
            .expect("random weights have the right shapes")
    }

    /// Every weight in checkpoint names and layout, read back to the host. Adapters are not
    /// among them: merge them first (`merge_lora`), or save them apart (`checkpoint::peft`).
    pub fn checkpoint_weights(&self) -> Vec<(String, HostTensor)> {
        assert!(
            self.adapter.is_none(),
            "checkpoint_weights of a model with adapters would drop them"
        );
        let mut out = Exporter::default();
        out.tensor(
            "model.embed_tokens.weight".into(),
            self.embed_tokens.weight.val(),
        );
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.tensor(
                format!("{p}.input_layernorm.weight"),
                layer.input_layernorm.gamma.val(),
            );
            let [attention @ .., _, _, _] = layer.projections();
            for (n, l) in attention {
                out.linear(format!("{p}.self_attn.{n}"), &l.base);
            }
            out.tensor(
                format!("{p}.post_attention_layernorm.weight"),
                layer.post_attention_layernorm.gamma.val(),
            );
            let [_, _, _, _, mlp @ ..] = layer.projections();
            for (n, l) in mlp {
                out.linear(format!("{p}.mlp.{n}"), &l.base);
            }
        }
        out.tensor("model.norm.weight".into(), self.norm.gamma.val());
        if let Some(head) = &self.lm_head {
            out.linear("lm_head".into(), head);
        }
        if let Some(score) = &self.score {
            out.linear("score".into(), score);
        }
        out.0
    }
}

/// `n` draws of a normal with standard deviation `std`, by the Irwin-Hall approximation (a sum of
/// four uniforms): plenty for initial weights.
pub fn small_normal(rng: &mut impl rand::Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * std * 3f32.sqrt())
        .collect()
}

#[derive(Default)]
struct Exporter(Vec<(String, HostTensor)>);

impl Exporter {
    fn tensor<const D: usize>(&mut self, name: String, t: Tensor<D>) {
        let shape = t.dims().to_vec();
        let data = t.try_into_vec_as::<f32>().expect("f32 tensor data");
        self.0.push((name, HostTensor::new(shape, data)));
    }

    /// Back to the checkpoint's `[out, in]` layout.
    fn linear(&mut self, name: String, l: &Linear) {
        self.tensor(format!("{name}.weight"), l.weight.val().transpose());
        if let Some(b) = &l.bias {
            self.tensor(format!("{name}.bias"), b.val());
        }
    }
}
