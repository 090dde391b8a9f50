// The texture entry points of the sparse module (shaders/sparse.wgsl: its Params, bindings
// and helpers): what software adapters run. Launchers: src/kernels/sparse/. CPU twins:
// src/reference/sparse.rs.

// ---------------------------------------------------------------- texture entry points
// Software adapters (lavapipe): the rows that the sparse kernels gather (w_dec's for the
// decode and the dot products, dy's and xc's for the gradients) read from rgba32float
// storage textures laid out like the buffers (texel (c, r) = elements 4c .. 4c + 4 of row r),
// a branch-free gather there where a storage-buffer load is a per-lane loop; and each
// invocation takes 4 texels (16 columns) so that the code entries it reads (idx / val,
// lat_row / lat_slot / val) serve 4x more multiply-adds. Same sums, same order as the
// buffer entry points. Needs d % 16 == 0; dq = d / 16.

@group(0) @binding(4) var dx_w: texture_storage_2d<rgba32float, read>;       // w_dec: (n, d / 4) texels
@group(0) @binding(5) var<storage, read> dx_b: array<vec4<f32>>;             // (d / 4); unread when flag == 0
@group(0) @binding(6) var<storage, read_write> dx_x_hat: array<vec4<f32>>;   // (rows, d / 4)

// sparse_decode over (row, 16-column chunk) invocations.
@compute @workgroup_size(WG)
fn sparse_decode_tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    let dq = p.dv / 4u;
    if t >= p.rows * dq { return; }
    let b = t / dq;
    let c = (t - b * dq) * 4u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    if p.flag != 0u {
        a0 = dx_b[c];
        a1 = dx_b[c + 1u];
        a2 = dx_b[c + 2u];
        a3 = dx_b[c + 3u];
    }
    let s1 = dc_row_ptr[b + 1u];
    for (var s = dc_row_ptr[b]; s < s1; s++) {
        let i = dc_idx[s];
        let v = dc_val[s];
        a0 += v * textureLoad(dx_w, vec2<u32>(c, i));
        a1 += v * textureLoad(dx_w, vec2<u32>(c + 1u, i));
        a2 += v * textureLoad(dx_w, vec2<u32>(c + 2u, i));
        a3 += v * textureLoad(dx_w, vec2<u32>(c + 3u, i));
    }
    let o = b * p.dv + c;
    dx_x_hat[o] = a0;
    dx_x_hat[o + 1u] = a1;
    dx_x_hat[o + 2u] = a2;
    dx_x_hat[o + 3u] = a3;
}

@group(0) @binding(3) var dt_dy: texture_storage_2d<rgba32float, read>;      // dy: (rows, d / 4) texels
@group(0) @binding(4) var dt_w: texture_storage_2d<rgba32float, read>;       // w_dec: (n, d / 4) texels

