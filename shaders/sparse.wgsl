// Sparse codes: the kernels that make an SAE step cheap after the encoder. Everything
// touches only the active (row, latent) pairs of a CSR code:
//   row_ptr (rows + 1) u32, idx (cap) u32, val (cap) f32; nnz = row_ptr[rows] <= cap,
//   row_ptr[0] == 0, idx[s] < n; slots s >= nnz are ignored (never read as codes).
// The gradients of W_dec, W_enc and b_enc are gathers over a per-latent (transposed) index
// built here on the device, so there are no float atomics and every result is identical run
// to run; every sum (gathers, decode, dot) runs in the CPU twin's order, so on lavapipe the
// results are bit-identical to the reference.
// One module in two files: this one (the storage-buffer entry points, which hardware GPUs
// run) and sparse_texture.wgsl (the texture entry points software adapters run).
// Launchers: src/kernels/sparse/. CPU twins: src/reference/sparse.rs.
//
// Layout notes:
// - decode / dw_dec: one workgroup per (row or latent, chunk of WG columns), lanes over d
//   (as vec4 when d % 4 == 0): the code entries (idx, val, lat_row, lat_slot) are read at
//   workgroup-uniform addresses (scalar loads on GPUs that prove uniformity) and the rows of
//   w_dec / dy contiguously; the launcher narrows WG when d is small;
// - dot: one invocation per slot, looping over d with vec4 loads; consecutive slots share a
//   row and so read the same dy row;
// - dw_enc (d, n) puts latents on the fastest lane axis so its stores are coalesced, each
//   lane summing 4 vec4 (or 4 scalar) columns so one pass over a latent's entries feeds 16
//   (or 4) accumulators;
// - the only barriers are the two in the single-workgroup scan.
// On lavapipe (Mesa 22.3) every storage-buffer load and store is a per-lane scalar loop,
// uniform address or not, so time there tracks the elements moved (measured: the
// workgroup-uniform decode and a plain 1-D one take the same time); these kernels are within
// about 2x of that floor (the dense dw_dec / dw_enc writes, the w_dec rows read).

