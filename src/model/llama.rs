//! The LLaMA decoder as a burn module.
//!
//! Field names follow the Hugging Face checkpoint (`model.layers.N.self_attn.q_proj.weight` is
//! `layers[N].self_attn.q_proj`), so the mapping to files in `weights.rs` reads one to one.
//! Linear weights are kept in burn's `[in, out]` layout; the transpose to and from the
//! checkpoint's `[out, in]` happens once, at load and save.

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::LlamaConfig;
use super::precision::Precision;
use super::projection::{AdapterInfo, Projection};
use super::rope::{Rope, RopeTables};

/// Added to attention scores that must not be attended to. Finite, so a row with every key
/// masked (a left-padding query) yields a harmless uniform softmax instead of NaN.
const MASKED: f32 = -1.0e30;

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Projection,
    pub k_proj: Projection,
    pub v_proj: Projection,
    pub o_proj: Projection,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Projection,
    pub up_proj: Projection,
    pub down_proj: Projection,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

#[derive(Module, Debug)]
pub struct Llama {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to the token embedding, and in a reward model.
    pub lm_head: Option<Linear>,
    /// A reward model's scalar head (`score.weight`, `[d, 1]`); see `reward.rs`.
    pub score: Option<Linear>,
    #[module(skip)]
    pub config: LlamaConfig,
    #[module(skip)]
    pub rope: Rope,
    /// Set when LoRA adapters sit beside the projections (`lora.rs`).
    #[module(skip)]
    pub adapter: Option<AdapterInfo>,
    /// What the projections' matmuls compute in (`precision.rs`); trainable weights are f32.
    #[module(skip)]
    pub precision: Precision,
}

/// Everything attention needs besides the hidden states: rotary tables for the new tokens and
/// the additive masks (causal, and padding of the keys).
pub struct AttentionContext {
    pub rope: RopeTables,
    /// `[1, 1, Tq, Tk]`: 0 where a query may see a key by position, `MASKED` after it.
    causal: Tensor<4>,
    /// `[B, 1, 1, Tk]`: 0 for real keys, `MASKED` for padding.
    padding: Option<Tensor<4>>,
    precision: Precision,
}

impl AttentionContext {
    /// For `q_len` new tokens per row following `past_len` cached ones.
    ///
    /// `positions` is the `[B, q_len]` grid of rotary positions of the new tokens;
    /// `key_valid`, if given, is the `[B, past_len + q_len]` grid of which columns hold real tokens.
    pub fn new(
        model: &Llama,
        positions: &[usize],
        key_valid: Option<&[bool]>,
        batch: usize,
        q_len: usize,
        past_len: usize,
        device: &Device,
    ) -> Self {
        let k_len = past_len + q_len;
        let causal: Vec<f32> = (0..q_len)
            .flat_map(|i| (0..k_len).map(move |j| if j <= past_len + i { 0.0 } else { MASKED }))
            .collect();
        let padding = key_valid.map(|valid| {
            assert_eq!(valid.len(), batch * k_len);
            let bias: Vec<f32> = valid
                .iter()
                .map(|&v| if v { 0.0 } else { MASKED })
                .collect();
            Tensor::from_data(TensorData::new(bias, [batch, 1, 1, k_len]), device)
        });
        Self {
            rope: model.rope.tables(positions, batch, q_len, device),
            causal: Tensor::from_data(TensorData::new(causal, [1, 1, q_len, k_len]), device),
            padding,
            precision: model.precision,
        }
    }

    /// A right-padded (or unpadded) batch seen whole: positions 0..T in every row.
    pub fn full_sequence(
        model: &Llama,
        key_valid: Option<&[bool]>,
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> Self {
        let positions: Vec<usize> = (0..batch).flat_map(|_| 0..seq).collect();
        Self::new(model, &positions, key_valid, batch, seq, 0, device)
    }
}

/// Keys and values of the tokens seen so far, per layer, before the grouped heads are shared.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    /// Number of cached positions (columns).
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }

    /// Row i becomes the old row `rows[i]`: drops sequences that have ended, and gives each new
    /// beam the history of the beam it extends (rows may repeat).
    pub fn select_rows(&mut self, rows: &[usize], device: &Device) {
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            device,
        );
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, index.clone());
            *v = v.clone().select(0, index.clone());
        }
    }
}

impl Attention {
    fn forward(
        &self,
        x: Tensor<3>,
        ctx: &AttentionContext,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let p = ctx.precision;
        let q = ctx.rope.apply(heads(self.q_proj.forward(x.clone(), p), h));
        let k = ctx.rope.apply(heads(self.k_proj.forward(x.clone(), p), kv));
        let v = heads(self.v_proj.forward(x, p), kv);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let tk = k.dims()[2];

        // Grouped-query attention without copying K and V per query head: the `rep` query heads
        // that share a KV head are stacked along the sequence axis of one matmul.
        let rep = h / kv;
        let q = q.reshape([b, kv, rep * t, hd]);
        let scores = p
            .batched_matmul(q, k.swap_dims(2, 3))
            .reshape([b, h, t, tk])
            * (hd as f64).powf(-0.5);
        let mut scores = scores + ctx.causal.clone();
        if let Some(padding) = &ctx.padding {
            scores = scores + padding.clone();
        }
        let probs = softmax(scores, 3).reshape([b, kv, rep * t, tk]);
        let out = p
            .batched_matmul(probs, v)
            .reshape([b, h, t, hd])
            .swap_dims(1, 2)
            .reshape([b, t, h * hd]);
        self.o_proj.forward(out, p)
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>, p: Precision) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone(), p));
        self.down_proj.forward(gate * self.up_proj.forward(x, p), p)
    }
}

impl DecoderLayer {
    pub fn forward(
        &self,
        x: Tensor<3>,
        ctx: &AttentionContext,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), ctx, cache);
        x.clone()
            + self
                .mlp
                .forward(self.post_attention_layernorm.forward(x), ctx.precision)
    }
}

impl Llama {
    /// Final-norm hidden states `[B, T, d]` of `tokens` `[B, T]`.
    pub fn hidden_states(
        &self,
        tokens: Tensor<2, Int>,
        ctx: &AttentionContext,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let mut x = self.embed_tokens.forward(tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, ctx, cache.as_deref_mut().map(|c| (c, i)));
        }
        self.norm.forward(x)
    }

    /// The language-model head: `[.., d]` hidden states to `[.., V]` logits.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        assert!(
            self.score.is_none(),
            "a reward model has no language-model head (checkpoint::load_model refuses them)"
        );
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            // E·hᵀ rather than h·Eᵀ: burn's CPU backends multiply a transposed [V, d] operand
            // an order of magnitude slower (ndarray: 455 ms against 27 ms for one token of SmolLM2).
            None => {
                let [b, t, d] = hidden.dims();
                let embed = self.embed_tokens.weight.val();
                let v = embed.dims()[0];
                embed
                    .matmul(hidden.reshape([b * t, d]).transpose())
                    .transpose()
                    .reshape([b, t, v])
            }
        }
    }

    /// Logits `[B, T, V]` of a right-padded batch; `key_valid` (`[B, T]`) marks real tokens.
    pub fn forward(&self, tokens: Tensor<2, Int>, key_valid: Option<&[bool]>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let ctx = AttentionContext::full_sequence(self, key_valid, b, t, &tokens.device());
        self.logits(self.hidden_states(tokens, &ctx, None))
    }

    /// The head's weight as one row per vocabulary entry, `[V, d]`, whether tied or not (the
    /// fused head's operand).
    pub fn head_rows(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.weight.val().transpose(),
            None => self.embed_tokens.weight.val(),
        }
    }
}
