//! The CPU engine's top-k selections: [`crate::reference::codes::topk_codes`]'s contract (the
//! k largest positive entries of each row among the eligible latents, ties to the lower
//! latent, latents ascending in each row, codes packed row after row, the unused tail
//! zero), in O(eligible) per row instead of a sort, over rayon's pool by rows.
//!
//! `src/reference/codes.rs` stays the plain sort that judges the GPU kernels; this module is
//! tested against it (the unit tests in cpu_codes/tests.rs: every k, ties, zeros, negatives,
//! -0, NaN, dead lists, block maxima given). The selection is the same set (the order by
//! (key, latent) is total), so the codes are bitwise the reference's.
//!
//! [`activation_codes`] is the reference's ReLU / JumpReLU codes, bitwise, over rayon.
//!
//! [`batchtopk_from_bmax`] is [`crate::reference::topk::batchtopk`]'s (BatchTopK: the k_total largest
//! entries of the whole batch), bitwise too, selecting among the entries at or above a
//! bound from block maxima instead of over a sorted copy of the batch.
//!
//! Each row's scan starts from a floor: the k-th largest of the row's 32-entry block maxima
//! (which the CPU encoder writes in its bias pass, `blas::add_bias_block_max`, as the GPU's
//! GEMM does in its epilogue; over a dead list: its entries gathered, and the maxima of
//! strided groups of ~8), a lower bound on its k-th largest entry; blocks whose maximum is
//! below the floor are skipped unread (a dead list's chunks after one vectorised
//! comparison), and in the others only the entries at the floor (a bit mask) are pushed as
//! candidates. [`batchtopk_from_bmax`] reads only the blocks whose maximum reaches its
//! bound, once it has the bound.
//!
//! It matters most for AuxK with many dead latents: the reference sorts every positive dead
//! entry of every row (a quarter of 16384 latents dead at batch 4096: 4096 sorts of ~2000
//! keys per step), this selects in one pass over the dead columns of each row.

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::reference::codes::key_of;

/// Rows per rayon task: enough work to pay for the task.
const ROWS_PER_TASK: usize = 16;

/// Entries per block: of the block maxima the selections start from (the GPU's `BLOCK`;
/// the CPU encoder writes them with its bias, `blas::add_bias_block_max`), and of a
/// vectorised scan of a row against the floor (one bit each in a u32 mask).
pub const BLOCK: usize = 32;

/// The float whose key is `floor` when that is a positive float's key, else 0 (every
/// positive entry reaches a floor of 0 or of a non-positive key).
fn floor_value(floor: u32) -> f32 {
    if floor & 0x8000_0000 != 0 {
        f32::from_bits(floor & 0x7fff_ffff)
    } else {
        0.0
    }
}

/// Cut `scratch` to its k best: largest key first, then the lower latent (a total order,
/// so the set is unique).
fn keep_best(scratch: &mut Vec<(u32, u32)>, k: usize) {
    if scratch.len() > k {
        scratch.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        scratch.truncate(k);
    }
}

/// The maxima of `row`'s [`BLOCK`]-entry blocks into `maxima`, what
/// `blas::add_bias_block_max` gives: NaN entries count as absent, as in the selection,
/// which never takes them.
fn row_block_max(row: &[f32], maxima: &mut Vec<f32>) {
    // `v > m` is false for NaN, so NaN never becomes a maximum.
    let max = |a: f32, v: f32| if v > a { v } else { a };
    maxima.clear();
    maxima.extend(row.chunks(BLOCK).map(|c| {
        // Eight running maxima, a vector register's worth, then their maximum.
        let mut m = [f32::NEG_INFINITY; 8];
        let mut lanes = c.chunks_exact(8);
        for lane in &mut lanes {
            for (m, &v) in m.iter_mut().zip(lane) {
                *m = max(*m, v);
            }
        }
        m.iter()
            .chain(lanes.remainder())
            .fold(f32::NEG_INFINITY, |a, &v| max(a, v))
    }));
}

/// The key of the k-th largest of a row's block maxima when it is a positive float, else
/// 0 (no floor): a lower bound on the row's k-th largest entry (each block's maximum is
/// one of its entries). `sel` is scratch.
fn block_max_floor(maxima: &[f32], k: usize, sel: &mut Vec<f32>) -> u32 {
    if k == 0 || k > maxima.len() {
        return 0;
    }
    sel.clear();
    sel.extend_from_slice(maxima);
    let (_, kth, _) = sel.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    if *kth > 0.0 { key_of(*kth) } else { 0 }
}