// sparse_dot over 4 consecutive slots per invocation. When the 4 are entries of one row
// (a row holds k entries) or of two consecutive rows (batchtopk's rows hold any number, so
// about one quad in ten straddles a row boundary), one loop over the columns serves the
// 4 dot products: the two rows' dy texels are loaded once each for the 4, 1.5 texel loads
// per 4 multiply-adds where one slot per invocation took 2, and the row is searched once;
// otherwise each slot on its own. One loop for both cases keeps a subgroup's lanes
// together: with a loop for one row only, a straddling quad ran the slot-by-slot path, and
// with most subgroups holding one, batchtopk's calls took 55 GPU ms per step on lavapipe
// against topk's 19. Every slot's sum runs over the columns in ascending order, as
// sparse_dot_vec4 (same bits).
@compute @workgroup_size(WG)
fn sparse_dot_tex(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let s0 = spread_slot(lid, wid, nwg, csr_row_ptr[p.rows], 4u);
    if s0 >= p.cap { return; }
    let s1 = min(s0 + 4u, p.cap);
    let e = min(s1, csr_row_ptr[p.rows]);  // slots s0 .. e hold entries
    for (var s = max(s0, e); s < s1; s++) {
        sd_g[s] = 0.0;
    }
    if s0 >= e { return; }
    var r = row_of_slot(s0);
    let b = csr_row_ptr[r + 1u]; // slots from b on are the next row's
    // (b < e: r + 1 < rows, so row_ptr[r + 2] exists)
    if e == s0 + 4u && (b >= e || csr_row_ptr[r + 2u] >= e) {
        let rb = select(r + 1u, r, b >= e);
        let i0 = sd_idx[s0];
        let i1 = sd_idx[s0 + 1u];
        let i2 = sd_idx[s0 + 2u];
        let i3 = sd_idx[s0 + 3u];
        let next = vec4<bool>(s0 >= b, s0 + 1u >= b, s0 + 2u >= b, s0 + 3u >= b);
        var a = vec4<f32>(0.0);
        for (var j = 0u; j < p.dv; j++) {
            let ya = textureLoad(dt_dy, vec2<u32>(j, r));
            let yb = textureLoad(dt_dy, vec2<u32>(j, rb));
            a.x = sd_tex_dot(a.x, select(ya, yb, next.x), textureLoad(dt_w, vec2<u32>(j, i0)));
            a.y = sd_tex_dot(a.y, select(ya, yb, next.y), textureLoad(dt_w, vec2<u32>(j, i1)));
            a.z = sd_tex_dot(a.z, select(ya, yb, next.z), textureLoad(dt_w, vec2<u32>(j, i2)));
            a.w = sd_tex_dot(a.w, select(ya, yb, next.w), textureLoad(dt_w, vec2<u32>(j, i3)));
        }
        sd_g[s0] = a.x;
        sd_g[s0 + 1u] = a.y;
        sd_g[s0 + 2u] = a.z;
        sd_g[s0 + 3u] = a.w;
        return;
    }
    for (var s = s0; s < e; s++) {
        while csr_row_ptr[r + 1u] <= s {
            r++;
        }
        let i = sd_idx[s];
        var acc = 0.0;
        for (var j = 0u; j < p.dv; j++) {
            acc = sd_tex_dot(acc, textureLoad(dt_dy, vec2<u32>(j, r)), textureLoad(dt_w, vec2<u32>(j, i)));
        }
        sd_g[s] = acc;
    }
}

// acc + y . w, one component at a time (x, y, z, w: the columns' order).
fn sd_tex_dot(acc: f32, y: vec4<f32>, w: vec4<f32>) -> f32 {
    var a = acc;
    a += y.x * w.x;
    a += y.y * w.y;
    a += y.z * w.z;
    a += y.w * w.w;
    return a;
}

@group(0) @binding(5) var gt_dy: texture_storage_2d<rgba32float, read>;      // dy: (rows, d / 4) texels
@group(0) @binding(6) var<storage, read_write> gt_dw_dec: array<vec4<f32>>;  // (n, d / 4)

// gather_dw_dec over (latent, 16-column chunk) invocations.
@compute @workgroup_size(WG)
fn gather_dw_dec_tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    let dq = p.dv / 4u;
    if t >= p.n * dq { return; }
    let i = t / dq;
    let c = (t - i * dq) * 4u;
    let a = gd_lat_ptr[i];
    let z = gd_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var e = a; e < z; e++) {
        let v = gd_val[gd_lat_slot[e]];
        let r = gd_lat_row[e];
        a0 += v * textureLoad(gt_dy, vec2<u32>(c, r));
        a1 += v * textureLoad(gt_dy, vec2<u32>(c + 1u, r));
        a2 += v * textureLoad(gt_dy, vec2<u32>(c + 2u, r));
        a3 += v * textureLoad(gt_dy, vec2<u32>(c + 3u, r));
    }
    let o = i * p.dv + c;
    if p.flag != 0u {
        a0 = gt_dw_dec[o] + a0;
        a1 = gt_dw_dec[o + 1u] + a1;
        a2 = gt_dw_dec[o + 2u] + a2;
        a3 = gt_dw_dec[o + 3u] + a3;
    }
    gt_dw_dec[o] = a0;
    gt_dw_dec[o + 1u] = a1;
    gt_dw_dec[o + 2u] = a2;
    gt_dw_dec[o + 3u] = a3;
}

