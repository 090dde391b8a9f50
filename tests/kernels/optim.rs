//! adam, sumsq, clip_scale and the fused unit-norm decoder pair (decoder_grad_prep +
//! sum_slot, adam_unit_rows) against shaders/optim.wgsl, one by one and chained as the
//! training step records them over several steps, with the Adam
//! hyper-parameters rewritten into one uniform buffer between submissions.

use libtest_mimic::{Failed, Trial};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use saeforge::gpu::Gpu;
use saeforge::kernels::optim as k;
use saeforge::reference::optim as r;
use saeforge::reference::optim::AdamHyper;

use crate::common::{assert_close, fail, gpu_test, poisoned, randn, read, tolerance, uniform, up};

/// Elementwise lengths: 1, odd, a multiple of 4 (vec4 path), odd past one workgroup, past
/// the 256-group cap of sumsq's first level on the scalar path, and production (W_enc,
/// 512 x 16384, vec4 path).
const LENS: &[usize] = &[1, 7, 1000, 1001, 100_003, 512 * 16384];

/// (n, d) for the row kernels: d = 1, odd d, d % 4 == 0 (vec4 path), more rows than one
/// grid dimension holds (folded grid), and production W_dec (16384 x 512).
const ROWS: &[(usize, usize)] = &[
    (1, 1),
    (7, 1),
    (37, 45),
    (37, 48),
    (70_001, 1),
    (16384, 512),
];

/// Adam moments as a run would have them: m ~ N(0, 0.1^2), v >= m^2.
fn moments(rng: &mut ChaCha8Rng, len: usize) -> (Vec<f32>, Vec<f32>) {
    let m = randn(rng, len, 0.1);
    let v = m
        .iter()
        .zip(uniform(rng, len, 0.0, 0.01))
        .map(|(&a, b)| a * a + b)
        .collect();
    (m, v)
}

fn hyper(lr: f32, weight_decay: f32, t: u64) -> AdamHyper {
    AdamHyper::at_step(lr, 0.9, 0.999, 1e-8, weight_decay, t)
}

// ---------------------------------------------------------------- adam

fn adam_case(gpu: &Gpu, rng: &mut ChaCha8Rng, len: usize, weight_decay: f32) -> Result<(), Failed> {
    let mut param_h = randn(rng, len, 1.0);
    let grad_h = randn(rng, len, 1.0);
    let (mut m_h, mut v_h) = moments(rng, len);
    // clip[1] (the norm) is poison: adam must read clip[0] only.
    let clip_h = [rng.random_range(0.2f32..1.0), f32::NAN];
    let h = hyper(
        rng.random_range(1e-3f32..1e-2),
        weight_decay,
        rng.random_range(1..2000),
    );

    let param = up(gpu, "param", &[len], &param_h)?;
    let grad = up(gpu, "grad", &[len], &grad_h)?;
    let m = up(gpu, "m", &[len], &m_h)?;
    let v = up(gpu, "v", &[len], &v_h)?;
    let clip = up(gpu, "clip", &[2], &clip_h)?;
    let hb = k::hyper_buffer(gpu);
    k::write_hyper(gpu, &hb, &h);
    let mut enc = gpu.encoder();
    k::adam(gpu, &mut enc, &param, &grad, &m, &v, &hb, &clip).map_err(fail)?;
    gpu.submit(enc);

    r::adam(&mut param_h, &grad_h, &mut m_h, &mut v_h, &h, &clip_h);
    assert_close("adam m", &read(gpu, &m)?, &m_h, tolerance::OPTIM_ADAM)?;
    assert_close("adam v", &read(gpu, &v)?, &v_h, tolerance::OPTIM_ADAM)?;
    assert_close(
        "adam param",
        &read(gpu, &param)?,
        &param_h,
        tolerance::OPTIM_ADAM,
    )
}

// ---------------------------------------------------------------- sumsq