/// The key of the k-th largest of the maxima of `vals`' strided groups (group g holds
/// positions g, g + G, g + 2G, ...; G = max(k, len / 8) groups of ~8 entries, computed as
/// G running maxima over consecutive blocks, which vectorises) when it is a positive float,
/// else 0: a lower bound on the k-th largest of `vals` (k groups hold an entry that large).
/// NaN entries never become a maximum. `maxima` is scratch.
fn strided_floor(vals: &[f32], k: usize, maxima: &mut Vec<f32>) -> u32 {
    if k == 0 || k > vals.len() {
        return 0;
    }
    let groups = (vals.len() / 8).max(k);
    maxima.clear();
    maxima.resize(groups, f32::NEG_INFINITY);
    for block in vals.chunks(groups) {
        for (m, &v) in maxima.iter_mut().zip(block) {
            *m = if v > *m { v } else { *m };
        }
    }
    let (_, kth, _) = maxima.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    if *kth > 0.0 { key_of(*kth) } else { 0 }
}

/// The buffers one task's rows reuse: the candidates (key, latent), the maxima of a
/// floor and their copy to select in, a dead list's entries gathered.
#[derive(Default)]
struct RowScratch {
    cand: Vec<(u32, u32)>,
    maxima: Vec<f32>,
    sel: Vec<f32>,
    gathered: Vec<f32>,
}

