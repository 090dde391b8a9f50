//! Adapter choice and the device. We request the adapter's own limits (not wgpu's
//! conservative defaults) because a 16k-latent encoder is a 32 MiB binding and the
//! defaults stop at 128 MiB per binding / 256 MiB per buffer on some adapters.

use std::sync::Arc;

use crate::{Error, Result};

use super::launch::Caches;

/// What `--device` asked for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware GPU if there is one; else, for training, the faster of the CPU engine and
    /// a software adapter by a calibration cached per machine (`crate::sae::engine_choice`), and
    /// the CPU engine for everything else.
    Auto,
    /// Any wgpu adapter, software ones (lavapipe) included.
    Gpu,
    /// The CPU engine: multithreaded Rust, its dense products through the `gemm` crate,
    /// every stage tested against the plain reference (`src/reference`).
    Cpu,
}

/// The engine a command runs on.
pub enum Engine {
    Gpu(Arc<Gpu>),
    Cpu,
}

impl Engine {
    pub fn name(&self) -> String {
        match self {
            Engine::Gpu(g) => format!("GPU engine on {} ({:?})", g.info.name, g.info.backend),
            Engine::Cpu => "CPU engine".to_string(),
        }
    }
}

/// The device, its queue, its limits and the launch caches.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether shader modules keep wgpu's runtime checks (see [`GpuOptions`]).
    pub checked_shaders: bool,
    /// SAEFORGE_FORCE_PATH=hardware: a software adapter takes hardware kernels and launch
    /// shapes ([`Gpu::is_software`] false; see src/kernels/gemm.rs).
    pub force_hardware: bool,
    /// Why the encoder GEMM does not run on cooperative matrices (None: it does; see
    /// [`GpuOptions::cooperative_matrix`]).
    pub coop_missing: Option<String>,
    pub(crate) caches: Caches,
    /// The first error the device reported outside any error scope (out of memory, a
    /// validation error, device lost), recorded by the callbacks installed in `open`
    /// instead of wgpu's default panic; `check` turns it into an `Error::DeviceFault`.
    fault: Arc<std::sync::Mutex<Option<String>>>,
}

/// How [`Gpu::with_options`] opens a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Create shader modules with wgpu's runtime checks: index and buffer bounds checks,
    /// loop bounding, integer-division guards (`ShaderRuntimeChecks::checked`). Without
    /// them (`unchecked`) the modules are what the WGSL says and nothing more, which costs
    /// less on hardware GPUs; every shader is validated by naga in tests/shaders.rs, and
    /// the kernels clamp their own addresses. The device's robustness features (when wgpu
    /// enables them) still apply either way.
    pub checked_shaders: bool,
    /// Experimental: ask for wgpu's cooperative matrices (tensor cores) and run the
    /// training step's encoder GEMM on them, f16 inputs with f32 accumulation
    /// (`kernels::gemm::coop`), where the adapter has them. SAEFORGE_COOP_MATRIX=1.
    pub cooperative_matrix: bool,
}

impl Default for GpuOptions {
    /// Checked modules in debug builds or when SAEFORGE_CHECKED_SHADERS=1, unchecked in
    /// release builds otherwise. Tests open their device with `checked_shaders: true`.
    fn default() -> Self {
        GpuOptions {
            checked_shaders: cfg!(debug_assertions)
                || std::env::var("SAEFORGE_CHECKED_SHADERS").is_ok_and(|v| v == "1"),
            cooperative_matrix: std::env::var("SAEFORGE_COOP_MATRIX").is_ok_and(|v| v == "1"),
        }
    }
}

/// One line per adapter for `saeforge devices`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: u32,
}

pub fn no_adapter_hint() -> &'static str {
    "no wgpu adapter found: install a GPU driver, or Mesa's software Vulkan driver \
     (`apt-get install mesa-vulkan-drivers`), or run with --device cpu"
}

