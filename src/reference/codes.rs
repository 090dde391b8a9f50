//! CPU twins of the codes module (shaders/codes.wgsl, codes_topk.wgsl, codes_compact.wgsl):
//! sparse codes (CSR over rows, latents ascending within a row, only entries that are not
//! zero after the activation) built straight from the dense
//! pre-activations, and the list of dead latents AuxK chooses from.
//!
//! [`topk_codes`] is the whole chain in plain form (what the CPU engine calls); the other
//! functions are the twins of the device kernels that build the same codes in stages:
//! block maxima, a per-row lower bound on the k-th largest value, the candidates above it,
//! the exact selection among them, a prefix sum of the row counts and the packing into CSR.
//!
//! Order: values are compared through the same u32 key as shaders/topk.wgsl (unsigned key
//! order = float order, -0 folded onto +0, so equal floats have equal keys); among equal
//! values the lower latent wins. TopK SAEs apply ReLU after the selection, so only positive
//! values are kept: "the k largest positive entries" = top-k, then ReLU, then zeros dropped.

/// Eligible entries per block of [`block_max`] for a top-k over all latents (TopK).
pub const BLOCK: usize = 32;
/// ... and over a list of latents (AuxK over the dead ones: k_aux is large against the
/// list, and the bound needs at least k blocks).
pub const BLOCK_LISTED: usize = 8;
/// Candidates [`topk_candidates`] stores per row; a row with more is selected from the
/// whole row instead (slower, same result).
pub const CAND: usize = 1024;
/// Key of the smallest positive f32: keys >= this are the values > 0.
pub const POSITIVE: u32 = 0x8000_0001;

