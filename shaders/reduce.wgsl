// Reductions, training-step metrics and the elementwise parts of the loss.
// Launchers: src/kernels/reduce.rs. CPU twins: src/reference/reduce.rs.
//
// Determinism: no float atomics. Every float sum has an order fixed by the shapes and the
// override constants alone. A producer invocation adds its own elements in index order and
// writes that partial to a fixed place in a scratch buffer (no barriers in producers);
// `finish_partials`, one workgroup, adds the partials in a fixed two-level tree and adds the
// total to a metrics slot. Counts are u32; u32 atomics are used only for per-latent fire
// counts, whose result does not depend on the order of the additions.
//
// Layouts: elementwise kernels use a 1-D grid folded into the per-dimension limit
// (linear_index). Column kernels run one invocation per column; the row-blocked ones take
// RB rows per invocation (grid: x = column groups of WG, y = row blocks), so that lanes of a
// workgroup read consecutive addresses of one row.

struct Params {
    rows: u32,    // rows of the (rows, cols) operand
    cols: u32,    // columns (d or n)
    len: u32,     // elements covered by a 1-D kernel
    flag: u32,    // col_sum: accumulate; mse_backward: has sst
    scale: f32,   // gradient scale
    u0: u32,      // update_dead / dead_mask: dead_after
    nparts: u32,  // partials per value in the scratch buffer (stride between values);
                  // col_sum_finish: the row blocks
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256;  // invocations per workgroup (all kernels but finish_partials)
override RB: u32 = 32;   // rows per invocation in the row-blocked column kernels

const U32_MAX: u32 = 0xffffffffu;

fn add_sat(a: u32, b: u32) -> u32 {
    return select(a + b, U32_MAX, a > U32_MAX - b);
}

// ---------------------------------------------------------------- sub_row
// out[r, j] = x[r, j] - b[j]
@group(0) @binding(1) var<storage, read> sr_x: array<f32>;          // (rows, d)
@group(0) @binding(2) var<storage, read> sr_b: array<f32>;          // (d)
@group(0) @binding(3) var<storage, read_write> sr_out: array<f32>;  // (rows, d)

@compute @workgroup_size(WG)
fn sub_row(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    sr_out[i] = sr_x[i] - sr_b[i % p.cols];
}

// sub_row with vec4s (d % 4 == 0): a quarter of the invocations and of the integer
// remainders, which lavapipe computes one lane at a time.
@group(0) @binding(1) var<storage, read> sr4_x: array<vec4<f32>>;          // (rows, d / 4)
@group(0) @binding(2) var<storage, read> sr4_b: array<vec4<f32>>;          // (d / 4)
@group(0) @binding(3) var<storage, read_write> sr4_out: array<vec4<f32>>;  // (rows, d / 4)

@compute @workgroup_size(WG)
fn sub_row_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len / 4u { return; }
    sr4_out[i] = sr4_x[i] - sr4_b[i % (p.cols / 4u)];
}

// ---------------------------------------------------------------- sub
// out = a - b
@group(0) @binding(1) var<storage, read> sb_a: array<f32>;          // (len)
@group(0) @binding(2) var<storage, read> sb_b: array<f32>;          // (len)
@group(0) @binding(3) var<storage, read_write> sb_out: array<f32>;  // (len)

@compute @workgroup_size(WG)
fn sub(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    sb_out[i] = sb_a[i] - sb_b[i];
}

// sub with vec4s (len % 4 == 0).
@group(0) @binding(1) var<storage, read> sb4_a: array<vec4<f32>>;          // (len / 4)
@group(0) @binding(2) var<storage, read> sb4_b: array<vec4<f32>>;          // (len / 4)
@group(0) @binding(3) var<storage, read_write> sb4_out: array<vec4<f32>>;  // (len / 4)

@compute @workgroup_size(WG)
fn sub_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len / 4u { return; }
    sb4_out[i] = sb4_a[i] - sb4_b[i];
}

