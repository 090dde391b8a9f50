// Toy models of superposition (Elhage et al. 2022): many instances of the ReLU output model
// x' = ReLU(W^T W x + b) (or the linear model x' = W^T W x + b) trained at once, each with
// its own feature density and importances. Launchers: src/kernels/toy.rs. CPU twins:
// src/reference/toy.rs (the layout and formulas are spelled out there).
//
// Layout, instance-major: w (instances, n, m) (row i = feature direction W_i), b and
// importance (instances, n), density (instances), x and g (instances, rows, n), h and dh
// (instances, rows, m), loss (instances, rows), partials pw (instances, chunks, n, m) and
// pb (instances, chunks, n).
//
// One training step: toy_data -> toy_forward -> toy_grad -> toy_sum_chunks (dW, db) ->
// adam (w, b; shaders/optim.wgsl). No atomics; every sum has a fixed order, the twin's.
// The hidden width m is the override constant M so that the per-row hidden vectors live in
// registers (see "hidden vectors"); it must not exceed MAXM.

struct Params {
    instances: u32, // toy_sum_chunks: groups
    rows: u32,      // batch rows per instance
    n: u32,         // features
    m: u32,         // hidden width (equal to M)
    chunk: u32,     // toy_grad: rows per chunk
    chunks: u32,    // toy_grad, toy_sum_chunks: chunks per instance (group)
    len: u32,       // toy_data: instances * rows * n; toy_sum_chunks: elements per partial
    relu: u32,      // toy_forward: 1 ReLU output model, 0 linear model
    seed_lo: u32,   // toy_data: seed bits 0..32
    seed_hi: u32,   // toy_data: seed bits 32..64
    scale: f32,     // toy_forward: 2 / rows
    _pad0: u32,
}

// The host rewrites this every step (src/kernels/toy.rs write_step): the step and how
// toy_data draws features (mode 0 independent, 1 correlated sets, 2 anticorrelated sets;
// set s = features s set_size .. (s + 1) set_size for s < sets).
struct Step {
    step: u32,
    mode: u32,
    sets: u32,
    set_size: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const MAXM: u32 = 32u;
override M: u32 = 1u;       // hidden width m
override DWG: u32 = 256u;   // toy_data invocations per workgroup (one element each)
override FWG: u32 = 64u;    // toy_forward rows per workgroup (one instance per workgroup)
override GWG: u32 = 64u;    // toy_grad features per workgroup (one instance and chunk each)
override SWG: u32 = 256u;   // toy_sum_chunks invocations per workgroup

// ---------------------------------------------------------------- hidden vectors
// Up to MAXM = 32 hidden values in eight vec4 registers (hidden unit k is component k % 4 of
// v{k / 4}). Every use is unrolled by hand and guarded by comparisons with the override
// constant M, which fold away when the pipeline is created. A private array indexed in a
// loop instead lives in memory on lavapipe (and in local memory on GPUs): the forward pass
// of the n = 200 -> m = 20 sweep took 10x longer that way. Components past M stay zero.
struct Hid {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
    v5: vec4<f32>,
    v6: vec4<f32>,
    v7: vec4<f32>,
}

fn hid_zero() -> Hid {
    let z = vec4(0.0);
    return Hid(z, z, z, z, z, z, z, z);
}

// ---------------------------------------------------------------- data
// The hash helpers pcg, row_key and draw live in shaders/prelude.wgsl.

// toy_data: x[e, r, f] = draw(key, 2f + 1) if feature f is present, else 0, with
// key = row_key(seed, step, e, r). Independent features (mode 0, or f past the last set) are
// present when draw(key, 2f) < density[e, f]. In a set whose first feature is `first`,
// with u = draw(key, 2 first) and d = density[e, first]: correlated (mode 1), every
// member is present when u < d; anticorrelated (mode 2), member j = f - first is present
// when j d <= u < (j + 1) d (at most one member at a time). One invocation per element.
@group(0) @binding(1) var<storage, read> td_density: array<f32>;      // (instances, n)
@group(0) @binding(2) var<storage, read_write> td_x: array<f32>;      // (instances, rows, n)
@group(0) @binding(3) var<uniform> td_step: Step;

@compute @workgroup_size(DWG)
fn toy_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_index(gid, nwg, DWG);
    if e >= p.len { return; }
    let f = e % p.n;
    let rr = e / p.n;
    let row = rr % p.rows;
    let inst = rr / p.rows;
    let key = row_key(p.seed_lo, p.seed_hi, td_step.step, inst, row);
    let dbase = inst * p.n;
    var present = false;
    if td_step.mode == 0u || f >= td_step.sets * td_step.set_size {
        present = draw(key, 2u * f) < td_density[dbase + f];
    } else {
        let first = f / td_step.set_size * td_step.set_size;
        let u = draw(key, 2u * first);
        let d = td_density[dbase + first];
        if td_step.mode == 1u {
            present = u < d;
        } else {
            let j = f - first;
            present = f32(j) * d <= u && u < f32(j + 1u) * d;
        }
    }
    var v = 0.0;
    if present {
        v = draw(key, 2u * f + 1u);
    }
    td_x[e] = v;
}

