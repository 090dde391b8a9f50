// GEMM: C (m, n) = alpha * op(A) op(B) + bias (n, broadcast over rows) + beta * C.
// op(A) is (m, k): A stored (m, k), or (k, m) when TRANS_A. op(B) is (k, n): B stored (k, n),
// or (n, k) when TRANS_B. USE_BETA false (beta == 0) means C is never read (it may hold NaN).
// Launchers: src/kernels/gemm.rs. CPU twin: src/reference/gemm.rs.
//
// Three entry points here and three more in shaders/gemm_subgroup.wgsl; the launcher picks
// one (GemmPath and GemmTuning in src/kernels/gemm.rs):
//   gemm_tex      software adapters (lavapipe): A and B copied into rgba32float storage
//                 textures, 8 rows x one vec4 of columns per invocation. Needs k % 4 == 0,
//                 n % 4 == 0 and stored row lengths that are multiples of 64 floats.
//   gemm_tex_sg*  (shaders/gemm_subgroup.wgsl) the same with A loaded once per subgroup
//                 and shared by subgroupBroadcast; 8, 16 or 32 rows per invocation. What
//                 software adapters with wgpu's SUBGROUP feature use (16 rows).
//   gemm_tiled    hardware adapters: tiles staged in workgroup memory (64x64 by default),
//                 4x4 per invocation, any shape (bounds-checked tile loads).
//   gemm_general  any shape, no workgroup memory: 4 rows x 1 column per invocation.
//
// What was tried on lavapipe (Mesa 22.3.6, LLVM 15, 2 cores, EPYC Zen 4), 1536 x 4096 x 512
// NN unless noted. Figures are GFLOP per CPU-second of the process (the rate with both
// cores to itself; wall clock on this shared machine swung 3x with other builds), next to
// the FMA-throughput kernel of shaders/bench.wgsl measured the same way: 130-146.
//   storage buffers, 8 rows x vec4 columns, k unrolled by 4, vec4 loads (the notes' best)   6.0
//   storage buffers, 16 rows x vec4 / 8 rows x 2 vec4 (wall clock, loaded machine)   1.8 / 1.3
//   B read with same-address vec4 loads, picked by lane (workgroup of 8)            0.4 (wall)
//   sampled textures (texture_2d, textureLoad), 8 rows x vec4                  ~13 (5.4 wall)
//   read-only storage textures, 8 rows x vec4                                         39-41
//     same, workgroups ordered rows-fastest so that a B tile stays in cache          42-45
//     same, texel coordinates (x, y) instead of a flat index                   46-48 <- used
//     4, 6, 7, 12, 16 rows; 8 rows x 2 or 4 vec4; 12 x 2; 16 x 4; k unrolled by 8       23-47
//     workgroup size 8 / 16 / 32 / 64 along columns                                  40-43
//     accumulators in an array indexed by an override-bounded loop                   23-36
//     no early return for rows past the end (the folded grid)                       no change
//   A from a uniform buffer at constant offsets (k unrolled in the source), B texture 19-22
//   A shared by subgroupBroadcast (one texel load per 8 rows)                         61-65
// Production encoder (1024 x 512 x 16384 + bias) on gemm_tex: 46-48 per CPU-second, 0.32-0.34
// of the FMA ceiling that way; benches/kernels.rs prints both this and the wall-clock fraction.
// gemm_tiled and gemm_general run at 1.3-1.7 (wall, lightly loaded) here.
//
// Subgroup kernels (shaders/gemm_subgroup.wgsl; the device requests SUBGROUP since the
// adapter offers it), production encoder, fraction of the same-run FMA ceiling per
// CPU-second (fastest run of 15-20 against the fastest ceiling run / median over 5 bench
// runs), on a machine with load average 3.1-3.9 from other work (2 cores):
//   gemm_tex, for comparison                                                 0.31 / 0.26-0.27
//   rows x vec4 per invocation, updates k-major (q outer, rows inner):
//     8 rows                                                                 0.43 / 0.36
//     16 rows                                                                0.46-0.48 / 0.40-0.43
//     32 rows                                                                0.46 / 0.34
//     16 rows x 2 vec4                                                       0.35-0.40 / 0.31-0.35
//     16 rows, workgroup 32 / 128 instead of 64                              0.48 / 0.32 (one run)
//   updates row-major (each accumulator's four k updates together) <- used:
//     8 rows                                                                 0.41 / 0.41
//     16 rows (the default)                                                  0.46-0.52 / 0.45-0.48
//     32 rows                                                                0.50 / 0.44
//     16 rows x 2 vec4                                                       0.43 / 0.41
//     8 / 16 rows, k unrolled by 8 (two k-steps per loop iteration)   0.34 / 0.39, against
//       0.37 / 0.44 for the same kernels without it in the same runs
// Best wall clock seen (machine briefly quiet): 16 rows 71 GFLOP/s against a 148 ceiling.
// Shader runtime checks off (release builds' unchecked modules) made no measurable difference
// to gemm_tex here (lavapipe already gets robust buffer / image access from the device).
// What bounds it: per k-step of 4 and per 8 lanes, an invocation's vec4 FMAs cost ~8 vector
// instructions each (lavapipe splits fma into a multiply and an add), a texel gather ~50 and a
// vec4 broadcast ~14 (fitted to the 8- and 16-row figures). With R rows x Q column quads per
// invocation that is 32 R Q useful instructions against 200 Q (B gathers) + 20 R (A: a
// gather per 8 rows and a broadcast per row): 0.49 at R = 16, Q = 1, and at most ~0.6 as R
// grows. Past 16 vec4 accumulators per invocation (64 of the 16 ymm registers llvmpipe
// uses) the spills eat the rest, so 32 rows or 2 column quads gain nothing.
// Why: lavapipe 22.3 turns every storage-buffer (and workgroup-memory) load inside a loop
// into a loop over the 8 lanes with a branch and a bounds check per component (~300
// instructions for a vec4, even when all lanes read the same address; the uniform fast path
// only fires for constant offsets outside control flow). A storage-texture load is a
// branch-free gather: ~50 instructions for a vec4. What remains is mostly the A loads, the
// same for all 8 lanes; sharing them needs subgroup operations (above). lavapipe lowers
// fma() to a multiply and an add, so the ceiling kernel pays the same per multiply-add.