/// Mesa's Vulkan loader probes Wayland, and libwayland prints "error: XDG_RUNTIME_DIR is
/// invalid or not set" on headless machines. Pointing the variable at the temp folder (no
/// compositor socket there) silences the probe. Call before any other thread starts.
pub fn quiet_headless_probe() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called at program start, before other threads exist.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::from_env().unwrap_or(backends);
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// Vulkan / Metal / DX12 adapters; OpenGL only when there is none of those (GL compute is
/// a last resort, and probing EGL prints noise on headless machines).
fn adapters() -> Vec<wgpu::Adapter> {
    let primary = enumerate(wgpu::Backends::PRIMARY);
    if primary.is_empty() {
        enumerate(wgpu::Backends::SECONDARY)
    } else {
        primary
    }
}

fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
    matches!(
        info.device_type,
        wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu
    )
}

/// The adapters `--device auto` can choose from (after `--adapter`'s filter).
#[derive(Clone, Debug, PartialEq)]
pub enum Adapters {
    /// At least one hardware adapter; its name.
    Hardware(String),
    /// Only software adapters (lavapipe / llvmpipe): the name and driver of the one
    /// `Gpu::new` would open.
    Software { name: String, driver: String },
    /// No wgpu adapter at all.
    None,
}

/// The adapters `--device auto` chooses among, after `--adapter`'s `filter`: a hardware
/// one if any (its name), else a software one (lavapipe / llvmpipe), else none.
pub fn auto_adapters(filter: Option<&str>) -> Adapters {
    let infos: Vec<wgpu::AdapterInfo> = adapters()
        .iter()
        .map(|a| a.get_info())
        .filter(|i| filter.is_none_or(|f| i.name.to_lowercase().contains(&f.to_lowercase())))
        .collect();
    if let Some(i) = infos.iter().find(|i| is_hardware(i)) {
        Adapters::Hardware(i.name.clone())
    } else if let Some(i) = infos.first() {
        Adapters::Software {
            name: i.name.clone(),
            driver: i.driver_info.clone(),
        }
    } else {
        Adapters::None
    }
}

/// Every adapter wgpu can see, with the limits that matter for SAE training.
pub fn list_adapters() -> Vec<AdapterSummary> {
    adapters()
        .iter()
        .map(|a| {
            let info = a.get_info();
            let l = a.limits();
            AdapterSummary {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: info.driver.clone(),
                driver_info: info.driver_info.clone(),
                max_buffer_size: l.max_buffer_size,
                max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                max_compute_workgroup_size_x: l.max_compute_workgroup_size_x,
                max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
                max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            }
        })
        .collect()
}

impl Gpu {
    /// Open a device on the best adapter whose name contains `filter` (case-insensitive).
    /// Hardware adapters are preferred over software ones, Vulkan/Metal/DX12 over GL.
    /// Default [`GpuOptions`].
    pub fn new(filter: Option<&str>) -> Result<Gpu> {
        Self::with_options(filter, GpuOptions::default())
    }

