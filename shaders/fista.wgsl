// FISTA (Beck & Teboulle 2009) for non-negative sparse coding, the parts of an iteration
// that are not matrix products:
//   min over z >= 0 of 1/2 ||x - b - z W||^2 + lambda ||z||_1, per row,
//   g = (y W + b - x) W^T                                   (two gemm calls + sub)
//   z_k = max(y - g / L - lambda / L, 0)                    (fista_step)
//   y   = z_k + ((t_k - 1) / t_{k+1}) (z_k - z_{k-1})       (fista_step)
//   per-row ||z_k - z_{k-1}||^2 and ||z_k||^2               (fista_row_change, at checks)
// Launchers: src/kernels/fista.rs. CPU twins: src/reference/fista.rs.
//
// fista_step is elementwise (1-D grid folded into the per-dimension limit, one element or
// one vec4 per invocation, consecutive lanes on consecutive addresses). The step is
// written to a second z buffer (the caller ping-pongs two), so z_{k-1} is still there for
// the momentum term and for fista_row_change.

override WG: u32 = 256;

struct StepParams {
    len: u32,        // rows * n
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    step: f32,       // 1 / L
    threshold: f32,  // lambda / L
    momentum: f32,   // (t_k - 1) / t_{k+1}
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> sp: StepParams;

// fista_step: v = y - step * g; z_new = max(v - threshold, 0);
//             y = z_new + momentum * (z_new - z_old)
@group(0) @binding(1) var<storage, read> fs_g: array<f32>;            // (rows, n)
@group(0) @binding(2) var<storage, read> fs_z_old: array<f32>;        // (rows, n)
@group(0) @binding(3) var<storage, read_write> fs_y: array<f32>;      // (rows, n)
@group(0) @binding(4) var<storage, read_write> fs_z_new: array<f32>;  // (rows, n)

@compute @workgroup_size(WG)
fn fista_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= sp.len { return; }
    let v = fs_y[i] - sp.step * fs_g[i];
    let z = max(v - sp.threshold, 0.0);
    fs_z_new[i] = z;
    fs_y[i] = z + sp.momentum * (z - fs_z_old[i]);
}

// fista_step_vec4: the same for len % 4 == 0, one vec4 per invocation.
@group(0) @binding(1) var<storage, read> fs4_g: array<vec4<f32>>;            // (rows, n / 4)
@group(0) @binding(2) var<storage, read> fs4_z_old: array<vec4<f32>>;        // (rows, n / 4)
@group(0) @binding(3) var<storage, read_write> fs4_y: array<vec4<f32>>;      // (rows, n / 4)
@group(0) @binding(4) var<storage, read_write> fs4_z_new: array<vec4<f32>>;  // (rows, n / 4)

@compute @workgroup_size(WG)
fn fista_step_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= sp.len / 4u { return; }
    let v = fs4_y[i] - sp.step * fs4_g[i];
    let z = max(v - vec4<f32>(sp.threshold), vec4<f32>(0.0));
    fs4_z_new[i] = z;
    fs4_y[i] = z + sp.momentum * (z - fs4_z_old[i]);
}

// ---------------------------------------------------------------- fista_row_change
// out[r, 0] = sum_j (z_new[r, j] - z_old[r, j])^2, out[r, 1] = sum_j z_new[r, j]^2.
// One invocation per row, summing its columns in order (four interleaved partial sums,
// added as (x + y) + (z + w), when n % 4 == 0). Run only at convergence checks.

struct ChangeParams {
    rows: u32,
    n: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> cp: ChangeParams;

@group(0) @binding(1) var<storage, read> fc_z_new: array<f32>;     // (rows, n)
@group(0) @binding(2) var<storage, read> fc_z_old: array<f32>;     // (rows, n)
@group(0) @binding(3) var<storage, read_write> fc_out: array<f32>; // (rows, 2)

@compute @workgroup_size(WG)
fn fista_row_change(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= cp.rows { return; }
    var dd = 0.0;
    var zz = 0.0;
    let base = r * cp.n;
    for (var j = 0u; j < cp.n; j++) {
        let a = fc_z_new[base + j];
        let e = a - fc_z_old[base + j];
        dd += e * e;
        zz += a * a;
    }
    fc_out[2u * r] = dd;
    fc_out[2u * r + 1u] = zz;
}

@group(0) @binding(1) var<storage, read> fc4_z_new: array<vec4<f32>>;  // (rows, n / 4)
@group(0) @binding(2) var<storage, read> fc4_z_old: array<vec4<f32>>;  // (rows, n / 4)
@group(0) @binding(3) var<storage, read_write> fc4_out: array<f32>;    // (rows, 2)

@compute @workgroup_size(WG)
fn fista_row_change_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, WG);
    if r >= cp.rows { return; }
    var dd = vec4<f32>(0.0);
    var zz = vec4<f32>(0.0);
    let n4 = cp.n / 4u;
    let base = r * n4;
    for (var j = 0u; j < n4; j++) {
        let a = fc4_z_new[base + j];
        let e = a - fc4_z_old[base + j];
        dd += e * e;
        zz += a * a;
    }
    fc4_out[2u * r] = (dd.x + dd.y) + (dd.z + dd.w);
    fc4_out[2u * r + 1u] = (zz.x + zz.y) + (zz.z + zz.w);
}
