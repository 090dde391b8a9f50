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
//! Cases: the GEMMs of a training step (rated in FLOPs against the FMA ceiling), then every
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
//! To add kernels: write a function returning `Vec<Case>` (see `gemm_cases`, `sparse_cases`)
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

#[path = "kernels/step_extra.rs"]
mod step_extra;

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
    Ok(Timing {
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
    gemm_case_tuned(gpu, name, spec, a, b, bias, c, path, GemmTuning::of(gpu))
}

#[allow(clippy::too_many_arguments)]
fn gemm_case_tuned(
    gpu: &Gpu,
    name: &str,
    spec: GemmSpec,
    a: &Rc<GpuTensor>,
    b: &Rc<GpuTensor>,
    bias: Option<&Rc<GpuTensor>>,
    c: &Rc<GpuTensor>,
    path: GemmPath,
    tuning: GemmTuning,
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
    let variant = match resolved {
        GemmPath::TextureSubgroup if path == GemmPath::Auto && spec.m <= 8 => "sg8".to_string(),
        GemmPath::TextureSubgroup => format!("sg{}", tuning.sg_rows),
        p => p.name().to_string(),
    };
    let (a, b, bias, c) = (a.clone(), b.clone(), bias.cloned(), c.clone());
    Case {
        name: name.to_string(),
        shape,
        variant,
        work: Work::Flops(spec.flops()),
        record: Box::new(move |g, e| {
            gemm::gemm_tuned(g, e, &spec, &a, &b, bias.as_deref(), &c, path, &tuning)
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
    // The production encoder on each texture kernel (the first case is whichever Auto picks).
    let enc_spec = sp(bsz, n, d, false, false);
    if gemm::texture_fits(gpu, &enc_spec) {
        let tex = GemmTuning::of(gpu);
        let mut variants = vec![("gemm_encoder_texture", GemmPath::Texture, tex)];
        if gpu.has_subgroups(8) {
            for (name, rows) in [
                ("gemm_encoder_sg8", 8),
                ("gemm_encoder_sg16", 16),
                ("gemm_encoder_sg32", 32),
            ] {
                let t = GemmTuning {
                    sg_rows: rows,
                    ..tex
                };
                variants.push((name, GemmPath::TextureSubgroup, t));
            }
        }
        for (name, path, tuning) in variants {
            cases.push(gemm_case_tuned(
                gpu,
                name,
                enc_spec,
                &x,
                &w_enc,
                Some(&b_enc),
                &out_bn,
                path,
                tuning,
            ));
        }
    }
    // The encoder with the block maxima of its output (codes::selection::block_max, block 32; of
    // pre - off for JumpReLU) that every code stage reads: fused into the GEMM's epilogue
    // (gemm_block_max) against the GEMM then block_max; main prints the ratio of each pair.
    let nb = codes::blocks(n, codes::BLOCK);
    let bmax = Rc::new(gpu.zeros_u32("bmax (B, n / 32)", &[bsz, nb])?);
    let off = up("off", &[n])?;
    for (label, with_off) in [
        ("gemm_encoder_bmax", false),
        ("gemm_encoder_bmax_off", true),
    ] {
        for fused in [true, false] {
            let mut case = gemm_case(
                gpu,
                &format!("{label}_{}", if fused { "fused" } else { "separate" }),
                enc_spec,
                &x,
                &w_enc,
                Some(&b_enc),
                &out_bn,
                auto,
            );
            let (x, w, b, c, bm) = (
                x.clone(),
                w_enc.clone(),
                b_enc.clone(),
                out_bn.clone(),
                bmax.clone(),
            );
            let off = with_off.then(|| off.clone());
            let is_fused =
                fused && gemm::fuses_block_max(gpu, &enc_spec, auto, &GemmTuning::of(gpu));
            // "fused" when one kernel does both, else the GEMM's path (then block_max).
            if is_fused {
                case.variant = "fused".to_string();
            }
            case.record = Box::new(move |g, e| {
                let o = off.as_deref();
                if fused {
                    gemm::gemm_block_max(g, e, &enc_spec, &x, &w, Some(&b), &c, o, &bm)
                } else {
                    gemm::gemm(g, e, &enc_spec, &x, &w, Some(&b), &c)?;
                    codes::selection::block_max(g, e, &c, codes::BLOCK, None, o, &bm)
                }
            });
            cases.push(case);
        }
    }
    for path in [
        GemmPath::Texture,
        GemmPath::Reg,
        GemmPath::Tiled,
        GemmPath::General,
    ] {
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
    cases.extend(reg_cases(
        gpu, &x, &w_enc, &b_enc, &out_bn, &z, &w_dec, &b_dec, &out_bd,
    )?);
    Ok(cases)
}

/// gemm_reg (GemmPath::Reg) against gemm_tiled, whatever Auto picks: the decoder shape with
/// k = 2048 on every adapter (1024 x 512 x 2048, what lavapipe can time); on hardware
/// adapters also the production encoder and decoder on both, a sweep of gemm_reg's tiles
/// on the encoder (gemm_sweep_reg_<wx>x<wy>x<bk>: tile (8 wy) x (8 wx), bk k-steps per
/// stage), and 4096 x 4096 x 65536 (gemm_big_*, when the adapter binds 1 GiB).
#[allow(clippy::too_many_arguments)]
fn reg_cases(
    gpu: &Gpu,
    x: &Rc<GpuTensor>,
    w_enc: &Rc<GpuTensor>,
    b_enc: &Rc<GpuTensor>,
    out_bn: &Rc<GpuTensor>,
    z: &Rc<GpuTensor>,
    w_dec: &Rc<GpuTensor>,
    b_dec: &Rc<GpuTensor>,
    out_bd: &Rc<GpuTensor>,
) -> saeforge::Result<Vec<Case>> {
    let [bsz, d] = [x.shape[0], x.shape[1]];
    let n = w_enc.shape[1];
    let enc = GemmSpec::nn(bsz, n, d);
    let dec = GemmSpec::nn(bsz, d, n);
    let paths = [GemmPath::Reg, GemmPath::Tiled];
    let mut cases = Vec::new();
    let k_short = 2048;
    let z_short = Rc::new(z.prefix(&[bsz, k_short]));
    let w_short = Rc::new(w_dec.prefix(&[k_short, d]));
    for path in paths {
        cases.push(gemm_case(
            gpu,
            &format!("gemm_decoder_k{k_short}_{}", path.name()),
            GemmSpec::nn(bsz, d, k_short),
            &z_short,
            &w_short,
            Some(b_dec),
            out_bd,
            path,
        ));
    }
    // The adapter's own type, not SAEFORGE_FORCE_PATH's: lavapipe would take minutes here.
    if gpu.info.device_type == wgpu::DeviceType::Cpu {
        return Ok(cases);
    }
    for path in paths {
        cases.push(gemm_case(
            gpu,
            &format!("gemm_encoder_{}", path.name()),
            enc,
            x,
            w_enc,
            Some(b_enc),
            out_bn,
            path,
        ));
        cases.push(gemm_case(
            gpu,
            &format!("gemm_decoder_{}", path.name()),
            dec,
            z,
            w_dec,
            Some(b_dec),
            out_bd,
            path,
        ));
    }
    let own = GemmTuning::of(gpu);
    for (wx, wy, bk) in [
        (16, 16, 8),
        (16, 16, 16),
        (16, 16, 32),
        (16, 8, 16),
        (8, 16, 16),
        (8, 8, 16),
        (32, 8, 16),
    ] {
        let rg = RegTiles { wx, wy, bk };
        if rg.unfit(&gpu.limits, false).is_some() {
            continue;
        }
        let mut case = gemm_case_tuned(
            gpu,
            &format!("gemm_sweep_reg_{wx}x{wy}x{bk}"),
            enc,
            x,
            w_enc,
            Some(b_enc),
            out_bn,
            GemmPath::Reg,
            GemmTuning { rg, ..own },
        );
        case.variant = format!("{}x{} bk {bk}", rg.bm(), rg.bn());
        cases.push(case);
    }
    let (bm, bk, bn) = (4096, 4096, 65536);
    let gib = (bk * bn * 4) as u64;
    if gpu.limits.max_storage_buffer_binding_size >= gib && gpu.limits.max_buffer_size >= gib {
        let a = Rc::new(gpu.zeros("big A", &[bm, bk])?);
        let b = Rc::new(gpu.zeros("big B", &[bk, bn])?);
        let c = Rc::new(gpu.zeros("big C", &[bm, bn])?);
        for path in paths {
            cases.push(gemm_case(
                gpu,
                &format!("gemm_big_{}", path.name()),
                GemmSpec::nn(bm, bn, bk),
                &a,
                &b,
                None,
                &c,
                path,
            ));
        }
    }
    Ok(cases)
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
    mask: T,
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
    topk::topk(gpu, &mut enc, &pre, None, &idx, &pre_val)?;
    relu_forward(gpu, &mut enc, &pre_val, &val)?;
    sparse::row_ptr_fixed(gpu, &mut enc, B, K, &row_ptr)?;
    sparse::sparse_dot(gpu, &mut enc, &row_ptr, &idx, &dy, &w_dec, B, N, D, &gslot)?;
    relu_backward(gpu, &mut enc, &pre_val, &gslot, &dval)?;
    sparse::build_transpose(
        gpu, &mut enc, &row_ptr, &idx, B, N, &lat_ptr, &lat_row, &lat_slot,
    )?;
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
    let mask_h: Vec<u32> = since_h.iter().map(|&s| (s >= DEAD_AFTER) as u32).collect();
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
        mask: Rc::new(gpu.upload_u32("dead mask", &[N], &mask_h)?),
        since: Rc::new(gpu.upload_u32("since_fired", &[N], &since_h)?),
    })
}

/// Tokens without firing after which a latent counts as dead (the cases' dead_after).
const DEAD_AFTER: u32 = 10_000_000;

fn activation_cases(t: &Inputs) -> Vec<Case> {
    let bn = format!("B={B}, n={N}");
    let mut v = Vec::new();
    // read pre (B n), write z (B n)
    let (pre, z) = (t.pre.clone(), t.out_bn.clone());
    v.push(bytes_case(
        "relu_forward",
        "-",
        bn.clone(),
        b4(2 * B * N),
        Box::new(move |g, e| relu_forward(g, e, &pre, &z)),
    ));
    // read pre, dz (2 B n), write dpre (B n)
    let (pre, dz, dpre) = (t.pre.clone(), t.dz.clone(), t.out_bn.clone());
    v.push(bytes_case(
        "relu_backward",
        "-",
        bn.clone(),
        b4(3 * B * N),
        Box::new(move |g, e| relu_backward(g, e, &pre, &dz, &dpre)),
    ));
    // read pre (B n), log_theta (n), write z (B n)
    let (pre, lt, z) = (t.pre.clone(), t.log_theta.clone(), t.out_bn.clone());
    v.push(bytes_case(
        "jumprelu_forward",
        "-",
        bn.clone(),
        b4(2 * B * N + N),
        Box::new(move |g, e| activations::jumprelu_forward(g, e, &pre, B, N, &lt, &z)),
    ));
    // read pre, dz (2 B n), log_theta (n), write dpre (B n), dlog_theta (n)
    let (pre, dz, lt, dpre, dlt) = (
        t.pre.clone(),
        t.dz.clone(),
        t.log_theta.clone(),
        t.out_bn.clone(),
        t.out_n.clone(),
    );
    v.push(bytes_case(
        "jumprelu_backward",
        "vec4",
        bn,
        b4(3 * B * N + 2 * N),
        Box::new(move |g, e| {
            activations::jumprelu_backward(g, e, &pre, &dz, B, N, &lt, 0.05, 1e-3, &dpre, &dlt)
        }),
    ));
    v
}

fn topk_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let mut v = Vec::new();
    // read pre (B n), write idx, val (2 B k)
    let (pre, idx, val) = (
        t.pre.clone(),
        zeros_u32("idx", &[B, K])?,
        zeros("val", &[B, K])?,
    );
    v.push(bytes_case(
        "topk",
        "radix",
        format!("B={B}, n={N}, k={K}"),
        b4(B * N + 2 * B * K),
        Box::new(move |g, e| topk::topk(g, e, &pre, None, &idx, &val)),
    ));
    // AuxK: read pre (B n), mask (n), write idx, val (2 B k_aux)
    let (pre, mask) = (t.pre.clone(), t.mask.clone());
    let (idx, val) = (
        zeros_u32("aux idx", &[B, K_AUX])?,
        zeros("aux val", &[B, K_AUX])?,
    );
    v.push(bytes_case(
        "topk_aux",
        "radix",
        format!(
            "B={B}, n={N}, k={K_AUX}, {:.0}% dead",
            DEAD_FRACTION * 100.0
        ),
        b4(B * N + N + 2 * B * K_AUX),
        Box::new(move |g, e| topk::topk(g, e, &pre, Some(&mask), &idx, &val)),
    ));
    // read pre (B n), write row_ptr (B + 1), idx, val (2 B k), threshold (1); the kernel
    // reads pre five times (three radix levels, count, scatter): not counted
    let pre = t.pre.clone();
    let row_ptr = zeros_u32("bt row_ptr", &[B + 1])?;
    let (idx, val) = (zeros_u32("bt idx", &[B * K])?, zeros("bt val", &[B * K])?);
    let thr = zeros("bt threshold", &[1])?;
    let scratch = zeros_u32("bt scratch", &[topk::batchtopk_scratch_len(B, N, B * K)])?;
    v.push(bytes_case(
        "batchtopk",
        "radix",
        format!("B={B}, n={N}, k_total={}", B * K),
        b4(B * N + (B + 1) + 2 * B * K + 1),
        Box::new(move |g, e| topk::batchtopk(g, e, &pre, &row_ptr, &idx, &val, &thr, &scratch)),
    ));
    Ok(v)
}

fn sparse_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let u = t.distinct;
    let cap = B * K;
    let codes = format!("B={B}, k={K}, n={N}, d={D}");
    let mut v = Vec::new();
    // write row_ptr (B + 1)
    let rp = zeros_u32("row_ptr out", &[B + 1])?;
    v.push(bytes_case(
        "row_ptr_fixed",
        "-",
        format!("B={B}, k={K}"),
        b4(B + 1),
        Box::new(move |g, e| sparse::row_ptr_fixed(g, e, B, K, &rp)),
    ));
    // read row_ptr (B + 1), idx, val (2 B k), the u rows of W_dec the codes name (u d),
    // b_dec (d); write x_hat (B d)
    let (rp, idx, val, w, bd) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.val.clone(),
        t.w_dec.clone(),
        t.b_dec.clone(),
    );
    let x_hat = zeros("x_hat out", &[B, D])?;
    v.push(bytes_case(
        "sparse_decode",
        "vec4",
        codes.clone(),
        b4((B + 1) + 2 * cap + u * D + D + B * D),
        Box::new(move |g, e| {
            sparse::sparse_decode(g, e, &rp, &idx, &val, &w, Some(&bd), B, N, D, &x_hat)
        }),
    ));
    // read row_ptr (B + 1), idx (B k), dy (B d), the u rows of W_dec (u d); write g (B k)
    let (rp, idx, dy, w) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.dy.clone(),
        t.w_dec.clone(),
    );
    let gs = zeros("gslot out", &[cap])?;
    v.push(bytes_case(
        "sparse_dot",
        "vec4",
        codes.clone(),
        b4((B + 1) + cap + B * D + u * D + cap),
        Box::new(move |g, e| sparse::sparse_dot(g, e, &rp, &idx, &dy, &w, B, N, D, &gs)),
    ));
    // read row_ptr (B + 1), idx (B k); write lat_ptr (n + 1), lat_row, lat_slot (2 B k)
    let (rp, idx) = (t.row_ptr.clone(), t.idx.clone());
    let lp = zeros_u32("lat_ptr out", &[N + 1])?;
    let lr = zeros_u32("lat_row out", &[cap])?;
    let ls = zeros_u32("lat_slot out", &[cap])?;
    v.push(bytes_case(
        "build_transpose",
        "6 pass",
        format!("B={B}, k={K}, n={N}"),
        b4((B + 1) + cap + (N + 1) + 2 * cap),
        Box::new(move |g, e| sparse::build_transpose(g, e, &rp, &idx, B, N, &lp, &lr, &ls)),
    ));
    // read lat_ptr (n + 1), lat_row, lat_slot, val (3 B k), dy (B d); write dw_dec (n d)
    let (lp, lr, ls, val, dy) = (
        t.lat_ptr.clone(),
        t.lat_row.clone(),
        t.lat_slot.clone(),
        t.val.clone(),
        t.dy.clone(),
    );
    let dw = zeros("dW_dec out", &[N, D])?;
    v.push(bytes_case(
        "gather_dw_dec",
        "vec4",
        codes.clone(),
        b4((N + 1) + 3 * cap + B * D + N * D),
        Box::new(move |g, e| {
            sparse::gather_dw_dec(g, e, &lp, &lr, &ls, &val, &dy, N, D, false, &dw)
        }),
    ));
    // read lat_ptr (n + 1), lat_row, lat_slot, dval (3 B k), xc (B d); write dw_enc (d n)
    let (lp, lr, ls, dval, xc) = (
        t.lat_ptr.clone(),
        t.lat_row.clone(),
        t.lat_slot.clone(),
        t.dval.clone(),
        t.xc.clone(),
    );
    let dw = zeros("dW_enc out", &[D, N])?;
    v.push(bytes_case(
        "gather_dw_enc",
        "vec4",
        codes.clone(),
        b4((N + 1) + 3 * cap + B * D + D * N),
        Box::new(move |g, e| {
            sparse::gather_dw_enc(g, e, &lp, &lr, &ls, &dval, &xc, N, D, false, &dw)
        }),
    ));
    // read lat_ptr (n + 1), lat_slot, dval (2 B k); write db_enc (n)
    let (lp, ls, dval, db) = (
        t.lat_ptr.clone(),
        t.lat_slot.clone(),
        t.dval.clone(),
        t.out_n.clone(),
    );
    v.push(bytes_case(
        "gather_db_enc",
        "-",
        format!("B={B}, k={K}, n={N}"),
        b4((N + 1) + 2 * cap + N),
        Box::new(move |g, e| sparse::gather_db_enc(g, e, &lp, &ls, &dval, N, false, &db)),
    ));
    Ok(v)
}

