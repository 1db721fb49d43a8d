//! The CubeCL kernels (`cube_kernels.rs`) launched on burn's cubecl backend: what every GPU runs,
//! whichever compiler its runtime has (SPIR-V, MSL, WGSL).
//!
//! Row kernels use one cube per (sequence, position) row, laid out on a 2-D grid because a
//! dispatch may hold at most 65535 cubes per dimension; the kernels read the linear `CUBE_POS`.

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, IntDType};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::{CubeBackend, tensor::CubeTensor};
use cubecl::{CubeCount, CubeDim};

use super::contract::{PairLoss, RrhfKernels};
use super::cube_kernels;

/// Units per cube of the row kernels (a power of two: the tree reduction halves it).
pub const ROW_CUBE: u32 = 256;
/// Units per cube of the small ranking kernels.
pub const RANK_CUBE: u32 = 64;
const MAX_GRID_X: u32 = 65535;

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
        "the log-prob and ranking kernels take f32 {what}, got {:?}",
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

/// A grid of at least `rows` cubes, at most 65535 along x.
fn row_grid(rows: usize) -> CubeCount {
    let rows = u32::try_from(rows).expect("logit rows beyond 2^32 (check_logits_fit refuses them)");
    let x = rows.clamp(1, MAX_GRID_X);
    CubeCount::Static(x, rows.div_ceil(x).max(1), 1)
}

/// Cubes of `RANK_CUBE` units covering `n` units.
fn rank_grid(n: usize) -> CubeCount {
    CubeCount::Static((n as u32).div_ceil(RANK_CUBE).max(1), 1, 1)
}

