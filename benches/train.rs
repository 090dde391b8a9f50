//! Whole training steps against the one product they cannot avoid (the encoder GEMM),
//! for every architecture, on the wgpu adapter and on the CPU engine.
//!
//!     cargo bench --bench train [-- FILTER ...]
//!
//! FILTER words keep the rows whose engine ("gpu", "cpu") or architecture name contains one
//! of them (e.g. `-- gpu topk`: every GPU row and every topk row). Environment:
//!   SAEFORGE_ADAPTER=substring   pick the adapter
//!   SAEFORGE_BENCH_BATCH=4096    rows per step (default 4096, saeforge's default batch; the
//!                                GPU engine splits it into chunks when its (batch, 16384)
//!                                pre-activations exceed one storage binding, as on lavapipe,
//!                                and the GEMM is timed in the same chunks; batchtopk
//!                                encodes every chunk, then selects over the whole batch)
//!   SAEFORGE_BENCH_STEPS=5       timed steps per row (CPU engine: at most 2)
//!   SAEFORGE_BENCH_PROFILE=1     also time each phase of a step (GPU: each phase submitted
//!                                and waited for on its own; both engines: median of 3)
//!   SAEFORGE_BENCH_PROFILE=2     ... and each dispatch (summed per entry point)
//!
//! Shape: d_in 512, d_sae 16384; topk and batchtopk at k 32 (AuxK k_aux 256), relu and
//! jumprelu with the state set so that L0 is about 48 (see `sparse_state`). Inputs are
//! Gaussian rows, already in memory (benches/loader.rs measures the loader and the same
//! step fed by it). Each row: warm-up steps (2 on the GPU engine: pipeline compilation;
//! 1 on the CPU engine: the first touch of its buffers and of the GEMM's output), then the
//! median over the timed steps of (step + wait for the device); the encoder GEMM of the
//! same shape (B x 512 times 512 x 16384 + bias, on the kernel the engine uses) is timed
//! the same way, in turn with the steps (step, GEMM, step, ...: `time_pair`), so that both
//! medians see the same stretch of the machine's load. step_over_gemm = step / encoder GEMM.
//!
//! The machine may be shared: the report records the load average before and after, and
//! for every timing the CPU time this process's threads used (lavapipe runs the shaders
//! on the process's own threads), whose ratio (step_over_gemm_cpu) moves far less with
//! other processes' load than the wall clock. A row "topk_dead" repeats topk with a
//! quarter of the latents dead, so that AuxK has work (a fresh state has none dead; see
//! `with_dead`).
//!
//! Prints a table and writes target/bench/train.json (under CARGO_TARGET_DIR when set):
//! {"adapter": .., "rows": [{"engine", "arch", "batch", "step_ms", "encoder_gemm_ms",
//! "step_over_gemm", "tokens_per_s", "l0", ...}], ...}.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::bench;
use saeforge::kernels::gemm::{self, GemmSpec};
use saeforge::reference;
use saeforge::sae::cpu::{CpuEngine, step_marked};
use saeforge::sae::engine::{StepEngine, TrainState};
use saeforge::sae::gpu::GpuEngine;
use saeforge::sae::train::summarize;
use saeforge::sae::{Arch, SaeParams, TrainArgs, TrainConfig};
use serde_json::json;

/// d_in and d_sae: 512 and 16384 unless SAEFORGE_BENCH_D / SAEFORGE_BENCH_N say otherwise
/// (tools/gpu-check adds 4096 -> 65536 on a GPU that holds it).
static D_IN: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| env_usize("SAEFORGE_BENCH_D", 512));
static D_SAE: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| env_usize("SAEFORGE_BENCH_N", 16384));
const K: usize = 32;
/// The L0 the relu / jumprelu states are set to.
const TARGET_L0: f64 = 48.0;
const WARMUP: usize = 2;

#[path = "train/timing.rs"]
mod timing;
use timing::{Phases, cpu_ns, lap, loadavg, median_phases, time, time_pair};

