//! Shared test machinery: the GPU (or the reason there is none), fresh random inputs with a
//! printed seed, closeness checks that name the worst element, and the tolerance table.
#![allow(dead_code)]

pub mod f64codes;
pub mod tolerance;

use std::sync::{Arc, OnceLock};

use libtest_mimic::{Completion, Failed, Trial};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use saeforge::gpu::{Gpu, GpuOptions, GpuTensor};

pub use tolerance::Tol;

/// The adapter the GPU tests run on, opened once; or why there is none.
pub fn gpu() -> Result<Arc<Gpu>, String> {
    static GPU: OnceLock<Result<Arc<Gpu>, String>> = OnceLock::new();
    GPU.get_or_init(|| {
        // Checked shader modules (wgpu's runtime bounds checks) whatever the build profile:
        // a kernel that strays out of range then reads clamped data and fails its twin
        // test instead of touching other buffers. SAEFORGE_CHECKED_SHADERS=0 runs the
        // tests on the unchecked modules release builds use.
        let options = GpuOptions {
            checked_shaders: std::env::var("SAEFORGE_CHECKED_SHADERS").map_or(true, |v| v != "0"),
            // The training suites compare f32 paths; tests/kernels/gemm_coop.rs opens its own.
            cooperative_matrix: false,
        };
        Gpu::with_options(std::env::var("SAEFORGE_ADAPTER").ok().as_deref(), options)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
    .clone()
}

fn require_gpu() -> bool {
    std::env::var("SAEFORGE_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// A test that needs an adapter. Without one it is reported as ignored with the reason,
/// or fails when SAEFORGE_REQUIRE_GPU=1. The body gets a fresh seeded RNG; a failure
/// message ends with the seed so the case can be replayed with SAEFORGE_TEST_SEED.
pub fn gpu_test<F>(name: impl Into<String>, body: F) -> Trial
where
    F: FnOnce(&Gpu, &mut ChaCha8Rng) -> Result<(), Failed> + Send + 'static,
{
    Trial::ignorable_test(name, move || {
        let gpu = match gpu() {
            Ok(g) => g,
            Err(why) if require_gpu() => {
                return Err(format!("SAEFORGE_REQUIRE_GPU=1 but {why}").into());
            }
            Err(why) => return Ok(Completion::ignored_with(why)),
        };
        let seed = seed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        body(&gpu, &mut rng)
            .map(|()| Completion::Completed)
            .map_err(|e| {
                format!(
                    "{} (SAEFORGE_TEST_SEED={seed})",
                    e.message().unwrap_or("failed")
                )
                .into()
            })
    })
}

/// `gpu_test` for a kernel that needs an adapter capability: when `lacks(gpu)` names what
/// the adapter is missing, the trial is reported as ignored with that reason (never as
/// passed), also under SAEFORGE_REQUIRE_GPU=1, since the adapter itself is there.
pub fn gpu_test_needing<F>(
    name: impl Into<String>,
    lacks: fn(&Gpu) -> Option<String>,
    body: F,
) -> Trial
where
    F: FnOnce(&Gpu, &mut ChaCha8Rng) -> Result<(), Failed> + Send + 'static,
{
    Trial::ignorable_test(name, move || {
        let gpu = match gpu() {
            Ok(g) => g,
            Err(why) if require_gpu() => {
                return Err(format!("SAEFORGE_REQUIRE_GPU=1 but {why}").into());
            }
            Err(why) => return Ok(Completion::ignored_with(why)),
        };
        if let Some(why) = lacks(&gpu) {
            return Ok(Completion::ignored_with(why));
        }
        let seed = seed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        body(&gpu, &mut rng)
            .map(|()| Completion::Completed)
            .map_err(|e| {
                format!(
                    "{} (SAEFORGE_TEST_SEED={seed})",
                    e.message().unwrap_or("failed")
                )
                .into()
            })
    })
}

/// A test that needs no adapter (CPU reference checks).
pub fn cpu_test<F>(name: impl Into<String>, body: F) -> Trial
where
    F: FnOnce(&mut ChaCha8Rng) -> Result<(), Failed> + Send + 'static,
{
    Trial::test(name, move || {
        let seed = seed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        body(&mut rng).map_err(|e| {
            format!(
                "{} (SAEFORGE_TEST_SEED={seed})",
                e.message().unwrap_or("failed")
            )
            .into()
        })
    })
}

/// A fresh, empty folder for one test: `saeforge-<binary>-<pid>-<name>` in the system's
/// temporary folder (removed first if a crashed run left it).
pub fn tmp_dir(binary: &str, name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("saeforge-{binary}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a temporary test folder");
    d
}

/// Fresh per test unless SAEFORGE_TEST_SEED pins it.
pub fn seed() -> u64 {
    if let Ok(s) = std::env::var("SAEFORGE_TEST_SEED")
        && let Ok(v) = s.parse()
    {
        return v;
    }
    rand::rng().random()
}

/// n standard-normal samples times `scale`.
pub fn randn(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal) * scale)
        .collect()
}

/// n samples uniform in [lo, hi).
pub fn uniform(rng: &mut impl Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Pass when |gpu - cpu| <= atol + rtol * |cpu| everywhere. On failure, name the worst
/// element (largest share of its tolerance), both values, and how many elements failed.
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: Tol) -> Result<(), Failed> {
    if gpu.len() != cpu.len() {
        return Err(format!("{what}: gpu has {} elements, cpu {}", gpu.len(), cpu.len()).into());
    }
    let mut worst = (0usize, 0.0f64);
    let mut bad = 0usize;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let allowed = tol.atol as f64 + tol.rtol as f64 * (c as f64).abs();
        let err = (g as f64 - c as f64).abs();
        let share = if g.to_bits() == c.to_bits() {
            0.0
        } else if !g.is_finite() || !c.is_finite() {
            f64::INFINITY
        } else if allowed == 0.0 {
            if err == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            err / allowed
        };
        if share > 1.0 {
            bad += 1;
        }
        if share > worst.1 || (share.is_infinite() && !worst.1.is_infinite()) {
            worst = (i, share);
        }
    }
    if bad > 0 {
        let i = worst.0;
        return Err(format!(
            "{what}: {bad} of {} elements outside tolerance ({}); worst at index {i}: gpu {} cpu {} ({:.2}x the tolerance)",
            gpu.len(),
            tol.name,
            gpu[i],
            cpu[i],
            worst.1
        )
        .into());
    }
    Ok(())
}

/// Exact equality for integer outputs (indices, counts), naming the first difference.
pub fn assert_same(what: &str, gpu: &[u32], cpu: &[u32]) -> Result<(), Failed> {
    if gpu.len() != cpu.len() {
        return Err(format!("{what}: gpu has {} elements, cpu {}", gpu.len(), cpu.len()).into());
    }
    let bad = gpu.iter().zip(cpu).filter(|(g, c)| g != c).count();
    if let Some(i) = gpu.iter().zip(cpu).position(|(g, c)| g != c) {
        return Err(format!(
            "{what}: {bad} of {} elements differ; first at index {i}: gpu {} cpu {}",
            gpu.len(),
            gpu[i],
            cpu[i]
        )
        .into());
    }
    Ok(())
}

/// A tensor on the GPU from host data (the kernel tests' inputs).
pub fn up(gpu: &Gpu, name: &str, shape: &[usize], data: &[f32]) -> Result<GpuTensor, Failed> {
    gpu.upload(name, shape, data).map_err(fail)
}

/// An output tensor filled with NaN, so that an element a kernel forgets to write fails
/// its twin test instead of passing as a leftover zero.
pub fn poisoned(gpu: &Gpu, name: &str, shape: &[usize]) -> Result<GpuTensor, Failed> {
    let t = gpu.zeros(name, shape).map_err(fail)?;
    gpu.fill(&t, f32::NAN);
    Ok(t)
}

/// A tensor's f32 contents on the host.
pub fn read(gpu: &Gpu, t: &GpuTensor) -> Result<Vec<f32>, Failed> {
    gpu.read_f32(t).map_err(fail)
}

/// Turn any Display error into a test failure.
pub fn fail<E: std::fmt::Display>(e: E) -> Failed {
    e.to_string().into()
}

/// The first element at which two parameter sets (parameters, gradients or Adam moments)
/// differ bit for bit: (tensor name, index, a's value, b's value); a length mismatch is
/// reported at the shorter length with NaN for the missing value.
pub fn first_bit_difference(
    a: &saeforge::sae::SaeParams,
    b: &saeforge::sae::SaeParams,
) -> Option<(&'static str, usize, f32, f32)> {
    a.zip(b).into_iter().find_map(|(name, x, y)| {
        let j = x
            .iter()
            .zip(y)
            .position(|(p, q)| p.to_bits() != q.to_bits())
            .or((x.len() != y.len()).then_some(x.len().min(y.len())))?;
        let at = |v: &[f32]| v.get(j).copied().unwrap_or(f32::NAN);
        Some((name, j, at(x), at(y)))
    })
}

/// The python that runs SAELens (SAEFORGE_PEER_PYTHON), checked by running `probe` (a line
/// of python that imports what the test needs), or why the test cannot run.
pub fn peer_python(probe: &str) -> Result<String, String> {
    let py = std::env::var("SAEFORGE_PEER_PYTHON").map_err(|_| {
        "SAEFORGE_PEER_PYTHON is not set (a python with sae_lens, e.g. a venv's bin/python)"
            .to_string()
    })?;
    let ok = std::process::Command::new(&py)
        .args(["-c", probe])
        .output()
        .map_err(|e| format!("SAEFORGE_PEER_PYTHON={py}: cannot run it ({e})"))?;
    if !ok.status.success() {
        return Err(format!("SAEFORGE_PEER_PYTHON={py}: `{probe}` fails"));
    }
    Ok(py)
}

/// A test against the SAELens peer: ignored with the reason when [`peer_python`] finds
/// none (`probe` as there); else `body` runs with a fresh seeded RNG and the python, and a
/// failure message ends with the seed.
pub fn peer_test<F>(name: impl Into<String>, probe: &'static str, body: F) -> Trial
where
    F: FnOnce(&mut ChaCha8Rng, &str) -> Result<(), Failed> + Send + 'static,
{
    Trial::ignorable_test(name, move || {
        let py = match peer_python(probe) {
            Ok(p) => p,
            Err(why) => return Ok(Completion::ignored_with(why)),
        };
        let seed = seed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        body(&mut rng, &py)
            .map(|()| Completion::Completed)
            .map_err(|e| {
                format!(
                    "{} (SAEFORGE_TEST_SEED={seed})",
                    e.message().unwrap_or("failed")
                )
                .into()
            })
    })
}

/// Exact resume: a run of `make(dir/full, 9)` and one of `make(dir/part, 5)` resumed to
/// step 9 (`--resume part --steps 9`) must end in equal states (a failure names the first
/// differing parameter bit). The two checkpoints, for the caller's further checks.
pub fn resume_matches(
    dir: &std::path::Path,
    make: impl Fn(&std::path::Path, u64) -> saeforge::sae::TrainArgs,
) -> Result<
    (
        saeforge::sae::checkpoint::Checkpoint,
        saeforge::sae::checkpoint::Checkpoint,
    ),
    Failed,
> {
    use saeforge::sae::checkpoint::Checkpoint;
    use saeforge::sae::{TrainArgs, train};
    let (full, part) = (dir.join("full"), dir.join("part"));
    train::run(&make(&full, 9)).map_err(fail)?;
    train::run(&make(&part, 5)).map_err(fail)?;
    let resume = TrainArgs {
        resume: Some(part.clone()),
        steps: Some(9),
        ..Default::default()
    };
    train::run(&resume).map_err(fail)?;
    let a = Checkpoint::load(&full).map_err(fail)?;
    let b = Checkpoint::load(&part).map_err(fail)?;
    if a.state.step != 9 || b.state.step != 9 {
        return Err(format!("steps {} and {}, expected 9", a.state.step, b.state.step).into());
    }
    if a.state != b.state {
        if let Some((name, j, x, y)) = first_bit_difference(&a.state.params, &b.state.params) {
            return Err(format!("{name}[{j}]: uninterrupted {x} vs resumed {y}").into());
        }
        return Err("resumed state differs (moments, counters or metrics)".into());
    }
    Ok((a, b))
}
