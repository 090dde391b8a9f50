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
// registers (loops of constant trip count unroll); it must not exceed MAXM.

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

// The host rewrites this every step (src/kernels/toy.rs write_step).
struct Step {
    step: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const MAXM: u32 = 64u;
override M: u32 = 1u;       // hidden width m
override DWG: u32 = 256u;   // toy_data invocations per workgroup (one element each)
override FWG: u32 = 64u;    // toy_forward rows per workgroup (one instance per workgroup)
override GWG: u32 = 64u;    // toy_grad features per workgroup (one instance and chunk each)
override SWG: u32 = 256u;   // toy_sum_chunks invocations per workgroup

// ---------------------------------------------------------------- data
// PCG hash (Jarzynski and Olano 2020); row_key chains seed, step, instance and row through
// it; draw(key, c) = (pcg(key ^ pcg(c)) >> 8) * 2^-24 in [0, 1), exact in f32.

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn row_key(step: u32, inst: u32, row: u32) -> u32 {
    var k = pcg(p.seed_lo);
    k = pcg(k ^ p.seed_hi);
    k = pcg(k ^ step);
    k = pcg(k ^ inst);
    return pcg(k ^ row);
}

fn draw(key: u32, c: u32) -> f32 {
    return f32(pcg(key ^ pcg(c)) >> 8u) * (1.0 / 16777216.0);
}

// toy_data: x[e, r, f] = draw(key, 2f + 1) if draw(key, 2f) < density[e], else 0,
// key = row_key(step, e, r). One invocation per element.
@group(0) @binding(1) var<storage, read> td_density: array<f32>;      // (instances)
@group(0) @binding(2) var<storage, read_write> td_x: array<f32>;      // (instances, rows, n)
@group(0) @binding(3) var<uniform> td_step: Step;

@compute @workgroup_size(DWG)
fn toy_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * DWG;
    if e >= p.len { return; }
    let f = e % p.n;
    let rr = e / p.n;
    let row = rr % p.rows;
    let inst = rr / p.rows;
    let key = row_key(td_step.step, inst, row);
    var v = 0.0;
    if draw(key, 2u * f) < td_density[inst] {
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
    let wl = wid.x + wid.y * nwg.x;
    if wl >= p.instances * blocks { return; }
    let inst = wl / blocks;
    let r = (wl % blocks) * FWG + lid;
    if r >= p.rows { return; }
    let n = p.n;
    let row = inst * p.rows + r;
    let xo = row * n;
    let wo = inst * n * M;
    let bo = inst * n;

    var h: array<f32, MAXM>;
    for (var k = 0u; k < M; k++) { h[k] = 0.0; }
    for (var i = 0u; i < n; i++) {
        let xi = fw_x[xo + i];
        if xi != 0.0 {
            let wi = wo + i * M;
            for (var k = 0u; k < M; k++) { h[k] = h[k] + fw_w[wi + k] * xi; }
        }
    }

    var dh: array<f32, MAXM>;
    for (var k = 0u; k < M; k++) { dh[k] = 0.0; }
    var l = 0.0;
    for (var i = 0u; i < n; i++) {
        let wi = wo + i * M;
        var o = fw_b[bo + i];
        for (var k = 0u; k < M; k++) { o = o + fw_w[wi + k] * h[k]; }
        var y = o;
        if p.relu != 0u { y = max(o, 0.0); }
        let d = y - fw_x[xo + i];
        let id = fw_imp[bo + i] * d;
        l = l + id * d;
        var gi = 0.0;
        if p.relu == 0u || o > 0.0 { gi = p.scale * id; }
        fw_g[xo + i] = gi;
        if gi != 0.0 {
            for (var k = 0u; k < M; k++) { dh[k] = dh[k] + fw_w[wi + k] * gi; }
        }
    }
    let ho = row * M;
    for (var k = 0u; k < M; k++) {
        fw_h[ho + k] = h[k];
        fw_dh[ho + k] = dh[k];
    }
    fw_loss[row] = l;
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
    let wl = wid.x + wid.y * nwg.x;
    if wl >= fblocks * p.chunks * p.instances { return; }
    let ic = wl / fblocks;          // instance * chunks + chunk
    let c = ic % p.chunks;
    let inst = ic / p.chunks;
    let i = (wl % fblocks) * GWG + lid;
    if i >= p.n { return; }
    let r0 = c * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);

    var acc: array<f32, MAXM>;
    for (var k = 0u; k < M; k++) { acc[k] = 0.0; }
    var accb = 0.0;
    for (var r = r0; r < r1; r++) {
        let row = inst * p.rows + r;
        let gi = tg_g[row * p.n + i];
        let xi = tg_x[row * p.n + i];
        let ho = row * M;
        if gi != 0.0 {
            for (var k = 0u; k < M; k++) { acc[k] = acc[k] + gi * tg_h[ho + k]; }
            accb = accb + gi;
        }
        if xi != 0.0 {
            for (var k = 0u; k < M; k++) { acc[k] = acc[k] + xi * tg_dh[ho + k]; }
        }
    }
    let o = ic * p.n + i;
    for (var k = 0u; k < M; k++) { tg_pw[o * M + k] = acc[k]; }
    tg_pb[o] = accb;
}

// ---------------------------------------------------------------- sum_chunks
// out[e, j] = part[e, 0, j] + part[e, 1, j] + ... + part[e, chunks - 1, j], in that order.
@group(0) @binding(1) var<storage, read> ts_part: array<f32>;         // (groups, chunks, len)
@group(0) @binding(2) var<storage, read_write> ts_out: array<f32>;    // (groups, len)

@compute @workgroup_size(SWG)
fn toy_sum_chunks(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * SWG;
    if e >= p.instances * p.len { return; }
    let base = (e / p.len) * p.chunks * p.len + e % p.len;
    var s = ts_part[base];
    for (var c = 1u; c < p.chunks; c++) { s = s + ts_part[base + c * p.len]; }
    ts_out[e] = s;
}
