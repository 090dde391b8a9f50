// GEMM on the texture path with A shared across a subgroup: the same contract and layout
// as gemm_tex in shaders/gemm.wgsl (read its header for the texture layout and figures),
// C (m, n) = alpha * op(A) op(B) + bias + beta * C, for adapters with wgpu's SUBGROUP feature
// and subgroups of at least 8 lanes (lavapipe: exactly 8). A separate file because a module
// that uses subgroup builtins does not validate on devices without the feature.
// Launcher: src/kernels/gemm.rs (GemmPath::TextureSubgroup). CPU twin: src/reference/gemm.rs.
//
// gemm_tex loads the same A texels in every invocation of a workgroup (all share row0); on
// lavapipe each such load is a gather over the 8 lanes, as costly as a load of 8 different
// addresses. Here lane l of each subgroup loads one A texel per k-step (row row0 + l, or
// for TRANS_A rows quad l / 4 at k0 + l % 4) and the others get it by subgroupBroadcast,
// which lavapipe compiles to a lane extract and a splat.
//
// Entry points (ROWS rows of C x one vec4 of columns per invocation):
//   gemm_tex_sg     8 rows: one A texel per lane per k-step
//   gemm_tex_sg16   16 rows: two A texels per lane per k-step; B loads amortised over
//                   twice the rows

