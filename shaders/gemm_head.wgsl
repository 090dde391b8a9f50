
// ------------------------------------------------------------------ gemm_head
// Shared by the GEMM modules gemm, gemm_reg and gemm_subgroup (put ahead of each: the
// `SHADER` statics in src/kernels/gemm/): the parameters, the override constants and the
// epilogue helpers of their common contract.

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

// alpha * acc + bias + beta * c_old, in the reference's order; c_old only when USE_BETA.
fn finish(acc: f32, bias: f32, c_old: f32) -> f32 {
    return finish4(vec4<f32>(acc), vec4<f32>(bias), vec4<f32>(c_old)).x;
}

// finish on four columns.
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

// key_of of shaders/prelude.wgsl (unsigned order = float order, -0 folded onto +0) on each
// component, branch-free as there; must stay bit-identical to it.
fn key4(v: vec4<f32>) -> vec4<u32> {
    let raw = bitcast<vec4<u32>>(v);
    let b = select(raw, vec4<u32>(0u), raw == vec4<u32>(0x80000000u));
    return select(b | vec4<u32>(0x80000000u), ~b, (b & vec4<u32>(0x80000000u)) != vec4<u32>(0u));
}