// ---------------------------------------------------------------- col_sum
// out[j] = (flag ? out[j] : 0) + s_j, where s_j adds column j's blocks of RB rows: each
// block's rows in order (from 0), then the blocks' sums in order (from 0), the order of
// src/reference/reduce.rs col_sum. Two dispatches, so that the row blocks run in parallel
// (one invocation per column walking every row left a d = 512 column sum one workgroup):
// col_sum_part, row-blocked: invocation (j, rb) writes rows rb*RB.. of column j's sum to
// part[rb * cols + j]; col_sum_finish: one invocation per column adds its p.nparts block
// sums. The _vec4 entries take four columns at once (cols % 4 == 0), each component summed
// in the same order, so they equal the scalar entries bit for bit.
@group(0) @binding(1) var<storage, read> cp_a: array<f32>;             // (rows, cols)
@group(0) @binding(2) var<storage, read_write> cp_part: array<f32>;    // (row blocks, cols)

@compute @workgroup_size(WG)
fn col_sum_part(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let rb = gid.y;
    if j >= p.cols { return; }
    let r1 = min(rb * RB + RB, p.rows);
    var s = 0.0;
    for (var r = rb * RB; r < r1; r++) {
        s += cp_a[r * p.cols + j];
    }
    cp_part[rb * p.cols + j] = s;
}

@group(0) @binding(1) var<storage, read> cp4_a: array<vec4<f32>>;           // (rows, cols / 4)
@group(0) @binding(2) var<storage, read_write> cp4_part: array<vec4<f32>>;  // (row blocks, cols / 4)

@compute @workgroup_size(WG)
fn col_sum_part_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let rb = gid.y;
    let c4 = p.cols / 4u;
    if j >= c4 { return; }
    let r1 = min(rb * RB + RB, p.rows);
    var s = vec4<f32>(0.0);
    for (var r = rb * RB; r < r1; r++) {
        s += cp4_a[r * c4 + j];
    }
    cp4_part[rb * c4 + j] = s;
}

@group(0) @binding(1) var<storage, read> cf_part: array<f32>;          // (nparts, cols)
@group(0) @binding(2) var<storage, read_write> cf_out: array<f32>;     // (cols)

@compute @workgroup_size(WG)
fn col_sum_finish(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg, WG);
    if j >= p.cols { return; }
    var s = 0.0;
    for (var b = 0u; b < p.nparts; b++) {
        s += cf_part[b * p.cols + j];
    }
    if p.flag != 0u {
        cf_out[j] = cf_out[j] + s;
    } else {
        cf_out[j] = s;
    }
}

@group(0) @binding(1) var<storage, read> cf4_part: array<vec4<f32>>;          // (nparts, cols / 4)
@group(0) @binding(2) var<storage, read_write> cf4_out: array<vec4<f32>>;     // (cols / 4)

@compute @workgroup_size(WG)
fn col_sum_finish_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg, WG);
    let c4 = p.cols / 4u;
    if j >= c4 { return; }
    var s = vec4<f32>(0.0);
    for (var b = 0u; b < p.nparts; b++) {
        s += cf4_part[b * c4 + j];
    }
    if p.flag != 0u {
        cf4_out[j] = cf4_out[j] + s;
    } else {
        cf4_out[j] = s;
    }
}

// ---------------------------------------------------------------- mse_backward
// grad = scale * (pred - target); partials of sum (pred - target)^2 and, with flag, of
// sum (target - mean)^2 where mean[j] = colsum[j] / rows. Row-blocked: invocation (j, rb)
// covers rows rb*RB .. rb*RB+RB of column j and writes partial rb * cols + j.
@group(0) @binding(1) var<storage, read> mb_target: array<f32>;      // (rows, d)
@group(0) @binding(2) var<storage, read> mb_pred: array<f32>;        // (rows, d)
@group(0) @binding(3) var<storage, read> mb_colsum: array<f32>;      // (d) column sums of target (read with flag)
@group(0) @binding(4) var<storage, read_write> mb_grad: array<f32>;  // (rows, d)
@group(0) @binding(5) var<storage, read_write> mb_parts: array<u32>; // (2, nparts) f32 bits: sse, sst

@compute @workgroup_size(WG)
fn mse_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let rb = gid.y;
    if j >= p.cols { return; }
    var mean = 0.0;
    if p.flag != 0u {
        mean = mb_colsum[j] / f32(p.rows);
    }
    let r1 = min(rb * RB + RB, p.rows);
    var sse = 0.0;
    var sst = 0.0;
    for (var r = rb * RB; r < r1; r++) {
        let i = r * p.cols + j;
        let t = mb_target[i];
        let e = mb_pred[i] - t;
        mb_grad[i] = p.scale * e;
        sse += e * e;
        let c = t - mean;
        sst += c * c;
    }
    let part = rb * p.cols + j;
    mb_parts[part] = bitcast<u32>(sse);
    mb_parts[p.nparts + part] = bitcast<u32>(sst);
}

