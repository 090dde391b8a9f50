// Top-k selection for TopK and BatchTopK SAEs.
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
// Both kernels first find a cheap lower bound t0 from per-invocation maxima, so that the
// expensive part (atomics, sorting) sees about k elements instead of n. On lavapipe a loop
// over the row that contains an atomic costs about three times one without, even when
// the atomic is rarely reached, and every per-invocation access to workgroup memory is
// dear; the row is therefore read with no atomics in the loop.

override WG: u32 = 256;    // invocations per workgroup: a power of two, at most BINS
override CAP: u32 = 1024;  // topk: candidates held in workgroup memory; a power of two, >= k and >= 4 * WG
override EPT: u32 = 64;    // batchtopk_hist: elements per invocation

const BINS: u32 = 2048u;
const NEG_INF_BITS: u32 = 0xff800000u;

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

// ---------------------------------------------------------------- topk
// One workgroup per row; the common path reads the row once:
// 1. Every invocation keeps the 4 best (key, index) of its strided share of the row in
//    registers (vec4 loads when n % 4 == 0). These 4 * WG entries are U.
// 2. t0: a lower bound of the row's k-th best key, from one or two 8-bit radix levels over
//    the lane maxima (slot 0 of U; WG >= k of them) or, for large k, over all of U.
// 3. Fast path (k <= WG / 4): the entries of U with key >= t0 are the candidates; rank them
//    by counting. If no invocation has its 4th entry among the first k, no element outside
//    U can be, and the first k are the answer.
// 4. Otherwise: gather every eligible element of the row with key >= t0 (radix levels over
//    the row, keys then indices, first narrow the bound when more than CAP qualify: many
//    equal values), then rank by counting (a few) or by bucketing and counting (many).
// Values are copied from x, not rebuilt from keys. Workgroup memory: about 27 KB.

