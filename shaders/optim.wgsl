// Optimizer kernels of the SAE training step: Adam(W), global gradient-norm clipping, and
// the unit-norm decoder's fused pair (decoder_grad_prep, adam_unit_rows), which replaced
// separate passes removing the gradient's component along each decoder row and
// renormalising the rows (their figures are kept below for the record). Launchers: src/kernels/optim.rs. CPU twins: src/reference/optim.rs.
// Deterministic: every sum has a fixed order for a given set of override constants; no
// atomics.
//
// Traffic per training step at d = 512, n = 16384 (f32; W_enc (d, n) and W_dec (n, d) are
// 8,388,608 elements = 32 MiB each, b_enc 16384, b_dec 512; all parameters 16,794,112
// elements = 64.06 MiB; grads, m and v the same size each). Step order and passes:
//   1. remove_parallel(W_dec, dW_dec)  read W_dec, dW_dec, write dW_dec      3 x 32 MiB =  96.0 MiB
//      (each 2 KiB row is read twice, dots then update; the second read is meant to hit cache)
//   2. sumsq x 4 (slot per grad)       read every grad once                  1 x 64 MiB =  64.1 MiB
//      + per-invocation partials, written and read once                               ~1.0 MiB
//   3. clip_scale                      4 floats in, 2 out                                 ~0
//   4. adam x 4                        read param, grad, m, v; write param, m, v
//                                                                             7 x 64 MiB = 448.5 MiB
//   5. normalize_rows(W_dec)           read, write W_dec (rows read twice as in 1) 2 x 32 MiB = 64.0 MiB
//   total ~673.5 MiB (706 MB) moved in 15 dispatches (sumsq is 2 each); JumpReLU's
//   threshold (n) adds 3 dispatches and ~0.4 MiB.
// So 4 passes over parameter-sized data (two over all of them: sumsq, adam; two over W_dec
// only), and accesses per element: W_dec 3 + 1 + 7 + 2 = 13, W_enc / biases 1 + 7 = 8.
// Fusion floor: the global norm must be complete before any Adam update, so every grad is
// read at least twice (8 accesses per element). For W_dec, pass A reads W_dec and dW_dec
// once (per-row projection coefficient and the projected sum of squares, 2 accesses);
// pass B does projection + Adam + row renormalisation one workgroup per row (7 accesses).
// That is 8 x 32.06 MiB (W_enc, biases) + 9 x 32 MiB (W_dec) ~ 544.5 MiB (571 MB, 81% of
// now) in ~4 dispatches.
// Lavapipe (2 busy cores, so +-50%): adam on 8M elements 80-150 ms, sumsq 8M 16-60 ms,
// normalize_rows 16384 x 512 35-55 ms, remove_parallel 60-100 ms: ~1.5-2.5 GB/s in all.