// ---------------------------------------------------------------- sum_sq_centred
// mse_backward's sst partials alone: invocation (j, rb) sums (target - mean[j])^2 over rows
// rb*RB .. rb*RB+RB of column j (same order) and writes partial rb * cols + j.
@group(0) @binding(1) var<storage, read> sq_target: array<f32>;      // (rows, d)
@group(0) @binding(2) var<storage, read> sq_colsum: array<f32>;      // (d) column sums of target
@group(0) @binding(3) var<storage, read_write> sq_parts: array<u32>; // (nparts) f32 bits

@compute @workgroup_size(WG)
fn sum_sq_centred(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let rb = gid.y;
    if j >= p.cols { return; }
    let mean = sq_colsum[j] / f32(p.rows);
    let r1 = min(rb * RB + RB, p.rows);
    var sst = 0.0;
    for (var r = rb * RB; r < r1; r++) {
        let c = sq_target[r * p.cols + j] - mean;
        sst += c * c;
    }
    sq_parts[rb * p.cols + j] = bitcast<u32>(sst);
}

// ---------------------------------------------------------------- row_norms
// norms[i] = sqrt(sum over k in order of w[i, k]^2); one invocation per row.
@group(0) @binding(1) var<storage, read> rn_w: array<f32>;              // (n, d)
@group(0) @binding(2) var<storage, read_write> rn_norms: array<f32>;    // (n)

@compute @workgroup_size(WG)
fn row_norms(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.rows { return; }
    let base = i * p.cols;
    var s = 0.0;
    for (var k = 0u; k < p.cols; k++) {
        let v = rn_w[base + k];
        s += v * v;
    }
    rn_norms[i] = sqrt(s);
}

// row_norms_vec4: the same for d % 4 == 0, with vec4 loads and the same sequential order.
@group(0) @binding(1) var<storage, read> rn4_w: array<vec4<f32>>;       // (n, d / 4)
@group(0) @binding(2) var<storage, read_write> rn4_norms: array<f32>;   // (n)

@compute @workgroup_size(WG)
fn row_norms_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.rows { return; }
    let d4 = p.cols / 4u;
    let base = i * d4;
    var s = 0.0;
    for (var k = 0u; k < d4; k++) {
        let v = rn4_w[base + k];
        s += v.x * v.x;
        s += v.y * v.y;
        s += v.z * v.z;
        s += v.w * v.w;
    }
    rn4_norms[i] = sqrt(s);
}

// ---------------------------------------------------------------- sparse_stats
// One invocation per run of SS_RUN consecutive code slots: for each slot s < min(nnz, cap)
// of the run (in order) with val[s] > 0 and idx[s] < n, count 1, l1 += val[s] * norms[idx[s]],
// fired[idx[s]] += 1. Partials: (count, l1) of run g at g. (One partial per slot made
// finish_partials, a single workgroup, sum ~2 cap values: 25 ms a call on lavapipe at
// cap 262144.)
const SS_RUN: u32 = 32u;

@group(0) @binding(1) var<storage, read> ss_row_ptr: array<u32>;          // (rows + 1)
@group(0) @binding(2) var<storage, read> ss_idx: array<u32>;              // (cap)
@group(0) @binding(3) var<storage, read> ss_val: array<f32>;              // (cap)
@group(0) @binding(4) var<storage, read> ss_norms: array<f32>;           // (n)
@group(0) @binding(5) var<storage, read_write> ss_fired: array<atomic<u32>>; // (n)
@group(0) @binding(6) var<storage, read_write> ss_parts: array<u32>;      // (2, nparts) count, f32 bits of l1

@compute @workgroup_size(WG)
fn sparse_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = linear_index(gid, nwg, WG);
    if g >= p.nparts { return; }
    let nnz = min(ss_row_ptr[p.rows], p.len);
    var count = 0u;
    var l1 = 0.0;
    let s1 = min(g * SS_RUN + SS_RUN, nnz);
    for (var s = g * SS_RUN; s < s1; s++) {
        let v = ss_val[s];
        let i = ss_idx[s];
        if v > 0.0 && i < p.cols {
            count += 1u;
            l1 += v * ss_norms[i];
            atomicAdd(&ss_fired[i], 1u);
        }
    }
    ss_parts[g] = count;
    ss_parts[p.nparts + g] = bitcast<u32>(l1);
}

