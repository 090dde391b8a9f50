//! The CPU engine's sparse products: [`crate::reference::sparse`]'s `sparse_decode`,
//! `sparse_dot`, `gather_dw_enc` and `gather_dw_dec` with the same contracts and bitwise the same results
//! (every output element is computed by the same operations in the same order), over
//! rayon's pool, and `gather_dw_enc` writing its (d, n) output in contiguous runs.
//!
//! `src/reference/sparse.rs` stays the plain loops that judge the GPU kernels; this module
//! is tested against it (the unit tests below, bit for bit). Why it exists: profiled at
//! 384 -> 6144 latents, batch 512, k 32 (`perf record saeforge train --device cpu`), the
//! reference `gather_dw_enc` alone was 15 % of a step, one thread writing W_enc's gradient
//! column by column (a stride of n floats per element), and `sparse_dot` / `sparse_decode`
//! another 7 % on one thread. `sparse_dot`'s dot products run eight slots side by side
//! (each still the reference's sequential sum), since one at a time waited on each addition;
//! with AVX2, sixteen, their rows transposed in registers. The decode and the gathers sum
//! their rows in register blocks (`sum_rows`). `gather_dw_enc`'s transposed write into the
//! (d, n) gradient moves 8 x 8 blocks through registers with AVX2 (one element at a time it
//! took 10 of a step's 110 ms at 512 -> 16384, batch 256, twice: main and AuxK). The AVX2
//! paths are chosen at run time ([`avx2`]); the baseline paths are what every other CPU runs
//! (Apple silicon, any x86 without AVX2), so the tests run each test body on both paths
//! (`tests::on_each_path`), on a machine with AVX2 too.

use rayon::prelude::*;

use crate::reference::sparse as reference;

/// Latents whose gradient columns are gathered before they are written into the (d, n)
/// output (bounds the scratch at this many x d floats).
const LATENTS_PER_PASS: usize = 1024;

/// Output rows (of W_enc's gradient) per rayon task, and latents per tile of its write.
const OUT_ROWS_PER_TASK: usize = 16;
const LATENT_TILE: usize = 64;

/// Rows per rayon task for the row-parallel products.
pub(crate) const ROWS_PER_TASK: usize = 8;

/// Latents per rayon task of [`gather_dw_dec`].
const LATENTS_PER_TASK: usize = 64;

/// Slots whose dot products [`dot_row`] runs side by side.
const DOT_LANES: usize = 8;

/// `out[j] += coef_t * row_t[j]` for the terms t = 0..m in order, j over out: the
/// reference's loop (`latent_column`, `decode_row`) with its two loops swapped per block of
/// W columns, so that the block's W sums stay in registers across the terms instead of
/// being loaded and stored once per term. Every element gets the same multiplies and adds
/// in the same order, so the same bits (no fused multiply-add: Rust never contracts).
#[inline(always)]
fn sum_rows_blocked<'r, const W: usize>(
    out: &mut [f32],
    m: usize,
    term: impl Fn(usize) -> (f32, &'r [f32]),
) {
    let d = out.len();
    let full = d - d % W;
    for c0 in (0..full).step_by(W) {
        let block = &mut out[c0..c0 + W];
        let mut acc: [f32; W] = std::array::from_fn(|k| block[k]);
        for t in 0..m {
            let (g, row) = term(t);
            let x = &row[c0..c0 + W];
            for k in 0..W {
                acc[k] += g * x[k];
            }
        }
        block.copy_from_slice(&acc);
    }
    if full < d {
        for t in 0..m {
            let (g, row) = term(t);
            for (o, &x) in out[full..].iter_mut().zip(&row[full..d]) {
                *o += g * x;
            }
        }
    }
}

/// Whether the AVX2 paths run: the CPU has AVX2 (checked once by std, then cached), and the
/// tests are not running their bodies on the baseline path.
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    #[cfg(test)]
    if tests::BASELINE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2")
}

/// [`sum_rows_blocked`] compiled for AVX2 (8 ymm accumulators of 8 columns).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_rows_avx2<'r>(out: &mut [f32], m: usize, term: impl Fn(usize) -> (f32, &'r [f32])) {
    sum_rows_blocked::<64>(out, m, term)
}

