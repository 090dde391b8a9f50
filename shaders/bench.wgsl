// Ceilings for benches/kernels.rs, measured on the same adapter in the same run as the
// kernels they judge. Launchers: src/kernels/bench.rs. No CPU twins: these measure the
// device, they compute nothing the training step uses.

struct Params {
    iters: u32, // fma_peak: loop iterations per invocation
    len: u32,   // fma_peak: invocations; copy_vec4: vec4 elements
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 64;

// fma_peak: 8 independent vec4 accumulators, 4 multiply-adds each per iteration, no memory
// traffic in the loop (the best of 4-24 scalar / 4-8 vec4 accumulators on lavapipe). The
// multiplier comes from the parameters so that nothing folds; the sum is written out so
// that nothing is dropped. FLOPs: len * iters * 4 * 8 * 4 * 2.
@group(0) @binding(1) var<storage, read_write> fp_out: array<f32>; // (len)

@compute @workgroup_size(WG)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len {
        return;
    }
    let s = f32(i) * 1e-9;
    let mul = vec4<f32>(0.999 + f32(p.iters) * 1e-12);
    let add = vec4<f32>(1e-6);
    var x0 = vec4<f32>(s);
    var x1 = vec4<f32>(s + 0.001);
    var x2 = vec4<f32>(s + 0.002);
    var x3 = vec4<f32>(s + 0.003);
    var x4 = vec4<f32>(s + 0.004);
    var x5 = vec4<f32>(s + 0.005);
    var x6 = vec4<f32>(s + 0.006);
    var x7 = vec4<f32>(s + 0.007);
    // unrolled by hand: an inner loop of 4 costs ~30% here (lavapipe keeps it)
    for (var it = 0u; it < p.iters; it++) {
        x0 = fma(x0, mul, add);
        x1 = fma(x1, mul, add);
        x2 = fma(x2, mul, add);
        x3 = fma(x3, mul, add);
        x4 = fma(x4, mul, add);
        x5 = fma(x5, mul, add);
        x6 = fma(x6, mul, add);
        x7 = fma(x7, mul, add);

        x0 = fma(x0, mul, add);
        x1 = fma(x1, mul, add);
        x2 = fma(x2, mul, add);
        x3 = fma(x3, mul, add);
        x4 = fma(x4, mul, add);
        x5 = fma(x5, mul, add);
        x6 = fma(x6, mul, add);
        x7 = fma(x7, mul, add);

        x0 = fma(x0, mul, add);
        x1 = fma(x1, mul, add);
        x2 = fma(x2, mul, add);
        x3 = fma(x3, mul, add);
        x4 = fma(x4, mul, add);
        x5 = fma(x5, mul, add);
        x6 = fma(x6, mul, add);
        x7 = fma(x7, mul, add);

        x0 = fma(x0, mul, add);
        x1 = fma(x1, mul, add);
        x2 = fma(x2, mul, add);
        x3 = fma(x3, mul, add);
        x4 = fma(x4, mul, add);
        x5 = fma(x5, mul, add);
        x6 = fma(x6, mul, add);
        x7 = fma(x7, mul, add);
    }
    let t = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7));
    fp_out[i] = t.x + t.y + t.z + t.w;
}

// copy_vec4: dst = src, one vec4 per invocation. Bytes moved: len * 16 * 2.
@group(0) @binding(1) var<storage, read> cp_src: array<vec4<f32>>;       // (len)
@group(0) @binding(2) var<storage, read_write> cp_dst: array<vec4<f32>>; // (len)

@compute @workgroup_size(WG)
fn copy_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len {
        return;
    }
    cp_dst[i] = cp_src[i];
}
