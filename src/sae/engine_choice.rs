//! `--device auto` for training: which engine trains this run fastest on this machine.
//!
//! A hardware adapter (discrete, integrated or virtual GPU) always wins: its GEMM is one to
//! two orders of magnitude faster than anything the CPU does. With no adapter at all the CPU
//! engine is the only choice. The close call is a software adapter (Mesa's lavapipe /
//! llvmpipe): it runs the GPU kernels on the same CPU cores as the CPU engine, and which of
//! the two is faster depends on the shape (lavapipe pays a fixed cost per dispatch, the
//! CPU engine's products go through the `gemm` crate). There, each engine's step time is
//! modelled as
//!
//! ```text
//! t(B, d, n) = c + w_gemm * P * 2 B d n + w_pre * B n + w_par * d n
//! ```
//!
//! (a fixed cost per step, the step's P dense products of the encoder's size: 1 for the
//! top-k family, 5 for relu / jumprelu's dense path, see [`products`]; the
//! per-pre-activation work: the top-k scan and the rest, and the per-parameter work: the
//! optimizer's passes over W_enc and W_dec). Per engine, `w_gemm` is the engine's own
//! encoder product timed alone at a mid-sized shape ([`GEMM_PROBE`], [`GPU_GEMM_PROBE`]),
//! and `c`, `w_pre`, `w_par` are fitted to three short probes of real training steps of
//! the run's architecture on random data ([`calibrate`]), cached per architecture: a relu
//! step is not a topk step. The product is timed on its own because in steps small enough to
//! probe quickly it is a few percent of the time:
//! fitted from the steps, its weight came out anywhere from 0 to the truth on lavapipe, and
//! a run at d 2048 -> 16384 was then predicted 2.8 s a step on lavapipe (it takes 6.7 s)
//! against 4.7 s on the CPU engine (it takes 2.2 s), and went to the slower engine.
//!
//! The calibration runs in two stages, the second only when a run needs it: the products
//! and the CPU engine's probe steps first (about 0.35-0.45 s on this project's 2-core
//! machine), the GPU engine's probe steps (another ~0.65 s there, lavapipe compiling its
//! pipelines) only for a shape where the first stage leaves the choice open. A GPU step
//! costs at least its encoder product, so where the CPU engine's whole modelled step beats
//! the adapter's product alone ([`Calibration::decided_without_gpu_steps`]), lavapipe's
//! other terms cannot change the answer. At the wide shapes, where a run's own start-up is
//! longest, that is the case, and their first run on a machine starts ~0.65 s sooner.
//!
//! The fit is cached per machine under the user's cache folder
//! (`$SAEFORGE_CACHE_DIR`, else `$XDG_CACHE_HOME/saeforge`, else `~/.cache/saeforge`), in a
//! file keyed by the CPU, the adapter and saeforge's version, written atomically under the
//! folder's lock. A missing, unreadable or corrupt file, or one for another key, is
//! recalibrated; a cache that cannot be written only costs the next run a calibration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::gpu::{Adapters, Engine, Gpu};
use crate::reference::gemm::GemmSpec;
use crate::sae::cpu::CpuEngine;
use crate::sae::engine::{StepEngine, TrainState, selects_topk};
use crate::sae::gpu::GpuEngine;
use crate::sae::{Arch, SaeParams, TrainArgs, TrainConfig};

/// The shape of a run, as the cost model sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub batch: usize,
    pub d: usize,
    pub n: usize,
}

impl Shape {
    pub fn of(cfg: &TrainConfig) -> Shape {
        Shape {
            batch: cfg.batch,
            d: cfg.d_in,
            n: cfg.d_sae,
        }
    }
}

/// One engine's step time: `c + w_gemm * products * 2 B d n + w_pre * B n + w_par * d n`
/// seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub c: f64,
    pub w_gemm: f64,
    /// The (B, d, n) products of a step ([`products`]).
    pub products: f64,
    pub w_pre: f64,
    pub w_par: f64,
}

/// The dense (B, d, n) products of a step of `arch` on fresh data: the encoder's alone for
/// the top-k family (their decode and backward are sparse); five for relu / jumprelu, whose
/// early steps (and the probes': about half the latents fire on random data) take the dense
/// path: encode, decode, dz = dy W_dec^T, dW_dec = z^T dy, dW_enc = x^T dpre.
pub fn products(arch: Arch) -> f64 {
    if selects_topk(arch) { 1.0 } else { 5.0 }
}