struct Params {
    rows: u32,
    n: u32,
    d: u32,      // columns of w_dec / dy / xc
    dv: u32,     // d / 4 (vec4 entry points; 0 otherwise)
    cap: u32,    // slots in idx / val / g / lat_row / lat_slot
    flag: u32,   // sparse_decode: 1 when b_dec is bound; gathers: 1 to accumulate
    _pad0: u32,
    _pad3: u32,
    scale: f32,  // sparse_l1_backward: L1 coefficient / rows; JumpReLU: L0 coefficient / rows
    eps: f32,    // JumpReLU bandwidth
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 64;        // invocations per workgroup (1-D kernels; column chunk of decode / dw_dec)
override WG_SCAN: u32 = 256;  // the single workgroup of build_transpose_scan

// Used by every entry point whose binding 1 is row_ptr.
@group(0) @binding(1) var<storage, read> csr_row_ptr: array<u32>; // (rows + 1)

// The first slot of invocation lid of workgroup wid in a 1-D launch of `per` slots per
// invocation up to the capacity, of which the first `nnz` hold entries: the workgroups of
// those spread over the grid (see spread_group in the prelude).
fn spread_slot(lid: u32, wid: vec3<u32>, nwg: vec3<u32>, nnz: u32, per: u32) -> u32 {
    let busy = (nnz + per * WG - 1u) / (per * WG);
    return per * (spread_group(group_index(wid, nwg), busy, nwg.x * nwg.y) * WG + lid);
}

// Row of slot s < nnz: the largest b with row_ptr[b] <= s (empty rows are skipped because
// their row_ptr equals the next one).
fn row_of_slot(s: u32) -> u32 {
    var lo = 0u;
    var hi = p.rows;
    while lo < hi {
        let mid = (lo + hi + 1u) / 2u;
        if csr_row_ptr[mid] <= s {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}

// ---------------------------------------------------------------- sparse_decode
// x_hat[b, :] = (b_dec or 0) + sum over s in row_ptr[b]..row_ptr[b+1] (ascending) of
//               val[s] * w_dec[idx[s], :]
// One workgroup per (row, chunk of WG columns or vec4s of columns); the row comes from the
// workgroup id, so row_ptr / idx / val are read at workgroup-uniform addresses.

@group(0) @binding(1) var<storage, read> dc_row_ptr: array<u32>;        // (rows + 1)
@group(0) @binding(2) var<storage, read> dc_idx: array<u32>;            // (cap)
@group(0) @binding(3) var<storage, read> dc_val: array<f32>;            // (cap)
@group(0) @binding(4) var<storage, read> dc_w_dec: array<f32>;          // (n, d)
@group(0) @binding(5) var<storage, read> dc_b_dec: array<f32>;          // (d); unread when flag == 0
@group(0) @binding(6) var<storage, read_write> dc_x_hat: array<f32>;    // (rows, d)

@compute @workgroup_size(WG)
fn sparse_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunks = (p.d + WG - 1u) / WG;
    let g = group_index(wid, nwg);
    let b = g / chunks;
    let j = (g - b * chunks) * WG + lid;
    if b >= p.rows || j >= p.d { return; }
    var acc = 0.0;
    if p.flag != 0u { acc = dc_b_dec[j]; }
    let s1 = dc_row_ptr[b + 1u];
    for (var s = dc_row_ptr[b]; s < s1; s++) {
        acc += dc_val[s] * dc_w_dec[dc_idx[s] * p.d + j];
    }
    dc_x_hat[b * p.d + j] = acc;
}

@group(0) @binding(4) var<storage, read> dc4_w_dec: array<vec4<f32>>;       // (n, d / 4)
@group(0) @binding(5) var<storage, read> dc4_b_dec: array<vec4<f32>>;       // (d / 4); unread when flag == 0
@group(0) @binding(6) var<storage, read_write> dc4_x_hat: array<vec4<f32>>; // (rows, d / 4)

@compute @workgroup_size(WG)
fn sparse_decode_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunks = (p.dv + WG - 1u) / WG;
    let g = group_index(wid, nwg);
    let b = g / chunks;
    let j = (g - b * chunks) * WG + lid;
    if b >= p.rows || j >= p.dv { return; }
    var acc = vec4<f32>(0.0);
    if p.flag != 0u { acc = dc4_b_dec[j]; }
    let s1 = dc_row_ptr[b + 1u];
    for (var s = dc_row_ptr[b]; s < s1; s++) {
        acc += dc_val[s] * dc4_w_dec[dc_idx[s] * p.dv + j];
    }
    dc4_x_hat[b * p.dv + j] = acc;
}

// ---------------------------------------------------------------- sparse_dot
// g[s] = dy[row(s), :] . w_dec[idx[s], :] (ascending columns) for s < nnz;
// g[s] = 0 for nnz <= s < cap.
// One invocation per slot; lanes of one row share the dy row (uniform loads).

@group(0) @binding(2) var<storage, read> sd_idx: array<u32>;            // (cap)
@group(0) @binding(3) var<storage, read> sd_dy: array<f32>;             // (rows, d)
@group(0) @binding(4) var<storage, read> sd_w_dec: array<f32>;          // (n, d)
@group(0) @binding(5) var<storage, read_write> sd_g: array<f32>;        // (cap)

@compute @workgroup_size(WG)
fn sparse_dot(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = spread_slot(lid, wid, nwg, csr_row_ptr[p.rows], 1u);
    if s >= p.cap { return; }
    if s >= csr_row_ptr[p.rows] {
        sd_g[s] = 0.0;
        return;
    }
    let y0 = row_of_slot(s) * p.d;
    let w0 = sd_idx[s] * p.d;
    var acc = 0.0;
    for (var j = 0u; j < p.d; j++) {
        acc += sd_dy[y0 + j] * sd_w_dec[w0 + j];
    }
    sd_g[s] = acc;
}

@group(0) @binding(3) var<storage, read> sd4_dy: array<vec4<f32>>;     // (rows, d / 4)
@group(0) @binding(4) var<storage, read> sd4_w_dec: array<vec4<f32>>;  // (n, d / 4)

@compute @workgroup_size(WG)
fn sparse_dot_vec4(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = spread_slot(lid, wid, nwg, csr_row_ptr[p.rows], 1u);
    if s >= p.cap { return; }
    if s >= csr_row_ptr[p.rows] {
        sd_g[s] = 0.0;
        return;
    }
    let y0 = row_of_slot(s) * p.dv;
    let w0 = sd_idx[s] * p.dv;
    // vec4 loads, but one running sum over ascending columns (the reference's order).
    var acc = 0.0;
    for (var j = 0u; j < p.dv; j++) {
        let y = sd4_dy[y0 + j];
        let w = sd4_w_dec[w0 + j];
        acc += y.x * w.x;
        acc += y.y * w.y;
        acc += y.z * w.z;
        acc += y.w * w.w;
    }
    sd_g[s] = acc;
}

// ---------------------------------------------------------------- build_transpose
// The per-latent lists: lat_ptr (n + 1) = exclusive prefix sums of per-latent counts, and for
// latent i the entries lat_ptr[i]..lat_ptr[i+1] of lat_row / lat_slot list the (row, slot)
// pairs with idx[slot] == i in ascending slot order; entries nnz..cap are set to 0. Needs
// each row to list a latent at most once (true of every code the step makes: top-k,
// batch top-k and the activation compaction), so that ascending slots are ascending rows.
// Scratch: marks (2 G n + cap) u32, G = ceil(rows / 32) groups of 32 rows: mask[g n + i]
// (bit b: row 32 g + b lists latent i), then before[g n + i] (latent i's entries in the
// groups before g), then row_of[s] (the row of slot s, found once). A clear and four
// dispatches, every one linear in its items, positions independent of thread timing (the
// atomics only set bits; each row_of[s] has one writer):
//   (clear)  mask = 0                                    (the launcher: clear_buffer)
//   mark     mask[g(r) n + idx[s]] |= bit(r) for s < nnz, r = row of s (a binary search
//            over row_ptr), row_of[s] = r
//   prefix   per latent (per 4 latents in _vec4): before[g n + i] = popcounts of mask[0..g],
//            lat_ptr[i + 1] = all
//   scan     lat_ptr[1..=n] = inclusive scan of itself, lat_ptr[0] = 0 (final)
//   place    r = row_of[s], pos = lat_ptr[i] + before[g n + i] + popcount(mask[g n + i]
//            below bit(r));
//            lat_row[pos] = r, lat_slot[pos] = s; entries >= nnz get 0 in both
// (It replaced a scatter whose order within a latent a rank pass then fixed with O(m^2)
// compares for a latent of m entries: a dense latent, one on every row, cost rows^2.)
// mark and place take their slots in grid order, unlike the other slot kernels
// (spread_slot): spread over lavapipe's two threads, their atomics and scattered writes
// contended for the same cache lines, and a relu step's mark + place took 58-60 ms on
// lavapipe against 47-52 ms with one thread doing them.

fn transpose_groups() -> u32 {
    return (p.rows + 31u) / 32u;
}

@group(0) @binding(2) var<storage, read> bm_idx: array<u32>;                 // (cap)
@group(0) @binding(3) var<storage, read_write> bm_marks: array<atomic<u32>>; // (2 G n + cap)

@compute @workgroup_size(WG)
fn build_transpose_mark(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = linear_index(gid, nwg, WG);
    if s >= min(csr_row_ptr[p.rows], p.cap) { return; }
    let r = row_of_slot(s);
    let cells = transpose_groups() * p.n;
    atomicOr(&bm_marks[(r / 32u) * p.n + bm_idx[s]], 1u << (r & 31u));
    atomicStore(&bm_marks[2u * cells + s], r);
}

@group(0) @binding(1) var<storage, read_write> bp_marks: array<u32>;    // (2 G n + cap)
@group(0) @binding(2) var<storage, read_write> bp_lat_ptr: array<u32>;  // (n + 1)

@compute @workgroup_size(WG)
fn build_transpose_prefix(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.n { return; }
    let groups = transpose_groups();
    let cells = groups * p.n;
    var run = 0u;
    for (var g = 0u; g < groups; g++) {
        let c = g * p.n + i;
        bp_marks[cells + c] = run;
        run += countOneBits(bp_marks[c]);
    }
    bp_lat_ptr[i + 1u] = run;
}

@group(0) @binding(1) var<storage, read_write> bp4_marks: array<vec4<u32>>;  // ((2 G n + cap) / 4)
@group(0) @binding(2) var<storage, read_write> bp4_lat_ptr: array<u32>;      // (n + 1)

// build_transpose_prefix for latents 4q .. 4q + 4 (n % 4 == 0): a quarter of the loads and
// stores, which a software adapter runs one lane at a time.
@compute @workgroup_size(WG)
fn build_transpose_prefix_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = linear_index(gid, nwg, WG);
    let nq = p.n / 4u;
    if q >= nq { return; }
    let groups = transpose_groups();
    let cells = groups * nq;
    var run = vec4<u32>(0u);
    for (var g = 0u; g < groups; g++) {
        let c = g * nq + q;
        bp4_marks[cells + c] = run;
        run += countOneBits(bp4_marks[c]);
    }
    let i = 4u * q;
    bp4_lat_ptr[i + 1u] = run.x;
    bp4_lat_ptr[i + 2u] = run.y;
    bp4_lat_ptr[i + 3u] = run.z;
    bp4_lat_ptr[i + 4u] = run.w;
}