fn sumsq_case(gpu: &Gpu, rng: &mut ChaCha8Rng, len: usize) -> Result<(), Failed> {
    let g_h = randn(rng, len, 1.0);
    let g = up(gpu, "g", &[len], &g_h)?;
    let acc = poisoned(gpu, "acc", &[5])?;
    // Twice into two slots, in two submissions: both must be bitwise equal.
    for slot in [1u32, 3] {
        let mut enc = gpu.encoder();
        k::sumsq(gpu, &mut enc, &g, &acc, slot).map_err(fail)?;
        gpu.submit(enc);
    }
    let got = read(gpu, &acc)?;
    let mut want = vec![f32::NAN; 5];
    r::sumsq(&g_h, &mut want, 1);
    r::sumsq(&g_h, &mut want, 3);
    for i in [0, 2, 4] {
        if !got[i].is_nan() {
            return Err(format!("sumsq wrote slot {i} ({}), not its own", got[i]).into());
        }
    }
    if got[1].to_bits() != got[3].to_bits() {
        return Err(format!(
            "sumsq not deterministic: {} then {} for the same input",
            got[1], got[3]
        )
        .into());
    }
    assert_close("sumsq acc", &got[1..2], &want[1..2], tolerance::OPTIM_SUMSQ)
}

// ---------------------------------------------------------------- clip_scale

/// `ratio`: max_norm as a multiple of the true norm (0: clipping disabled).
fn clip_case(gpu: &Gpu, rng: &mut ChaCha8Rng, ratio: f32) -> Result<(), Failed> {
    // Three slots used; the two after them are poison that must not be read.
    let mut acc_h = uniform(rng, 3, 0.0, 100.0);
    acc_h.extend([f32::NAN, f32::NAN]);
    let mut want = [f32::NAN; 2];
    r::clip_scale(&acc_h, 3, 0.0, &mut want);
    let max_norm = ratio * want[1];
    r::clip_scale(&acc_h, 3, max_norm, &mut want);
    let clipping = ratio > 0.0 && ratio < 1.0;
    if clipping != (want[0] < 1.0) {
        return Err(format!("case setup: ratio {ratio} gave scale {}", want[0]).into());
    }

    let acc = up(gpu, "acc", &[5], &acc_h)?;
    let clip = poisoned(gpu, "clip", &[2])?;
    let mut enc = gpu.encoder();
    k::clip_scale(gpu, &mut enc, &acc, 3, max_norm, &clip).map_err(fail)?;
    gpu.submit(enc);
    assert_close(
        "clip_scale [scale, norm]",
        &read(gpu, &clip)?,
        &want,
        tolerance::OPTIM_CLIP,
    )
}

// ---------------------------------------------------------------- row kernels

/// Random (n, d) matrix with rows 2, 7, 12, ... zero.
fn rows_with_zeros(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
    let mut w = randn(rng, n * d, 1.0);
    for i in (2..n).step_by(5) {
        w[i * d..(i + 1) * d].fill(0.0);
    }
    w
}