// ---------------------------------------------------------------- dense_stats
// Row-blocked over columns: invocation (j, rb) counts z[r, j] > 0 over its rows, sums
// z * norms[j] over them, adds the count to fired[j] and writes partial rb * n + j.
@group(0) @binding(1) var<storage, read> ds_z: array<f32>;                // (rows, n)
@group(0) @binding(2) var<storage, read> ds_norms: array<f32>;           // (n)
@group(0) @binding(3) var<storage, read_write> ds_fired: array<atomic<u32>>; // (n)
@group(0) @binding(4) var<storage, read_write> ds_parts: array<u32>;      // (2, nparts) count, f32 bits of l1

@compute @workgroup_size(WG)
fn dense_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let rb = gid.y;
    if j >= p.cols { return; }
    let nj = ds_norms[j];
    let r1 = min(rb * RB + RB, p.rows);
    var count = 0u;
    var l1 = 0.0;
    for (var r = rb * RB; r < r1; r++) {
        let v = ds_z[r * p.cols + j];
        if v > 0.0 {
            count += 1u;
            l1 += v * nj;
        }
    }
    if count > 0u {
        atomicAdd(&ds_fired[j], count);
    }
    let part = rb * p.cols + j;
    ds_parts[part] = count;
    ds_parts[p.nparts + part] = bitcast<u32>(l1);
}

// ---------------------------------------------------------------- update_dead
// total += fired (saturating); since = fired > 0 ? 0 : since + rows (saturating); fired = 0;
// partial i = (since >= dead_after), counted by finish_partials into DEAD.
@group(0) @binding(1) var<storage, read_write> ud_fired: array<u32>;  // (n)
@group(0) @binding(2) var<storage, read_write> ud_since: array<u32>;  // (n)
@group(0) @binding(3) var<storage, read_write> ud_total: array<u32>;  // (n)
@group(0) @binding(4) var<storage, read_write> ud_parts: array<u32>;  // (1, nparts = n) dead flags

@compute @workgroup_size(WG)
fn update_dead(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    let f = ud_fired[i];
    ud_total[i] = add_sat(ud_total[i], f);
    let since = select(add_sat(ud_since[i], p.rows), 0u, f > 0u);
    ud_since[i] = since;
    ud_fired[i] = 0u;
    ud_parts[i] = select(0u, 1u, since >= p.u0);
}

// ---------------------------------------------------------------- dead_mask
// mask[i] = since[i] >= dead_after
@group(0) @binding(1) var<storage, read> dm_since: array<u32>;        // (n)
@group(0) @binding(2) var<storage, read_write> dm_mask: array<u32>;   // (n)

@compute @workgroup_size(WG)
fn dead_mask(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    dm_mask[i] = select(0u, 1u, dm_since[i] >= p.u0);
}

// ---------------------------------------------------------------- l1_backward
// dz[r, i] += scale * norms[i] where z[r, i] > 0. Row-blocked over latents: invocation
// (i, rb) computes scale * norms[i] once and walks its RB rows (a select, not a branch, so
// every element is stored back, unchanged where z <= 0).
@group(0) @binding(1) var<storage, read> lb_z: array<f32>;            // (rows, n)
@group(0) @binding(2) var<storage, read> lb_norms: array<f32>;        // (n)
@group(0) @binding(3) var<storage, read_write> lb_dz: array<f32>;     // (rows, n)

@compute @workgroup_size(WG)
fn l1_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let rb = gid.y;
    if j >= p.cols { return; }
    let c = p.scale * lb_norms[j];
    let r1 = min(rb * RB + RB, p.rows);
    for (var r = rb * RB; r < r1; r++) {
        let k = r * p.cols + j;
        let g = lb_dz[k];
        lb_dz[k] = select(g, g + c, lb_z[k] > 0.0);
    }
}

