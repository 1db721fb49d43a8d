//! Choosing where tensors live: a wgpu adapter (Vulkan, Metal, DX12) or the CPU path.
//!
//! `auto` takes the first real GPU adapter, else the CPU path. The CPU path is burn's flex
//! backend. Measured on the 2-core development machine with SmolLM2-135M (README, "Devices"):
//! one decode step 40 ms on flex against 110 ms on ndarray, a forward and backward pass over
//! 4x128 tokens 7.0 s against 9.9 s. ndarray wins only on a lone large matmul, which is not
//! what a transformer step is made of. burn's `cpu` backend (cubecl-cpu) needs an MLIR build
//! that we keep out of the dependency tree.
//! A CPU adapter of wgpu (Mesa's lavapipe) is never chosen by `auto`, since it runs the same
//! shaders some sixty times slower than the CPU path, but `wgpu-cpu` selects it for testing the
//! GPU code path on a machine without a GPU.
//!
//! Each adapter gets the compiler its API has in cubecl: SPIR-V on Vulkan (cooperative matrices,
//! i.e. tensor cores, where the driver lists VK_KHR_cooperative_matrix), MSL on Metal (simdgroup
//! matrices), WGSL elsewhere. Before the first GPU device exists, [`configure_runtime`] sets what
//! cubecl's runtime does process-wide: where autotune keeps its results, how hard it tunes, and
//! whether fusion runs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use burn::backend::{WgpuBackend, WgpuDevice, WgpuDeviceKind};
use burn::tensor::{Device, Tensor};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first GPU adapter, else the CPU path.
    #[default]
    Auto,
    /// A GPU adapter: the n-th GPU in `rrhf devices`, the first if not given.
    Gpu(Option<usize>),
    /// wgpu's CPU adapter (lavapipe, WARP, ...), to exercise the GPU path without a GPU.
    WgpuCpu,
    /// burn's CPU backend.
    Cpu,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "gpu" => Self::Gpu(None),
            "wgpu-cpu" => Self::WgpuCpu,
            "cpu" => Self::Cpu,
            other => match other.strip_prefix("gpu:").map(str::parse) {
                Some(Ok(n)) => Self::Gpu(Some(n)),
                _ => {
                    return Err(format!(
                        "unknown device {other:?}: use auto, gpu, gpu:N, wgpu-cpu or cpu"
                    ));
                }
            },
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Gpu(None) => write!(f, "gpu"),
            Self::Gpu(Some(n)) => write!(f, "gpu:{n}"),
            Self::WgpuCpu => write!(f, "wgpu-cpu"),
            Self::Cpu => write!(f, "cpu"),
        }
    }
}

impl serde::Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One wgpu adapter as `rrhf devices` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Adapter {
    pub name: String,
    /// The PCI vendor (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel; 0x10005 Mesa for lavapipe) and
    /// device ids, as the driver reports them.
    pub vendor_id: String,
    pub device_id: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub is_gpu: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub supports_f16: bool,
    /// The compiler cubecl gives it (SPIR-V, MSL, WGSL), once [`probe_compiler`] has asked.
    pub compiler: Option<String>,
    /// Cooperative-matrix (tensor core) types and shapes the compiler can use, `a×b→c m×n×k`.
    pub cooperative_matrices: Vec<String>,
    /// How burn addresses it: type and index among adapters of that type on that backend.
    #[serde(skip)]
    kind: WgpuDeviceKind,
    #[serde(skip)]
    api: WgpuBackend,
}

/// Every adapter wgpu finds on the native graphics APIs (Vulkan, Metal, DX12).
pub fn adapters() -> Vec<Adapter> {
    use wgpu::{Backend, Backends, DeviceType};
    let mut out = Vec::new();
    for (backend, api) in [
        (Backend::Vulkan, WgpuBackend::Vulkan),
        (Backend::Metal, WgpuBackend::Metal),
        (Backend::Dx12, WgpuBackend::Dx12),
    ] {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: Backends::from(backend),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let found = pollster::block_on(instance.enumerate_adapters(Backends::from(backend)));
        let mut per_type = [0usize; 5];
        for adapter in found {
            let info = adapter.get_info();
            let limits = adapter.limits();
            let (slot, kind) = match info.device_type {
                DeviceType::DiscreteGpu => (0, WgpuDeviceKind::DiscreteGpu(per_type[0])),
                DeviceType::IntegratedGpu => (1, WgpuDeviceKind::IntegratedGpu(per_type[1])),
                DeviceType::VirtualGpu => (2, WgpuDeviceKind::VirtualGpu(per_type[2])),
                DeviceType::Cpu => (3, WgpuDeviceKind::Cpu),
                DeviceType::Other => (4, WgpuDeviceKind::Other(per_type[4])),
            };
            per_type[slot] += 1;
            out.push(Adapter {
                name: info.name.clone(),
                vendor_id: format!("{:#06x}", info.vendor),
                device_id: format!("{:#06x}", info.device),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                is_gpu: slot <= 2,
                max_buffer_size: limits.max_buffer_size,
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                supports_f16: adapter.features().contains(wgpu::Features::SHADER_F16),
                compiler: None,
                cooperative_matrices: Vec::new(),
                kind,
                api,
            });
        }
    }
    out
}