/// The fused unit-norm decoder kernels: decoder_grad_prep (+ sum_slot) against their
/// twins, then adam_unit_rows against its twin fed the device's coefficients (so that it is
/// judged alone); rows of zero w included.
fn fused_decoder_case(gpu: &Gpu, rng: &mut ChaCha8Rng, n: usize, d: usize) -> Result<(), Failed> {
    let w_h = rows_with_zeros(rng, n, d);
    let g_h = randn(rng, n * d, 1.0);
    let (m_h, v_h) = moments(rng, n * d);
    let clip_h = [rng.random_range(0.5f32..1.0), 0.0];
    let h = hyper(1e-3, 0.0, 7);
    let w = up(gpu, "w", &[n, d], &w_h)?;
    let g = up(gpu, "g", &[n, d], &g_h)?;
    let m = up(gpu, "m", &[n, d], &m_h)?;
    let v = up(gpu, "v", &[n, d], &v_h)?;
    let clip = up(gpu, "clip", &[2], &clip_h)?;
    let coef = poisoned(gpu, "coef", &[n])?;
    let part = poisoned(gpu, "part", &[n])?;
    let acc = poisoned(gpu, "acc", &[3])?;
    let hb = k::hyper_buffer(gpu);
    k::write_hyper(gpu, &hb, &h);
    let mut enc = gpu.encoder();
    let e = &mut enc;
    k::decoder_grad_prep(gpu, e, &w, &g, n, d, &coef, &part).map_err(fail)?;
    k::sum_slot(gpu, e, &part, &acc, 2).map_err(fail)?;
    k::adam_unit_rows(gpu, e, &w, &g, &coef, &m, &v, &hb, &clip, n, d).map_err(fail)?;
    gpu.submit(enc);
    let mut c_coef = vec![0.0f32; n];
    let mut c_part = vec![0.0f32; n];
    r::decoder_grad_prep(&w_h, &g_h, n, d, &mut c_coef, &mut c_part);
    let g_coef = read(gpu, &coef)?;
    let g_part = read(gpu, &part)?;
    let t = tolerance::OPTIM_DECODER_PREP;
    assert_close("decoder_grad_prep coef", &g_coef, &c_coef, t)?;
    assert_close("decoder_grad_prep part", &g_part, &c_part, t)?;
    let mut c_acc = vec![0.0f32; 3];
    r::sum_slot(&g_part, &mut c_acc, 2);
    let g_acc = read(gpu, &acc)?;
    assert_close("sum_slot", &g_acc[2..], &c_acc[2..], tolerance::OPTIM_SUMSQ)?;
    let (mut p_h, mut mm, mut vv) = (w_h.clone(), m_h.clone(), v_h.clone());
    r::adam_unit_rows(&mut p_h, &g_h, &g_coef, &mut mm, &mut vv, &h, &clip_h, n, d);
    assert_close(
        "adam_unit_rows m",
        &read(gpu, &m)?,
        &mm,
        tolerance::OPTIM_ADAM,
    )?;
    assert_close(
        "adam_unit_rows v",
        &read(gpu, &v)?,
        &vv,
        tolerance::OPTIM_ADAM,
    )?;
    let t = tolerance::OPTIM_NORMALIZE;
    assert_close("adam_unit_rows param", &read(gpu, &w)?, &p_h, t)
}

// ---------------------------------------------------------------- a chained step