fn config(arch: Arch, batch: usize) -> TrainConfig {
    let args = TrainArgs {
        out: Some("unused".into()),
        arch: Some(arch),
        d_sae: Some(*D_SAE),
        k: Some(K),
        batch: Some(batch),
        steps: Some(100_000),
        ..Default::default()
    };
    TrainConfig::resolve(&args, *D_IN, 1 << 30).expect("bench config")
}

fn gaussian(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.sample(StandardNormal)).collect()
}

/// (x - b_dec) W_enc (+ bias) of the first `rows` rows of x, by the reference.
fn pre_activations(p: &SaeParams, x: &[f32], rows: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let (d, n) = (*D_IN, *D_SAE);
    let mut xc = vec![0.0f32; rows * d];
    reference::reduce::sub_row(&x[..rows * d], &p.b_dec, rows, d, &mut xc);
    let mut pre = vec![0.0f32; rows * n];
    reference::gemm::gemm(&GemmSpec::nn(rows, n, d), &xc, &p.w_enc, bias, &mut pre);
    pre
}

/// The initial state for `arch`; relu and jumprelu are shifted so that about TARGET_L0
/// latents per row fire: the (1 - TARGET_L0 / n) quantile t of the pre-activations of
/// 256 sample rows becomes b_enc = -t (relu) or the threshold t (jumprelu). That is the
/// regime the sparse step is for (a trained SAE); a fresh relu SAE fires on half the
/// latents and takes the dense path.
fn sparse_state(cfg: &TrainConfig, sample: &[f32]) -> TrainState {
    let mut p = SaeParams::init(cfg, sample);
    if matches!(cfg.arch, Arch::Relu | Arch::Jumprelu) {
        let mut pre = pre_activations(&p, sample, 256, None);
        pre.sort_by(f32::total_cmp);
        let q = ((1.0 - TARGET_L0 / *D_SAE as f64) * pre.len() as f64) as usize;
        let t = pre[q.min(pre.len() - 1)].max(1e-6);
        if cfg.arch == Arch::Relu {
            p.b_enc.iter_mut().for_each(|b| *b = -t);
        } else {
            p.log_threshold.iter_mut().for_each(|l| *l = t.ln());
        }
    }
    TrainState::new(p)
}

static PROFILE_DISPATCHES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

struct Row {
    engine: &'static str,
    arch: String,
    batch: usize,
    /// Chunks the GPU engine split the batch into (pre-activations over one binding).
    chunks: usize,
    step: (f64, Option<f64>),
    gemm: (f64, Option<f64>),
    l0: f64,
    dead_fraction: f64,
    phases: Phases,
}

impl Row {
    fn counted(&self) -> (f64, f64, f64) {
        let arch = match self.arch.as_str() {
            "relu" => Arch::Relu,
            _ => Arch::Topk,
        };
        counted(arch, self.batch, self.l0)
    }

    fn json(&self) -> serde_json::Value {
        let ratio_cpu = self.step.1.zip(self.gemm.1).map(|(s, g)| s / g);
        json!({
            "engine": self.engine,
            "arch": self.arch,
            "batch": self.batch,
            "chunks": self.chunks,
            "step_ms": self.step.0 * 1e3,
            "encoder_gemm_ms": self.gemm.0 * 1e3,
            "step_over_gemm": self.step.0 / self.gemm.0,
            "tokens_per_s": self.batch as f64 / self.step.0,
            "l0": self.l0,
            "dead_fraction": self.dead_fraction,
            "step_cpu_ms": self.step.1.map(|c| c * 1e3),
            "encoder_gemm_cpu_ms": self.gemm.1.map(|c| c * 1e3),
            "step_over_gemm_cpu": ratio_cpu,
            "encoder_gemm_gflops": GemmSpec::nn(self.batch, *D_SAE, *D_IN).flops() / self.gemm.0 / 1e9,
            "counted_encoder_gflop": self.counted().0 / 1e9,
            "counted_other_gflop": self.counted().1 / 1e9,
            "counted_mb": self.counted().2 / 1e6,
            "phases": self.phases.iter().map(|(n, w, c)| json!({
                "phase": n, "ms": w * 1e3, "cpu_ms": c.map(|c| c * 1e3)
            })).collect::<Vec<_>>(),
        })
    }
}