// Params, p, TRANS_A, TRANS_B, HAS_BIAS, USE_BETA, finish and finish4: shaders/gemm_head.wgsl
// (put ahead of this module by src/kernels/gemm/mod.rs).

// ------------------------------------------------------------------ gemm_tex
// One invocation: rows row0..row0+8 of C, columns 4*c4..4*c4+4. Workgroup x indexes row
// blocks (folded with z past the grid limit), y indexes groups of TX_WG column quads, so
// consecutive workgroups share the same B columns. Texels hold 4 consecutive floats of a
// stored row; out-of-range rows and columns read clamped texels (the coordinates are
// clamped here, so unchecked modules stay in range) and are not stored. No early return:
// the folded grid's spare row blocks just store nothing.

override TX_WG: u32 = 64;

@group(0) @binding(1) var tx_a: texture_storage_2d<rgba32float, read>; // A as stored: (m, k / 4) or (k, m / 4) texels
@group(0) @binding(2) var tx_b: texture_storage_2d<rgba32float, read>; // B as stored: (k, n / 4) or (n, k / 4) texels
@group(0) @binding(3) var<storage, read> tx_bias: array<vec4<f32>>;    // (n / 4)
@group(0) @binding(4) var<storage, read_write> tx_c: array<vec4<f32>>; // (m, n / 4)