fn reduce_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let zeros = |what: &str, shape: &[usize]| gpu.zeros(what, shape).map(Rc::new);
    let zeros_u32 = |what: &str, shape: &[usize]| gpu.zeros_u32(what, shape).map(Rc::new);
    let u = t.distinct;
    let cap = B * K;
    let bd = format!("B={B}, d={D}");
    let bn = format!("B={B}, n={N}");
    let nd = format!("n={N}, d={D}");
    let metrics = zeros("metrics", &[reduce::METRIC_SLOTS])?;
    let fired = zeros_u32("fired", &[N])?;
    let mut v = Vec::new();
    // read x (B d), b (d); write out (B d)
    let (x, b) = (t.x.clone(), t.b_dec.clone());
    let out = zeros("sub_row out", &[B, D])?;
    v.push(bytes_case(
        "sub_row",
        "-",
        bd.clone(),
        b4(2 * B * D + D),
        Box::new(move |g, e| reduce::sub_row(g, e, &x, &b, B, D, &out)),
    ));
    // read a, b (2 B d); write out (B d)
    let (a, b) = (t.x.clone(), t.x_hat.clone());
    let out = zeros("sub out", &[B, D])?;
    v.push(bytes_case(
        "sub",
        "-",
        bd.clone(),
        b4(3 * B * D),
        Box::new(move |g, e| reduce::sub(g, e, &a, &b, &out)),
    ));
    // read target, pred (2 B d); write grad (B d); metrics SSE, SST read-write (4)
    let (x, xh, m) = (t.x.clone(), t.x_hat.clone(), metrics.clone());
    let grad = zeros("mse grad", &[B, D])?;
    v.push(bytes_case(
        "mse_backward",
        "+SST",
        bd.clone(),
        b4(3 * B * D + 4),
        Box::new(move |g, e| {
            reduce::mse_backward(
                g,
                e,
                &x,
                &xh,
                B,
                D,
                2.0 / B as f32,
                &grad,
                &m,
                reduce::slot::SSE,
                Some(reduce::slot::SST),
            )
        }),
    ));
    // read w (n d); write norms (n)
    let (w, norms) = (t.w_dec.clone(), t.out_n.clone());
    v.push(bytes_case(
        "row_norms",
        "vec4",
        nd.clone(),
        b4(N * D + N),
        Box::new(move |g, e| reduce::row_norms(g, e, &w, N, D, &norms)),
    ));
    // read row_ptr (B + 1), idx, val (2 B k), the u norms the codes name (u); fired of
    // those u latents read-write (2 u); metrics L0, L1 read-write (4)
    let (rp, idx, val, norms, f, m) = (
        t.row_ptr.clone(),
        t.idx.clone(),
        t.val.clone(),
        t.norms.clone(),
        fired.clone(),
        metrics.clone(),
    );
    v.push(bytes_case(
        "sparse_stats",
        "-",
        format!("B={B}, k={K}, n={N}"),
        b4((B + 1) + 2 * cap + u + 2 * u + 4),
        Box::new(move |g, e| reduce::sparse_stats(g, e, &rp, &idx, &val, B, N, &norms, &f, &m)),
    ));
    // read z (B n), norms (n); fired read-write (2 n); metrics L0, L1 read-write (4)
    let (z, norms, f, m) = (t.z.clone(), t.norms.clone(), fired.clone(), metrics.clone());
    v.push(bytes_case(
        "dense_stats",
        "-",
        bn.clone(),
        b4(B * N + N + 2 * N + 4),
        Box::new(move |g, e| reduce::dense_stats(g, e, &z, B, N, &norms, &f, &m)),
    ));
    // read a (B n); write out (n)
    let (a, out) = (t.dz.clone(), t.out_n.clone());
    v.push(bytes_case(
        "col_sum",
        "vec4",
        bn.clone(),
        b4(B * N + N),
        Box::new(move |g, e| reduce::col_sum(g, e, &a, B, N, &out, false)),
    ));
    // fired, since, total read-write (6 n); metrics DEAD written (1)
    let since = Rc::new(gpu.upload_u32("since copy", &[N], &gpu.read_u32(&t.since)?)?);
    let total = zeros_u32("fire_total", &[N])?;
    let (f, m) = (fired.clone(), metrics.clone());
    v.push(bytes_case(
        "update_dead",
        "-",
        format!("n={N}"),
        b4(6 * N + 1),
        Box::new(move |g, e| reduce::update_dead(g, e, &f, &since, &total, B, DEAD_AFTER, &m)),
    ));
    // read since (n); write mask (n)
    let since = t.since.clone();
    let mask = zeros_u32("mask out", &[N])?;
    v.push(bytes_case(
        "dead_mask",
        "-",
        format!("n={N}"),
        b4(2 * N),
        Box::new(move |g, e| reduce::dead_mask(g, e, &since, DEAD_AFTER, &mask)),
    ));
    // read z (B n), norms (n); dz read-write (2 B n)
    let (z, norms, dz) = (t.z.clone(), t.norms.clone(), t.out_bn2.clone());
    v.push(bytes_case(
        "l1_backward",
        "-",
        bn.clone(),
        b4(3 * B * N + N),
        Box::new(move |g, e| reduce::l1_backward(g, e, &z, B, N, &norms, 1e-4, &dz)),
    ));
    // read zsum (n), w_dec (n d), norms (n); dw_dec read-write (2 n d)
    let zsum = Rc::new(gpu.upload("zsum", &[N], &vec![1.0; N])?);
    let (w, norms) = (t.w_dec.clone(), t.norms.clone());
    let dw = zeros("l1 dW_dec", &[N, D])?;
    v.push(bytes_case(
        "l1_decoder_grad",
        "-",
        nd,
        b4(3 * N * D + 2 * N),
        Box::new(move |g, e| reduce::l1_decoder_grad(g, e, &zsum, &w, &norms, N, D, 1e-4, &dw)),
    ));
    Ok(v)
}