/// The u32 whose unsigned order is the float order of `v` (no NaN).
pub fn key_of(v: f32) -> u32 {
    let mut b = v.to_bits();
    if b == 0x8000_0000 {
        b = 0;
    }
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Blocks of [`block_max`] for `n` columns at `block` entries each.
pub fn blocks(n: usize, block: usize) -> usize {
    n.div_ceil(block)
}

/// The eligible latents of a row in position order: all of 0..n, or cols[..ncols[0]].
fn eligible(n: usize, cols: Option<(&[u32], &[u32])>) -> Vec<u32> {
    match cols {
        None => (0..n as u32).collect(),
        Some((list, count)) => list[..(count[0] as usize).min(list.len())].to_vec(),
    }
}

/// bmax[r, j] = the largest key_of(x[r, col(p)] - off[col(p)]) (no subtraction without
/// `off`) over the eligible positions p in j * block .. (j + 1) * block (position p is
/// latent p, or cols[p] for p < ncols[0]); 0 (below every value's key) for a block with no
/// eligible position.
/// x: (rows, n), cols: (n) u32 + ncols: (1) u32 or None, off: (n) or None
///   -> bmax: (rows, blocks(n, block)) u32
pub fn block_max(
    x: &[f32],
    rows: usize,
    n: usize,
    block: usize,
    cols: Option<(&[u32], &[u32])>,
    off: Option<&[f32]>,
    bmax: &mut [u32],
) {
    let nb = blocks(n, block);
    assert_eq!(x.len(), rows * n, "block_max: x");
    assert_eq!(bmax.len(), rows * nb, "block_max: bmax");
    let e = eligible(n, cols);
    for r in 0..rows {
        for j in 0..nb {
            let mut best = 0u32;
            for &i in e.iter().skip(j * block).take(block) {
                let v = x[r * n + i as usize];
                let v = match off {
                    Some(o) => v - o[i as usize],
                    None => v,
                };
                best = best.max(key_of(v));
            }
            bmax[r * nb + j] = best;
        }
    }
}

/// Per row, a key bound below which no top-k value lies: T = the largest key with its low
/// 16 bits zero such that at least k of the row's blocks have bmax >= T (0 when none), then
/// thr[r] = max(T, POSITIVE) (only positive values survive the ReLU).
/// bmax: (rows, nb) u32 -> thr: (rows) u32
pub fn topk_threshold(bmax: &[u32], rows: usize, nb: usize, k: usize, thr: &mut [u32]) {
    assert_eq!(bmax.len(), rows * nb, "topk_threshold: bmax");
    assert_eq!(thr.len(), rows, "topk_threshold: thr");
    for r in 0..rows {
        let row = &bmax[r * nb..(r + 1) * nb];
        let mut t = 0u32;
        for bit in (16..32).rev() {
            let c = t | (1 << bit);
            if row.iter().filter(|&&b| b >= c).count() >= k {
                t = c;
            }
        }
        thr[r] = t.max(POSITIVE);
    }
}

/// Per row, in position order, the eligible latents i with key_of(x[r, i]) >= thr[r]:
/// cand_n[r] = how many; the first min(cand_n[r], CAND) latents in cand[r, ..] and their keys
/// in cand_key[r, ..]; slots past them are left as they were. (The device reads only the
/// blocks whose bmax reaches thr[r]; the others hold no such entry.)
/// x: (rows, n), cols / ncols as block_max, bmax: (rows, nb) u32, thr: (rows) u32
///   -> cand: (rows, CAND) u32, cand_key: (rows, CAND) u32, cand_n: (rows) u32
#[allow(clippy::too_many_arguments)]
pub fn topk_candidates(
    x: &[f32],
    rows: usize,
    n: usize,
    block: usize,
    cols: Option<(&[u32], &[u32])>,
    bmax: &[u32],
    thr: &[u32],
    cand: &mut [u32],
    cand_key: &mut [u32],
    cand_n: &mut [u32],
) {
    assert_eq!(x.len(), rows * n, "topk_candidates: x");
    assert_eq!(bmax.len(), rows * blocks(n, block), "topk_candidates: bmax");
    check_candidates("topk_candidates", rows, cand, cand_key, cand_n, thr);
    let e = eligible(n, cols);
    for r in 0..rows {
        let mut c = 0usize;
        for &i in &e {
            let key = key_of(x[r * n + i as usize]);
            if key >= thr[r] {
                if c < CAND {
                    cand[r * CAND + c] = i;
                    cand_key[r * CAND + c] = key;
                }
                c += 1;
            }
        }
        cand_n[r] = c as u32;
    }
}

/// The lengths of the candidate lists that [`topk_candidates`] writes and [`topk_select`]
/// reads: cand, cand_key (rows, CAND); cand_n, thr (rows).
fn check_candidates(
    what: &str,
    rows: usize,
    cand: &[u32],
    cand_key: &[u32],
    cand_n: &[u32],
    thr: &[u32],
) {
    assert_eq!(thr.len(), rows, "{what}: thr");
    assert_eq!(cand.len(), rows * CAND, "{what}: cand");
    assert_eq!(cand_key.len(), rows * CAND, "{what}: cand_key");
    assert_eq!(cand_n.len(), rows, "{what}: cand_n");
}

/// Per row, the k best of the entries with key >= thr[r] (key descending, then lower latent
/// first), written in ascending latent order: sel[r, ..sel_n[r]] latents and sel_val their
/// values x[r, latent]; sel_n[r] = min(k, number of such entries); slots past sel_n[r] hold
/// 0 and 0.0. The entries come from the candidate list when cand_n[r] <= CAND, else from
/// the eligible row itself.
/// x: (rows, n), cols / ncols as block_max, cand / cand_key: (rows, CAND) u32,
/// cand_n / thr: (rows) u32 -> sel: (rows, k) u32, sel_val: (rows, k), sel_n: (rows) u32
#[allow(clippy::too_many_arguments)]
pub fn topk_select(
    x: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    cols: Option<(&[u32], &[u32])>,
    cand: &[u32],
    cand_key: &[u32],
    cand_n: &[u32],
    thr: &[u32],
    sel: &mut [u32],
    sel_val: &mut [f32],
    sel_n: &mut [u32],
) {
    assert_eq!(x.len(), rows * n, "topk_select: x");
    check_candidates("topk_select", rows, cand, cand_key, cand_n, thr);
    assert_eq!(sel.len(), rows * k, "topk_select: sel");
    assert_eq!(sel_val.len(), rows * k, "topk_select: sel_val");
    assert_eq!(sel_n.len(), rows, "topk_select: sel_n");
    let e = eligible(n, cols);
    for r in 0..rows {
        // (latent, key) in ascending latent order.
        let entries: Vec<(u32, u32)> = if (cand_n[r] as usize) <= CAND {
            (0..cand_n[r] as usize)
                .map(|s| (cand[r * CAND + s], cand_key[r * CAND + s]))
                .collect()
        } else {
            e.iter()
                .map(|&i| (i, key_of(x[r * n + i as usize])))
                .filter(|&(_, key)| key >= thr[r])
                .collect()
        };
        let mut best = entries.clone();
        best.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        best.truncate(k);
        best.sort_by_key(|&(i, _)| i);
        for j in 0..k {
            let (i, v) = match best.get(j) {
                Some(&(i, _)) => (i, x[r * n + i as usize]),
                None => (0, 0.0),
            };
            sel[r * k + j] = i;
            sel_val[r * k + j] = v;
        }
        sel_n[r] = best.len() as u32;
    }
}

/// row_ptr[0] = 0, row_ptr[r + 1] = row_ptr[r] + counts[r] (wrapping u32).
/// counts: (rows) u32 -> row_ptr: (rows + 1) u32
pub fn csr_scan(counts: &[u32], row_ptr: &mut [u32]) {
    assert_eq!(row_ptr.len(), counts.len() + 1, "csr_scan: row_ptr");
    row_ptr[0] = 0;
    for (r, &c) in counts.iter().enumerate() {
        row_ptr[r + 1] = row_ptr[r].wrapping_add(c);
    }
}

/// idx[row_ptr[r] + j] = sel[r, j], val[..] = sel_val[r, j] for j < row_ptr[r + 1] -
/// row_ptr[r], where that slot is < cap (the rest of the row is dropped); slots from
/// row_ptr[rows] on are left as they are.
/// sel: (rows, k) u32, sel_val: (rows, k), row_ptr: (rows + 1) u32 -> idx: (cap) u32, val: (cap)
pub fn csr_pack(
    sel: &[u32],
    sel_val: &[f32],
    row_ptr: &[u32],
    rows: usize,
    k: usize,
    idx: &mut [u32],
    val: &mut [f32],
) {
    assert_eq!(sel.len(), rows * k, "csr_pack: sel");
    assert_eq!(sel_val.len(), rows * k, "csr_pack: sel_val");
    assert_eq!(row_ptr.len(), rows + 1, "csr_pack: row_ptr");
    assert_eq!(val.len(), idx.len(), "csr_pack: val");
    let cap = idx.len();
    for r in 0..rows {
        let (a, b) = (row_ptr[r] as usize, row_ptr[r + 1] as usize);
        for j in 0..b.saturating_sub(a).min(k) {
            if a + j < cap {
                idx[a + j] = sel[r * k + j];
                val[a + j] = sel_val[r * k + j];
            }
        }
    }
}

/// The k largest positive entries of each row of x among the eligible latents (all, or
/// cols[..ncols[0]]), ties to the lower latent, as CSR with latents ascending within a row:
/// row_ptr (rows + 1), idx / val (cap = rows * k, slots past row_ptr[rows] = 0 / 0.0).
/// This is the whole device chain block_max -> topk_threshold -> topk_candidates ->
/// topk_select -> csr_scan -> csr_pack, written plainly.
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
    assert_eq!(x.len(), rows * n, "topk_codes: x");
    assert_eq!(row_ptr.len(), rows + 1, "topk_codes: row_ptr");
    assert_eq!(idx.len(), rows * k, "topk_codes: idx");
    assert_eq!(val.len(), rows * k, "topk_codes: val");
    let e = eligible(n, cols);
    idx.fill(0);
    val.fill(0.0);
    row_ptr[0] = 0;
    let mut out = 0usize;
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let mut best: Vec<u32> = e
            .iter()
            .copied()
            .filter(|&i| row[i as usize] > 0.0)
            .collect();
        best.sort_by(|&a, &b| {
            key_of(row[b as usize])
                .cmp(&key_of(row[a as usize]))
                .then(a.cmp(&b))
        });
        best.truncate(k);
        best.sort_unstable();
        for &i in &best {
            idx[out] = i;
            val[out] = row[i as usize];
            out += 1;
        }
        row_ptr[r + 1] = out as u32;
    }
}

