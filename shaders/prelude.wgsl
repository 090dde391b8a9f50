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

// The workgroup that physical workgroup `g` of `groups` stands for, when a launch sized to
// a bound holds work for only its first `busy` workgroups (a count known on the device,
// such as the entries of this chunk's codes): the busy ones become every s-th physical
// workgroup (s = groups / busy), the idle ones fill the gaps, and past s * busy nothing
// moves. A permutation of 0..groups. A hardware GPU schedules workgroups as they free up, so
// the order costs nothing there; lavapipe hands each thread one contiguous range of
// workgroups, which put all the work of a mostly idle launch on one thread.
fn spread_group(g: u32, busy: u32, groups: u32) -> u32 {
    let a = clamp(busy, 1u, max(groups, 1u));
    let s = groups / a;
    if g >= s * a {
        return g;
    }
    let q = g / s;
    let r = g - q * s;
    return select(a + q * (s - 1u) + r - 1u, q, r == 0u);
}

// Order-preserving u32 key of an f32: unsigned key order is float order, -0 folded onto +0
// (NaN never occurs in the inputs). Branch-free: a `var` assigned under a branch, inlined
// into divergent loops, came out wrong on lavapipe 22.3.
fn key_of(v: f32) -> u32 {
    let raw = bitcast<u32>(v);
    let b = select(raw, 0u, raw == 0x80000000u);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}


// PCG hash (Jarzynski and Olano 2020); row_key chains the seed words, step, instance and row
// through it; draw(key, c) = (pcg(key ^ pcg(c)) >> 8) * 2^-24 in [0, 1), exact in f32.
// CPU twins: src/reference/toy.rs (pcg, row_key, draw). Used by toy.wgsl and toy_mlp.wgsl.

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn row_key(seed_lo: u32, seed_hi: u32, step: u32, inst: u32, row: u32) -> u32 {
    var k = pcg(seed_lo);
    k = pcg(k ^ seed_hi);
    k = pcg(k ^ step);
    k = pcg(k ^ inst);
    return pcg(k ^ row);
}

fn draw(key: u32, c: u32) -> f32 {
    return f32(pcg(key ^ pcg(c)) >> 8u) * (1.0 / 16777216.0);
}
