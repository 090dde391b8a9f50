// Batch top-k selection for BatchTopK SAEs (the per-row top-k of TopK SAEs and AuxK is
// codes.wgsl's topk_* chain).
// Launchers: src/kernels/topk.rs. CPU twins: src/reference/topk.rs.
//
// Order. key_of maps an f32 to a u32 whose unsigned order is the float order (sign bit
// flipped for positives, all bits inverted for negatives; -0 folded onto +0 so that equal
// floats get equal keys). Among equal keys the lower index wins, so an element's full rank
// is the 64-bit composite (key, lomask - index): larger is better, and no two elements tie.
//
// Selection is a radix select, most significant digit first (11-bit digits over the key,
// then over lomask - index where ties need it; BINS = 2048 u32 counters; counts are
// deterministic whatever the order of the atomic adds). Each level keeps a prefix of
// determined bits and `need`, how many more to take from the elements matching it; the
// histogram of the next digit over the matching elements names the bin that holds the
// need-th best, and everything in a higher bin is taken.
//
// The selection first finds a cheap lower bound t0 from per-invocation maxima, so that the
// expensive part (atomics, sorting) sees about k elements instead of n. On lavapipe a loop
// over the row that contains an atomic costs about three times one without, even when
// the atomic is rarely reached, and every per-invocation access to workgroup memory is
// dear; the row is therefore read with no atomics in the loop.

override WG: u32 = 256;    // invocations per workgroup: a power of two, at most BINS
override EPT: u32 = 64;    // batchtopk_hist: elements per invocation

const BINS: u32 = 2048u;

