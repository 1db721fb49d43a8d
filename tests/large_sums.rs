//! Sums over tensors as large as a real model's gradients (SmolLM2's embedding: 49152 x 576),
//! on every device, against an f64 sum on the host: the gradient norm's `blocked_sum` is right
//! everywhere, where burn's reduction of one long row is not on lavapipe.

mod common;

use burn::tensor::{Tensor, TensorData};
use rrhf::train::optimizer::blocked_sum;

#[test]
fn blocked_sums_of_an_embedding_sized_tensor_are_right_on_every_device() {
    let n = 49152 * 576 + 7;
    // Deterministic values in [0, 1): a Weyl sequence.
    let values: Vec<f32> = (0..n)
        .map(|i| ((i as f64 * 0.618_033_988_749_895) % 1.0) as f32)
        .collect();
    let exact: f64 = values.iter().map(|&v| v as f64).sum();
    let exact_squares: f64 = values.iter().map(|&v| (v as f64) * (v as f64)).sum();
    for device in common::test_devices() {
        let t = Tensor::<1>::from_data(TensorData::new(values.clone(), [n]), &device.device);
        let burns: f32 = t.clone().reshape([1, n]).sum_dim(1).into_scalar();
        let sum: f32 = blocked_sum(t.clone()).into_scalar();
        let squares: f32 = blocked_sum(t.square()).into_scalar();
        eprintln!(
            "{}: blocked sum {sum} (burn's sum_dim {burns}), of squares {squares}; exact {exact}, \
             {exact_squares}",
            device.description
        );
        for (what, got, want) in [
            ("sum", sum, exact),
            ("sum of squares", squares, exact_squares),
        ] {
            assert!(
                ((got as f64 - want) / want).abs() < 1e-6,
                "{}: {what} {got}, exact {want}",
                device.description
            );
        }
    }
    // A length of one block or less is one row.
    let small = Tensor::<1>::from_data(TensorData::new(vec![0.5f32; 3], [3]), &Default::default());
    assert_eq!(blocked_sum(small).into_scalar::<f32>(), 1.5);
}
