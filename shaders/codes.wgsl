// Sparse codes straight from the dense pre-activations: the k largest positive entries of
// each row (TopK after ReLU, AuxK over the dead latents) as CSR with latents ascending within
// a row and no zero entries; the entries a ReLU or JumpReLU keeps (compact_*); and the list
// of dead latents.
// One module in three files, concatenated after the prelude in this order (the `shader!`
// macro): this one (Params, block_max, csr_scan / csr_pack, dead_list, BatchTopK's bound,
// csr_rows), codes_topk.wgsl (the row top-k's stages) and codes_compact.wgsl (ReLU /
// JumpReLU codes).
// Launchers: src/kernels/codes/. CPU twins: src/reference/codes.rs.
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
