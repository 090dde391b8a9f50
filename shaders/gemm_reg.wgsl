// gemm_reg: the register-blocked GEMM for hardware adapters.
// C (m, n) = alpha * op(A) op(B) + bias (n) + beta * C, exactly the contract of
// shaders/gemm.wgsl (op(A) is (m, k): A stored (m, k), or (k, m) when TRANS_A; op(B) is
// (k, n): B stored (k, n), or (n, k) when TRANS_B; USE_BETA false: C is never read).
// Launcher: src/kernels/gemm/reg.rs (reached through GemmPath::Reg in src/kernels/gemm/mod.rs;
// the batched entry point through src/kernels/gemm/batched.rs).
// CPU twin: src/reference/gemm.rs (gemm).
//
// Shape (after the register-tiled WGSL kernels of gpu.cpp and wgpu-mm, themselves the
// classic CUDA "kernel 9/10" family):
// * one workgroup of RG_NT = RG_WX * RG_WY invocations (1-D) computes a BM x BN tile of C
//   with BM = 8 RG_WY, BN = 8 RG_WX (16 x 16 invocations: 128 x 128);
// * invocation (tx, ty) = (li % RG_WX, li / RG_WX) owns 8 x 8 outputs: rows 4 ty + i and
//   BM / 2 + 4 ty + i, columns 4 tx + j and BN / 2 + 4 tx + j (i, j < 4), held as 16 vec4
//   accumulators, so each k step reads two vec4 of A and two vec4 of B from workgroup
//   memory for 64 multiply-adds (a warp's B reads are 16 consecutive vec4, conflict-free;
//   its A reads are two broadcasts);
// * op(A) is staged transposed (k-major, as BK x BM/4 vec4 of 4 consecutive rows) and
//   op(B) k-major (BK x BN/4 vec4), whatever the storage layout: each invocation gathers 4
//   elements along the tile's m (or n) side from global memory, consecutive invocations
//   walking the stored contiguous direction (coalesced), and writes one vec4;
// * two stages in workgroup memory and the next stage prefetched into registers before the
//   current one is multiplied: one barrier per BK step;
// * bounds: a workgroup whose tile lies wholly inside C, for a k step wholly inside k,
//   loads and stores without checks (a uniform branch); edge tiles check each element
//   (loads give 0 outside, stores are skipped);
// * the _bmax entry points also write bmax[r, j] = max over the 32 columns of block j of
//   key_of(C[r, c]) (_bmax_off: of key_of(C[r, c] - off[c])), as block_max in
//   shaders/codes.wgsl, from the values just stored: per invocation the largest key of
//   each of its row quads, combined by workgroup atomicMax (BN is a multiple of 32, so a
//   tile holds whole blocks; a last partial block counts only columns < n).
// * gemm_reg_bmax_batched: gemm_reg_bmax over several products of one shape at once (a
//   sweep's same-shape members' encoders), product z = workgroup_id.z reading and writing
//   its slot of each pooled binding, RG_Z* elements after the previous one's; the other
//   entry points have z = 0, so every address is the single product's.
// Each output accumulates its k products in order, as the reference does.
// Tile sizes are override constants; GemmTuning in src/kernels/gemm.rs picks them per
// adapter type. Limits the launcher checks: RG_WX a multiple of 4, at most 4 staged vec4
// of A and of B per invocation (2 RG_BK <= 4 RG_WX and 4 RG_WY).

// Params, p, TRANS_A, TRANS_B, HAS_BIAS, USE_BETA and key4: shaders/gemm_head.wgsl (put ahead
// of this module by src/kernels/gemm/reg.rs).

