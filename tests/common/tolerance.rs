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

/// GEMM with inputs ~N(0, 1), alpha and beta <= 1 in size, reduction length k.
/// Each output is a sum of k products of size ~1 whose partial sums grow like sqrt(i); a
/// different summation order (the reference's 8-way dot for transposed B, fused multiply-add
/// on hardware GPUs, other tilings) moves each rounding of a partial sum by up to
/// 2^-24 * sqrt(i), so the difference is a random walk with sigma ~ 1.2e-7 * k / sqrt(6)
/// (2.5e-5 at k = 512). The largest of 8M outputs (the production case) sits near 5.5
/// sigma, so atol = 1e-6 * k (about 20 sigma, 5e-4 at k = 512) has room and still catches
/// any wrong term (|a * b| ~ 1). rtol covers the epilogue (bias + beta * C, values ~1,
/// a few roundings) and the rare large output.
pub fn gemm(k: usize) -> Tol {
    Tol {
        name: "gemm(k)",
        atol: 1e-6 * k.max(1) as f32,
        rtol: 1e-5,
    }
}

/// gemm_coop (experimental, f16 inputs, f32 accumulation) against the f32 product: each
/// input is rounded by up to 2^-11 of itself (half an ulp of a half; sd 2^-11 / sqrt(3)),
/// so each product of two N(0, 1) moves by sd ~4e-4, a random walk over k terms: sigma
/// ~4e-4 sqrt(k) (9e-3 at k = 512). atol 3.5e-3 sqrt(k) is ~8.7 sigma, room for the
/// largest of the production case's 16M outputs; a wrong fragment or layout moves outputs
/// by ~sqrt(k) (~20) and fails. (Against the reference on the rounded inputs
/// the plain `gemm(k)` bound applies: products of halves are exact in f32.)
pub fn coop_f16(k: usize) -> Tol {
    Tol {
        name: "coop_f16(k)",
        atol: 3.5e-3 * (k.max(1) as f32).sqrt(),
        rtol: 1e-3,
    }
}

// ---------------------------------------------------------------- topk

/// topk / batchtopk values and thresholds: the kernels copy input values (or rebuild the
/// threshold from its exact bit pattern), so they must equal the CPU's; the tests also
/// compare the bit patterns, which tells -0.0 from +0.0.
pub const TOPK: Tol = Tol {
    name: "TOPK",
    atol: 0.0,
    rtol: 0.0,
};

// ---------------------------------------------------------------- sparse

// Every sparse kernel sums in its CPU twin's order (ascending slot; ascending column for the
// dot products), so on lavapipe the results are bit-identical: all sparse tests pass with
// atol = rtol = 0 (measured, several seeds). The margins below are for drivers that contract
// a * b + c into one FMA (SPIR-V allows it): a contracted step skips one product rounding and
// can move the partial sum's rounding by one ulp, so K steps differ by about
// sqrt(K) * 2^-23 * max|partial sum| (K * 2^-23 * max|partial sum| at worst). Test inputs:
// values and dy, xc ~ N(0, 1), w_dec ~ N(0, 1/d), b_dec ~ N(0, 1).

/// sparse_decode: K <= 32 slots per row, partial sums |.| <~ 4 (bias plus k terms of
/// size ~1/sqrt(d)): worst case 32 * 1.2e-7 * 4 = 1.5e-5.
pub const SPARSE_DECODE: Tol = Tol {
    name: "SPARSE_DECODE",
    atol: 1e-5,
    rtol: 1e-5,
};

/// sparse_dot: K = d <= 512 products of size ~1/sqrt(d), partial sums |.| <~ 3: typical
/// sqrt(512) * 1.2e-7 * 3 = 8e-6, worst 512 * 1.2e-7 * 3 = 1.8e-4; atol 5e-5 is six times
/// the typical figure.
pub const SPARSE_DOT: Tol = Tol {
    name: "SPARSE_DOT",
    atol: 5e-5,
    rtol: 1e-5,
};

