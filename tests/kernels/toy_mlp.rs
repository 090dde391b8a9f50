//! mlp_data, mlp_forward and mlp_grad against shaders/toy_mlp.wgsl for each model kind
//! (privileged basis, absolute value, L1, top-k, linear output), whole training runs on the
//! GPU engine against the CPU engine, and a finite-difference check of the twin's gradient.

use std::sync::Arc;

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::{Engine, Gpu};
use saeforge::kernels::toy as kt;
use saeforge::kernels::toy_mlp as k;
use saeforge::reference::toy as rt;
use saeforge::reference::toy_mlp::{self as r, HiddenAct, MlpShape, MlpSpec};
use saeforge::toy::mlp::{MlpConfig, init_mlp, train_mlp};
use saeforge::toy::train::ToyData;

use crate::common::{
    self, assert_close, cpu_test, fail, gpu_test, poisoned, randn, read, tolerance, uniform, up,
};

/// (instances, rows, n, m, chunk): one of everything, odd sizes with a short last chunk,
/// the privileged-basis shape, and the absolute-value default (n 100 -> m 40).
const SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1),
    (3, 37, 7, 3, 16),
    (7, 300, 20, 5, 128),
    (3, 512, 100, 40, 128),
];

fn spec(name: &str) -> MlpSpec {
    let base = MlpSpec {
        act_h: HiddenAct::Relu,
        relu_out: true,
        tied: true,
        hidden_bias: false,
        signed: false,
        abs_target: false,
    };
    match name {
        "privileged" => base,
        "abs" => MlpSpec {
            tied: false,
            hidden_bias: true,
            signed: true,
            abs_target: true,
            ..base
        },
        "topk" => MlpSpec {
            act_h: HiddenAct::TopK,
            hidden_bias: true,
            ..base
        },
        // identity hidden layer, linear output, untied, signed: every other branch
        _ => MlpSpec {
            act_h: HiddenAct::Identity,
            relu_out: false,
            tied: false,
            hidden_bias: true,
            signed: true,
            abs_target: false,
        },
    }
}

const SPECS: &[&str] = &["privileged", "abs", "topk", "linear"];

fn densities(rng: &mut ChaCha8Rng, instances: usize) -> Vec<f32> {
    (0..instances)
        .map(|e| {
            if e == 0 {
                1.0
            } else {
                10f32.powf(rng.random_range(-2.0f32..0.0))
            }
        })
        .collect()
}

/// Random per-instance L1 (0 for the first instance) and k in 1..=m.
fn hyper(rng: &mut ChaCha8Rng, s: MlpShape) -> (Vec<f32>, Vec<u32>) {
    let l1 = (0..s.instances)
        .map(|e| {
            if e == 0 {
                0.0
            } else {
                rng.random_range(0.0..0.3)
            }
        })
        .collect();
    let topk = (0..s.instances)
        .map(|_| rng.random_range(1..=s.m as u32))
        .collect();
    (l1, topk)
}

fn random_params(rng: &mut ChaCha8Rng, s: MlpShape) -> Vec<f32> {
    let (_, ob1, _) = s.offsets();
    let mut prm = randn(
        rng,
        s.instances * s.params(),
        (2.0 / (s.n + s.m) as f32).sqrt(),
    );
    // Biases around small values of both signs.
    for pe in prm.chunks_mut(s.params()) {
        for (b, u) in pe[ob1..].iter_mut().zip(uniform(rng, s.m + s.n, -0.3, 0.2)) {
            *b = u;
        }
    }
    prm
}

// ---------------------------------------------------------------- data