/// The latents a top-k chooses among: all, with the rows' block maxima (rows, ceil(n /
/// BLOCK)) when the encoder wrote them (`blas::add_bias_block_max`), or a list (AuxK's dead
/// latents, ascending).
#[derive(Clone, Copy)]
pub enum Eligible<'a> {
    All { bmax: Option<&'a [f32]> },
    Listed(&'a [u32]),
}

/// One row's top-k into `idx` / `val` (at most k entries, latents ascending); the count.
/// `eligible`: all (with the row's block maxima when given) or a list.
fn row_topk(
    row: &[f32],
    eligible: Eligible,
    k: usize,
    rs: &mut RowScratch,
    idx: &mut [u32],
    val: &mut [f32],
) -> usize {
    let scratch = &mut rs.cand;
    scratch.clear();
    if k == 0 {
        return 0;
    }
    // Candidates go into a buffer of 4k; when it fills, it is cut to its k best and the
    // k-th key becomes a floor that later entries must reach (ties kept: the cut decides
    // them), so most entries cost one comparison.
    let cap = 4 * k;
    let push = |scratch: &mut Vec<(u32, u32)>, floor: &mut u32, v: f32, i: u32| {
        if v > 0.0 {
            let key = key_of(v);
            if key >= *floor {
                scratch.push((key, i));
                if scratch.len() >= cap {
                    keep_best(scratch, k);
                    *floor = scratch.iter().map(|e| e.0).min().unwrap_or(0);
                }
            }
        }
    };
    // The entries to choose from, in order: the row, or a dead list's entries gathered
    // (so that they too are scanned in vectorised chunks); the floor they start from; and
    // the row's block maxima (None for a list). Either floor is the k-th largest of k or
    // more group maxima when that is positive: the k-th largest entry is at least that
    // large, so every entry of the top k reaches it, ties included.
    type Latent<'l> = &'l dyn Fn(usize) -> u32;
    let (vals, latent, mut floor, maxima): (&[f32], Latent, u32, Option<&[f32]>) = match eligible {
        Eligible::All { bmax: given } => {
            let maxima = given.unwrap_or_else(|| {
                row_block_max(row, &mut rs.maxima);
                &rs.maxima
            });
            let floor = block_max_floor(maxima, k, &mut rs.sel);
            (row, &|p| p as u32, floor, Some(maxima))
        }
        Eligible::Listed(list) => {
            rs.gathered.clear();
            rs.gathered.extend(list.iter().map(|&i| row[i as usize]));
            let floor = strided_floor(&rs.gathered, k, &mut rs.maxima);
            (&rs.gathered, &|p| list[p], floor, None)
        }
    };
    // Blocks with no entry at the floor are skipped: by their maximum when it is known
    // (without reading them), else after one vectorised scan (the floor's value as a
    // float: for positive entries the key order is the float order, and NaN passes neither
    // test, as in `push`).
    for (c, chunk) in vals.chunks(BLOCK).enumerate() {
        let at = floor_value(floor);
        if maxima.is_some_and(|m| !(m[c] > 0.0 && m[c] >= at)) {
            continue;
        }
        // One bit per entry at the floor; only those are pushed (`push` checks them again
        // against the floor as it rises).
        let mut mask = chunk
            .iter()
            .enumerate()
            .fold(0u32, |m, (t, &v)| m | (((v > 0.0 && v >= at) as u32) << t));
        while mask != 0 {
            let t = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            push(scratch, &mut floor, chunk[t], latent(c * BLOCK + t));
        }
    }
    keep_best(scratch, k);
    scratch.sort_unstable_by_key(|e| e.1);
    for (j, &(_, i)) in scratch.iter().enumerate() {
        idx[j] = i;
        val[j] = row[i as usize];
    }
    scratch.len()
}

/// As [`crate::reference::codes::topk_codes`], bitwise.
/// x: (rows, n), cols: (n) u32 + ncols: (1) u32 or None
///   -> row_ptr: (rows + 1) u32, idx: (rows * k) u32, val: (rows * k)
#[allow(clippy::too_many_arguments)]
pub fn topk_codes(
    x: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    cols: Option<(&[u32], &[u32])>,
    row_ptr: &mut [u32],
    idx: &mut [u32],
    val: &mut [f32],
) {
    let eligible = match cols {
        Some((list, count)) => Eligible::Listed(&list[..(count[0] as usize).min(list.len())]),
        None => Eligible::All { bmax: None },
    };
    topk_select(x, rows, n, k, eligible, row_ptr, idx, val)
}

/// [`topk_codes`] over all columns with the rows' block maxima already computed (by the
/// encoder's bias pass, `blas::add_bias_block_max`, as the GPU's come from its GEMM's
/// epilogue): blocks below a row's floor are skipped unread. Bitwise [`topk_codes`]'s.
/// x: (rows, n), bmax: (rows, ceil(n / BLOCK)) the maxima of x's BLOCK-entry blocks
///   -> row_ptr: (rows + 1) u32, idx: (rows * k) u32, val: (rows * k)
#[allow(clippy::too_many_arguments)]
pub fn topk_codes_from_bmax(
    x: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    bmax: &[f32],
    row_ptr: &mut [u32],
    idx: &mut [u32],
    val: &mut [f32],
) {
    topk_select(
        x,
        rows,
        n,
        k,
        Eligible::All { bmax: Some(bmax) },
        row_ptr,
        idx,
        val,
    )
}

/// [`topk_codes`] among the eligible latents: what [`topk_codes`] and
/// [`topk_codes_from_bmax`] call.
#[allow(clippy::too_many_arguments)]
fn topk_select(
    x: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    eligible: Eligible,
    row_ptr: &mut [u32],
    idx: &mut [u32],
    val: &mut [f32],
) {
    assert_eq!(x.len(), rows * n, "topk_codes: x");
    assert_eq!(row_ptr.len(), rows + 1, "topk_codes: row_ptr");
    assert_eq!(idx.len(), rows * k, "topk_codes: idx");
    assert_eq!(val.len(), rows * k, "topk_codes: val");
    let nb = n.div_ceil(BLOCK);
    if let Eligible::All { bmax: Some(b) } = eligible {
        assert_eq!(b.len(), rows * nb, "topk_codes: bmax");
    }
    if k == 0 || n == 0 {
        idx.fill(0);
        val.fill(0.0);
        row_ptr.fill(0);
        return;
    }
    // Each row into its own k slots, in parallel; then packed.
    let mut counts = vec![0u32; rows];
    let task = ROWS_PER_TASK;
    x.par_chunks(n * task)
        .zip(idx.par_chunks_mut(k * task))
        .zip(val.par_chunks_mut(k * task))
        .zip(counts.par_chunks_mut(task))
        .enumerate()
        .for_each(|(t, (((xs, is), vs), cs))| {
            let r0 = t * task;
            let mut rs = RowScratch::default();
            for (r, c) in cs.iter_mut().enumerate() {
                let (i, v) = (&mut is[r * k..(r + 1) * k], &mut vs[r * k..(r + 1) * k]);
                let (a, z) = ((r0 + r) * nb, (r0 + r + 1) * nb);
                let eligible = match eligible {
                    Eligible::All { bmax } => Eligible::All {
                        bmax: bmax.map(|b| &b[a..z]),
                    },
                    listed => listed,
                };
                *c = row_topk(&xs[r * n..(r + 1) * n], eligible, k, &mut rs, i, v) as u32;
            }
        });
    row_ptr[0] = 0;
    let mut out = 0usize;
    for (r, &c) in counts.iter().enumerate() {
        let c = c as usize;
        if out != r * k {
            idx.copy_within(r * k..r * k + c, out);
            val.copy_within(r * k..r * k + c, out);
        }
        out += c;
        row_ptr[r + 1] = out as u32;
    }
    idx[out..].fill(0);
    val[out..].fill(0.0);
}

/// As [`crate::reference::topk::batchtopk`], bitwise: the k_total largest entries of the
/// whole matrix (ties to the lower flat index) as CSR, latents ascending, and the smallest
/// selected value, from the rows' block maxima (the encoder's bias pass,
/// `blas::add_bias_block_max`). The reference sorts a copy of the matrix; this finds the
/// k_total-th largest value t by [`batch_threshold`] (from a bound of the block maxima and a
/// radix pass over the entries at or above it), then counts and writes each row in
/// parallel, reading only the blocks whose maximum reaches t.
/// x: (rows, n), bmax: (rows, ceil(n / BLOCK)) the maxima of x's BLOCK-entry blocks
///   -> row_ptr: (rows + 1), idx: (k_total), val: (k_total), threshold: (1)
#[allow(clippy::too_many_arguments)]
pub fn batchtopk_from_bmax(
    x: &[f32],
    rows: usize,
    n: usize,
    k_total: usize,
    bmax: &[f32],
    row_ptr: &mut [u32],
    idx: &mut [u32],
    val: &mut [f32],
    threshold: &mut [f32],
) {
    let t = batch_threshold(x, rows, n, k_total, bmax);
    assert_eq!(row_ptr.len(), rows + 1, "batchtopk: row_ptr");
    assert_eq!(idx.len(), k_total, "batchtopk: idx");
    assert_eq!(val.len(), k_total, "batchtopk: val");
    assert_eq!(threshold.len(), 1, "batchtopk: threshold");
    let nb = n.div_ceil(BLOCK);
    // Per row: entries above t, entries equal to t (only in blocks whose maximum reaches
    // t). The ties taken are the first in flat order, i.e. row after row.
    let counts: Vec<(usize, usize)> = x
        .par_chunks(n)
        .zip(bmax.par_chunks(nb))
        .map(|(r, bm)| {
            let (mut above, mut equal) = (0, 0);
            for b in reaching(bm, t) {
                let blk = &r[b * BLOCK..((b + 1) * BLOCK).min(n)];
                above += blk.iter().filter(|&&v| v > t).count();
                equal += blk.iter().filter(|&&v| v == t).count();
            }
            (above, equal)
        })
        .collect();
    let mut ties_left = k_total - counts.iter().map(|c| c.0).sum::<usize>();
    let mut ties = Vec::with_capacity(rows);
    row_ptr[0] = 0;
    for (r, &(above, equal)) in counts.iter().enumerate() {
        let take = equal.min(ties_left);
        ties_left -= take;
        ties.push(take);
        row_ptr[r + 1] = row_ptr[r] + (above + take) as u32;
    }
    assert_eq!(row_ptr[rows] as usize, k_total, "batchtopk: selected count");
    // Each row's slots, written in parallel.
    let (mut idx_rest, mut val_rest) = (&mut idx[..], &mut val[..]);
    let mut slots = Vec::with_capacity(rows);
    for r in 0..rows {
        let len = (row_ptr[r + 1] - row_ptr[r]) as usize;
        let (i, i_rest) = std::mem::take(&mut idx_rest).split_at_mut(len);
        let (v, v_rest) = std::mem::take(&mut val_rest).split_at_mut(len);
        (idx_rest, val_rest) = (i_rest, v_rest);
        slots.push((i, v, ties[r]));
    }
    x.par_chunks(n)
        .zip(bmax.par_chunks(nb))
        .zip(slots)
        .for_each(|((row, bm), (is, vs, mut ties))| {
            let mut out = 0;
            for b in reaching(bm, t) {
                let lo = b * BLOCK;
                for (i, &v) in row[lo..(lo + BLOCK).min(n)].iter().enumerate() {
                    let take = v > t || (v == t && ties > 0);
                    if take {
                        if v == t {
                            ties -= 1;
                        }
                        is[out] = (lo + i) as u32;
                        vs[out] = v;
                        out += 1;
                    }
                }
            }
        });
    threshold[0] = t + 0.0;
}

/// The blocks of a row whose maximum reaches `t`, ascending: the only ones with an entry
/// at or above t.
fn reaching(bm: &[f32], t: f32) -> impl Iterator<Item = usize> + '_ {
    bm.iter()
        .enumerate()
        .filter(move |&(_, &m)| m >= t)
        .map(|(b, _)| b)
}

