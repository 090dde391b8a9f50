//! gemm (shaders/gemm.wgsl) against reference::gemm on every kernel path, all four
//! transpose combinations, with and without bias, beta zero (C poisoned with NaN) and beta
//! non-zero (C random), at shapes that are not multiples of any tile, plus one
//! production-size case on the path the launcher picks.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Gpu;
use saeforge::kernels::gemm::{self as kg, GemmPath, GemmSpec, GemmTuning};
use saeforge::reference;

use crate::common::{assert_close, fail, gpu_test, gpu_test_needing, randn, tolerance};

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

fn spec(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> GemmSpec {
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
            "gemm {} {} {m}x{n}x{k} bias={with_bias} alpha={} beta={}",
            path.name(),
            spec.op_name(),
            spec.alpha,
            spec.beta
        ),
        &gpu.read_f32(&c).map_err(fail)?,
        &c_ref,
        tolerance::gemm(k),
    )
}

/// The four combinations of bias and beta for one shape, transpose and path.
fn check_all(
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

pub fn trials() -> Vec<Trial> {
    let mut out = Vec::new();
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