// ---------------------------------------------------------------- l1_decoder_grad
// dw_dec[i, k] += (scale * zsum[i] / norms[i]) * w_dec[i, k], leaving rows with
// norms[i] == 0 unchanged. Invocation (k, rb) walks rows rb*RB .. +RB of column k; the
// per-row factor is the same for every lane (uniform loads).
@group(0) @binding(1) var<storage, read> lg_zsum: array<f32>;         // (n)
@group(0) @binding(2) var<storage, read> lg_w: array<f32>;            // (n, d)
@group(0) @binding(3) var<storage, read> lg_norms: array<f32>;        // (n)
@group(0) @binding(4) var<storage, read_write> lg_dw: array<f32>;     // (n, d)

@compute @workgroup_size(WG)
fn l1_decoder_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    let rb = gid.y;
    if k >= p.cols { return; }
    let r1 = min(rb * RB + RB, p.rows);
    for (var i = rb * RB; i < r1; i++) {
        let nr = lg_norms[i];
        let ok = nr != 0.0;
        let c = p.scale * lg_zsum[i] / select(1.0, nr, ok);
        let e = i * p.cols + k;
        let old = lg_dw[e];
        lg_dw[e] = select(old, old + c * lg_w[e], ok);
    }
}

// ---------------------------------------------------------------- finish_partials
// One workgroup adds nparts partials of up to 4 values, in a fixed order that depends on
// nothing but nparts: invocation t adds partials t, t + 256, ... in order; 16 invocations
// add 16 of those each in order; invocation 0 adds the 16 in order. A value is either a u32
// count or the bits of an f32 (bit v of `counts`). The total goes to metrics[slots[v]]:
// overwritten (bit v of `overwrite`) or added.
struct FinishParams {
    nparts: u32,
    nvals: u32,        // 1 ..= 4
    counts: u32,       // bit v: value v is a u32 count
    overwrite: u32,    // bit v: metrics[slots[v]] = total, else += total
    slots: vec4<u32>,
}

@group(0) @binding(0) var<uniform> fp: FinishParams;
@group(0) @binding(1) var<storage, read> fin_parts: array<u32>;        // (nvals, nparts)
@group(0) @binding(2) var<storage, read_write> fin_metrics: array<f32>; // (METRIC_SLOTS)

const FIN_WG: u32 = 256u;
const FIN_FAN: u32 = 16u;  // FIN_FAN * FIN_FAN == FIN_WG
var<workgroup> fin_a: array<vec4<u32>, 256>;
var<workgroup> fin_b: array<vec4<u32>, 16>;

fn fin_add(acc: u32, x: u32, count: bool) -> u32 {
    if count {
        return acc + x;
    }
    return bitcast<u32>(bitcast<f32>(acc) + bitcast<f32>(x));
}

fn is_count(v: u32) -> bool {
    return ((fp.counts >> v) & 1u) != 0u;
}

@compute @workgroup_size(256)
fn finish_partials(@builtin(local_invocation_index) t: u32) {
    // 0u is both the u32 count 0 and the bits of 0.0f.
    var acc = vec4<u32>(0u);
    for (var v = 0u; v < fp.nvals; v++) {
        let count = is_count(v);
        var a = 0u;
        for (var k = t; k < fp.nparts; k += FIN_WG) {
            a = fin_add(a, fin_parts[v * fp.nparts + k], count);
        }
        acc[v] = a;
    }
    fin_a[t] = acc;
    workgroupBarrier();
    if t < FIN_FAN {
        var b = vec4<u32>(0u);
        for (var v = 0u; v < fp.nvals; v++) {
            let count = is_count(v);
            var a = 0u;
            for (var m = 0u; m < FIN_FAN; m++) {
                a = fin_add(a, fin_a[t * FIN_FAN + m][v], count);
            }
            b[v] = a;
        }
        fin_b[t] = b;
    }
    workgroupBarrier();
    if t == 0u {
        for (var v = 0u; v < fp.nvals; v++) {
            let count = is_count(v);
            var a = 0u;
            for (var m = 0u; m < FIN_FAN; m++) {
                a = fin_add(a, fin_b[m][v], count);
            }
            let total = select(bitcast<f32>(a), f32(a), count);
            let s = fp.slots[v];
            if ((fp.overwrite >> v) & 1u) != 0u {
                fin_metrics[s] = total;
            } else {
                fin_metrics[s] = fin_metrics[s] + total;
            }
        }
    }
}
