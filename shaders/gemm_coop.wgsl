// gemm_coop: C (m, n) = A (m, k) B (k, n) + bias (n) on cooperative matrices (tensor
// cores), f16 inputs and f32 accumulation. Experimental: only with SAEFORGE_COOP_MATRIX=1 on
// an adapter that has wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX with a 16x16x16 f16 x f16 + f32
// configuration (src/gpu/context.rs `coop_missing`). Not prelude-prefixed: `enable` must
// come first.
// Launcher: src/kernels/gemm/coop.rs. CPU twin: src/reference/gemm.rs (gemm) on the inputs
// rounded to f16 (`gemm_coop_reference` in the launcher's tests).
//
// One workgroup = one subgroup of 32 lanes computes a 32 x 32 tile of C as 2 x 2 16x16
// accumulators: per 16-wide step of k it stages A (32 x 16) and B (16 x 32) in workgroup
// memory as f16 (0 outside the matrices, so edge tiles need no other care), loads the
// 16x16 fragments row-major and multiply-adds; the accumulators go through workgroup memory
// to C with the bias, each lane writing a coalesced row segment.
enable f16;
enable wgpu_cooperative_matrix;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // (m, k)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // (k, n)
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (n), read when has_bias
@group(0) @binding(4) var<storage, read_write> c: array<f32>;    // (m, n)

const TM: u32 = 32u;    // rows of C per workgroup
const TN: u32 = 32u;    // columns of C per workgroup
const TK: u32 = 16u;    // k per stage
const LANES: u32 = 32u; // the workgroup: one subgroup

var<workgroup> sa: array<f16, 512>;  // (TM, TK) row-major
var<workgroup> sb: array<f16, 512>;  // (TK, TN) row-major
var<workgroup> sc: array<f32, 1024>; // (TM, TN) row-major

@compute @workgroup_size(32)
fn gemm_coop(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var e = 0u; e < TM * TK / LANES; e++) {
            let i = e * LANES + li;
            let r = row0 + i / TK;
            let kk = k0 + i % TK;
            var v = 0.0;
            if r < p.m && kk < p.k { v = a[r * p.k + kk]; }
            sa[i] = f16(v);
        }
        for (var e = 0u; e < TK * TN / LANES; e++) {
            let i = e * LANES + li;
            let kk = k0 + i / TN;
            let col = col0 + i % TN;
            var v = 0.0;
            if kk < p.k && col < p.n { v = b[kk * p.n + col]; }
            sb[i] = f16(v);
        }
        workgroupBarrier();
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&sa[0], TK);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&sa[16u * TK], TK);
        let b0 = coopLoadT<coop_mat16x16<f16, B>>(&sb[0], TN);
        let b1 = coopLoadT<coop_mat16x16<f16, B>>(&sb[16], TN);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        workgroupBarrier();
    }
    coopStoreT(c00, &sc[0], TN);
    coopStoreT(c01, &sc[16], TN);
    coopStoreT(c10, &sc[16u * TN], TN);
    coopStoreT(c11, &sc[16u * TN + 16u], TN);
    workgroupBarrier();
    for (var e = 0u; e < TM * TN / LANES; e++) {
        let i = e * LANES + li;
        let r = row0 + i / TN;
        let col = col0 + i % TN;
        if r < p.m && col < p.n {
            var v = sc[i];
            if p.has_bias != 0u { v += bias[col]; }
            c[r * p.n + col] = v;
        }
    }
}
