//! The wgpu side of saeforge: adapter choice, device limits, tensors on the device, and the
//! caches that keep a training step cheap to record (pipelines keyed by shader, entry point
//! and override constants; bind groups and parameter uniforms keyed by what they bind).
//!
//! Kernel launchers in `crate::kernels` record into a `wgpu::CommandEncoder` through
//! [`Gpu::dispatch`]; nothing here reads back unless asked to (`Gpu::read_*`), so a whole
//! training step can be one submission with no stall.

mod context;
mod launch;
mod profile;
mod tensor;

pub use context::{
    AdapterSummary, Adapters, DeviceChoice, Engine, EngineArgs, Gpu, GpuOptions, auto_adapters,
    list_adapters, no_adapter_hint, quiet_headless_probe, select_engine,
};
pub use launch::{Bind, Gate, Kernel, Shader, grid_1d};
pub use profile::DispatchTime;
pub use tensor::{DType, GpuTensor};
