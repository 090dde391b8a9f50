//! toy_data, toy_forward, toy_grad and toy_sum_chunks against shaders/toy.wgsl, and whole
//! training runs of the toy models on the GPU engine against the CPU engine.

use std::sync::Arc;

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Engine, Gpu};
use saeforge::kernels::toy as k;
use saeforge::reference::toy as r;
use saeforge::reference::toy::{FeatureSets, SetMode, ToyShape};
use saeforge::toy::train::{
    Init, ToyData, TrainConfig, TrainOptions, Training, init_params, train_with,
};

use crate::common::{
    self, assert_close, fail, gpu_test, poisoned, randn, read, tolerance, uniform, up,
};

/// (instances, rows, n, m, chunk): odd sizes that are multiples of no workgroup size, a
/// short last chunk, m = 1 and n = 2 (the phase diagram), the n = 20 -> m = 5 reproduction
/// shape at full batch, and the production shape (the n = 200 -> m = 20 sweep: 20
/// instances, batch 1024).
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1),
    (3, 37, 7, 3, 16),
    (5, 70, 2, 1, 128),
    (7, 1024, 20, 5, 128),
    (20, 1024, 200, 20, 128),
];

/// I_i = 0.9^i, for each of `instances` models of n features.
pub(crate) fn importances(instances: usize, n: usize) -> Vec<f32> {
    (0..instances)
        .flat_map(|_| (0..n).map(|i| 0.9f32.powi(i as i32)))
        .collect()
}

/// The training of a GPU-against-CPU run (either model family): `steps` AdamW steps on
/// batches of `rows`, a fresh seed, no logging.
pub(crate) fn short_training(rng: &mut ChaCha8Rng, steps: u64, rows: usize) -> Training {
    Training {
        steps,
        batch: rows,
        lr: 1e-3,
        weight_decay: 0.01,
        seed: rng.random(),
        eval_batches: 2,
        log_every: 0,
    }
}

/// Densities over the whole range, with 1 (every feature present) always included.
fn densities(rng: &mut ChaCha8Rng, instances: usize) -> Vec<f32> {
    (0..instances)
        .map(|e| {
            if e == 0 {
                1.0
            } else {
                10f32.powf(rng.random_range(-3.0f32..0.0))
            }
        })
        .collect()
}

// ---------------------------------------------------------------- data

/// Feature sets for a data case: none, or sets of 2..=4 features covering most of n (the
/// features after the last set stay independent).
fn sets_for(rng: &mut ChaCha8Rng, n: usize, mode: SetMode) -> FeatureSets {
    if mode == SetMode::Independent || n < 2 {
        return FeatureSets::default();
    }
    let size = rng.random_range(2..=4usize.min(n));
    FeatureSets {
        mode,
        sets: (n / size).max(1),
        size,
    }
}

/// Densities per (instance, feature): instance 0 all 1, the odd instances one density for
/// every feature (the plain sweep), the others one per feature. Anticorrelated sets get
/// densities of at most 1 / size (a set fires with size times its members' density).
fn feature_densities(rng: &mut ChaCha8Rng, s: ToyShape, sets: FeatureSets) -> Vec<f32> {
    let per_instance = densities(rng, s.instances);
    let mut d = Vec::with_capacity(s.instances * s.n);
    for (e, &pe) in per_instance.iter().enumerate() {
        for _ in 0..s.n {
            d.push(if e % 2 == 1 || e == 0 {
                pe
            } else {
                10f32.powf(rng.random_range(-3.0f32..0.0))
            });
        }
    }
    if sets.mode == SetMode::Anticorrelated {
        for v in &mut d {
            *v /= sets.size as f32;
        }
    }
    d
}

fn data_case(gpu: &Gpu, rng: &mut ChaCha8Rng, s: ToyShape, mode: SetMode) -> Result<(), Failed> {
    let sets = sets_for(rng, s.n, mode);
    let density = feature_densities(rng, s, sets);
    let seed: u64 = rng.random();
    let step: u32 = rng.random();
    let d = up(gpu, "density", &[s.instances, s.n], &density)?;
    let x = poisoned(gpu, "x", &[s.instances, s.rows, s.n])?;
    let sb = k::step_buffer(gpu);
    k::write_step_sets(gpu, &sb, step, sets);
    let mut enc = gpu.encoder();
    k::toy_data(gpu, &mut enc, s, seed, &sb, &d, &x).map_err(fail)?;
    gpu.submit(enc);
    let mut want = vec![f32::NAN; s.instances * s.rows * s.n];
    r::toy_data(s, seed, step, sets, &density, &mut want);
    let got = read(gpu, &x)?;
    assert_close("toy_data x", &got, &want, tolerance::EXACT)?;
    // The data must also be what they claim: values in [0, 1), present at rate ~density.
    if want.iter().any(|&v| !(0.0..1.0).contains(&v)) {
        return Err("toy_data: a value outside [0, 1)".into());
    }
    if s.rows * s.n >= 20_000 {
        for e in 0..s.instances {
            let xe = &want[e * s.rows * s.n..(e + 1) * s.rows * s.n];
            let de = &density[e * s.n..(e + 1) * s.n];
            // Every feature's marginal density is its set's first feature's (or its own).
            let p: f64 = (0..s.n)
                .map(|f| de[sets.member(f).map_or(f, |(first, _)| first)] as f64)
                .sum::<f64>()
                / s.n as f64;
            let rate = xe.iter().filter(|&&v| v != 0.0).count() as f64 / xe.len() as f64;
            // Rows of a set are not independent draws: size times the variance at most.
            let sd = (sets.size.max(1) as f64 * p * (1.0 - p) / xe.len() as f64).sqrt();
            // One count of slack: a present feature whose U[0, 1) value is drawn as exactly
            // 0 reads as absent (at density 1, sd is 0 and one such draw would fail).
            let allowed = tolerance::TOY_DENSITY_SIGMAS * sd
                + tolerance::TOY_DENSITY_SLACK
                + 1.0 / xe.len() as f64;
            if (rate - p).abs() > allowed {
                return Err(format!(
                    "toy_data: instance {e} has {rate:.5} of its features present, mean density {p:.5}"
                )
                .into());
            }
        }
    }
    check_sets(&want, s, sets)
}