@group(0) @binding(1) var<storage, read_write> bs_lat_ptr: array<u32>;  // (n + 1)
var<workgroup> bs_sums: array<u32, WG_SCAN>;

// One workgroup: lane l owns the contiguous chunk l of the n counts; sum the chunk, scan the
// WG_SCAN chunk sums serially in lane 0 (two barriers in all), rewrite the chunk.
@compute @workgroup_size(WG_SCAN)
fn build_transpose_scan(@builtin(local_invocation_index) l: u32) {
    let chunk = (p.n + WG_SCAN - 1u) / WG_SCAN;
    let lo = min(l * chunk, p.n);
    let hi = min(lo + chunk, p.n);
    var sum = 0u;
    for (var i = lo; i < hi; i++) {
        sum += bs_lat_ptr[i + 1u];
    }
    bs_sums[l] = sum;
    workgroupBarrier();
    if l == 0u {
        var run = 0u;
        for (var c = 0u; c < WG_SCAN; c++) {
            let v = bs_sums[c];
            bs_sums[c] = run;
            run += v;
        }
        bs_lat_ptr[0] = 0u;
    }
    workgroupBarrier();
    var run = bs_sums[l];
    for (var i = lo; i < hi; i++) {
        run += bs_lat_ptr[i + 1u];
        bs_lat_ptr[i + 1u] = run;
    }
}