// ---------------------------------------------------------------- forward
// Per row: h = W x; o_i = b_i + W_i . h; y = relu(o) (or o); d = y - x;
// loss = sum_i (I_i d_i) d_i; g_i = scale (I_i d_i) where o_i > 0 (or linear), else 0;
// dh = sum_i g_i W_i. One invocation per row; a workgroup holds FWG rows of one instance,
// so every w, b and importance load has a workgroup-uniform address.
@group(0) @binding(1) var<storage, read> fw_x: array<f32>;            // (instances, rows, n)
@group(0) @binding(2) var<storage, read> fw_w: array<f32>;            // (instances, n, m)
@group(0) @binding(3) var<storage, read> fw_b: array<f32>;            // (instances, n)
@group(0) @binding(4) var<storage, read> fw_imp: array<f32>;          // (instances, n)
@group(0) @binding(5) var<storage, read_write> fw_h: array<f32>;      // (instances, rows, m)
@group(0) @binding(6) var<storage, read_write> fw_g: array<f32>;      // (instances, rows, n)
@group(0) @binding(7) var<storage, read_write> fw_dh: array<f32>;     // (instances, rows, m)
@group(0) @binding(8) var<storage, read_write> fw_loss: array<f32>;   // (instances, rows)

@compute @workgroup_size(FWG)
fn toy_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = (p.rows + FWG - 1u) / FWG;
    let wl = group_index(wid, nwg);
    if wl >= p.instances * blocks { return; }
    let inst = wl / blocks;
    let r = (wl % blocks) * FWG + lid;
    if r >= p.rows { return; }
    let n = p.n;
    let row = inst * p.rows + r;
    let xo = row * n;
    let wo = inst * n * M;
    let bo = inst * n;

    var h = hid_zero();
    for (var i = 0u; i < n; i++) {
        let xi = fw_x[xo + i];
        if xi != 0.0 { h = fw_axpy(h, wo + i * M, xi); }
    }

    var dh = hid_zero();
    var l = 0.0;
    for (var i = 0u; i < n; i++) {
        let wi = wo + i * M;
        let o = fw_dot(fw_b[bo + i], wi, h);
        var y = o;
        if p.relu != 0u { y = max(o, 0.0); }
        let d = y - fw_x[xo + i];
        let id = fw_imp[bo + i] * d;
        l = l + id * d;
        var gi = 0.0;
        if p.relu == 0u || o > 0.0 { gi = p.scale * id; }
        fw_g[xo + i] = gi;
        if gi != 0.0 { dh = fw_axpy(dh, wi, gi); }
    }
    fw_store(row * M, h, dh);
    fw_loss[row] = l;
}

fn fw_w4(base: u32, j: u32) -> vec4<f32> {
    let k = 4u * j;
    var v = vec4(0.0);
    if k < M { v.x = fw_w[base + k]; }
    if k + 1u < M { v.y = fw_w[base + k + 1u]; }
    if k + 2u < M { v.z = fw_w[base + k + 2u]; }
    if k + 3u < M { v.w = fw_w[base + k + 3u]; }
    return v;
}

fn fw_axpy(a: Hid, base: u32, s: f32) -> Hid {
    var r = a;
    if M > 0u { r.v0 = r.v0 + fw_w4(base, 0u) * s; }
    if M > 4u { r.v1 = r.v1 + fw_w4(base, 1u) * s; }
    if M > 8u { r.v2 = r.v2 + fw_w4(base, 2u) * s; }
    if M > 12u { r.v3 = r.v3 + fw_w4(base, 3u) * s; }
    if M > 16u { r.v4 = r.v4 + fw_w4(base, 4u) * s; }
    if M > 20u { r.v5 = r.v5 + fw_w4(base, 5u) * s; }
    if M > 24u { r.v6 = r.v6 + fw_w4(base, 6u) * s; }
    if M > 28u { r.v7 = r.v7 + fw_w4(base, 7u) * s; }
    return r;
}

