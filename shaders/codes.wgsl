// Sparse codes straight from the dense pre-activations: the k largest positive entries of
// each row (TopK after ReLU, AuxK over the dead latents) as CSR with latents ascending within
// a row and no zero entries; the entries a ReLU or JumpReLU keeps (compact_*); and the list
// of dead latents.
// Launchers: src/kernels/codes.rs. CPU twins: src/reference/codes.rs.
//
// The row top-k in stages, with no barrier on the common path (they cost a shader split
// each on lavapipe, and the radix select of topk.wgsl needs dozens per row):
//   block_max        bmax[r, j] = max key over a block of `block` eligible entries (32 for
//                    TopK, 8 for AuxK, whose k is large against the dead count)
//   topk_threshold   T_r: a 16-bit key prefix with at least k block maxima above it, so no
//                    top-k entry lies below it (reads only bmax)
//   topk_candidates  the entries >= T_r, read only from blocks whose max reaches T_r
//                    (~k blocks: a few % of the row at k = 32 of 16384); ~1-3k of them
//   topk_select      exact k-th key among the candidates by a bit-by-bit search, then the
//                    entries above it and the first ties, ascending
//   topk_select_row  the same for the rare rows whose candidates overflowed CAND (heavy
//                    ties), from the whole row, one workgroup per row (64 barriers)
//   csr_scan / csr_pack   row counts -> row_ptr -> contiguous CSR
// lavapipe (gallivm) stops every loop of an invocation once the invocation has run 65535
// loop iterations in all (LP_MAX_TGSI_LOOP_ITERATIONS), silently: no invocation here loops
// more than ~40k times (a bit search over a 16384-wide row would be 500k, hence the
// workgroup per row in topk_select_row).
// Keys are the prelude's key_of (unsigned order = float order, -0 folded onto +0), as in
// topk.wgsl.
// Deterministic: every output is a function of the inputs, whatever the execution order.

struct Params {
    rows: u32,
    n: u32,        // columns of x
    k: u32,        // entries kept per row
    nb: u32,       // blocks per row (ceil(n / block))
    has_cols: u32, // 1: eligible positions are cols[..ncols[0]]; 0: all n columns
    cap: u32,      // csr_pack: slots of idx / val
    dead_after: u32,
    block: u32,    // eligible entries per block of block_max
    has_off: u32,  // block_max: 1 when off is bound (max of x - off); compact_*: 1 for JumpReLU
    eps: f32,      // compact_*: JumpReLU bandwidth
    shift: u32,    // key_hist / key_find: the digit's bit offset
    last: u32,     // key_find: 1 on the last level (writes thr)
    row0: u32,     // csr_rows: the chunk's first row in the batch
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 64;        // invocations per workgroup of the 1-D kernels
override WG_SCAN: u32 = 256;  // the single workgroup of csr_scan / dead_list

const CAND: u32 = 1024u;
const POSITIVE: u32 = 0x80000001u;

// ---------------------------------------------------------------- block_max
// bmax[r, j] = max over eligible positions q in j*block .. (j+1)*block of key_of(x[r, col(q)]),
// 0 when the block holds no eligible position. One invocation per (row, block).

@group(0) @binding(1) var<storage, read> bm_x: array<f32>;            // (rows, n)
@group(0) @binding(2) var<storage, read> bm_cols: array<u32>;         // (n); unread when has_cols == 0
@group(0) @binding(3) var<storage, read> bm_ncols: array<u32>;        // (1); unread when has_cols == 0
@group(0) @binding(4) var<storage, read_write> bm_bmax: array<u32>;   // (rows, nb)
@group(0) @binding(5) var<storage, read> bm_off: array<f32>;          // (n); unread when has_off == 0

@compute @workgroup_size(WG)
fn block_max(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    if t >= p.rows * p.nb { return; }
    let r = t / p.nb;
    let j = t - r * p.nb;
    var m = p.n;
    if p.has_cols != 0u { m = min(bm_ncols[0], p.n); }
    let q0 = j * p.block;
    let q1 = min(q0 + p.block, m);
    let base = r * p.n;
    var best = 0u;
    for (var q = q0; q < q1; q++) {
        var i = q;
        if p.has_cols != 0u { i = bm_cols[q]; }
        var v = bm_x[base + i];
        if p.has_off != 0u { v = v - bm_off[i]; }
        best = max(best, key_of(v));
    }
    bm_bmax[t] = best;
}

// All columns eligible, n % 4 == 0 and block % 4 == 0: block / 4 vec4 loads per block.
@group(0) @binding(1) var<storage, read> bm4_x: array<vec4<f32>>;    // (rows, n / 4)

@compute @workgroup_size(WG)
fn block_max_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    if t >= p.rows * p.nb { return; }
    let r = t / p.nb;
    let j = t - r * p.nb;
    let n4 = p.n / 4u;
    let q0 = j * (p.block / 4u);
    let q1 = min(q0 + p.block / 4u, n4);
    let base = r * n4;
    var best = 0u;
    for (var q = q0; q < q1; q++) {
        let v = bm4_x[base + q];
        best = max(best, max(max(key_of(v.x), key_of(v.y)), max(key_of(v.z), key_of(v.w))));
    }
    bm_bmax[t] = best;
}

// ---------------------------------------------------------------- topk_threshold
// thr[r] = max(T, POSITIVE), T the largest key with zero low 16 bits such that at least k
// blocks of the row have bmax >= T (0 when none). One invocation per row.

@group(0) @binding(1) var<storage, read> th_bmax: array<u32>;          // (rows, nb)
@group(0) @binding(2) var<storage, read_write> th_thr: array<u32>;     // (rows)

