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
//!
//! To add kernels: write a function returning `Vec<Case>` (see `gemm_cases`) and call it in
//! `main`. FILTER arguments keep only cases whose name contains one of them.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::bench;
use saeforge::kernels::gemm::{self, GemmPath, GemmSpec};

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
}

/// Aim for this much timed wall clock per case, within [MIN_RUNS, MAX_RUNS] runs.
const CASE_SECONDS: f64 = 1.5;
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
    let runs = ((CASE_SECONDS / first.max(1e-6)).ceil() as usize).clamp(MIN_RUNS, MAX_RUNS);
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..runs {
        let (w, c) = run_once(gpu, record)?;
        walls.push(w);
        cpus.extend(c);
    }
    Ok(Timing {
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
    })
}

/// CPU seconds are divided by this to turn them into wall-clock-like seconds: the number
/// of CPUs the process may use.
fn cpu_threads() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

// ------------------------------------------------------------------ GEMM cases

fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn stored(rows: usize, cols: usize, t: bool) -> String {
    if t {
        format!("({cols}x{rows})^T")
    } else {
        format!("{rows}x{cols}")
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_case(
    gpu: &Gpu,
    name: &str,
    spec: GemmSpec,
    a: &Rc<GpuTensor>,
    b: &Rc<GpuTensor>,
    bias: Option<&Rc<GpuTensor>>,
    c: &Rc<GpuTensor>,
    path: GemmPath,
) -> Case {
    let shape = format!(
        "{} * {}{}",
        stored(spec.m, spec.k, spec.trans_a),
        stored(spec.k, spec.n, spec.trans_b),
        if bias.is_some() { " + bias" } else { "" }
    );
    let resolved = match path {
        GemmPath::Auto => gemm::auto_path(gpu, &spec),
        p => p,
    };
    let (a, b, bias, c) = (a.clone(), b.clone(), bias.cloned(), c.clone());
    Case {
        name: name.to_string(),
        shape,
        variant: resolved.name().to_string(),
        work: Work::Flops(spec.flops()),
        record: Box::new(move |g, e| {
            gemm::gemm_with(g, e, &spec, &a, &b, bias.as_deref(), &c, path)
        }),
    }
}

/// The GEMMs of a training step at batch 1024, d_in 512, d_sae 16384 (the encoder first),
/// plus the encoder at d_sae 256 on each kernel path for comparison.
fn gemm_cases(gpu: &Gpu) -> saeforge::Result<Vec<Case>> {
    let (bsz, d, n) = (1024, 512, 16384);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut up = |what: &str, shape: &[usize]| -> saeforge::Result<Rc<GpuTensor>> {
        let data = random(&mut rng, shape.iter().product());
        Ok(Rc::new(gpu.upload(what, shape, &data)?))
    };
    let x = up("x", &[bsz, d])?;
    let w_enc = up("W_enc", &[d, n])?;
    let b_enc = up("b_enc", &[n])?;
    let z = up("z", &[bsz, n])?;
    let w_dec = up("W_dec", &[n, d])?;
    let b_dec = up("b_dec", &[d])?;
    let w_small = up("W_enc[:, :256]", &[d, 256])?;
    let b_small = up("b_enc[:256]", &[256])?;
    let out_bn = Rc::new(gpu.zeros("out (B, n)", &[bsz, n])?);
    let out_bd = Rc::new(gpu.zeros("out (B, d)", &[bsz, d])?);
    let out_nd = Rc::new(gpu.zeros("out (n, d)", &[n, d])?);
    let out_dn = Rc::new(gpu.zeros("out (d, n)", &[d, n])?);
    let out_1n = Rc::new(gpu.zeros("out (1, n)", &[1, n])?);
    let out_small = Rc::new(gpu.zeros("out (B, 256)", &[bsz, 256])?);
    let x1 = up("x[0]", &[1, d])?;
    let sp = |m, nn, k, ta, tb| GemmSpec {
        m,
        n: nn,
        k,
        trans_a: ta,
        trans_b: tb,
        alpha: 1.0,
        beta: 0.0,
    };
    let auto = GemmPath::Auto;
    let mut cases = vec![
        // pre = x W_enc + b_enc: the one dense product of a TopK step
        gemm_case(
            gpu,
            "gemm_encoder",
            sp(bsz, n, d, false, false),
            &x,
            &w_enc,
            Some(&b_enc),
            &out_bn,
            auto,
        ),
        // x_hat = z W_dec + b_dec, dense (ReLU / JumpReLU SAEs)
        gemm_case(
            gpu,
            "gemm_decoder",
            sp(bsz, d, n, false, false),
            &z,
            &w_dec,
            Some(&b_dec),
            &out_bd,
            auto,
        ),
        // dz = dx_hat W_dec^T
        gemm_case(
            gpu,
            "gemm_dz",
            sp(bsz, n, d, false, true),
            &x,
            &w_dec,
            None,
            &out_bn,
            auto,
        ),
        // dW_dec = z^T dx_hat
        gemm_case(
            gpu,
            "gemm_dw_dec",
            sp(n, d, bsz, true, false),
            &z,
            &x,
            None,
            &out_nd,
            auto,
        ),
        // dW_enc = x^T dpre
        gemm_case(
            gpu,
            "gemm_dw_enc",
            sp(d, n, bsz, true, false),
            &x,
            &z,
            None,
            &out_dn,
            auto,
        ),
        // one row against W_dec^T
        gemm_case(
            gpu,
            "gemm_row_nt",
            sp(1, n, d, false, true),
            &x1,
            &w_dec,
            None,
            &out_1n,
            auto,
        ),
    ];
    for path in [GemmPath::Texture, GemmPath::Tiled, GemmPath::General] {
        let s = sp(bsz, 256, d, false, false);
        if path == GemmPath::Texture && !gemm::texture_fits(gpu, &s) {
            continue;
        }
        cases.push(gemm_case(
            gpu,
            &format!("gemm_encoder_n256_{}", path.name()),
            s,
            &x,
            &w_small,
            Some(&b_small),
            &out_small,
            path,
        ));
    }
    Ok(cases)
}

// ------------------------------------------------------------------ main

fn main() -> anyhow::Result<()> {
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
        timings.iter_mut().for_each(|t| t.cpu = None);
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
        "{:<28} {:<8} {:<36} {:>10} {:>14} {:>7} {:>9}",
        "kernel", "variant", "shape", "ms", "rate", "frac", "frac(cpu)"
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
            "{:<28} {:<8} {:<36} {:>10.2} {:>6.2} {:<7} {:>7.3} {:>9}",
            case.name,
            case.variant,
            case.shape,
            t.wall * 1e3,
            r,
            unit,
            frac,
            frac_cpu.map_or("-".to_string(), |f| format!("{f:.3}"))
        );
        let mut row = serde_json::json!({
            "name": case.name,
            "shape": case.shape,
            "variant": case.variant,
            "ms": t.wall * 1e3,
            "runs": t.runs,
            "fraction_of_ceiling": frac,
        });
        let key = match case.work {
            Work::Flops(_) => "gflops",
            Work::Bytes(_) => "gbps",
        };
        row[key] = serde_json::json!(r);
        if let (Some(c), Some(f)) = (t.cpu, frac_cpu) {
            row["cpu_ms"] = serde_json::json!(c * 1e3);
            row["fraction_of_ceiling_cpu"] = serde_json::json!(f);
        }
        rows.push(row);
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
            "copy_gbps_cpu": ceilings.copy_gbps_cpu,
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