/// A device ready for tensors, and what to tell the user about it.
#[derive(Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub description: String,
    /// Whether the wgpu runtime (and so the CubeCL kernels) runs it.
    pub is_wgpu: bool,
    /// The wgpu adapter behind it (none on the CPU path).
    pub adapter: Option<Adapter>,
}

impl fmt::Debug for SelectedDevice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.description)
    }
}

pub fn cpu_device() -> SelectedDevice {
    let device = Device::flex();
    let model = cpu_model().map(|m| format!(", {m}")).unwrap_or_default();
    let threads = match cpu_threads() {
        1 => "1 thread".to_string(),
        n => format!("{n} threads"),
    };
    SelectedDevice {
        device,
        description: format!("CPU (burn flex backend, {threads}{model})"),
        is_wgpu: false,
        adapter: None,
    }
}

/// The threads the CPU path computes on: rayon's global pool, which burn's CPU backend, its
/// matmuls and rrhf's CPU kernels share. `RAYON_NUM_THREADS` sets it; otherwise it is every core
/// this process may run on (its affinity mask and cgroup quota included).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// The CPU's model name, where the OS tells it (`/proc/cpuinfo` on Linux).
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

static HOST_READS: AtomicU64 = AtomicU64::new(0);
static HOST_READ_BYTES: AtomicU64 = AtomicU64::new(0);

/// A tensor's values on the host, as f32: how rrhf reads data back from a device (only the
/// export of a whole model's weights, `Llama::checkpoint_weights`, and `rrhf bench kernels`
/// read directly). Each call waits for the device to finish what the value depends on (a host
/// synchronisation), so the calls and their bytes are counted for `rrhf bench step`
/// ([`host_reads`]).
pub fn to_host<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let n = tensor.shape().num_elements() as u64;
    HOST_READS.fetch_add(1, Ordering::Relaxed);
    HOST_READ_BYTES.fetch_add(4 * n, Ordering::Relaxed);
    tensor
        .try_into_vec_as::<f32>()
        .map_err(|e| anyhow::anyhow!("reading a result back from the device: {e:?}"))
}

/// `(reads, bytes)` through [`to_host`] so far in this process.
pub fn host_reads() -> (u64, u64) {
    (
        HOST_READS.load(Ordering::Relaxed),
        HOST_READ_BYTES.load(Ordering::Relaxed),
    )
}

/// How cubecl's runtime was set up for this process (the first GPU device fixes it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeSettings {
    /// Autotune benchmarks each matmul's and fused kernel's candidates per shape; off, it still
    /// runs (cubecl has no switch for burn's own ops) at its cheapest: the coarsest shape keys
    /// and one sample per candidate, kept in a cache of their own.
    pub autotune: bool,
    /// Fusion merges elementwise ops into the kernels around them.
    pub fusion: bool,
    /// The file autotune's results persist in (per adapter and driver).
    pub cache: Option<PathBuf>,
}

static RUNTIME: OnceLock<RuntimeSettings> = OnceLock::new();

/// Whether an `RRHF_*` switch is set to off (`0`, `false`, `off`, `no`).
fn switched_off(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| ["0", "false", "off", "no"].contains(&v.trim()))
}

/// The user's cache directory for rrhf: `RRHF_CACHE_DIR`, else `$XDG_CACHE_HOME/rrhf`,
/// `~/.cache/rrhf` (Linux), `~/Library/Caches/rrhf` (macOS), `%LOCALAPPDATA%\rrhf` (Windows).
/// Never the repository or the current directory.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("RRHF_CACHE_DIR") {
        return Some(dir);
    }
    let base = if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library/Caches"))
    } else if cfg!(windows) {
        var("LOCALAPPDATA")
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("rrhf"))
}

