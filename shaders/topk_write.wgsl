// Batch top-k, second part (concatenated after topk.wgsl by `shader!("topk", "topk_write")`,
// sharing its params, layout helpers and constants): the exact count per row at the found
// threshold, the scan into row pointers, and the write of the selected entries.

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
    let row = group_index(wid, nwg);
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

// batchtopk_scan's invocation 0: bs_part (WG) becomes its exclusive prefix sums, in order;
// returns the total.
fn bs_scan_parts() -> u32 {
    var run = 0u;
    for (var j = 0u; j < WG; j++) {
        let v = bs_part[j];
        bs_part[j] = run;
        run += v;
    }
    return run;
}

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
        bs_scan_parts();
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
        bs_row_ptr[rows] = bs_scan_parts();
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
    let row = group_index(wid, nwg);
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