fn data_case(gpu: &Gpu, rng: &mut ChaCha8Rng, s: MlpShape, signed: bool) -> Result<(), Failed> {
    let density = densities(rng, s.instances);
    let seed: u64 = rng.random();
    let step: u32 = rng.random();
    let d = up(gpu, "density", &[s.instances], &density)?;
    let x = poisoned(gpu, "x", &[s.instances, s.rows, s.n])?;
    let sb = kt::step_buffer(gpu);
    kt::write_step(gpu, &sb, step);
    let mut enc = gpu.encoder();
    k::mlp_data(gpu, &mut enc, s, signed, seed, &sb, &d, &x).map_err(fail)?;
    gpu.submit(enc);
    let len = s.instances * s.rows * s.n;
    let mut want = vec![f32::NAN; len];
    r::mlp_data(s, signed, seed, step, &density, &mut want);
    assert_close("mlp_data x", &read(gpu, &x)?, &want, tolerance::EXACT)?;
    if signed {
        if want.iter().any(|&v| !(-1.0..1.0).contains(&v)) {
            return Err("mlp_data: a signed value outside [-1, 1)".into());
        }
    } else {
        // Unsigned, the batch is toy_data's bit for bit.
        let ts = rt::ToyShape {
            instances: s.instances,
            rows: s.rows,
            n: s.n,
            m: s.m,
        };
        let mut toy = vec![f32::NAN; len];
        // toy_data's densities are per (instance, feature).
        let per_feature: Vec<f32> = density.iter().flat_map(|&d| vec![d; s.n]).collect();
        let sets = rt::FeatureSets::default();
        rt::toy_data(ts, seed, step, sets, &per_feature, &mut toy);
        assert_close("mlp_data = toy_data", &want, &toy, tolerance::EXACT)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- forward, grad, sum

struct Twin {
    h: Vec<f32>,
    g: Vec<f32>,
    dpre: Vec<f32>,
    loss: Vec<f32>,
    part: Vec<f32>,
    grad: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn twin(
    s: MlpShape,
    spec: MlpSpec,
    chunk: usize,
    x: &[f32],
    prm: &[f32],
    imp: &[f32],
    l1: &[f32],
    topk: &[u32],
) -> Twin {
    let MlpShape {
        instances: e,
        rows,
        n,
        m,
    } = s;
    let (p, chunks) = (s.params(), s.chunks(chunk));
    let nan = |len: usize| vec![f32::NAN; len];
    let mut t = Twin {
        h: nan(e * rows * m),
        g: nan(e * rows * n),
        dpre: nan(e * rows * m),
        loss: nan(e * rows),
        part: nan(e * chunks * p),
        grad: nan(e * p),
    };
    r::mlp_forward(
        s,
        spec,
        x,
        prm,
        imp,
        l1,
        topk,
        &mut t.h,
        &mut t.g,
        &mut t.dpre,
        &mut t.loss,
    );
    r::mlp_grad(s, spec, chunk, x, &t.g, &t.h, &t.dpre, &mut t.part);
    rt::toy_sum_chunks(&t.part, e, chunks, p, &mut t.grad);
    t
}

fn step_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    s: MlpShape,
    chunk: usize,
    spec: MlpSpec,
) -> Result<(), Failed> {
    let MlpShape {
        instances: e,
        rows,
        n,
        m,
    } = s;
    let (p, chunks) = (s.params(), s.chunks(chunk));
    let density = densities(rng, e);
    let mut x_h = vec![0.0; e * rows * n];
    r::mlp_data(
        s,
        spec.signed,
        rng.random(),
        rng.random(),
        &density,
        &mut x_h,
    );
    let prm_h = random_params(rng, s);
    let imp_h = uniform(rng, e * n, 0.05, 1.0);
    let (l1_h, topk_h) = hyper(rng, s);

    let x = up(gpu, "x", &[e, rows, n], &x_h)?;
    let prm = up(gpu, "prm", &[e, p], &prm_h)?;
    let imp = up(gpu, "importance", &[e, n], &imp_h)?;
    let l1 = up(gpu, "l1", &[e], &l1_h)?;
    let topk = gpu.upload_u32("topk", &[e], &topk_h).map_err(fail)?;
    let h = poisoned(gpu, "h", &[e, rows, m])?;
    let g = poisoned(gpu, "g", &[e, rows, n])?;
    let dpre = poisoned(gpu, "dpre", &[e, rows, m])?;
    let loss = poisoned(gpu, "loss", &[e, rows])?;
    let part = poisoned(gpu, "part", &[e, chunks, p])?;
    let grad = poisoned(gpu, "grad", &[e, p])?;
    let mut enc = gpu.encoder();
    k::mlp_forward(
        gpu, &mut enc, s, spec, &x, &prm, &imp, &l1, &topk, &h, &g, &dpre, &loss,
    )
    .map_err(fail)?;
    k::mlp_grad(gpu, &mut enc, s, spec, chunk, &x, &g, &h, &dpre, &part).map_err(fail)?;
    kt::toy_sum_chunks(gpu, &mut enc, &part, e, chunks, p, &grad).map_err(fail)?;
    gpu.submit(enc);

    let want = twin(s, spec, chunk, &x_h, &prm_h, &imp_h, &l1_h, &topk_h);
    let t = tolerance::TOY_STEP;
    assert_close("mlp_forward h", &read(gpu, &h)?, &want.h, t)?;
    assert_close("mlp_forward g", &read(gpu, &g)?, &want.g, t)?;
    assert_close("mlp_forward dpre", &read(gpu, &dpre)?, &want.dpre, t)?;
    assert_close("mlp_forward loss", &read(gpu, &loss)?, &want.loss, t)?;
    assert_close("mlp_grad part", &read(gpu, &part)?, &want.part, t)?;
    assert_close("toy_sum_chunks grad", &read(gpu, &grad)?, &want.grad, t)
}

// ---------------------------------------------------------------- finite differences

/// The model's batch-mean loss of one instance in f64 (the twin's formulas, written again
/// plainly), and its activation pattern (which h_k > 0, which o_i > 0): the loss is smooth
/// in the parameters while the pattern holds.
#[allow(clippy::too_many_arguments)]
fn loss_f64(
    s: MlpShape,
    spec: MlpSpec,
    x: &[f32],
    w: &[f64],
    imp: &[f32],
    l1: f32,
    topk: u32,
) -> (f64, Vec<bool>) {
    let (n, m, rows) = (s.n, s.m, s.rows);
    let (ow2, ob1, ob2) = s.offsets();
    let mut total = 0.0;
    let mut pattern = Vec::new();
    for r in 0..rows {
        let xr = &x[r * n..(r + 1) * n];
        let pre: Vec<f64> = (0..m)
            .map(|k| w[ob1 + k] + (0..n).map(|i| w[k * n + i] * xr[i] as f64).sum::<f64>())
            .collect();
        let h: Vec<f64> = (0..m)
            .map(|k| match spec.act_h {
                HiddenAct::Identity => pre[k],
                HiddenAct::Relu => pre[k].max(0.0),
                HiddenAct::TopK => {
                    let rank = (0..m)
                        .filter(|&j| pre[j] > pre[k] || (pre[j] == pre[k] && j < k))
                        .count();
                    if rank < topk as usize {
                        pre[k].max(0.0)
                    } else {
                        0.0
                    }
                }
            })
            .collect();
        pattern.extend(h.iter().map(|&v| v > 0.0));
        for i in 0..n {
            let w2 = |k: usize| {
                if spec.tied {
                    w[k * n + i]
                } else {
                    w[ow2 + i * m + k]
                }
            };
            let o = w[ob2 + i] + (0..m).map(|k| w2(k) * h[k]).sum::<f64>();
            pattern.push(o > 0.0);
            let y = if spec.relu_out { o.max(0.0) } else { o };
            let t = if spec.abs_target { xr[i].abs() } else { xr[i] } as f64;
            total += imp[i] as f64 * (y - t) * (y - t);
        }
        total += l1 as f64 * h.iter().map(|v| v.abs()).sum::<f64>();
    }
    (total / rows as f64, pattern)
}

/// The twin's summed gradient (f32) against central differences of the f64 loss, per
/// parameter, skipping a parameter whose +-eps changes the activation pattern (a hidden or
/// output ReLU, a top-k boundary, |h| crossing 0), where the loss is not differentiable.
fn fd_case(rng: &mut ChaCha8Rng, spec: MlpSpec) -> Result<(), Failed> {
    let s = MlpShape {
        instances: 2,
        rows: 6,
        n: 5,
        m: 4,
    };
    let (e, p) = (s.instances, s.params());
    let mut x = vec![0.0; e * s.rows * s.n];
    r::mlp_data(s, spec.signed, rng.random(), 0, &[0.6, 0.9], &mut x);
    let prm = random_params(rng, s);
    let imp = uniform(rng, e * s.n, 0.2, 1.0);
    let l1 = vec![0.0, 0.05];
    let topk = vec![2, 3];
    let chunk = 4;
    let base = twin(s, spec, chunk, &x, &prm, &imp, &l1, &topk);
    let eps = 1e-5f64;
    let (ow2, ob1, _) = s.offsets();
    let (mut fd, mut analytic) = (Vec::new(), Vec::new());
    let mut skipped = 0;
    for inst in 0..e {
        let xe = &x[inst * s.rows * s.n..(inst + 1) * s.rows * s.n];
        let ie = &imp[inst * s.n..(inst + 1) * s.n];
        let we: Vec<f64> = prm[inst * p..(inst + 1) * p]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let f = |w: &[f64]| loss_f64(s, spec, xe, w, ie, l1[inst], topk[inst]);
        let (_, pattern) = f(&we);
        for j in 0..p {
            let g = base.grad[inst * p + j];
            // Parameters the model does not use have a zero gradient by construction.
            if (spec.tied && (ow2..ob1).contains(&j))
                || (!spec.hidden_bias && (ob1..ob1 + s.m).contains(&j))
            {
                if g != 0.0 {
                    return Err(format!("unused parameter {j} has gradient {g}").into());
                }
                continue;
            }
            let (mut plus, mut minus) = (we.clone(), we.clone());
            plus[j] += eps;
            minus[j] -= eps;
            let ((lp, pp), (lm, pm)) = (f(&plus), f(&minus));
            if pp != pattern || pm != pattern {
                skipped += 1;
                continue;
            }
            fd.push(((lp - lm) / (2.0 * eps)) as f32);
            analytic.push(g);
        }
    }
    if fd.len() < 3 * skipped.max(1) {
        return Err(format!("only {} parameters checked, {skipped} at kinks", fd.len()).into());
    }
    assert_close("finite differences", &analytic, &fd, tolerance::MLP_FD)
}

// ---------------------------------------------------------------- training runs

fn train_case(rng: &mut ChaCha8Rng, s: MlpShape, spec: MlpSpec, steps: u64) -> Result<(), Failed> {
    let gpu: Arc<Gpu> = common::gpu().map_err(fail)?;
    let (l1, topk) = hyper(rng, s);
    let cfg = MlpConfig {
        data: ToyData {
            n: s.n,
            m: s.m,
            importance: super::toy::importances(s.instances, s.n),
            density: densities(rng, s.instances),
        },
        spec,
        l1,
        topk,
        training: super::toy::short_training(rng, steps, s.rows),
    };
    let init = init_mlp(s, spec, cfg.training.seed);
    let on_gpu = train_mlp(&Engine::Gpu(gpu), &cfg, init.clone(), &mut |_| {}).map_err(fail)?;
    let on_cpu = train_mlp(&Engine::Cpu, &cfg, init, &mut |_| {}).map_err(fail)?;
    let t = tolerance::TOY_TRAIN;
    assert_close("trained parameters", &on_gpu.params, &on_cpu.params, t)?;
    let lg: Vec<f32> = on_gpu.final_loss.iter().map(|&v| v as f32).collect();
    let lc: Vec<f32> = on_cpu.final_loss.iter().map(|&v| v as f32).collect();
    assert_close("final loss", &lg, &lc, t)
}

pub fn trials() -> Vec<Trial> {
    let mut v = Vec::new();
    for &(instances, rows, n, m, chunk) in SHAPES {
        let s = MlpShape {
            instances,
            rows,
            n,
            m,
        };
        for signed in [false, true] {
            v.push(gpu_test(
                format!("toy_mlp::data/{instances}x{rows}x{n}/signed={signed}"),
                move |gpu, rng| data_case(gpu, rng, s, signed),
            ));
        }
        for &name in SPECS {
            v.push(gpu_test(
                format!("toy_mlp::step/{name}/{instances}x{rows}x{n}x{m}/chunk{chunk}"),
                move |gpu, rng| step_case(gpu, rng, s, chunk, spec(name)),
            ));
        }
    }
    for &name in SPECS {
        v.push(cpu_test(format!("toy_mlp::fd/{name}"), move |rng| {
            fd_case(rng, spec(name))
        }));
        let s = MlpShape {
            instances: 3,
            rows: 200,
            n: 12,
            m: 6,
        };
        v.push(gpu_test(
            format!("toy_mlp::train/{name}/3x200x12x6/30steps"),
            move |_gpu, rng| train_case(rng, s, spec(name), 30),
        ));
    }
    v
}