fn gemm_flops(s: &Shape) -> f64 {
    2.0 * (s.batch * s.d * s.n) as f64
}

impl Fit {
    /// From the product's seconds per flop `w_gemm` (measured alone), the step's
    /// `products` and three probe step times (the [`PROBES`]: a tiny shape, one heavy in
    /// pre-activations, one heavy in parameters): the probe times less the products' share
    /// give three linear equations in c, w_pre and w_par, solved exactly (Cramer's rule).
    /// Negative terms (noise) are clamped to 0.
    pub fn from_probes(w_gemm: f64, products: f64, probes: &[(Shape, f64); 3]) -> Fit {
        let w_gemm = w_gemm.max(0.0);
        // Rows [1, B n, d n | t - w_gemm products 2 B d n].
        let rows = probes.map(|(s, t)| {
            let (pre, par) = ((s.batch * s.n) as f64, (s.d * s.n) as f64);
            [1.0, pre, par, t - w_gemm * products * gemm_flops(&s)]
        });
        let a = rows.map(|r| [r[0], r[1], r[2]]);
        let det = |m: [[f64; 3]; 3]| {
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        };
        // Unknown j: the determinant with column j replaced by the right-hand side.
        let solve = |j: usize| {
            let mut m = a;
            for (row, r) in m.iter_mut().zip(&rows) {
                row[j] = r[3];
            }
            let v = det(m) / det(a);
            if v.is_finite() { v.max(0.0) } else { 0.0 }
        };
        Fit {
            c: solve(0),
            w_gemm,
            products,
            w_pre: solve(1),
            w_par: solve(2),
        }
    }

    pub fn step_s(&self, s: &Shape) -> f64 {
        self.c
            + self.w_gemm * self.products * gemm_flops(s)
            + self.w_pre * (s.batch * s.n) as f64
            + self.w_par * (s.d * s.n) as f64
    }

    pub fn tokens_per_s(&self, s: &Shape) -> f64 {
        s.batch as f64 / self.step_s(s).max(1e-12)
    }

    fn is_sane(&self) -> bool {
        [self.c, self.w_gemm, self.w_pre, self.w_par]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
            && self.w_gemm > 0.0
            && self.products >= 1.0
    }
}

/// The cached calibration of one machine for one architecture: the CPU engine's fit, the
/// GPU engine's product alone, the GPU engine's fit once a run needed it, and what they
/// were measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub key: String,
    /// The architecture whose steps the probes timed (a file per architecture).
    pub arch: Arch,
    pub cpu: Fit,
    /// Seconds per flop of the GPU engine's encoder product alone, at [`GPU_GEMM_PROBE`].
    pub gpu_gemm: f64,
    /// The GPU engine's fit (its `w_gemm` is `gpu_gemm`: a file where they differ is
    /// recalibrated); None until a run's shape needed its probe steps (see
    /// [`Calibration::decided_without_gpu_steps`]).
    pub gpu: Option<Fit>,
    /// Seconds since the epoch when it was measured.
    pub measured_at: u64,
}

/// How much faster than at [`GPU_GEMM_PROBE`] the GPU engine's product is allowed to run at a
/// run's shape before the first stage's bound may decide. On this project's 2-core machine
/// lavapipe's product ran at 58-66 GFLOP/s at the probe and 45-55 at 4096 x 512 x 16384
/// (`cargo bench --bench auto`, `--bench train`): the probe is the faster, so the bound is
/// loose already; the margin leaves room for a shape where the product runs faster still.
pub const GPU_PRODUCT_MARGIN: f64 = 1.5;

impl Calibration {
    /// The most tokens per second the GPU engine can train at `shape`: its step's
    /// [`products`] alone, run [`GPU_PRODUCT_MARGIN`] times faster than measured.
    pub fn gpu_bound_tokens_per_s(&self, shape: &Shape) -> f64 {
        let products = products(self.arch);
        let product_s = self.gpu_gemm * products * gemm_flops(shape) / GPU_PRODUCT_MARGIN;
        shape.batch as f64 / product_s.max(1e-12)
    }

    /// Whether the CPU engine wins at `shape` whatever the GPU engine's steps cost beyond
    /// its product: its modelled tokens per second above the GPU engine's bound.
    pub fn decided_without_gpu_steps(&self, shape: &Shape) -> bool {
        self.cpu.tokens_per_s(shape) > self.gpu_bound_tokens_per_s(shape)
    }