override RG_WX: u32 = 16u;
override RG_WY: u32 = 16u;
override RG_BK: u32 = 8u;
override RG_NT: u32 = RG_WX * RG_WY;
override RG_BM: u32 = RG_WY * 8u;
override RG_BN: u32 = RG_WX * 8u;
// vec4 per k row of a staged tile
override RG_BM4: u32 = RG_WY * 2u;
override RG_BN4: u32 = RG_WX * 2u;
// staged vec4 per stage: BK BM / 4 of A, BK BN / 4 of B
override RG_SA: u32 = RG_BK * RG_WY * 2u;
override RG_SB: u32 = RG_BK * RG_WX * 2u;
// gemm_reg_bmax_batched: elements between two products' slots of A, B, bias, C and bmax
// (0 elsewhere: one product).
override RG_ZA: u32 = 0u;
override RG_ZB: u32 = 0u;
override RG_ZBIAS: u32 = 0u;
override RG_ZC: u32 = 0u;
override RG_ZBMAX: u32 = 0u;
// bmax blocks of 32 columns per tile row, and per tile
override RG_NBT: u32 = RG_WX / 4u;
override RG_BMT: u32 = RG_WY * 8u * (RG_WX / 4u);

var<workgroup> rg_as: array<vec4<f32>, RG_SA * 2u>; // (2 stages, BK, BM / 4): op(A)^T
var<workgroup> rg_bs: array<vec4<f32>, RG_SB * 2u>; // (2 stages, BK, BN / 4): op(B)
var<workgroup> rg_bm: array<atomic<u32>, RG_BMT>;   // (BM, BN / 32): _bmax entry points only

// The next stage, prefetched: at most 4 vec4 of A and of B per invocation (slots li +
// RG_NT j, j < 4). Separate variables, and every array below indexed by constants only:
// a dynamically indexed array may be placed in (slow) local memory by a driver.
var<private> rg_ra0: vec4<f32>;
var<private> rg_ra1: vec4<f32>;
var<private> rg_ra2: vec4<f32>;
var<private> rg_ra3: vec4<f32>;
var<private> rg_rb0: vec4<f32>;
var<private> rg_rb1: vec4<f32>;
var<private> rg_rb2: vec4<f32>;
var<private> rg_rb3: vec4<f32>;
// The product of a batched launch (gemm_reg_bmax_batched); 0 in the other entry points.
var<private> rg_z: u32;

@group(0) @binding(1) var<storage, read> rg_a: array<f32>;        // (m, k) or (k, m)
@group(0) @binding(2) var<storage, read> rg_b: array<f32>;        // (k, n) or (n, k)
@group(0) @binding(3) var<storage, read> rg_bias: array<f32>;     // (n); unread without HAS_BIAS
@group(0) @binding(4) var<storage, read_write> rg_c: array<f32>;  // (m, n)
@group(0) @binding(5) var<storage, read_write> rg_bmax: array<u32>; // (m, ceil(n / 32)); _bmax only
@group(0) @binding(6) var<storage, read> rg_off: array<f32>;      // (n); _bmax_off only

// op(A)[r, kk], 0 outside (unless `full`: the caller knows it is inside).
fn rg_a_at(r: u32, kk: u32, full: bool) -> f32 {
    if full || (r < p.m && kk < p.k) {
        if TRANS_A {
            return rg_a[rg_z * RG_ZA + kk * p.m + r];
        }
        return rg_a[rg_z * RG_ZA + r * p.k + kk];
    }
    return 0.0;
}

// op(B)[kk, c], 0 outside (unless `full`).
fn rg_b_at(kk: u32, c: u32, full: bool) -> f32 {
    if full || (kk < p.k && c < p.n) {
        if TRANS_B {
            return rg_b[rg_z * RG_ZB + c * p.k + kk];
        }
        return rg_b[rg_z * RG_ZB + kk * p.n + c];
    }
    return 0.0;
}

// Staged vec4 s of A: (kk, q) = 4 rows 4 q .. 4 q + 4 at k step kk. Consecutive s walk
// the stored contiguous direction: k (kk fastest) when A is (m, k), m (q fastest) when
// A is (k, m). Likewise for B with n for m.
fn rg_a_slot(s: u32) -> vec2<u32> {
    if TRANS_A {
        return vec2<u32>(s / RG_BM4, s % RG_BM4);
    }
    return vec2<u32>(s % RG_BK, s / RG_BK);
}

fn rg_b_slot(s: u32) -> vec2<u32> {
    if TRANS_B {
        return vec2<u32>(s % RG_BK, s / RG_BK);
    }
    return vec2<u32>(s / RG_BN4, s % RG_BN4);
}

