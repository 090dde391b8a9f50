// The two-layer toy models of "Toy Models of Superposition" (privileged basis, computation
// in superposition, L1 / top-k on the hidden layer): many instances at once of
//   pre = W1 x + b1, h = act_h(pre), o = W2 h + b2, y = act_o(o),
// loss sum_i I_i (y_i - t_i)^2 + l1_e sum_k |h_k|, t = x or |x|, W2 = W1^T when tied.
// Launchers: src/kernels/toy_mlp.rs. CPU twins and the formulas: src/reference/toy_mlp.rs.
//
// Layout, instance-major: prm (instances, P), P = 2mn + m + n, [W1 (m, n) | W2 (n, m) |
// b1 (m) | b2 (n)]; importance (instances, n); density, l1 (instances); topk (instances);
// x, g (instances, rows, n); h, dpre (instances, rows, m); loss (instances, rows);
// part (instances, chunks, P).
//
// One training step: mlp_data -> mlp_forward -> mlp_grad -> toy_sum_chunks (toy.wgsl) ->
// adam (optim.wgsl) on prm. No atomics; every sum has a fixed order, the twin's.

struct Params {
    instances: u32,
    rows: u32,
    n: u32,
    m: u32,
    chunk: u32,     // mlp_grad: rows per chunk
    chunks: u32,    // mlp_grad: chunks per instance
    len: u32,       // mlp_data: instances * rows * n
    act_h: u32,     // 0 identity, 1 relu, 2 top-k
    relu_out: u32,  // 1: y = relu(o)
    tied: u32,      // 1: W2 = W1^T
    hidden_bias: u32, // 1: b1 trained
    signed: u32,    // mlp_data: 1: x = 2u - 1
    abs_target: u32, // 1: t = |x|
    seed_lo: u32,
    seed_hi: u32,
    scale: f32,     // 2 / rows
    inv_rows: f32,  // 1 / rows
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The host rewrites this every step (src/kernels/toy.rs write_step).
struct Step {
    step: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256u;   // mlp_data and mlp_grad invocations per workgroup
override FWG: u32 = 64u;   // mlp_forward rows per workgroup

// ---------------------------------------------------------------- data
// x[e, r, f] = (signed ? 2u - 1 : u), u = draw(key, 2f + 1), if draw(key, 2f) < density[e],
// else 0; key = row_key(seed, step, e, r) (shaders/prelude.wgsl). One invocation per element.
@group(0) @binding(1) var<storage, read> md_density: array<f32>;      // (instances)
@group(0) @binding(2) var<storage, read_write> md_x: array<f32>;      // (instances, rows, n)
@group(0) @binding(3) var<uniform> md_step: Step;

@compute @workgroup_size(WG)
fn mlp_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_index(gid, nwg, WG);
    if e >= p.len { return; }
    let f = e % p.n;
    let rr = e / p.n;
    let row = rr % p.rows;
    let inst = rr / p.rows;
    let key = row_key(p.seed_lo, p.seed_hi, md_step.step, inst, row);
    var v = 0.0;
    if draw(key, 2u * f) < md_density[inst] {
        let u = draw(key, 2u * f + 1u);
        v = select(u, 2.0 * u - 1.0, p.signed != 0u);
    }
    md_x[e] = v;
}

// ---------------------------------------------------------------- forward
// One invocation per row. dpre holds the pre-activations until they are overwritten by
// their gradients (the twin keeps them in a local vector).
@group(0) @binding(1) var<storage, read> fw_x: array<f32>;            // (instances, rows, n)
@group(0) @binding(2) var<storage, read> fw_prm: array<f32>;          // (instances, P)
@group(0) @binding(3) var<storage, read> fw_imp: array<f32>;          // (instances, n)
@group(0) @binding(4) var<storage, read> fw_l1: array<f32>;           // (instances)
@group(0) @binding(5) var<storage, read> fw_topk: array<u32>;         // (instances)
@group(0) @binding(6) var<storage, read_write> fw_h: array<f32>;      // (instances, rows, m)
@group(0) @binding(7) var<storage, read_write> fw_g: array<f32>;      // (instances, rows, n)
@group(0) @binding(8) var<storage, read_write> fw_dpre: array<f32>;   // (instances, rows, m)
@group(0) @binding(9) var<storage, read_write> fw_loss: array<f32>;   // (instances, rows)

fn n_params() -> u32 {
    return 2u * p.m * p.n + p.m + p.n;
}

// W2[i, k] of the instance whose parameters start at po.
fn w2_at(po: u32, i: u32, k: u32) -> f32 {
    if p.tied != 0u { return fw_prm[po + k * p.n + i]; }
    return fw_prm[po + p.m * p.n + i * p.m + k];
}

fn sgn(v: f32) -> f32 {
    return select(select(0.0, -1.0, v < 0.0), 1.0, v > 0.0);
}

@compute @workgroup_size(FWG)
fn mlp_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = linear_index(gid, nwg, FWG);
    if row >= p.instances * p.rows { return; }
    let n = p.n;
    let m = p.m;
    let inst = row / p.rows;
    let po = inst * n_params();
    let ob1 = po + 2u * m * n;
    let ob2 = ob1 + m;
    let xo = row * n;
    let ho = row * m;