/// Sets cubecl's process-wide runtime once, before the first GPU device: autotune's persistent
/// cache in [`cache_dir`] (one database per adapter and driver, since cubecl's keys do not name
/// the adapter), and autotune and fusion on unless `RRHF_AUTOTUNE=0` / `RRHF_FUSION=0`. On a CPU
/// adapter (lavapipe) autotune defaults to off (`RRHF_AUTOTUNE=1` turns it on): benchmarking every
/// candidate kernel on a CPU costs minutes and measures nothing a GPU run can use. `cubecl.toml`
/// and `CUBECL_*` variables still apply on top. Later calls return the first call's settings.
///
/// Autotune off still picks a kernel per shape by timing one sample of each candidate, so two
/// processes can pick differently and round differently in the last bit; its picks are cached
/// too, so that a run resumed in a new process computes exactly what the uninterrupted run did
/// (the resume tests found this). They go in a database of their own (`-minimal`), so that
/// one-sample guesses never stand in for a full tuning in later autotuned runs.
pub fn configure_runtime(adapter: &Adapter) -> &'static RuntimeSettings {
    RUNTIME.get_or_init(|| {
        use cubecl::config::autotune::AutotuneLevel;
        use cubecl::config::cache::CacheConfig;
        use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
        let on_cpu = adapter.device_type == "Cpu";
        let autotune = match std::env::var("RRHF_AUTOTUNE") {
            Ok(_) => !switched_off("RRHF_AUTOTUNE"),
            Err(_) => !on_cpu,
        };
        let fusion = !switched_off("RRHF_FUSION");
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        let level = if autotune { "" } else { "-minimal" };
        let slug: String = format!("rrhf-{}-{}{level}", adapter.name, adapter.driver)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        config.environment.name = slug.clone();
        let dir = cache_dir();
        // A path from cubecl.toml wins; the default (cubecl's `target/`) gives way to ours.
        if matches!(config.environment.path, CacheConfig::Target)
            && let Some(dir) = &dir
        {
            config.environment.path = CacheConfig::Directory(dir.join("cubecl"));
        }
        if !autotune {
            config.autotune.level = AutotuneLevel::Minimal;
            config.autotune.bench.min_samples = 1;
            config.autotune.bench.max_samples = 1;
            config.autotune.bench.short_circuit_samples = 1;
            config.autotune.bench.adaptive = true;
        }
        let cache = match &config.environment.path {
            CacheConfig::Directory(d) if !config.autotune.disable_cache => {
                Some(d.join(format!("{slug}.db")))
            }
            _ => None,
        };
        if !CubeClRuntimeConfig::try_set(config) {
            eprintln!("warning: cubecl's runtime was configured before rrhf could set it up");
        }
        if !fusion {
            for name in burn_cubecl::fusion::BUILTIN_NAMES {
                let _ = burn_cubecl::fusion::remove(name);
            }
        }
        RuntimeSettings {
            autotune,
            fusion,
            cache,
        }
    })
}

/// How this process's GPU devices run (set by the first one selected), if one was.
pub fn runtime_settings() -> Option<&'static RuntimeSettings> {
    RUNTIME.get()
}

/// The compiler cubecl gives a GPU device and the cooperative-matrix (tensor core) shapes it
/// found, as `a×b→c m×n×k` (empty: none). Initialises the device.
pub fn compiler_and_matrices(device: &Device) -> Option<(String, Vec<String>)> {
    let burn::backend::DispatchDevice::Cube(cube) = device.as_dispatch() else {
        return None;
    };
    let client = cube.client();
    let compiler = match client.name() {
        "wgpu<spirv>" => "SPIR-V",
        "wgpu<msl>" => "MSL",
        "wgpu<wgsl>" => "WGSL",
        other => other,
    }
    .to_string();
    let matrices = client
        .properties()
        .features
        .matmul
        .cmma
        .iter()
        .map(|c| {
            format!(
                "{}x{}->{} {}x{}x{}",
                c.a_type, c.b_type, c.cd_type, c.m, c.n, c.k
            )
        })
        .collect();
    Some((compiler, matrices))
}

/// Fills in the adapter's compiler and cooperative matrices by initialising it in cubecl.
pub fn probe_compiler(adapter: &mut Adapter) {
    if let Some((compiler, matrices)) = compiler_and_matrices(&wgpu_device(adapter).device) {
        adapter.compiler = Some(compiler);
        adapter.cooperative_matrices = matrices;
    }
}