/// gather_dw_dec / gather_dw_enc / gather_db_enc: K = a latent's entries, up to rows = 512
/// for the hot latents of the production case, terms O(1), so partial sums and results reach
/// |.| ~ 3 sqrt(K) = 70: typical difference sqrt(512) * 1.2e-7 * 70 = 1.9e-4, against an
/// allowance of 2e-4 + 2e-5 * |result| (up to 1.6e-3 there); latents with one or two entries
/// differ by a few 1e-7 at most, far below what a wrong entry would cost (O(1)).
pub const SPARSE_GATHER: Tol = Tol {
    name: "SPARSE_GATHER",
    atol: 2e-4,
    rtol: 2e-5,
};

// ---------------------------------------------------------------- reduce

// sub_row, sub, the mse_backward gradient, col_sum, dead_mask and all counts (L0, DEAD,
// fire counts) are checked with EXACT / assert_same: the same f32 operations in the same
// order as the CPU twin (col_sum sums each column's blocks of 32 rows in order, then the
// blocks in order).

/// Metric totals (SSE, SST, L1, AUX): the device sums positive terms in a fixed blocked
/// order (32-row blocks, then up to ~1k partials per invocation, then two 16-wide levels);
/// the twin sums in f64, so this is the device's own rounding. Its longest sequential chain
/// (1024 partials in dense_stats at 512 x 16384) gives a random-walk estimate of ~6e-7
/// relative; measured on lavapipe over 25 seeds at production size: max 1.7e-7 (1-2 ulp).
/// 2e-6 leaves 10x headroom; dropping a single term of the small odd shapes (<= 5k terms)
/// moves the total by > 1e-4 and is caught.
pub const METRIC_SUM: Tol = Tol {
    name: "METRIC_SUM",
    atol: 0.0,
    rtol: 2e-6,
};

/// row_norms: same sequential order as the twin, so only a fused multiply-add in the
/// running sum (<= 0.5 ulp of v^2 per step, a random walk of sqrt(d) of them) and WGSL's
/// sqrt (derived from inverseSqrt, a few ulp) can differ: ~1e-6 at d = 512. Measured on
/// lavapipe: bit-identical. 2e-6 (~17 ulp).
pub const ROW_NORM: Tol = Tol {
    name: "ROW_NORM",
    atol: 0.0,
    rtol: 2e-6,
};

/// l1_backward (dz + scale * norm) and l1_decoder_grad (dw + (scale * zsum / norm) * w) at
/// the tests' O(1) inputs (|scale * norm| <= 0.75, |c * w| <= ~10): a fused multiply-add
/// moves a result by <= 0.5 ulp of the product (<= 5e-7) and WGSL's division is allowed
/// 2.5 ulp (<= 3e-6 after multiplying by w). Measured on lavapipe: bit-identical.
/// atol 1e-5 covers the bound 3x; a wrong latent's norm or a missed row is O(0.1) off.
pub const ELEMENTWISE_MULADD: Tol = Tol {
    name: "ELEMENTWISE_MULADD",
    atol: 1e-5,
    rtol: 1e-6,
};

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

/// adam_unit_rows' row normalisation: x / ||row|| is relative to x; the norm's own error (a
/// d-term sum in another order, then sqrt) and the division add up to ~2 ulp measured,
/// allowed ~16. atol: the fused Adam + unit-row step can cancel an entry to near 0
/// (w - lr * update), and that difference carries the rounding of its operands, which are
/// on the scale of a unit row's entries: one ulp of 1.0 (6e-8). On an NVIDIA H200 (fused
/// multiply-add, its own sqrt and division) entries near 1e-3 differed by 3e-9 (1.5x the
/// rtol alone) and entries near 2e-8 by 8e-10; a wrong term (an Adam step of lr ~1e-4, a
/// wrong norm) is still orders of magnitude outside.
pub const OPTIM_NORMALIZE: Tol = Tol {
    name: "OPTIM_NORMALIZE",
    atol: 6e-8,
    rtol: 2e-6,
};

