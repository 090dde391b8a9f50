//! The CPU engine's dense products: `saeforge::blas` (the `gemm` crate) against the plain
//! reference loops and, when a python3 with numpy is on the PATH (or SAEFORGE_NUMPY_PYTHON
//! names one), numpy's BLAS (OpenBLAS in the usual wheels) on the same shapes in the same run.
//!
//!     cargo bench --bench blas
//!
//! Shapes: the encoder product of a step at the three shapes of the speed issue (128 -> 1024
//! at batch 1024, 384 -> 6144 at 512, 512 -> 16384 at 4096), the last also at batches 256 and
//! 64 (few rows: `blas` splits the columns between threads) and transposed as the dense
//! backward's dW_enc. Each: one warm-up, then the median of several runs. Prints
//! GFLOP/s and the ratio blas / numpy; writes target/bench/blas.json.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use saeforge::blas;
use saeforge::reference::gemm::{GemmSpec, gemm};
use serde_json::json;

fn median_seconds(mut f: impl FnMut(), budget: f64) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed().as_secs_f64() < budget && times.len() < 50) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// numpy's GFLOP/s for C = op(A) op(B) at this spec, measured by a python3 subprocess.
fn numpy_gflops(spec: &GemmSpec) -> Option<f64> {
    let python = std::env::var("SAEFORGE_NUMPY_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import numpy as np, time\n\
         m, n, k = {m}, {n}, {k}\n\
         a = np.random.randn(*(({k}, {m}) if {ta} else ({m}, {k}))).astype(np.float32)\n\
         b = np.random.randn(*(({n}, {k}) if {tb} else ({k}, {n}))).astype(np.float32)\n\
         f = lambda: (a.T if {ta} else a) @ (b.T if {tb} else b)\n\
         f(); ts = []\n\
         t0 = time.perf_counter()\n\
         while len(ts) < 3 or (time.perf_counter() - t0 < 2 and len(ts) < 50):\n\
         \x20   t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)\n\
         ts.sort(); print(2 * m * n * k / ts[len(ts) // 2] / 1e9)\n",
        m = spec.m,
        n = spec.n,
        k = spec.k,
        ta = if spec.trans_a { "True" } else { "False" },
        tb = if spec.trans_b { "True" } else { "False" },
    );
    let out = Command::new(python).arg("-c").arg(script).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let cases = [
        ("encoder 128->1024", GemmSpec::nn(1024, 1024, 128)),
        ("encoder 384->6144", GemmSpec::nn(512, 6144, 384)),
        ("encoder 512->16384", GemmSpec::nn(4096, 16384, 512)),
        ("512->16384, batch 256", GemmSpec::nn(256, 16384, 512)),
        ("512->16384, batch 64", GemmSpec::nn(64, 16384, 512)),
        (
            "dW_enc 512->16384",
            GemmSpec {
                trans_a: true,
                ..GemmSpec::nn(512, 16384, 4096)
            },
        ),
    ];
    println!(
        "{:<22} {:>22} {:>12} {:>12} {:>12} {:>10}",
        "case", "shape (m x n x k)", "reference", "blas", "numpy", "blas/numpy"
    );
    let mut rows = Vec::new();
    for (name, spec) in cases {
        let a: Vec<f32> = (0..spec.m * spec.k)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let b: Vec<f32> = (0..spec.k * spec.n)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let mut c = vec![0.0f32; spec.m * spec.n];
        let gf = spec.flops() / 1e9;
        let t_blas = median_seconds(|| blas::gemm(&spec, &a, &b, None, &mut c), 2.0);
        let t_ref = median_seconds(|| gemm(&spec, &a, &b, None, &mut c), 2.0);
        let numpy = numpy_gflops(&spec);
        let shape = format!("{} {}x{}x{}", spec.op_name(), spec.m, spec.n, spec.k);
        println!(
            "{name:<22} {shape:>22} {:>12.1} {:>12.1} {:>12} {:>10}",
            gf / t_ref,
            gf / t_blas,
            numpy.map_or("-".into(), |g| format!("{g:.1}")),
            numpy.map_or("-".into(), |g| format!("{:.2}", gf / t_blas / g)),
        );
        rows.push(json!({
            "case": name, "shape": shape,
            "reference_gflops": gf / t_ref, "blas_gflops": gf / t_blas,
            "numpy_gflops": numpy,
        }));
    }
    println!(
        "(GFLOP/s, median of runs; {} CPUs)",
        std::thread::available_parallelism()?
    );
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("blas.json"),
        serde_json::to_string_pretty(&json!({ "rows": rows }))? + "\n",
    )?;
    Ok(())
}