    /// Whether a run at `shape` needs the GPU engine's probe steps timed first.
    pub fn needs_gpu_steps(&self, shape: &Shape) -> bool {
        self.gpu.is_none() && !self.decided_without_gpu_steps(shape)
    }

    fn is_sane(&self) -> bool {
        let p = products(self.arch);
        self.cpu.is_sane()
            && self.cpu.products == p
            && self.gpu.is_none_or(|g| g.products == p)
            && self.gpu_gemm.is_finite()
            && self.gpu_gemm > 0.0
            && self
                .gpu
                .is_none_or(|g| g.is_sane() && g.w_gemm == self.gpu_gemm)
    }
}

/// What `--device auto` picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Cpu,
    Gpu,
}

/// The pick and the one line that says why.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub pick: Pick,
    pub why: String,
}

fn kilo(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// The choice itself, a pure function of what is present and measured: a hardware adapter
/// wins, no adapter leaves the CPU engine, a software adapter wins only when the calibrated
/// model says it is faster at this shape (without a calibration: the CPU engine).
pub fn choose(adapters: &Adapters, shape: &Shape, cal: Option<&Calibration>) -> Choice {
    match adapters {
        Adapters::Hardware(name) => Choice {
            pick: Pick::Gpu,
            why: format!("device auto: GPU engine on {name}: hardware adapter"),
        },
        Adapters::None => Choice {
            pick: Pick::Cpu,
            why: "device auto: CPU engine: no wgpu adapter".to_string(),
        },
        Adapters::Software { name, .. } => match cal {
            None => Choice {
                pick: Pick::Cpu,
                why: format!(
                    "device auto: CPU engine over {name}: software adapter, not calibrated"
                ),
            },
            Some(cal) => choose_calibrated(name, shape, cal),
        },
    }
}

/// [`choose`] on a software adapter with a calibration: the two fits, or the CPU engine's
/// fit against the GPU engine's bound while its steps are not timed.
fn choose_calibrated(name: &str, shape: &Shape, cal: &Calibration) -> Choice {
    let (arch, Shape { batch, d, n }) = (cal.arch.name(), shape);
    let shape_s = format!("{arch} d {d} -> {n}, batch {batch}");
    let cpu = cal.cpu.tokens_per_s(shape);
    let Some(gpu_fit) = &cal.gpu else {
        let why = if cal.decided_without_gpu_steps(shape) {
            format!(
                "device auto: CPU engine (est. {} tok/s) over {name} (at most {} tok/s: its \
                 {} alone) at {shape_s}: software adapter",
                kilo(cpu),
                kilo(cal.gpu_bound_tokens_per_s(shape)),
                match products(cal.arch) {
                    p if p > 1.0 => format!("{p} products"),
                    _ => "encoder product".to_string(),
                }
            )
        } else {
            format!("device auto: CPU engine over {name}: software adapter, its steps not timed")
        };
        return Choice {
            pick: Pick::Cpu,
            why,
        };
    };
    let gpu = gpu_fit.tokens_per_s(shape);
    if gpu > cpu {
        Choice {
            pick: Pick::Gpu,
            why: format!(
                "device auto: GPU engine on {name} (est. {} tok/s) over the CPU engine (est. \
                 {} tok/s) at {shape_s}: software adapter, faster at this shape",
                kilo(gpu),
                kilo(cpu)
            ),
        }
    } else {
        Choice {
            pick: Pick::Cpu,
            why: format!(
                "device auto: CPU engine (est. {} tok/s) over {name} (est. {} tok/s) at \
                 {shape_s}: software adapter",
                kilo(cpu),
                kilo(gpu)
            ),
        }
    }
}

/// The folder of the calibration cache (see the module's documentation).
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("SAEFORGE_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("saeforge")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("saeforge")))
}

/// The CPU's model name and thread count (Linux: /proc/cpuinfo; elsewhere the architecture).
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model} x{threads}")
}

/// The running executable's size and modification time: a rebuilt saeforge (whose engines
/// may have changed speed) recalibrates.
fn build_identity() -> String {
    std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            format!("{} bytes, {t}", m.len())
        })
        .unwrap_or_default()
}

/// The cache key of a machine and an architecture: CPU, adapter (name and driver), the
/// architecture the probes train, saeforge's version and build.
pub fn cache_key(adapter: &str, arch: Arch) -> String {
    format!(
        "cpu {} | adapter {adapter} | arch {} | saeforge {} ({})",
        cpu_description(),
        arch.name(),
        env!("CARGO_PKG_VERSION"),
        build_identity()
    )
}