/// The optimizer half of `steps` training steps on an SAE with d_in `d`, d_sae `n`, recorded
/// as src/sae/gpu.rs records it: with a unit-norm decoder, decoder_grad_prep(W_dec, dW_dec)
/// and sum_slot into slot 1, sumsq of the other four grads, clip_scale, adam_unit_rows on
/// W_dec and adam on the others; with a free decoder norm, sumsq and adam on all five.
/// Fresh gradients and a new (lr, t) in the same uniform buffer each step; every tensor
/// compared after every step.
#[allow(clippy::too_many_arguments)]
fn steps_case(
    gpu: &Gpu,
    rng: &mut ChaCha8Rng,
    d: usize,
    n: usize,
    max_norm: f32,
    weight_decay: f32,
    unit_norm: bool,
) -> Result<(), Failed> {
    const STEPS: u64 = 4;
    // W_enc, W_dec, b_enc, b_dec, threshold
    let shapes: [Vec<usize>; 5] = [vec![d, n], vec![n, d], vec![n], vec![d], vec![n]];
    let names = ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"];
    let mut ph: Vec<Vec<f32>> = Vec::new();
    let mut mh: Vec<Vec<f32>> = Vec::new();
    let mut vh: Vec<Vec<f32>> = Vec::new();
    let (mut pd, mut md, mut vd, mut gd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in &shapes {
        let len = s.iter().product();
        let (m, v) = moments(rng, len);
        ph.push(randn(rng, len, 0.3));
        pd.push(up(gpu, "param", s, ph.last().unwrap())?);
        md.push(up(gpu, "m", s, &m)?);
        vd.push(up(gpu, "v", s, &v)?);
        gd.push(gpu.zeros("grad", s).map_err(fail)?);
        mh.push(m);
        vh.push(v);
    }
    let acc = gpu.zeros("acc", &[5]).map_err(fail)?;
    let clip = gpu.zeros("clip", &[2]).map_err(fail)?;
    let coef = gpu.zeros("coef", &[n]).map_err(fail)?;
    let part = gpu.zeros("part", &[n]).map_err(fail)?;
    let hb = k::hyper_buffer(gpu);
    let mut clipped = 0;

    for t in 1..=STEPS {
        let h = hyper(1e-2 * (1.0 - 0.2 * t as f32), weight_decay, t);
        let gh: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| randn(rng, s.iter().product(), 1.0))
            .collect();
        for (g, gh) in gd.iter().zip(&gh) {
            gpu.write(g, gh).map_err(fail)?;
        }
        gpu.fill(&acc, f32::NAN);
        gpu.fill(&clip, f32::NAN);
        k::write_hyper(gpu, &hb, &h);

        gpu.fill(&coef, f32::NAN);
        gpu.fill(&part, f32::NAN);

        let mut enc = gpu.encoder();
        let e = &mut enc;
        if unit_norm {
            k::decoder_grad_prep(gpu, e, &pd[1], &gd[1], n, d, &coef, &part).map_err(fail)?;
            k::sum_slot(gpu, e, &part, &acc, 1).map_err(fail)?;
        }
        for (i, g) in gd.iter().enumerate() {
            if !(unit_norm && i == 1) {
                k::sumsq(gpu, e, g, &acc, i as u32).map_err(fail)?;
            }
        }
        k::clip_scale(gpu, e, &acc, 5, max_norm, &clip).map_err(fail)?;
        for i in 0..5 {
            let (p, g, m, v) = (&pd[i], &gd[i], &md[i], &vd[i]);
            if unit_norm && i == 1 {
                k::adam_unit_rows(gpu, e, p, g, &coef, m, v, &hb, &clip, n, d).map_err(fail)?;
            } else {
                k::adam(gpu, e, p, g, m, v, &hb, &clip).map_err(fail)?;
            }
        }
        gpu.submit(enc);

        let mut acc_h = [0.0f32; 5];
        let mut clip_h = [0.0f32; 2];
        let mut coef_h = vec![0.0f32; n];
        let mut part_h = vec![0.0f32; n];
        if unit_norm {
            r::decoder_grad_prep(&ph[1], &gh[1], n, d, &mut coef_h, &mut part_h);
            r::sum_slot(&part_h, &mut acc_h, 1);
        }
        for (i, g) in gh.iter().enumerate() {
            if !(unit_norm && i == 1) {
                r::sumsq(g, &mut acc_h, i as u32);
            }
        }
        r::clip_scale(&acc_h, 5, max_norm, &mut clip_h);
        for i in 0..5 {
            let (p, m, v) = (&mut ph[i], &mut mh[i], &mut vh[i]);
            if unit_norm && i == 1 {
                r::adam_unit_rows(p, &gh[i], &coef_h, m, v, &h, &clip_h, n, d);
            } else {
                r::adam(p, &gh[i], m, v, &h, &clip_h);
            }
        }
        if clip_h[0] < 1.0 {
            clipped += 1;
        }

        let tol = tolerance::OPTIM_STEPS;
        assert_close(&format!("step {t} acc"), &read(gpu, &acc)?, &acc_h, tol)?;
        assert_close(&format!("step {t} clip"), &read(gpu, &clip)?, &clip_h, tol)?;
        for i in 0..5 {
            let what = |x: &str| format!("step {t} {} {x}", names[i]);
            assert_close(&what("m"), &read(gpu, &md[i])?, &mh[i], tol)?;
            assert_close(&what("v"), &read(gpu, &vd[i])?, &vh[i], tol)?;
            assert_close(&what("param"), &read(gpu, &pd[i])?, &ph[i], tol)?;
        }
    }
    let want = if max_norm > 0.0 && max_norm < 40.0 {
        STEPS
    } else {
        0
    };
    if clipped != want {
        return Err(format!("case setup: clipping happened in {clipped} of {STEPS} steps").into());
    }
    Ok(())
}