/// The dead latents in ascending order: cols[..m] = every i with since[i] >= dead_after,
/// ncols[0] = m, cols[m..] = 0.
/// since: (n) u32 -> cols: (n) u32, ncols: (1) u32
pub fn dead_list(since: &[u32], dead_after: u32, cols: &mut [u32], ncols: &mut [u32]) {
    assert_eq!(cols.len(), since.len(), "dead_list: cols");
    assert_eq!(ncols.len(), 1, "dead_list: ncols");
    cols.fill(0);
    let mut m = 0usize;
    for (i, &s) in since.iter().enumerate() {
        if s >= dead_after {
            cols[m] = i as u32;
            m += 1;
        }
    }
    ncols[0] = m as u32;
}

/// off[i] = exp(log_thr[i]) - eps (the JumpReLU threshold lowered by the bandwidth).
/// log_thr: (n) -> off: (n)
pub fn threshold_offsets(log_thr: &[f32], eps: f32, off: &mut [f32]) {
    assert_eq!(off.len(), log_thr.len(), "threshold_offsets: off");
    for (o, &l) in off.iter_mut().zip(log_thr) {
        *o = l.exp() - eps;
    }
}

/// Whether an activation keeps pre-activation `v` of a latent with threshold `theta`
/// (JumpReLU: Some((theta, eps))), and its activation value: ReLU keeps v > 0 (value v);
/// JumpReLU keeps v > theta (value v) and the window |v - theta| <= eps / 2 below it
/// (value 0), where its threshold gradient lives.
pub(crate) fn keep(v: f32, jump: Option<(f32, f32)>) -> Option<f32> {
    match jump {
        None => (v > 0.0).then_some(v),
        Some((theta, eps)) => {
            let on = v > theta;
            (on || (v - theta).abs() <= 0.5 * eps).then_some(if on { v } else { 0.0 })
        }
    }
}