struct Params {
    len: u32,      // adam*, sumsq_partial*: items (elements, or vec4s on the vec4 path);
                   // row kernels: rows n; sumsq_finish: partials; clip_scale: slots
    d: u32,        // row kernels: items per row (elements, or vec4s on the vec4 path)
    stride: u32,   // sumsq_partial*: invocations in the grid (one partial each)
    slot: u32,     // sumsq_finish: the acc slot written
    max_norm: f32, // clip_scale: clip when the norm exceeds it (<= 0: never)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The host rewrites this every step (src/reference/optim.rs AdamHyper).
struct AdamHyper {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias1: f32, // 1 - beta1^t
    bias2: f32, // 1 - beta2^t
    weight_decay: f32,
    _pad: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256;  // elementwise and sumsq_partial invocations per workgroup
override FW: u32 = 256;  // sumsq_finish workgroup (power of two)
override RW: u32 = 64;   // row kernels: invocations per row (power of two; 8 on lavapipe)

// ---------------------------------------------------------------- adam
// g = grad * clip[0]; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
// param -= lr * ((m / bias1) / (sqrt(v / bias2) + eps) + weight_decay * param)

@group(0) @binding(5) var<uniform> ad_h: AdamHyper;
@group(0) @binding(6) var<storage, read> ad_clip: array<f32>;          // (>= 1): clip[0]

// One element's step (the formula above, hyperparameters from ad_h), shared by adam and
// adam_unit_rows: the new moments m, v and the new parameter x. adam_at4: four at once.
struct AdamAt {
    m: f32,
    v: f32,
    x: f32,
}

fn adam_at(x: f32, g: f32, m_old: f32, v_old: f32) -> AdamAt {
    let h = ad_h;
    let m = h.beta1 * m_old + (1.0 - h.beta1) * g;
    let v = h.beta2 * v_old + (1.0 - h.beta2) * (g * g);
    let update = (m / h.bias1) / (sqrt(v / h.bias2) + h.eps) + h.weight_decay * x;
    return AdamAt(m, v, x - h.lr * update);
}

struct AdamAt4 {
    m: vec4<f32>,
    v: vec4<f32>,
    x: vec4<f32>,
}

fn adam_at4(x: vec4<f32>, g: vec4<f32>, m_old: vec4<f32>, v_old: vec4<f32>) -> AdamAt4 {
    let h = ad_h;
    let m = h.beta1 * m_old + (1.0 - h.beta1) * g;
    let v = h.beta2 * v_old + (1.0 - h.beta2) * (g * g);
    let update = (m / h.bias1) / (sqrt(v / h.bias2) + h.eps) + h.weight_decay * x;
    return AdamAt4(m, v, x - h.lr * update);
}

@group(0) @binding(1) var<storage, read_write> ad_param: array<f32>;   // (len)
@group(0) @binding(2) var<storage, read> ad_grad: array<f32>;          // (len)
@group(0) @binding(3) var<storage, read_write> ad_m: array<f32>;       // (len)
@group(0) @binding(4) var<storage, read_write> ad_v: array<f32>;       // (len)

@compute @workgroup_size(WG)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    let g = ad_grad[i] * ad_clip[0];
    let a = adam_at(ad_param[i], g, ad_m[i], ad_v[i]);
    ad_m[i] = a.m;
    ad_v[i] = a.v;
    ad_param[i] = a.x;
}

@group(0) @binding(1) var<storage, read_write> av_param: array<vec4<f32>>; // (len / 4)
@group(0) @binding(2) var<storage, read> av_grad: array<vec4<f32>>;        // (len / 4)
@group(0) @binding(3) var<storage, read_write> av_m: array<vec4<f32>>;     // (len / 4)
@group(0) @binding(4) var<storage, read_write> av_v: array<vec4<f32>>;     // (len / 4)

@compute @workgroup_size(WG)
fn adam_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg, WG);
    if i >= p.len { return; }
    let g = av_grad[i] * ad_clip[0];
    let a = adam_at4(av_param[i], g, av_m[i], av_v[i]);
    av_m[i] = a.m;
    av_v[i] = a.v;
    av_param[i] = a.x;
}

// ---------------------------------------------------------------- sumsq
// acc[slot] = sum g^2, in two levels: sumsq_partial gives each invocation t of a grid of
// `stride` invocations the items t, t + stride, t + 2 stride, ... (coalesced, no barrier)
// and writes one partial; sumsq_finish (one workgroup) sums partials j, j + FW, ... per
// invocation, then a fixed tree over the workgroup.

@group(0) @binding(1) var<storage, read> sp_g: array<f32>;             // (len)
@group(0) @binding(2) var<storage, read_write> sp_part: array<f32>;    // (stride)

@compute @workgroup_size(WG)
fn sumsq_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    var s = 0.0;
    for (var i = t; i < p.len; i += p.stride) {
        let x = sp_g[i];
        s += x * x;
    }
    sp_part[t] = s;
}

@group(0) @binding(1) var<storage, read> sv_g: array<vec4<f32>>;       // (len / 4)

@compute @workgroup_size(WG)
fn sumsq_partial_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    var s = vec4(0.0);
    for (var i = t; i < p.len; i += p.stride) {
        let x = sv_g[i];
        s += x * x;
    }
    sp_part[t] = (s.x + s.y) + (s.z + s.w);
}

@group(0) @binding(1) var<storage, read> sf_part: array<f32>;          // (len) partials
@group(0) @binding(2) var<storage, read_write> sf_acc: array<f32>;     // (slots)

var<workgroup> sf_red: array<f32, FW>;