/// Correlated sets fire all together or not at all; anticorrelated sets one member at most.
/// (A present feature whose value is drawn as exactly 0 reads as absent: a few allowed.)
fn check_sets(x: &[f32], s: ToyShape, sets: FeatureSets) -> Result<(), Failed> {
    if sets.mode == SetMode::Independent {
        return Ok(());
    }
    let (mut mixed, mut rows_sets) = (0usize, 0usize);
    for row in x.chunks_exact(s.n) {
        for set in 0..sets.sets {
            let on = row[set * sets.size..(set + 1) * sets.size]
                .iter()
                .filter(|&&v| v != 0.0)
                .count();
            rows_sets += 1;
            match sets.mode {
                SetMode::Anticorrelated if on > 1 => {
                    return Err(
                        format!("toy_data: {on} members of an anticorrelated set on").into(),
                    );
                }
                SetMode::Correlated if on != 0 && on != sets.size => mixed += 1,
                _ => {}
            }
        }
    }
    if mixed > 2 + rows_sets / 1_000_000 {
        return Err(format!("toy_data: {mixed} correlated sets partly on").into());
    }
    Ok(())
}

// ---------------------------------------------------------------- forward, grad, sum

#[allow(clippy::too_many_arguments)]
fn step_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    s: ToyShape,
    chunk: usize,
    relu: bool,
) -> Result<(), Failed> {
    let ToyShape {
        instances: e,
        rows,
        n,
        m,
    } = s;
    let chunks = s.chunks(chunk);
    let density = feature_densities(rng, s, FeatureSets::default());
    let mut x_h = vec![0.0; e * rows * n];
    let sets = FeatureSets::default();
    r::toy_data(s, rng.random(), rng.random(), sets, &density, &mut x_h);
    let w_h = randn(rng, e * n * m, (2.0 / (n + m) as f32).sqrt());
    let b_h = uniform(rng, e * n, -0.3, 0.1);
    let imp_h = uniform(rng, e * n, 0.05, 1.0);

    let x = up(gpu, "x", &[e, rows, n], &x_h)?;
    let w = up(gpu, "w", &[e, n, m], &w_h)?;
    let b = up(gpu, "b", &[e, n], &b_h)?;
    let imp = up(gpu, "importance", &[e, n], &imp_h)?;
    let h = poisoned(gpu, "h", &[e, rows, m])?;
    let g = poisoned(gpu, "g", &[e, rows, n])?;
    let dh = poisoned(gpu, "dh", &[e, rows, m])?;
    let loss = poisoned(gpu, "loss", &[e, rows])?;
    let pw = poisoned(gpu, "pw", &[e, chunks, n, m])?;
    let pb = poisoned(gpu, "pb", &[e, chunks, n])?;
    let dw = poisoned(gpu, "dw", &[e, n, m])?;
    let db = poisoned(gpu, "db", &[e, n])?;
    let mut enc = gpu.encoder();
    k::toy_forward(gpu, &mut enc, s, relu, &x, &w, &b, &imp, &h, &g, &dh, &loss).map_err(fail)?;
    k::toy_grad(gpu, &mut enc, s, chunk, &x, &g, &h, &dh, &pw, &pb).map_err(fail)?;
    k::toy_sum_chunks(gpu, &mut enc, &pw, e, chunks, n * m, &dw).map_err(fail)?;
    k::toy_sum_chunks(gpu, &mut enc, &pb, e, chunks, n, &db).map_err(fail)?;
    gpu.submit(enc);

    let nan = |len: usize| vec![f32::NAN; len];
    let (mut h_r, mut g_r, mut dh_r, mut loss_r) = (
        nan(e * rows * m),
        nan(e * rows * n),
        nan(e * rows * m),
        nan(e * rows),
    );
    let (mut pw_r, mut pb_r) = (nan(e * chunks * n * m), nan(e * chunks * n));
    let (mut dw_r, mut db_r) = (nan(e * n * m), nan(e * n));
    r::toy_forward(
        s,
        relu,
        &x_h,
        &w_h,
        &b_h,
        &imp_h,
        &mut h_r,
        &mut g_r,
        &mut dh_r,
        &mut loss_r,
    );
    r::toy_grad(s, chunk, &x_h, &g_r, &h_r, &dh_r, &mut pw_r, &mut pb_r);
    r::toy_sum_chunks(&pw_r, e, chunks, n * m, &mut dw_r);
    r::toy_sum_chunks(&pb_r, e, chunks, n, &mut db_r);

    let t = tolerance::TOY_STEP;
    assert_close("toy_forward h", &read(gpu, &h)?, &h_r, t)?;
    assert_close("toy_forward g", &read(gpu, &g)?, &g_r, t)?;
    assert_close("toy_forward dh", &read(gpu, &dh)?, &dh_r, t)?;
    assert_close("toy_forward loss", &read(gpu, &loss)?, &loss_r, t)?;
    assert_close("toy_grad pw", &read(gpu, &pw)?, &pw_r, t)?;
    assert_close("toy_grad pb", &read(gpu, &pb)?, &pb_r, t)?;
    assert_close("toy_sum_chunks dw", &read(gpu, &dw)?, &dw_r, t)?;
    assert_close("toy_sum_chunks db", &read(gpu, &db)?, &db_r, t)
}