// o + w.x h.x + w.y h.y + w.z h.z + w.w h.w, added one at a time in that order.
fn dot_step(o: f32, w: vec4<f32>, h: vec4<f32>) -> f32 {
    var s = o;
    s = s + w.x * h.x;
    s = s + w.y * h.y;
    s = s + w.z * h.z;
    s = s + w.w * h.w;
    return s;
}

// b + sum_k w[base + k] h_k in k order (the zero padding past M adds exact zeros).
fn fw_dot(b: f32, base: u32, h: Hid) -> f32 {
    var o = b;
    if M > 0u { o = dot_step(o, fw_w4(base, 0u), h.v0); }
    if M > 4u { o = dot_step(o, fw_w4(base, 1u), h.v1); }
    if M > 8u { o = dot_step(o, fw_w4(base, 2u), h.v2); }
    if M > 12u { o = dot_step(o, fw_w4(base, 3u), h.v3); }
    if M > 16u { o = dot_step(o, fw_w4(base, 4u), h.v4); }
    if M > 20u { o = dot_step(o, fw_w4(base, 5u), h.v5); }
    if M > 24u { o = dot_step(o, fw_w4(base, 6u), h.v6); }
    if M > 28u { o = dot_step(o, fw_w4(base, 7u), h.v7); }
    return o;
}

fn fw_put(base: u32, j: u32, h: vec4<f32>, dh: vec4<f32>) {
    let k = 4u * j;
    if k < M { fw_h[base + k] = h.x; fw_dh[base + k] = dh.x; }
    if k + 1u < M { fw_h[base + k + 1u] = h.y; fw_dh[base + k + 1u] = dh.y; }
    if k + 2u < M { fw_h[base + k + 2u] = h.z; fw_dh[base + k + 2u] = dh.z; }
    if k + 3u < M { fw_h[base + k + 3u] = h.w; fw_dh[base + k + 3u] = dh.w; }
}

fn fw_store(base: u32, h: Hid, dh: Hid) {
    if M > 0u { fw_put(base, 0u, h.v0, dh.v0); }
    if M > 4u { fw_put(base, 1u, h.v1, dh.v1); }
    if M > 8u { fw_put(base, 2u, h.v2, dh.v2); }
    if M > 12u { fw_put(base, 3u, h.v3, dh.v3); }
    if M > 16u { fw_put(base, 4u, h.v4, dh.v4); }
    if M > 20u { fw_put(base, 5u, h.v5, dh.v5); }
    if M > 24u { fw_put(base, 6u, h.v6, dh.v6); }
    if M > 28u { fw_put(base, 7u, h.v7, dh.v7); }
}

// ---------------------------------------------------------------- grad
// Partials over one chunk of rows, in row order: pw[i, k] = sum_r (g_ri h_rk) + (x_ri dh_rk),
// pb[i] = sum_r g_ri (terms with g_ri = 0 or x_ri = 0 skipped). One invocation per feature;
// a workgroup holds GWG features of one (instance, chunk), so the h and dh loads have
// workgroup-uniform addresses and the g and x loads are contiguous across lanes.
@group(0) @binding(1) var<storage, read> tg_x: array<f32>;            // (instances, rows, n)
@group(0) @binding(2) var<storage, read> tg_g: array<f32>;            // (instances, rows, n)
@group(0) @binding(3) var<storage, read> tg_h: array<f32>;            // (instances, rows, m)
@group(0) @binding(4) var<storage, read> tg_dh: array<f32>;           // (instances, rows, m)
@group(0) @binding(5) var<storage, read_write> tg_pw: array<f32>;     // (instances, chunks, n, m)
@group(0) @binding(6) var<storage, read_write> tg_pb: array<f32>;     // (instances, chunks, n)

@compute @workgroup_size(GWG)
fn toy_grad(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let fblocks = (p.n + GWG - 1u) / GWG;
    let wl = group_index(wid, nwg);
    if wl >= fblocks * p.chunks * p.instances { return; }
    let ic = wl / fblocks;          // instance * chunks + chunk
    let c = ic % p.chunks;
    let inst = ic / p.chunks;
    let i = (wl % fblocks) * GWG + lid;
    if i >= p.n { return; }
    let r0 = c * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);

    var acc = hid_zero();
    var accb = 0.0;
    for (var r = r0; r < r1; r++) {
        let row = inst * p.rows + r;
        let gi = tg_g[row * p.n + i];
        let xi = tg_x[row * p.n + i];
        if gi != 0.0 {
            acc = tg_axpy_h(acc, row * M, gi);
            accb = accb + gi;
        }
        if xi != 0.0 { acc = tg_axpy_dh(acc, row * M, xi); }
    }
    let o = ic * p.n + i;
    tg_store(o * M, acc);
    tg_pb[o] = accb;
}