struct Params {
    m: u32,
    n: u32,
    k: u32,
    _pad0: u32,
    alpha: f32,
    beta: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override USE_BETA: bool = false;
override SG_WG: u32 = 64;

// alpha * acc + bias + beta * c_old, in the reference's order; c_old only when USE_BETA.
fn finish4(acc: vec4<f32>, bias: vec4<f32>, c_old: vec4<f32>) -> vec4<f32> {
    var v = p.alpha * acc;
    if HAS_BIAS {
        v += bias;
    }
    if USE_BETA {
        v += p.beta * c_old;
    }
    return v;
}


// ------------------------------------------------------------------ gemm_tex_sg
// 8 rows of C per invocation (row0 .. row0 + 8), columns 4 c4 .. 4 c4 + 4; the grid
// as gemm_tex's (x: row blocks folded with z, y: groups of SG_WG column quads). No early
// return (every lane must reach the broadcasts); out-of-range rows and columns read clamped
// texels and are not stored.

@group(0) @binding(1) var sg_a: texture_storage_2d<rgba32float, read>; // A as stored: (m, k / 4) or (k, m / 4) texels
@group(0) @binding(2) var sg_b: texture_storage_2d<rgba32float, read>; // B as stored: (k, n / 4) or (n, k / 4) texels
@group(0) @binding(3) var<storage, read> sg_bias: array<vec4<f32>>;    // (n / 4)
@group(0) @binding(4) var<storage, read_write> sg_c: array<vec4<f32>>; // (m, n / 4)

@compute @workgroup_size(SG_WG)
fn gemm_tex_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane_id: u32,
) {
    let row0 = (wid.x + wid.z * nwg.x) * 8u;
    let n4 = p.n / 4u;
    let c4 = wid.y * SG_WG + lid.x;
    let cb = min(c4, n4 - 1u); // clamped B column quad
    let lane = lane_id % 8u;
    // This lane's A texels: not TRANS_A, texel (kq, ra_g) = op(A)[ra_g, 4 kq .. 4 kq + 4]
    // with ra_g = row0 + 8 g + lane; TRANS_A, texel (xa_g, 4 kq + lane % 4) =
    // op(A)[4 xa_g .. 4 xa_g + 4, 4 kq + lane % 4] with xa_g = row0 / 4 + 2 g + lane / 4.
    let ra0 = min(row0 + 0u + lane, p.m - 1u);
    let xa0 = min(row0 / 4u + 0u + lane / 4u, p.m / 4u - 1u);
    let qa = lane % 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    for (var kq = 0u; kq < p.k / 4u; kq++) {
        let k0 = kq * 4u;
        // bq: op(B)[k0 + q, 4 c4 .. 4 c4 + 4]
        var b0: vec4<f32>;
        var b1: vec4<f32>;
        var b2: vec4<f32>;
        var b3: vec4<f32>;
        if TRANS_B {
            // texel (kq, col) holds op(B)[k0 .. k0 + 4, col]: transpose four of them
            let u0 = textureLoad(sg_b, vec2<u32>(kq, cb * 4u));
            let u1 = textureLoad(sg_b, vec2<u32>(kq, cb * 4u + 1u));
            let u2 = textureLoad(sg_b, vec2<u32>(kq, cb * 4u + 2u));
            let u3 = textureLoad(sg_b, vec2<u32>(kq, cb * 4u + 3u));
            b0 = vec4<f32>(u0.x, u1.x, u2.x, u3.x);
            b1 = vec4<f32>(u0.y, u1.y, u2.y, u3.y);
            b2 = vec4<f32>(u0.z, u1.z, u2.z, u3.z);
            b3 = vec4<f32>(u0.w, u1.w, u2.w, u3.w);
        } else {
            b0 = textureLoad(sg_b, vec2<u32>(cb, k0));
            b1 = textureLoad(sg_b, vec2<u32>(cb, k0 + 1u));
            b2 = textureLoad(sg_b, vec2<u32>(cb, k0 + 2u));
            b3 = textureLoad(sg_b, vec2<u32>(cb, k0 + 3u));
        }
        // this lane's A texel for rows row0 + 0 .. row0 + 8
        var t0: vec4<f32>;
        if TRANS_A {
            t0 = textureLoad(sg_a, vec2<u32>(xa0, k0 + qa));
        } else {
            t0 = textureLoad(sg_a, vec2<u32>(kq, ra0));
        }
        // a0_l = lane l's texel: op(A)[row0 + 0 + l, k0 .. k0 + 4], or for TRANS_A
        // op(A)[row0 + 0 + 4 (l / 4) .. + 4, k0 + l % 4]
        let a0_0 = subgroupBroadcast(t0, 0u);
        let a0_1 = subgroupBroadcast(t0, 1u);
        let a0_2 = subgroupBroadcast(t0, 2u);
        let a0_3 = subgroupBroadcast(t0, 3u);
        let a0_4 = subgroupBroadcast(t0, 4u);
        let a0_5 = subgroupBroadcast(t0, 5u);
        let a0_6 = subgroupBroadcast(t0, 6u);
        let a0_7 = subgroupBroadcast(t0, 7u);
        // k0 + 0 .. k0 + 3 in order, as the reference accumulates
        acc0 += select(a0_0.x, a0_0.x, TRANS_A) * b0;
        acc1 += select(a0_1.x, a0_0.y, TRANS_A) * b0;
        acc2 += select(a0_2.x, a0_0.z, TRANS_A) * b0;
        acc3 += select(a0_3.x, a0_0.w, TRANS_A) * b0;
        acc4 += select(a0_4.x, a0_4.x, TRANS_A) * b0;
        acc5 += select(a0_5.x, a0_4.y, TRANS_A) * b0;
        acc6 += select(a0_6.x, a0_4.z, TRANS_A) * b0;
        acc7 += select(a0_7.x, a0_4.w, TRANS_A) * b0;
        acc0 += select(a0_0.y, a0_1.x, TRANS_A) * b1;
        acc1 += select(a0_1.y, a0_1.y, TRANS_A) * b1;
        acc2 += select(a0_2.y, a0_1.z, TRANS_A) * b1;
        acc3 += select(a0_3.y, a0_1.w, TRANS_A) * b1;
        acc4 += select(a0_4.y, a0_5.x, TRANS_A) * b1;
        acc5 += select(a0_5.y, a0_5.y, TRANS_A) * b1;
        acc6 += select(a0_6.y, a0_5.z, TRANS_A) * b1;
        acc7 += select(a0_7.y, a0_5.w, TRANS_A) * b1;
        acc0 += select(a0_0.z, a0_2.x, TRANS_A) * b2;
        acc1 += select(a0_1.z, a0_2.y, TRANS_A) * b2;
        acc2 += select(a0_2.z, a0_2.z, TRANS_A) * b2;
        acc3 += select(a0_3.z, a0_2.w, TRANS_A) * b2;
        acc4 += select(a0_4.z, a0_6.x, TRANS_A) * b2;
        acc5 += select(a0_5.z, a0_6.y, TRANS_A) * b2;
        acc6 += select(a0_6.z, a0_6.z, TRANS_A) * b2;
        acc7 += select(a0_7.z, a0_6.w, TRANS_A) * b2;
        acc0 += select(a0_0.w, a0_3.x, TRANS_A) * b3;
        acc1 += select(a0_1.w, a0_3.y, TRANS_A) * b3;
        acc2 += select(a0_2.w, a0_3.z, TRANS_A) * b3;
        acc3 += select(a0_3.w, a0_3.w, TRANS_A) * b3;
        acc4 += select(a0_4.w, a0_7.x, TRANS_A) * b3;
        acc5 += select(a0_5.w, a0_7.y, TRANS_A) * b3;
        acc6 += select(a0_6.w, a0_7.z, TRANS_A) * b3;
        acc7 += select(a0_7.w, a0_7.w, TRANS_A) * b3;
    }
    if c4 >= n4 {
        return;
    }
    var bias = vec4<f32>(0.0);
    if HAS_BIAS {
        bias = sg_bias[c4];
    }
    sg_store(row0 + 0u, n4, c4, acc0, bias);
    sg_store(row0 + 1u, n4, c4, acc1, bias);
    sg_store(row0 + 2u, n4, c4, acc2, bias);
    sg_store(row0 + 3u, n4, c4, acc3, bias);
    sg_store(row0 + 4u, n4, c4, acc4, bias);
    sg_store(row0 + 5u, n4, c4, acc5, bias);
    sg_store(row0 + 6u, n4, c4, acc6, bias);
    sg_store(row0 + 7u, n4, c4, acc7, bias);
}