@compute @workgroup_size(TX_WG)
fn gemm_tex(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row0 = (wid.x + wid.z * nwg.x) * 8u;
    let n4 = p.n / 4u;
    let c4 = wid.y * TX_WG + lid.x;
    // clamped coordinates for the loads: B column quad, A rows (or A row quads when TRANS_A)
    let cb = min(c4, n4 - 1u);
    let last = select(p.m - 1u, p.m / 4u - 1u, TRANS_A);
    let r0 = min(row0, last);
    let r1 = min(row0 + 1u, last);
    let r2 = min(row0 + 2u, last);
    let r3 = min(row0 + 3u, last);
    let r4 = min(row0 + 4u, last);
    let r5 = min(row0 + 5u, last);
    let r6 = min(row0 + 6u, last);
    let r7 = min(row0 + 7u, last);
    let xa = min(row0 / 4u, last);
    let xb = min(row0 / 4u + 1u, last);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    for (var kq = 0u; kq < p.k / 4u; kq++) {
        let k0 = kq * 4u;
        // bq: op(B)[k0 + q, 4 c4 .. 4 c4 + 4]
        var b0: vec4<f32>;
        var b1: vec4<f32>;
        var b2: vec4<f32>;
        var b3: vec4<f32>;
        if TRANS_B {
            // texel (kq, col) holds op(B)[k0 .. k0 + 4, col]: transpose four of them
            let u0 = textureLoad(tx_b, vec2<u32>(kq, cb * 4u));
            let u1 = textureLoad(tx_b, vec2<u32>(kq, cb * 4u + 1u));
            let u2 = textureLoad(tx_b, vec2<u32>(kq, cb * 4u + 2u));
            let u3 = textureLoad(tx_b, vec2<u32>(kq, cb * 4u + 3u));
            b0 = vec4<f32>(u0.x, u1.x, u2.x, u3.x);
            b1 = vec4<f32>(u0.y, u1.y, u2.y, u3.y);
            b2 = vec4<f32>(u0.z, u1.z, u2.z, u3.z);
            b3 = vec4<f32>(u0.w, u1.w, u2.w, u3.w);
        } else {
            b0 = textureLoad(tx_b, vec2<u32>(cb, k0));
            b1 = textureLoad(tx_b, vec2<u32>(cb, k0 + 1u));
            b2 = textureLoad(tx_b, vec2<u32>(cb, k0 + 2u));
            b3 = textureLoad(tx_b, vec2<u32>(cb, k0 + 3u));
        }
        // loq / hiq: op(A)[row0 .. row0 + 4, k0 + q] and op(A)[row0 + 4 .. row0 + 8, k0 + q]
        var lo0: vec4<f32>;
        var lo1: vec4<f32>;
        var lo2: vec4<f32>;
        var lo3: vec4<f32>;
        var hi0: vec4<f32>;
        var hi1: vec4<f32>;
        var hi2: vec4<f32>;
        var hi3: vec4<f32>;
        if TRANS_A {
            // texel (row / 4, kk) holds op(A)[row .. row + 4, kk]
            lo0 = textureLoad(tx_a, vec2<u32>(xa, k0));
            lo1 = textureLoad(tx_a, vec2<u32>(xa, k0 + 1u));
            lo2 = textureLoad(tx_a, vec2<u32>(xa, k0 + 2u));
            lo3 = textureLoad(tx_a, vec2<u32>(xa, k0 + 3u));
            hi0 = textureLoad(tx_a, vec2<u32>(xb, k0));
            hi1 = textureLoad(tx_a, vec2<u32>(xb, k0 + 1u));
            hi2 = textureLoad(tx_a, vec2<u32>(xb, k0 + 2u));
            hi3 = textureLoad(tx_a, vec2<u32>(xb, k0 + 3u));
        } else {
            // texel (kq, row) holds op(A)[row, k0 .. k0 + 4]
            let a0 = textureLoad(tx_a, vec2<u32>(kq, r0));
            let a1 = textureLoad(tx_a, vec2<u32>(kq, r1));
            let a2 = textureLoad(tx_a, vec2<u32>(kq, r2));
            let a3 = textureLoad(tx_a, vec2<u32>(kq, r3));
            let a4 = textureLoad(tx_a, vec2<u32>(kq, r4));
            let a5 = textureLoad(tx_a, vec2<u32>(kq, r5));
            let a6 = textureLoad(tx_a, vec2<u32>(kq, r6));
            let a7 = textureLoad(tx_a, vec2<u32>(kq, r7));
            lo0 = vec4<f32>(a0.x, a1.x, a2.x, a3.x);
            lo1 = vec4<f32>(a0.y, a1.y, a2.y, a3.y);
            lo2 = vec4<f32>(a0.z, a1.z, a2.z, a3.z);
            lo3 = vec4<f32>(a0.w, a1.w, a2.w, a3.w);
            hi0 = vec4<f32>(a4.x, a5.x, a6.x, a7.x);
            hi1 = vec4<f32>(a4.y, a5.y, a6.y, a7.y);
            hi2 = vec4<f32>(a4.z, a5.z, a6.z, a7.z);
            hi3 = vec4<f32>(a4.w, a5.w, a6.w, a7.w);
        }
        // k0 + 0 .. k0 + 3 in order, as the reference accumulates
        acc0 += lo0.x * b0;
        acc1 += lo0.y * b0;
        acc2 += lo0.z * b0;
        acc3 += lo0.w * b0;
        acc4 += hi0.x * b0;
        acc5 += hi0.y * b0;
        acc6 += hi0.z * b0;
        acc7 += hi0.w * b0;
        acc0 += lo1.x * b1;
        acc1 += lo1.y * b1;
        acc2 += lo1.z * b1;
        acc3 += lo1.w * b1;
        acc4 += hi1.x * b1;
        acc5 += hi1.y * b1;
        acc6 += hi1.z * b1;
        acc7 += hi1.w * b1;
        acc0 += lo2.x * b2;
        acc1 += lo2.y * b2;
        acc2 += lo2.z * b2;
        acc3 += lo2.w * b2;
        acc4 += hi2.x * b2;
        acc5 += hi2.y * b2;
        acc6 += hi2.z * b2;
        acc7 += hi2.w * b2;
        acc0 += lo3.x * b3;
        acc1 += lo3.y * b3;
        acc2 += lo3.z * b3;
        acc3 += lo3.w * b3;
        acc4 += hi3.x * b3;
        acc5 += hi3.y * b3;
        acc6 += hi3.z * b3;
        acc7 += hi3.w * b3;
    }
    if c4 >= n4 {
        return;
    }
    var bias = vec4<f32>(0.0);
    if HAS_BIAS {
        bias = tx_bias[c4];
    }
    tx_store(row0, n4, c4, acc0, bias);
    tx_store(row0 + 1u, n4, c4, acc1, bias);
    tx_store(row0 + 2u, n4, c4, acc2, bias);
    tx_store(row0 + 3u, n4, c4, acc3, bias);
    tx_store(row0 + 4u, n4, c4, acc4, bias);
    tx_store(row0 + 5u, n4, c4, acc5, bias);
    tx_store(row0 + 6u, n4, c4, acc6, bias);
    tx_store(row0 + 7u, n4, c4, acc7, bias);
}