// Staged vec4 s of A at the stage starting at k0 (0 past the edges unless `full`).
fn rg_fetch_a(s: u32, row0: u32, k0: u32, full: bool) -> vec4<f32> {
    let kq = rg_a_slot(s);
    let r = row0 + 4u * kq.y;
    let kk = k0 + kq.x;
    return vec4<f32>(
        rg_a_at(r, kk, full),
        rg_a_at(r + 1u, kk, full),
        rg_a_at(r + 2u, kk, full),
        rg_a_at(r + 3u, kk, full),
    );
}

fn rg_fetch_b(s: u32, col0: u32, k0: u32, full: bool) -> vec4<f32> {
    let kq = rg_b_slot(s);
    let c = col0 + 4u * kq.y;
    let kk = k0 + kq.x;
    return vec4<f32>(
        rg_b_at(kk, c, full),
        rg_b_at(kk, c + 1u, full),
        rg_b_at(kk, c + 2u, full),
        rg_b_at(kk, c + 3u, full),
    );
}

// Global -> registers: the stage starting at k0.
fn rg_fetch(li: u32, row0: u32, col0: u32, k0: u32, inside: bool) {
    let full = inside && k0 + RG_BK <= p.k;
    if li < RG_SA {
        rg_ra0 = rg_fetch_a(li, row0, k0, full);
    }
    if li + RG_NT < RG_SA {
        rg_ra1 = rg_fetch_a(li + RG_NT, row0, k0, full);
    }
    if li + 2u * RG_NT < RG_SA {
        rg_ra2 = rg_fetch_a(li + 2u * RG_NT, row0, k0, full);
    }
    if li + 3u * RG_NT < RG_SA {
        rg_ra3 = rg_fetch_a(li + 3u * RG_NT, row0, k0, full);
    }
    if li < RG_SB {
        rg_rb0 = rg_fetch_b(li, col0, k0, full);
    }
    if li + RG_NT < RG_SB {
        rg_rb1 = rg_fetch_b(li + RG_NT, col0, k0, full);
    }
    if li + 2u * RG_NT < RG_SB {
        rg_rb2 = rg_fetch_b(li + 2u * RG_NT, col0, k0, full);
    }
    if li + 3u * RG_NT < RG_SB {
        rg_rb3 = rg_fetch_b(li + 3u * RG_NT, col0, k0, full);
    }
}

fn rg_put_a(s: u32, buf: u32, v: vec4<f32>) {
    if s < RG_SA {
        let kq = rg_a_slot(s);
        rg_as[buf * RG_SA + kq.x * RG_BM4 + kq.y] = v;
    }
}

fn rg_put_b(s: u32, buf: u32, v: vec4<f32>) {
    if s < RG_SB {
        let kq = rg_b_slot(s);
        rg_bs[buf * RG_SB + kq.x * RG_BN4 + kq.y] = v;
    }
}

// Registers -> workgroup stage `buf`.
fn rg_stage(li: u32, buf: u32) {
    rg_put_a(li, buf, rg_ra0);
    rg_put_a(li + RG_NT, buf, rg_ra1);
    rg_put_a(li + 2u * RG_NT, buf, rg_ra2);
    rg_put_a(li + 3u * RG_NT, buf, rg_ra3);
    rg_put_b(li, buf, rg_rb0);
    rg_put_b(li + RG_NT, buf, rg_rb1);
    rg_put_b(li + 2u * RG_NT, buf, rg_rb2);
    rg_put_b(li + 3u * RG_NT, buf, rg_rb3);
}

