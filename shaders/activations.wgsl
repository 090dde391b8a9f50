// Activations, forward and backward, elementwise over a (rows, n) matrix of pre-activations.
// Launchers: src/kernels/activations.rs. CPU twins: src/reference/activations.rs.

struct Params {
    len: u32,   // rows * n
    n: u32,     // columns (latents)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256;

// relu_forward: z = max(pre, 0)
@group(0) @binding(1) var<storage, read> rf_pre: array<f32>;       // (rows, n)
@group(0) @binding(2) var<storage, read_write> rf_z: array<f32>;   // (rows, n)

@compute @workgroup_size(WG)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    rf_z[i] = max(rf_pre[i], 0.0);
}

// relu_backward: dpre = dz where pre > 0, else 0
@group(0) @binding(1) var<storage, read> rb_pre: array<f32>;       // (rows, n)
@group(0) @binding(2) var<storage, read> rb_dz: array<f32>;        // (rows, n)
@group(0) @binding(3) var<storage, read_write> rb_dpre: array<f32>; // (rows, n)

@compute @workgroup_size(WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    rb_dpre[i] = select(0.0, rb_dz[i], rb_pre[i] > 0.0);
}

// ---------------------------------------------------------------- jumprelu
// theta_i = exp(log_theta[i]); rectangle kernel R(u) = [|u| <= 1/2], u = (pre - theta_i) / eps
// (Rajamanoharan et al. 2024), evaluated as [|pre - theta_i| <= eps / 2]. Column kernels:
// one invocation per latent, so theta is computed once per invocation and reused down the
// rows; lanes of a workgroup read consecutive latents of one row.

struct JumpParams {
    rows: u32,
    n: u32,
    eps: f32,
    l0_scale: f32,
}

@group(0) @binding(0) var<uniform> jp: JumpParams;

override RB: u32 = 32;  // rows per invocation in jumprelu_forward

// jumprelu_forward: z = pre * [pre > theta]; invocation (i, rb) covers rows rb*RB .. +RB.
@group(0) @binding(1) var<storage, read> jf_pre: array<f32>;        // (rows, n)
@group(0) @binding(2) var<storage, read> jf_log_theta: array<f32>;  // (n)
@group(0) @binding(3) var<storage, read_write> jf_z: array<f32>;    // (rows, n)

@compute @workgroup_size(WG)
fn jumprelu_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let rb = gid.y;
    if i >= jp.n { return; }
    let theta = exp(jf_log_theta[i]);
    let r1 = min(rb * RB + RB, jp.rows);
    for (var r = rb * RB; r < r1; r++) {
        let k = r * jp.n + i;
        let v = jf_pre[k];
        jf_z[k] = select(0.0, v, v > theta);
    }
}

// jumprelu_backward: dpre = dz * [pre > theta];
// dlog_theta[i] = theta * (sum over rows in order, where R = 1, i.e. |pre - theta| <= eps / 2,
//                          of dz * (-theta / eps) + l0_scale * (-1 / eps)).
// One invocation per latent over all rows, in order; the window test needs no division and
// is a select, so lanes do not diverge.
@group(0) @binding(1) var<storage, read> jb_pre: array<f32>;              // (rows, n)
@group(0) @binding(2) var<storage, read> jb_dz: array<f32>;               // (rows, n)
@group(0) @binding(3) var<storage, read> jb_log_theta: array<f32>;        // (n)
@group(0) @binding(4) var<storage, read_write> jb_dpre: array<f32>;       // (rows, n)
@group(0) @binding(5) var<storage, read_write> jb_dlog_theta: array<f32>; // (n)

@compute @workgroup_size(WG)
fn jumprelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= jp.n { return; }
    let theta = exp(jb_log_theta[i]);
    let a = -theta / jp.eps;
    let b = jp.l0_scale * (-1.0 / jp.eps);
    let half = 0.5 * jp.eps;
    var acc = 0.0;
    for (var r = 0u; r < jp.rows; r++) {
        let k = r * jp.n + i;
        let v = jb_pre[k];
        let g = jb_dz[k];
        jb_dpre[k] = select(0.0, g, v > theta);
        // acc never holds -0.0, so adding +0.0 outside the window leaves it unchanged.
        acc += select(0.0, g * a + b, abs(v - theta) <= half);
    }
    jb_dlog_theta[i] = theta * acc;
}

// jumprelu_backward_vec4: the same for n % 4 == 0, four latents per invocation (vec4 loads;
// each component follows jumprelu_backward's operations and order exactly).
@group(0) @binding(1) var<storage, read> jb4_pre: array<vec4<f32>>;              // (rows, n / 4)
@group(0) @binding(2) var<storage, read> jb4_dz: array<vec4<f32>>;               // (rows, n / 4)
@group(0) @binding(3) var<storage, read> jb4_log_theta: array<vec4<f32>>;        // (n / 4)
@group(0) @binding(4) var<storage, read_write> jb4_dpre: array<vec4<f32>>;       // (rows, n / 4)
@group(0) @binding(5) var<storage, read_write> jb4_dlog_theta: array<vec4<f32>>; // (n / 4)

@compute @workgroup_size(WG)
fn jumprelu_backward_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    let n4 = jp.n / 4u;
    if i >= n4 { return; }
    let theta = exp(jb4_log_theta[i]);
    let a = -theta / jp.eps;
    let b = vec4<f32>(jp.l0_scale * (-1.0 / jp.eps));
    let half = vec4<f32>(0.5 * jp.eps);
    let zero = vec4<f32>(0.0);
    var acc = zero;
    for (var r = 0u; r < jp.rows; r++) {
        let k = r * n4 + i;
        let v = jb4_pre[k];
        let g = jb4_dz[k];
        jb4_dpre[k] = select(zero, g, v > theta);
        acc += select(zero, g * a + b, abs(v - theta) <= half);
    }
    jb4_dlog_theta[i] = theta * acc;
}
