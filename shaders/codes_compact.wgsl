// The codes a ReLU or JumpReLU activation keeps, part of the codes module
// (shaders/codes.wgsl: its Params and block_max; sr_count / sg_scan in codes_topk.wgsl).
// Launchers: src/kernels/codes/compaction.rs. CPU twins: src/reference/codes.rs.

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

// The positions of block j of row r, or an empty range when bmax says the block keeps none
// (or j is past the row's blocks).
fn cp_block(r: u32, j: u32) -> vec2<u32> {
    if j < p.nb && cp_bmax[r * p.nb + j] >= 0x80000000u {
        return vec2<u32>(j * p.block, min(j * p.block + p.block, p.n));
    }
    return vec2<u32>(0u, 0u);
}

// How many entries of block j of row r the activation keeps.
fn cp_block_count(r: u32, j: u32) -> u32 {
    let q = cp_block(r, j);
    var c = 0u;
    for (var i = q.x; i < q.y; i++) {
        c += select(0u, 1u, cp_keep(r, i).x != 0.0);
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
        let q = cp_block(r, j);
        for (var i = q.x; i < q.y; i++) {
            let kv = cp_keep(r, i);
            s = cw_put(s, kv.x != 0.0, i, kv.y, cp_x[r * p.n + i]);
        }
        s0 += round;
        // sr_above is rewritten by the next round.
        workgroupBarrier();
    }
}