// Empty blocks (bmax 0: no eligible entry) are a suffix of the row's blocks: the number of
// the others, by bisection.
fn th_used(base: u32) -> u32 {
    var lo = 0u;
    var hi = p.nb;
    while lo < hi {
        let mid = (lo + hi) / 2u;
        if th_bmax[base + mid] != 0u {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

@compute @workgroup_size(WG)
fn topk_threshold(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    let base = r * p.nb;
    let nb = th_used(base);
    var t = 0u;
    for (var bit = 31u; bit >= 16u; bit--) {
        let c = t | (1u << bit);
        var cnt = 0u;
        for (var j = 0u; j < nb; j++) {
            cnt += select(0u, 1u, th_bmax[base + j] >= c);
        }
        if cnt >= p.k { t = c; }
    }
    th_thr[r] = max(t, POSITIVE);
}

// The same with vec4 loads of bmax (nb % 4 == 0): a quarter of the loop trips. The vec4
// holding the last used block may hold empty ones too; their 0 never reaches a T >= 2^16.
@group(0) @binding(1) var<storage, read> th4_bmax: array<vec4<u32>>;   // (rows, nb / 4)

@compute @workgroup_size(WG)
fn topk_threshold_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    let base = r * (p.nb / 4u);
    // th_used over the vec4 view (one module binding per entry point).
    var lo = 0u;
    var hi = p.nb;
    while lo < hi {
        let mid = (lo + hi) / 2u;
        if th4_bmax[base + mid / 4u][mid % 4u] != 0u {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    let nb4 = (lo + 3u) / 4u;
    var t = 0u;
    for (var bit = 31u; bit >= 16u; bit--) {
        let c = t | (1u << bit);
        var cnt = vec4<u32>(0u);
        for (var j = 0u; j < nb4; j++) {
            cnt += select(vec4<u32>(0u), vec4<u32>(1u), th4_bmax[base + j] >= vec4<u32>(c));
        }
        if cnt.x + cnt.y + cnt.z + cnt.w >= p.k { t = c; }
    }
    th_thr[r] = max(t, POSITIVE);
}

// ---------------------------------------------------------------- topk_candidates
// In position order, the eligible latents with key >= thr[r], from the blocks whose bmax
// reaches thr[r]: the first CAND of them (and their keys) stored, cand_n[r] = the count
// (> CAND means overflowed); slots past the stored ones are left as they were (no stage
// reads them; filling them cost as much as the search). One invocation per row.

@group(0) @binding(1) var<storage, read> cd_x: array<f32>;             // (rows, n)
@group(0) @binding(2) var<storage, read> cd_cols: array<u32>;          // (n); unread when has_cols == 0
@group(0) @binding(3) var<storage, read> cd_ncols: array<u32>;         // (1); unread when has_cols == 0
@group(0) @binding(4) var<storage, read> cd_bmax: array<u32>;          // (rows, nb)
@group(0) @binding(5) var<storage, read> cd_thr: array<u32>;           // (rows)
@group(0) @binding(6) var<storage, read_write> cd_cand: array<u32>;    // (rows, CAND)
@group(0) @binding(7) var<storage, read_write> cd_key: array<u32>;     // (rows, CAND)
@group(0) @binding(8) var<storage, read_write> cd_n: array<u32>;       // (rows)

// The blocks that reach thr are first listed (up to CD_LIST at a time, in order) and then
// read: on lavapipe the lanes of one SIMD batch hold different rows, and reading each block
// as the scan met it ran the inner loop whenever any lane's block qualified (~40% of the
// blocks at k 32 of 16384, against ~6% per row); read from the list, a batch runs about
// the largest of its lanes' counts.
const CD_LIST: u32 = 64u;

@compute @workgroup_size(WG)
fn topk_candidates(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    var m = p.n;
    if p.has_cols != 0u { m = min(cd_ncols[0], p.n); }
    let t = cd_thr[r];
    let base = r * p.n;
    let out = r * CAND;
    var c = 0u;
    var list: array<u32, CD_LIST>;
    var j = 0u;
    loop {
        var k = 0u;
        while j < p.nb && k < CD_LIST {
            let b = cd_bmax[r * p.nb + j];
            // The rest are empty.
            if b == 0u { j = p.nb; break; }
            list[k] = j;
            k += select(0u, 1u, b >= t);
            j++;
        }
        for (var e = 0u; e < k; e++) {
            let q0 = list[e] * p.block;
            let q1 = min(q0 + p.block, m);
            for (var q = q0; q < q1; q++) {
                var i = q;
                if p.has_cols != 0u { i = cd_cols[q]; }
                c = cd_put(out, c, t, i, key_of(cd_x[base + i]));
            }
        }
        if j >= p.nb { break; }
    }
    cd_n[r] = c;
}

// topk_candidates over all columns (no cols) with vec4 loads of bmax and x (n % 128 == 0,
// block % 4 == 0, so nb % 4 == 0): the same candidates in the same order, a quarter of the
// loop trips.
@group(0) @binding(1) var<storage, read> cd4_x: array<vec4<f32>>;      // (rows, n / 4)
@group(0) @binding(4) var<storage, read> cd4_bmax: array<vec4<u32>>;   // (rows, nb / 4)

// Appends latent i with key to row slot c (stored when c < CAND) if key >= t; the new count.
fn cd_put(out: u32, c: u32, t: u32, i: u32, key: u32) -> u32 {
    if key >= t {
        if c < CAND {
            cd_cand[out + c] = i;
            cd_key[out + c] = key;
        }
        return c + 1u;
    }
    return c;
}

@compute @workgroup_size(WG)
fn topk_candidates_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    let t = cd_thr[r];
    let n4 = p.n / 4u;
    let b4 = p.block / 4u;
    let nb4 = p.nb / 4u;
    let out = r * CAND;
    var c = 0u;
    var list: array<u32, CD_LIST>;
    var jq = 0u;
    loop {
        // List the next qualifying blocks (branch-free: a slot is kept when counted).
        var m = 0u;
        while jq < nb4 && m + 4u <= CD_LIST {
            let bq = cd4_bmax[r * nb4 + jq];
            for (var l = 0u; l < 4u; l++) {
                list[m] = jq * 4u + l;
                m += select(0u, 1u, bq[l] >= t);
            }
            jq++;
        }
        for (var e = 0u; e < m; e++) {
            let q0 = list[e] * b4;
            for (var q = q0; q < q0 + b4; q++) {
                let v = cd4_x[r * n4 + q];
                let i = 4u * q;
                c = cd_put(out, c, t, i, key_of(v.x));
                c = cd_put(out, c, t, i + 1u, key_of(v.y));
                c = cd_put(out, c, t, i + 2u, key_of(v.z));
                c = cd_put(out, c, t, i + 3u, key_of(v.w));
            }
        }
        if jq >= nb4 { break; }
    }
    cd_n[r] = c;
}

// ---------------------------------------------------------------- topk_select
// Per row: K = the k-th largest key of the row's entries, found bit by bit; then the entries
// with key > K and the first (k - #above) with key == K, in ascending order; with fewer than
// k entries, all of them. sel_n[r] = how many; slots past it get 0 / 0.0.
// topk_select takes the entries from the candidate list (one invocation per row) and skips
// the rows that overflowed it; topk_select_row then handles exactly those rows from the
// eligible row itself (entries = the eligible latents with key >= thr).

@group(0) @binding(1) var<storage, read> sl_x: array<f32>;              // (rows, n)
@group(0) @binding(2) var<storage, read> sl_cols: array<u32>;           // (n); unread when has_cols == 0
@group(0) @binding(3) var<storage, read> sl_ncols: array<u32>;          // (1); unread when has_cols == 0
@group(0) @binding(4) var<storage, read> sl_cand: array<u32>;           // (rows, CAND)
@group(0) @binding(5) var<storage, read> sl_key: array<u32>;            // (rows, CAND)
@group(0) @binding(6) var<storage, read> sl_n: array<u32>;              // (rows)
@group(0) @binding(7) var<storage, read> sl_thr: array<u32>;            // (rows)
@group(0) @binding(8) var<storage, read_write> sl_sel: array<u32>;      // (rows, k)
@group(0) @binding(9) var<storage, read_write> sl_val: array<f32>;      // (rows, k)
@group(0) @binding(10) var<storage, read_write> sl_seln: array<u32>;    // (rows)

fn sl_finish(r: u32, j: u32) {
    sl_seln[r] = j;
    for (var s = j; s < p.k; s++) {
        sl_sel[r * p.k + s] = 0u;
        sl_val[r * p.k + s] = 0.0;
    }
}

@compute @workgroup_size(WG)
fn topk_select(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    let len = sl_n[r];
    if len > CAND { return; }
    let k = p.k;
    let base = r * CAND;
    var kk = 0u;
    if len >= k {
        for (var bit = 0u; bit < 32u; bit++) {
            let c = kk | (0x80000000u >> bit);
            var cnt = 0u;
            for (var e = 0u; e < len; e++) {
                cnt += select(0u, 1u, sl_key[base + e] >= c);
            }
            if cnt >= k { kk = c; }
        }
    }
    var above = 0u;
    for (var e = 0u; e < len; e++) {
        above += select(0u, 1u, sl_key[base + e] > kk);
    }
    let ties = k - min(above, k);
    var j = 0u;
    var seen = 0u;
    for (var e = 0u; e < len; e++) {
        let key = sl_key[base + e];
        let tie = key == kk && kk != 0u;
        let take = (key > kk || (tie && seen < ties)) && j < k;
        seen += select(0u, 1u, tie);
        if take {
            let i = sl_cand[base + e];
            sl_sel[r * k + j] = i;
            sl_val[r * k + j] = sl_x[r * p.n + i];
        }
        j += select(0u, 1u, take);
    }
    sl_finish(r, j);
}

// topk_select_row: one workgroup of WG_ROW lanes per row, each lane owning a contiguous
// chunk of the eligible positions. The bit search counts per lane and adds the counts in a
// workgroup atomic (double-buffered so that one barrier pair per bit suffices); then each
// lane writes its chunk's selected entries at its offset (entries above K before it, plus
// the ties before it up to the number of ties allowed).
override WG_ROW: u32 = 64;
var<workgroup> sr_cnt: array<atomic<u32>, 2>;
var<workgroup> sr_above: array<u32, WG_ROW>;
var<workgroup> sr_ties: array<u32, WG_ROW>;

// Key of eligible position q of row r if >= t, else 0 (never selected: t > 0); its latent.
fn sr_entry(r: u32, q: u32, t: u32) -> vec2<u32> {
    var i = q;
    if p.has_cols != 0u { i = sl_cols[q]; }
    let key = key_of(sl_x[r * p.n + i]);
    return vec2<u32>(i, select(0u, key, key >= t));
}

// Where each lane writes its part of a row's selection, from the lanes' counts of entries
// above K (`above`) and of ties at K (`ties`), lanes in position order: (slot of the lane's
// first taken entry, ties before the lane, ties allowed in the row, entries taken in the
// row). Two barriers; leaves the totals in sr_cnt.
fn sr_offsets(lid: u32, above: u32, ties: u32, k: u32) -> vec4<u32> {
    sr_above[lid] = above;
    sr_ties[lid] = ties;
    workgroupBarrier();
    if lid == 0u {
        var ra = 0u;
        var rt = 0u;
        for (var l = 0u; l < WG_ROW; l++) {
            let a = sr_above[l];
            let tt = sr_ties[l];
            sr_above[l] = ra;
            sr_ties[l] = rt;
            ra += a;
            rt += tt;
        }
        // Totals in the workgroup counters: entries above K, and the ties.
        atomicStore(&sr_cnt[0], ra);
        atomicStore(&sr_cnt[1], rt);
    }
    workgroupBarrier();
    let total_above = atomicLoad(&sr_cnt[0]);
    let allowed = k - min(total_above, k);
    let taken = total_above + min(atomicLoad(&sr_cnt[1]), allowed);
    let seen = sr_ties[lid];
    return vec4<u32>(sr_above[lid] + min(seen, allowed), seen, allowed, taken);
}

@compute @workgroup_size(WG_ROW)
fn topk_select_row(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    // Both conditions are the same for the whole workgroup (one row).
    if r >= p.rows { return; }
    if sl_n[r] <= CAND { return; }
    var m = p.n;
    if p.has_cols != 0u { m = min(sl_ncols[0], p.n); }
    let t = sl_thr[r];
    let k = p.k;
    let chunk = (m + WG_ROW - 1u) / WG_ROW;
    let lo = min(lid * chunk, m);
    let hi = min(lo + chunk, m);
    if lid < 2u { atomicStore(&sr_cnt[lid], 0u); }
    workgroupBarrier();
    var kk = 0u;
    for (var bit = 0u; bit < 32u; bit++) {
        let c = kk | (0x80000000u >> bit);
        var cnt = 0u;
        for (var q = lo; q < hi; q++) {
            cnt += select(0u, 1u, sr_entry(r, q, t).y >= c);
        }
        let b = bit & 1u;
        atomicAdd(&sr_cnt[b], cnt);
        workgroupBarrier();
        let total = atomicLoad(&sr_cnt[b]);
        if lid == 0u { atomicStore(&sr_cnt[1u - b], 0u); }
        workgroupBarrier();
        if total >= k { kk = c; }
    }
    // Per-lane counts above K and at K, then their exclusive prefix sums (lane 0).
    var above = 0u;
    var ties = 0u;
    for (var q = lo; q < hi; q++) {
        let key = sr_entry(r, q, t).y;
        above += select(0u, 1u, key > kk);
        ties += select(0u, 1u, key == kk && kk != 0u);
    }
    let at = sr_offsets(lid, above, ties, k);
    var j = at.x;
    var seen = at.y;
    let allowed = at.z;
    let taken = at.w;
    for (var q = lo; q < hi; q++) {
        let en = sr_entry(r, q, t);
        let tie = en.y == kk && kk != 0u;
        let take = en.y > kk || (tie && seen < allowed);
        seen += select(0u, 1u, tie);
        if take && j < k {
            sl_sel[r * k + j] = en.x;
            sl_val[r * k + j] = sl_x[r * p.n + en.x];
        }
        j += select(0u, 1u, take);
    }
    // The slots past the selection, split over the lanes.
    for (var s = taken + lid; s < k; s += WG_ROW) {
        sl_sel[r * k + s] = 0u;
        sl_val[r * k + s] = 0.0;
    }
    if lid == 0u { sl_seln[r] = min(taken, k); }
}

// ---------------------------------------------------------------- topk_threshold_group, topk_candidates_group, topk_select_group
// The row top-k with a workgroup of WG_ROW lanes per row, for hardware GPUs: the same outputs
// as topk_threshold, topk_candidates and topk_select, which run one invocation per row
// (on a GPU that is a few thousand threads, each looping over the whole candidate list 32
// times: latency-bound; measured on an H200, the lane chain took 1.3 ms at 1024 x 16384,
// 14x a block_max pass over the same rows). Here every loop is split over the lanes and
// the counts are added in workgroup atomics (two barriers per bit, as topk_select_row).
// On lavapipe the barriers split the shader, so software adapters keep the lane chain.

// thr[r] as topk_threshold: the bit search over the row's block maxima, each lane counting
// the blocks lid, lid + WG_ROW, ... (empty blocks hold 0, below every candidate T).
@compute @workgroup_size(WG_ROW)
fn topk_threshold_group(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = group_index(wid, nwg);
    if r >= p.rows { return; }
    let base = r * p.nb;
    if lid < 2u { atomicStore(&sr_cnt[lid], 0u); }
    workgroupBarrier();
    var t = 0u;
    for (var bit = 31u; bit >= 16u; bit--) {
        let c = t | (1u << bit);
        var cnt = 0u;
        for (var j = lid; j < p.nb; j += WG_ROW) {
            cnt += select(0u, 1u, th_bmax[base + j] >= c);
        }
        if sr_count(bit, cnt, lid) >= p.k { t = c; }
    }
    if lid == 0u { th_thr[r] = max(t, POSITIVE); }
}

// The workgroup's sum of every lane's `cnt`, in the counter of parity `step` (zeroed before
// the first pass); it zeroes the other counter for the next pass. Two barriers.
fn sr_count(step: u32, cnt: u32, lid: u32) -> u32 {
    let b = step & 1u;
    atomicAdd(&sr_cnt[b], cnt);
    workgroupBarrier();
    let total = atomicLoad(&sr_cnt[b]);
    if lid == 0u { atomicStore(&sr_cnt[1u - b], 0u); }
    workgroupBarrier();
    return total;
}

// topk_candidates_group: topk_candidates' lists (the eligible entries with key >= thr[r],
// from the blocks whose max reaches it, in position order; the first CAND stored, cand_n[r]
// = their count), WG_ROW blocks a round: each lane counts its block's, an exclusive scan
// of the counts gives each lane its offset in the list.
var<workgroup> sg_total: u32;

// Latent of eligible position q of row r, and its key.
fn sg_entry(r: u32, q: u32) -> vec2<u32> {
    var i = q;
    if p.has_cols != 0u { i = cd_cols[q]; }
    return vec2<u32>(i, key_of(cd_x[r * p.n + i]));
}

// Exclusive prefix sums of sr_above[..WG_ROW] in place (lane 0), their total in sg_total;
// the total as a uniform value. Two barriers (one in workgroupUniformLoad).
fn sg_scan(lid: u32) -> u32 {
    workgroupBarrier();
    if lid == 0u {
        var run = 0u;
        for (var l = 0u; l < WG_ROW; l++) {
            let a = sr_above[l];
            sr_above[l] = run;
            run += a;
        }
        sg_total = run;
    }
    return workgroupUniformLoad(&sg_total);
}

@compute @workgroup_size(WG_ROW)
fn topk_candidates_group(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = group_index(wid, nwg);
    if r >= p.rows { return; }
    var m = p.n;
    if p.has_cols != 0u { m = min(cd_ncols[0], p.n); }
    let t = cd_thr[r];
    let out = r * CAND;
    var len = 0u;
    for (var j0 = 0u; j0 < p.nb; j0 += WG_ROW) {
        let j = j0 + lid;
        var q0 = 0u;
        var q1 = 0u;
        if j < p.nb && cd_bmax[r * p.nb + j] >= t {
            q0 = min(j * p.block, m);
            q1 = min(q0 + p.block, m);
        }
        var cnt = 0u;
        for (var q = q0; q < q1; q++) {
            cnt += select(0u, 1u, sg_entry(r, q).y >= t);
        }
        sr_above[lid] = cnt;
        let round = sg_scan(lid);
        var at = len + sr_above[lid];
        for (var q = q0; q < q1; q++) {
            let en = sg_entry(r, q);
            at = cd_put(out, at, t, en.x, en.y);
        }
        len += round;
        // sr_above is rewritten by the next round.
        workgroupBarrier();
    }
    if lid == 0u { cd_n[r] = len; }
}

// topk_select_group: topk_select's selection from the candidate lists (rows that overflowed
// them are left to topk_select_row): the k-th key by the bit search, the lanes counting
// strided shares of the list, then the selection written as topk_select_row writes it, each
// lane a contiguous chunk of the list.
@compute @workgroup_size(WG_ROW)
fn topk_select_group(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = group_index(wid, nwg);
    if r >= p.rows { return; }
    let len = sl_n[r];
    if len > CAND { return; }
    let k = p.k;
    let base = r * CAND;
    if lid < 2u { atomicStore(&sr_cnt[lid], 0u); }
    workgroupBarrier();
    // K: the k-th largest key (0 when there are fewer than k candidates: all are taken).
    var kk = 0u;
    if len >= k {
        for (var bit = 0u; bit < 32u; bit++) {
            let c = kk | (0x80000000u >> bit);
            var cnt = 0u;
            for (var e = lid; e < len; e += WG_ROW) {
                cnt += select(0u, 1u, sl_key[base + e] >= c);
            }
            if sr_count(bit, cnt, lid) >= k { kk = c; }
        }
    }
    let chunk = (len + WG_ROW - 1u) / WG_ROW;
    let lo = min(lid * chunk, len);
    let hi = min(lo + chunk, len);
    var above = 0u;
    var ties = 0u;
    for (var e = lo; e < hi; e++) {
        let key = sl_key[base + e];
        above += select(0u, 1u, key > kk);
        ties += select(0u, 1u, key == kk && kk != 0u);
    }
    let at = sr_offsets(lid, above, ties, k);
    var j = at.x;
    var seen = at.y;
    let allowed = at.z;
    let taken = at.w;
    for (var e = lo; e < hi; e++) {
        let key = sl_key[base + e];
        let tie = key == kk && kk != 0u;
        let take = key > kk || (tie && seen < allowed);
        seen += select(0u, 1u, tie);
        if take && j < k {
            let i = sl_cand[base + e];
            sl_sel[r * k + j] = i;
            sl_val[r * k + j] = sl_x[r * p.n + i];
        }
        j += select(0u, 1u, take);
    }
    for (var s = taken + lid; s < k; s += WG_ROW) {
        sl_sel[r * k + s] = 0u;
        sl_val[r * k + s] = 0.0;
    }
    if lid == 0u { sl_seln[r] = min(taken, k); }
}

// ---------------------------------------------------------------- csr_scan
// row_ptr[0] = 0, row_ptr[r + 1] = row_ptr[r] + counts[r]. One workgroup: lane l sums its
// contiguous chunk of rows, lane 0 scans the chunk sums, each lane writes its chunk.

@group(0) @binding(1) var<storage, read> cs_counts: array<u32>;         // (rows)
@group(0) @binding(2) var<storage, read_write> cs_row_ptr: array<u32>;  // (rows + 1)
var<workgroup> cs_sums: array<u32, WG_SCAN>;

@compute @workgroup_size(WG_SCAN)
fn csr_scan(@builtin(local_invocation_index) l: u32) {
    let chunk = (p.rows + WG_SCAN - 1u) / WG_SCAN;
    let lo = min(l * chunk, p.rows);
    let hi = min(lo + chunk, p.rows);
    var sum = 0u;
    for (var i = lo; i < hi; i++) {
        sum += cs_counts[i];
    }
    cs_sums[l] = sum;
    workgroupBarrier();
    if l == 0u {
        var run = 0u;
        for (var c = 0u; c < WG_SCAN; c++) {
            let v = cs_sums[c];
            cs_sums[c] = run;
            run += v;
        }
        cs_row_ptr[0] = 0u;
    }
    workgroupBarrier();
    var run = cs_sums[l];
    for (var i = lo; i < hi; i++) {
        run += cs_counts[i];
        cs_row_ptr[i + 1u] = run;
    }
}

// ---------------------------------------------------------------- csr_pack
// idx[row_ptr[r] + j] = sel[r, j], val[...] = sel_val[r, j] for j < row_ptr[r+1] - row_ptr[r]
// and slot < cap. One invocation per (row, j < k).

@group(0) @binding(1) var<storage, read> pk_sel: array<u32>;            // (rows, k)
@group(0) @binding(2) var<storage, read> pk_val: array<f32>;            // (rows, k)
@group(0) @binding(3) var<storage, read> pk_row_ptr: array<u32>;        // (rows + 1)
@group(0) @binding(4) var<storage, read_write> pk_idx: array<u32>;      // (cap)
@group(0) @binding(5) var<storage, read_write> pk_out: array<f32>;      // (cap)

@compute @workgroup_size(WG)
fn csr_pack(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    if t >= p.rows * p.k { return; }
    let r = t / p.k;
    let j = t - r * p.k;
    let a = pk_row_ptr[r];
    let b = pk_row_ptr[r + 1u];
    if j >= b - a { return; }
    let s = a + j;
    if s >= p.cap { return; }
    pk_idx[s] = pk_sel[t];
    pk_out[s] = pk_val[t];
}

// ---------------------------------------------------------------- dead_list
// cols[..m] = the latents i with since[i] >= dead_after, ascending; ncols[0] = m; cols[m..] = 0.
// One workgroup, as csr_scan (p.n latents).

@group(0) @binding(1) var<storage, read> dl_since: array<u32>;          // (n)
@group(0) @binding(2) var<storage, read_write> dl_cols: array<u32>;     // (n)
@group(0) @binding(3) var<storage, read_write> dl_ncols: array<u32>;    // (1)
var<workgroup> dl_sums: array<u32, WG_SCAN>;
var<workgroup> dl_total: u32;

@compute @workgroup_size(WG_SCAN)
fn dead_list(@builtin(local_invocation_index) l: u32) {
    let chunk = (p.n + WG_SCAN - 1u) / WG_SCAN;
    let lo = min(l * chunk, p.n);
    let hi = min(lo + chunk, p.n);
    var sum = 0u;
    for (var i = lo; i < hi; i++) {
        sum += select(0u, 1u, dl_since[i] >= p.dead_after);
    }
    dl_sums[l] = sum;
    workgroupBarrier();
    if l == 0u {
        var run = 0u;
        for (var c = 0u; c < WG_SCAN; c++) {
            let v = dl_sums[c];
            dl_sums[c] = run;
            run += v;
        }
        dl_total = run;
        dl_ncols[0] = run;
    }
    workgroupBarrier();
    var pos = dl_sums[l];
    for (var i = lo; i < hi; i++) {
        if dl_since[i] >= p.dead_after {
            dl_cols[pos] = i;
            pos++;
        }
    }
    // Positions past the count (all >= every position written above) are zeroed by the
    // lane whose chunk they fall in.
    let m = dl_total;
    for (var i = max(lo, m); i < hi; i++) {
        dl_cols[i] = 0u;
    }
}

// ---------------------------------------------------------------- threshold_offsets
// off[i] = exp(log_thr[i]) - eps: block_max of pre - off finds the blocks that may hold a
// JumpReLU entry (pre > theta, or within eps / 2 of it) with a margin of eps / 2 for rounding.

@group(0) @binding(1) var<storage, read> to_log_thr: array<f32>;       // (n)
@group(0) @binding(2) var<storage, read_write> to_off: array<f32>;     // (n)

@compute @workgroup_size(WG)
fn threshold_offsets(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.n { return; }
    to_off[i] = exp(to_log_thr[i]) - p.eps;
}

// ---------------------------------------------------------------- compact_count / compact_write
// The entries an activation keeps, per row in ascending latent order: ReLU keeps pre > 0;
// JumpReLU (has_off) keeps pre > theta or |pre - theta| <= eps / 2 (the window its threshold
// gradient needs), theta = exp(log_thr). Only blocks whose bmax (of pre, or of pre - off) is
// a key >= key(0.0) are read. compact_count: counts[r]; compact_write: idx / val (the
// activation: pre, or 0 in JumpReLU's window below theta) / pre_val (pre) at row_ptr[r] + j
// for slots < cap. One invocation per row each.

@group(0) @binding(1) var<storage, read> cp_x: array<f32>;               // (rows, n)
@group(0) @binding(2) var<storage, read> cp_bmax: array<u32>;            // (rows, nb)
@group(0) @binding(3) var<storage, read> cp_log_thr: array<f32>;         // (n); unread for ReLU

// Whether entry (r, i) is kept, and its activation value (x).
fn cp_keep(r: u32, i: u32) -> vec2<f32> {
    let v = cp_x[r * p.n + i];
    if p.has_off == 0u {
        return vec2<f32>(select(0.0, 1.0, v > 0.0), v);
    }
    let theta = exp(cp_log_thr[i]);
    let on = v > theta;
    let keep = on || abs(v - theta) <= 0.5 * p.eps;
    return vec2<f32>(select(0.0, 1.0, keep), select(0.0, v, on));
}

@group(0) @binding(4) var<storage, read_write> cc_counts: array<u32>;    // (rows)

@compute @workgroup_size(WG)
fn compact_count(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    var c = 0u;
    for (var j = 0u; j < p.nb; j++) {
        if cp_bmax[r * p.nb + j] < 0x80000000u { continue; }
        let q1 = min(j * p.block + p.block, p.n);
        for (var i = j * p.block; i < q1; i++) {
            c += select(0u, 1u, cp_keep(r, i).x != 0.0);
        }
    }
    cc_counts[r] = c;
}

@group(0) @binding(4) var<storage, read> cw_row_ptr: array<u32>;         // (rows + 1)
@group(0) @binding(5) var<storage, read_write> cw_idx: array<u32>;       // (cap)
@group(0) @binding(6) var<storage, read_write> cw_val: array<f32>;       // (cap)
@group(0) @binding(7) var<storage, read_write> cw_pre: array<f32>;       // (cap)

@compute @workgroup_size(WG)
fn compact_write(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    var s = cw_row_ptr[r];
    for (var j = 0u; j < p.nb; j++) {
        if cp_bmax[r * p.nb + j] < 0x80000000u { continue; }
        let q1 = min(j * p.block + p.block, p.n);
        for (var i = j * p.block; i < q1; i++) {
            let kv = cp_keep(r, i);
            if kv.x != 0.0 {
                if s < p.cap {
                    cw_idx[s] = i;
                    cw_val[s] = kv.y;
                    cw_pre[s] = cp_x[r * p.n + i];
                }
                s += 1u;
            }
        }
    }
}

// The same two with vec4 loads of x and bmax (n % 4 == 0, block % 4 == 0, n % block == 0,
// nb % 4 == 0): a quarter of the loop trips, which is what they cost on lavapipe (each lane
// of a row loops over its own blocks).

@group(0) @binding(1) var<storage, read> cp4_x: array<vec4<f32>>;        // (rows, n / 4)
@group(0) @binding(2) var<storage, read> cp4_bmax: array<vec4<u32>>;     // (rows, nb / 4)
@group(0) @binding(3) var<storage, read> cp4_log_thr: array<vec4<f32>>;  // (n / 4); unread for ReLU

struct Kept4 {
    keep: vec4<bool>,
    act: vec4<f32>,
}

// cp_keep for the four entries v at column quad q.
fn cp4_keep(v: vec4<f32>, q: u32) -> Kept4 {
    if p.has_off == 0u {
        return Kept4(v > vec4<f32>(0.0), v);
    }
    let theta = exp(cp4_log_thr[q]);
    let on = v > theta;
    let keep = on | (abs(v - theta) <= vec4<f32>(0.5 * p.eps));
    return Kept4(keep, select(vec4<f32>(0.0), v, on));
}

@compute @workgroup_size(WG)
fn compact_count_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    let n4 = p.n / 4u;
    let b4 = p.block / 4u;
    let nb4 = p.nb / 4u;
    var c = 0u;
    for (var jq = 0u; jq < nb4; jq++) {
        let bq = cp4_bmax[r * nb4 + jq];
        if all(bq < vec4<u32>(0x80000000u)) { continue; }
        for (var l = 0u; l < 4u; l++) {
            if bq[l] < 0x80000000u { continue; }
            let q0 = (jq * 4u + l) * b4;
            for (var q = q0; q < q0 + b4; q++) {
                let m = select(vec4<u32>(0u), vec4<u32>(1u), cp4_keep(cp4_x[r * n4 + q], q).keep);
                c += m.x + m.y + m.z + m.w;
            }
        }
    }
    cc_counts[r] = c;
}

// Stores entry (i, act, pre) at slot s when s < cap; the next slot.
fn cw_put(s: u32, keep: bool, i: u32, act: f32, pre: f32) -> u32 {
    if keep {
        if s < p.cap {
            cw_idx[s] = i;
            cw_val[s] = act;
            cw_pre[s] = pre;
        }
        return s + 1u;
    }
    return s;
}

@compute @workgroup_size(WG)
fn compact_write_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= p.rows { return; }
    let n4 = p.n / 4u;
    let b4 = p.block / 4u;
    let nb4 = p.nb / 4u;
    var s = cw_row_ptr[r];
    for (var jq = 0u; jq < nb4; jq++) {
        let bq = cp4_bmax[r * nb4 + jq];
        if all(bq < vec4<u32>(0x80000000u)) { continue; }
        for (var l = 0u; l < 4u; l++) {
            if bq[l] < 0x80000000u { continue; }
            let q0 = (jq * 4u + l) * b4;
            for (var q = q0; q < q0 + b4; q++) {
                let v = cp4_x[r * n4 + q];
                let k = cp4_keep(v, q);
                let i = 4u * q;
                s = cw_put(s, k.keep.x, i, k.act.x, v.x);
                s = cw_put(s, k.keep.y, i + 1u, k.act.y, v.y);
                s = cw_put(s, k.keep.z, i + 2u, k.act.z, v.z);
                s = cw_put(s, k.keep.w, i + 3u, k.act.w, v.w);
            }
        }
    }
}

// compact_count and compact_write a workgroup per row (hardware GPUs; see
// topk_threshold_group): the lanes take the row's blocks lid, lid + WG_ROW, ...; the count
// is summed in a workgroup atomic; the write goes in rounds of WG_ROW blocks, each lane at
// the row's offset plus the kept entries of the rounds and lanes before it.

@compute @workgroup_size(WG_ROW)
fn compact_count_group(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = group_index(wid, nwg);
    if r >= p.rows { return; }
    if lid < 2u { atomicStore(&sr_cnt[lid], 0u); }
    workgroupBarrier();
    var c = 0u;
    for (var j = lid; j < p.nb; j += WG_ROW) {
        c += cp_block_count(r, j);
    }
    let total = sr_count(0u, c, lid);
    if lid == 0u { cc_counts[r] = total; }
}

// How many entries of block j of row r the activation keeps (0 unless bmax says it may).
fn cp_block_count(r: u32, j: u32) -> u32 {
    var c = 0u;
    if j < p.nb && cp_bmax[r * p.nb + j] >= 0x80000000u {
        let q1 = min(j * p.block + p.block, p.n);
        for (var i = j * p.block; i < q1; i++) {
            c += select(0u, 1u, cp_keep(r, i).x != 0.0);
        }
    }
    return c;
}

@compute @workgroup_size(WG_ROW)
fn compact_write_group(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = group_index(wid, nwg);
    if r >= p.rows { return; }
    var s0 = cw_row_ptr[r];
    for (var j0 = 0u; j0 < p.nb; j0 += WG_ROW) {
        let j = j0 + lid;
        sr_above[lid] = cp_block_count(r, j);
        let round = sg_scan(lid);
        var s = s0 + sr_above[lid];
        if j < p.nb && cp_bmax[r * p.nb + j] >= 0x80000000u {
            let q1 = min(j * p.block + p.block, p.n);
            for (var i = j * p.block; i < q1; i++) {
                let kv = cp_keep(r, i);
                s = cw_put(s, kv.x != 0.0, i, kv.y, cp_x[r * p.n + i]);
            }
        }
        s0 += round;
        // sr_above is rewritten by the next round.
        workgroupBarrier();
    }
}

// ---------------------------------------------------------------- BatchTopK by candidates
// The k_total = k * rows largest entries of the whole batch: T = the 16-bit key prefix of
// the k_total-th largest block maximum (a radix select over the bmax keys, two 8-bit
// levels: key_init, key_hist + key_find twice) bounds the k_total-th largest entry from
// below; topk_candidates (with thr = T for every row) lists each row's entries >= T in
// latent order, and topk.wgsl's batchtopk_gather hands those lists to its selection
// (src/kernels/topk.rs `batchtopk_chunks` with lists), which keeps the batch's flat order, so ties
// resolve as on the whole matrix; a row whose list overflowed CAND makes it read x.

@group(0) @binding(1) var<storage, read_write> ki_state: array<u32>;          // (4): prefix, mask, need, (unused)
@group(0) @binding(2) var<storage, read_write> ki_hist: array<u32>;           // (256)

@compute @workgroup_size(WG_SCAN)
fn key_init(@builtin(local_invocation_index) l: u32) {
    if l == 0u {
        ki_state[0] = 0u;
        ki_state[1] = 0u;
        ki_state[2] = p.k;
        ki_state[3] = 0u;
    }
    for (var b = l; b < 256u; b += WG_SCAN) {
        ki_hist[b] = 0u;
    }
}

@group(0) @binding(1) var<storage, read> kh_keys: array<u32>;                 // (len = p.n)
@group(0) @binding(2) var<storage, read> kh_state: array<u32>;                // (4)
@group(0) @binding(3) var<storage, read_write> kh_hist: array<atomic<u32>>;   // (256)

override KEY_EPT: u32 = 32u;  // key_hist: keys per invocation
var<workgroup> kh_local: array<atomic<u32>, 256>;

// Each workgroup counts its WG * KEY_EPT keys (coalesced: lane l reads l, l + WG, ...) in
// a workgroup histogram and adds its non-zero bins to the global one: one global atomic
// per bin and workgroup instead of one per key (on lavapipe the global adds of the first
// level, nearly all into a few bins, cost more than the rest of the selection).
@compute @workgroup_size(WG)
fn key_hist(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    for (var b = lid; b < 256u; b += WG) {
        atomicStore(&kh_local[b], 0u);
    }
    workgroupBarrier();
    let phi = kh_state[0];
    let mhi = kh_state[1];
    let start = group_index(wid, nwg) * WG * KEY_EPT;
    for (var j = 0u; j < KEY_EPT; j++) {
        let i = start + j * WG + lid;
        if i < p.n {
            let key = kh_keys[i];
            if (key & mhi) == phi {
                atomicAdd(&kh_local[(key >> p.shift) & 255u], 1u);
            }
        }
    }
    workgroupBarrier();
    for (var b = lid; b < 256u; b += WG) {
        let c = atomicLoad(&kh_local[b]);
        if c != 0u {
            atomicAdd(&kh_hist[b], c);
        }
    }
}

@group(0) @binding(1) var<storage, read_write> kf_state: array<u32>;          // (4)
@group(0) @binding(2) var<storage, read_write> kf_hist: array<u32>;           // (256)
@group(0) @binding(3) var<storage, read_write> kf_thr: array<u32>;            // (rows); written on the last level

// One invocation: the bin holding the need-th largest key, from the top; the keys above it
// are all taken (need shrinks by their count); the histogram is cleared for the next level.
@compute @workgroup_size(1)
fn key_find() {
    let need = kf_state[2];
    var cum = 0u;
    var b = 255u;
    loop {
        let c = kf_hist[b];
        if cum + c >= need || b == 0u { break; }
        cum += c;
        b -= 1u;
    }
    kf_state[0] = kf_state[0] | (b << p.shift);
    kf_state[1] = kf_state[1] | (255u << p.shift);
    kf_state[2] = need - cum;
    for (var j = 0u; j < 256u; j++) {
        kf_hist[j] = 0u;
    }
    if p.last != 0u {
        for (var r = 0u; r < p.rows; r++) {
            kf_thr[r] = kf_state[0];
        }
    }
}

// ---------------------------------------------------------------- csr_rows
// One chunk's rows of the batch's codes as a CSR of their own (BatchTopK selects over the
// whole batch; the chunks' decode and backward take their rows): with base = row_ptr[row0],
// row_ptr_c[r] = row_ptr[row0 + r] - base for r <= rows, and idx_c[s], val_c[s] =
// idx[base + s], val[base + s] for s < row_ptr_c[rows] (and < cap). One invocation per
// slot of the chunk's codes (or row, whichever is more).
@group(0) @binding(1) var<storage, read> cr_row_ptr: array<u32>;              // (rows_all + 1)
@group(0) @binding(2) var<storage, read> cr_idx: array<u32>;                  // (k_total)
@group(0) @binding(3) var<storage, read> cr_val: array<f32>;                  // (k_total)
@group(0) @binding(4) var<storage, read_write> cr_row_ptr_c: array<u32>;      // (rows + 1)
@group(0) @binding(5) var<storage, read_write> cr_idx_c: array<u32>;          // (cap)
@group(0) @binding(6) var<storage, read_write> cr_val_c: array<f32>;          // (cap)

@compute @workgroup_size(WG)
fn csr_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    let base = cr_row_ptr[p.row0];
    if t <= p.rows {
        cr_row_ptr_c[t] = cr_row_ptr[p.row0 + t] - base;
    }
    let count = cr_row_ptr[p.row0 + p.rows] - base;
    if t < min(count, p.cap) {
        cr_idx_c[t] = cr_idx[base + t];
        cr_val_c[t] = cr_val[base + t];
    }
}