/// Four chained optimizer steps (decoder_grad_prep + sum_slot, sumsq, clip_scale,
/// adam_unit_rows and adam, as the training step records them) on O(1) data: the per-kernel errors above feed the next step through the clip factor and
/// the moments, so allow them twice over (sums of squares ~2000 compare by rtol).
pub const OPTIM_STEPS: Tol = Tol {
    name: "OPTIM_STEPS",
    atol: 4e-6,
    rtol: 4e-6,
};

/// rescale_view / rescale_grads' scalings: a row norm (a d-term f32 sum, f64 in the twin,
/// then sqrt) and one multiplication or division per element: a few ulp relative. atol for
/// the zero row's entries (0 / 1e-8 is exact; products of O(1) values that cancel).
pub const RESCALE: Tol = Tol {
    name: "RESCALE",
    atol: 1e-7,
    rtol: 4e-6,
};
/// rescale_grads' decoder gradient (gU - c U) / norm + s U: c and s are d-term dot products
/// (f32 here, f64 rounded once in the twin) of O(1) terms, |c|, |s| ~ sqrt(d) ~ 23 at d =
/// 512, so their f32 rounding (~d ulp of the partial sums, ~1e-5 absolute) enters every entry
/// times U (|U| ~ 1 / sqrt(d)) and, for the smallest norms (0.05), once more / norm.
pub const RESCALE_GRAD_DEC: Tol = Tol {
    name: "RESCALE_GRAD_DEC",
    atol: 2e-5,
    rtol: 1e-5,
};

// ---------------------------------------------------------------- activations (jumprelu)

// jumprelu_forward z and jumprelu_backward dpre are EXACT (a select); the tests keep every
// pre-activation >= 1e-3 eps away from the threshold and the window edges, where theta's
// few-ulp difference between WGSL's exp and Rust's could flip a comparison.

/// dlog_theta[i] = theta_i * sum over rows in order of (dz * (-theta_i / eps) + b): same
/// order as the twin, but theta comes from WGSL's exp (3 + 2|x| ulp allowed) and -theta/eps
/// from its division (2.5 ulp), and the multiply-add may be fused, so each term is a few
/// ulp off. At the test's inputs (theta in [0.2, 1], eps 0.05, dz ~ N(0, 1), ~70 of 512
/// rows in the window) theta * sum |terms| is ~1e3 and results reach ~700, so a few ulp of
/// that is ~1e-4 absolute. Measured on lavapipe over 25 seeds at 512 x 16384: max 3.1e-4
/// absolute. atol 1e-3 (3x) plus rtol 4e-6; a dropped or extra window row moves a result
/// by ~|dz| theta^2 / eps ~ 1-20.
pub const JUMPRELU_DLOG_THETA: Tol = Tol {
    name: "JUMPRELU_DLOG_THETA",
    atol: 1e-3,
    rtol: 4e-6,
};

// ---------------------------------------------------------------- ops

/// threshold_ema (decay * state + (1 - decay) * max(thr, 0), state and thr >= 0, so no
/// cancellation): the twin does the same f32 operations in the same order; a driver may
/// fuse the multiply-add, which moves a step's result by < 1 ulp (1.2e-7 relative). The
/// EMA shrinks earlier errors by decay each step, so the 10-step chain the tests run stays
/// under 10 ulp at worst (1.2e-6). Measured on lavapipe: bit-identical. rtol 2e-6; a wrong
/// formula (swapped decay, a missed max) is off by > 1e-3.
pub const OPS_EMA: Tol = Tol {
    name: "OPS_EMA",
    atol: 0.0,
    rtol: 2e-6,
};