/// Work of one training step as the GPU engine records it, counted from the shapes (f32):
/// (encoder GEMM FLOPs, FLOPs of everything else, bytes moved by everything), for the
/// projection to other adapters in the README. L0 = entries kept per row. Bytes, each
/// tensor read or written once per use:
///   encoder     read x (B, d), W_enc (d, n); write the pre-activations (B, n)
///   activation  read the pre-activations; write the codes (B L0 x index, value, pre-value)
///   decode      read B L0 rows of W_dec (d each); write x_hat (B, d)
///   loss        read x, x_hat; write dy                                         3 B d
///   backward    dz: B L0 rows of W_dec; dW_dec: B L0 rows of dy, write (n, d);
///               dW_enc: B L0 rows of x, write (d, n)
///   optimizer   17 passes of n d (unit-norm decoder: see src/sae/gpu.rs), 16 for relu
/// The B L0 gathered rows are counted as reads from memory; a GPU's L2 holds much of W_dec
/// (32 MiB), so this is the high side. AuxK (only with dead latents) is not counted.
fn counted(arch: Arch, batch: usize, l0: f64) -> (f64, f64, f64) {
    let (b, d, n) = (batch as f64, *D_IN as f64, *D_SAE as f64);
    let kept = b * l0;
    let enc_flops = 2.0 * b * d * n;
    // decode, dz, dW_dec, dW_enc: one multiply-add per kept entry and input dimension.
    let rest_flops = 4.0 * 2.0 * kept * d;
    let optimizer_passes = if arch == Arch::Relu { 16.0 } else { 17.0 };
    let floats = b * d + d * n + b * n // encoder
        + b * n + 3.0 * kept // activation
        + kept * d + b * d // decode
        + 3.0 * b * d // loss
        + 3.0 * kept * d + 2.0 * n * d // backward
        + optimizer_passes * n * d;
    (enc_flops, rest_flops, 4.0 * floats)
}

/// Which rows to run: (label, arch, fraction of latents dead at the start).
fn cases() -> Vec<(&'static str, Arch, f64)> {
    vec![
        ("topk", Arch::Topk, 0.0),
        ("batchtopk", Arch::Batchtopk, 0.0),
        ("relu", Arch::Relu, 0.0),
        ("jumprelu", Arch::Jumprelu, 0.0),
        ("topk_dead", Arch::Topk, 0.25),
    ]
}

/// Mark `frac` of the latents dead (since_fired at dead_tokens) and keep them so: b_enc -2
/// puts their pre-activations (~N(0, 1) otherwise) below the main top-k threshold
/// (~2.9 sigma) nearly always, yet above 0 for ~2% of the entries, which AuxK then takes.
fn with_dead(cfg: &TrainConfig, st: &mut TrainState, frac: f64) {
    let dead = (frac * *D_SAE as f64) as usize;
    for i in 0..dead {
        let j = (i * *D_SAE / dead.max(1)) % *D_SAE;
        st.since_fired[j] = cfg.dead_tokens.min(u32::MAX as u64) as u32;
        st.params.b_enc[j] = -2.0;
    }
}

/// AuxK's entries per row at the start of a row with dead latents: over the first 64 rows
/// of `x`, the dead latents whose pre-activation (x - b_dec) W_enc + b_enc is positive,
/// at most k_aux (AuxK keeps only positive values). The sparse work AuxK adds is in
/// proportion to it, and it is well under k_aux here (see `with_dead`).
fn aux_entries_at_start(cfg: &TrainConfig, st: &TrainState, x: &[f32]) -> f64 {
    let (rows, n) = (64, *D_SAE);
    let pre = pre_activations(&st.params, x, rows, Some(&st.params.b_enc));
    let dead = |j: usize| st.since_fired[j] as u64 >= cfg.dead_tokens;
    let per_row = pre.chunks(n).map(|row| {
        let positive_dead = row.iter().enumerate().filter(|&(j, &v)| dead(j) && v > 0.0);
        positive_dead.count().min(cfg.k_aux)
    });
    per_row.sum::<usize>() as f64 / rows as f64
}