@group(0) @binding(5) var et_xc: texture_storage_2d<rgba32float, read>;      // xc: (rows, d / 4) texels

// gather_dw_enc over (latent, 16-column block) invocations, columns fastest (every block is
// whole since d % 16 == 0): the lanes of a subgroup share one latent, so its entry loop has
// one trip count and its index loads one address; with latents fastest (as the vec4 entry
// point, whose stores coalesce on hardware) each lane looped over its own latent's entries
// and the subgroup ran the longest of them (lavapipe, topk step at batch 4096: 181 -> 141
// CPU ms for the step's calls). The stores are strided either way there.
@compute @workgroup_size(WG)
fn gather_dw_enc_tex(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    let dq = p.dv / 4u;
    if t >= p.n * dq { return; }
    let i = t / dq;
    let c = (t - i * dq) * 4u;
    let a = ge_lat_ptr[i];
    let z = ge_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var e = a; e < z; e++) {
        let g = ge_dval[ge_lat_slot[e]];
        let r = ge_lat_row[e];
        a0 += g * textureLoad(et_xc, vec2<u32>(c, r));
        a1 += g * textureLoad(et_xc, vec2<u32>(c + 1u, r));
        a2 += g * textureLoad(et_xc, vec2<u32>(c + 2u, r));
        a3 += g * textureLoad(et_xc, vec2<u32>(c + 3u, r));
    }
    ge4_store(c, i, a0);
    ge4_store(c + 1u, i, a1);
    ge4_store(c + 2u, i, a2);
    ge4_store(c + 3u, i, a3);
}

@group(0) @binding(6) var<storage, read_write> ge4o_dw_enc: array<vec4<f32>>;  // (d, n / 4)

// One latent's sums for 16 columns (texel columns c .. c + 4) of gather_dw_enc_tex.
struct Cols16 {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
}