fn value_of(key: u32) -> f32 {
    return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

// Digit of radix level `level`: (word, shift, width), word 0 = key, word 1 = lomask - index
// over `ib` index bits.
fn digit_plan(level: u32, ib: u32) -> vec3<u32> {
    if level == 0u {
        return vec3<u32>(0u, 21u, 11u);
    }
    if level == 1u {
        return vec3<u32>(0u, 10u, 11u);
    }
    if level == 2u {
        return vec3<u32>(0u, 0u, 10u);
    }
    let rem = ib - 11u * (level - 3u);
    let width = min(11u, rem);
    return vec3<u32>(1u, rem - width, width);
}

// ---------------------------------------------------------------- batchtopk
// The k_total largest entries of the whole matrix, in a fast path that reads x twice:
// 1. bound: every invocation's largest key over its strided share of a row (the lane
//    maxima, LM). The k_total-th largest of LM bounds the k_total-th largest entry from
//    below; two radix levels over LM (hist + find, src 0) give t0, the lower edge of its bin.
// 2. collect: per row, the entries with key >= t0 (about k_total in all) are appended in
//    ascending latent order to a candidate buffer (each row's run placed by one atomic add;
//    where a run lands varies, what it holds does not).
// 3. Three radix levels over the candidate keys (src 1) give the exact k_total-th largest
//    key T and `need` >= 1, how many of the entries equal to T are taken (the first in flat
//    order). Then per row: count (entries > T, entries == T), scan (ties taken per row,
//    row_ptr, threshold) and scatter (each row's selected entries in ascending latent order).
// When more candidates qualify than the buffer holds (many equal values), the same steps
// run over x itself instead (the slow path): the dispatches after collect read the
// overflow flag and pick their source, so neither path costs dispatches of the other.
// A caller with a bound and per-row lists of its own (codes.wgsl's, from the encoder's
// block maxima) replaces steps 1 and 2 by batchtopk_gather, and count and scatter run one
// invocation per row (batchtopk_count_rows, batchtopk_scatter_rows).
//
// Scratch (u32): [0, BINS) global histogram, [BINS, BINS + 16) state, then per row: entries
// > T, entries == T (replaced by ties taken in the scan), candidate offset, candidate count;
// then LM (rows, WG); then candidate keys and latents (capg each).
//
// Chunks: a batch whose x does not fit one binding is passed as row chunks, one dispatch
// of bound / collect / count / scatter per chunk (x bound to the chunk, its first row at
// row0 of the batch, `rows` its rows); the scratch, the radix levels and the scan are the
// whole batch's (`rows_all` rows). batchtopk_hist over src 1 reads the candidates in the
// call with first = 1 only, and after an overflow each chunk's x in its own call. One
// chunk is row0 = 0, rows_all = rows, first = 1.

struct BatchParams {
    rows: u32,
    n: u32,
    k_total: u32,
    level: u32,  // radix level 0, 1, 2
    src: u32,    // batchtopk_hist / find: 0 lane maxima, 1 candidates (or x after an overflow)
    capg: u32,   // candidate capacity
    vec4: u32,   // 1: n % 4 == 0, read x through the vec4 view
    row0: u32,   // the chunk's first row in the batch
    rows_all: u32,  // rows of the batch (the scratch's per-row arrays, the scan, row_ptr)
    first: u32,  // batchtopk_hist, src 1: 1 in the call that histograms the candidates
    width: u32,  // batchtopk_gather: the row stride of the candidate lists
    _pad0: u32,
}

const ST: u32 = 2048u;  // BINS: state
const S_PHI: u32 = 0u;     // determined key bits of the current select
const S_MHI: u32 = 1u;     // which bits are determined
const S_NEED: u32 = 2u;    // still to take from the entries matching the prefix
const S_ABOVE: u32 = 3u;   // entries above the prefix range
const S_T0: u32 = 4u;      // lower bound from the lane maxima
const S_COUNT: u32 = 5u;   // candidates appended
const S_OVER: u32 = 6u;    // 1: candidates overflowed; the slow path runs over x
const S_DONE: u32 = 7u;    // 1: fewer lane maxima than k_total, t0 = 0
const ROWS0: u32 = 2064u;  // BINS + 16: per-row arrays

// Per-row arrays, indexed by the row in the batch (row0 + the row in the chunk).
fn b_gt(r: u32) -> u32 {
    return ROWS0 + r;
}
fn b_eq(r: u32) -> u32 {
    return ROWS0 + bp.rows_all + r;
}
fn b_off(r: u32) -> u32 {
    return ROWS0 + 2u * bp.rows_all + r;
}
fn b_cnt(r: u32) -> u32 {
    return ROWS0 + 3u * bp.rows_all + r;
}
fn b_lm0() -> u32 {
    return ROWS0 + 4u * bp.rows_all;
}
fn b_ck0() -> u32 {
    return b_lm0() + bp.rows_all * WG;
}
fn b_ci0() -> u32 {
    return b_ck0() + bp.capg;
}

@group(0) @binding(0) var<uniform> bp: BatchParams;

// batchtopk_init: clear the histogram, set the state.
@group(0) @binding(1) var<storage, read_write> bi_s: array<u32>;  // scratch

@compute @workgroup_size(WG)
fn batchtopk_init(@builtin(local_invocation_index) lid: u32) {
    for (var b = lid; b < BINS + 16u; b += WG) {
        bi_s[b] = 0u;
    }
    if lid == 0u {
        bi_s[ST + S_NEED] = bp.k_total;
    }
}

// batchtopk_bound: one workgroup per row; LM[row, lid] = the largest key of the
// invocation's strided share (0: none).
@group(0) @binding(1) var<storage, read> bb_x: array<f32>;               // (rows, n)
@group(0) @binding(2) var<storage, read> bb_x4: array<vec4<f32>>;        // (rows, n / 4), the same buffer, when vec4
@group(0) @binding(3) var<storage, read_write> bb_s: array<u32>;         // scratch

@compute @workgroup_size(WG)
fn batchtopk_bound(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg);
    if row >= bp.rows {
        return;
    }
    let n = bp.n;
    var m = 0u;
    if bp.vec4 != 0u {
        let base4 = row * (n / 4u);
        for (var j = lid; j < n / 4u; j += WG) {
            let v = bb_x4[base4 + j];
            m = max(m, max(max(key_of(v.x), key_of(v.y)), max(key_of(v.z), key_of(v.w))));
        }
    } else {
        for (var i = lid; i < n; i += WG) {
            m = max(m, key_of(bb_x[row * n + i]));
        }
    }
    bb_s[b_lm0() + (bp.row0 + row) * WG + lid] = m;
}