// The 8 x 8 accumulators of invocation (tx, ty) of the tile at (row0, col0): acc[2 i + h]
// holds row (i < 4: 4 ty + i, else BM / 2 + 4 ty + i - 4), columns (h = 0: 4 tx, h = 1:
// BN / 2 + 4 tx) .. + 4. Contains barriers: called in uniform control flow.
fn rg_product(li: u32, tx: u32, ty: u32, row0: u32, col0: u32) -> array<vec4<f32>, 16> {
    var acc: array<vec4<f32>, 16>; // zero-initialised
    let inside = row0 + RG_BM <= p.m && col0 + RG_BN <= p.n;
    let steps = (p.k + RG_BK - 1u) / RG_BK;
    if steps > 0u {
        rg_fetch(li, row0, col0, 0u, inside);
        rg_stage(li, 0u);
    }
    workgroupBarrier();
    for (var t = 0u; t < steps; t++) {
        let cur = t % 2u;
        let more = t + 1u < steps;
        if more {
            rg_fetch(li, row0, col0, (t + 1u) * RG_BK, inside);
        }
        let abase = cur * RG_SA;
        let bbase = cur * RG_SB;
        for (var kk = 0u; kk < RG_BK; kk++) {
            let a0 = rg_as[abase + kk * RG_BM4 + ty];
            let a1 = rg_as[abase + kk * RG_BM4 + RG_WY + ty];
            let b0 = rg_bs[bbase + kk * RG_BN4 + tx];
            let b1 = rg_bs[bbase + kk * RG_BN4 + RG_WX + tx];
            acc[0] += a0.x * b0;
            acc[1] += a0.x * b1;
            acc[2] += a0.y * b0;
            acc[3] += a0.y * b1;
            acc[4] += a0.z * b0;
            acc[5] += a0.z * b1;
            acc[6] += a0.w * b0;
            acc[7] += a0.w * b1;
            acc[8] += a1.x * b0;
            acc[9] += a1.x * b1;
            acc[10] += a1.y * b0;
            acc[11] += a1.y * b1;
            acc[12] += a1.z * b0;
            acc[13] += a1.z * b1;
            acc[14] += a1.w * b0;
            acc[15] += a1.w * b1;
        }
        if more {
            rg_stage(li, 1u - cur);
        }
        workgroupBarrier();
    }
    return acc;
}

// Row of C held in acc[2 i + h], and its first column.
fn rg_row(i: u32, ty: u32, row0: u32) -> u32 {
    return row0 + select(4u * ty + i, RG_BM / 2u + 4u * ty + i - 4u, i >= 4u);
}

fn rg_col(h: u32, tx: u32, col0: u32) -> u32 {
    return col0 + select(4u * tx, RG_BN / 2u + 4u * tx, h == 1u);
}

// bias[c .. c + 4], 0 past n.
fn rg_bias4(c: u32) -> vec4<f32> {
    if !HAS_BIAS {
        return vec4<f32>(0.0);
    }
    return vec4<f32>(
        select(0.0, rg_bias[rg_z * RG_ZBIAS + min(c, p.n - 1u)], c < p.n),
        select(0.0, rg_bias[rg_z * RG_ZBIAS + min(c + 1u, p.n - 1u)], c + 1u < p.n),
        select(0.0, rg_bias[rg_z * RG_ZBIAS + min(c + 2u, p.n - 1u)], c + 2u < p.n),
        select(0.0, rg_bias[rg_z * RG_ZBIAS + min(c + 3u, p.n - 1u)], c + 3u < p.n),
    );
}

// C[i] when `ok` (else 0).
fn rg_old(i: u32, ok: bool) -> f32 {
    if ok {
        return rg_c[rg_z * RG_ZC + i];
    }
    return 0.0;
}

fn rg_put(i: u32, v: f32, ok: bool) {
    if ok {
        rg_c[rg_z * RG_ZC + i] = v;
    }
}

// The epilogue context of one invocation.
struct Out {
    row0: u32,
    col0: u32,
    tx: u32,
    ty: u32,
    full: bool, // the tile lies wholly inside C: no checks
}

// Finishes acc[2 i + h] (row, c .. c + 4), alpha * acc + bias + beta * C in the
// reference's order, stores it where inside C, and returns the values.
fn rg_store(o: Out, i: u32, h: u32, acc: vec4<f32>, bias: vec4<f32>) -> vec4<f32> {
    let row = rg_row(i, o.ty, o.row0);
    let c = rg_col(h, o.tx, o.col0);
    let base = row * p.n + c;
    let rin = o.full || row < p.m;
    let ok = vec4<bool>(
        rin && (o.full || c < p.n),
        rin && (o.full || c + 1u < p.n),
        rin && (o.full || c + 2u < p.n),
        rin && (o.full || c + 3u < p.n),
    );
    var v = p.alpha * acc;
    if HAS_BIAS {
        v += bias;
    }
    if USE_BETA {
        let c_old = vec4<f32>(
            rg_old(base, ok.x),
            rg_old(base + 1u, ok.y),
            rg_old(base + 2u, ok.z),
            rg_old(base + 3u, ok.w),
        );
        v += p.beta * c_old;
    }
    rg_put(base, v.x, ok.x);
    rg_put(base + 1u, v.y, ok.y);
    rg_put(base + 2u, v.z, ok.z);
    rg_put(base + 3u, v.w, ok.w);
    return v;
}