fn ge_latent16(i: u32, c: u32) -> Cols16 {
    var r = Cols16(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    let z = ge_lat_ptr[i + 1u];
    for (var e = ge_lat_ptr[i]; e < z; e++) {
        let g = ge_dval[ge_lat_slot[e]];
        let row = ge_lat_row[e];
        r.a0 += g * textureLoad(et_xc, vec2<u32>(c, row));
        r.a1 += g * textureLoad(et_xc, vec2<u32>(c + 1u, row));
        r.a2 += g * textureLoad(et_xc, vec2<u32>(c + 2u, row));
        r.a3 += g * textureLoad(et_xc, vec2<u32>(c + 3u, row));
    }
    return r;
}

// dw_enc[row, 4 iq .. 4 iq + 4] = v, or + v when accumulating (only where `has`: the
// latents with entries keep their value bit for bit otherwise).
fn ge4o_put(row: u32, iq: u32, v: vec4<f32>, has: vec4<bool>) {
    let o = row * (p.n / 4u) + iq;
    if p.flag != 0u {
        let old = ge4o_dw_enc[o];
        ge4o_dw_enc[o] = select(old, old + v, has);
    } else {
        ge4o_dw_enc[o] = v;
    }
}

// gather_dw_enc_tex over (latent quad, 16-column block) invocations (n % 4 == 0): each
// invocation sums four latents' 16 columns in the same order as gather_dw_enc_tex (same
// bits) and stores them as 16 vec4s along the latents, where gather_dw_enc_tex stores 16
// scalars per latent, 64 strided stores for the same four. A workgroup takes 4 consecutive
// quads (16 latents: one 64-byte line of each dW_enc row it writes) x WG / 4 column blocks,
// columns fastest (the lanes of a subgroup share a quad, so one trip count): every line is
// written by one workgroup. With 2 quads x 32 blocks per workgroup, each line was written
// half by one workgroup and half by the next (lavapipe, batchtopk step at batch 4096: the
// stores took 45 of the kernel's 74 ms; 61-69 ms with this shape, README).
@compute @workgroup_size(WG)
fn gather_dw_enc_tex4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    let dq = p.dv / 4u;
    let bw = WG / 4u;
    let nb = (dq + bw - 1u) / bw;
    let w = t / WG;
    let l = t - w * WG;
    let qg = w / nb;
    let iq = 4u * qg + l / bw;
    let cb = (w - qg * nb) * bw + l % bw;
    if iq >= p.n / 4u || cb >= dq { return; }
    let c = cb * 4u;
    let i = 4u * iq;
    let has = vec4<bool>(
        ge_lat_ptr[i] != ge_lat_ptr[i + 1u],
        ge_lat_ptr[i + 1u] != ge_lat_ptr[i + 2u],
        ge_lat_ptr[i + 2u] != ge_lat_ptr[i + 3u],
        ge_lat_ptr[i + 3u] != ge_lat_ptr[i + 4u],
    );
    if p.flag != 0u && !any(has) { return; }
    let l0 = ge_latent16(i, c);
    let l1 = ge_latent16(i + 1u, c);
    let l2 = ge_latent16(i + 2u, c);
    let l3 = ge_latent16(i + 3u, c);
    let r = 4u * c; // first of the 16 rows of dw_enc
    ge4o_put(r, iq, vec4<f32>(l0.a0.x, l1.a0.x, l2.a0.x, l3.a0.x), has);
    ge4o_put(r + 1u, iq, vec4<f32>(l0.a0.y, l1.a0.y, l2.a0.y, l3.a0.y), has);
    ge4o_put(r + 2u, iq, vec4<f32>(l0.a0.z, l1.a0.z, l2.a0.z, l3.a0.z), has);
    ge4o_put(r + 3u, iq, vec4<f32>(l0.a0.w, l1.a0.w, l2.a0.w, l3.a0.w), has);
    ge4o_put(r + 4u, iq, vec4<f32>(l0.a1.x, l1.a1.x, l2.a1.x, l3.a1.x), has);
    ge4o_put(r + 5u, iq, vec4<f32>(l0.a1.y, l1.a1.y, l2.a1.y, l3.a1.y), has);
    ge4o_put(r + 6u, iq, vec4<f32>(l0.a1.z, l1.a1.z, l2.a1.z, l3.a1.z), has);
    ge4o_put(r + 7u, iq, vec4<f32>(l0.a1.w, l1.a1.w, l2.a1.w, l3.a1.w), has);
    ge4o_put(r + 8u, iq, vec4<f32>(l0.a2.x, l1.a2.x, l2.a2.x, l3.a2.x), has);
    ge4o_put(r + 9u, iq, vec4<f32>(l0.a2.y, l1.a2.y, l2.a2.y, l3.a2.y), has);
    ge4o_put(r + 10u, iq, vec4<f32>(l0.a2.z, l1.a2.z, l2.a2.z, l3.a2.z), has);
    ge4o_put(r + 11u, iq, vec4<f32>(l0.a2.w, l1.a2.w, l2.a2.w, l3.a2.w), has);
    ge4o_put(r + 12u, iq, vec4<f32>(l0.a3.x, l1.a3.x, l2.a3.x, l3.a3.x), has);
    ge4o_put(r + 13u, iq, vec4<f32>(l0.a3.y, l1.a3.y, l2.a3.y, l3.a3.y), has);
    ge4o_put(r + 14u, iq, vec4<f32>(l0.a3.z, l1.a3.z, l2.a3.z, l3.a3.z), has);
    ge4o_put(r + 15u, iq, vec4<f32>(l0.a3.w, l1.a3.w, l2.a3.w, l3.a3.w), has);
}