// ---------------------------------------------------------------- training step
/// Parameters after 10 GPU steps vs 10 CPU steps. Each step's gradients agree to f32
/// rounding (the kernels' own tolerances above), but Adam divides by sqrt(v): where a
/// gradient is tiny, rounding flips m / sqrt(v) by up to a full step of size lr (1e-3 in
/// the test). atol 2e-4 allows a few such coordinates' drift over 10 steps (measured worst:
/// see the test output when tightening); rtol 1e-4 covers the rest.
pub const TRAIN_PARAMS: Tol = Tol {
    name: "TRAIN_PARAMS",
    atol: 2e-4,
    rtol: 1e-4,
};
/// Coordinates of a parameter tensor allowed past TRAIN_PARAMS after the 10 steps, each
/// within lr x steps of the CPU's. Adam divides each coordinate's momentum by its own RMS:
/// where a gradient is at rounding level (measured: -9.1e-10 on the GPU, +9.5e-10 on the
/// CPU, a latent just back from dead, SAEFORGE_TEST_SEED=15291561 batchtopk 64x512x64), the
/// two engines step that coordinate by a full lr in opposite directions. A gradient bug
/// moves a whole latent's column or row (d >= 36 coordinates), or moves them by more than
/// lr per step, and still fails.
pub const TRAIN_PARAMS_FLIPS: usize = 4;

/// `--batch-dtype f16` against f32 (tests/train/runs.rs): the held-out MSE after 200 steps
/// of the same run, relative. Halves move each input by <= 2^-11 relative, which changes
/// every gradient a little, and 200 steps of Adam carry that into a different (equally
/// good) trajectory: measured 7.0e-4 (the test's data and seed; 6e-4 to 2.5e-3 on the
/// README's 128 -> 1024 runs). rtol 1e-2 allows that 4x; a batch rounded wrongly (a
/// half's bits misread, values truncated to fewer bits) costs more than 1 %.
pub const BATCH_F16: Tol = Tol {
    name: "BATCH_F16",
    atol: 0.0,
    rtol: 1e-2,
};

/// Adam's second moments: sums of squared gradients, relative agreement of f32 gradients.
pub const TRAIN_MOMENTS: Tol = Tol {
    name: "TRAIN_MOMENTS",
    atol: 1e-9,
    rtol: 1e-3,
};
/// Metric sums over 10 steps (SSE, SST, L0, L1, AUX): f32 sums of O(1e3) terms each.
pub const TRAIN_METRICS: Tol = Tol {
    name: "TRAIN_METRICS",
    atol: 1e-3,
    rtol: 1e-4,
};

// ---------------------------------------------------------------- fista

/// fista_step: v = y - step * g, max(v - threshold, 0), z + m * (z - z_old): the CPU does the
/// same f32 operations in the same order, so lavapipe is bit-identical (measured, several
/// seeds, production shape included). On hardware a driver may fuse y - step * g or
/// z + m * (z - z_old) into one FMA, skipping one rounding of a product of size <= ~3 at
/// the test's inputs (|g| <~ 5, step < 1, m < 1): <= 0.5 ulp of 3, ~2e-7, per fused op,
/// two of them chained through y. atol 1e-6 covers that 2.5x; a wrong threshold, sign or
/// momentum moves results by >= 1e-2.
pub const FISTA_STEP: Tol = Tol {
    name: "FISTA_STEP",
    atol: 1e-6,
    rtol: 1e-6,
};

// ---------------------------------------------------------------- codes (sparse step)

/// threshold_offsets: exp(log_thr) - eps, with WGSL's exp allowed 3 + 2|x| ulp against
/// Rust's correctly rounded one; |log_thr| <= 2 in the tests, so 7 ulp of exp (<= 7.4) plus
/// the subtraction's rounding: rtol 1e-6 (about 8 ulp) and atol 1e-6 for results near 0.
/// Measured on lavapipe: within 1 ulp. (The offsets only steer which blocks are read; the
/// kept entries themselves are compared exactly.)
pub const CODES_OFFSETS: Tol = Tol {
    name: "CODES_OFFSETS",
    atol: 1e-6,
    rtol: 1e-6,
};