/// [`sum_rows_blocked`] with AVX2 where the CPU has it (checked once, then cached by std),
/// else the baseline build's SSE2 (8 xmm accumulators of 4 columns).
pub(crate) fn sum_rows<'r>(out: &mut [f32], m: usize, term: impl Fn(usize) -> (f32, &'r [f32])) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2, the only feature the function is compiled for.
        return unsafe { sum_rows_avx2(out, m, term) };
    }
    sum_rows_blocked::<32>(out, m, term)
}

/// The per-latent lists of `build_transpose`: lat_ptr (n + 1), lat_row and lat_slot (cap).
#[derive(Clone, Copy)]
pub(crate) struct Lists<'a>(pub &'a [u32], pub &'a [u32], pub &'a [u32]);

impl Lists<'_> {
    /// Latent i's column of W_enc's / row of W_dec's gradient into `acc` (d): the sum over
    /// its entries of coef[slot] * rows[row, :], as [`reference::latent_column`] (the same
    /// bits) through [`sum_rows`].
    pub(crate) fn column(self, coef: &[f32], rows: &[f32], i: usize, acc: &mut [f32]) {
        let Lists(ptr, row, slot) = self;
        let d = acc.len();
        let a = ptr[i] as usize;
        acc.fill(0.0);
        sum_rows(acc, ptr[i + 1] as usize - a, |t| {
            let r = row[a + t] as usize;
            (coef[slot[a + t] as usize], &rows[r * d..(r + 1) * d])
        });
    }
}

/// [`crate::reference::sparse::dot_row`], bitwise: each slot's dot product is the same
/// sequential sum (`acc += y[j] * w[j]`, j ascending), but DOT_LANES slots run side by
/// side, so that the sums' chains of dependent additions overlap instead of each waiting
/// on the last (one chain at a time ran at ~2.7 GMAC/s on this 2-core machine).
/// With AVX2, [`dot_lanes_avx2`] takes the slots 16 and then 8 at a time.
/// idx: (slots), y: (d), w_dec: (n, d) -> g: (slots)
pub(crate) fn dot_row(idx: &[u32], y: &[f32], w_dec: &[f32], g: &mut [f32]) {
    let d = y.len();
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        let row = |i: u32| &w_dec[i as usize * d..][..d];
        let (mut idx, mut g) = (idx, g);
        while idx.len() >= 8 {
            let take = if idx.len() >= 16 { 16 } else { 8 };
            let w: [&[f32]; 16] = std::array::from_fn(|l| row(idx[l.min(take - 1)]));
            let (out, rest) = g.split_at_mut(take);
            // SAFETY: the CPU has AVX2, the only feature the functions are compiled for.
            unsafe {
                if take == 16 {
                    dot_lanes_avx2::<2>(&w, y, out)
                } else {
                    dot_lanes_avx2::<1>(&w[..8], y, out)
                }
            }
            (idx, g) = (&idx[take..], rest);
        }
        return reference::dot_row(idx, y, w_dec, g);
    }
    let mut slots = idx.chunks_exact(DOT_LANES);
    let mut outs = g.chunks_exact_mut(DOT_LANES);
    for (lanes, out) in (&mut slots).zip(&mut outs) {
        let w: [&[f32]; DOT_LANES] = std::array::from_fn(|l| &w_dec[lanes[l] as usize * d..][..d]);
        let mut acc = [0.0f32; DOT_LANES];
        for (j, &yj) in y.iter().enumerate() {
            for (a, wl) in acc.iter_mut().zip(&w) {
                *a += yj * wl[j];
            }
        }
        out.copy_from_slice(&acc);
    }
    reference::dot_row(slots.remainder(), y, w_dec, outs.into_remainder());
}

