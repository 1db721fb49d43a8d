//! AdamW's update of one parameter, in one pass over the weight, its gradient and both moments.
//!
//! The formula is PyTorch's `AdamW` (decoupled weight decay, bias-corrected moments), with the
//! clipping factor folded into the gradient:
//!
//! ```text
//! g = grad · grad_scale
//! m = β1·m + (1 − β1)·g
//! v = β2·v + (1 − β2)·g²
//! w = w·(1 − lr·λ) − step_size · m / (√v / √(1 − β2ᵗ) + ε),   step_size = lr / (1 − β1ᵗ)
//! ```
//!
//! [`reference`] writes it as burn ops (each op a pass over the tensor, and a new tensor): the
//! oracle, and the implementation on every GPU, where fusion merges the chain into one kernel.
//! [`cpu`] is the CPU path's kernel: the same operations in the same order per element, so its
//! results are bit-identical to the reference, in one parallel pass that updates the weight and
//! the moments in place. Measured on SmolLM2-135M (2 cores), the reference's nine passes took
//! 1.1-1.9 s per step against PyTorch's 0.3 s; see the README's CPU table for the kernel's.

use burn::backend::Backend;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// The constants of one update, derived once per step by `train::optimizer::AdamW::step`.
/// Each is an f32 computed in f64 from the config, as the reference multiplies by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// The clipping factor (and loss-scale correction) applied to the gradient first.
    pub grad_scale: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    /// `1 − lr·weight_decay`.
    pub decay: f32,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β2ᵗ)`.
    pub sqrt_bias2: f32,
}

/// `(weight, m, v)` after one update, as burn ops over any backend's primitives.
pub fn reference<B: Backend>(
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    m: FloatTensor<B>,
    v: FloatTensor<B>,
    s: AdamWStep,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let g = B::float_mul_scalar(grad, s.grad_scale.into());
    let m = B::float_add(
        B::float_mul_scalar(m, s.beta1.into()),
        B::float_mul_scalar(g.clone(), s.one_minus_beta1.into()),
    );
    let v = B::float_add(
        B::float_mul_scalar(v, s.beta2.into()),
        B::float_mul_scalar(B::float_mul(g.clone(), g), s.one_minus_beta2.into()),
    );
    let denominator = B::float_add_scalar(
        B::float_div_scalar(B::float_sqrt(v.clone()), s.sqrt_bias2.into()),
        s.eps.into(),
    );
    let step = B::float_mul_scalar(B::float_div(m.clone(), denominator), s.step_size.into());
    let weight = B::float_sub(B::float_mul_scalar(weight, s.decay.into()), step);
    (weight, m, v)
}

/// Elements per parallel task: large enough that rayon's scheduling is noise, small enough that
/// two cores (and sixteen) stay busy on the smallest weights (a norm's 576).
const CHUNK: usize = 16 * 1024;

/// The CPU kernel: [`reference`]'s operations per element, in place in the weight and moments
/// when they are not shared (a shared buffer is copied once first, as burn's copy-on-write does).
/// Tensors that are not contiguous f32 go through the reference.
pub fn cpu(
    weight: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    m: FloatTensor<Flex>,
    v: FloatTensor<Flex>,
    s: AdamWStep,
) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
    let plain = |t: &FloatTensor<Flex>| t.dtype() == DType::F32 && t.as_slice::<f32>().is_some();
    let n = weight.shape().num_elements();
    let same_size = [&grad, &m, &v]
        .iter()
        .all(|t| t.shape().num_elements() == n);
    if !(plain(&weight) && plain(&grad) && plain(&m) && plain(&v) && same_size) {
        return reference::<Flex>(weight, grad, m, v, s);
    }
    let (mut weight, mut m, mut v) = (owned(weight), owned(m), owned(v));
    let g = grad
        .as_slice::<f32>()
        .expect("checked contiguous f32 above");
    weight
        .storage_mut::<f32>()
        .par_chunks_mut(CHUNK)
        .zip(m.storage_mut::<f32>().par_chunks_mut(CHUNK))
        .zip(v.storage_mut::<f32>().par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| update_chunk(w, m, v, g, &s));
    (weight, m, v)
}

/// One chunk of the update. Written as the reference's ops one by one (Rust does not contract
/// `a * b + c` into a fused multiply-add), so each element rounds exactly as there.
fn update_chunk(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamWStep) {
    for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        let g = g * s.grad_scale;
        *m = *m * s.beta1 + g * s.one_minus_beta1;
        *v = *v * s.beta2 + (g * g) * s.one_minus_beta2;
        let denominator = v.sqrt() / s.sqrt_bias2 + s.eps;
        *w = *w * s.decay - (*m / denominator) * s.step_size;
    }
}

/// A tensor whose storage is exactly its elements, starting at 0 (a view into a larger buffer is
/// copied out), so that the in-place update writes the tensor and nothing else.
fn owned(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let shape = t.shape();
    let whole = t.layout().contiguous_offsets() == Some((0, shape.num_elements()))
        && t.bytes().len() == shape.num_elements() * size_of::<f32>();
    if whole {
        return t;
    }
    let values = t
        .as_slice::<f32>()
        .expect("checked contiguous f32")
        .to_vec();
    FlexTensor::from_data(TensorData::new(values, shape))
}