// batchtopk_hist: histogram of digit `level` over the keys of src matching the prefix,
// added into the global histogram. A fixed grid strides over chunks of WG * EPT keys
// (src 1 needs the grid for x in case of an overflow; idle workgroups cost little).
@group(0) @binding(1) var<storage, read> bh_x: array<f32>;                      // (rows, n)
@group(0) @binding(2) var<storage, read_write> bh_s: array<atomic<u32>>;        // scratch

var<workgroup> bh_hist: array<atomic<u32>, BINS>;
var<workgroup> bh_len: u32;
var<workgroup> bh_src: u32;

@compute @workgroup_size(WG)
fn batchtopk_hist(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    var src = bp.src;  // 0: lane maxima, 1: candidates, 2: x
    if lid == 0u {
        var len = 0u;
        if atomicLoad(&bh_s[ST + S_DONE]) == 0u {
            if src == 0u {
                len = bp.rows_all * WG;
            } else if atomicLoad(&bh_s[ST + S_OVER]) == 0u {
                len = select(0u, min(atomicLoad(&bh_s[ST + S_COUNT]), bp.capg), bp.first != 0u);
            } else {
                len = bp.rows * bp.n;
                src = 2u;
            }
        }
        bh_len = len;
        bh_src = src;
    }
    let len = workgroupUniformLoad(&bh_len);
    src = workgroupUniformLoad(&bh_src);
    let chunk = WG * EPT;
    let groups = nwg.x * nwg.y;
    // The grid is sized to a bound on len; the chunks of len are spread over it.
    let g = spread_group(group_index(wid, nwg), (len + chunk - 1u) / chunk, groups);
    if g * chunk >= len {
        return;
    }
    let plan = digit_plan(bp.level, 0u);
    let dmask = (1u << plan.z) - 1u;
    let phi = atomicLoad(&bh_s[ST + S_PHI]);
    let mhi = atomicLoad(&bh_s[ST + S_MHI]);
    let src0 = select(b_lm0(), b_ck0(), src == 1u);
    for (var b = lid; b < BINS; b += WG) {
        atomicStore(&bh_hist[b], 0u);
    }
    workgroupBarrier();
    for (var start = g * chunk; start < len; start += groups * chunk) {
        let end = min(start + chunk, len);
        for (var i = start + lid; i < end; i += WG) {
            var key: u32;
            if src == 2u {
                key = key_of(bh_x[i]);
            } else {
                key = atomicLoad(&bh_s[src0 + i]);
            }
            if key != 0u && (key & mhi) == phi {
                atomicAdd(&bh_hist[(key >> plan.y) & dmask], 1u);
            }
        }
    }
    workgroupBarrier();
    for (var b = lid; b < BINS; b += WG) {
        let c = atomicLoad(&bh_hist[b]);
        if c != 0u {
            atomicAdd(&bh_s[b], c);
        }
    }
}

// batchtopk_find: one workgroup; the bin holding the need-th best of the histogrammed keys
// extends the prefix; clears the histogram. After the last lane-maxima level, t0 is set
// and the select starts afresh.
@group(0) @binding(1) var<storage, read_write> bf_s: array<u32>;  // scratch

var<workgroup> bf_part: array<u32, WG>;
var<workgroup> bf_run: u32;