/// The dot products of y (d) with the 8 G rows `w` into `out` (8 G), each the reference's
/// sequential sum over j (a multiply, then an add, j ascending: the same bits): per block of
/// 8 columns, each group of 8 rows is transposed in registers so that one ymm holds column
/// j of the 8 rows, and G accumulators of 8 slots each take the block's 8 columns in turn.
/// The G chains of dependent adds overlap (one chain alone waits on each add's latency).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_lanes_avx2<const G: usize>(w: &[&[f32]], y: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(w.len() == 8 * G && out.len() == 8 * G);
    let d = y.len();
    let full = d - d % 8;
    let mut acc = [_mm256_setzero_ps(); G];
    for j in (0..full).step_by(8) {
        for (g, a) in acc.iter_mut().enumerate() {
            let r: [__m256; 8] = std::array::from_fn(|l| {
                let cols = &w[8 * g + l][j..j + 8];
                // SAFETY: `cols` holds the 8 floats loaded.
                unsafe { _mm256_loadu_ps(cols.as_ptr()) }
            });
            for (k, ck) in transpose8(r).iter().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_set1_ps(y[j + k]), *ck));
            }
        }
    }
    for (g, a) in acc.iter().enumerate() {
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` has room for the 8 floats stored.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
        for (l, mut s) in lanes.into_iter().enumerate() {
            for (&yj, &wj) in y[full..].iter().zip(&w[8 * g + l][full..d]) {
                s += yj * wj;
            }
            out[8 * g + l] = s;
        }
    }
}

/// The 8 x 8 transpose of rows `r`: element k of the result is [r[0][k], ..., r[7][k]].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) fn transpose8(r: [std::arch::x86_64::__m256; 8]) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // tt[4h + 2p + q]: columns 2p + q (and 4 + 2p + q) of rows 4h .. 4h + 4.
    let tt: [__m256; 8] = std::array::from_fn(|i| {
        let (h, p, q) = (i / 4, (i / 2) % 2, i % 2);
        let (a, b) = (t[4 * h + p], t[4 * h + 2 + p]);
        if q == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xEE>(a, b)
        }
    });
    std::array::from_fn(|k| {
        let (a, b) = (tt[k % 4], tt[4 + k % 4]);
        if k < 4 {
            _mm256_permute2f128_ps::<0x20>(a, b)
        } else {
            _mm256_permute2f128_ps::<0x31>(a, b)
        }
    })
}

/// [`crate::reference::sparse::gather_dw_dec`], latents in parallel: each latent's row of
/// W_dec's gradient is the reference's `latent_column` sum, through [`sum_rows`].
/// lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap), val: (cap), dy: (rows, d)
/// -> dw_dec: (n, d)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_dec(
    lat_ptr: &[u32],
    lat_row: &[u32],
    lat_slot: &[u32],
    val: &[f32],
    dy: &[f32],
    n: usize,
    d: usize,
    accumulate: bool,
    dw_dec: &mut [f32],
) {
    reference::check_gather("gather_dw_dec", lat_ptr, n, "dw_dec", dw_dec.len(), n * d);
    if d == 0 {
        return;
    }
    let lists = Lists(lat_ptr, lat_row, lat_slot);
    gather_latent_rows(lists, val, |_| dy, d, accumulate, dw_dec);
}

/// W_dec's gradient (n, d), latents in parallel: row i the sum over latent i's entries of
/// val[slot] * dy_of(i)[row, :] ([`Lists::column`]: the reference's `latent_column`),
/// stored as the reference's `store` (with `accumulate`, added, for the latents with
/// entries only). d >= 1.
pub(crate) fn gather_latent_rows<'y>(
    lists: Lists,
    val: &[f32],
    dy_of: impl Fn(usize) -> &'y [f32] + Sync,
    d: usize,
    accumulate: bool,
    dw_dec: &mut [f32],
) {
    let lat_ptr = lists.0;
    dw_dec
        .par_chunks_mut(d)
        .enumerate()
        .with_min_len(LATENTS_PER_TASK)
        .for_each_init(
            || vec![0.0f32; d],
            |acc, (i, out)| {
                if accumulate && lat_ptr[i] == lat_ptr[i + 1] {
                    return;
                }
                lists.column(val, dy_of(i), i, acc);
                reference::store(out, acc, accumulate);
            },
        );
}

/// [`crate::reference::sparse::sparse_decode`], rows in parallel.
/// row_ptr: (rows + 1), idx: (cap), val: (cap), w_dec: (n, d), b_dec: (d) -> x_hat: (rows, d)
#[allow(clippy::too_many_arguments)]
pub fn sparse_decode(
    row_ptr: &[u32],
    idx: &[u32],
    val: &[f32],
    w_dec: &[f32],
    b_dec: Option<&[f32]>,
    rows: usize,
    n: usize,
    d: usize,
    x_hat: &mut [f32],
) {
    assert_eq!(row_ptr.len(), rows + 1, "sparse_decode: row_ptr length");
    assert_eq!(val.len(), idx.len(), "sparse_decode: val length");
    assert_eq!(w_dec.len(), n * d, "sparse_decode: w_dec length");
    assert_eq!(x_hat.len(), rows * d, "sparse_decode: x_hat length");
    if d == 0 {
        return;
    }
    x_hat
        .par_chunks_mut(d)
        .with_min_len(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(b, out)| {
            match b_dec {
                Some(bias) => out.copy_from_slice(&bias[..d]),
                None => out.fill(0.0),
            }
            let s0 = row_ptr[b] as usize;
            let m = row_ptr[b + 1] as usize - s0;
            sum_rows(out, m, |t| {
                let i = idx[s0 + t] as usize;
                (val[s0 + t], &w_dec[i * d..(i + 1) * d])
            });
        });
}

/// [`crate::reference::sparse::sparse_dot`], rows in parallel.
/// row_ptr: (rows + 1), idx: (cap), dy: (rows, d), w_dec: (n, d) -> g: (cap)
#[allow(clippy::too_many_arguments)]
pub fn sparse_dot(
    row_ptr: &[u32],
    idx: &[u32],
    dy: &[f32],
    w_dec: &[f32],
    rows: usize,
    n: usize,
    d: usize,
    g: &mut [f32],
) {
    assert_eq!(row_ptr.len(), rows + 1, "sparse_dot: row_ptr length");
    assert_eq!(g.len(), idx.len(), "sparse_dot: g length");
    assert_eq!(dy.len(), rows * d, "sparse_dot: dy length");
    assert_eq!(w_dec.len(), n * d, "sparse_dot: w_dec length");
    slots_per_row("sparse_dot", row_ptr, g)
        .into_par_iter()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(b, out)| {
            let first = row_ptr[b] as usize;
            let idx = &idx[first..first + out.len()];
            dot_row(idx, &dy[b * d..(b + 1) * d], w_dec, out)
        });
}

/// Each row's slots of `g` (a value per slot of a CSR code with `row_ptr`), as disjoint
/// mutable slices with the row's number, for the rows in parallel; the slots past the
/// code's (up to the capacity, g.len()) set to 0.
pub(crate) fn slots_per_row<'g>(
    what: &str,
    row_ptr: &[u32],
    g: &'g mut [f32],
) -> Vec<(usize, &'g mut [f32])> {
    let rows = row_ptr.len() - 1;
    let nnz = row_ptr[rows] as usize;
    assert!(nnz <= g.len(), "{what}: row_ptr past the capacity");
    let (mut rest, tail) = g.split_at_mut(nnz);
    tail.fill(0.0);
    let mut per_row = Vec::with_capacity(rows);
    for b in 0..rows {
        let (mine, more) = rest.split_at_mut((row_ptr[b + 1] - row_ptr[b]) as usize);
        per_row.push((b, mine));
        rest = more;
    }
    per_row
}

/// [`crate::reference::sparse::gather_dw_enc`]: each latent's column summed in a scratch
/// row (latents in parallel), then written into W_enc's gradient row by row (rows in
/// parallel), [`LATENTS_PER_PASS`] latents at a time.
/// lat_ptr: (n + 1), lat_row: (cap), lat_slot: (cap), dval: (cap), xc: (rows, d)
/// -> dw_enc: (d, n)
#[allow(clippy::too_many_arguments)]
pub fn gather_dw_enc(
    lat_ptr: &[u32],
    lat_row: &[u32],
    lat_slot: &[u32],
    dval: &[f32],
    xc: &[f32],
    n: usize,
    d: usize,
    accumulate: bool,
    dw_enc: &mut [f32],
) {
    reference::check_gather("gather_dw_enc", lat_ptr, n, "dw_enc", dw_enc.len(), d * n);
    if d == 0 || n == 0 {
        return;
    }
    // Scratch rows ld floats apart: 8 rows a power of two of bytes apart (d 512: 2 KiB)
    // would fall in the same few cache sets, and the transposed write reads 8 at once.
    let ld = d + 16;
    // The 8 x 8 register transpose of the write (AVX2), checked once per call.
    #[cfg(target_arch = "x86_64")]
    let with_avx2 = avx2();
    let mut scratch = vec![0.0f32; LATENTS_PER_PASS.min(n) * ld];
    for c0 in (0..n).step_by(LATENTS_PER_PASS) {
        let w = LATENTS_PER_PASS.min(n - c0);
        scratch[..w * ld]
            .par_chunks_mut(ld)
            .enumerate()
            .for_each(|(li, acc)| {
                Lists(lat_ptr, lat_row, lat_slot).column(dval, xc, c0 + li, &mut acc[..d])
            });
        // Written in tiles of OUT_ROWS_PER_TASK output rows (a rayon task) by LATENT_TILE
        // latents, so each scratch line read serves all the task's output rows.
        let scratch = &scratch;
        dw_enc
            .par_chunks_mut(OUT_ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(jb, out)| {
                let j0 = jb * OUT_ROWS_PER_TASK;
                let has = |i: usize| !accumulate || lat_ptr[i] != lat_ptr[i + 1];
                let put = |o: &mut f32, s: f32| *o = if accumulate { *o + s } else { s };
                for l0 in (0..w).step_by(LATENT_TILE) {
                    let l1 = (l0 + LATENT_TILE).min(w);
                    // Advanced by the AVX2 blocks on x86_64 only.
                    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
                    let mut done = l0;
                    #[cfg(target_arch = "x86_64")]
                    if with_avx2 && out.len() == OUT_ROWS_PER_TASK * n {
                        while done + 8 <= l1 {
                            let i0 = c0 + done;
                            let mask: [bool; 8] = std::array::from_fn(|l| has(i0 + l));
                            for h in 0..OUT_ROWS_PER_TASK / 8 {
                                let src = &scratch[done * ld + j0 + 8 * h..];
                                let dst = &mut out[8 * h * n..][..8 * n];
                                // SAFETY: the CPU has AVX2, the only feature it is compiled for.
                                unsafe { write8_avx2(src, ld, dst, n, i0, mask, accumulate) };
                            }
                            done += 8;
                        }
                    }
                    for (jj, row) in out.chunks_exact_mut(n).enumerate() {
                        for li in done..l1 {
                            let i = c0 + li;
                            if has(i) {
                                put(&mut row[i], scratch[li * ld + j0 + jj]);
                            }
                        }
                    }
                }
            });
    }
}

/// The 8 x 8 block of the transposed write: out rows j .. j + 8 (dst: 8 rows of n), latents
/// i0 .. i0 + 8, from scratch rows li .. li + 8 (src: from row li's column j, rows `ld`
/// apart): transposed in registers ([`transpose8`]), then stored (with `accumulate`, added
/// to what is there where `mask` says the latent has entries, the others kept).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn write8_avx2(
    src: &[f32],
    ld: usize,
    dst: &mut [f32],
    n: usize,
    i0: usize,
    mask: [bool; 8],
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|l| {
        let v = &src[l * ld..][..8];
        // SAFETY: `v` holds the 8 floats loaded.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    });
    let m = _mm256_castsi256_ps(_mm256_setr_epi32(
        -(mask[0] as i32),
        -(mask[1] as i32),
        -(mask[2] as i32),
        -(mask[3] as i32),
        -(mask[4] as i32),
        -(mask[5] as i32),
        -(mask[6] as i32),
        -(mask[7] as i32),
    ));
    for (k, c) in transpose8(r).into_iter().enumerate() {
        let o = &mut dst[k * n + i0..][..8];
        // SAFETY: `o` holds the 8 floats loaded and stored.
        unsafe {
            let v = if accumulate {
                let old = _mm256_loadu_ps(o.as_ptr());
                _mm256_blendv_ps(old, _mm256_add_ps(old, c), m)
            } else {
                c
            };
            _mm256_storeu_ps(o.as_mut_ptr(), v);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
