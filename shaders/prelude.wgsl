// Shared helpers, prepended to every shader module but the generated gemm_subgroup.wgsl
// (the `shader!` macro in src/kernels/decl.rs);
// tests/shaders.rs parses and validates each concatenation with naga.

// The index of an invocation in a 1-D grid of `wg`-wide workgroups folded into (x, y)
// (src/gpu/launch.rs `grid_1d`); past the end when the fold rounds up, so callers guard.
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg;
}

// The index of a workgroup in a folded 1-D grid of workgroups.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Order-preserving u32 key of an f32: unsigned key order is float order, -0 folded onto +0
// (NaN never occurs in the inputs). Branch-free: a `var` assigned under a branch, inlined
// into divergent loops, came out wrong on lavapipe 22.3.
fn key_of(v: f32) -> u32 {
    let raw = bitcast<u32>(v);
    let b = select(raw, 0u, raw == 0x80000000u);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

