//! The LLaMA-family model: configuration, rotary embeddings, the decoder, and its checkpoint names.

mod config;
mod llama;
mod lora;
mod precision;
mod projection;
mod reward;
mod rope;
mod weights;

pub use config::{LlamaConfig, ModelHead, RopeScaling};
pub use llama::{Attention, AttentionContext, DecoderLayer, KvCache, Llama, Mlp};
pub use precision::Precision;
pub use projection::{AdapterInfo, LORA_TARGETS, Lora, LoraConfig, Projection};
pub use rope::{Rope, RopeTables};
pub use weights::{HostTensor, WeightSource, checkpoint_tensors};

impl Llama {
    /// The device the weights live on.
    pub fn device(&self) -> burn::tensor::Device {
        self.embed_tokens.weight.val().device()
    }
}