fn rg_tile(wid: vec3<u32>, nwg: vec3<u32>) -> vec2<u32> {
    return vec2<u32>((wid.x + wid.z * nwg.x) * RG_BM, wid.y * RG_BN);
}

fn rg_out(li: u32, t0: vec2<u32>) -> Out {
    let full = t0.x + RG_BM <= p.m && t0.y + RG_BN <= p.n;
    return Out(t0.x, t0.y, li % RG_WX, li / RG_WX, full);
}

@compute @workgroup_size(RG_NT)
fn gemm_reg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t0 = rg_tile(wid, nwg);
    if t0.x >= p.m {
        return; // a spare workgroup of the folded grid (uniform: the whole workgroup)
    }
    let o = rg_out(li, t0);
    let acc = rg_product(li, o.tx, o.ty, t0.x, t0.y);
    let bias0 = rg_bias4(rg_col(0u, o.tx, t0.y));
    let bias1 = rg_bias4(rg_col(1u, o.tx, t0.y));
    rg_store(o, 0u, 0u, acc[0], bias0);
    rg_store(o, 0u, 1u, acc[1], bias1);
    rg_store(o, 1u, 0u, acc[2], bias0);
    rg_store(o, 1u, 1u, acc[3], bias1);
    rg_store(o, 2u, 0u, acc[4], bias0);
    rg_store(o, 2u, 1u, acc[5], bias1);
    rg_store(o, 3u, 0u, acc[6], bias0);
    rg_store(o, 3u, 1u, acc[7], bias1);
    rg_store(o, 4u, 0u, acc[8], bias0);
    rg_store(o, 4u, 1u, acc[9], bias1);
    rg_store(o, 5u, 0u, acc[10], bias0);
    rg_store(o, 5u, 1u, acc[11], bias1);
    rg_store(o, 6u, 0u, acc[12], bias0);
    rg_store(o, 6u, 1u, acc[13], bias1);
    rg_store(o, 7u, 0u, acc[14], bias0);
    rg_store(o, 7u, 1u, acc[15], bias1);
}

// Stores acc[2 i + h] as rg_store does and folds the largest key_of(value - off) of its
// in-range columns into the tile's block maximum (off is zero for gemm_reg_bmax:
// key_of(v - 0) = key_of(v), -0 folded either way).
fn rg_store_key(o: Out, i: u32, h: u32, acc: vec4<f32>, bias: vec4<f32>, off: vec4<f32>) {
    let v = rg_store(o, i, h, acc, bias);
    let c = rg_col(h, o.tx, o.col0);
    // columns past n never raise the maximum
    let in_n = vec4<bool>(c < p.n, c + 1u < p.n, c + 2u < p.n, c + 3u < p.n);
    let key = select(vec4<u32>(0u), key4(v - off), in_n);
    let best = max(max(key.x, key.y), max(key.z, key.w));
    let row = rg_row(i, o.ty, o.row0);
    atomicMax(&rg_bm[(row - o.row0) * RG_NBT + (c - o.col0) / 32u], best);
}