    /// [`Gpu::new`] with explicit options.
    pub fn with_options(filter: Option<&str>, options: GpuOptions) -> Result<Gpu> {
        let mut candidates: Vec<wgpu::Adapter> = adapters()
            .into_iter()
            .filter(|a| a.get_info().backend != wgpu::Backend::Noop)
            .filter(|a| match filter {
                Some(f) => a.get_info().name.to_lowercase().contains(&f.to_lowercase()),
                None => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(Error::Device(match filter {
                Some(f) => format!(
                    "--adapter {f:?}: no adapter's name contains it (see `saeforge devices`)"
                ),
                None => no_adapter_hint().to_string(),
            }));
        }
        candidates.sort_by_key(|a| {
            let info = a.get_info();
            let hw = if is_hardware(&info) { 0 } else { 1 };
            let gl = if info.backend == wgpu::Backend::Gl {
                1
            } else {
                0
            };
            (hw, gl)
        });
        let adapter = candidates.remove(0);
        Self::open(adapter, options)
    }

    fn open(adapter: wgpu::Adapter, options: GpuOptions) -> Result<Gpu> {
        let force_hardware = match std::env::var("SAEFORGE_FORCE_PATH").as_deref() {
            Err(_) | Ok("") => false,
            Ok("hardware") => true,
            Ok(v) => {
                return Err(Error::Device(format!(
                    "SAEFORGE_FORCE_PATH={v}: the only value is `hardware` (or unset)"
                )));
            }
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Subgroup operations when the adapter has them (the GEMM's A sharing on lavapipe,
        // src/kernels/gemm.rs), and timestamp queries for the profiler (src/gpu/profile.rs);
        // nothing else is needed beyond core WebGPU.
        let mut features =
            adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY);
        let coop_missing = coop_missing(&adapter, options.cooperative_matrix);
        let experimental = if coop_missing.is_none() {
            features |= COOP_FEATURES;
            // SAFETY: wgpu's experimental features may be unsound; they are asked for only
            // when the user opts in (SAEFORGE_COOP_MATRIX=1), and only the one kernel
            // `gemm_coop` uses them.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        if options.cooperative_matrix
            && let Some(why) = &coop_missing
        {
            eprintln!("saeforge: SAEFORGE_COOP_MATRIX=1: {why}; the encoder GEMM stays f32");
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("saeforge"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| {
            Error::Device(format!(
                "adapter {}: could not open a device: {e}",
                info.name
            ))
        })?;
        tracing::info!(adapter = %info.name, backend = ?info.backend, "opened device");
        let fault: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let record = |fault: &Arc<std::sync::Mutex<Option<String>>>, msg: String| {
            tracing::debug!("{msg}");
            let mut f = fault.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some(msg);
            }
        };
        let (f, name) = (fault.clone(), info.name.clone());
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let first = |s: &str| s.lines().next().unwrap_or("").trim().to_string();
            let msg = match &e {
                wgpu::Error::OutOfMemory { .. } => format!("adapter {name} ran out of memory"),
                wgpu::Error::Validation { description, .. } => {
                    format!(
                        "adapter {name} reported a validation error (a bug in saeforge): {}",
                        first(description)
                    )
                }
                wgpu::Error::Internal { description, .. } => {
                    format!(
                        "adapter {name} reported an internal error: {}",
                        first(description)
                    )
                }
            };
            record(&f, msg);
        }));
        let (f, name) = (fault.clone(), info.name.clone());
        device.set_device_lost_callback(move |reason, msg| {
            let msg = msg.lines().next().unwrap_or("").trim().to_string();
            record(
                &f,
                format!("the device on adapter {name} was lost ({reason:?}: {msg})"),
            );
        });
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            checked_shaders: options.checked_shaders,
            force_hardware,
            coop_missing,
            caches: Caches::default(),
            fault,
        })
    }

    /// Err(DeviceFault) once the device has reported an error (out of memory, device lost,
    /// a validation error). Cheap: one lock, no wait.
    pub fn check(&self) -> Result<()> {
        match &*self.fault.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(msg) => Err(Error::DeviceFault(msg.clone())),
            None => Ok(()),
        }
    }

    /// Whether the device has subgroup operations (wgpu's SUBGROUP feature) with subgroups
    /// of at least `lanes` invocations.
    pub fn has_subgroups(&self, lanes: u32) -> bool {
        self.device.features().contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size >= lanes
    }

    /// The memory budget of an adapter in bytes, if known: SAEFORGE_DEVICE_MEMORY_MIB, else a
    /// software adapter's host memory available.
    pub fn memory_budget(&self) -> Option<u128> {
        if let Some(mib) = std::env::var("SAEFORGE_DEVICE_MEMORY_MIB")
            .ok()
            .and_then(|v| v.trim().parse::<u128>().ok())
        {
            return Some(mib << 20);
        }
        if self.is_software() {
            return crate::io::available_memory().map(|b| b as u128);
        }
        None
    }

    /// True for a software rasteriser such as lavapipe (llvmpipe), unless
    /// SAEFORGE_FORCE_PATH=hardware asks it to run what a hardware adapter would.
    pub fn is_software(&self) -> bool {
        !is_hardware(&self.info) && !self.force_hardware
    }

    /// Block until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceFault(format!("device poll failed: {e}")))?;
        self.check()
    }

    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    pub fn submit(&self, enc: wgpu::CommandEncoder) {
        self.queue.submit(Some(enc.finish()));
    }
}