@compute @workgroup_size(FW)
fn sumsq_finish(@builtin(local_invocation_index) l: u32) {
    var s = 0.0;
    for (var j = l; j < p.len; j += FW) {
        s += sf_part[j];
    }
    sf_red[l] = s;
    workgroupBarrier();
    for (var k = FW / 2u; k > 0u; k >>= 1u) {
        if l < k {
            sf_red[l] += sf_red[l + k];
        }
        workgroupBarrier();
    }
    if l == 0u {
        sf_acc[p.slot] = sf_red[0];
    }
}

// ---------------------------------------------------------------- clip_scale
// norm = sqrt(acc[0] + acc[1] + ... + acc[slots - 1]);
// clip[0] = max_norm / norm if max_norm > 0 and norm > max_norm, else 1; clip[1] = norm

@group(0) @binding(1) var<storage, read> cs_acc: array<f32>;           // (>= slots)
@group(0) @binding(2) var<storage, read_write> cs_clip: array<f32>;    // (2): scale, norm

@compute @workgroup_size(1)
fn clip_scale() {
    var s = 0.0;
    for (var i = 0u; i < p.len; i++) {
        s += cs_acc[i];
    }
    let norm = sqrt(s);
    let mx = p.max_norm;
    cs_clip[0] = select(1.0, mx / norm, mx > 0.0 && norm > mx);
    cs_clip[1] = norm;
}

// ---------------------------------------------------------------- fused decoder steps
// A fixed-order sum over the RW invocations of a row's workgroup.
var<workgroup> nr_red: array<f32, RW>;

fn nr_tree(l: u32, s: f32) -> f32 {
    nr_red[l] = s;
    workgroupBarrier();
    for (var k = RW / 2u; k > 0u; k >>= 1u) {
        if l < k {
            nr_red[l] += nr_red[l + k];
        }
        workgroupBarrier();
    }
    return nr_red[0];
}

// The unit-norm decoder's optimizer work in two passes over W_dec instead of four:
//   decoder_grad_prep  one sweep per row: gw = g . w, ww = w . w, gg = g . g (lane-strided,
//                      remove_parallel's tree); coef[i] = gw / ww (0 when ww == 0) and
//                      part[i] = ||g - coef w||^2 = max(gg - 2 coef gw + coef^2 ww, 0)
//                      (gg when ww == 0): the projected gradient's sum of squares without
//                      writing the projection (sumsq_finish then sums part into its slot)
//   adam_unit_rows     per row: g = (grad - coef w) * clip[0] (remove_parallel's update, then
//                      Adam's scale), Adam as `adam`, and the row divided by its norm as
//                      `normalize_rows` (the sum of squares taken as the new values are made,
//                      the division re-reading them).
// Accesses per W_dec element: 2 reads (prep) + 4 reads, 3 writes, 1 re-read, 1 write (adam);
// before: remove_parallel 4 reads + 1 write, sumsq 1 read, adam 4 + 3, normalize 2 + 1.

@group(0) @binding(1) var<storage, read> dp_w: array<f32>;              // (n, d)
@group(0) @binding(2) var<storage, read> dp_g: array<f32>;              // (n, d)
@group(0) @binding(3) var<storage, read_write> dp_coef: array<f32>;     // (n)
@group(0) @binding(4) var<storage, read_write> dp_part: array<f32>;     // (n)

var<workgroup> dp_red: array<vec4<f32>, RW>;

// Returns (g . w, w . w, g . g) of the row, summed over the lanes in a fixed tree.
fn dp_tree(l: u32, s: vec4<f32>) -> vec4<f32> {
    dp_red[l] = s;
    workgroupBarrier();
    for (var k = RW / 2u; k > 0u; k >>= 1u) {
        if l < k {
            dp_red[l] += dp_red[l + k];
        }
        workgroupBarrier();
    }
    return dp_red[0];
}

fn dp_finish(row: u32, r: vec4<f32>) {
    var c = 0.0;
    var part = r.z;
    if r.y > 0.0 {
        c = r.x / r.y;
        part = max(r.z - 2.0 * c * r.x + c * c * r.y, 0.0);
    }
    dp_coef[row] = c;
    dp_part[row] = part;
}

