// The decoder-norm rescale of SAELens's TopK (`--decoder-norm rescale`): the step runs on
// the unit-row view of the parameters (rescale_rows, scale_cols) and its gradients are
// mapped back (rescale_grad_rows, scale_cols). Launchers: src/kernels/rescale.rs. CPU
// twins: src/reference/optim.rs rescale_view / rescale_grads (f64 sums there, f32 in a
// fixed sequential order here).

struct Params {
    len: u32,  // items: latents n (rescale_rows, rescale_grad_rows) or elements d * n (scale_cols)
    d: u32,    // elements per decoder row
    n: u32,    // latents (columns of W_enc)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256;

// rescale_rows: per latent i, norms[i] = max(||w_dec[i]||, 1e-8), u[i] = w_dec[i] / norms[i],
// b_enc_e[i] = b_enc[i] * norms[i].
@group(0) @binding(1) var<storage, read> rr_w_dec: array<f32>;         // (n, d)
@group(0) @binding(2) var<storage, read> rr_b_enc: array<f32>;         // (n)
@group(0) @binding(3) var<storage, read_write> rr_u: array<f32>;       // (n, d)
@group(0) @binding(4) var<storage, read_write> rr_b_enc_e: array<f32>; // (n)
@group(0) @binding(5) var<storage, read_write> rr_norms: array<f32>;   // (n)

@compute @workgroup_size(WG)
fn rescale_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    let base = i * p.d;
    var ss = 0.0;
    for (var j = 0u; j < p.d; j++) {
        let w = rr_w_dec[base + j];
        ss += w * w;
    }
    let norm = max(sqrt(ss), 1e-8);
    for (var j = 0u; j < p.d; j++) {
        rr_u[base + j] = rr_w_dec[base + j] / norm;
    }
    rr_b_enc_e[i] = rr_b_enc[i] * norm;
    rr_norms[i] = norm;
}

// scale_cols: x[j, i] *= norms[i] over a (rows, n) matrix, in place.
@group(0) @binding(1) var<storage, read_write> sc_x: array<f32>;  // (len / n, n)
@group(0) @binding(2) var<storage, read> sc_norms: array<f32>;    // (n)

@compute @workgroup_size(WG)
fn scale_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_index(gid, nwg, WG);
    if e >= p.len { return; }
    sc_x[e] = sc_x[e] * sc_norms[e % p.n];
}

// rescale_grad_rows: per latent i, s = sum_j w_enc[j, i] g_enc[j, i] + b_enc[i] g_benc[i],
// c = g_dec[i] . u[i]; g_dec[i] = (g_dec[i] - c u[i]) / norms[i] + s u[i];
// g_benc[i] *= norms[i]. (g_enc is scaled after, by scale_cols.)
@group(0) @binding(1) var<storage, read> rg_w_enc: array<f32>;        // (d, n)
@group(0) @binding(2) var<storage, read> rg_b_enc: array<f32>;        // (n)
@group(0) @binding(3) var<storage, read> rg_u: array<f32>;            // (n, d)
@group(0) @binding(4) var<storage, read> rg_norms: array<f32>;        // (n)
@group(0) @binding(5) var<storage, read> rg_g_enc: array<f32>;        // (d, n)
@group(0) @binding(6) var<storage, read_write> rg_g_benc: array<f32>; // (n)
@group(0) @binding(7) var<storage, read_write> rg_g_dec: array<f32>;  // (n, d)

@compute @workgroup_size(WG)
fn rescale_grad_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    var s = 0.0;
    for (var j = 0u; j < p.d; j++) {
        s += rg_w_enc[j * p.n + i] * rg_g_enc[j * p.n + i];
    }
    s += rg_b_enc[i] * rg_g_benc[i];
    let base = i * p.d;
    var c = 0.0;
    for (var j = 0u; j < p.d; j++) {
        c += rg_g_dec[base + j] * rg_u[base + j];
    }
    let norm = rg_norms[i];
    for (var j = 0u; j < p.d; j++) {
        let u = rg_u[base + j];
        rg_g_dec[base + j] = (rg_g_dec[base + j] - c * u) / norm + s * u;
    }
    rg_g_benc[i] = rg_g_benc[i] * norm;
}
