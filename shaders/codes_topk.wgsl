// The row top-k of the codes module (shaders/codes.wgsl: its Params, bindings' conventions
// and block_max): topk_threshold, topk_candidates and topk_select one invocation per row,
// topk_select_row for rows whose candidate lists overflowed, and the same stages a
// workgroup per row (*_group) for hardware GPUs. Launchers: src/kernels/codes/selection.rs.
// CPU twins: src/reference/codes.rs.

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
    let r = group_index(wid, nwg);
    // Both conditions are the same for the whole workgroup (one row).
    if r >= p.rows { return; }
    if sl_n[r] <= CAND { return; }
    sr_select(r, lid, false);
}

// A row's selection by the workgroup: from its candidate list (`listed`) or from the
// eligible row itself (the entries below thr read as key 0, never taken). K, the k-th key,
// by the bit search over the lanes' contiguous chunks (0 when there are fewer than k
// entries: all are taken); then each lane writes its chunk's entries above K and the ties
// allowed, at its offset (sr_offsets); the slots past the selection get 0 / 0.0.
fn sr_select(r: u32, lid: u32, listed: bool) {
    var len = p.n;
    if p.has_cols != 0u { len = min(sl_ncols[0], p.n); }
    if listed { len = sl_n[r]; }
    let t = sl_thr[r];
    let k = p.k;
    let chunk = (len + WG_ROW - 1u) / WG_ROW;
    let lo = min(lid * chunk, len);
    let hi = min(lo + chunk, len);
    if lid < 2u { atomicStore(&sr_cnt[lid], 0u); }
    workgroupBarrier();
    var kk = 0u;
    for (var bit = 0u; bit < 32u; bit++) {
        let c = kk | (0x80000000u >> bit);
        var cnt = 0u;
        for (var e = lo; e < hi; e++) {
            cnt += select(0u, 1u, sr_pick(r, e, t, listed).y >= c);
        }
        if sr_count(bit, cnt, lid) >= k { kk = c; }
    }
    var above = 0u;
    var ties = 0u;
    for (var e = lo; e < hi; e++) {
        let key = sr_pick(r, e, t, listed).y;
        above += select(0u, 1u, key > kk);
        ties += select(0u, 1u, key == kk && kk != 0u);
    }
    let at = sr_offsets(lid, above, ties, k);
    var j = at.x;
    var seen = at.y;
    let allowed = at.z;
    let taken = at.w;
    for (var e = lo; e < hi; e++) {
        let en = sr_pick(r, e, t, listed);
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

// Entry e of row r's selection: its latent and key, from the candidate list (`listed`) or
// the eligible row (sr_entry).
fn sr_pick(r: u32, e: u32, t: u32, listed: bool) -> vec2<u32> {
    if listed {
        return vec2<u32>(sl_cand[r * CAND + e], sl_key[r * CAND + e]);
    }
    return sr_entry(r, e, t);
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

// topk_select_group: topk_select's selection from the candidate lists, as topk_select_row
// makes it from the row (rows that overflowed their lists are left to topk_select_row).
@compute @workgroup_size(WG_ROW)
fn topk_select_group(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = group_index(wid, nwg);
    if r >= p.rows { return; }
    if sl_n[r] > CAND { return; }
    sr_select(r, lid, true);
}
