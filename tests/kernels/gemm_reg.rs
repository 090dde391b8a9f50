//! gemm_reg (shaders/gemm_reg.wgsl, the register-blocked GEMM of hardware adapters) against
//! reference::gemm::gemm: every transpose combination, with and without bias, beta zero (C
//! poisoned with NaN) and beta non-zero, at shapes that are not multiples of any tile
//! (edge tiles, k steps past k, an empty reduction), tiles whose interior path runs, other
//! tile sizes than this adapter's, and the fused block maxima (gemm_reg_bmax[_off]) against
//! reference::codes::block_max of the C the kernel stored, bit for bit.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Gpu;
use saeforge::kernels::gemm::{self as kg, GemmPath, GemmSpec, GemmTuning};
use saeforge::kernels::gemm_reg::RegTiles;
use saeforge::reference;
use saeforge::reference::codes as rc;

use crate::common::{assert_close, assert_same, fail, gpu_test, randn, tolerance, uniform};

type Rng = rand_chacha::ChaCha8Rng;

const TRANSPOSES: &[(bool, bool)] = &[(false, false), (false, true), (true, false), (true, true)];

/// (m, n, k): single elements, an empty reduction, odd sizes below one 128 x 128 tile
/// (which leave the invocations' second row and column halves unstored), across tiles (130 x 70 x 257: a second row tile of 2 rows, k steps past k), a shape of
/// whole tiles (interior path only) and one mixing interior and edge tiles.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 5, 0),
    (37, 45, 29),
    (130, 70, 257),
    (128, 128, 64),
    (257, 260, 36),
];

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

/// The adapter's tuning with `tiles` (None: its own): as given where they fit the adapter
/// without the block maxima's 2 KiB (so lavapipe's 32 KiB runs the discrete GPUs' 128 x
/// 128 x 16 exactly), else fitted.
fn tuning(gpu: &Gpu, tiles: Option<RegTiles>) -> GemmTuning {
    let mut t = GemmTuning::of(gpu);
    if let Some(r) = tiles {
        t.rg = if r.unfit(&gpu.limits, false).is_none() {
            r
        } else {
            r.fitted(&gpu.limits)
        };
    }
    t
}

fn trial(base: GemmSpec, label: &'static str, tiles: Option<RegTiles>) -> Trial {
    let GemmSpec { m, n, k, .. } = base;
    gpu_test(
        format!("gemm_reg::{label}/{}/{m}x{n}x{k}", base.op_name()),
        move |gpu, rng| {
            crate::gemm::check_all(gpu, rng, base, GemmPath::Reg, Some(tuning(gpu, tiles)))
        },
    )
}