@group(0) @binding(2) var<storage, read> bl_idx: array<u32>;             // (cap)
@group(0) @binding(3) var<storage, read> bl_marks: array<u32>;           // (2 G n + cap)
@group(0) @binding(4) var<storage, read> bl_lat_ptr: array<u32>;         // (n + 1)
@group(0) @binding(5) var<storage, read_write> bl_lat_row: array<u32>;   // (cap)
@group(0) @binding(6) var<storage, read_write> bl_lat_slot: array<u32>;  // (cap)

@compute @workgroup_size(WG)
fn build_transpose_place(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = linear_index(gid, nwg, WG);
    if s >= p.cap { return; }
    if s >= csr_row_ptr[p.rows] {
        bl_lat_row[s] = 0u;
        bl_lat_slot[s] = 0u;
        return;
    }
    let cells = transpose_groups() * p.n;
    let r = bl_marks[2u * cells + s];
    let i = bl_idx[s];
    let c = (r / 32u) * p.n + i;
    let below = bl_marks[c] & ((1u << (r & 31u)) - 1u);
    let pos = bl_lat_ptr[i] + bl_marks[cells + c] + countOneBits(below);
    bl_lat_row[pos] = r;
    bl_lat_slot[pos] = s;
}

// ---------------------------------------------------------------- gather_dw_dec
// dw_dec[i, :] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of
//                val[lat_slot[e]] * dy[lat_row[e], :]
// With flag (accumulate): dw_dec[i, :] = dw_dec[i, :] + that sum, for latents with entries
// only (the same for the other two gathers).
// One workgroup per (latent, chunk of WG columns or vec4s of columns); the latent comes from
// the workgroup id, so lat_ptr / lat_row / lat_slot / val are read at uniform addresses.