/// Candidates above which [`batch_threshold`] narrows them by a radix pass first (fewer:
/// one selection over them all, on one thread, costs less than the pass).
const RADIX_ABOVE: usize = 1 << 18;
/// Buckets of that pass: a key's top bits (sign, exponent and the first 7 mantissa bits,
/// so a bucket spans at most 1/128 of a value).
const RADIX_BITS: u32 = 16;

/// The k_total-th largest entry of x (rows, n). Only the entries at or above a lower bound
/// are candidates: the k_total-th largest of the rows' block maxima (bmax), when there are
/// at least k_total blocks (each block's maximum is one of its entries, so at least k_total
/// entries reach it), else every entry. Many candidates (at 96 -> 768 latents, batch 8192,
/// k 32 there are fewer blocks than k_total: all 6.3 M entries) are first narrowed to one
/// bucket of their keys ([`narrow`]), and the answer selected among that bucket's alone
/// (the reference's sort of a copy of the batch took 72 ms a step at that shape). NaN is
/// never an input (the CPU step checks the pre-activations first).
fn batch_threshold(x: &[f32], rows: usize, n: usize, k_total: usize, bmax: &[f32]) -> f32 {
    assert_eq!(x.len(), rows * n, "batchtopk: x");
    assert!(
        k_total >= 1 && k_total <= rows * n,
        "batchtopk: k_total {k_total} not in 1..={}",
        rows * n
    );
    let nb = n.div_ceil(BLOCK);
    assert_eq!(bmax.len(), rows * nb, "batchtopk: bmax");
    let desc = |a: &f32, b: &f32| b.partial_cmp(a).expect("batchtopk: NaN in the input");
    let bound = if bmax.len() >= k_total {
        let mut sel = bmax.to_vec();
        *sel.select_nth_unstable_by(k_total - 1, desc).1
    } else {
        f32::NEG_INFINITY
    };
    let (mut cand, k) = if bound == f32::NEG_INFINITY {
        // Every entry is a candidate: narrowed straight from x, never copied whole.
        narrow(x, k_total)
    } else {
        let cand: Vec<f32> = x
            .par_chunks(n)
            .zip(bmax.par_chunks(nb))
            .flat_map_iter(|t| candidates(t, n, bound))
            .collect();
        if cand.len() > RADIX_ABOVE {
            narrow(&cand, k_total)
        } else {
            (cand, k_total)
        }
    };
    *cand.select_nth_unstable_by(k - 1, desc).1
}