struct TopkParams {
    rows: u32,
    n: u32,
    k: u32,
    has_mask: u32,  // 0: every latent eligible (the mask bindings are dummies)
    vec4: u32,      // 1: n % 4 == 0, read through tk_x4 / tk_mask4
    fast: u32,      // 1: try the single-pass path (k <= WG / 4)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> tp: TopkParams;
@group(0) @binding(1) var<storage, read> tk_x: array<f32>;              // (rows, n)
@group(0) @binding(2) var<storage, read> tk_x4: array<vec4<f32>>;       // (rows, n / 4), the same buffer, when vec4
@group(0) @binding(3) var<storage, read> tk_mask: array<u32>;           // (n), when has_mask
@group(0) @binding(4) var<storage, read> tk_mask4: array<vec4<u32>>;    // (n / 4), the same buffer, when has_mask and vec4
@group(0) @binding(5) var<storage, read_write> tk_idx: array<u32>;      // (rows, k)
@group(0) @binding(6) var<storage, read_write> tk_val: array<f32>;      // (rows, k)

override RANK_MAX: u32 = 256;  // topk: at most this many candidates (<= WG) ranked by counting

const RISK: u32 = 0x80000000u;  // candidate index flag: the 4th entry of its invocation

struct Sel {
    phi: u32,    // lower bound of the boundary bin: determined key bits, the rest 0
    plo: u32,    // ... and determined (lomask - index) bits
    mhi: u32,    // which key bits are determined
    mlo: u32,    // which index bits are determined
    need: u32,   // still to take from the elements matching the prefix
    above: u32,  // elements above the prefix range (all taken)
    cand: u32,   // elements at or above the lower bound
    done: u32,
}

var<workgroup> tk_hist: array<atomic<u32>, BINS>;
var<workgroup> tk_h256: array<atomic<u32>, 256>;
var<workgroup> tk_plain: array<u32, 256>;
var<workgroup> tk_part: array<u32, WG>;
var<workgroup> tk_sel: Sel;
var<workgroup> tk_count: atomic<u32>;
var<workgroup> tk_flag: atomic<u32>;
var<workgroup> tk_ukey: array<u32, CAP>;  // keys of U, slot s of invocation l at s * WG + l;
                                           // later candidate keys in bucket order
var<workgroup> tk_bidx: array<u32, CAP>;  // candidate indices in bucket order
var<workgroup> tk_ckey: array<u32, CAP>;  // candidates
var<workgroup> tk_cidx: array<u32, CAP>;
var<workgroup> tk_kmin: atomic<u32>;
var<workgroup> tk_kmax: atomic<u32>;

// The 4 best (key desc, index asc) seen by one invocation; key 0 = empty (no float maps
// to 0). Indices arrive in increasing order, so an equal key never displaces an entry.
struct Best4 {
    k0: u32,
    k1: u32,
    k2: u32,
    k3: u32,
    i0: u32,
    i1: u32,
    i2: u32,
    i3: u32,
}

fn best4_insert(l: Best4, key: u32, i: u32) -> Best4 {
    let g0 = key > l.k0;
    let g1 = key > l.k1;
    let g2 = key > l.k2;
    let g3 = key > l.k3;
    var r: Best4;
    r.k3 = select(l.k3, select(key, l.k2, g2), g3);
    r.i3 = select(l.i3, select(i, l.i2, g2), g3);
    r.k2 = select(l.k2, select(key, l.k1, g1), g2);
    r.i2 = select(l.i2, select(i, l.i1, g1), g2);
    r.k1 = select(l.k1, select(key, l.k0, g0), g1);
    r.i1 = select(l.i1, select(i, l.i0, g0), g1);
    r.k0 = select(l.k0, key, g0);
    r.i0 = select(l.i0, i, g0);
    return r;
}

// Key of element i of the row at base, 0 when it is not eligible.
fn tk_key(base: u32, i: u32) -> u32 {
    let key = key_of(tk_x[base + i]);
    if tp.has_mask != 0u && tk_mask[i] == 0u {
        return 0u;
    }
    return key;
}

// Sum the histogram in WG groups of BINS / WG bins (tk_part); call in uniform control flow.
fn tk_partial_sums(lid: u32) {
    let per = BINS / WG;
    var sum = 0u;
    for (var j = 0u; j < per; j++) {
        sum += atomicLoad(&tk_hist[lid * per + j]);
    }
    tk_part[lid] = sum;
    workgroupBarrier();
}

// Lane 0: the bin holding the need-th best of the histogrammed elements, from the top;
// returns (bin, count above it), or (BINS, total) when there are fewer than need.
fn tk_boundary(need: u32) -> vec2<u32> {
    let per = BINS / WG;
    var cum = 0u;
    var g = WG;
    while g > 0u && cum + tk_part[g - 1u] < need {
        cum += tk_part[g - 1u];
        g -= 1u;
    }
    if g == 0u {
        return vec2<u32>(BINS, cum);
    }
    var b = g * per - 1u;
    loop {
        let c = atomicLoad(&tk_hist[b]);
        if cum + c >= need {
            break;
        }
        cum += c;
        b -= 1u;
    }
    return vec2<u32>(b, cum);
}

// Rank of candidate e among the first c: how many are better (key desc, index asc).
fn tk_rank(e: u32, c: u32) -> u32 {
    let key = tk_ckey[e];
    let i = tk_cidx[e] & ~RISK;
    var rank = 0u;
    for (var f = 0u; f < c; f++) {
        let fk = tk_ckey[f];
        rank += select(0u, 1u, fk > key || (fk == key && (tk_cidx[f] & ~RISK) < i));
    }
    return rank;
}

@compute @workgroup_size(WG)
fn topk(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wid.x + wid.y * nwg.x;
    if row >= tp.rows {
        return;
    }
    let n = tp.n;
    let k = tp.k;
    let base = row * n;
    let out = row * k;
    let ib = max(32u - countLeadingZeros(n - 1u), 1u);
    let lomask = 0xffffffffu >> (32u - ib);
    let levels = 3u + (ib + 10u) / 11u;
    let neg_inf = bitcast<f32>(NEG_INF_BITS);

    // 1. The 4 best per invocation.
    var l = Best4(0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u);
    if tp.vec4 != 0u {
        let base4 = base / 4u;
        for (var j = lid; j < n / 4u; j += WG) {
            let v = tk_x4[base4 + j];
            var k4 = vec4<u32>(key_of(v.x), key_of(v.y), key_of(v.z), key_of(v.w));
            if tp.has_mask != 0u {
                k4 = select(k4, vec4<u32>(0u), tk_mask4[j] == vec4<u32>(0u));
            }
            l = best4_insert(l, k4.x, 4u * j);
            l = best4_insert(l, k4.y, 4u * j + 1u);
            l = best4_insert(l, k4.z, 4u * j + 2u);
            l = best4_insert(l, k4.w, 4u * j + 3u);
        }
    } else {
        for (var i = lid; i < n; i += WG) {
            l = best4_insert(l, tk_key(base, i), i);
        }
    }
    // Workgroup memory traffic is dear on lavapipe: write only the keys step 2 reads.
    tk_ukey[lid] = l.k0;
    if tp.fast == 0u {
        tk_ukey[WG + lid] = l.k1;
        tk_ukey[2u * WG + lid] = l.k2;
        tk_ukey[3u * WG + lid] = l.k3;
    }
    if lid == 0u {
        tk_sel = Sel(0u, 0u, 0u, 0u, k, 0u, 0u, 0u);
        atomicStore(&tk_count, 0u);
        atomicStore(&tk_flag, 0u);
    }

    // 2. t0 from two radix levels of 8 bits over the lane maxima (fast) or all of U: the
    //    lower edge of the bin holding the k-th best. The second level only when the first
    //    leaves many. (lavapipe runs a one-lane loop of atomics 8 lanes wide, so lane 0
    //    scans a plain copy of the bins.)
    let slots = select(4u, 1u, tp.fast != 0u);
    for (var level = 0u; level < 2u; level++) {
        let shift = 24u - 8u * level;
        for (var b = lid; b < 256u; b += WG) {
            atomicStore(&tk_h256[b], 0u);
        }
        let s = workgroupUniformLoad(&tk_sel);
        if s.done != 0u {
            break;
        }
        for (var e = 0u; e < slots; e++) {
            let key = tk_ukey[e * WG + lid];
            if key != 0u && (key & s.mhi) == s.phi {
                atomicAdd(&tk_h256[(key >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        for (var b = lid; b < 256u; b += WG) {
            tk_plain[b] = atomicLoad(&tk_h256[b]);
        }
        workgroupBarrier();
        if lid == 0u {
            var t = s;
            var cum = 0u;
            var b = 256u;
            while b > 0u && cum + tk_plain[b - 1u] < t.need {
                b -= 1u;
                cum += tk_plain[b];
            }
            if b == 0u {
                // Fewer than k entries (level 0 only): t0 = 0 takes every eligible element.
                t.done = 1u;
            } else {
                b -= 1u;
                t.phi |= b << shift;
                t.mhi |= 255u << shift;
                t.need -= cum;
                t.above += cum;
                if t.above + tk_plain[b] <= RANK_MAX / 2u {
                    t.done = 1u;
                }
            }
            tk_sel = t;
        }
    }
    let t0 = workgroupUniformLoad(&tk_sel).phi;

    // 3. Fast path: rank the entries of U with key >= t0.
    if tp.fast != 0u {
        // Slots are sorted, so the qualifying entries are the first cnt.
        let q = vec4<u32>(l.k0, l.k1, l.k2, l.k3);
        let cnt = dot(select(vec4<u32>(0u), vec4<u32>(1u), q != vec4<u32>(0u) & q >= vec4<u32>(t0)), vec4<u32>(1u));
        let off = atomicAdd(&tk_count, cnt);
        if cnt > 0u && off + cnt <= CAP {
            tk_ckey[off] = l.k0;
            tk_cidx[off] = l.i0;
            if cnt > 1u {
                tk_ckey[off + 1u] = l.k1;
                tk_cidx[off + 1u] = l.i1;
            }
            if cnt > 2u {
                tk_ckey[off + 2u] = l.k2;
                tk_cidx[off + 2u] = l.i2;
            }
            if cnt > 3u {
                tk_ckey[off + 3u] = l.k3;
                tk_cidx[off + 3u] = l.i3 | RISK;
            }
        }
        let c = workgroupUniformLoad(&tk_count);
        if c <= RANK_MAX {
            var rank = 0xffffffffu;
            if lid < c {
                rank = tk_rank(lid, c);
                if rank < k && (tk_cidx[lid] & RISK) != 0u {
                    atomicStore(&tk_flag, 1u);
                }
            }
            let risky = workgroupUniformLoad(&tk_flag);
            if risky == 0u {
                if rank < k {
                    let i = tk_cidx[lid] & ~RISK;
                    tk_idx[out + rank] = i;
                    tk_val[out + rank] = tk_x[base + i];
                }
                for (var j = c + lid; j < k; j += WG) {
                    tk_idx[out + j] = 0u;
                    tk_val[out + j] = neg_inf;
                }
                return;
            }
        }
        if lid == 0u {
            atomicStore(&tk_count, 0u);
        }
        workgroupBarrier();
    }

    // 4. Gather every eligible element of the row with key >= t0.
    for (var i = lid; i < n; i += WG) {
        let key = tk_key(base, i);
        if key != 0u && key >= t0 {
            let slot = atomicAdd(&tk_count, 1u);
            if slot < CAP {
                tk_ckey[slot] = key;
                tk_cidx[slot] = i;
            }
        }
    }
    var c = workgroupUniformLoad(&tk_count);
    if c > CAP {
        // Radix levels over the elements with key >= t0 until the candidates fit.
        if lid == 0u {
            tk_sel = Sel(0u, 0u, 0u, 0u, k, 0u, 0u, 0u);
        }
        var level = 0u;
        loop {
            let plan = digit_plan(level, ib);
            let dmask = (1u << plan.z) - 1u;
            for (var b = lid; b < BINS; b += WG) {
                atomicStore(&tk_hist[b], 0u);
            }
            let s = workgroupUniformLoad(&tk_sel);
            for (var i = lid; i < n; i += WG) {
                let hi = tk_key(base, i);
                let lo = lomask - i;
                if hi != 0u && hi >= t0 && (hi & s.mhi) == s.phi && (lo & s.mlo) == s.plo {
                    let w = select(hi, lo, plan.x == 1u);
                    atomicAdd(&tk_hist[(w >> plan.y) & dmask], 1u);
                }
            }
            workgroupBarrier();
            tk_partial_sums(lid);
            if lid == 0u {
                var t = s;
                // More than CAP >= k elements have key >= t0: the bin exists.
                let bc = tk_boundary(t.need);
                let b = bc.x;
                t.above += bc.y;
                t.need -= bc.y;
                t.cand = t.above + atomicLoad(&tk_hist[b]);
                if plan.x == 0u {
                    t.phi |= b << plan.y;
                    t.mhi |= dmask << plan.y;
                } else {
                    t.plo |= b << plan.y;
                    t.mlo |= dmask << plan.y;
                }
                // At the last level every bin holds at most one element, so cand <= k.
                if t.cand <= CAP || level + 1u >= levels {
                    t.done = 1u;
                }
                tk_sel = t;
                atomicStore(&tk_count, 0u);
            }
            let d = workgroupUniformLoad(&tk_sel.done);
            if d != 0u {
                break;
            }
            level += 1u;
        }
        let s = workgroupUniformLoad(&tk_sel);
        for (var i = lid; i < n; i += WG) {
            let hi = tk_key(base, i);
            let lo = lomask - i;
            if hi != 0u && hi >= t0 && (hi > s.phi || (hi == s.phi && lo >= s.plo)) {
                let slot = atomicAdd(&tk_count, 1u);
                if slot < CAP {
                    tk_ckey[slot] = hi;
                    tk_cidx[slot] = i;
                }
            }
        }
        c = min(workgroupUniformLoad(&tk_count), CAP);
    }

    // 5. Rank the c candidates; write the first k (and -inf fillers past c).
    for (var j = c + lid; j < k; j += WG) {
        tk_idx[out + j] = 0u;
        tk_val[out + j] = neg_inf;
    }
    if c <= RANK_MAX {
        if lid < c {
            let rank = tk_rank(lid, c);
            if rank < k {
                let i = tk_cidx[lid];
                tk_idx[out + rank] = i;
                tk_val[out + rank] = tk_x[base + i];
            }
        }
        return;
    }
    // Many candidates: a bitonic sort would take ~55 barrier-separated steps with four
    // workgroup-memory accesses per invocation each. Instead bucket them by key (256
    // buckets over [kmin, kmax]), place them bucket by bucket (best bucket first), and rank
    // each by counting within its bucket only.
    if lid == 0u {
        atomicStore(&tk_kmin, 0xffffffffu);
        atomicStore(&tk_kmax, 0u);
    }
    for (var b = lid; b < 256u; b += WG) {
        atomicStore(&tk_h256[b], 0u);
    }
    workgroupBarrier();
    for (var e = lid; e < c; e += WG) {
        atomicMin(&tk_kmin, tk_ckey[e]);
        atomicMax(&tk_kmax, tk_ckey[e]);
    }
    workgroupBarrier();
    if lid == 0u {
        tk_sel.phi = atomicLoad(&tk_kmin);
        tk_sel.plo = atomicLoad(&tk_kmax);
    }
    let range = workgroupUniformLoad(&tk_sel);
    let kmin = range.phi;
    let span_bits = 32u - countLeadingZeros(range.plo - kmin);
    let shift = max(span_bits, 8u) - 8u;  // (kmax - kmin) >> shift < 256
    for (var e = lid; e < c; e += WG) {
        atomicAdd(&tk_h256[(tk_ckey[e] - kmin) >> shift], 1u);
    }
    workgroupBarrier();
    if lid == 0u {
        // tk_plain[b]: candidates in better buckets; the counters restart as fill counts.
        var run = 0u;
        for (var b = 255i; b >= 0i; b--) {
            tk_plain[b] = run;
            run += atomicLoad(&tk_h256[b]);
            atomicStore(&tk_h256[b], 0u);
        }
    }
    workgroupBarrier();
    for (var e = lid; e < c; e += WG) {
        let key = tk_ckey[e];
        let b = (key - kmin) >> shift;
        let pos = tk_plain[b] + atomicAdd(&tk_h256[b], 1u);
        tk_ukey[pos] = key;
        tk_bidx[pos] = tk_cidx[e];
    }
    workgroupBarrier();
    for (var e = lid; e < c; e += WG) {
        let key = tk_ukey[e];
        let i = tk_bidx[e];
        let b = (key - kmin) >> shift;
        let lo = tk_plain[b];
        let hi = lo + atomicLoad(&tk_h256[b]);
        var rank = lo;
        for (var f = lo; f < hi; f++) {
            let fk = tk_ukey[f];
            rank += select(0u, 1u, fk > key || (fk == key && tk_bidx[f] < i));
        }
        if rank < k {
            tk_idx[out + rank] = i;
            tk_val[out + rank] = tk_x[base + i];
        }
    }
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
    let row = wid.x + wid.y * nwg.x;
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
    let g = wid.x + wid.y * nwg.x;
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
    let row = wid.x + wid.y * nwg.x;
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

// batchtopk_count: one workgroup per row; entries > T and == T, over the row's candidates
// (or the row of x after an overflow).
@group(0) @binding(1) var<storage, read> bn_x: array<f32>;                 // (rows, n)
@group(0) @binding(2) var<storage, read_write> bn_s: array<u32>;           // scratch

var<workgroup> bn_gt: atomic<u32>;
var<workgroup> bn_eq: atomic<u32>;

@compute @workgroup_size(WG)
fn batchtopk_count(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wid.x + wid.y * nwg.x;
    if row >= bp.rows {
        return;
    }
    if lid == 0u {
        atomicStore(&bn_gt, 0u);
        atomicStore(&bn_eq, 0u);
    }
    workgroupBarrier();
    let t = bn_s[ST + S_PHI];
    var gt = 0u;
    var eq = 0u;
    if bn_s[ST + S_OVER] == 0u {
        let off = b_ck0() + bn_s[b_off(bp.row0 + row)];
        let cnt = bn_s[b_cnt(bp.row0 + row)];
        for (var j = lid; j < cnt; j += WG) {
            let key = bn_s[off + j];
            gt += select(0u, 1u, key > t);
            eq += select(0u, 1u, key == t);
        }
    } else {
        let base = row * bp.n;
        for (var i = lid; i < bp.n; i += WG) {
            let key = key_of(bn_x[base + i]);
            gt += select(0u, 1u, key > t);
            eq += select(0u, 1u, key == t);
        }
    }
    if gt != 0u {
        atomicAdd(&bn_gt, gt);
    }
    if eq != 0u {
        atomicAdd(&bn_eq, eq);
    }
    workgroupBarrier();
    if lid == 0u {
        bn_s[b_gt(bp.row0 + row)] = atomicLoad(&bn_gt);
        bn_s[b_eq(bp.row0 + row)] = atomicLoad(&bn_eq);
    }
}

// batchtopk_count_rows: batchtopk_count with one invocation per row, for the lists
// (batchtopk_gather): a row's run is a few dozen candidates, too few for a workgroup. After
// an overflow the invocation reads the row of x itself (the rare path, serial).
@compute @workgroup_size(WG)
fn batchtopk_count_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(gid, nwg, WG);
    if row >= bp.rows {
        return;
    }
    let t = bn_s[ST + S_PHI];
    let r = bp.row0 + row;
    var gt = 0u;
    var eq = 0u;
    if bn_s[ST + S_OVER] == 0u {
        let off = b_ck0() + bn_s[b_off(r)];
        for (var j = 0u; j < bn_s[b_cnt(r)]; j++) {
            let key = bn_s[off + j];
            gt += select(0u, 1u, key > t);
            eq += select(0u, 1u, key == t);
        }
    } else {
        for (var i = 0u; i < bp.n; i++) {
            let key = key_of(bn_x[row * bp.n + i]);
            gt += select(0u, 1u, key > t);
            eq += select(0u, 1u, key == t);
        }
    }
    bn_s[b_gt(r)] = gt;
    bn_s[b_eq(r)] = eq;
}

// batchtopk_scan: one workgroup; ties taken per row (the first `need` in flat order),
// row_ptr as the exclusive prefix of (entries > T) + (ties taken), and the threshold.
@group(0) @binding(1) var<storage, read_write> bs_s: array<u32>;         // scratch
@group(0) @binding(2) var<storage, read_write> bs_row_ptr: array<u32>;   // (rows_all + 1)
@group(0) @binding(3) var<storage, read_write> bs_threshold: array<f32>; // (1)

var<workgroup> bs_part: array<u32, WG>;

@compute @workgroup_size(WG)
fn batchtopk_scan(@builtin(local_invocation_index) lid: u32) {
    let rows = bp.rows_all;
    let per = (rows + WG - 1u) / WG;
    let r0 = min(lid * per, rows);
    let r1 = min(r0 + per, rows);
    // Ties before each invocation's rows.
    var s = 0u;
    for (var r = r0; r < r1; r++) {
        s += bs_s[b_eq(r)];
    }
    bs_part[lid] = s;
    workgroupBarrier();
    if lid == 0u {
        var run = 0u;
        for (var j = 0u; j < WG; j++) {
            let v = bs_part[j];
            bs_part[j] = run;
            run += v;
        }
    }
    workgroupBarrier();
    let need = bs_s[ST + S_NEED];
    var before = bs_part[lid];
    var sel = 0u;
    for (var r = r0; r < r1; r++) {
        let eq = bs_s[b_eq(r)];
        let take = min(eq, need - min(need, before));
        before += eq;
        bs_s[b_eq(r)] = take;
        sel += bs_s[b_gt(r)] + take;
    }
    workgroupBarrier();
    bs_part[lid] = sel;
    workgroupBarrier();
    if lid == 0u {
        var run = 0u;
        for (var j = 0u; j < WG; j++) {
            let v = bs_part[j];
            bs_part[j] = run;
            run += v;
        }
        bs_row_ptr[rows] = run;
        bs_threshold[0] = value_of(bs_s[ST + S_PHI]);
    }
    workgroupBarrier();
    var run = bs_part[lid];
    for (var r = r0; r < r1; r++) {
        bs_row_ptr[r] = run;
        run += bs_s[b_gt(r)] + bs_s[b_eq(r)];
    }
}

// batchtopk_scatter: one workgroup per row, over the row's candidates (or the row of x
// after an overflow), both in ascending latent order; each invocation owns a contiguous run, so
// writing runs in invocation order writes the row in ascending latent order.
@group(0) @binding(1) var<storage, read> bw_x: array<f32>;                // (rows, n)
@group(0) @binding(2) var<storage, read> bw_s: array<u32>;                // scratch
@group(0) @binding(3) var<storage, read> bw_row_ptr: array<u32>;          // (rows_all + 1)
@group(0) @binding(4) var<storage, read_write> bw_idx: array<u32>;        // (k_total)
@group(0) @binding(5) var<storage, read_write> bw_val: array<f32>;        // (k_total)

var<workgroup> bw_gt: array<u32, WG>;
var<workgroup> bw_eq: array<u32, WG>;

// (key, latent) of the j-th entry of the row's sequence: candidates, or x when over.
fn bw_entry(row: u32, off: u32, j: u32, over: bool) -> vec2<u32> {
    if !over {
        return vec2<u32>(bw_s[b_ck0() + off + j], bw_s[b_ci0() + off + j]);
    }
    return vec2<u32>(key_of(bw_x[row * bp.n + j]), j);
}

// Writes the entries range.x .. range.y of the row's sequence with key > t, and the first
// `ties` with key == t, to idx / val from slot pos on.
fn bw_write(row: u32, off: u32, range: vec2<u32>, over: bool, t: u32, pos0: u32, ties0: u32) {
    var pos = pos0;
    var ties = ties0;
    for (var j = range.x; j < range.y; j++) {
        let e = bw_entry(row, off, j, over);
        if e.x > t || (e.x == t && ties > 0u) {
            if e.x == t {
                ties -= 1u;
            }
            bw_idx[pos] = e.y;
            bw_val[pos] = bw_x[row * bp.n + e.y];
            pos += 1u;
        }
    }
}

@compute @workgroup_size(WG)
fn batchtopk_scatter(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wid.x + wid.y * nwg.x;
    if row >= bp.rows {
        return;
    }
    let over = bw_s[ST + S_OVER] != 0u;
    let t = bw_s[ST + S_PHI];
    let off = bw_s[b_off(bp.row0 + row)];
    let len = select(bw_s[b_cnt(bp.row0 + row)], bp.n, over);
    let seg = (len + WG - 1u) / WG;
    let i0 = min(lid * seg, len);
    let i1 = min(i0 + seg, len);
    var gt = 0u;
    var eq = 0u;
    for (var j = i0; j < i1; j++) {
        let key = bw_entry(row, off, j, over).x;
        gt += select(0u, 1u, key > t);
        eq += select(0u, 1u, key == t);
    }
    bw_gt[lid] = gt;
    bw_eq[lid] = eq;
    workgroupBarrier();
    if lid == 0u {
        // bw_gt[j] becomes invocation j's first output slot, bw_eq[j] its ties taken.
        var ties_left = bw_s[b_eq(bp.row0 + row)];
        var pos = bw_row_ptr[bp.row0 + row];
        for (var j = 0u; j < WG; j++) {
            let take = min(bw_eq[j], ties_left);
            ties_left -= take;
            let g = bw_gt[j];
            bw_gt[j] = pos;
            bw_eq[j] = take;
            pos += g + take;
        }
    }
    workgroupBarrier();
    if gt + eq == 0u {
        return;
    }
    bw_write(row, off, vec2<u32>(i0, i1), over, t, bw_gt[lid], bw_eq[lid]);
}

// batchtopk_scatter_rows: batchtopk_scatter with one invocation per row (see
// batchtopk_count_rows): the row's entries > T and its first ties taken, in latent order.
@compute @workgroup_size(WG)
fn batchtopk_scatter_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(gid, nwg, WG);
    if row >= bp.rows {
        return;
    }
    let over = bw_s[ST + S_OVER] != 0u;
    let t = bw_s[ST + S_PHI];
    let r = bp.row0 + row;
    let off = bw_s[b_off(r)];
    let len = select(bw_s[b_cnt(r)], bp.n, over);
    bw_write(row, off, vec2<u32>(0u, len), over, t, bw_row_ptr[r], bw_s[b_eq(r)]);
}