@compute @workgroup_size(WG)
fn batchtopk_find(@builtin(local_invocation_index) lid: u32) {
    if lid == 0u {
        bf_run = select(0u, 1u, bf_s[ST + S_DONE] == 0u);
    }
    let run = workgroupUniformLoad(&bf_run);
    if run != 0u {
        let per = BINS / WG;
        var sum = 0u;
        for (var j = 0u; j < per; j++) {
            sum += bf_s[lid * per + j];
        }
        bf_part[lid] = sum;
        workgroupBarrier();
        if lid == 0u {
            let plan = digit_plan(bp.level, 0u);
            let need = bf_s[ST + S_NEED];
            var cum = 0u;
            var g = WG;
            while g > 0u && cum + bf_part[g - 1u] < need {
                cum += bf_part[g - 1u];
                g -= 1u;
            }
            if g == 0u {
                // Fewer keys than need: only lane maxima (src 0, level 0) can fall short;
                // t0 stays 0 and every entry is a candidate.
                bf_s[ST + S_DONE] = 1u;
            } else {
                var b = g * per - 1u;
                loop {
                    let c = bf_s[b];
                    if cum + c >= need {
                        break;
                    }
                    cum += c;
                    b -= 1u;
                }
                bf_s[ST + S_PHI] |= b << plan.y;
                bf_s[ST + S_MHI] |= ((1u << plan.z) - 1u) << plan.y;
                bf_s[ST + S_NEED] = need - cum;
                bf_s[ST + S_ABOVE] += cum;
            }
        }
        storageBarrier();
        for (var b = lid; b < BINS; b += WG) {
            bf_s[b] = 0u;
        }
    }
    if bp.src == 0u && bp.level == 1u && lid == 0u {
        bf_s[ST + S_T0] = bf_s[ST + S_PHI];
        bf_s[ST + S_PHI] = 0u;
        bf_s[ST + S_MHI] = 0u;
        bf_s[ST + S_NEED] = bp.k_total;
        bf_s[ST + S_ABOVE] = 0u;
        bf_s[ST + S_DONE] = 0u;
    }
}

// batchtopk_collect: one workgroup per row; each invocation owns a contiguous run of
// latents, counts its entries with key >= t0, and (after a scan) writes them in order,
// from registers when it has at most two (a second loop over the run costs as much as
// the first on lavapipe).
@group(0) @binding(1) var<storage, read> bc_x: array<f32>;                 // (rows, n)
@group(0) @binding(2) var<storage, read> bc_x4: array<vec4<f32>>;          // (rows, n / 4), the same buffer, when vec4
@group(0) @binding(3) var<storage, read_write> bc_s: array<atomic<u32>>;   // scratch: counters
@group(0) @binding(4) var<storage, read_write> bc_w: array<u32>;           // the same scratch: candidates

var<workgroup> bc_part: array<u32, WG>;
var<workgroup> bc_off: u32;

// How many keys >= t0 an invocation has seen, and the first two of them.
struct First2 {
    c: u32,
    k0: u32,
    i0: u32,
    k1: u32,
    i1: u32,
}

fn first2_add(f: First2, key: u32, i: u32, t0: u32) -> First2 {
    let take = key >= t0;
    var r = f;
    r.k0 = select(f.k0, key, take && f.c == 0u);
    r.i0 = select(f.i0, i, take && f.c == 0u);
    r.k1 = select(f.k1, key, take && f.c == 1u);
    r.i1 = select(f.i1, i, take && f.c == 1u);
    r.c = f.c + select(0u, 1u, take);
    return r;
}