fn wgpu_device(adapter: &Adapter) -> SelectedDevice {
    configure_runtime(adapter);
    // A device pinned to Metal makes burn panic where the GPU is too old for cubecl's MSL
    // compiler; left to choose (Metal is the only API wgpu has on Apple), it falls back to WGSL.
    let api = match adapter.api {
        WgpuBackend::Metal => WgpuBackend::Auto,
        api => api,
    };
    let device = Device::new(WgpuDevice::new(adapter.kind.clone()).on(api));
    SelectedDevice {
        device,
        description: format!(
            "{} ({}, {}, wgpu)",
            adapter.name, adapter.device_type, adapter.backend
        ),
        is_wgpu: true,
        adapter: Some(adapter.clone()),
    }
}

/// How `--device` names an adapter: `gpu:N` for the N-th GPU, `wgpu-cpu` for a CPU adapter,
/// `-` for one rrhf does not address (wgpu's `Other` type).
pub fn handles(adapters: &[Adapter]) -> Vec<String> {
    let mut gpus = 0;
    adapters
        .iter()
        .map(|a| {
            if a.is_gpu {
                gpus += 1;
                format!("gpu:{}", gpus - 1)
            } else if a.device_type == "Cpu" {
                "wgpu-cpu".into()
            } else {
                "-".into()
            }
        })
        .collect()
}

/// The devices of this machine as `--device` names them, for messages.
fn device_list(adapters: &[Adapter]) -> String {
    let mut names = vec!["cpu (burn flex backend)".to_string()];
    for (handle, a) in handles(adapters).into_iter().zip(adapters) {
        if handle != "-" {
            names.push(format!("{handle} ({}, {})", a.name, a.backend));
        }
    }
    format!("the devices here are: {}", names.join(", "))
}

/// [`select`], its error under `field` (the option or config field that named the device), and
/// the choice announced on stderr as `device: ...`: what every command that computes does first.
pub fn select_announced(choice: &DeviceChoice, field: &'static str) -> Result<SelectedDevice> {
    let selected = select(choice).context(field)?;
    eprintln!(
        "device: {}{}",
        selected.description,
        crate::parallel::world().tag()
    );
    Ok(selected)
}

/// The device an MPI rank takes for `choice`: `gpu` and `auto` mean the GPU of its local rank
/// (`auto`: the CPU path when this machine has fewer GPUs than ranks); an explicit choice stands.
/// A world of one keeps `choice` as it is.
pub fn for_rank(choice: &DeviceChoice, world: &crate::parallel::World) -> DeviceChoice {
    if world.size == 1 {
        return choice.clone();
    }
    let own_gpu = DeviceChoice::Gpu(Some(world.local_rank));
    match choice {
        DeviceChoice::Gpu(None) => own_gpu,
        DeviceChoice::Auto if adapters().iter().filter(|a| a.is_gpu).count() > world.local_rank => {
            own_gpu
        }
        DeviceChoice::Auto => DeviceChoice::Cpu,
        other => other.clone(),
    }
}

pub fn select(choice: &DeviceChoice) -> Result<SelectedDevice> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu_device()),
        DeviceChoice::Auto => {
            let all = adapters();
            Ok(all
                .iter()
                .find(|a| a.is_gpu)
                .map_or_else(cpu_device, wgpu_device))
        }
        DeviceChoice::Gpu(n) => {
            let all = adapters();
            let gpus: Vec<&Adapter> = all.iter().filter(|a| a.is_gpu).collect();
            let n = n.unwrap_or(0);
            match gpus.get(n) {
                Some(a) => Ok(wgpu_device(a)),
                None if gpus.is_empty() => bail!(
                    "device `{choice}`: wgpu finds no GPU adapter on this machine (see `rrhf \
                     devices`); {}. Use cpu, or wgpu-cpu for a CPU adapter such as lavapipe",
                    device_list(&all)
                ),
                None => bail!(
                    "device `{choice}`: there are {} GPU adapters; {}",
                    gpus.len(),
                    device_list(&all)
                ),
            }
        }
        DeviceChoice::WgpuCpu => {
            let all = adapters();
            match all.iter().find(|a| a.device_type == "Cpu") {
                Some(a) => Ok(wgpu_device(a)),
                None => bail!(
                    "device `wgpu-cpu`: wgpu finds no CPU adapter ({}); on Debian/Ubuntu install \
                     mesa-vulkan-drivers (lavapipe)",
                    device_list(&all)
                ),
            }
        }
    }
}