/// gemm_block_max on GemmPath::Reg: fused (checked), C within the gemm tolerance, bmax
/// exactly reference block_max (block 32) of the stored C minus `off` when given. C
/// poisoned (beta 0), bmax filled with u32::MAX.
fn check_bmax(
    gpu: &Gpu,
    rng: &mut Rng,
    spec: GemmSpec,
    t: &GemmTuning,
    with_off: bool,
) -> Result<(), Failed> {
    let GemmSpec { m, n, k, .. } = spec;
    if !kg::fuses_block_max(gpu, &spec, GemmPath::Reg, t) {
        return Err(format!("{spec:?}: gemm_reg does not fuse block_max with {:?}", t.rg).into());
    }
    let nb = rc::blocks(n, kg::BMAX_BLOCK);
    let a_h = randn(rng, m * k, 1.0);
    let b_h = randn(rng, k * n, 1.0);
    let bias_h = randn(rng, n, 1.0);
    // off moves some entries across 0, and -0.0 among them checks the folding of -0
    let mut off_h = uniform(rng, n, -0.5, 1.5);
    off_h[n / 2] = -0.0;
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
    kg::gemm_block_max_tuned(gpu, &mut enc, &spec, &a, &b, Some(&bias), &c, with_off.then_some(&off), &bmax, GemmPath::Reg, t).map_err(fail)?;
    gpu.submit(enc);
    let what = format!(
        "gemm_reg_bmax {:?} {} {m}x{n}x{k} off={with_off} beta={}",
        t.rg,
        spec.op_name(),
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

fn bmax_trial(base: GemmSpec, label: &'static str, tiles: Option<RegTiles>) -> Trial {
    let GemmSpec { m, n, k, .. } = base;
    gpu_test(
        format!("gemm_reg::bmax_{label}/{}/{m}x{n}x{k}", base.op_name()),
        move |gpu, rng| {
            let t = tuning(gpu, tiles);
            check_bmax(gpu, rng, base, &t, false)?;
            check_bmax(gpu, rng, base, &t, true)?;
            let beta = GemmSpec {
                alpha: -0.75,
                beta: 0.5,
                ..base
            };
            check_bmax(gpu, rng, beta, &t, true)
        },
    )
}

pub fn trials() -> Vec<Trial> {
    let mut out = Vec::new();
    for &(m, n, k) in SHAPES {
        for &(ta, tb) in TRANSPOSES {
            out.push(trial(spec(m, n, k, ta, tb), "own", None));
        }
    }
    // One row against 16384 columns (a batch of one through the encoder) and one row
    // against a transposed B (a gradient of the training step).
    out.push(trial(spec(1, 16384, 512, false, false), "own", None));
    out.push(trial(spec(1, 4096, 512, false, true), "own", None));
    // Other tiles: the discrete GPUs' 128 x 128 with 16 k-steps (2 staged vec4 of A and of
    // B per invocation; this adapter's own tuning may be fitted smaller), 64 x 128 with 16
    // (2 of A, 4 of B), 64 x 64 with 16 (4 and 4), 32 x 32 with 4 (k steps of 4 past
    // k = 29 and 257).
    let rt = |wx, wy, bk| RegTiles { wx, wy, bk };
    for (label, tiles) in [
        ("128x128x16", GemmTuning::DISCRETE.rg),
        ("64x128x16", rt(16, 8, 16)),
        ("64x64x16", rt(8, 8, 16)),
        ("32x32x4", rt(4, 4, 4)),
    ] {
        for &(ta, tb) in TRANSPOSES {
            out.push(trial(spec(37, 45, 29, ta, tb), label, Some(tiles)));
        }
        out.push(trial(spec(130, 70, 257, false, false), label, Some(tiles)));
    }
    // Fused block maxima: n not a multiple of 32 (70, 45, 33: a last partial block, of one
    // column for 33, so a stray out-of-range column would show in half the rows), of the
    // tile (200), whole tiles (128), every transpose on one shape (across both row halves
    // and both column halves of the invocations' outputs), and 32 x 32 tiles (one block
    // per tile).
    for &(ta, tb) in TRANSPOSES {
        out.push(bmax_trial(spec(130, 70, 29, ta, tb), "own", None));
    }
    for (m, n, k) in [(37, 33, 64), (128, 128, 64), (5, 200, 33)] {
        out.push(bmax_trial(spec(m, n, k, false, false), "own", None));
    }
    let small = RegTiles {
        wx: 4,
        wy: 4,
        bk: 4,
    };
    out.push(bmax_trial(
        spec(37, 100, 29, false, false),
        "32x32x4",
        Some(small),
    ));
    // Production size: the encoder of a 16k-latent SAE on 512-d inputs, batch 256, fused.
    out.push(gpu_test(
        "gemm_reg::bmax_own/NN/256x16384x512+bias",
        move |gpu, rng| {
            let t = tuning(gpu, None);
            check_bmax(gpu, rng, spec(256, 16384, 512, false, false), &t, true)
        },
    ));
    out.push(gpu_test("gemm_reg::tiles_refused", |gpu, _rng| {
        // wx not a multiple of 4 (BN not a multiple of 32) is refused, not run.
        let bad = RegTiles {
            wx: 6,
            wy: 4,
            bk: 4,
        };
        if bad.unfit(&gpu.limits, true).is_none() {
            return Err("wx 6 accepted".into());
        }
        let t = GemmTuning {
            rg: bad,
            ..GemmTuning::of(gpu)
        };
        let s = spec(3, 5, 7, false, false);
        let a = gpu.zeros("a", &[3, 7]).map_err(fail)?;
        let b = gpu.zeros("b", &[7, 5]).map_err(fail)?;
        let c = gpu.zeros("c", &[3, 5]).map_err(fail)?;
        let mut enc = gpu.encoder();
        match kg::gemm_tuned(gpu, &mut enc, &s, &a, &b, None, &c, GemmPath::Reg, &t) {
            Err(e) if e.to_string().contains("not a multiple of 4") => Ok(()),
            other => Err(format!("expected a tile error, got {other:?}").into()),
        }
    }));
    out
}
