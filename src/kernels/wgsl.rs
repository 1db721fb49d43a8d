//! The WGSL shaders of `shaders/` launched on burn's wgpu (cubecl) backend.
//!
//! Every launch passes its sizes in an `info` buffer; the shaders bounds-check against them.
//! Row kernels use one workgroup per (sequence, position) row, laid out on a 2-D grid because a
//! dispatch may hold at most 65535 workgroups per dimension.

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
    kernel_source,
};
use burn::tensor::{DType, IntDType};
use cubecl::{CubeCount, CubeDim, prelude::KernelId, server::KernelArguments};
use derive_new::new;

use super::{PairLoss, RrhfKernels, fused_head};

kernel_source!(
    SeqLogprobForwardWgsl,
    "../../shaders/seq_logprob_forward.wgsl"
);
kernel_source!(
    SeqLogprobBackwardWgsl,
    "../../shaders/seq_logprob_backward.wgsl"
);
kernel_source!(RankLossForwardWgsl, "../../shaders/rank_loss_forward.wgsl");
kernel_source!(
    RankLossBackwardWgsl,
    "../../shaders/rank_loss_backward.wgsl"
);

/// Threads per workgroup of the row kernels (a power of two: the tree reduction halves it).
const ROW_WORKGROUP: u32 = 256;
/// Threads per workgroup of the small ranking kernels.
const RANK_WORKGROUP: u32 = 64;
const MAX_GRID_X: u32 = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shader {
    SeqLogprobForward,
    SeqLogprobBackward,
    RankLossForward,
    RankLossBackward,
}

#[derive(Debug)]
struct RrhfShader {
    shader: Shader,
    workgroup: u32,
}

impl KernelSource for RrhfShader {
    fn source(&self) -> SourceTemplate {
        let template = match self.shader {
            Shader::SeqLogprobForward => SeqLogprobForwardWgsl::new().source(),
            Shader::SeqLogprobBackward => SeqLogprobBackwardWgsl::new().source(),
            Shader::RankLossForward => RankLossForwardWgsl::new().source(),
            Shader::RankLossBackward => RankLossBackwardWgsl::new().source(),
        };
        template.register("wg", self.workgroup.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.shader, self.workgroup))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

fn launch(
    shader: Shader,
    workgroup: u32,
    count: CubeCount,
    client_of: &CubeTensor,
    buffers: Vec<&CubeTensor>,
    info: &[u32],
) {
    let client = &client_of.client;
    let info = client.create_from_slice(bytemuck::cast_slice(info));
    let mut bindings: Vec<_> = buffers.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(info.binding());
    let cube_dim = CubeDim::new_1d(workgroup);
    client.launch(
        Box::new(SourceKernel::new(
            RrhfShader { shader, workgroup },
            cube_dim,
        )),
        count,
        KernelArguments::new().with_buffers(bindings),
    );
}

fn empty_like(like: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    let n: usize = shape.iter().product();
    let handle = like.client.empty(n * DType::F32.size());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        handle,
        DType::F32,
    )
}

fn f32_contiguous(t: CubeTensor, what: &str) -> CubeTensor {
    assert_eq!(
        t.dtype,
        DType::F32,
        "the WGSL kernels take f32 {what}, got {:?}",
        t.dtype
    );
    into_contiguous(t)
}

fn i32_contiguous(t: IntTensor<CubeBackend>) -> CubeTensor {
    let t = if t.dtype == DType::I32 {
        t
    } else {
        CubeBackend::int_cast(t, IntDType::I32)
    };
    into_contiguous(t)
}

/// A 2-D grid with one workgroup per row, and its x extent.
fn row_grid(rows: usize) -> (CubeCount, u32) {
    let rows = u32::try_from(rows).expect("more than 2^32 logit rows");
    let x = rows.clamp(1, MAX_GRID_X);
    (CubeCount::Static(x, rows.div_ceil(x).max(1), 1), x)
}

