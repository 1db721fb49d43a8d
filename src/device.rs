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

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use burn::backend::{WgpuBackend, WgpuDevice, WgpuDeviceKind};
use burn::tensor::Device;

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
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub is_gpu: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub supports_f16: bool,
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
    /// Whether the wgpu runtime (and so the WGSL kernels) runs it.
    pub is_wgpu: bool,
}

impl fmt::Debug for SelectedDevice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.description)
    }
}

pub fn cpu_device() -> SelectedDevice {
    let device = Device::flex();
    SelectedDevice {
        device,
        description: "CPU (burn flex backend)".into(),
        is_wgpu: false,
    }
}

fn wgpu_device(adapter: &Adapter) -> SelectedDevice {
    let device = Device::new(WgpuDevice::new(adapter.kind.clone()).on(adapter.api));
    SelectedDevice {
        device,
        description: format!(
            "{} ({}, {}, wgpu)",
            adapter.name, adapter.device_type, adapter.backend
        ),
        is_wgpu: true,
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
