//! gemm (shaders/gemm.wgsl) against reference::gemm on every kernel path, all four
//! transpose combinations, with and without bias, beta zero (C poisoned with NaN) and beta
//! non-zero (C random), at shapes that are not multiples of any tile, plus one
//! production-size case on the path the launcher picks.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::{Gpu, GpuTensor};
use saeforge::kernels::codes as kc;
use saeforge::kernels::gemm::{self as kg, GemmPath, GemmSpec, GemmTuning};
use saeforge::reference;
use saeforge::reference::codes as rc;

use crate::common::{
    assert_close, assert_same, fail, gpu_test, gpu_test_needing, randn, tolerance, uniform,
};

/// (m, n, k): an empty reduction (C = bias + beta C), odd sizes below and across the 8-row / 64-column / 64x64 tiles, k not a
/// multiple of 4 or 16; (37, 192, 64) and (128, 192, 128) are ones the texture path takes,
/// with ragged rows (NN, NT) and a partial workgroup of column quads (all four).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 5, 0),
    (37, 45, 29),
    (5, 130, 67),
    (64, 64, 64),
    (37, 192, 64),
    (72, 256, 128),
    (128, 192, 128),
];

const TRANSPOSES: &[(bool, bool)] = &[(false, false), (false, true), (true, false), (true, true)];