// ---------------------------------------------------------------- shape checks

fn refusals(gpu: &Gpu, _rng: &mut ChaCha8Rng) -> Result<(), Failed> {
    let a = gpu.zeros("a", &[6]).map_err(fail)?;
    let b = gpu.zeros("b", &[7]).map_err(fail)?;
    let w = gpu.zeros("w", &[3, 2]).map_err(fail)?;
    let acc = gpu.zeros("acc", &[2]).map_err(fail)?;
    let hb = k::hyper_buffer(gpu);
    let mut enc = gpu.encoder();
    let results = [
        (
            "adam grad length",
            k::adam(gpu, &mut enc, &a, &b, &a, &a, &hb, &acc),
        ),
        ("sumsq slot", k::sumsq(gpu, &mut enc, &a, &acc, 2)),
        (
            "clip_scale slots",
            k::clip_scale(gpu, &mut enc, &acc, 3, 1.0, &acc),
        ),
        (
            "clip_scale clip length",
            k::clip_scale(gpu, &mut enc, &acc, 2, 1.0, &a),
        ),
        (
            "decoder_grad_prep transposed",
            k::decoder_grad_prep(gpu, &mut enc, &w, &w, 2, 3, &a, &a),
        ),
        (
            "adam_unit_rows coef",
            k::adam_unit_rows(gpu, &mut enc, &w, &w, &a, &w, &w, &hb, &acc, 3, 2),
        ),
    ];
    drop(enc);
    for (what, r) in results {
        if r.is_ok() {
            return Err(format!("{what}: a wrong shape was accepted").into());
        }
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for (i, &len) in LENS.iter().enumerate() {
        // weight decay alternates 0 / 0.01; production runs with it.
        let wd = if i % 2 == 1 || len == 512 * 16384 {
            0.01
        } else {
            0.0
        };
        t.push(gpu_test(
            format!("optim::adam/{len}/wd{wd}"),
            move |gpu, rng| adam_case(gpu, rng, len, wd),
        ));
    }
    // More workgroups than one grid dimension holds (65535 x 256): the folded 1-D grid.
    let folded = 65535 * 256 + 3;
    t.push(gpu_test(
        format!("optim::adam/{folded}/wd0.01"),
        move |gpu, rng| adam_case(gpu, rng, folded, 0.01),
    ));
    for &len in LENS {
        t.push(gpu_test(format!("optim::sumsq/{len}"), move |gpu, rng| {
            sumsq_case(gpu, rng, len)
        }));
    }
    for (name, ratio) in [("active", 0.5f32), ("inactive", 2.0), ("disabled", 0.0)] {
        t.push(gpu_test(
            format!("optim::clip_scale/{name}"),
            move |gpu, rng| clip_case(gpu, rng, ratio),
        ));
    }
    for &(n, d) in ROWS {
        t.push(gpu_test(
            format!("optim::fused_decoder/{n}x{d}"),
            move |gpu, rng| fused_decoder_case(gpu, rng, n, d),
        ));
    }
    // (d, n, max_norm, weight decay); grads are N(0, 1) over ~3.4k elements, so the norm
    // is ~58 and max_norm 10 clips every step, 1e6 never, 0 disables clipping.
    // Unit-norm decoder (the fused path) in all but one; d = 48 takes the vec4 row kernels.
    for (d, n, max_norm, wd, unit) in [
        (45usize, 37usize, 10.0f32, 0.01f32, true),
        (48, 37, 1e6, 0.0, true),
        (48, 37, 10.0, 0.0, true),
        (45, 37, 0.0, 0.01, true),
        (48, 37, 10.0, 0.01, false),
    ] {
        let norm = if unit { "unit" } else { "free" };
        t.push(gpu_test(
            format!("optim::steps/d{d}_n{n}/max_norm{max_norm}/wd{wd}/{norm}"),
            move |gpu, rng| steps_case(gpu, rng, d, n, max_norm, wd, unit),
        ));
    }
    t.push(gpu_test("optim::refuses_wrong_shapes", refusals));
    t
}