#[allow(clippy::too_many_arguments)]
fn gpu_row(
    gpu: &Arc<Gpu>,
    label: &str,
    arch: Arch,
    dead: f64,
    batch: usize,
    steps: usize,
    profile: bool,
    sample: &[f32],
    batches: &[Vec<f32>],
) -> saeforge::Result<Row> {
    let cfg = config(arch, batch);
    let mut st = sparse_state(&cfg, sample);
    with_dead(&cfg, &mut st, dead);
    let mut eng = GpuEngine::new(gpu.clone(), &cfg, &st)?;
    let (chunks, chunk) = eng.chunking();
    let batches: Vec<&[f32]> = batches.iter().map(|b| &b[..batch * *D_IN]).collect();
    // The encoder GEMM of the same shape, on the kernel the engine picks, in the engine's
    // chunks when the batch's pre-activations exceed one binding (as many row blocks).
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut parts = Vec::new();
    for start in (0..batch).step_by(chunk) {
        let r = chunk.min(batch - start);
        let xc = gpu.upload("xc", &[r, *D_IN], &gaussian(&mut rng, r * *D_IN))?;
        parts.push((GemmSpec::nn(r, *D_SAE, *D_IN), xc));
    }
    let w = gpu.upload(
        "W_enc",
        &[*D_IN, *D_SAE],
        &gaussian(&mut rng, *D_IN * *D_SAE),
    )?;
    let b = gpu.upload("b_enc", &[*D_SAE], &gaussian(&mut rng, *D_SAE))?;
    let pre: GpuTensor = gpu.zeros("pre", &[chunk, *D_SAE])?;
    let mut i = 0usize;
    let step = || {
        eng.step(&cfg, batches[i % batches.len()], batch)?;
        i += 1;
        gpu.wait()
    };
    let encoder_gemm = || {
        let mut enc = gpu.encoder();
        for (spec, xc) in &parts {
            #[rustfmt::skip]
            gemm::gemm(gpu, &mut enc, spec, xc, &w, Some(&b), &pre.prefix(&[spec.m, *D_SAE]))?;
        }
        gpu.submit(enc);
        gpu.wait()
    };
    let (step, g) = time_pair(WARMUP, steps, step, encoder_gemm)?;
    let (m, _) = eng.take_metrics()?;
    let s = summarize(&m, (i * batch) as u64, *D_SAE);
    let mut phases: Phases = Vec::new();
    if profile {
        // One more step, submitted and waited for phase by phase; median of 3.
        let mut all: Vec<Phases> = Vec::new();
        for _ in 0..3 {
            let mut cur = Vec::new();
            gpu.wait()?;
            let mut t0 = (Instant::now(), cpu_ns());
            let g2 = gpu.clone();
            eng.step_marked(&cfg, batches[i % batches.len()], batch, &mut |name, enc| {
                let done = std::mem::replace(enc, g2.encoder());
                g2.submit(done);
                g2.wait()?;
                lap(name, &mut t0, &mut cur);
                Ok(())
            })?;
            gpu.wait()?;
            i += 1;
            all.push(cur);
        }
        phases = median_phases(all);
        if PROFILE_DISPATCHES.load(std::sync::atomic::Ordering::Relaxed) {
            gpu.wait()?;
            gpu.profile_dispatches(true);
            eng.step(&cfg, batches[i % batches.len()], batch)?;
            gpu.wait()?;
            let d = gpu.take_dispatch_profile();
            gpu.profile_dispatches(false);
            print_dispatches(label, &d);
        }
    }
    drop(eng);

    Ok(Row {
        engine: "gpu",
        arch: label.to_string(),
        batch,
        chunks,
        step,
        gemm: g,
        l0: s.l0,
        dead_fraction: s.dead_fraction,
        phases,
    })
}