/// Per row, how many entries the activation keeps (see `compact_write`). Only blocks whose
/// bmax is a key >= key_of(0.0) are looked at (the device reads only those; bmax must come
/// from block_max of x, or of x - threshold_offsets for JumpReLU, so that no kept entry lies
/// elsewhere).
/// x: (rows, n), bmax: (rows, blocks(n, block)) u32, log_thr: (n) for JumpReLU
///   -> counts: (rows) u32
#[allow(clippy::too_many_arguments)]
pub fn compact_count(
    x: &[f32],
    rows: usize,
    n: usize,
    block: usize,
    bmax: &[u32],
    jumprelu: Option<(&[f32], f32)>,
    counts: &mut [u32],
) {
    assert_eq!(x.len(), rows * n, "compact_count: x");
    assert_eq!(counts.len(), rows, "compact_count: counts");
    let nb = blocks(n, block);
    assert_eq!(bmax.len(), rows * nb, "compact_count: bmax");
    for r in 0..rows {
        let x_row = &x[r * n..(r + 1) * n];
        let kept = kept_in_blocks(x_row, block, &bmax[r * nb..(r + 1) * nb], jumprelu);
        counts[r] = kept.len() as u32;
    }
}

/// The entries of one row x_row (n) that the activation keeps, (latent, activation) in
/// ascending latent order, looking only at the blocks whose bmax_row (blocks(n, block)) key
/// is >= key_of(0.0): what [`compact_count`] counts and [`compact_write`] writes.
fn kept_in_blocks(
    x_row: &[f32],
    block: usize,
    bmax_row: &[u32],
    jumprelu: Option<(&[f32], f32)>,
) -> Vec<(usize, f32)> {
    let n = x_row.len();
    let mut kept = Vec::new();
    for (j, &b) in bmax_row.iter().enumerate() {
        if b < 0x8000_0000 {
            continue;
        }
        for i in j * block..((j + 1) * block).min(n) {
            let jump = jumprelu.map(|(l, eps)| (l[i].exp(), eps));
            if let Some(v) = keep(x_row[i], jump) {
                kept.push((i, v));
            }
        }
    }
    kept
}