fn tx_store(row: u32, n4: u32, c4: u32, acc: vec4<f32>, bias: vec4<f32>) {
    if row < p.m {
        let i = row * n4 + c4;
        var c_old = vec4<f32>(0.0);
        if USE_BETA {
            c_old = tx_c[i];
        }
        tx_c[i] = finish4(acc, bias, c_old);
    }
}

// ------------------------------------------------------------------ gemm_tiled
// A TL_BM x TL_BN tile of C per workgroup of TL_WX x TL_WY invocations, 4 x 4 elements per
// invocation (TL_BM = 4 TL_WY, TL_BN = 4 TL_WX); invocation (tx, ty) owns rows ty + TL_WY i
// and columns tx + TL_WX j (i, j < 4), so reads of the staged B tile and the stores to C
// are consecutive across tx. Each k step stages TL_BK columns of op(A) and rows of op(B)
// in workgroup memory, reading global memory along its contiguous direction. The tile
// sizes are chosen per adapter type (GemmTuning in src/kernels/gemm.rs).

override TL_WX: u32 = 16u;
override TL_WY: u32 = 16u;
override TL_BK: u32 = 16u;
override TL_BM: u32 = TL_WY * 4u;
override TL_BN: u32 = TL_WX * 4u;

var<workgroup> tl_as: array<f32, TL_BK * TL_BM>; // (TL_BK, TL_BM): op(A) tile, k-major
var<workgroup> tl_bs: array<f32, TL_BK * TL_BN>; // (TL_BK, TL_BN): op(B) tile

@group(0) @binding(1) var<storage, read> tl_a: array<f32>;        // (m, k) or (k, m)
@group(0) @binding(2) var<storage, read> tl_b: array<f32>;        // (k, n) or (n, k)
@group(0) @binding(3) var<storage, read> tl_bias: array<f32>;     // (n)
@group(0) @binding(4) var<storage, read_write> tl_c: array<f32>;  // (m, n)