/// `--device` and `--adapter`: the engine of the commands that run an SAE (`eval`,
/// `encode`, `steer`, `demo`) and of the toy models (`toy`).
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Engine: auto (hardware GPU if any, else CPU), gpu (any wgpu adapter), cpu.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Pick the adapter whose name contains this (see `saeforge devices`).
    #[arg(long)]
    pub adapter: Option<String>,
}

impl EngineArgs {
    /// The chosen engine and the line that says why (see `select_engine`).
    pub fn select(&self) -> Result<(Engine, String)> {
        select_engine(self.device, self.adapter.as_deref())
    }
}

/// Resolve `--device` / `--adapter` into an engine, with one line saying which and why.
pub fn select_engine(choice: DeviceChoice, filter: Option<&str>) -> Result<(Engine, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Engine::Cpu, "CPU engine (--device cpu)".to_string())),
        DeviceChoice::Gpu => {
            let gpu = Gpu::new(filter)?;
            let why = format!(
                "GPU engine on {} ({:?}, {:?}) (--device gpu)",
                gpu.info.name, gpu.info.backend, gpu.info.device_type
            );
            Ok((Engine::Gpu(Arc::new(gpu)), why))
        }
        DeviceChoice::Auto => {
            let hw = adapters().into_iter().any(|a| {
                let i = a.get_info();
                is_hardware(&i)
                    && filter.is_none_or(|f| i.name.to_lowercase().contains(&f.to_lowercase()))
            });
            if hw {
                let gpu = Gpu::new(filter)?;
                let why = format!(
                    "GPU engine on {} ({:?}) (--device auto found a hardware adapter)",
                    gpu.info.name, gpu.info.backend
                );
                Ok((Engine::Gpu(Arc::new(gpu)), why))
            } else {
                Ok((
                    Engine::Cpu,
                    "CPU engine (--device auto: no hardware GPU adapter; outside training \
                     the CPU engine is used then, --device gpu takes a software one such as \
                     lavapipe)"
                        .to_string(),
                ))
            }
        }
    }
}

/// The device features `gemm_coop` needs.
const COOP_FEATURES: wgpu::Features =
    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX.union(wgpu::Features::SHADER_F16);

/// Why `adapter` cannot run `gemm_coop` (None: it can): not asked for, no cooperative
/// matrices or f16, no 16x16x16 f16 x f16 + f32 configuration, or subgroups that are not 32
/// lanes (the kernel's workgroup is one subgroup of 32).
fn coop_missing(adapter: &wgpu::Adapter, wanted: bool) -> Option<String> {
    let info = adapter.get_info();
    let f16_16 = |p: &wgpu::CooperativeMatrixProperties| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    };
    if !wanted {
        Some("not asked for (SAEFORGE_COOP_MATRIX=1)".into())
    } else if !adapter.features().contains(COOP_FEATURES) {
        Some(format!(
            "adapter {} has no cooperative matrices with f16 (wgpu features EXPERIMENTAL_COOPERATIVE_MATRIX and SHADER_F16)",
            info.name
        ))
    } else if !adapter.cooperative_matrix_properties().iter().any(f16_16) {
        Some(format!(
            "adapter {} has no 16x16x16 cooperative matrix of f16 inputs and f32 accumulators",
            info.name
        ))
    } else if (info.subgroup_min_size, info.subgroup_max_size) != (32, 32) {
        // The 32-invocation workgroup must be exactly one subgroup (the matrix operations
        // are subgroup-scoped); where the driver picks the size (8-32, 32-64), wgpu cannot
        // ask for 32.
        Some(format!(
            "adapter {} runs subgroups of {}-{} lanes, not always 32",
            info.name, info.subgroup_min_size, info.subgroup_max_size
        ))
    } else {
        None
    }
}