fn tg_h4(base: u32, j: u32) -> vec4<f32> {
    let k = 4u * j;
    var v = vec4(0.0);
    if k < M { v.x = tg_h[base + k]; }
    if k + 1u < M { v.y = tg_h[base + k + 1u]; }
    if k + 2u < M { v.z = tg_h[base + k + 2u]; }
    if k + 3u < M { v.w = tg_h[base + k + 3u]; }
    return v;
}

fn tg_dh4(base: u32, j: u32) -> vec4<f32> {
    let k = 4u * j;
    var v = vec4(0.0);
    if k < M { v.x = tg_dh[base + k]; }
    if k + 1u < M { v.y = tg_dh[base + k + 1u]; }
    if k + 2u < M { v.z = tg_dh[base + k + 2u]; }
    if k + 3u < M { v.w = tg_dh[base + k + 3u]; }
    return v;
}

fn tg_axpy_h(a: Hid, base: u32, s: f32) -> Hid {
    var r = a;
    if M > 0u { r.v0 = r.v0 + tg_h4(base, 0u) * s; }
    if M > 4u { r.v1 = r.v1 + tg_h4(base, 1u) * s; }
    if M > 8u { r.v2 = r.v2 + tg_h4(base, 2u) * s; }
    if M > 12u { r.v3 = r.v3 + tg_h4(base, 3u) * s; }
    if M > 16u { r.v4 = r.v4 + tg_h4(base, 4u) * s; }
    if M > 20u { r.v5 = r.v5 + tg_h4(base, 5u) * s; }
    if M > 24u { r.v6 = r.v6 + tg_h4(base, 6u) * s; }
    if M > 28u { r.v7 = r.v7 + tg_h4(base, 7u) * s; }
    return r;
}

fn tg_axpy_dh(a: Hid, base: u32, s: f32) -> Hid {
    var r = a;
    if M > 0u { r.v0 = r.v0 + tg_dh4(base, 0u) * s; }
    if M > 4u { r.v1 = r.v1 + tg_dh4(base, 1u) * s; }
    if M > 8u { r.v2 = r.v2 + tg_dh4(base, 2u) * s; }
    if M > 12u { r.v3 = r.v3 + tg_dh4(base, 3u) * s; }
    if M > 16u { r.v4 = r.v4 + tg_dh4(base, 4u) * s; }
    if M > 20u { r.v5 = r.v5 + tg_dh4(base, 5u) * s; }
    if M > 24u { r.v6 = r.v6 + tg_dh4(base, 6u) * s; }
    if M > 28u { r.v7 = r.v7 + tg_dh4(base, 7u) * s; }
    return r;
}

fn tg_put(base: u32, j: u32, a: vec4<f32>) {
    let k = 4u * j;
    if k < M { tg_pw[base + k] = a.x; }
    if k + 1u < M { tg_pw[base + k + 1u] = a.y; }
    if k + 2u < M { tg_pw[base + k + 2u] = a.z; }
    if k + 3u < M { tg_pw[base + k + 3u] = a.w; }
}

fn tg_store(base: u32, a: Hid) {
    if M > 0u { tg_put(base, 0u, a.v0); }
    if M > 4u { tg_put(base, 1u, a.v1); }
    if M > 8u { tg_put(base, 2u, a.v2); }
    if M > 12u { tg_put(base, 3u, a.v3); }
    if M > 16u { tg_put(base, 4u, a.v4); }
    if M > 20u { tg_put(base, 5u, a.v5); }
    if M > 24u { tg_put(base, 6u, a.v6); }
    if M > 28u { tg_put(base, 7u, a.v7); }
}

// ---------------------------------------------------------------- sum_chunks
// out[e, j] = part[e, 0, j] + part[e, 1, j] + ... + part[e, chunks - 1, j], in that order.
@group(0) @binding(1) var<storage, read> ts_part: array<f32>;         // (groups, chunks, len)
@group(0) @binding(2) var<storage, read_write> ts_out: array<f32>;    // (groups, len)

@compute @workgroup_size(SWG)
fn toy_sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_index(gid, nwg, SWG);
    if e >= p.instances * p.len { return; }
    let base = (e / p.len) * p.chunks * p.len + e % p.len;
    var s = ts_part[base];
    for (var c = 1u; c < p.chunks; c++) { s = s + ts_part[base + c * p.len]; }
    ts_out[e] = s;
}