@compute @workgroup_size(TL_WX, TL_WY)
fn gemm_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = (wid.x + wid.z * nwg.x) * TL_BM;
    let col0 = wid.y * TL_BN;
    let m = p.m;
    let n = p.n;
    let k = p.k;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }
    for (var k0 = 0u; k0 < k; k0 += TL_BK) {
        for (var e = li; e < TL_BK * TL_BM; e += TL_WX * TL_WY) {
            var r: u32;
            var kk: u32;
            if TRANS_A {
                r = e % TL_BM; // A stored (k, m): consecutive invocations, consecutive rows
                kk = e / TL_BM;
            } else {
                r = e / TL_BK; // A stored (m, k): consecutive invocations, consecutive k
                kk = e % TL_BK;
            }
            let gr = row0 + r;
            let gk = k0 + kk;
            var v = 0.0;
            if gr < m && gk < k {
                if TRANS_A {
                    v = tl_a[gk * m + gr];
                } else {
                    v = tl_a[gr * k + gk];
                }
            }
            tl_as[kk * TL_BM + r] = v;
        }
        for (var e = li; e < TL_BK * TL_BN; e += TL_WX * TL_WY) {
            var c: u32;
            var kk: u32;
            if TRANS_B {
                c = e / TL_BK; // B stored (n, k)
                kk = e % TL_BK;
            } else {
                c = e % TL_BN; // B stored (k, n)
                kk = e / TL_BN;
            }
            let gc = col0 + c;
            let gk = k0 + kk;
            var v = 0.0;
            if gc < n && gk < k {
                if TRANS_B {
                    v = tl_b[gc * k + gk];
                } else {
                    v = tl_b[gk * n + gc];
                }
            }
            tl_bs[kk * TL_BN + c] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TL_BK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tl_as[kk * TL_BM + lid.y + TL_WY * i];
                bv[i] = tl_bs[kk * TL_BN + lid.x + TL_WX * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += av[i] * bv[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y + TL_WY * i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + TL_WX * j;
            if row < m && col < n {
                var bias = 0.0;
                if HAS_BIAS {
                    bias = tl_bias[col];
                }
                var c_old = 0.0;
                if USE_BETA {
                    c_old = tl_c[row * n + col];
                }
                tl_c[row * n + col] = finish(acc[i][j], bias, c_old);
            }
        }
    }
}

// ------------------------------------------------------------------ gemm_general
// Rows row0 .. row0 + 4 (the same for the whole workgroup) and one column per invocation.
// Out-of-range rows and columns read clamped addresses and are not stored.

override GN_WG: u32 = 64;

@group(0) @binding(1) var<storage, read> gn_a: array<f32>;        // (m, k) or (k, m)
@group(0) @binding(2) var<storage, read> gn_b: array<f32>;        // (k, n) or (n, k)
@group(0) @binding(3) var<storage, read> gn_bias: array<f32>;     // (n)
@group(0) @binding(4) var<storage, read_write> gn_c: array<f32>;  // (m, n)

fn gn_a_at(row: u32, kk: u32) -> f32 {
    if TRANS_A {
        return gn_a[kk * p.m + row];
    }
    return gn_a[row * p.k + kk];
}

fn gn_b_at(kk: u32, col: u32) -> f32 {
    if TRANS_B {
        return gn_b[col * p.k + kk];
    }
    return gn_b[kk * p.n + col];
}

@compute @workgroup_size(GN_WG)
fn gemm_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row0 = (wid.x + wid.z * nwg.x) * 4u;
    if row0 >= p.m {
        return;
    }
    let col = wid.y * GN_WG + lid.x;
    let cc = min(col, p.n - 1u);
    let last = p.m - 1u;
    let r0 = row0;
    let r1 = min(row0 + 1u, last);
    let r2 = min(row0 + 2u, last);
    let r3 = min(row0 + 3u, last);
    var acc0 = 0.0;
    var acc1 = 0.0;
    var acc2 = 0.0;
    var acc3 = 0.0;
    for (var kk = 0u; kk < p.k; kk++) {
        let b = gn_b_at(kk, cc);
        acc0 += gn_a_at(r0, kk) * b;
        acc1 += gn_a_at(r1, kk) * b;
        acc2 += gn_a_at(r2, kk) * b;
        acc3 += gn_a_at(r3, kk) * b;
    }
    if col >= p.n {
        return;
    }
    var bias = 0.0;
    if HAS_BIAS {
        bias = gn_bias[col];
    }
    gn_store(row0, col, acc0, bias);
    gn_store(row0 + 1u, col, acc1, bias);
    gn_store(row0 + 2u, col, acc2, bias);
    gn_store(row0 + 3u, col, acc3, bias);
}

fn gn_store(row: u32, col: u32, acc: f32, bias: f32) {
    if row < p.m {
        let i = row * p.n + col;
        var c_old = 0.0;
        if USE_BETA {
            c_old = gn_c[i];
        }
        gn_c[i] = finish(acc, bias, c_old);
    }
}

// ------------------------------------------------------------------ fill_texture
// dst texel (c, r) = src vec4 r * n4 + c: a (rows, 4 * n4) tensor into an rgba32float texture,
// for textures that must be filled inside a gate (src/kernels/gemm.rs texture_of), where a
// buffer-to-texture copy could not be skipped. p.m = rows, p.n = n4.

override FT_WG: u32 = 64;

@group(0) @binding(1) var<storage, read> ft_src: array<vec4<f32>>;                  // (rows, n4)
@group(0) @binding(2) var ft_dst: texture_storage_2d<rgba32float, write>;          // (n4, rows) texels

@compute @workgroup_size(FT_WG)
fn fill_texture(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, FT_WG);
    if i >= p.m * p.n { return; }
    let r = i / p.n;
    let c = i - r * p.n;
    textureStore(ft_dst, vec2<u32>(c, r), ft_src[i]);
}