/// The k-th largest of `values` lies in one bucket of their keys' top [`RADIX_BITS`] bits:
/// that bucket's values, counted per bucket in parallel and then gathered, and its rank
/// among them (k less the values in the buckets above).
fn narrow(values: &[f32], k: usize) -> (Vec<f32>, usize) {
    let bucket_of = |v: f32| (key_of(v) >> (32 - RADIX_BITS)) as usize;
    // A few tasks a thread, none with fewer values than its table has buckets.
    let per_task = values
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(1 << RADIX_BITS);
    let counts = values
        .par_chunks(per_task)
        .map(|c| {
            let mut h = vec![0u32; 1 << RADIX_BITS];
            c.iter().for_each(|&v| h[bucket_of(v)] += 1);
            h
        })
        .reduce(
            || vec![0u32; 1 << RADIX_BITS],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(s, c)| *s += c);
                a
            },
        );
    // From the top bucket down: `above` values lie in the buckets above `at`.
    let (mut above, mut at) = (0usize, 0usize);
    for b in (0..counts.len()).rev() {
        if above + counts[b] as usize >= k {
            at = b;
            break;
        }
        above += counts[b] as usize;
    }
    let bucket = values
        .par_iter()
        .copied()
        .filter(|&v| bucket_of(v) == at)
        .collect();
    (bucket, k - above)
}