/// fista_row_change: the twin sums in the kernel's order (in order, or four interleaved
/// partials for n % 4 == 0), so lavapipe is bit-identical (measured). A fused e * e + acc
/// on hardware skips one rounding per step: a chain of n (or n / 4) positive terms drifts by
/// at most ~n * 2^-24 relative, typically sqrt(n) * 2^-24 (~8e-6 at n = 16384). rtol
/// 2e-7 * sqrt(n) + 1e-6 (2.7e-5 at n = 16384) is ~3x the typical drift; a dropped column
/// (one term of ~1 in a sum of ~n / 2, i.e. 2 / n relative: 1.2e-4 at n = 16384) is caught.
/// The floor 4e-6 covers the final sqrt and division, which WGSL lets a driver do in a few
/// ulp: an NVIDIA H200 differed by 1.5e-6 relative at n = 1 (a 1e-6 floor failed there).
pub fn fista_row_change(n: usize) -> Tol {
    Tol {
        name: "fista_row_change(n)",
        atol: 0.0,
        rtol: 2e-7 * (n.max(1) as f32).sqrt() + 4e-6,
    }
}

// ---------------------------------------------------------------- fista / eval (whole runs)

/// Held-out metrics (mse, nmse, explained variance, cosine, L0, L1, relative bias,
/// shrinkage, dead / dense fractions) of the f32 pipeline on either engine against the same
/// figures computed in f64 from the definitions (tests/eval/metrics.rs: d = 24, n = 40,
/// 307 rows). The codes are f32 GEMMs of 24 terms and x_hat sums <= 40 terms, each ~1e-7
/// relative; the metric sums run in f64 on the host except L0 / L1, summed in f32 per
/// batch (<= 64 x 40 terms: ~1e-6 relative). Decisions (ReLU, JumpReLU, TopK) are kept
/// 1e-3 from their boundaries, so both sides make the same ones. Measured on lavapipe and
/// the CPU engine over several seeds: worst 3.1e-7 relative (the test prints it; the
/// scalars are compared as f32, which alone rounds by 6e-8). rtol 4e-6 is >10x that; atol
/// 1e-6 covers metrics that come out near 0; a wrong definition (e.g. NMSE against the
/// centred data, or a missed row) is off by > 1e-3. The relative bias sum ||x_hat||^2 /
/// sum <x, x_hat> is held to rtol times its condition number sum |x_i x_hat_i| /
/// |sum x_i x_hat_i|: for the test's random SAEs x_hat can be nearly orthogonal to x, the
/// denominator cancels, and its f32 roundings grow by that factor (seen: bias -5071,
/// condition 2198, both engines 5.0e-6 relative off the f64 figure, 1.25x the plain
/// tolerance, SAEFORGE_TEST_SEED=9581213967474993121; seeds 1-5: condition 8-222).
pub const EVAL_METRICS: Tol = Tol {
    name: "EVAL_METRICS",
    atol: 1e-6,
    rtol: 4e-6,
};

/// 60 FISTA iterations on the GPU engine against 60 on the CPU engine (72 atoms of norm
/// ~1.8 in 36 dims, lambda 0.05, x ~ N(0, 1)): each iteration's GEMMs (36 and 72 terms)
/// round differently on the two engines (~1e-7 relative), and the proximal-gradient map is
/// non-expansive but momentum can carry a difference forward for a few iterations, so the
/// codes drift by ~1e-6 and a coordinate that sits at the threshold may be exactly 0 on one
/// engine and ~1e-6 on the other. Measured on lavapipe: worst 5.4e-6 absolute over codes
/// and x_hat (the test prints it). atol 1e-4 / rtol 1e-4 is ~20x that; a wrong step,
/// momentum or threshold changes codes by > 1e-2.
pub const FISTA_ENGINES: Tol = Tol {
    name: "FISTA_ENGINES",
    atol: 1e-4,
    rtol: 1e-4,
};

