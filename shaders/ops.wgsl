// Small training-step operations that belong to no larger family.
// Launchers: src/kernels/ops.rs. CPU twins: src/reference/ops.rs.

struct Params {
    len: u32,      // elements (add_into)
    first: u32,    // 1 on the first step (threshold_ema)
    decay: f32,    // EMA decay (threshold_ema)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256;

// add_into: a += b
@group(0) @binding(1) var<storage, read_write> ai_a: array<f32>; // (len)
@group(0) @binding(2) var<storage, read> ai_b: array<f32>;       // (len)

@compute @workgroup_size(WG)
fn add_into(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.len { return; }
    ai_a[i] = ai_a[i] + ai_b[i];
}

// threshold_ema: state = first ? max(thr, 0) : decay * state + (1 - decay) * max(thr, 0)
@group(0) @binding(1) var<storage, read> te_thr: array<f32>;          // (1) smallest kept value of this batch
@group(0) @binding(2) var<storage, read_write> te_state: array<f32>;  // (1) inference threshold

@compute @workgroup_size(1)
fn threshold_ema() {
    let t = max(te_thr[0], 0.0);
    if p.first == 1u {
        te_state[0] = t;
    } else {
        te_state[0] = p.decay * te_state[0] + (1.0 - p.decay) * t;
    }
}