/// The kept entries of each row, in ascending latent order, at row_ptr[r] + j: idx the
/// latent, val the activation (pre, or 0 in JumpReLU's window below theta), pre_val the
/// pre-activation; slots >= cap are dropped (and so is nothing else: the caller sees
/// row_ptr[rows] > cap); other slots untouched.
/// x: (rows, n), bmax as compact_count, log_thr: (n) for JumpReLU, row_ptr: (rows + 1) u32
///   -> idx: (cap) u32, val: (cap), pre_val: (cap)
#[allow(clippy::too_many_arguments)]
pub fn compact_write(
    x: &[f32],
    rows: usize,
    n: usize,
    block: usize,
    bmax: &[u32],
    jumprelu: Option<(&[f32], f32)>,
    row_ptr: &[u32],
    idx: &mut [u32],
    val: &mut [f32],
    pre_val: &mut [f32],
) {
    assert_eq!(x.len(), rows * n, "compact_write: x");
    assert_eq!(row_ptr.len(), rows + 1, "compact_write: row_ptr");
    let nb = blocks(n, block);
    assert_eq!(bmax.len(), rows * nb, "compact_write: bmax");
    let cap = idx.len();
    assert_eq!(val.len(), cap, "compact_write: val");
    assert_eq!(pre_val.len(), cap, "compact_write: pre_val");
    for r in 0..rows {
        let x_row = &x[r * n..(r + 1) * n];
        let kept = kept_in_blocks(x_row, block, &bmax[r * nb..(r + 1) * nb], jumprelu);
        for (s, (i, v)) in (row_ptr[r] as usize..).zip(kept) {
            if s < cap {
                idx[s] = i as u32;
                val[s] = v;
                pre_val[s] = x_row[i];
            }
        }
    }
}

/// The codes of a ReLU (`jumprelu` None) or JumpReLU activation of x: every kept entry
/// (see `compact_write`), latents ascending within a row, as CSR. Returns (row_ptr, idx,
/// val, pre_val), nnz = row_ptr[rows] entries. The plain form of block_max ->
/// compact_count -> csr_scan -> compact_write.
pub fn activation_codes(
    x: &[f32],
    rows: usize,
    n: usize,
    jumprelu: Option<(&[f32], f32)>,
) -> (Vec<u32>, Vec<u32>, Vec<f32>, Vec<f32>) {
    let mut row_ptr = vec![0u32; rows + 1];
    let (mut idx, mut val, mut pre_val) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rows {
        for i in 0..n {
            let jump = jumprelu.map(|(l, eps)| (l[i].exp(), eps));
            if let Some(v) = keep(x[r * n + i], jump) {
                idx.push(i as u32);
                val.push(v);
                pre_val.push(x[r * n + i]);
            }
        }
        row_ptr[r + 1] = idx.len() as u32;
    }
    (row_ptr, idx, val, pre_val)
}

/// BatchTopK's bound: the largest key T with zero low 16 bits such that at least k_total of
/// the bmax keys are >= T (the 16-bit prefix of the k_total-th largest; needs 1 <= k_total
/// <= bmax.len()).
/// bmax: (len) u32 -> T
pub fn batch_threshold(bmax: &[u32], k_total: usize) -> u32 {
    assert!(
        k_total >= 1 && k_total <= bmax.len(),
        "batch_threshold: k_total {k_total} of {}",
        bmax.len()
    );
    let mut sorted = bmax.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted[k_total - 1] & 0xffff_0000
}

/// One chunk's rows of a batch's codes as their own CSR: with base = row_ptr[row0],
/// row_ptr_c[r] = row_ptr[row0 + r] - base for r <= rows, and idx_c[s], val_c[s] =
/// idx[base + s], val[base + s] for s < row_ptr_c[rows] (and < idx_c.len()).
/// row_ptr: (rows_all + 1), idx, val: (k_total)
///   -> row_ptr_c: (rows + 1), idx_c: (cap) u32, val_c: (cap)
#[allow(clippy::too_many_arguments)]
pub fn csr_rows(
    row_ptr: &[u32],
    idx: &[u32],
    val: &[f32],
    row0: usize,
    rows: usize,
    row_ptr_c: &mut [u32],
    idx_c: &mut [u32],
    val_c: &mut [f32],
) {
    let base = row_ptr[row0];
    for r in 0..=rows {
        row_ptr_c[r] = row_ptr[row0 + r] - base;
    }
    let count = (row_ptr_c[rows] as usize).min(idx_c.len());
    for s in 0..count {
        idx_c[s] = idx[base as usize + s];
        val_c[s] = val[base as usize + s];
    }
}