// ---------------------------------------------------------------- commands (encode / steer)
/// Codes from the encoder (GPU, or CPU with the CPU engine's GEMM) vs `SaeModel::encode`:
/// each value is a pre-activation, i.e. a GEMM output with reduction length d (sub_row is
/// exact, then the same single relu / copy), so the GEMM tolerance applies as is. (On
/// lavapipe the GPU's are bit-identical: the general and texture GEMM paths add in the
/// reference's order; the CPU engine's GEMM blocks k and fuses multiply-adds.) Rows whose support could flip under
/// such a difference (a pre-activation within 1e-3 of the k-th largest or of the threshold)
/// are left out by the tests, not covered by a looser tolerance.
pub fn encode(d: usize) -> Tol {
    Tol {
        name: "encode(d)",
        ..gemm(d)
    }
}

/// A transcoder's reconstruction on the GPU engine vs the CPU engine: x_hat = z W_dec +
/// b_dec, a GEMM of reduction length n over codes that already differ by encode(d) each;
/// those differences (random signs, |W_dec| < 1) add over the n terms like the GEMM's own
/// roundings do, so the GEMM bound at reduction length d + n covers both. A missing b_dec,
/// a wrong width (d for d_out) or a b_dec subtracted before the encoder is off by ~0.1-1.
pub fn decode_after_encode(d: usize, n: usize) -> Tol {
    Tol {
        name: "decode_after_encode(d, n)",
        ..gemm(d + n)
    }
}

/// Steered activations on the GPU engine vs the same edits applied with the CPU's codes:
/// x' = x + (z' - z) W_dec with |W_dec| <= 1 per entry, so the codes' difference (encode(d))
/// carries over at most once per edit (the tests use at most three edits on O(1) data).
pub fn steer(d: usize, edits: usize) -> Tol {
    let e = encode(d);
    Tol {
        name: "steer(d, edits)",
        atol: e.atol * edits.max(1) as f32,
        rtol: e.rtol,
    }
}

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

/// The two-layer toy model's twin gradient (f32, sums over 6 rows of O(1) terms) against
/// central differences (eps 1e-5) of the same loss in f64 (tests/kernels/toy_mlp.rs): the
/// loss is piecewise quadratic in one parameter, so away from kinks (skipped) the difference
/// quotient is exact up to f64 rounding (~1e-16 / 1e-5 = 1e-11); what is left is the twin's
/// f32 rounding, ~1e-7 relative per term: 1e-5 absolute, 1e-4 relative leave 10x room.
pub const MLP_FD: Tol = Tol {
    name: "MLP_FD",
    atol: 1e-5,
    rtol: 1e-4,
};

/// decoder_grad_prep: coef = g.w / w.w and part = max(g.g - 2 coef g.w + coef^2 w.w, 0)
/// from lane-strided f32 sums in a tree (d <= 512 terms) against f64 sums rounded once:
/// each dot is off by ~sqrt(d) ulp of its terms' magnitude, i.e. ~2e-6 relative at d = 512
/// for the O(1) random rows of the tests; coef inherits that (rtol 2e-5). part cancels
/// g.g against coef terms; with random (not parallel) g and w it keeps ~(1 - 1/d) of g.g,
/// so its error stays ~1e-6 of g.g (rtol 2e-5, atol 1e-4 for the d = 512 rows whose g.g is
/// ~500). A wrong row or a missed term is off by O(1). Measured on lavapipe: worst 3e-7
/// relative (coef), 5e-7 (part).
pub const OPTIM_DECODER_PREP: Tol = Tol {
    name: "OPTIM_DECODER_PREP",
    atol: 1e-4,
    rtol: 2e-5,
};