@group(0) @binding(1) var<storage, read> gd_lat_ptr: array<u32>;         // (n + 1)
@group(0) @binding(2) var<storage, read> gd_lat_row: array<u32>;         // (cap)
@group(0) @binding(3) var<storage, read> gd_lat_slot: array<u32>;        // (cap)
@group(0) @binding(4) var<storage, read> gd_val: array<f32>;             // (cap)
@group(0) @binding(5) var<storage, read> gd_dy: array<f32>;              // (rows, d)
@group(0) @binding(6) var<storage, read_write> gd_dw_dec: array<f32>;    // (n, d)

@compute @workgroup_size(WG)
fn gather_dw_dec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunks = (p.d + WG - 1u) / WG;
    let g = group_index(wid, nwg);
    let i = g / chunks;
    let j = (g - i * chunks) * WG + lid;
    if i >= p.n || j >= p.d { return; }
    var acc = 0.0;
    let a = gd_lat_ptr[i];
    let z = gd_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    for (var e = a; e < z; e++) {
        acc += gd_val[gd_lat_slot[e]] * gd_dy[gd_lat_row[e] * p.d + j];
    }
    if p.flag != 0u { acc = gd_dw_dec[i * p.d + j] + acc; }
    gd_dw_dec[i * p.d + j] = acc;
}

@group(0) @binding(5) var<storage, read> gd4_dy: array<vec4<f32>>;            // (rows, d / 4)
@group(0) @binding(6) var<storage, read_write> gd4_dw_dec: array<vec4<f32>>;  // (n, d / 4)

@compute @workgroup_size(WG)
fn gather_dw_dec_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunks = (p.dv + WG - 1u) / WG;
    let g = group_index(wid, nwg);
    let i = g / chunks;
    let j = (g - i * chunks) * WG + lid;
    if i >= p.n || j >= p.dv { return; }
    var acc = vec4<f32>(0.0);
    let a = gd_lat_ptr[i];
    let z = gd_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    for (var e = a; e < z; e++) {
        acc += gd_val[gd_lat_slot[e]] * gd4_dy[gd_lat_row[e] * p.dv + j];
    }
    if p.flag != 0u { acc = gd4_dw_dec[i * p.dv + j] + acc; }
    gd4_dw_dec[i * p.dv + j] = acc;
}

// ---------------------------------------------------------------- gather_dw_enc
// dw_enc[:, i] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of
//                dval[lat_slot[e]] * xc[lat_row[e], :]            dw_enc: (d, n)
// One invocation per (block of columns, latent), latents fastest so that each of the lane's
// stores (dw_enc[j, i] for its columns j) is coalesced over the lanes' consecutive i.
// A block is 4 columns (scalar) or 4 vec4s = 16 columns (vec4); loads past the last column
// are clamped to it (valid addresses, results dropped) so the entry loop has no branches.

@group(0) @binding(1) var<storage, read> ge_lat_ptr: array<u32>;         // (n + 1)
@group(0) @binding(2) var<storage, read> ge_lat_row: array<u32>;         // (cap)
@group(0) @binding(3) var<storage, read> ge_lat_slot: array<u32>;        // (cap)
@group(0) @binding(4) var<storage, read> ge_dval: array<f32>;            // (cap)
@group(0) @binding(5) var<storage, read> ge_xc: array<f32>;              // (rows, d)
@group(0) @binding(6) var<storage, read_write> ge_dw_enc: array<f32>;    // (d, n)