fn dims3(t: &CubeTensor) -> [usize; 3] {
    let d = t.meta.shape().dims::<3>();
    assert!(
        d.iter().product::<usize>() < u32::MAX as usize,
        "logits of shape {d:?} exceed the 2^32 elements the kernels index"
    );
    d
}

impl RrhfKernels for CubeBackend {
    fn seq_logprob_forward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let logits = f32_contiguous(logits, "logits");
        let targets = i32_contiguous(targets);
        let mask = f32_contiguous(mask, "mask");
        let [s, t, v] = dims3(&logits);
        let token_logp = empty_like(&logits, vec![s, t]);
        let lse = empty_like(&logits, vec![s, t]);
        let (count, grid_x) = row_grid(s * t);
        launch(
            Shader::SeqLogprobForward,
            ROW_WORKGROUP,
            count,
            &logits,
            vec![&logits, &targets, &mask, &token_logp, &lse],
            &[(s * t) as u32, v as u32, grid_x],
        );
        // The sum over positions is a small [S, T] -> [S] reduction: burn's own op does it.
        let sum = Self::float_sum_dim(token_logp, 1);
        (Self::float_reshape(sum, [s].into()), lse)
    }

    fn seq_logprob_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let logits = f32_contiguous(logits, "logits");
        let targets = i32_contiguous(targets);
        let mask = f32_contiguous(mask, "mask");
        let lse = f32_contiguous(lse, "logsumexp");
        let grad = f32_contiguous(grad, "gradient");
        let [s, t, v] = dims3(&logits);
        let out = empty_like(&logits, vec![s, t, v]);
        let (count, grid_x) = row_grid(s * t);
        launch(
            Shader::SeqLogprobBackward,
            ROW_WORKGROUP,
            count,
            &logits,
            vec![&logits, &targets, &mask, &lse, &grad, &out],
            &[(s * t) as u32, v as u32, grid_x, t.max(1) as u32],
        );
        out
    }

    fn rank_loss_forward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        kind: PairLoss,
    ) -> FloatTensor<Self> {
        let p = f32_contiguous(p, "scores");
        let rewards = f32_contiguous(rewards, "rewards");
        let valid = f32_contiguous(valid, "slot mask");
        let [q, k] = p.meta.shape().dims::<2>();
        let loss = empty_like(&p, vec![q]);
        let groups = (q as u32).div_ceil(RANK_WORKGROUP).max(1);
        launch(
            Shader::RankLossForward,
            RANK_WORKGROUP,
            CubeCount::Static(groups, 1, 1),
            &p,
            vec![&p, &rewards, &valid, &loss],
            &[q as u32, k as u32, kind.code()],
        );
        loss
    }

    fn rank_loss_backward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kind: PairLoss,
    ) -> FloatTensor<Self> {
        let p = f32_contiguous(p, "scores");
        let rewards = f32_contiguous(rewards, "rewards");
        let valid = f32_contiguous(valid, "slot mask");
        let grad = f32_contiguous(grad, "gradient");
        let [q, k] = p.meta.shape().dims::<2>();
        let out = empty_like(&p, vec![q, k]);
        let groups = ((q * k) as u32).div_ceil(RANK_WORKGROUP).max(1);
        launch(
            Shader::RankLossBackward,
            RANK_WORKGROUP,
            CubeCount::Static(groups, 1, 1),
            &p,
            vec![&p, &rewards, &valid, &grad, &out],
            &[q as u32, k as u32, kind.code()],
        );
        out
    }

    // The fused head's matmuls are cubecl's tuned ones; the row reductions over each chunk of
    // logits are this file's log-prob kernels.
    fn fused_head_forward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        fused_head::forward_on::<Self>(
            hidden,
            weight,
            targets,
            mask,
            chunk,
            fused_head::RowOps::Kernels,
        )
    }

    fn fused_head_backward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        mask: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
        weight_grad: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        fused_head::backward_on::<Self>(
            hidden,
            weight,
            targets,
            mask,
            lse,
            grad,
            chunk,
            weight_grad,
            fused_head::RowOps::Kernels,
        )
    }
}
