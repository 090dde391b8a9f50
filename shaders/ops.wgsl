// Small training-step operations that belong to no larger family.
// Launchers: src/kernels/ops.rs. CPU twins: src/reference/ops.rs.

struct Params {
    len: u32,       // elements (zero); gate slots (gate_plan)
    first: u32,     // 1 on the first step (threshold_ema)
    decay: f32,     // EMA decay (threshold_ema)
    index: u32,     // gate_plan: element of src holding the value
    threshold: u32, // gate_plan: flag = src[index] > threshold
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256;

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

// gate_plan: flag = src[index] > threshold; for each gated dispatch j < len, args[j] = its
// recorded grid table[j].xyz when table[j].w == flag, else (0, 0, 0) (src/gpu/launch.rs Gate).
@group(0) @binding(1) var<storage, read> gp_src: array<u32>;          // (>= index + 1)
@group(0) @binding(2) var<storage, read> gp_table: array<vec4<u32>>;  // (slots): grid, when
@group(0) @binding(3) var<storage, read_write> gp_args: array<u32>;   // (slots, 3)

@compute @workgroup_size(WG)
fn gate_plan(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = linear_index(gid, nwg, WG);
    if j >= p.len { return; }
    let flag = select(0u, 1u, gp_src[p.index] > p.threshold);
    let t = gp_table[j];
    let on = t.w == flag;
    gp_args[3u * j] = select(0u, t.x, on);
    gp_args[3u * j + 1u] = select(0u, t.y, on);
    gp_args[3u * j + 2u] = select(0u, t.z, on);
}

// zero: a = 0 (a tensor that a gated path leaves to be cleared, see src/sae/gpu.rs AuxK)
@group(0) @binding(1) var<storage, read_write> zr_a: array<f32>; // (len)

@compute @workgroup_size(WG)
fn zero(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    zr_a[i] = 0.0;
}

// unpack_f16: out[i] = the f32 value of the IEEE half in bits 16 * (i % 2) .. of src[i / 2]
// (a batch uploaded as f16 to halve the upload; src/sae/gpu.rs). Integer decoding, exact for
// every half (subnormals, infinities and NaN payloads included), on any adapter: no
// shader-f16 and no unpack2x16float, which may flush subnormals.
@group(0) @binding(1) var<storage, read> uh_src: array<u32>;        // (ceil(len / 2)) two halves each
@group(0) @binding(2) var<storage, read_write> uh_out: array<f32>;  // (len)

fn half_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0u {
        // zero or subnormal: m * 2^-24, exact in f32
        let v = f32(m) * 5.9604644775390625e-8;
        return select(v, -v, sign != 0u);
    }
    if e == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

@compute @workgroup_size(WG)
fn unpack_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    uh_out[i] = half_to_f32((uh_src[i / 2u] >> (16u * (i % 2u))) & 0xffffu);
}