/// The calibration file for `key` in `dir`.
pub fn cache_file(dir: &Path, key: &str) -> PathBuf {
    let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    dir.join(format!("engines-{h:016x}.json"))
}

/// The cached calibration at `path` if it is readable, parses, is for `key` and is sane;
/// None otherwise (the caller recalibrates). Never panics.
pub fn load(path: &Path, key: &str) -> Option<Calibration> {
    let bytes = std::fs::read(path).ok()?;
    let cal: Calibration = serde_json::from_slice(&bytes).ok()?;
    (cal.key == key && cal.is_sane()).then_some(cal)
}

/// Write `cal` to `path` atomically, and remove the calibrations of former builds for the
/// same CPU, adapter and architecture beside it (best effort).
pub fn store(path: &Path, cal: &Calibration) -> Result<()> {
    let json = serde_json::to_vec_pretty(cal).expect("plain data");
    crate::io::write_atomic(path, &json)?;
    let machine = |key: &str| key.split(" | saeforge ").next().unwrap_or("").to_string();
    let here = machine(&cal.key);
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p == path || !name.starts_with("engines-") || !name.ends_with(".json") {
            continue;
        }
        let old: Option<Calibration> = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if old.is_some_and(|o| machine(&o.key) == here) {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

/// The three probe shapes (see [`Fit::from_probes`]): small enough that the whole
/// calibration takes a few seconds on lavapipe. The third is heavy in parameters (2.1 M
/// per matrix, a small batch): a probe that differed from the second in d alone (512 x 32
/// -> 2048 against 512 x 384 -> 2048, 0.8 M) left lavapipe's per-parameter weight 0 in
/// every calibration, and a batch of 64 at d 512 -> 16384, 158 ms a step there, was then
/// predicted at 60 ms and sent to lavapipe instead of the CPU engine (68 ms).
pub const PROBES: [Shape; 3] = [
    Shape {
        batch: 256,
        d: 32,
        n: 256,
    },
    Shape {
        batch: 512,
        d: 32,
        n: 2048,
    },
    Shape {
        batch: 64,
        d: 512,
        n: 4096,
    },
];

/// A training configuration of `arch` at shape `s` with this `k` where the architecture
/// takes one (the probes take k 16; `benches/auto.rs` times k 32), matryoshka's widths n /
/// 16, n / 4, n (as `tools/speed` trains it), otherwise saeforge's defaults.
pub fn probe_config(s: &Shape, arch: Arch, k: usize) -> Result<TrainConfig> {
    let widths = (arch == Arch::Matryoshka).then(|| vec![s.n / 16, s.n / 4, s.n]);
    let args = TrainArgs {
        out: Some("unused".into()),
        arch: Some(arch),
        d_sae: Some(s.n),
        k: selects_topk(arch).then_some(k),
        matryoshka_widths: widths,
        batch: Some(s.batch),
        steps: Some(1000),
        ..Default::default()
    };
    TrainConfig::resolve(&args, s.d, 1 << 30)
}

/// Seconds per step of `engine` at `cfg` ([`median_s`]: one warm-up step for pipelines and
/// allocation, then the median of three timed steps, each waited for).
fn time_steps(engine: &mut dyn StepEngine, cfg: &TrainConfig, x: &[f32]) -> Result<f64> {
    median_s(|| {
        engine.step(cfg, x, cfg.batch)?;
        engine.take_metrics()?;
        Ok(())
    })
}

/// The shape the CPU engine's encoder product is timed at: 4.3 GFLOP, ~0.023 s on this
/// project's 2-core machine, where the `gemm` crate runs near its pace at training shapes
/// (182-199 GFLOP/s here, against 160-195 at 4096 x 512 x 16384); at 256 rows it ran at
/// only 101-140 (packing a panel of B costs the same for fewer rows).
pub const GEMM_PROBE: Shape = Shape {
    batch: 1024,
    d: 512,
    n: 4096,
};

/// The shape the GPU engine's product is timed at on a software adapter: a quarter of
/// [`GEMM_PROBE`]'s rows, ~0.02 s on lavapipe, whose GEMM runs at the same pace from 256
/// rows up (2026-12-08 on this project's machine, three empty-cache runs each: 58-63
/// GFLOP/s at 256 rows, 61-65 at 512 and 1024; 45-55 at 4096 x 512 x 16384). Timed at
/// 1024 rows it was ~0.3 s of a first run's start-up.
pub const GPU_GEMM_PROBE: Shape = Shape {
    batch: 256,
    ..GEMM_PROBE
};

/// Seconds per call of `f`: the median of three after a warm-up (pipelines, first touch).
fn median_s(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[1])
}

/// Seconds per flop of the encoder product on the CPU engine (`crate::blas`) at
/// [`GEMM_PROBE`] and on `gpu` (`kernels::gemm`, the kernel the GPU engine picks there) at
/// [`GPU_GEMM_PROBE`] (the first rows of the same operands).
fn gemm_s_per_flop(gpu: &Gpu, rng: &mut ChaCha8Rng) -> Result<(f64, f64)> {
    let Shape { batch: m, d: k, n } = GEMM_PROBE;
    let mut draw =
        |len: usize| -> Vec<f32> { (0..len).map(|_| StandardNormal.sample(rng)).collect() };
    let (a, b, bias) = (draw(m * k), draw(k * n), draw(n));
    let mut c = vec![0.0f32; m * n];
    let spec = GemmSpec::nn(m, n, k);
    let cpu = median_s(|| {
        crate::blas::gemm(&spec, &a, &b, Some(&bias), &mut c);
        Ok(())
    })? / gemm_flops(&GEMM_PROBE);
    let gm = GPU_GEMM_PROBE.batch;
    let ga = gpu.upload("a", &[gm, k], &a[..gm * k])?;
    let (gb, gbias) = (
        gpu.upload("b", &[k, n], &b)?,
        gpu.upload("bias", &[n], &bias)?,
    );
    let (gc, gspec) = (gpu.zeros("c", &[gm, n])?, GemmSpec::nn(gm, n, k));
    let on_gpu = median_s(|| {
        let mut enc = gpu.encoder();
        crate::kernels::gemm::gemm(gpu, &mut enc, &gspec, &ga, &gb, Some(&gbias), &gc)?;
        gpu.submit(enc);
        gpu.wait()
    })? / gemm_flops(&GPU_GEMM_PROBE);
    Ok((cpu, on_gpu))
}

/// The probe steps' random data and initial state: the same for both engines.
fn probe_inputs(i: usize, s: &Shape, arch: Arch) -> Result<(TrainConfig, Vec<f32>, TrainState)> {
    let cfg = probe_config(s, arch, 16)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed + i as u64);
    let x: Vec<f32> = (0..s.batch * s.d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let st = TrainState::new(SaeParams::init(&cfg, &x));
    Ok((cfg, x, st))
}

/// The calibration's first stage: both engines' encoder products alone ([`GEMM_PROBE`]),
/// then the CPU engine's training steps of `arch` on random data at [`PROBES`].
pub fn calibrate_first(gpu: &Gpu, key: &str, arch: Arch) -> Result<Calibration> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let (cpu_gemm, gpu_gemm) = gemm_s_per_flop(gpu, &mut rng)?;
    let mut cpu_t = [(PROBES[0], 0.0); 3];
    for (i, s) in PROBES.iter().enumerate() {
        let (cfg, x, st) = probe_inputs(i, s, arch)?;
        cpu_t[i] = (*s, time_steps(&mut CpuEngine::new(st), &cfg, &x)?);
    }
    Ok(Calibration {
        key: key.to_string(),
        arch,
        cpu: Fit::from_probes(cpu_gemm, products(arch), &cpu_t),
        gpu_gemm,
        gpu: None,
        measured_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// The calibration's second stage: the GPU engine's training steps at [`PROBES`], on the
/// same data as the CPU engine's, fitted with the product weight of the first stage.
pub fn calibrate_gpu_steps(gpu: &Arc<Gpu>, cal: &mut Calibration) -> Result<()> {
    let mut gpu_t = [(PROBES[0], 0.0); 3];
    for (i, s) in PROBES.iter().enumerate() {
        let (cfg, x, st) = probe_inputs(i, s, cal.arch)?;
        let mut g = GpuEngine::new(gpu.clone(), &cfg, &st)?;
        gpu_t[i] = (*s, time_steps(&mut g, &cfg, &x)?);
    }
    cal.gpu = Some(Fit::from_probes(cal.gpu_gemm, products(cal.arch), &gpu_t));
    Ok(())
}

/// Both stages: what `benches/auto.rs` compares with measured steps.
pub fn calibrate(gpu: &Arc<Gpu>, key: &str, arch: Arch) -> Result<Calibration> {
    let mut cal = calibrate_first(gpu, key, arch)?;
    calibrate_gpu_steps(gpu, &mut cal)?;
    Ok(cal)
}

/// The cached calibration for the software adapter `name` / `driver`, completed with the
/// GPU engine's steps when `shape` needs them, or a fresh one (opening the device into
/// `opened`; stored when the cache folder can be written; a note on stderr while it runs).
/// None when the device cannot be opened or the first stage fails; when the second fails,
/// the first stage's (cached), which [`choose`] reads as the GPU engine's steps not timed.
fn calibration_for(
    name: &str,
    driver: &str,
    filter: Option<&str>,
    (shape, arch): (&Shape, Arch),
    opened: &mut Option<Arc<Gpu>>,
) -> Option<Calibration> {
    let key = cache_key(&format!("{name} {driver}"), arch);
    let dir = cache_dir();
    let path = dir.as_ref().map(|d| cache_file(d, &key));
    let cached = || path.as_ref().and_then(|p| load(p, &key));
    if let Some(cal) = cached().filter(|c| !c.needs_gpu_steps(shape)) {
        return Some(cal);
    }
    // Under the cache folder's lock: another process may have just written it.
    let lock = dir
        .as_ref()
        .and_then(|d| crate::lock::acquire(d, "engine cache").ok());
    let mut found = cached();
    if let Some(cal) = found.take_if(|c| !c.needs_gpu_steps(shape)) {
        return Some(cal);
    }
    let gpu = Arc::new(Gpu::new(filter).ok()?);
    *opened = Some(gpu.clone());
    let place = path
        .as_ref()
        .map_or("nowhere: no cache folder".into(), |p| {
            p.display().to_string()
        });
    let fail = |e: crate::Error| {
        eprintln!("saeforge: --device auto: calibration failed ({e}); using the CPU engine");
    };
    let save = |cal: &Calibration| {
        if let (Some(_), Some(p)) = (&lock, &path)
            && let Err(e) = store(p, cal)
        {
            eprintln!("saeforge: --device auto: calibration not cached ({e})");
        }
    };
    let mut cal = match found {
        Some(cal) => cal,
        None => {
            eprintln!(
                "saeforge: --device auto: timing both engines on {name} (about a second, once \
                 per machine; cached in {place})"
            );
            let cal = calibrate_first(&gpu, &key, arch).map_err(fail).ok()?;
            save(&cal);
            cal
        }
    };
    if cal.needs_gpu_steps(shape) {
        eprintln!(
            "saeforge: --device auto: timing the GPU engine's steps on {name} (this shape needs \
             them; once per machine; cached in {place})"
        );
        // On failure the first stage stays cached, and `choose` says the steps are not timed.
        match calibrate_gpu_steps(&gpu, &mut cal) {
            Ok(()) => save(&cal),
            Err(e) => fail(e),
        }
    }
    Some(cal)
}

/// `--device auto` for a training run: [`choose`] on the adapters present (after
/// `filter`), with the calibrated model when the only adapters are software ones. A GPU
/// pick that the run does not fit (its bindings) falls back to the CPU engine.
pub fn select_for_training(filter: Option<&str>, cfg: &TrainConfig) -> Result<(Engine, String)> {
    let adapters = crate::gpu::auto_adapters(filter);
    let shape = Shape::of(cfg);
    let mut opened = None;
    let cal = match &adapters {
        Adapters::Software { name, driver } => {
            calibration_for(name, driver, filter, (&shape, cfg.arch), &mut opened)
        }
        _ => None,
    };
    let choice = choose(&adapters, &shape, cal.as_ref());
    match choice.pick {
        Pick::Cpu => Ok((Engine::Cpu, choice.why)),
        Pick::Gpu => {
            let gpu = match opened {
                Some(g) => g,
                None => Arc::new(Gpu::new(filter)?),
            };
            if let Err(e) = GpuEngine::check_capacity(&gpu, cfg) {
                let why = format!("device auto: CPU engine: the run does not fit the GPU ({e})");
                return Ok((Engine::Cpu, why));
            }
            Ok((Engine::Gpu(gpu), choice.why))
        }
    }
}

/// The engine of a training run: [`select_for_training`] for `--device auto`, else as
/// [`crate::gpu::select_engine`].
pub fn select_training_engine(
    choice: crate::gpu::DeviceChoice,
    filter: Option<&str>,
    cfg: &TrainConfig,
) -> Result<(Engine, String)> {
    match choice {
        crate::gpu::DeviceChoice::Auto => select_for_training(filter, cfg),
        _ => crate::gpu::select_engine(choice, filter),
    }
}

#[cfg(test)]
mod tests;
