//! Kernel throughput, as a fraction of ceilings measured on the same adapter in the same run.
//!
//!     cargo bench --bench kernels [-- FILTER ...]      (SAEFORGE_ADAPTER=substring picks the adapter)
//!
//! A case is a name, a shape, a closure that records its dispatches into an encoder, and its
//! work: FLOPs (GEMM-like) or bytes moved (gathers, elementwise). Each case is submitted once
//! to warm up (pipeline compilation, first touch of memory), then timed as the median wall
//! clock of several submit + wait. Two ceilings from shaders/bench.wgsl, measured before and
//! after the cases (the better of the two counts): an FMA-throughput loop (GFLOP/s) and a
//! vec4 buffer copy (GB/s). The table gives each case's time, rate, and fraction of the
//! matching ceiling; target/bench/kernels.json (under CARGO_TARGET_DIR when set) has the same.
//!
//! On a shared machine the wall clock moves with other processes' load, so on a software
//! adapter each timing also records the CPU time this process's threads spent (Linux), and
//! the table shows the fraction that CPU time gives as well, the steadier figure there.
//! Where the adapter has timestamp queries (lavapipe does), each case is also run a few
//! times with the dispatch profiler on (src/gpu/profile.rs) and `gpu ms` is the GPU's own
//! time summed over the case's dispatches, without submission and wait (`gpu_ms` and
//! `gflops_gpu` / `gbps_gpu` in kernels.json).
//!
//! Cases: the GEMMs of a training step (rated in FLOPs against the FMA ceiling), a sweep's
//! four same-shape encoders launched one per member and as one launch (kernels/sweep_cases.rs;
//! the ratio of each pair is printed after the table), then every
//! other launcher of src/kernels at the production shape (d = 512, n = 16384, k = 32,
//! k_aux = 256, batch 1024 unless the shape string says otherwise), each rated by the bytes
//! it must read and write at the least against the copy ceiling; the formula is in a comment
//! above each case. Kernels whose data fit in the CPU's caches (a few (n) vectors) or that
//! take well under a millisecond measure submission overhead more than bandwidth; their
//! fractions say little, and can exceed 1.
//!
//! SAEFORGE_BENCH_SECONDS=S times each case for about S seconds (default 0.5) instead: more
//! runs, steadier figures on a loaded machine. kernels.json also gives each GEMM's fastest
//! run against the FMA ceiling's fastest run (fraction_fastest, fraction_fastest_cpu), the
//! figure least disturbed by other processes.
//!
//! To add kernels: write a function returning `Vec<Case>` (see `gemm_cases` in
//! kernels/gemm_cases.rs, `sparse_cases` in kernels/step_cases.rs)
//! and call it in `main`. FILTER arguments keep only cases whose name contains one of them.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::activations::{self, relu_backward, relu_forward};
use saeforge::kernels::gemm::{self, GemmPath, GemmSpec, GemmTuning};
use saeforge::kernels::gemm_reg::RegTiles;
use saeforge::kernels::{bench, codes, ops, optim, reduce, sparse, topk};

#[path = "kernels/gemm_cases.rs"]
mod gemm_cases;
#[path = "kernels/step_cases.rs"]
mod step_cases;
#[path = "kernels/step_extra.rs"]
mod step_extra;
#[path = "kernels/sweep_cases.rs"]
mod sweep_cases;

use gemm_cases::*;
use step_cases::*;

type Record = Box<dyn Fn(&Gpu, &mut wgpu::CommandEncoder) -> saeforge::Result<()>>;

/// What a case does per run, the unit its rate is reported in, and its ceiling.
#[derive(Clone, Copy)]
enum Work {
    Flops(f64),
    Bytes(f64),
}

struct Case {
    name: String,
    shape: String,
    /// Which variant ran (e.g. the GEMM path), for the reader.
    variant: String,
    work: Work,
    record: Record,
}

/// Median wall clock and CPU time of the timed runs, in seconds.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: Option<f64>,
    runs: usize,
    /// The fastest run (wall, CPU): what the kernel does when left alone longest.
    wall_min: f64,
    cpu_min: Option<f64>,
    /// The GPU's own time (timestamp queries; median of MIN_RUNS profiled runs, each the
    /// sum over its dispatches), where the adapter has them.
    gpu: Option<f64>,
}