fn dims3(t: &CubeTensor) -> [usize; 3] {
    let d = t.meta.shape().dims::<3>();
    assert!(
        d.iter().product::<usize>() <= super::contract::MAX_LOGITS,
        "logits of shape {d:?} exceed the 2^32 elements the kernels index (check_logits_fit \
         refuses them)"
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
        cube_kernels::seq_logprob_forward::launch(
            &logits.client,
            row_grid(s * t),
            CubeDim::new_1d(ROW_CUBE),
            logits.clone().into_tensor_arg(),
            targets.into_tensor_arg(),
            mask.into_tensor_arg(),
            token_logp.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            (s * t) as u32,
            v as u32,
            ROW_CUBE as usize,
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
        cube_kernels::seq_logprob_backward::launch(
            &logits.client,
            row_grid(s * t),
            CubeDim::new_1d(ROW_CUBE),
            logits.clone().into_tensor_arg(),
            targets.into_tensor_arg(),
            mask.into_tensor_arg(),
            lse.into_tensor_arg(),
            grad.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            (s * t) as u32,
            v as u32,
            t.max(1) as u32,
            ROW_CUBE as usize,
        );
        out
    }

    fn rank_loss_forward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self> {
        let p = f32_contiguous(p, "scores");
        let rewards = f32_contiguous(rewards, "rewards");
        let valid = f32_contiguous(valid, "slot mask");
        let [q, k] = p.meta.shape().dims::<2>();
        let loss = empty_like(&p, vec![q]);
        if kind == PairLoss::Listwise {
            cube_kernels::listwise_loss_forward::launch(
                &p.client,
                rank_grid(q),
                CubeDim::new_1d(RANK_CUBE),
                p.clone().into_tensor_arg(),
                rewards.into_tensor_arg(),
                valid.into_tensor_arg(),
                loss.clone().into_tensor_arg(),
                q as u32,
                k as u32,
            );
            return loss;
        }
        cube_kernels::rank_loss_forward::launch(
            &p.client,
            rank_grid(q),
            CubeDim::new_1d(RANK_CUBE),
            p.clone().into_tensor_arg(),
            rewards.into_tensor_arg(),
            valid.into_tensor_arg(),
            loss.clone().into_tensor_arg(),
            q as u32,
            k as u32,
            margin,
            kind == PairLoss::Logistic,
        );
        loss
    }

    fn rank_loss_backward(
        p: FloatTensor<Self>,
        rewards: FloatTensor<Self>,
        valid: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kind: PairLoss,
        margin: f32,
    ) -> FloatTensor<Self> {
        let p = f32_contiguous(p, "scores");
        let rewards = f32_contiguous(rewards, "rewards");
        let valid = f32_contiguous(valid, "slot mask");
        let grad = f32_contiguous(grad, "gradient");
        let [q, k] = p.meta.shape().dims::<2>();
        let out = empty_like(&p, vec![q, k]);
        if kind == PairLoss::Listwise {
            cube_kernels::listwise_loss_backward::launch(
                &p.client,
                rank_grid(q * k),
                CubeDim::new_1d(RANK_CUBE),
                p.clone().into_tensor_arg(),
                rewards.into_tensor_arg(),
                valid.into_tensor_arg(),
                grad.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                q as u32,
                k as u32,
            );
            return out;
        }
        cube_kernels::rank_loss_backward::launch(
            &p.client,
            rank_grid(q * k),
            CubeDim::new_1d(RANK_CUBE),
            p.clone().into_tensor_arg(),
            rewards.into_tensor_arg(),
            valid.into_tensor_arg(),
            grad.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            q as u32,
            k as u32,
            margin,
            kind == PairLoss::Logistic,
        );
        out
    }
}

/// The WGSL each kernel compiles to (what DX12 and browsers run), as `(file name, source)`:
/// what `shaders/` holds for reading and review. Compiled with cubecl's WGSL compiler from the
/// kernels' definitions with the launch settings above (checked mode, 32-bit indices, the cube
/// sizes and variants the launches use), whatever compiler `device` itself runs; `device` (any
/// GPU device) lends its properties. The entry point's name carries a hash that varies with the
/// build, so it is written as `main`.
pub fn wgsl_sources(device: &burn::tensor::Device) -> anyhow::Result<Vec<(String, String)>> {
    let burn::backend::DispatchDevice::Cube(cube) = device.as_dispatch() else {
        anyhow::bail!("the WGSL sources need a GPU device's properties");
    };
    let client = cube.client();
    let device = Definitions {
        props: client.properties_shared(),
        target: client.target_properties_shared(),
    };
    let entry = regex::Regex::new(r"\b[a-z_]+_[0-9a-f]{8}\b").expect("a valid pattern");
    log_prob_kernels(&device)
        .into_iter()
        .chain(ranking_kernels(&device))
        .map(|(name, kernel)| to_wgsl(name, kernel.as_ref(), &entry))
        .collect()
}

/// A kernel definition with the name of its file in `shaders/`.
type Named = (String, Box<dyn cubecl::prelude::CubeKernel>);

/// What every kernel definition of [`wgsl_sources`] takes from the device and the launches.
struct Definitions {
    props: std::sync::Arc<cubecl::prelude::DeviceProperties>,
    target: std::sync::Arc<cubecl::prelude::TargetProperties>,
}

impl Definitions {
    fn settings(&self, units: u32) -> cubecl::prelude::KernelSettings {
        use cubecl::prelude::*;
        KernelSettings::new(
            *CubeDim::new_1d(units),
            ExecutionMode::Checked,
            AddressType::U32,
        )
    }

    fn tensor(&self) -> cubecl::prelude::TensorCompilationArg {
        use cubecl::prelude::*;
        TensorCompilationArg {
            meta: TensorMetaCompilationArg { len: (), rank: () },
            buffer: BufferCompilationArg { inplace: None },
        }
    }
}

/// The sequence log-prob kernels, forward and backward.
fn log_prob_kernels(d: &Definitions) -> Vec<Named> {
    vec![
        (
            "seq_logprob_forward.wgsl".into(),
            Box::new(cube_kernels::seq_logprob_forward::SeqLogprobForward::new(
                d.settings(ROW_CUBE),
                d.props.clone(),
                d.target.clone(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                (),
                (),
                ROW_CUBE as usize,
            )),
        ),
        (
            "seq_logprob_backward.wgsl".into(),
            Box::new(cube_kernels::seq_logprob_backward::SeqLogprobBackward::new(
                d.settings(ROW_CUBE),
                d.props.clone(),
                d.target.clone(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                (),
                (),
                (),
                ROW_CUBE as usize,
            )),
        ),
    ]
}

/// The ranking kernels: the pair loss in each of its comptime variants, and the listwise loss.
fn ranking_kernels(d: &Definitions) -> Vec<Named> {
    let mut out: Vec<Named> = Vec::new();
    for (kind, logistic) in [("hinge", false), ("logistic", true)] {
        out.push((
            format!("rank_loss_forward_{kind}.wgsl"),
            Box::new(cube_kernels::rank_loss_forward::RankLossForward::new(
                d.settings(RANK_CUBE),
                d.props.clone(),
                d.target.clone(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                (),
                (),
                (),
                logistic,
            )),
        ));
        out.push((
            format!("rank_loss_backward_{kind}.wgsl"),
            Box::new(cube_kernels::rank_loss_backward::RankLossBackward::new(
                d.settings(RANK_CUBE),
                d.props.clone(),
                d.target.clone(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                (),
                (),
                (),
                logistic,
            )),
        ));
    }
    out.push((
        "listwise_loss_forward.wgsl".into(),
        Box::new(
            cube_kernels::listwise_loss_forward::ListwiseLossForward::new(
                d.settings(RANK_CUBE),
                d.props.clone(),
                d.target.clone(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                (),
                (),
            ),
        ),
    ));
    out.push((
        "listwise_loss_backward.wgsl".into(),
        Box::new(
            cube_kernels::listwise_loss_backward::ListwiseLossBackward::new(
                d.settings(RANK_CUBE),
                d.props.clone(),
                d.target.clone(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                d.tensor(),
                (),
                (),
            ),
        ),
    ));
    out
}

/// One kernel's WGSL, headed by where it comes from, its hashed entry point (`entry`) as `main`.
fn to_wgsl(
    name: String,
    kernel: &dyn cubecl::prelude::CubeKernel,
    entry: &regex::Regex,
) -> anyhow::Result<(String, String)> {
    let definition = cubecl::define_kernel(kernel).map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
    let source = cubecl::Compiler::compile(
        &mut cubecl::wgpu::WgslCompiler,
        definition,
        &Default::default(),
    )
    .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?
    .to_string();
    let header = format!(
        "// {name}: generated from src/kernels/cube_kernels.rs by cubecl's WGSL compiler\n\
         // (scripts/update-shaders.sh); do not edit.\n"
    );
    Ok((name, header + &entry.replace_all(&source, "main")))
}