/// C = op(A) op(B) of these sizes and transposes, alpha 1, beta 0.
pub(crate) fn spec(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> GemmSpec {
    GemmSpec {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha: 1.0,
        beta: 0.0,
    }
}

/// The texture path's shape rule without an adapter (texel rows of 64 floats or a single
/// row); the trial itself checks the adapter's limits agree.
fn texture_shape(s: &GemmSpec) -> bool {
    let copyable =
        |[rows, cols]: [usize; 2]| cols.is_multiple_of(4) && (rows == 1 || cols.is_multiple_of(64));
    s.k.is_multiple_of(4)
        && s.k > 0
        && s.n.is_multiple_of(4)
        && copyable(s.a_shape())
        && copyable(s.b_shape())
}

/// One product on `path` against the reference. beta == 0: C starts as NaN; otherwise C
/// starts random and alpha is not 1.
fn check(
    gpu: &Gpu,
    rng: &mut rand_chacha::ChaCha8Rng,
    spec: GemmSpec,
    path: GemmPath,
    tuning: Option<GemmTuning>,
    with_bias: bool,
) -> Result<(), Failed> {
    let GemmSpec { m, n, k, .. } = spec;
    let a_h = randn(rng, m * k, 1.0);
    let b_h = randn(rng, k * n, 1.0);
    let bias_h = randn(rng, n, 1.0);
    let c0 = if spec.beta == 0.0 {
        vec![f32::NAN; m * n]
    } else {
        randn(rng, m * n, 1.0)
    };
    let a = gpu.upload("a", &spec.a_shape(), &a_h).map_err(fail)?;
    let b = gpu.upload("b", &spec.b_shape(), &b_h).map_err(fail)?;
    let bias = gpu.upload("bias", &[n], &bias_h).map_err(fail)?;
    let c = gpu.upload("c", &[m, n], &c0).map_err(fail)?;
    let mut enc = gpu.encoder();
    let tuning = tuning.unwrap_or_else(|| GemmTuning::of(gpu));
    kg::gemm_tuned(
        gpu,
        &mut enc,
        &spec,
        &a,
        &b,
        with_bias.then_some(&bias),
        &c,
        path,
        &tuning,
    )
    .map_err(fail)?;
    gpu.submit(enc);

    let mut c_ref = c0;
    reference::gemm::gemm(
        &spec,
        &a_h,
        &b_h,
        with_bias.then_some(&bias_h[..]),
        &mut c_ref,
    );
    assert_close(
        &format!(
            "gemm {}{} {} {m}x{n}x{k} bias={with_bias} alpha={} beta={}",
            path.name(),
            match path {
                GemmPath::Reg => format!(" {:?}", tuning.rg),
                _ => String::new(),
            },
            spec.op_name(),
            spec.alpha,
            spec.beta
        ),
        &gpu.read_f32(&c).map_err(fail)?,
        &c_ref,
        tolerance::gemm(k),
    )
}

/// The four combinations of bias and beta for one shape, transpose and path (also
/// gemm_reg's tile cases).
pub(crate) fn check_all(
    gpu: &Gpu,
    rng: &mut rand_chacha::ChaCha8Rng,
    base: GemmSpec,
    path: GemmPath,
    tuning: Option<GemmTuning>,
) -> Result<(), Failed> {
    if matches!(path, GemmPath::Texture | GemmPath::TextureSubgroup)
        && !kg::texture_fits(gpu, &base)
    {
        return Err(format!("the texture path refuses {base:?} on {}", gpu.info.name).into());
    }
    for (with_bias, alpha, beta) in [
        (true, 1.0, 0.0),
        (false, 1.0, 0.0),
        (true, -0.75, 0.5),
        (false, 0.5, -1.0),
    ] {
        let spec = GemmSpec {
            alpha,
            beta,
            ..base
        };
        check(gpu, rng, spec, path, tuning, with_bias)?;
    }
    Ok(())
}

fn trial(base: GemmSpec, path: GemmPath) -> Trial {
    let GemmSpec { m, n, k, .. } = base;
    gpu_test(
        format!("gemm::{}/{}/{m}x{n}x{k}", path.name(), base.op_name()),
        move |gpu, rng| check_all(gpu, rng, base, path, None),
    )
}

/// The subgroup texture kernel with `rows` rows per invocation (gemm_tex_sg / _sg16 /
/// _sg32), whatever this adapter's tuning picks.
fn sg_trial(base: GemmSpec, rows: usize) -> Trial {
    let GemmSpec { m, n, k, .. } = base;
    gpu_test_needing(
        format!("gemm::texture_sg{rows}/{}/{m}x{n}x{k}", base.op_name()),
        |gpu| {
            (!gpu.has_subgroups(8)).then(|| {
                format!(
                    "{} has no subgroups of 8+ lanes (wgpu SUBGROUP)",
                    gpu.info.name
                )
            })
        },
        move |gpu, rng| {
            let tuning = GemmTuning {
                sg_rows: rows,
                ..GemmTuning::of(gpu)
            };
            check_all(gpu, rng, base, GemmPath::TextureSubgroup, Some(tuning))
        },
    )
}

/// gemm_tiled with tile sizes other than this adapter's (the override constants of the
/// other device types, and a small uneven tile).
fn tuned_trial(base: GemmSpec, label: &str, tuning: GemmTuning) -> Trial {
    let GemmSpec { m, n, k, .. } = base;
    gpu_test(
        format!("gemm::tiled_{label}/{}/{m}x{n}x{k}", base.op_name()),
        move |gpu, rng| {
            let tuning = tuning.fitted(&gpu.limits);
            check_all(gpu, rng, base, GemmPath::Tiled, Some(tuning))
        },
    )
}

// ------------------------------------------------------------------ gemm_block_max

/// Whether gemm_block_max should fuse on this adapter for a shape the subgroup kernel
/// takes (`fusable`): software tuning (the texture path) with subgroups of 8+ lanes; on
/// hardware tuning gemm_reg fuses every shape.
fn expect_fused(gpu: &Gpu, fusable: bool) -> bool {
    match GemmTuning::of(gpu).preferred {
        GemmPath::Reg => true,
        GemmPath::Texture => fusable && gpu.has_subgroups(8),
        _ => false,
    }
}

/// One gemm_block_max (Auto path with `tuning`) against the reference: C within the gemm
/// tolerance, and bmax exactly reference::codes::block_max (block 32) of the C the kernel
/// stored, minus `off` when given. C poisoned with NaN (beta == 0; else random), bmax with
/// u32::MAX. `fusable`: whether the shape should take the fused kernel on adapters with
/// subgroups (checked, so the trial cannot pass on the fallback unnoticed).
fn check_bmax(
    gpu: &Gpu,
    rng: &mut rand_chacha::ChaCha8Rng,
    spec: GemmSpec,
    tuning: GemmTuning,
    with_off: bool,
    fusable: bool,
) -> Result<(), Failed> {
    let GemmSpec { m, n, k, .. } = spec;
    let fused = kg::fuses_block_max(gpu, &spec, GemmPath::Auto, &tuning);
    if fused != expect_fused(gpu, fusable) {
        return Err(format!("{spec:?}: fuses_block_max {fused} on {}", gpu.info.name).into());
    }
    let nb = rc::blocks(n, kg::BMAX_BLOCK);
    let a_h = randn(rng, m * k, 1.0);
    let b_h = randn(rng, k * n, 1.0);
    let bias_h = randn(rng, n, 1.0);
    let off_h = uniform(rng, n, -0.5, 1.5);
    let c0 = if spec.beta == 0.0 {
        vec![f32::NAN; m * n]
    } else {
        randn(rng, m * n, 1.0)
    };
    let a = gpu.upload("a", &spec.a_shape(), &a_h).map_err(fail)?;
    let b = gpu.upload("b", &spec.b_shape(), &b_h).map_err(fail)?;
    let bias = gpu.upload("bias", &[n], &bias_h).map_err(fail)?;
    let off = gpu.upload("off", &[n], &off_h).map_err(fail)?;
    let c = gpu.upload("c", &[m, n], &c0).map_err(fail)?;
    let bmax = gpu.zeros_u32("bmax", &[m, nb]).map_err(fail)?;
    gpu.write(&bmax, &vec![u32::MAX; m * nb]).map_err(fail)?;
    let mut enc = gpu.encoder();
    #[rustfmt::skip]
    kg::gemm_block_max_tuned(gpu, &mut enc, &spec, &a, &b, Some(&bias), &c, with_off.then_some(&off), &bmax, GemmPath::Auto, &tuning).map_err(fail)?;
    gpu.submit(enc);

    let what = format!(
        "gemm_block_max {} {m}x{n}x{k} sg_rows={} off={with_off} beta={} fused={fused}",
        spec.op_name(),
        tuning.sg_rows,
        spec.beta
    );
    let c_gpu = gpu.read_f32(&c).map_err(fail)?;
    let mut c_ref = c0;
    reference::gemm::gemm(&spec, &a_h, &b_h, Some(&bias_h), &mut c_ref);
    assert_close(&format!("{what}: C"), &c_gpu, &c_ref, tolerance::gemm(k))?;
    let mut bmax_ref = vec![0u32; m * nb];
    #[rustfmt::skip]
    rc::block_max(&c_gpu, m, n, kg::BMAX_BLOCK, None, with_off.then_some(&off_h[..]), &mut bmax_ref);
    assert_same(
        &format!("{what}: bmax"),
        &gpu.read_u32(&bmax).map_err(fail)?,
        &bmax_ref,
    )
}

/// gemm_block_max on `spec` with and without off (and once with beta), on this adapter's
/// tuning with `sg_rows` rows per subgroup invocation (None: the adapter's own).
fn bmax_trial(spec: GemmSpec, sg_rows: Option<usize>, fusable: bool) -> Trial {
    let GemmSpec { m, n, k, .. } = spec;
    let rows = sg_rows.map_or("auto".to_string(), |r| format!("sg{r}"));
    let kind = if fusable { "fused" } else { "fallback" };
    gpu_test(
        format!(
            "gemm_block_max::{kind}/{rows}/{}/{m}x{n}x{k}",
            spec.op_name()
        ),
        move |gpu, rng| {
            let mut t = GemmTuning::of(gpu);
            if let Some(r) = sg_rows {
                t.sg_rows = r;
            }
            check_bmax(gpu, rng, spec, t, false, fusable)?;
            check_bmax(gpu, rng, spec, t, true, fusable)?;
            let beta = GemmSpec {
                alpha: -0.75,
                beta: 0.5,
                ..spec
            };
            check_bmax(gpu, rng, beta, t, true, fusable)
        },
    )
}

/// The code stages fed by gemm_block_max's bmax give bit for bit the CSR of the stages
/// that compute their own block maxima: topk_codes_from_bmax vs topk_codes,
/// activation_codes_from_bmax vs activation_codes (ReLU, and JumpReLU with off from
/// threshold_offsets before the GEMM), batchtopk_codes_from_bmax vs batchtopk_codes.
fn codes_from_bmax(gpu: &Gpu, rng: &mut rand_chacha::ChaCha8Rng) -> Result<(), Failed> {
    let (rows, n, d, k) = (45, 512, 64, 8);
    let f = fail;
    let spec = spec(rows, n, d, false, false);
    let x = gpu
        .upload("x", &[rows, d], &randn(rng, rows * d, 1.0))
        .map_err(f)?;
    let w = gpu
        .upload("w", &[d, n], &randn(rng, d * n, 0.2))
        .map_err(f)?;
    let b_h = randn(rng, n, 0.5);
    let bias = gpu.upload("b", &[n], &b_h).map_err(f)?;
    // ReLU / JumpReLU: pre mostly negative (mean -2), so most blocks hold no kept entry and
    // the stages skip them by their bmax.
    let b_neg: Vec<f32> = b_h.iter().map(|v| v - 2.0).collect();
    let bias_neg = gpu.upload("b - 2", &[n], &b_neg).map_err(f)?;
    let log_thr = gpu
        .upload("log_thr", &[n], &uniform(rng, n, -1.0, 0.5))
        .map_err(f)?;
    let eps = 0.05;
    let nb = rc::blocks(n, kc::BLOCK);
    let pre = gpu.zeros("pre", &[rows, n]).map_err(f)?;
    let bmax = gpu.zeros_u32("bmax", &[rows, nb]).map_err(f)?;
    let off = gpu.zeros("off", &[n]).map_err(f)?;
    let cap = rows * n;
    let u = |what: &str, len: usize| gpu.zeros_u32(what, &[len]).map_err(f);
    let z = |what: &str, len: usize| gpu.zeros(what, &[len]).map_err(f);
    let csr = |tag: &str| -> Result<[GpuTensor; 4], Failed> {
        Ok([
            u(&format!("{tag} row_ptr"), rows + 1)?,
            u(&format!("{tag} idx"), cap)?,
            z(&format!("{tag} val"), cap)?,
            z(&format!("{tag} pre_val"), cap)?,
        ])
    };
    let read = |t: &GpuTensor| -> Result<Vec<u32>, Failed> {
        if t.dtype == saeforge::gpu::DType::U32 {
            gpu.read_u32(t).map_err(f)
        } else {
            Ok(gpu
                .read_f32(t)
                .map_err(f)?
                .iter()
                .map(|v| v.to_bits())
                .collect())
        }
    };
    let poison = |ts: &[GpuTensor]| -> Result<(), Failed> {
        for t in ts {
            gpu.write(t, &vec![u32::MAX; t.len()]).map_err(f)?;
        }
        Ok(())
    };
    let same = |what: &str, a: &[GpuTensor; 4], b: &[GpuTensor; 4]| -> Result<(), Failed> {
        for (name, (ta, tb)) in ["row_ptr", "idx", "val", "pre_val"]
            .iter()
            .zip(a.iter().zip(b))
        {
            assert_same(&format!("{what} {name}"), &read(ta)?, &read(tb)?)?;
        }
        Ok(())
    };
    let (ours, theirs) = (csr("fused")?, csr("plain")?);
    for jump in [false, true] {
        poison(&ours)?;
        poison(&theirs)?;
        poison(std::slice::from_ref(&bmax))?;
        let jr = jump.then_some((&log_thr, eps));
        let mut enc = gpu.encoder();
        if jump {
            kc::compaction::threshold_offsets(gpu, &mut enc, &log_thr, eps, &off).map_err(f)?;
        }
        let o = jump.then_some(&off);
        #[rustfmt::skip]
        kg::gemm_block_max(gpu, &mut enc, &spec, &x, &w, Some(&bias_neg), &pre, o, &bmax).map_err(f)?;
        let [rp, idx, val, pv] = &ours;
        #[rustfmt::skip]
        kc::compaction::activation_codes_from_bmax(gpu, &mut enc, &pre, jr, &bmax, rp, idx, val, pv).map_err(f)?;
        let [rp, idx, val, pv] = &theirs;
        let path = kc::selection::RowPath::of(gpu);
        kc::compaction::activation_codes(gpu, &mut enc, path, &pre, jr, rp, idx, val, pv)
            .map_err(f)?;
        gpu.submit(enc);
        let what = if jump { "jumprelu" } else { "relu" };
        same(
            &format!("activation_codes_from_bmax {what}"),
            &ours,
            &theirs,
        )?;
        // Not vacuous: entries kept, and blocks both skipped (bmax below key(0.0)) and read.
        let nnz = read(&ours[0])?[rows];
        let skipped = read(&bmax)?.iter().filter(|&&b| b < 0x8000_0000).count();
        if nnz == 0 || skipped == 0 || skipped == rows * nb {
            return Err(format!(
                "{what}: {nnz} kept, {skipped} of {} blocks skipped",
                rows * nb
            )
            .into());
        }
    }

    // TopK: the same pre and its bmax without off.
    poison(&ours)?;
    poison(&theirs)?;
    let mut enc = gpu.encoder();
    #[rustfmt::skip]
    kg::gemm_block_max(gpu, &mut enc, &spec, &x, &w, Some(&bias), &pre, None, &bmax).map_err(f)?;
    let [rp, idx, val, _] = &ours;
    kc::selection::topk_codes_from_bmax(gpu, &mut enc, &pre, k, &bmax, rp, idx, val).map_err(f)?;
    let [rp, idx, val, _] = &theirs;
    let path = kc::selection::RowPath::of(gpu);
    kc::selection::topk_codes(gpu, &mut enc, path, &pre, k, None, rp, idx, val).map_err(f)?;
    gpu.submit(enc);
    same("topk_codes_from_bmax", &ours, &theirs)?;
    if read(&ours[0])?[rows] as usize != rows * k {
        return Err("topk_codes_from_bmax: not rows * k entries".into());
    }

    // BatchTopK, on its scratch's bmax and on a caller's.
    let k_total = rows * k;
    let sc = kc::batch_topk::BatchScratch::new(gpu, rows, n, k_total, rows).map_err(f)?;
    let thr = [z("thr ours", 1)?, z("thr theirs", 1)?];
    let codes = || -> Result<[GpuTensor; 3], Failed> {
        Ok([
            u("bt row_ptr", rows + 1)?,
            u("bt idx", k_total)?,
            z("bt val", k_total)?,
        ])
    };
    let (bo, bt) = (codes()?, codes()?);
    for given in [&sc.bmax, &bmax] {
        poison(&bo)?;
        poison(&bt)?;
        poison(&thr)?;
        let mut enc = gpu.encoder();
        #[rustfmt::skip]
        kg::gemm_block_max(gpu, &mut enc, &spec, &x, &w, Some(&bias), &pre, None, given).map_err(f)?;
        let [rp, idx, val] = &bo;
        #[rustfmt::skip]
        kc::batch_topk::batchtopk_codes_from_bmax(gpu, &mut enc, &pre, given, &sc, rp, idx, val, &thr[0]).map_err(f)?;
        gpu.submit(enc);
        let mut enc = gpu.encoder();
        let [rp, idx, val] = &bt;
        #[rustfmt::skip]
        kc::batch_topk::batchtopk_codes(gpu, &mut enc, &pre, &sc, rp, idx, val, &thr[1]).map_err(f)?;
        gpu.submit(enc);
        for (name, (ta, tb)) in ["row_ptr", "idx", "val"].iter().zip(bo.iter().zip(&bt)) {
            assert_same(
                &format!("batchtopk_codes_from_bmax {name}"),
                &read(ta)?,
                &read(tb)?,
            )?;
        }
        assert_same(
            "batchtopk_codes_from_bmax threshold",
            &read(&thr[0])?,
            &read(&thr[1])?,
        )?;
    }
    Ok(())
}

fn bmax_trials() -> Vec<Trial> {
    let mut out = Vec::new();
    // (spec, fusable): rows not a multiple of 16 (37, 45) or of 8 (5: Auto takes 8 rows),
    // n a multiple of 32 but not of the 256 columns of a workgroup (96 and 224 through a
    // transposed B, which the texture copy takes; 192, 320 in NN; TT with m = 64, as the
    // texture copy of a transposed A needs), and the fallbacks: n = 100
    // (not a multiple of 32, texture path otherwise fine), n = 96 in NN (no texture copy).
    let cases = [
        (spec(37, 192, 64, false, false), true),
        (spec(45, 320, 128, false, false), true),
        (spec(5, 256, 64, false, false), true),
        (spec(37, 96, 64, false, true), true),
        (spec(64, 224, 64, true, true), true),
        (spec(37, 100, 64, false, true), false),
        (spec(37, 96, 64, false, false), false),
        (spec(3, 5, 7, false, false), false),
    ];
    for (s, fusable) in cases {
        out.push(bmax_trial(s, None, fusable));
    }
    for rows in [8, 32] {
        out.push(bmax_trial(
            spec(37, 192, 64, false, false),
            Some(rows),
            true,
        ));
    }
    // Production size: the encoder of a 16k-latent SAE on 512-d inputs, batch 512, fused
    // without and with off.
    out.push(gpu_test(
        "gemm_block_max::auto/NN/512x16384x512+bias",
        move |gpu, rng| {
            let s = spec(512, 16384, 512, false, false);
            let t = GemmTuning::of(gpu);
            check_bmax(gpu, rng, s, t, true, true)
        },
    ));
    out.push(gpu_test("gemm_block_max::codes_from_bmax", codes_from_bmax));
    out
}

pub fn trials() -> Vec<Trial> {
    let mut out = bmax_trials();
    for &(m, n, k) in SHAPES {
        for &(ta, tb) in TRANSPOSES {
            let s = spec(m, n, k, ta, tb);
            out.push(trial(s, GemmPath::General));
            out.push(trial(s, GemmPath::Tiled));
            if texture_shape(&s) {
                out.push(trial(s, GemmPath::Texture));
                for rows in [8, 16, 32] {
                    out.push(sg_trial(s, rows));
                }
            }
        }
    }
    // Every device type's tiles, and 8x4 invocations (a 16x32 tile) with 4 k-steps per
    // stage, on a ragged shape in all four transposes.
    let small = GemmTuning {
        tl_wx: 8,
        tl_wy: 4,
        tl_bk: 4,
        ..GemmTuning::DISCRETE
    };
    for (label, tuning) in [
        ("discrete", GemmTuning::DISCRETE),
        ("integrated", GemmTuning::INTEGRATED),
        ("8x4x4", small),
    ] {
        for &(ta, tb) in TRANSPOSES {
            out.push(tuned_trial(spec(37, 130, 45, ta, tb), label, tuning));
        }
    }
    // One row against a transposed B (a gradient of the training step), on every path.
    let m1 = spec(1, 4096, 512, false, true);
    for path in [GemmPath::General, GemmPath::Tiled, GemmPath::Texture] {
        out.push(trial(m1, path));
    }
    for rows in [8, 16, 32] {
        out.push(sg_trial(m1, rows));
    }
    // Production size: the encoder of a 16k-latent SAE on 512-d inputs, batch 512.
    out.push(gpu_test(
        "gemm::auto/NN/512x16384x512+bias",
        move |gpu, rng| {
            let s = spec(512, 16384, 512, false, false);
            check(gpu, rng, s, GemmPath::Auto, None, true)
        },
    ));
    out.push(gpu_test("gemm::rejects_bad_shapes", |gpu, _rng| {
        let s = spec(3, 5, 7, false, false);
        let a = gpu.zeros("a", &[3, 7]).map_err(fail)?;
        let b = gpu.zeros("b", &[5, 7]).map_err(fail)?;
        let c = gpu.zeros("c", &[3, 5]).map_err(fail)?;
        let mut enc = gpu.encoder();
        match kg::gemm(gpu, &mut enc, &s, &a, &b, None, &c) {
            Err(e)
                if e.to_string()
                    .contains("B has shape [5, 7], expected [7, 5]") =>
            {
                Ok(())
            }
            other => Err(format!("expected a shape error for B, got {other:?}").into()),
        }
    }));
    out
}