fn optim_cases(gpu: &Gpu, t: &Inputs) -> saeforge::Result<Vec<Case>> {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let mut up = |what: &str, shape: &[usize], scale: f32| -> saeforge::Result<T> {
        let data = gaussian(&mut rng, shape.iter().product(), scale);
        Ok(Rc::new(gpu.upload(what, shape, &data)?))
    };
    let dn = format!("W_enc: d={D} x n={N}");
    let nd = format!("W_dec: n={N} x d={D}");
    let param = up("W_enc", &[D, N], 0.05)?;
    let grad = up("grad W_enc", &[D, N], 1e-3)?;
    let m = up("adam m", &[D, N], 1e-4)?;
    let v2 = Rc::new(gpu.upload("adam v", &[D, N], &vec![1e-6; D * N])?);
    let clip = Rc::new(gpu.upload("clip", &[2], &[1.0, 1.0])?);
    let acc = up("grad sumsq", &[5], 1.0)?;
    let hyper = Rc::new(optim::hyper_buffer(gpu));
    optim::write_hyper(
        gpu,
        &hyper,
        &optim::AdamHyper::at_step(1e-4, 0.9, 0.999, 1e-8, 0.0, 100),
    );
    let mut v = Vec::new();
    // param, m, v read-write (6 d n), grad read (d n), clip[0] read (1)
    let (p, gr, mm, vv, h, c) = (
        param.clone(),
        grad.clone(),
        m.clone(),
        v2.clone(),
        hyper.clone(),
        clip.clone(),
    );
    v.push(bytes_case(
        "adam",
        "vec4",
        dn.clone(),
        b4(7 * D * N + 1),
        Box::new(move |g, e| optim::adam(g, e, &p, &gr, &mm, &vv, &h, &c)),
    ));
    // read g (d n); write acc[slot] (1)
    let (gr, a) = (grad.clone(), acc.clone());
    v.push(bytes_case(
        "sumsq",
        "vec4",
        dn,
        b4(D * N + 1),
        Box::new(move |g, e| optim::sumsq(g, e, &gr, &a, 0)),
    ));
    // read acc (5); write clip (2)
    // (into its own output, so that adam's clip stays 1)
    let a = acc.clone();
    let clip_out = Rc::new(gpu.zeros("clip out", &[2])?);
    v.push(bytes_case(
        "clip_scale",
        "-",
        "5 slots".to_string(),
        b4(5 + 2),
        Box::new(move |g, e| optim::clip_scale(g, e, &a, 5, 1.0, &clip_out)),
    ));
    // The unit-norm decoder's pair, as the step records it. decoder_grad_prep: read w, g
    // (2 n d); write coef, part (2 n). sum_slot: read part (n). adam_unit_rows: param, m, v
    // read-write (6 n d), grad read (n d), the row re-read for the normalisation (n d),
    // coef read (n).
    let w = Rc::new(gpu.upload("W_dec copy", &[N, D], &gpu.read_f32(&t.w_dec)?)?);
    let gd = up("grad W_dec", &[N, D], 1e-3)?;
    let md = up("adam m W_dec", &[N, D], 1e-4)?;
    let vd = Rc::new(gpu.upload("adam v W_dec", &[N, D], &vec![1e-6; N * D])?);
    let coef = Rc::new(gpu.zeros("decoder coef", &[N])?);
    let part = Rc::new(gpu.zeros("decoder part", &[N])?);
    let (w2, g2, c2, p2) = (w.clone(), gd.clone(), coef.clone(), part.clone());
    v.push(bytes_case(
        "decoder_grad_prep",
        "vec4",
        nd.clone(),
        b4(2 * N * D + 2 * N),
        Box::new(move |g, e| optim::decoder_grad_prep(g, e, &w2, &g2, N, D, &c2, &p2)),
    ));
    let (p2, a) = (part.clone(), acc.clone());
    v.push(bytes_case(
        "sum_slot",
        "-",
        format!("n={N}"),
        b4(N + 1),
        Box::new(move |g, e| optim::sum_slot(g, e, &p2, &a, 1)),
    ));
    v.push(bytes_case(
        "adam_unit_rows",
        "vec4",
        nd,
        b4(8 * N * D + N + 1),
        Box::new(move |g, e| {
            optim::adam_unit_rows(g, e, &w, &gd, &coef, &md, &vd, &hyper, &clip, N, D)
        }),
    ));
    Ok(v)
}