@compute @workgroup_size(RW)
fn decoder_grad_prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let row = group_index(wid, nwg);
    if row >= p.len { return; }
    let base = row * p.d;
    var s = vec4(0.0);
    for (var j = l; j < p.d; j += RW) {
        let x = dp_w[base + j];
        let y = dp_g[base + j];
        s += vec4(y * x, x * x, y * y, 0.0);
    }
    let r = dp_tree(l, s);
    if l == 0u { dp_finish(row, r); }
}

@group(0) @binding(1) var<storage, read> dv_w: array<vec4<f32>>;        // (n, d / 4)
@group(0) @binding(2) var<storage, read> dv_g: array<vec4<f32>>;        // (n, d / 4)

@compute @workgroup_size(RW)
fn decoder_grad_prep_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let row = group_index(wid, nwg);
    if row >= p.len { return; }
    let base = row * p.d;
    var gw = vec4(0.0);
    var ww = vec4(0.0);
    var gg = vec4(0.0);
    for (var j = l; j < p.d; j += RW) {
        let x = dv_w[base + j];
        let y = dv_g[base + j];
        gw += y * x;
        ww += x * x;
        gg += y * y;
    }
    let sum4 = vec4((gw.x + gw.y) + (gw.z + gw.w), (ww.x + ww.y) + (ww.z + ww.w), (gg.x + gg.y) + (gg.z + gg.w), 0.0);
    let r = dp_tree(l, sum4);
    if l == 0u { dp_finish(row, r); }
}

// adam_unit_rows: binding 5 (hyper) and 6 (clip) as `adam`.
@group(0) @binding(1) var<storage, read_write> au_param: array<f32>;    // (n, d)
@group(0) @binding(2) var<storage, read> au_grad: array<f32>;           // (n, d)
@group(0) @binding(3) var<storage, read_write> au_m: array<f32>;        // (n, d)
@group(0) @binding(4) var<storage, read_write> au_v: array<f32>;        // (n, d)
@group(0) @binding(7) var<storage, read> au_coef: array<f32>;           // (n)

@compute @workgroup_size(RW)
fn adam_unit_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let row = group_index(wid, nwg);
    if row >= p.len { return; }
    let base = row * p.d;
    let c = au_coef[row];
    let clip = ad_clip[0];
    var s = 0.0;
    for (var j = l; j < p.d; j += RW) {
        let i = base + j;
        let x = au_param[i];
        let g = (au_grad[i] - c * x) * clip;
        let a = adam_at(x, g, au_m[i], au_v[i]);
        au_m[i] = a.m;
        au_v[i] = a.v;
        au_param[i] = a.x;
        s += a.x * a.x;
    }
    let ss = nr_tree(l, s);
    if ss > 0.0 {
        let norm = sqrt(ss);
        for (var j = l; j < p.d; j += RW) {
            au_param[base + j] = au_param[base + j] / norm;
        }
    }
}

@group(0) @binding(1) var<storage, read_write> auv_param: array<vec4<f32>>; // (n, d / 4)
@group(0) @binding(2) var<storage, read> auv_grad: array<vec4<f32>>;        // (n, d / 4)
@group(0) @binding(3) var<storage, read_write> auv_m: array<vec4<f32>>;     // (n, d / 4)
@group(0) @binding(4) var<storage, read_write> auv_v: array<vec4<f32>>;     // (n, d / 4)

@compute @workgroup_size(RW)
fn adam_unit_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let row = group_index(wid, nwg);
    if row >= p.len { return; }
    let base = row * p.d;
    let c = au_coef[row];
    let clip = ad_clip[0];
    var s = vec4(0.0);
    for (var j = l; j < p.d; j += RW) {
        let i = base + j;
        let x = auv_param[i];
        let g = (auv_grad[i] - c * x) * clip;
        let a = adam_at4(x, g, auv_m[i], auv_v[i]);
        auv_m[i] = a.m;
        auv_v[i] = a.v;
        auv_param[i] = a.x;
        s += a.x * a.x;
    }
    let ss = nr_tree(l, (s.x + s.y) + (s.z + s.w));
    if ss > 0.0 {
        let norm = sqrt(ss);
        for (var j = l; j < p.d; j += RW) {
            auv_param[base + j] = auv_param[base + j] / norm;
        }
    }
}