/// The entries of row `r` (its block maxima `bm`) at or above `bound`, from the blocks
/// whose maximum reaches it.
fn candidates<'a>(
    (r, bm): (&'a [f32], &'a [f32]),
    n: usize,
    bound: f32,
) -> impl Iterator<Item = f32> + 'a {
    reaching(bm, bound).flat_map(move |b| {
        r[b * BLOCK..((b + 1) * BLOCK).min(n)]
            .iter()
            .copied()
            .filter(move |&v| v >= bound)
    })
}

/// Codes as CSR: row_ptr (rows + 1), idx, val and pre_val (nnz).
pub type CsrCodes = (Vec<u32>, Vec<u32>, Vec<f32>, Vec<f32>);

/// [`crate::reference::codes::activation_codes`]'s contract (the entries a ReLU, or a
/// JumpReLU with (log_threshold, window), keeps, as CSR with latents ascending: row_ptr,
/// idx, val, pre_val), bitwise: each threshold's exp is taken once instead of once per
/// entry, and the rows run over rayon's pool.
pub fn activation_codes(
    x: &[f32],
    rows: usize,
    n: usize,
    jumprelu: Option<(&[f32], f32)>,
) -> CsrCodes {
    activation_codes_within(x, rows, n, jumprelu, usize::MAX)
        .expect("no batch keeps more than usize::MAX entries")
}

/// [`activation_codes`], or None as soon as the batch is seen to keep more than `cap`
/// entries: the training step's dense path takes over there (`code_capacity`), and a
/// batch that keeps half its entries would otherwise be listed only to be dropped (at
/// 512 -> 16384 latents, batch 4096: 0.48 s of a step).
pub fn activation_codes_within(
    x: &[f32],
    rows: usize,
    n: usize,
    jumprelu: Option<(&[f32], f32)>,
    cap: usize,
) -> Option<CsrCodes> {
    assert_eq!(x.len(), rows * n, "activation_codes: x");
    let theta: Option<Vec<f32>> = jumprelu.map(|(l, _)| {
        assert_eq!(l.len(), n, "activation_codes: log_threshold");
        l.iter().map(|v| v.exp()).collect()
    });
    let eps = jumprelu.map_or(0.0, |(_, e)| e);
    // Entries kept so far over every task; past `cap` each task stops at its next row.
    let kept = AtomicUsize::new(0);
    // Per task of rows: each row's count, then the kept (latent, value, pre) in order.
    let parts: Option<Vec<CsrCodes>> = x
        .par_chunks((ROWS_PER_TASK * n).max(1))
        .map(|block| {
            let (mut counts, mut idx, mut val, mut pre) = (vec![], vec![], vec![], vec![]);
            for row in block.chunks(n.max(1)) {
                let before = idx.len();
                for (i, &v) in row.iter().enumerate() {
                    let jump = theta.as_ref().map(|t| (t[i], eps));
                    if let Some(a) = crate::reference::codes::keep(v, jump) {
                        idx.push(i as u32);
                        val.push(a);
                        pre.push(v);
                    }
                }
                let c = idx.len() - before;
                if kept.fetch_add(c, Ordering::Relaxed).saturating_add(c) > cap {
                    return None;
                }
                counts.push(c as u32);
            }
            Some((counts, idx, val, pre))
        })
        .collect();
    let mut out = (vec![0u32; rows + 1], vec![], vec![], vec![]);
    let mut r = 0;
    for (counts, idx, val, pre) in parts? {
        for c in counts {
            out.0[r + 1] = out.0[r] + c;
            r += 1;
        }
        out.1.extend(idx);
        out.2.extend(val);
        out.3.extend(pre);
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests;