fn ops_cases(gpu: &Gpu) -> saeforge::Result<Vec<Case>> {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let mut v = Vec::new();
    // write a (b d): the AuxK reconstruction a gated path clears
    let a = Rc::new(gpu.upload("e_hat", &[B, D], &gaussian(&mut rng, B * D, 1.0))?);
    v.push(bytes_case(
        "zero",
        "-",
        format!("e_hat: b={B} x d={D}"),
        b4(B * D),
        Box::new(move |g, e| ops::zero(g, e, &a)),
    ));
    // read thr (1); state read-write (2)
    let thr = Rc::new(gpu.upload("batch threshold", &[1], &[0.5])?);
    let state = Rc::new(gpu.upload("threshold", &[1], &[0.4])?);
    v.push(bytes_case(
        "threshold_ema",
        "-",
        "1 value".to_string(),
        b4(3),
        Box::new(move |g, e| ops::threshold_ema(g, e, &thr, &state, 0.99, false)),
    ));
    Ok(v)
}

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
    let inputs = make_inputs(&gpu)?;
    println!(
        "inputs: pre-activations ~ N(0, 1); TopK codes = topk of them (u = {} of {N} latents \
         used); AuxK mask: {:.0}% of latents dead",
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
            "{:<28} {:<8} {:<36} {:>10.2} {:>6} {:<7} {:>7.3} {:>9}",
            case.name,
            case.variant,
            case.shape,
            t.wall * 1e3,
            fmt_rate(r),
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
        let (key, work_key, work) = match case.work {
            Work::Flops(f) => ("gflops", "flops", f),
            Work::Bytes(b) => ("gbps", "bytes", b),
        };
        row[key] = serde_json::json!(r);
        row[work_key] = serde_json::json!(work);
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
    // Fused against separate pairs (gemm_encoder_bmax*): time ratio, wall and CPU.
    for (case, t) in cases.iter().zip(&timings) {
        let Some(label) = case.name.strip_suffix("_fused") else {
            continue;
        };
        let other = format!("{label}_separate");
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