// The stores and the block maxima: after the barrier, the tile's (BM, BN / 32) maxima go
// to bmax (rows < m, blocks starting before n).
fn rg_bmax_epilogue(li: u32, o: Out, acc: array<vec4<f32>, 16>, off0: vec4<f32>, off1: vec4<f32>) {
    let bias0 = rg_bias4(rg_col(0u, o.tx, o.col0));
    let bias1 = rg_bias4(rg_col(1u, o.tx, o.col0));
    rg_store_key(o, 0u, 0u, acc[0], bias0, off0);
    rg_store_key(o, 0u, 1u, acc[1], bias1, off1);
    rg_store_key(o, 1u, 0u, acc[2], bias0, off0);
    rg_store_key(o, 1u, 1u, acc[3], bias1, off1);
    rg_store_key(o, 2u, 0u, acc[4], bias0, off0);
    rg_store_key(o, 2u, 1u, acc[5], bias1, off1);
    rg_store_key(o, 3u, 0u, acc[6], bias0, off0);
    rg_store_key(o, 3u, 1u, acc[7], bias1, off1);
    rg_store_key(o, 4u, 0u, acc[8], bias0, off0);
    rg_store_key(o, 4u, 1u, acc[9], bias1, off1);
    rg_store_key(o, 5u, 0u, acc[10], bias0, off0);
    rg_store_key(o, 5u, 1u, acc[11], bias1, off1);
    rg_store_key(o, 6u, 0u, acc[12], bias0, off0);
    rg_store_key(o, 6u, 1u, acc[13], bias1, off1);
    rg_store_key(o, 7u, 0u, acc[14], bias0, off0);
    rg_store_key(o, 7u, 1u, acc[15], bias1, off1);
    workgroupBarrier();
    let nb = (p.n + 31u) / 32u;
    for (var e = li; e < RG_BMT; e += RG_NT) {
        let r = o.row0 + e / RG_NBT;
        let j = e % RG_NBT;
        if r < p.m && o.col0 + 32u * j < p.n {
            rg_bmax[rg_z * RG_ZBMAX + r * nb + o.col0 / 32u + j] = atomicLoad(&rg_bm[e]);
        }
    }
}

fn rg_bm_clear(li: u32) {
    for (var e = li; e < RG_BMT; e += RG_NT) {
        atomicStore(&rg_bm[e], 0u);
    }
}

@compute @workgroup_size(RG_NT)
fn gemm_reg_bmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t0 = rg_tile(wid, nwg);
    if t0.x >= p.m {
        return;
    }
    let o = rg_out(li, t0);
    rg_bm_clear(li); // ordered before the atomics by rg_product's barriers
    let acc = rg_product(li, o.tx, o.ty, t0.x, t0.y);
    rg_bmax_epilogue(li, o, acc, vec4<f32>(0.0), vec4<f32>(0.0));
}

// gemm_reg_bmax over the slots of pooled bindings: product z = workgroup_id.z, its rows
// along x only (the launcher checks they fit one grid dimension).
@compute @workgroup_size(RG_NT)
fn gemm_reg_bmax_batched(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    rg_z = wid.z;
    let t0 = vec2<u32>(wid.x * RG_BM, wid.y * RG_BN);
    if t0.x >= p.m {
        return;
    }
    let o = rg_out(li, t0);
    rg_bm_clear(li);
    let acc = rg_product(li, o.tx, o.ty, t0.x, t0.y);
    rg_bmax_epilogue(li, o, acc, vec4<f32>(0.0), vec4<f32>(0.0));
}

// off[c .. c + 4], 0 past n.
fn rg_off4(c: u32) -> vec4<f32> {
    return vec4<f32>(
        select(0.0, rg_off[min(c, p.n - 1u)], c < p.n),
        select(0.0, rg_off[min(c + 1u, p.n - 1u)], c + 1u < p.n),
        select(0.0, rg_off[min(c + 2u, p.n - 1u)], c + 2u < p.n),
        select(0.0, rg_off[min(c + 3u, p.n - 1u)], c + 3u < p.n),
    );
}

@compute @workgroup_size(RG_NT)
fn gemm_reg_bmax_off(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let t0 = rg_tile(wid, nwg);
    if t0.x >= p.m {
        return;
    }
    let o = rg_out(li, t0);
    rg_bm_clear(li);
    let acc = rg_product(li, o.tx, o.ty, t0.x, t0.y);
    let off0 = rg_off4(rg_col(0u, o.tx, t0.y));
    let off1 = rg_off4(rg_col(1u, o.tx, t0.y));
    rg_bmax_epilogue(li, o, acc, off0, off1);
}