/// Aim for this much timed wall clock per case, within [MIN_RUNS, MAX_RUNS] runs (with ~45
/// cases, the whole run stays near a minute on lavapipe; the GEMMs take most of it).
/// SAEFORGE_BENCH_SECONDS overrides it (more runs per case: steadier medians and minima on
/// a loaded machine).
const CASE_SECONDS: f64 = 0.5;

fn case_seconds() -> f64 {
    std::env::var("SAEFORGE_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASE_SECONDS)
}
const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 11;

/// Nanoseconds all threads of this process have spent on a CPU (Linux), or None.
fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn run_once(gpu: &Gpu, record: &Record) -> saeforge::Result<(f64, Option<f64>)> {
    let mut enc = gpu.encoder();
    record(gpu, &mut enc)?;
    let cpu0 = cpu_ns();
    let t0 = Instant::now();
    gpu.submit(enc);
    gpu.wait()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu0
        .zip(cpu_ns())
        .map(|(a, b)| b.saturating_sub(a) as f64 * 1e-9);
    Ok((wall, cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(gpu: &Gpu, record: &Record) -> saeforge::Result<Timing> {
    let (first, _) = run_once(gpu, record)?;
    let max_runs = MAX_RUNS.max((MAX_RUNS as f64 * case_seconds() / CASE_SECONDS) as usize);
    let runs = ((case_seconds() / first.max(1e-6)).ceil() as usize).clamp(MIN_RUNS, max_runs);
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..runs {
        let (w, c) = run_once(gpu, record)?;
        walls.push(w);
        cpus.extend(c);
    }
    let least = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let gpu_time = if gpu.has_timestamps() {
        let mut sums = Vec::new();
        for _ in 0..MIN_RUNS {
            gpu.profile_dispatches(true);
            let run = run_once(gpu, record);
            let listed = gpu.take_dispatch_profile();
            gpu.profile_dispatches(false);
            run?;
            sums.extend(listed.iter().map(|t| t.gpu_s).sum::<Option<f64>>());
        }
        (sums.len() == MIN_RUNS).then(|| median(sums))
    } else {
        None
    };
    Ok(Timing {
        gpu: gpu_time,
        wall_min: least(&walls),
        cpu_min: (cpus.len() == runs).then(|| least(&cpus)),
        wall: median(walls),
        cpu: (cpus.len() == runs).then(|| median(cpus)),
        runs,
    })
}

/// Rate of `work` done in `seconds`: GFLOP/s or GB/s.
fn rate(work: Work, seconds: f64) -> f64 {
    match work {
        Work::Flops(f) | Work::Bytes(f) => f / seconds / 1e9,
    }
}

/// The two ceilings, measured in one go.
#[derive(Clone, Copy, Default)]
struct Ceilings {
    fma_gflops: f64,
    copy_gbps: f64,
    /// The same from CPU time (rate if the process's threads had the CPUs to themselves).
    fma_gflops_cpu: Option<f64>,
    copy_gbps_cpu: Option<f64>,
    /// The FMA ceiling from its fastest run (wall, CPU), for the fastest-run fractions.
    fma_gflops_fastest: f64,
    fma_gflops_cpu_fastest: Option<f64>,
}

fn best(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

impl Ceilings {
    fn max(self, o: Ceilings) -> Ceilings {
        Ceilings {
            fma_gflops: self.fma_gflops.max(o.fma_gflops),
            copy_gbps: self.copy_gbps.max(o.copy_gbps),
            fma_gflops_cpu: best(self.fma_gflops_cpu, o.fma_gflops_cpu),
            copy_gbps_cpu: best(self.copy_gbps_cpu, o.copy_gbps_cpu),
            fma_gflops_fastest: self.fma_gflops_fastest.max(o.fma_gflops_fastest),
            fma_gflops_cpu_fastest: best(self.fma_gflops_cpu_fastest, o.fma_gflops_cpu_fastest),
        }
    }

    fn of(&self, work: Work) -> (f64, Option<f64>) {
        match work {
            Work::Flops(_) => (self.fma_gflops, self.fma_gflops_cpu),
            Work::Bytes(_) => (self.copy_gbps, self.copy_gbps_cpu),
        }
    }
}

/// FMA throughput with enough iterations for ~0.1 s, and a 32 MiB vec4 copy; both checked
/// for a sane result so that a broken ceiling kernel cannot pass unnoticed.
fn measure_ceilings(gpu: &Gpu) -> saeforge::Result<Ceilings> {
    let invocations = 65536;
    let fma_out = Rc::new(gpu.zeros("fma_peak out", &[invocations])?);
    let fma = |iters: u32| -> Record {
        let o = fma_out.clone();
        Box::new(move |g, e| bench::fma_peak(g, e, iters, &o))
    };
    let mut iters = 64u32;
    loop {
        let (wall, _) = run_once(gpu, &fma(iters))?;
        if wall >= 0.05 || iters >= 1 << 16 {
            break;
        }
        iters = (iters as f64 * (0.1 / wall.max(1e-4))).min(65536.0) as u32;
    }
    let fma = fma(iters);
    let t_fma = time(gpu, &fma)?;
    let sums = gpu.read_f32(&fma_out)?;
    if sums.iter().any(|v| !v.is_finite()) {
        return Err(saeforge::Error::Internal(
            "fma_peak wrote a non-finite sum".into(),
        ));
    }
    let flops = Work::Flops(bench::fma_peak_flops(invocations, iters));

    let len = 8 << 20; // 32 MiB
    let src_h: Vec<f32> = (0..len).map(|i| i as f32).collect();
    let src = Rc::new(gpu.upload("copy src", &[len], &src_h)?);
    let dst = Rc::new(gpu.zeros("copy dst", &[len])?);
    let (s, d) = (src.clone(), dst.clone());
    let copy: Record = Box::new(move |g, e| bench::copy_vec4(g, e, &s, &d));
    let t_copy = time(gpu, &copy)?;
    if gpu.read_f32(&dst)? != src_h {
        return Err(saeforge::Error::Internal("copy_vec4 did not copy".into()));
    }
    let bytes = Work::Bytes(2.0 * 4.0 * len as f64);
    Ok(Ceilings {
        fma_gflops: rate(flops, t_fma.wall),
        copy_gbps: rate(bytes, t_copy.wall),
        fma_gflops_cpu: t_fma.cpu.map(|c| rate(flops, c / cpu_threads())),
        copy_gbps_cpu: t_copy.cpu.map(|c| rate(bytes, c / cpu_threads())),
        fma_gflops_fastest: rate(flops, t_fma.wall_min),
        fma_gflops_cpu_fastest: t_fma.cpu_min.map(|c| rate(flops, c / cpu_threads())),
    })
}

/// CPU seconds are divided by this to turn them into wall-clock-like seconds: the number
/// of CPUs the process may use.
fn cpu_threads() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

// ------------------------------------------------------------------ bandwidth-bound cases
//
// Every other launcher of src/kernels at the production shape of a TopK training step
// (d = 512, n = 16384, k = 32, k_aux = 256) and batch B = 1024, as the GEMMs, unless the
// shape string says otherwise. Each is rated by the bytes it must read and write at the
// least (every input element it depends on read once, every output written once, each
// read-write element counted twice, 4 bytes per f32 / u32); the comment above each case
// gives the formula. Scratch traffic (partials, histograms) and re-reads (radix passes,
// gathers of a row more than once) are not counted: they are the kernel's cost, not its
// work. u = distinct latents in the TopK codes (measured from the codes themselves).

const B: usize = 1024;
const D: usize = 512;
const N: usize = 16384;
const K: usize = 32;
const K_AUX: usize = 256;
/// Fraction of latents dead (eligible for AuxK) in the AuxK cases.
const DEAD_FRACTION: f64 = 0.1;

type T = Rc<GpuTensor>;

/// Bytes of `elems` 4-byte elements.
fn b4(elems: usize) -> f64 {
    4.0 * elems as f64
}

fn bytes_case(name: &str, variant: &str, shape: String, bytes: f64, record: Record) -> Case {
    Case {
        name: name.to_string(),
        shape,
        variant: variant.to_string(),
        work: Work::Bytes(bytes),
        record,
    }
}

fn gaussian(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|_| rng.sample::<f32, _>(StandardNormal) * scale)
        .collect()
}

/// Device tensors for the cases, made once: random inputs at the production shape and the
/// TopK codes of an actual topk of the random pre-activations.
struct Inputs {
    x: T,
    x_hat: T,
    xc: T,
    dy: T,
    b_dec: T,
    /// Pre-activations ~ N(0, 1), (B, n).
    pre: T,
    /// A gradient ~ N(0, 1) of the size of pre, (B, n).
    dz: T,
    /// relu(pre), (B, n): about half the entries positive.
    z: T,
    /// Outputs of size (B, n).
    out_bn: T,
    out_bn2: T,
    /// Outputs of size (n).
    out_n: T,
    w_dec: T,
    norms: T,
    log_theta: T,
    // TopK codes (B, k) and their transpose.
    row_ptr: T,
    idx: T,
    val: T,
    dval: T,
    lat_ptr: T,
    lat_row: T,
    lat_slot: T,
    /// Distinct latents in idx.
    distinct: usize,
    since: T,
}

fn make_inputs(gpu: &Gpu) -> saeforge::Result<Inputs> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut up = |what: &str, shape: &[usize], scale: f32| -> saeforge::Result<T> {
        let data = gaussian(&mut rng, shape.iter().product(), scale);
        Ok(Rc::new(gpu.upload(what, shape, &data)?))
    };
    let x = up("x", &[B, D], 1.0)?;
    let x_hat = up("x_hat", &[B, D], 1.0)?;
    let xc = up("xc", &[B, D], 1.0)?;
    let dy = up("dy", &[B, D], 0.01)?;
    let b_dec = up("b_dec", &[D], 0.1)?;
    let pre = up("pre", &[B, N], 1.0)?;
    let dz = up("dz", &[B, N], 1.0)?;
    let w_dec = up("W_dec", &[N, D], 1.0 / (D as f32).sqrt())?;
    let log_theta = up("log_theta", &[N], 0.1)?;
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let z = zeros("z", &[B, N])?;
    let norms = zeros("norms", &[N])?;
    let row_ptr = zeros_u32("row_ptr", &[B + 1])?;
    let idx = zeros_u32("idx", &[B, K])?;
    let pre_val = zeros("pre_val", &[B, K])?;
    let val = zeros("val", &[B, K])?;
    let gslot = zeros("gslot", &[B * K])?;
    let dval = zeros("dval", &[B * K])?;
    let lat_ptr = zeros_u32("lat_ptr", &[N + 1])?;
    let lat_row = zeros_u32("lat_row", &[B * K])?;
    let lat_slot = zeros_u32("lat_slot", &[B * K])?;

    // The codes and everything derived from them, as a training step makes them.
    let mut enc = gpu.encoder();
    relu_forward(gpu, &mut enc, &pre, &z)?;
    reduce::row_norms(gpu, &mut enc, &w_dec, N, D, &norms)?;
    let path = codes::selection::RowPath::of(gpu);
    codes::selection::topk_codes(gpu, &mut enc, path, &pre, K, None, &row_ptr, &idx, &pre_val)?;
    relu_forward(gpu, &mut enc, &pre_val, &val)?;
    sparse::sparse_dot(gpu, &mut enc, &row_ptr, &idx, &dy, &w_dec, B, N, D, &gslot)?;
    relu_backward(gpu, &mut enc, &pre_val, &gslot, &dval)?;
    let marks = zeros_u32(
        "transpose marks",
        &[sparse::transpose_marks_len(B, N, B * K)],
    )?;
    #[rustfmt::skip]
    sparse::build_transpose(gpu, &mut enc, &row_ptr, &idx, B, N, &marks, &lat_ptr, &lat_row, &lat_slot)?;
    gpu.submit(enc);
    let mut seen = vec![false; N];
    for i in gpu.read_u32(&idx)? {
        seen[i as usize] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();

    // Steps since each latent last fired: DEAD_FRACTION of them at or past dead_after.
    let since_h: Vec<u32> = (0..N)
        .map(|_| {
            if rng.random_bool(DEAD_FRACTION) {
                rng.random_range(DEAD_AFTER..DEAD_AFTER * 4)
            } else {
                rng.random_range(0..DEAD_AFTER)
            }
        })
        .collect();
    Ok(Inputs {
        x,
        x_hat,
        xc,
        dy,
        b_dec,
        pre,
        dz,
        z,
        out_bn: zeros("out (B, n)", &[B, N])?,
        out_bn2: zeros("out2 (B, n)", &[B, N])?,
        out_n: zeros("out (n)", &[N])?,
        w_dec,
        norms,
        log_theta,
        row_ptr,
        idx,
        val,
        dval,
        lat_ptr,
        lat_row,
        lat_slot,
        distinct,
        since: Rc::new(gpu.upload_u32("since_fired", &[N], &since_h)?),
    })
}

/// Tokens without firing after which a latent counts as dead (the cases' dead_after).
const DEAD_AFTER: u32 = 10_000_000;
// ------------------------------------------------------------------ main

/// A rate in 6 columns: two decimals, or three significant digits below 0.01.
fn fmt_rate(r: f64) -> String {
    if r >= 0.01 || r == 0.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.1e}")
    }
}

fn main() -> anyhow::Result<()> {
    saeforge::gpu::quiet_headless_probe();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let adapter = std::env::var("SAEFORGE_ADAPTER").ok();
    let gpu = Gpu::new(adapter.as_deref())?;
    println!(
        "adapter: {} ({:?}, {:?}), {} CPUs",
        gpu.info.name,
        gpu.info.backend,
        gpu.info.device_type,
        cpu_threads()
    );
    let started = Instant::now();

    let mut ceilings = measure_ceilings(&gpu)?;
    let mut cases = Vec::new();
    cases.extend(gemm_cases(&gpu)?);
    cases.extend(sweep_cases::sweep_cases(&gpu)?);
    let inputs = make_inputs(&gpu)?;
    println!(
        "inputs: pre-activations ~ N(0, 1); TopK codes = topk_codes of them (u = {} of {N} \
         latents used); {:.0}% of latents dead (since_fired)",
        inputs.distinct,
        DEAD_FRACTION * 100.0
    );
    cases.extend(activation_cases(&inputs));
    cases.extend(topk_cases(&gpu, &inputs)?);
    cases.extend(sparse_cases(&gpu, &inputs)?);
    cases.extend(reduce_cases(&gpu, &inputs)?);
    cases.extend(optim_cases(&gpu, &inputs)?);
    cases.extend(ops_cases(&gpu)?);
    cases.extend(step_extra::codes_cases(&gpu, &inputs)?);
    cases.extend(step_extra::matryoshka_cases(&gpu, &inputs)?);
    cases.extend(step_extra::fista_cases(&gpu)?);
    cases.extend(step_extra::toy_cases(&gpu)?);
    cases.retain(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())));

    let mut timings = Vec::new();
    for case in &cases {
        let t = time(&gpu, &case.record)?;
        eprintln!(
            "  {:<28} {:>9.2} ms ({} runs)",
            case.name,
            t.wall * 1e3,
            t.runs
        );
        timings.push(t);
    }
    ceilings = ceilings.max(measure_ceilings(&gpu)?);
    if !gpu.is_software() {
        // CPU time says nothing about a hardware GPU's work: keep the wall clock only.
        ceilings.fma_gflops_cpu = None;
        ceilings.copy_gbps_cpu = None;
        ceilings.fma_gflops_cpu_fastest = None;
        timings.iter_mut().for_each(|t| {
            t.cpu = None;
            t.cpu_min = None;
        });
    }

    println!(
        "ceilings: FMA {:.1} GFLOP/s, copy {:.2} GB/s{}",
        ceilings.fma_gflops,
        ceilings.copy_gbps,
        match (ceilings.fma_gflops_cpu, ceilings.copy_gbps_cpu) {
            (Some(f), Some(c)) => format!("   (per CPU time: {f:.1} GFLOP/s, {c:.2} GB/s)"),
            _ => String::new(),
        }
    );
    println!(
        "{:<28} {:<8} {:<36} {:>10} {:>14} {:>7} {:>9} {:>10}",
        "kernel", "variant", "shape", "ms", "rate", "frac", "frac(cpu)", "gpu ms"
    );
    let mut rows = Vec::new();
    for (case, t) in cases.iter().zip(&timings) {
        let r = rate(case.work, t.wall);
        let (ceil, ceil_cpu) = ceilings.of(case.work);
        let frac = r / ceil;
        let frac_cpu = t
            .cpu
            .zip(ceil_cpu)
            .map(|(c, cc)| rate(case.work, c / cpu_threads()) / cc);
        let unit = match case.work {
            Work::Flops(_) => "GFLOP/s",
            Work::Bytes(_) => "GB/s",
        };
        println!(
            "{:<28} {:<8} {:<36} {:>10.2} {:>6} {:<7} {:>7.3} {:>9} {:>10}",
            case.name,
            case.variant,
            case.shape,
            t.wall * 1e3,
            fmt_rate(r),
            unit,
            frac,
            frac_cpu.map_or("-".to_string(), |f| format!("{f:.3}")),
            t.gpu.map_or("-".to_string(), |g| format!("{:.2}", g * 1e3))
        );
        let mut row = serde_json::json!({
            "name": case.name,
            "shape": case.shape,
            "variant": case.variant,
            "ms": t.wall * 1e3,
            "runs": t.runs,
            "fraction_of_ceiling": frac,
        });
        let (key, work_key, work) = match case.work {
            Work::Flops(f) => ("gflops", "flops", f),
            Work::Bytes(b) => ("gbps", "bytes", b),
        };
        row[key] = serde_json::json!(r);
        row[work_key] = serde_json::json!(work);
        if let Some(g) = t.gpu {
            row["gpu_ms"] = serde_json::json!(g * 1e3);
            row[format!("{key}_gpu")] = serde_json::json!(rate(case.work, g));
        }
        if let (Some(c), Some(f)) = (t.cpu, frac_cpu) {
            row["cpu_ms"] = serde_json::json!(c * 1e3);
            row["fraction_of_ceiling_cpu"] = serde_json::json!(f);
        }
        // Fastest runs against the fastest ceiling run: less sensitive to other load.
        row["ms_min"] = serde_json::json!(t.wall_min * 1e3);
        if let Work::Flops(_) = case.work {
            row["fraction_fastest"] =
                serde_json::json!(rate(case.work, t.wall_min) / ceilings.fma_gflops_fastest);
            if let (Some(c), Some(cc)) = (t.cpu_min, ceilings.fma_gflops_cpu_fastest) {
                row["cpu_ms_min"] = serde_json::json!(c * 1e3);
                row["fraction_fastest_cpu"] =
                    serde_json::json!(rate(case.work, c / cpu_threads()) / cc);
            }
        }
        rows.push(row);
    }
    // Fused against separate pairs (gemm_encoder_bmax*; sweep_encoders_*: one launch for
    // the members against one each, `_batched` against `_batched_separate` on pooled
    // operands): time ratio, wall and CPU.
    for (case, t) in cases.iter().zip(&timings) {
        let (label, other) = match case.name.strip_suffix("_fused") {
            Some(l) => (l.to_string(), format!("{l}_separate")),
            None if case.name.ends_with("_batched") => {
                (case.name.clone(), format!("{}_separate", case.name))
            }
            None => continue,
        };
        let Some(u) = cases
            .iter()
            .position(|c| c.name == other)
            .map(|i| timings[i])
        else {
            continue;
        };
        println!(
            "{label}: fused {:.2} ms, separate {:.2} ms, ratio {:.3}{}",
            t.wall * 1e3,
            u.wall * 1e3,
            t.wall / u.wall,
            match (t.cpu, u.cpu) {
                (Some(a), Some(b)) => format!(
                    "   (CPU time: fused {:.2} ms, separate {:.2} ms, ratio {:.3})",
                    a * 1e3,
                    b * 1e3,
                    a / b
                ),
                _ => String::new(),
            }
        );
    }
    let report = serde_json::json!({
        "adapter": gpu.info.name,
        "backend": format!("{:?}", gpu.info.backend),
        "device_type": format!("{:?}", gpu.info.device_type),
        "cpus": cpu_threads(),
        "ceilings": {
            "fma_gflops": ceilings.fma_gflops,
            "copy_gbps": ceilings.copy_gbps,
            "fma_gflops_cpu": ceilings.fma_gflops_cpu,
            "fma_gflops_fastest": ceilings.fma_gflops_fastest,
            "fma_gflops_cpu_fastest": ceilings.fma_gflops_cpu_fastest,
            "copy_gbps_cpu": ceilings.copy_gbps_cpu,
        },
        "inputs": {
            "batch": B, "d": D, "n": N, "k": K, "k_aux": K_AUX,
            "topk_distinct_latents": inputs.distinct,
            "auxk_dead_fraction": DEAD_FRACTION,
        },
        "kernels": rows,
    });
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("kernels.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!(
        "wrote {} ({:.1} s in all)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