// ---------------------------------------------------------------- input guards

/// JumpReLU inputs kept away from the threshold and the window's edges, in eps units (the
/// window half-width is 1/2): theta = exp(log_theta) differs between WGSL's exp and Rust's
/// by a few ulp (~1e-7 relative, ~1e-5 in eps units at the tests' eps), which must not flip
/// a comparison; 1e-3 leaves 100x room and moves a drawn value negligibly.
pub const JUMPRELU_GUARD_EPS_UNITS: f32 = 1e-3;

/// The same guard in absolute units for the code and sparse kernels' JumpReLU inputs
/// (theta in [0.2, 1), eps 0.05): values within this of theta or a window edge are moved
/// to twice it beyond. theta's exp error is ~1e-7 there, so 1e-4 is 1000x room.
pub const JUMPRELU_GUARD_ABS: f32 = 1e-4;

/// toy_data's feature-present rate per instance against its density: a binomial
/// proportion, allowed 5 standard deviations (a false failure ~1 in 1.7 million per
/// instance) plus 1e-6 for f64 rounding of the rates (the test adds one count: a value drawn
/// as exactly 0 reads as absent; seed 5323141956096304108 hit it at density 1).
pub const TOY_DENSITY_SIGMAS: f64 = 5.0;
pub const TOY_DENSITY_SLACK: f64 = 1e-6;

// ---------------------------------------------------------------- SAELens's evaluator

/// `eval --truth` against SAELens's `eval_sae_on_synthetic_data` on the same SAE and rows
/// (tests/eval/peer.rs): figures that depend only on the dictionaries or on the true codes
/// (MCC, uniqueness, true L0, dead latents). Both take |cos| from f32 products of unit rows
/// (ours the reference GEMM, SAELens torch), so an entry differs by ~1e-7 and the optimal
/// matching and every argmax come out the same unless two candidates are within that; the
/// means are then equal up to f32 rounding of a mean of <= 300 values (~1e-7). 1e-5 is far
/// above that, and a different definition (the matching's mean over the other side, greedy
/// matching, uniqueness over true features) is off by > 1e-2.
pub const PEER_TRUTH_DICTIONARY: Tol = Tol {
    name: "PEER_TRUTH_DICTIONARY",
    atol: 1e-5,
    rtol: 1e-5,
};

/// The same comparison for figures that depend on the SAE's codes of each row (precision,
/// recall, F1, accuracy, L0, explained variance, shrinkage): saeforge reads the rows from
/// the f32 shards that synth wrote (x = sum c_i f_i + b summed in f32 in feature order),
/// SAELens recomputes them from the true codes as codes @ F + b in torch (another order),
/// so rows differ by ~1e-7 relative and a TopK choice whose k-th and (k+1)-th
/// pre-activations are within that can flip: a handful of (row, latent) decisions out of
/// 5000 x 300 move each mean by at most ~1e-4 (one decision moves one latent's precision by
/// at most 1/its firing count, divided by 300 latents). EV and shrinkage sums run in f64
/// on our side and f32/f64 on SAELens's (~1e-6). Measured (SAELens 6.54.12, seeds
/// printed by the test): worst difference 7.9e-8 over all eleven figures, no decision
/// flipped. atol 1e-4 leaves room for a few flips; a wrong definition (mean over firing
/// latents only, F1 of the mean precision and recall, TN counted as rows - TP) moves these
/// by > 1e-2. Also the bound for the GPU engine's firing metrics against the CPU's TopK
/// choices (tests/eval/truth.rs): its GEMM rounds differently, with the same effect.
pub const PEER_TRUTH_FIRING: Tol = Tol {
    name: "PEER_TRUTH_FIRING",
    atol: 1e-4,
    rtol: 0.0,
};

