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

fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// relu_forward: z = max(pre, 0)
@group(0) @binding(1) var<storage, read> rf_pre: array<f32>;       // (rows, n)
@group(0) @binding(2) var<storage, read_write> rf_z: array<f32>;   // (rows, n)

@compute @workgroup_size(WG)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= p.len { return; }
    rf_z[i] = max(rf_pre[i], 0.0);
}

// relu_backward: dpre = dz where pre > 0, else 0
@group(0) @binding(1) var<storage, read> rb_pre: array<f32>;       // (rows, n)
@group(0) @binding(2) var<storage, read> rb_dz: array<f32>;        // (rows, n)
@group(0) @binding(3) var<storage, read_write> rb_dpre: array<f32>; // (rows, n)

@compute @workgroup_size(WG)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if i >= p.len { return; }
    rb_dpre[i] = select(0.0, rb_dz[i], rb_pre[i] > 0.0);
}
