//! Mixed precision (`train.precision`): the weights stay in f32 (the optimizer updates them and
//! keeps its moments there), and each projection's matmul and attention's two matmuls (Q·Kᵀ and
//! P·V) run in f16 or bf16 on copies cast for the call, as PyTorch's autocast does: that is what
//! GPUs' tensor cores (cooperative matrices) take, accumulating in f32. Everything else stays in
//! f32: the residual stream, the norms, attention's softmax and masks (which do not fit in f16),
//! the head and the loss kernels. With f16, small gradients underflow unless the loss is scaled first
//! (`train::loss_scale`); bf16 has f32's range and needs no scaling.
//!
//! Frozen projection weights (the base of a LoRA model) never change, so they are loaded in the
//! matmul precision itself (`projection_storage`): half the memory of the model's largest part,
//! and no cast per call.

use burn::tensor::{Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    /// The dtype the projections' matmuls run in.
    pub fn matmul_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::Bf16 => FloatDType::BF16,
        }
    }

    /// What projection weights are stored in: this precision when they are frozen (a LoRA
    /// run's base), f32 when the optimizer updates them.
    pub fn projection_storage(self, frozen: bool) -> FloatDType {
        match frozen {
            true => self.matmul_dtype(),
            false => FloatDType::F32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    /// Whether `device` computes in this precision (f32 everywhere; f16 where the adapter has
    /// shader-f16, e.g. most Vulkan GPUs; bf16 arithmetic on burn's CPU backend only).
    pub fn runs_on(self, device: &Device) -> bool {
        let dtype: burn::tensor::DType = self.matmul_dtype().into();
        device.supports_dtype(dtype)
    }

    /// `a · b` of two batched matrices (attention's scores and weighted values) in this
    /// precision, the result in f32.
    pub fn batched_matmul<const D: usize>(self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        match self {
            Self::F32 => a.matmul(b),
            _ => {
                let dtype = self.matmul_dtype();
                a.cast(dtype).matmul(b.cast(dtype)).cast(FloatDType::F32)
            }
        }
    }

    /// `x · w` (`x` `[.., in]`, `w` `[in, out]`) in this precision, the result in f32.
    pub fn matmul<const D: usize>(self, x: Tensor<D>, w: Tensor<2>) -> Tensor<D> {
        match self {
            Self::F32 => x.matmul(w.unsqueeze()),
            _ => {
                let dtype = self.matmul_dtype();
                x.cast(dtype)
                    .matmul(w.cast(dtype).unsqueeze())
                    .cast(FloatDType::F32)
            }
        }
    }
}