fn sg_store(row: u32, n4: u32, c4: u32, acc: vec4<f32>, bias: vec4<f32>) {
    if row < p.m {
        let i = row * n4 + c4;
        var c_old = vec4<f32>(0.0);
        if USE_BETA {
            c_old = sg_c[i];
        }
        sg_c[i] = finish4(acc, bias, c_old);
    }
}

// ------------------------------------------------------------------ gemm_tex_sg16
// 16 rows of C per invocation (row0 .. row0 + 16), columns 4 c4 .. 4 c4 + 4; the grid
// as gemm_tex's (x: row blocks folded with z, y: groups of SG_WG column quads). No early
// return (every lane must reach the broadcasts); out-of-range rows and columns read clamped
// texels and are not stored.

@group(0) @binding(1) var sh_a: texture_storage_2d<rgba32float, read>; // A as stored: (m, k / 4) or (k, m / 4) texels
@group(0) @binding(2) var sh_b: texture_storage_2d<rgba32float, read>; // B as stored: (k, n / 4) or (n, k / 4) texels
@group(0) @binding(3) var<storage, read> sh_bias: array<vec4<f32>>;    // (n / 4)
@group(0) @binding(4) var<storage, read_write> sh_c: array<vec4<f32>>; // (m, n / 4)

@compute @workgroup_size(SG_WG)
fn gemm_tex_sg16(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane_id: u32,
) {
    let row0 = (wid.x + wid.z * nwg.x) * 16u;
    let n4 = p.n / 4u;
    let c4 = wid.y * SG_WG + lid.x;
    let cb = min(c4, n4 - 1u); // clamped B column quad
    let lane = lane_id % 8u;
    // This lane's A texels: not TRANS_A, texel (kq, ra_g) = op(A)[ra_g, 4 kq .. 4 kq + 4]
    // with ra_g = row0 + 8 g + lane; TRANS_A, texel (xa_g, 4 kq + lane % 4) =
    // op(A)[4 xa_g .. 4 xa_g + 4, 4 kq + lane % 4] with xa_g = row0 / 4 + 2 g + lane / 4.
    let ra0 = min(row0 + 0u + lane, p.m - 1u);
    let xa0 = min(row0 / 4u + 0u + lane / 4u, p.m / 4u - 1u);
    let ra1 = min(row0 + 8u + lane, p.m - 1u);
    let xa1 = min(row0 / 4u + 2u + lane / 4u, p.m / 4u - 1u);
    let qa = lane % 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0);
    var acc9 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0);
    var acc13 = vec4<f32>(0.0);
    var acc14 = vec4<f32>(0.0);
    var acc15 = vec4<f32>(0.0);
    for (var kq = 0u; kq < p.k / 4u; kq++) {
        let k0 = kq * 4u;
        // bq: op(B)[k0 + q, 4 c4 .. 4 c4 + 4]
        var b0: vec4<f32>;
        var b1: vec4<f32>;
        var b2: vec4<f32>;
        var b3: vec4<f32>;
        if TRANS_B {
            // texel (kq, col) holds op(B)[k0 .. k0 + 4, col]: transpose four of them
            let u0 = textureLoad(sh_b, vec2<u32>(kq, cb * 4u));
            let u1 = textureLoad(sh_b, vec2<u32>(kq, cb * 4u + 1u));
            let u2 = textureLoad(sh_b, vec2<u32>(kq, cb * 4u + 2u));
            let u3 = textureLoad(sh_b, vec2<u32>(kq, cb * 4u + 3u));
            b0 = vec4<f32>(u0.x, u1.x, u2.x, u3.x);
            b1 = vec4<f32>(u0.y, u1.y, u2.y, u3.y);
            b2 = vec4<f32>(u0.z, u1.z, u2.z, u3.z);
            b3 = vec4<f32>(u0.w, u1.w, u2.w, u3.w);
        } else {
            b0 = textureLoad(sh_b, vec2<u32>(cb, k0));
            b1 = textureLoad(sh_b, vec2<u32>(cb, k0 + 1u));
            b2 = textureLoad(sh_b, vec2<u32>(cb, k0 + 2u));
            b3 = textureLoad(sh_b, vec2<u32>(cb, k0 + 3u));
        }
        // this lane's A texel for rows row0 + 0 .. row0 + 8
        var t0: vec4<f32>;
        if TRANS_A {
            t0 = textureLoad(sh_a, vec2<u32>(xa0, k0 + qa));
        } else {
            t0 = textureLoad(sh_a, vec2<u32>(kq, ra0));
        }
        // a0_l = lane l's texel: op(A)[row0 + 0 + l, k0 .. k0 + 4], or for TRANS_A
        // op(A)[row0 + 0 + 4 (l / 4) .. + 4, k0 + l % 4]
        let a0_0 = subgroupBroadcast(t0, 0u);
        let a0_1 = subgroupBroadcast(t0, 1u);
        let a0_2 = subgroupBroadcast(t0, 2u);
        let a0_3 = subgroupBroadcast(t0, 3u);
        let a0_4 = subgroupBroadcast(t0, 4u);
        let a0_5 = subgroupBroadcast(t0, 5u);
        let a0_6 = subgroupBroadcast(t0, 6u);
        let a0_7 = subgroupBroadcast(t0, 7u);
        // this lane's A texel for rows row0 + 8 .. row0 + 16
        var t1: vec4<f32>;
        if TRANS_A {
            t1 = textureLoad(sh_a, vec2<u32>(xa1, k0 + qa));
        } else {
            t1 = textureLoad(sh_a, vec2<u32>(kq, ra1));
        }
        // a1_l = lane l's texel: op(A)[row0 + 8 + l, k0 .. k0 + 4], or for TRANS_A
        // op(A)[row0 + 8 + 4 (l / 4) .. + 4, k0 + l % 4]
        let a1_0 = subgroupBroadcast(t1, 0u);
        let a1_1 = subgroupBroadcast(t1, 1u);
        let a1_2 = subgroupBroadcast(t1, 2u);
        let a1_3 = subgroupBroadcast(t1, 3u);
        let a1_4 = subgroupBroadcast(t1, 4u);
        let a1_5 = subgroupBroadcast(t1, 5u);
        let a1_6 = subgroupBroadcast(t1, 6u);
        let a1_7 = subgroupBroadcast(t1, 7u);
        // k0 + 0 .. k0 + 3 in order, as the reference accumulates
        acc0 += select(a0_0.x, a0_0.x, TRANS_A) * b0;
        acc1 += select(a0_1.x, a0_0.y, TRANS_A) * b0;
        acc2 += select(a0_2.x, a0_0.z, TRANS_A) * b0;
        acc3 += select(a0_3.x, a0_0.w, TRANS_A) * b0;
        acc4 += select(a0_4.x, a0_4.x, TRANS_A) * b0;
        acc5 += select(a0_5.x, a0_4.y, TRANS_A) * b0;
        acc6 += select(a0_6.x, a0_4.z, TRANS_A) * b0;
        acc7 += select(a0_7.x, a0_4.w, TRANS_A) * b0;
        acc8 += select(a1_0.x, a1_0.x, TRANS_A) * b0;
        acc9 += select(a1_1.x, a1_0.y, TRANS_A) * b0;
        acc10 += select(a1_2.x, a1_0.z, TRANS_A) * b0;
        acc11 += select(a1_3.x, a1_0.w, TRANS_A) * b0;
        acc12 += select(a1_4.x, a1_4.x, TRANS_A) * b0;
        acc13 += select(a1_5.x, a1_4.y, TRANS_A) * b0;
        acc14 += select(a1_6.x, a1_4.z, TRANS_A) * b0;
        acc15 += select(a1_7.x, a1_4.w, TRANS_A) * b0;
        acc0 += select(a0_0.y, a0_1.x, TRANS_A) * b1;
        acc1 += select(a0_1.y, a0_1.y, TRANS_A) * b1;
        acc2 += select(a0_2.y, a0_1.z, TRANS_A) * b1;
        acc3 += select(a0_3.y, a0_1.w, TRANS_A) * b1;
        acc4 += select(a0_4.y, a0_5.x, TRANS_A) * b1;
        acc5 += select(a0_5.y, a0_5.y, TRANS_A) * b1;
        acc6 += select(a0_6.y, a0_5.z, TRANS_A) * b1;
        acc7 += select(a0_7.y, a0_5.w, TRANS_A) * b1;
        acc8 += select(a1_0.y, a1_1.x, TRANS_A) * b1;
        acc9 += select(a1_1.y, a1_1.y, TRANS_A) * b1;
        acc10 += select(a1_2.y, a1_1.z, TRANS_A) * b1;
        acc11 += select(a1_3.y, a1_1.w, TRANS_A) * b1;
        acc12 += select(a1_4.y, a1_5.x, TRANS_A) * b1;
        acc13 += select(a1_5.y, a1_5.y, TRANS_A) * b1;
        acc14 += select(a1_6.y, a1_5.z, TRANS_A) * b1;
        acc15 += select(a1_7.y, a1_5.w, TRANS_A) * b1;
        acc0 += select(a0_0.z, a0_2.x, TRANS_A) * b2;
        acc1 += select(a0_1.z, a0_2.y, TRANS_A) * b2;
        acc2 += select(a0_2.z, a0_2.z, TRANS_A) * b2;
        acc3 += select(a0_3.z, a0_2.w, TRANS_A) * b2;
        acc4 += select(a0_4.z, a0_6.x, TRANS_A) * b2;
        acc5 += select(a0_5.z, a0_6.y, TRANS_A) * b2;
        acc6 += select(a0_6.z, a0_6.z, TRANS_A) * b2;
        acc7 += select(a0_7.z, a0_6.w, TRANS_A) * b2;
        acc8 += select(a1_0.z, a1_2.x, TRANS_A) * b2;
        acc9 += select(a1_1.z, a1_2.y, TRANS_A) * b2;
        acc10 += select(a1_2.z, a1_2.z, TRANS_A) * b2;
        acc11 += select(a1_3.z, a1_2.w, TRANS_A) * b2;
        acc12 += select(a1_4.z, a1_6.x, TRANS_A) * b2;
        acc13 += select(a1_5.z, a1_6.y, TRANS_A) * b2;
        acc14 += select(a1_6.z, a1_6.z, TRANS_A) * b2;
        acc15 += select(a1_7.z, a1_6.w, TRANS_A) * b2;
        acc0 += select(a0_0.w, a0_3.x, TRANS_A) * b3;
        acc1 += select(a0_1.w, a0_3.y, TRANS_A) * b3;
        acc2 += select(a0_2.w, a0_3.z, TRANS_A) * b3;
        acc3 += select(a0_3.w, a0_3.w, TRANS_A) * b3;
        acc4 += select(a0_4.w, a0_7.x, TRANS_A) * b3;
        acc5 += select(a0_5.w, a0_7.y, TRANS_A) * b3;
        acc6 += select(a0_6.w, a0_7.z, TRANS_A) * b3;
        acc7 += select(a0_7.w, a0_7.w, TRANS_A) * b3;
        acc8 += select(a1_0.w, a1_3.x, TRANS_A) * b3;
        acc9 += select(a1_1.w, a1_3.y, TRANS_A) * b3;
        acc10 += select(a1_2.w, a1_3.z, TRANS_A) * b3;
        acc11 += select(a1_3.w, a1_3.w, TRANS_A) * b3;
        acc12 += select(a1_4.w, a1_7.x, TRANS_A) * b3;
        acc13 += select(a1_5.w, a1_7.y, TRANS_A) * b3;
        acc14 += select(a1_6.w, a1_7.z, TRANS_A) * b3;
        acc15 += select(a1_7.w, a1_7.w, TRANS_A) * b3;
    }
    if c4 >= n4 {
        return;
    }
    var bias = vec4<f32>(0.0);
    if HAS_BIAS {
        bias = sh_bias[c4];
    }
    sh_store(row0 + 0u, n4, c4, acc0, bias);
    sh_store(row0 + 1u, n4, c4, acc1, bias);
    sh_store(row0 + 2u, n4, c4, acc2, bias);
    sh_store(row0 + 3u, n4, c4, acc3, bias);
    sh_store(row0 + 4u, n4, c4, acc4, bias);
    sh_store(row0 + 5u, n4, c4, acc5, bias);
    sh_store(row0 + 6u, n4, c4, acc6, bias);
    sh_store(row0 + 7u, n4, c4, acc7, bias);
    sh_store(row0 + 8u, n4, c4, acc8, bias);
    sh_store(row0 + 9u, n4, c4, acc9, bias);
    sh_store(row0 + 10u, n4, c4, acc10, bias);
    sh_store(row0 + 11u, n4, c4, acc11, bias);
    sh_store(row0 + 12u, n4, c4, acc12, bias);
    sh_store(row0 + 13u, n4, c4, acc13, bias);
    sh_store(row0 + 14u, n4, c4, acc14, bias);
    sh_store(row0 + 15u, n4, c4, acc15, bias);
}

fn sh_store(row: u32, n4: u32, c4: u32, acc: vec4<f32>, bias: vec4<f32>) {
    if row < p.m {
        let i = row * n4 + c4;
        var c_old = vec4<f32>(0.0);
        if USE_BETA {
            c_old = sh_c[i];
        }
        sh_c[i] = finish4(acc, bias, c_old);
    }
}