@compute @workgroup_size(WG)
fn gather_dw_enc(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    let blocks = (p.d + 3u) / 4u;
    if t >= p.n * blocks { return; }
    let jb = t / p.n;
    let i = t - jb * p.n;
    let j0 = jb * 4u;
    let last = p.d - 1u;
    let c1 = min(j0 + 1u, last);
    let c2 = min(j0 + 2u, last);
    let c3 = min(j0 + 3u, last);
    var acc = vec4<f32>(0.0);
    let a = ge_lat_ptr[i];
    let z = ge_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    for (var e = a; e < z; e++) {
        let g = ge_dval[ge_lat_slot[e]];
        let x0 = ge_lat_row[e] * p.d;
        acc += g * vec4<f32>(ge_xc[x0 + j0], ge_xc[x0 + c1], ge_xc[x0 + c2], ge_xc[x0 + c3]);
    }
    ge_store(j0, i, acc.x);
    if j0 + 1u < p.d { ge_store(j0 + 1u, i, acc.y); }
    if j0 + 2u < p.d { ge_store(j0 + 2u, i, acc.z); }
    if j0 + 3u < p.d { ge_store(j0 + 3u, i, acc.w); }
}

// dw_enc[j, i] = v, or dw_enc[j, i] + v when accumulating.
fn ge_store(j: u32, i: u32, v: f32) {
    let o = j * p.n + i;
    if p.flag != 0u {
        ge_dw_enc[o] = ge_dw_enc[o] + v;
    } else {
        ge_dw_enc[o] = v;
    }
}

@group(0) @binding(5) var<storage, read> ge4_xc: array<vec4<f32>>;      // (rows, d / 4)

fn ge4_store(j4: u32, i: u32, v: vec4<f32>) {
    ge_store(j4 * 4u, i, v.x);
    ge_store(j4 * 4u + 1u, i, v.y);
    ge_store(j4 * 4u + 2u, i, v.z);
    ge_store(j4 * 4u + 3u, i, v.w);
}

@compute @workgroup_size(WG)
fn gather_dw_enc_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    let blocks = (p.dv + 3u) / 4u;
    if t >= p.n * blocks { return; }
    let jb = t / p.n;
    let i = t - jb * p.n;
    let j0 = jb * 4u;
    let last = p.dv - 1u;
    let c1 = min(j0 + 1u, last);
    let c2 = min(j0 + 2u, last);
    let c3 = min(j0 + 3u, last);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    let a = ge_lat_ptr[i];
    let z = ge_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    for (var e = a; e < z; e++) {
        let g = ge_dval[ge_lat_slot[e]];
        let x0 = ge_lat_row[e] * p.dv;
        a0 += g * ge4_xc[x0 + j0];
        a1 += g * ge4_xc[x0 + c1];
        a2 += g * ge4_xc[x0 + c2];
        a3 += g * ge4_xc[x0 + c3];
    }
    ge4_store(j0, i, a0);
    if j0 + 1u < p.dv { ge4_store(j0 + 1u, i, a1); }
    if j0 + 2u < p.dv { ge4_store(j0 + 2u, i, a2); }
    if j0 + 3u < p.dv { ge4_store(j0 + 3u, i, a3); }
}

// ---------------------------------------------------------------- gather_db_enc
// db_enc[i] = sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) of dval[lat_slot[e]]

@group(0) @binding(1) var<storage, read> gb_lat_ptr: array<u32>;         // (n + 1)
@group(0) @binding(2) var<storage, read> gb_lat_slot: array<u32>;        // (cap)
@group(0) @binding(3) var<storage, read> gb_dval: array<f32>;            // (cap)
@group(0) @binding(4) var<storage, read_write> gb_db_enc: array<f32>;    // (n)

@compute @workgroup_size(WG)
fn gather_db_enc(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.n { return; }
    var acc = 0.0;
    let a = gb_lat_ptr[i];
    let z = gb_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    for (var e = a; e < z; e++) {
        acc += gb_dval[gb_lat_slot[e]];
    }
    if p.flag != 0u { acc = gb_db_enc[i] + acc; }
    gb_db_enc[i] = acc;
}