@compute @workgroup_size(WG)
fn batchtopk_collect(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = group_index(wid, nwg);
    if row >= bp.rows {
        return;
    }
    let n = bp.n;
    let base = row * n;
    let t0 = atomicLoad(&bc_s[ST + S_T0]);
    // Runs of whole vec4s when n % 4 == 0.
    let q = select(1u, 4u, bp.vec4 != 0u);
    let seg = ((n / q + WG - 1u) / WG) * q;
    let i0 = min(lid * seg, n);
    let i1 = min(i0 + seg, n);
    // Count, keeping the first two in registers (most invocations have none or few).
    var f = First2(0u, 0u, 0u, 0u, 0u);
    if bp.vec4 != 0u {
        for (var j = i0 / 4u; j < i1 / 4u; j++) {
            let v = bc_x4[base / 4u + j];
            f = first2_add(f, key_of(v.x), 4u * j, t0);
            f = first2_add(f, key_of(v.y), 4u * j + 1u, t0);
            f = first2_add(f, key_of(v.z), 4u * j + 2u, t0);
            f = first2_add(f, key_of(v.w), 4u * j + 3u, t0);
        }
    } else {
        for (var i = i0; i < i1; i++) {
            f = first2_add(f, key_of(bc_x[base + i]), i, t0);
        }
    }
    let c = f.c;
    bc_part[lid] = c;
    workgroupBarrier();
    if lid == 0u {
        var run = 0u;
        for (var j = 0u; j < WG; j++) {
            let v = bc_part[j];
            bc_part[j] = run;
            run += v;
        }
        let off = atomicAdd(&bc_s[ST + S_COUNT], run);
        atomicStore(&bc_s[b_off(bp.row0 + row)], off);
        atomicStore(&bc_s[b_cnt(bp.row0 + row)], run);
        if off + run > bp.capg {
            atomicStore(&bc_s[ST + S_OVER], 1u);
            bc_off = 0xffffffffu;
        } else {
            bc_off = off;
        }
    }
    let off = workgroupUniformLoad(&bc_off);
    if off == 0xffffffffu {
        return;
    }
    var pos = off + bc_part[lid];
    let ck0 = b_ck0();
    let ci0 = b_ci0();
    if c > 2u {
        for (var i = i0; i < i1; i++) {
            let key = key_of(bc_x[base + i]);
            if key >= t0 {
                bc_w[ck0 + pos] = key;
                bc_w[ci0 + pos] = i;
                pos += 1u;
            }
        }
    } else if c > 0u {
        bc_w[ck0 + pos] = f.k0;
        bc_w[ci0 + pos] = f.i0;
        if c > 1u {
            bc_w[ck0 + pos + 1u] = f.k1;
            bc_w[ci0 + pos + 1u] = f.i1;
        }
    }
}

// batchtopk_gather: instead of bound and collect when the caller has a bound of its own
// (codes.wgsl: the k_total-th largest block maximum) and per row the list of every entry
// at or above it, in ascending latent order (topk_candidates): the lists are appended to
// the candidate buffer as collect appends (one atomic add per row places its run). A list
// that overflowed its width (the count above it) is incomplete: S_OVER, so the stages
// after read x. One invocation per row of the chunk.
@group(0) @binding(1) var<storage, read> bg_cand: array<u32>;              // (rows, width)
@group(0) @binding(2) var<storage, read> bg_key: array<u32>;               // (rows, width)
@group(0) @binding(3) var<storage, read> bg_n: array<u32>;                 // (rows)
@group(0) @binding(4) var<storage, read_write> bg_s: array<atomic<u32>>;   // scratch: counters
@group(0) @binding(5) var<storage, read_write> bg_w: array<u32>;           // the same scratch: candidates

@compute @workgroup_size(WG)
fn batchtopk_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(gid, nwg, WG);
    if row >= bp.rows {
        return;
    }
    let r = bp.row0 + row;
    let c = bg_n[row];
    if c > bp.width {
        atomicStore(&bg_s[ST + S_OVER], 1u);
        return;
    }
    let off = atomicAdd(&bg_s[ST + S_COUNT], c);
    atomicStore(&bg_s[b_off(r)], off);
    atomicStore(&bg_s[b_cnt(r)], c);
    if off + c > bp.capg {
        atomicStore(&bg_s[ST + S_OVER], 1u);
        return;
    }
    let ck0 = b_ck0() + off;
    let ci0 = b_ci0() + off;
    let src = row * bp.width;
    for (var j = 0u; j < c; j++) {
        bg_w[ck0 + j] = bg_key[src + j];
        bg_w[ci0 + j] = bg_cand[src + j];
    }
}