/// saeforge's BatchTopK / Matryoshka export (JumpReLU with the learned threshold) encoded
/// by saeforge's CPU encoder and by SAELens after `SAE.load_from_disk`
/// (tests/eval/peer_export.rs): the same f32 weights, pre-activations from two f32 products
/// of d = 16 terms in different orders (~1e-6 of values O(1)); entries within 1e-4 of the
/// gate are skipped (a flip there is rounding, not a format error). The bar is a
/// max abs difference < 1e-4; a wrong export (threshold not folded into the data's units,
/// b_dec not subtracted, W_enc transposed) is off by > 1e-1.
pub const PEER_EXPORT_CODES: Tol = Tol {
    name: "PEER_EXPORT_CODES",
    atol: 1e-4,
    rtol: 0.0,
};

// ---------------------------------------------------------------- other trainers' formats

/// saeforge's codes and reconstructions of a sparsify / Gemma Scope SAE against its trainer's
/// own encoding in numpy (float64 from the stored weights; tests/formats/numpy_ref.py). Ours
/// are f32 products of d = 32 terms (~1e-6 of values O(1)); Gemma Scope's b_dec W_enc folded
/// into b_enc adds one f32 rounding; the rows are drawn 1e-3 clear of every selection edge, so
/// no code flips. The bar is a max abs difference < 1e-4; a wrong layout (W_enc not
/// transposed, b_dec not subtracted or subtracted twice, W_skip left out) is off by > 1e-1.
pub const FORMATS_NUMPY: Tol = Tol {
    name: "FORMATS_NUMPY",
    atol: 1e-4,
    rtol: 0.0,
};

/// A transcoder export's codes and outputs in SAELens (`SAE.load_from_disk`, float32 torch
/// on CPU) against saeforge's encoder on the same rows. Both are f32 products of d_in = 32
/// (encoder) and <= d_sae = 256 (decoder) terms of values O(1), summed in different orders:
/// ~1e-5 at most; the rows are drawn 1e-3 clear of every selection edge (ReLU sign, top-k
/// boundary, JumpReLU threshold), so no code flips. The bar is a max abs difference
/// < 1e-4; a wrong layout (W_dec transposed, b_dec subtracted from the input, the target
/// scale not folded back) is off by > 1e-1.
pub const TRANSCODER_PEER: Tol = Tol {
    name: "TRANSCODER_PEER",
    atol: 1e-4,
    rtol: 0.0,
};

/// A transcoder's hand-written CPU gradients against central differences (h = 1e-4) of an
/// independent f64 forward: the analytic side is f32 sums of <= 48 O(1) terms (~1e-5
/// relative), the difference quotient's truncation error is O(h^2) ~ 1e-8 times third
/// derivatives of O(1); 1e-3 relative plus 1e-4 absolute covers both with a wide margin,
/// while a missing term (the encoder's b_dec path, a d_in / d_out mix-up) is off by O(1).
pub const TRANSCODER_FD: Tol = Tol {
    name: "TRANSCODER_FD",
    atol: 1e-4,
    rtol: 1e-3,
};

/// The geometric median's optimality condition: the mean of the unit vectors from the
/// returned b_dec to the sample's points. Weiszfeld stops when a step moves m by < 1e-6 of
/// |m|; a step is sum_i w_i (x_i - m) / sum_i w_i, so the pull left is about 1e-6 |m|
/// mean(1 / |x_i - m|) (~1e-6 for the test's O(1) points) plus m's rounding to f32 (~1e-7
/// relative); the test's runs left ~1e-8, and 1e-5 leaves room. At the mean of the test's
/// skewed points the pull is ~1e-2 (d 64) to ~1e-1 (d 5), which the test requires to be
/// over 100 x this, so that a wrong weight cannot pass.
pub const GEOMETRIC_MEDIAN: Tol = Tol {
    name: "GEOMETRIC_MEDIAN",
    atol: 1e-5,
    rtol: 0.0,
};