// ---------------------------------------------------------------- sparse_l1_backward
// g[s] += scale * norms[idx[s]] for s < nnz with val[s] > 0 (the L1 penalty's gradient at
// the active entries, as l1_backward does on a dense dz).

@group(0) @binding(2) var<storage, read> sl1_idx: array<u32>;          // (cap)
@group(0) @binding(3) var<storage, read> sl1_val: array<f32>;          // (cap)
@group(0) @binding(4) var<storage, read> sl1_norms: array<f32>;        // (n)
@group(0) @binding(5) var<storage, read_write> sl1_g: array<f32>;      // (cap)

@compute @workgroup_size(WG)
fn sparse_l1_backward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = spread_slot(lid, wid, nwg, csr_row_ptr[p.rows], 1u);
    if s >= min(csr_row_ptr[p.rows], p.cap) { return; }
    if sl1_val[s] > 0.0 {
        sl1_g[s] = sl1_g[s] + p.scale * sl1_norms[sl1_idx[s]];
    }
}

// ---------------------------------------------------------------- sparse_jumprelu_backward
// dval[s] = g[s] * [pre[s] > theta_i], theta_i = exp(log_theta[idx[s]]), for s < nnz
// (jumprelu_backward's dpre at the code's entries); dval[s] = 0 for nnz <= s < cap.

@group(0) @binding(2) var<storage, read> sjb_idx: array<u32>;          // (cap)
@group(0) @binding(3) var<storage, read> sjb_pre: array<f32>;          // (cap)
@group(0) @binding(4) var<storage, read> sjb_g: array<f32>;            // (cap)
@group(0) @binding(5) var<storage, read> sjb_log_theta: array<f32>;    // (n)
@group(0) @binding(6) var<storage, read_write> sjb_dval: array<f32>;   // (cap)

@compute @workgroup_size(WG)
fn sparse_jumprelu_backward(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s = spread_slot(lid, wid, nwg, csr_row_ptr[p.rows], 1u);
    if s >= p.cap { return; }
    if s >= csr_row_ptr[p.rows] {
        sjb_dval[s] = 0.0;
        return;
    }
    let theta = exp(sjb_log_theta[sjb_idx[s]]);
    sjb_dval[s] = select(0.0, sjb_g[s], sjb_pre[s] > theta);
}

// ---------------------------------------------------------------- gather_jumprelu_threshold
// dlog_theta[i] = theta * (sum over e in lat_ptr[i]..lat_ptr[i+1] (ascending) with
//   |pre - theta| <= eps / 2 of g * (-theta / eps) + l0_scale * (-1 / eps)),
// pre = pre[lat_slot[e]], g = g[lat_slot[e]], theta = exp(log_theta[i]): jumprelu_backward's
// threshold gradient, from the code's entries (a code that holds every entry in the window).

@group(0) @binding(1) var<storage, read> gj_lat_ptr: array<u32>;       // (n + 1)
@group(0) @binding(2) var<storage, read> gj_lat_slot: array<u32>;      // (cap)
@group(0) @binding(3) var<storage, read> gj_pre: array<f32>;           // (cap)
@group(0) @binding(4) var<storage, read> gj_g: array<f32>;             // (cap)
@group(0) @binding(5) var<storage, read> gj_log_theta: array<f32>;     // (n)
@group(0) @binding(6) var<storage, read_write> gj_out: array<f32>;     // (n)

@compute @workgroup_size(WG)
fn gather_jumprelu_threshold(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.n { return; }
    let theta = exp(gj_log_theta[i]);
    let a = -theta / p.eps;
    let b = p.scale * (-1.0 / p.eps);
    let half = 0.5 * p.eps;
    var acc = 0.0;
    let z = gj_lat_ptr[i + 1u];
    for (var e = gj_lat_ptr[i]; e < z; e++) {
        let s = gj_lat_slot[e];
        let v = gj_pre[s];
        // acc never holds -0.0, so adding +0.0 outside the window leaves it unchanged.
        acc += select(0.0, gj_g[s] * a + b, abs(v - theta) <= half);
    }
    gj_out[i] = theta * acc;
}