    for (var k = 0u; k < m; k++) {
        var s = fw_prm[ob1 + k];
        for (var i = 0u; i < n; i++) {
            let xi = fw_x[xo + i];
            if xi != 0.0 { s = s + fw_prm[po + k * n + i] * xi; }
        }
        fw_dpre[ho + k] = s;
    }
    let kk = fw_topk[inst];
    for (var k = 0u; k < m; k++) {
        let pk = fw_dpre[ho + k];
        var hk = pk;
        if p.act_h == 1u { hk = max(pk, 0.0); }
        if p.act_h == 2u {
            var rank = 0u;
            for (var j = 0u; j < m; j++) {
                let pj = fw_dpre[ho + j];
                if pj > pk || (pj == pk && j < k) { rank = rank + 1u; }
            }
            hk = select(0.0, max(pk, 0.0), rank < kk);
        }
        fw_h[ho + k] = hk;
    }

    var l = 0.0;
    for (var i = 0u; i < n; i++) {
        var o = fw_prm[ob2 + i];
        for (var k = 0u; k < m; k++) {
            let hk = fw_h[ho + k];
            if hk != 0.0 { o = o + w2_at(po, i, k) * hk; }
        }
        var y = o;
        if p.relu_out != 0u { y = max(o, 0.0); }
        let xi = fw_x[xo + i];
        var t = xi;
        if p.abs_target != 0u { t = abs(xi); }
        let d = y - t;
        let id = fw_imp[inst * n + i] * d;
        l = l + id * d;
        var gi = 0.0;
        if p.relu_out == 0u || o > 0.0 { gi = p.scale * id; }
        fw_g[xo + i] = gi;
    }
    var la = 0.0;
    for (var k = 0u; k < m; k++) { la = la + abs(fw_h[ho + k]); }
    let l1 = fw_l1[inst];
    fw_loss[row] = l + l1 * la;

    let coef = l1 * p.inv_rows;
    for (var k = 0u; k < m; k++) {
        var s = 0.0;
        for (var i = 0u; i < n; i++) {
            let gi = fw_g[xo + i];
            if gi != 0.0 { s = s + w2_at(po, i, k) * gi; }
        }
        let hk = fw_h[ho + k];
        s = s + coef * sgn(hk);
        fw_dpre[ho + k] = select(0.0, s, p.act_h == 0u || hk > 0.0);
    }
}

// ---------------------------------------------------------------- grad
// part[e, c, j] for parameter j of instance e over rows c chunk .. (c + 1) chunk, in row
// order (formulas: the twin). One invocation per (instance, chunk, parameter).
@group(0) @binding(1) var<storage, read> tg_x: array<f32>;            // (instances, rows, n)
@group(0) @binding(2) var<storage, read> tg_g: array<f32>;            // (instances, rows, n)
@group(0) @binding(3) var<storage, read> tg_h: array<f32>;            // (instances, rows, m)
@group(0) @binding(4) var<storage, read> tg_dpre: array<f32>;         // (instances, rows, m)
@group(0) @binding(5) var<storage, read_write> tg_part: array<f32>;   // (instances, chunks, P)

@compute @workgroup_size(WG)
fn mlp_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let np = n_params();
    let e = linear_index(gid, nwg, WG);
    if e >= p.instances * p.chunks * np { return; }
    let j = e % np;
    let ic = e / np;
    let c = ic % p.chunks;
    let inst = ic / p.chunks;
    let n = p.n;
    let m = p.m;
    let mn = m * n;
    let r0 = c * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    var acc = 0.0;
    if j < mn {
        let k = j / n;
        let i = j % n;
        for (var r = r0; r < r1; r++) {
            let row = inst * p.rows + r;
            let xi = tg_x[row * n + i];
            if xi != 0.0 { acc = acc + tg_dpre[row * m + k] * xi; }
            if p.tied != 0u {
                let gi = tg_g[row * n + i];
                if gi != 0.0 { acc = acc + gi * tg_h[row * m + k]; }
            }
        }
    } else if j < 2u * mn {
        if p.tied == 0u {
            let i = (j - mn) / m;
            let k = (j - mn) % m;
            for (var r = r0; r < r1; r++) {
                let row = inst * p.rows + r;
                let gi = tg_g[row * n + i];
                if gi != 0.0 { acc = acc + gi * tg_h[row * m + k]; }
            }
        }
    } else if j < 2u * mn + m {
        if p.hidden_bias != 0u {
            let k = j - 2u * mn;
            for (var r = r0; r < r1; r++) {
                acc = acc + tg_dpre[(inst * p.rows + r) * m + k];
            }
        }
    } else {
        let i = j - 2u * mn - m;
        for (var r = r0; r < r1; r++) {
            acc = acc + tg_g[(inst * p.rows + r) * n + i];
        }
    }
    tg_part[e] = acc;
}