/// A row's phases under its line.
fn print_phases(phases: &Phases) {
    for (name, w, c) in phases {
        eprintln!(
            "      {name:<14} {:>8.1} ms{}",
            w * 1e3,
            c.map_or(String::new(), |c| format!("  (cpu {:.1} ms)", c * 1e3))
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn cpu_row(
    label: &str,
    arch: Arch,
    dead: f64,
    batch: usize,
    steps: usize,
    profile: bool,
    sample: &[f32],
    batches: &[Vec<f32>],
) -> saeforge::Result<Row> {
    let cfg = config(arch, batch);
    let mut st = sparse_state(&cfg, sample);
    with_dead(&cfg, &mut st, dead);
    let mut eng = CpuEngine::new(st);
    let mut i = 0usize;
    let spec = GemmSpec::nn(batch, *D_SAE, *D_IN);
    let xc = &batches[0];
    // The product the CPU engine's encode stage runs (crate::blas, the gemm crate), not the
    // plain reference loops that judge the kernels; on weights of the same shape.
    let (w, b) = (eng.st.params.w_enc.clone(), eng.st.params.b_enc.clone());
    let mut pre = vec![0.0f32; batch * *D_SAE];
    let step = || {
        eng.step(&cfg, &batches[i % batches.len()], batch)?;
        i += 1;
        Ok(())
    };
    let encoder_gemm = || {
        saeforge::blas::gemm(&spec, xc, &w, Some(&b), &mut pre);
        Ok(())
    };
    // One warm-up of each: the first step and the first GEMM fault in their fresh buffers
    // (256 MiB of pre-activations), which costs ~1 s on this VM once lavapipe's rows have
    // freed their memory; with 2 timed steps it would be half the median.
    let (step, g) = time_pair(1, steps, step, encoder_gemm)?;
    let (m, _) = eng.take_metrics()?;
    let s = summarize(&m, (i * batch) as u64, *D_SAE);
    // The stages of 3 more steps (the CPU step's own marks); medians.
    let mut phases = Vec::new();
    if profile {
        let mut all = Vec::new();
        for _ in 0..3 {
            let (mut cur, mut t0) = (Vec::new(), (Instant::now(), cpu_ns()));
            let x = &batches[i % batches.len()];
            let (st, sc) = (&mut eng.st, &mut eng.scratch);
            step_marked(&cfg, st, sc, x, batch, &mut |name| {
                lap(name, &mut t0, &mut cur)
            });
            i += 1;
            all.push(cur);
        }
        phases = median_phases(all);
    }
    Ok(Row {
        engine: "cpu",
        arch: label.to_string(),
        batch,
        chunks: 1,
        step,
        gemm: g,
        l0: s.l0,
        dead_fraction: s.dead_fraction,
        phases,
    })
}

/// The FMA-throughput ceiling of shaders/bench.wgsl (as benches/kernels.rs measures it):
/// GFLOP/s by wall clock and per CPU-second of the process divided by the CPUs.
fn fma_ceiling(gpu: &Gpu) -> saeforge::Result<(f64, Option<f64>)> {
    let invocations = 65536;
    let out = gpu.zeros("fma_peak out", &[invocations])?;
    let mut iters = 64u32;
    loop {
        let t0 = Instant::now();
        let mut enc = gpu.encoder();
        bench::fma_peak(gpu, &mut enc, iters, &out)?;
        gpu.submit(enc);
        gpu.wait()?;
        let wall = t0.elapsed().as_secs_f64();
        if wall >= 0.05 || iters >= 1 << 16 {
            break;
        }
        iters = (iters as f64 * (0.1 / wall.max(1e-4))).min(65536.0) as u32;
    }
    let (w, c) = time(1, 5, || {
        let mut enc = gpu.encoder();
        bench::fma_peak(gpu, &mut enc, iters, &out)?;
        gpu.submit(enc);
        gpu.wait()
    })?;
    let flops = bench::fma_peak_flops(invocations, iters);
    Ok((flops / w / 1e9, c.map(|c| flops / (c / cpus()) / 1e9)))
}

fn cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    saeforge::gpu::quiet_headless_probe();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let keep = |engine: &str, label: &str| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| engine.contains(f.as_str()) || label.contains(f.as_str()))
    };
    let batch = env_usize("SAEFORGE_BENCH_BATCH", 4096);
    let steps = env_usize("SAEFORGE_BENCH_STEPS", 5).max(1);
    let profile_level: u32 = std::env::var("SAEFORGE_BENCH_PROFILE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let profile = profile_level >= 1;
    PROFILE_DISPATCHES.store(profile_level >= 2, std::sync::atomic::Ordering::Relaxed);
    let load_before = loadavg();
    let started = Instant::now();

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let sample = gaussian(&mut rng, 1024 * *D_IN);

    let gpu = match Gpu::new(std::env::var("SAEFORGE_ADAPTER").ok().as_deref()) {
        Ok(g) => Some(Arc::new(g)),
        Err(e) => {
            eprintln!("no adapter ({e}); CPU engine rows only");
            None
        }
    };
    let adapter = gpu.as_ref().map_or("none".to_string(), |g| {
        format!(
            "{} ({:?}, {:?})",
            g.info.name, g.info.backend, g.info.device_type
        )
    });
    println!(
        "adapter: {adapter}; {} CPUs; load average {load_before}; d_in {}, d_sae {}",
        cpus(),
        *D_IN,
        *D_SAE
    );
    let batches: Vec<Vec<f32>> = (0..3).map(|_| gaussian(&mut rng, batch * *D_IN)).collect();
    let ceiling = match &gpu {
        Some(g) => Some(fma_ceiling(g)?),
        None => None,
    };

    let mut rows = Vec::new();
    for (label, arch, dead) in cases() {
        if dead > 0.0 && (keep("gpu", label) || keep("cpu", label)) {
            let cfg = config(arch, batch);
            let mut st = sparse_state(&cfg, &sample);
            with_dead(&cfg, &mut st, dead);
            let e = aux_entries_at_start(&cfg, &st, &batches[0]);
            eprintln!(
                "  {label}: AuxK entries per row at the start {e:.1} (k_aux {}, main k {K})",
                cfg.k_aux
            );
        }
        if let Some(g) = &gpu
            && keep("gpu", label)
        {
            let r = gpu_row(
                g, label, arch, dead, batch, steps, profile, &sample, &batches,
            )?;
            eprintln!(
                "  gpu {label:<10} step {:>8.1} ms  gemm {:>8.1} ms  L0 {:.1}  batch {} in {} chunk(s)",
                r.step.0 * 1e3,
                r.gemm.0 * 1e3,
                r.l0,
                r.batch,
                r.chunks
            );
            print_phases(&r.phases);
            rows.push(r);
        }
        if keep("cpu", label) {
            let cpu_steps = steps.min(2);
            let r = cpu_row(
                label, arch, dead, batch, cpu_steps, profile, &sample, &batches,
            )?;
            eprintln!(
                "  cpu {label:<10} step {:>8.1} ms  gemm {:>8.1} ms  L0 {:.1}",
                r.step.0 * 1e3,
                r.gemm.0 * 1e3,
                r.l0
            );
            print_phases(&r.phases);
            rows.push(r);
        }
    }
    let load_after = loadavg();

    if let Some((w, c)) = ceiling {
        println!(
            "FMA ceiling: {w:.1} GFLOP/s{}",
            c.map_or(String::new(), |c| format!(
                " (per CPU time: {c:.1} GFLOP/s)"
            ))
        );
    }
    println!(
        "{:<6} {:<10} {:>6} {:>10} {:>10} {:>9} {:>9} {:>10} {:>7} {:>6}",
        "engine",
        "arch",
        "batch",
        "step ms",
        "gemm ms",
        "step/gemm",
        "(cpu)",
        "tokens/s",
        "L0",
        "dead"
    );
    for r in &rows {
        let ratio_cpu = r.step.1.zip(r.gemm.1).map(|(s, g)| s / g);
        println!(
            "{:<6} {:<10} {:>6} {:>10.1} {:>10.1} {:>9.3} {:>9} {:>10.0} {:>7.1} {:>6.3}",
            r.engine,
            r.arch,
            r.batch,
            r.step.0 * 1e3,
            r.gemm.0 * 1e3,
            r.step.0 / r.gemm.0,
            ratio_cpu.map_or("-".into(), |v| format!("{v:.3}")),
            r.batch as f64 / r.step.0,
            r.l0,
            r.dead_fraction
        );
    }
    // The encoder GEMM of the first GPU row, against the FMA ceiling.
    if let Some(r) = rows.iter().find(|r| r.engine == "gpu") {
        let gf = GemmSpec::nn(r.batch, *D_SAE, *D_IN).flops();
        let frac = ceiling.map(|(w, _)| gf / r.gemm.0 / 1e9 / w);
        let frac_cpu = ceiling
            .and_then(|(_, c)| c)
            .zip(r.gemm.1)
            .map(|(c, g)| gf / (g / cpus()) / 1e9 / c);
        println!(
            "encoder GEMM ({}): {:.1} GFLOP/s, {} of the FMA ceiling{}",
            r.arch,
            gf / r.gemm.0 / 1e9,
            frac.map_or("-".into(), |f| format!("{f:.3}")),
            frac_cpu.map_or(String::new(), |f| format!(" ({f:.3} per CPU time)"))
        );
    }
    println!("counted work per step (see `counted`; the projection in the README uses it):");
    for r in rows.iter().filter(|r| r.engine == "gpu") {
        let (e, o, bytes) = r.counted();
        println!(
            "  {:<10} batch {:>5}: encoder {:.1} GFLOP, rest {:.2} GFLOP, {:.0} MB moved",
            r.arch,
            r.batch,
            e / 1e9,
            o / 1e9,
            bytes / 1e6
        );
    }
    println!("load average: before {load_before}, after {load_after}");

    let report = json!({
        "adapter": adapter,
        "cpus": cpus(),
        "d_in": *D_IN,
        "d_sae": *D_SAE,
        "k": K,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "fma_ceiling_gflops": ceiling.map(|c| c.0),
        "fma_ceiling_gflops_cpu": ceiling.and_then(|c| c.1),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("train.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!(
        "wrote {} ({:.1} s in all)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One step's dispatches summed per entry point, the largest GPU (else CPU) time first:
/// calls, GPU ms (timestamp queries; "-" where the adapter has none), wall ms, CPU ms.
fn print_dispatches(label: &str, d: &[saeforge::gpu::DispatchTime]) {
    let mut by: Vec<(String, usize, Option<f64>, f64, f64)> = Vec::new();
    for t in d {
        match by.iter_mut().find(|e| e.0 == t.entry) {
            Some(e) => {
                e.1 += 1;
                e.2 = e.2.zip(t.gpu_s).map(|(a, b)| a + b);
                e.3 += t.wall_s;
                e.4 += t.cpu_s.unwrap_or(0.0);
            }
            None => by.push((
                t.entry.clone(),
                1,
                t.gpu_s,
                t.wall_s,
                t.cpu_s.unwrap_or(0.0),
            )),
        }
    }
    by.sort_by(|a, b| (b.2.unwrap_or(b.4)).total_cmp(&a.2.unwrap_or(a.4)));
    eprintln!("    dispatches of one {label} step (calls, GPU ms, wall ms, cpu ms):");
    for (name, calls, g, w, c) in by {
        let g = g.map_or("-".to_string(), |g| format!("{:.2}", g * 1e3));
        eprintln!(
            "      {name:<28} {calls:>3} {g:>9} {:>9.1} {:>9.1}",
            w * 1e3,
            c * 1e3
        );
    }
}
