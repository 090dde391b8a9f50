//! Every tolerance the tests use, in one table, each with how it was chosen.
//! A check passes when |gpu - cpu| <= atol + rtol * |cpu| (see `assert_close`).
//!
//! Scale of f32 rounding: one ulp is 2^-23 ~ 1.2e-7 relative. A sum of K terms computed in a
//! different order differs by up to ~K * 1.2e-7 * sum|terms| in the worst case and by
//! ~sqrt(K) * 1.2e-7 * sum|terms| typically; our inputs are O(1), so the tables below scale
//! with the reduction length where there is one.

#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub name: &'static str,
    pub atol: f32,
    pub rtol: f32,
}

/// Elementwise kernels that do the same single f32 operation as the CPU (max, select,
/// multiply): bit-identical results are expected.
pub const EXACT: Tol = Tol {
    name: "EXACT",
    atol: 0.0,
    rtol: 0.0,
};

// ---------------------------------------------------------------- gemm

// ---------------------------------------------------------------- topk

// ---------------------------------------------------------------- sparse

// ---------------------------------------------------------------- reduce

// ---------------------------------------------------------------- optim

// Measured on lavapipe over many seeds (tests/kernels/optim.rs): adam bit-identical, sumsq
// and clip_scale within 1 ulp, normalize_rows within 2 ulp, remove_parallel within 5e-7
// absolute at production size. The margins below are for hardware GPUs, where WGSL allows
// division and sqrt a few ulp and the compiler may fuse a * b + c.

/// adam (one step; m, v, param). The CPU does the same f32 operations in the same order;
/// left are division and sqrt precision and FMA contraction, ~10 ulp of the update term
/// (rtol 2e-6). atol 1e-7 covers results that cancel (beta1 m against (1 - beta1) g) down
/// to below their terms, whose error is an ulp of terms of size O(0.1 .. 1).
pub const OPTIM_ADAM: Tol = Tol {
    name: "OPTIM_ADAM",
    atol: 1e-7,
    rtol: 2e-6,
};

/// sumsq vs an f64 sum: a sum of positive terms, each partial a chain of at most ~520 f32
/// additions at the largest supported tensor (512 x 131072: 256 vec4s per invocation, 256
/// partials per invocation of the finish, an 8-level tree), ~sqrt(520) * 6e-8 = 1.4e-6
/// relative when errors random-walk. Measured <= 1.2e-7 at 512 x 16384.
pub const OPTIM_SUMSQ: Tol = Tol {
    name: "OPTIM_SUMSQ",
    atol: 0.0,
    rtol: 4e-6,
};

/// clip_scale [scale, norm]: a few f32 additions (f64 on the CPU), one sqrt, one division:
/// ~8 ulp with hardware division and sqrt.
pub const OPTIM_CLIP: Tol = Tol {
    name: "OPTIM_CLIP",
    atol: 0.0,
    rtol: 1e-6,
};

/// normalize_rows: x / ||row|| is relative to x; the norm's own error (a d-term sum in
/// another order, then sqrt) and the division add up to ~2 ulp measured, allowed ~16.
pub const OPTIM_NORMALIZE: Tol = Tol {
    name: "OPTIM_NORMALIZE",
    atol: 0.0,
    rtol: 2e-6,
};

/// remove_parallel: g - c w cancels by design (the result is orthogonal to w), so its error
/// is absolute: the coefficient c = (g . w) / (w . w) carries ~sqrt(d) ulp of sum |g w| / w . w
/// times |w| ~ O(1) inputs, i.e. ~1e-6 at d = 512 in the worst rows (measured 5e-7).
pub const OPTIM_REMOVE_PARALLEL: Tol = Tol {
    name: "OPTIM_REMOVE_PARALLEL",
    atol: 2e-6,
    rtol: 1e-6,
};

/// Four chained optimizer steps (remove_parallel, sumsq, clip_scale, adam, normalize_rows)
/// on O(1) data: the per-kernel errors above feed the next step through the clip factor and
/// the moments, so allow them twice over (sums of squares ~2000 compare by rtol).
pub const OPTIM_STEPS: Tol = Tol {
    name: "OPTIM_STEPS",
    atol: 4e-6,
    rtol: 4e-6,
};

// ---------------------------------------------------------------- activations (jumprelu)

// ---------------------------------------------------------------- training step

// ---------------------------------------------------------------- toy

// Measured on lavapipe over many seeds (tests/kernels/toy.rs): toy_data, toy_forward,
// toy_grad and toy_sum_chunks are bit-identical to their twins at every shape, production
// (20 x 1024 x 200 x 20) included, and so are 20-50 whole training steps: the twins sum in
// the kernels' order and lavapipe does not fuse a * b + c. The margins below are for hardware
// GPUs, where the compiler may contract a * b + c into one FMA.
// Caveat for hardware GPUs: a ReLU gate decides on o > 0, so an output within an FMA
// rounding (~1e-6) of zero for a present feature flips g_i by 2/rows * I_i * x_i; at the
// production shape (4M outputs) that is about one element per run, which these tolerances
// do not absorb.

/// toy_data: integer hashing and exact conversions ((h >> 8) * 2^-24 and one compare), so
/// any device gives the same bits; compared with EXACT.
/// toy_forward, toy_grad, toy_sum_chunks: the same sums in the same order as the twin; FMA
/// contraction changes each K-term sum by ~sqrt(K) * 6e-8 * sum |terms| (K = n <= 200 for
/// h, dh and o, the chunk of 128 rows for the partials, then 8 chunks): 1e-5 relative covers
/// h, o and the loss (terms O(1)); gradients are O(1e-3 .. 1e-1) with sums of |terms| up to
/// ~0.5, so 1e-6 absolute covers the ones that cancel.
pub const TOY_STEP: Tol = Tol {
    name: "TOY_STEP",
    atol: 1e-6,
    rtol: 1e-5,
};

/// 20-50 AdamW steps (lr 1e-3) on both engines from the same initialisation: a gradient
/// error of ~1e-5 relative moves an Adam update by about as much of lr, i.e. ~1e-8 per
/// step; allowing 1e-4 leaves room for the moments to amplify errors of gradients that are
/// themselves near zero (their normalised updates can differ by a sizeable fraction of lr).
pub const TOY_TRAIN: Tol = Tol {
    name: "TOY_TRAIN",
    atol: 1e-4,
    rtol: 1e-4,
};