// ---------------------------------------------------------------- training runs

/// `steps` steps of the whole training loop on both engines from the same initialisation
/// (with `mode`: per-feature densities and feature sets, as the lab experiments train).
fn train_case(
    rng: &mut ChaCha8Rng,
    s: ToyShape,
    relu: bool,
    steps: u64,
    mode: SetMode,
) -> Result<(), Failed> {
    let gpu: Arc<Gpu> = common::gpu().map_err(fail)?;
    let density = densities(rng, s.instances);
    let cfg = TrainConfig {
        data: ToyData {
            n: s.n,
            m: s.m,
            importance: importances(s.instances, s.n),
            density,
        },
        relu,
        training: short_training(rng, steps, s.rows),
    };
    let init = init_params(s, Init::Xavier, cfg.training.seed);
    let opts = if mode == SetMode::Independent {
        TrainOptions::default()
    } else {
        let sets = sets_for(rng, s.n, mode);
        TrainOptions {
            feature_density: Some(feature_densities(rng, s, sets)),
            sets,
            snapshot_every: 0,
        }
    };
    let on_gpu =
        train_with(&Engine::Gpu(gpu), &cfg, &opts, init.clone(), &mut |_| {}).map_err(fail)?;
    let on_cpu = train_with(&Engine::Cpu, &cfg, &opts, init, &mut |_| {}).map_err(fail)?;
    let t = tolerance::TOY_TRAIN;
    assert_close("trained w", &on_gpu.params.w, &on_cpu.params.w, t)?;
    assert_close("trained b", &on_gpu.params.b, &on_cpu.params.b, t)?;
    let lg: Vec<f32> = on_gpu.final_loss.iter().map(|&v| v as f32).collect();
    let lc: Vec<f32> = on_cpu.final_loss.iter().map(|&v| v as f32).collect();
    assert_close("final loss", &lg, &lc, t)
}

pub fn trials() -> Vec<Trial> {
    let mut v = Vec::new();
    for &(instances, rows, n, m, chunk) in SHAPES {
        let s = ToyShape {
            instances,
            rows,
            n,
            m,
        };
        for (mode, name) in [
            (SetMode::Independent, "independent"),
            (SetMode::Correlated, "correlated"),
            (SetMode::Anticorrelated, "anticorrelated"),
        ] {
            v.push(gpu_test(
                format!("toy::data/{name}/{instances}x{rows}x{n}"),
                move |gpu, rng| data_case(gpu, rng, s, mode),
            ));
        }
        for relu in [true, false] {
            let model = if relu { "relu" } else { "linear" };
            v.push(gpu_test(
                format!("toy::step/{model}/{instances}x{rows}x{n}x{m}/chunk{chunk}"),
                move |gpu, rng| step_case(gpu, rng, s, chunk, relu),
            ));
        }
    }
    let small = ToyShape {
        instances: 3,
        rows: 37,
        n: 7,
        m: 3,
    };
    let large = ToyShape {
        instances: 7,
        rows: 1024,
        n: 20,
        m: 5,
    };
    for (s, relu, steps, mode) in [
        (small, true, 50, SetMode::Independent),
        (small, true, 50, SetMode::Correlated),
        (small, true, 50, SetMode::Anticorrelated),
        (large, true, 20, SetMode::Independent),
        (large, false, 20, SetMode::Independent),
    ] {
        let model = if relu { "relu" } else { "linear" };
        v.push(gpu_test(
            format!(
                "toy::train/{model}/{mode:?}/{}x{}x{}x{}/{steps}steps",
                s.instances, s.rows, s.n, s.m
            ),
            move |_gpu, rng| train_case(rng, s, relu, steps, mode),
        ));
    }
    v
}
