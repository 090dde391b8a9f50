// Matryoshka BatchTopK's level-aware sparse stages: nested prefixes of the dictionary,
// widths w_0 < ... < w_{M-1} = n; a latent i belongs to group level_of(i), the first m with
// i < w_m, and enters every level m >= its group. Codes are CSR over rows with latents
// ascending in a row, so a level's entries are a prefix of each row's.
// Launchers: src/kernels/matryoshka.rs. CPU twins: src/reference/matryoshka.rs (same names;
// every sum runs in the twin's order).
//   matryoshka_decode     x_hat_levels[m, b, :] = b_dec + sum over the row's entries with
//                         idx < w_m of val * w_dec[idx]: one pass over the row, writing
//                         each level when the entries pass its width (the running sum is
//                         the twin's per-level sum, term for term)
//   matryoshka_residuals  dy_levels[g] = scale * sum over m >= g (ascending) of
//                         (x_hat_levels[m] - y), per element
//   sparse_dot_levels     g[s] = dy_levels[level_of(idx[s]), row(s), :] . w_dec[idx[s], :]
//   gather_dw_dec_levels  dw_dec[i, :] = sum over the latent's entries of
//                         val * dy_levels[level_of(i), lat_row, :] (accumulate: added, for
//                         latents with entries)
// One invocation per output element (decode, residuals, dw_dec: consecutive invocations
// take consecutive columns, so the rows of w_dec / dy are read coalesced) or per slot (dot).

struct Params {
    rows: u32,
    n: u32,
    d: u32,       // columns of w_dec / dy / y
    levels: u32,  // M
    cap: u32,     // slots of idx / val / g
    flag: u32,    // sparse_decode-like: 1 when b_dec is bound (always); dw_dec: 1 to accumulate
    scale: f32,   // matryoshka_residuals
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 64;

// level_of(i), the group of latent i, is the first level whose width exceeds i (at most 8
// levels), computed inline where the widths are bound.

// ---------------------------------------------------------------- matryoshka_decode
@group(0) @binding(1) var<storage, read> md_row_ptr: array<u32>;        // (rows + 1)
@group(0) @binding(2) var<storage, read> md_idx: array<u32>;            // (cap)
@group(0) @binding(3) var<storage, read> md_val: array<f32>;            // (cap)
@group(0) @binding(4) var<storage, read> md_w_dec: array<f32>;          // (n, d)
@group(0) @binding(5) var<storage, read> md_b_dec: array<f32>;          // (d)
@group(0) @binding(6) var<storage, read> md_widths: array<u32>;         // (levels)
@group(0) @binding(7) var<storage, read_write> md_out: array<f32>;      // (levels, rows, d)

@compute @workgroup_size(WG)
fn matryoshka_decode(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    if t >= p.rows * p.d { return; }
    let b = t / p.d;
    let j = t - b * p.d;
    let end = min(md_row_ptr[b + 1u], p.cap);
    var s = md_row_ptr[b];
    var acc = md_b_dec[j];
    for (var m = 0u; m < p.levels; m++) {
        let w = md_widths[m];
        while s < end && md_idx[s] < w {
            acc += md_val[s] * md_w_dec[md_idx[s] * p.d + j];
            s += 1u;
        }
        md_out[(m * p.rows + b) * p.d + j] = acc;
    }
}

// ---------------------------------------------------------------- matryoshka_residuals
@group(0) @binding(1) var<storage, read> mr_y: array<f32>;              // (rows, d)
@group(0) @binding(2) var<storage, read> mr_x_hat: array<f32>;          // (levels, rows, d)
@group(0) @binding(3) var<storage, read_write> mr_dy: array<f32>;       // (levels, rows, d)

@compute @workgroup_size(WG)
fn matryoshka_residuals(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_index(gid, nwg, WG);
    let len = p.rows * p.d;
    if e >= len { return; }
    let y = mr_y[e];
    for (var g = 0u; g < p.levels; g++) {
        var acc = 0.0;
        for (var m = g; m < p.levels; m++) {
            acc += mr_x_hat[m * len + e] - y;
        }
        mr_dy[g * len + e] = p.scale * acc;
    }
}

// ---------------------------------------------------------------- sparse_dot_levels
@group(0) @binding(1) var<storage, read> sd_row_ptr: array<u32>;        // (rows + 1)
@group(0) @binding(2) var<storage, read> sd_idx: array<u32>;            // (cap)
@group(0) @binding(3) var<storage, read> sd_dy: array<f32>;             // (levels, rows, d)
@group(0) @binding(4) var<storage, read> sd_w_dec: array<f32>;          // (n, d)
@group(0) @binding(5) var<storage, read> sd_widths: array<u32>;         // (levels)
@group(0) @binding(6) var<storage, read_write> sd_g: array<f32>;        // (cap)

// Row of slot s < nnz: the largest b with row_ptr[b] <= s.
fn sd_row_of(s: u32) -> u32 {
    var lo = 0u;
    var hi = p.rows;
    while lo < hi {
        let mid = (lo + hi + 1u) / 2u;
        if sd_row_ptr[mid] <= s {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}

@compute @workgroup_size(WG)
fn sparse_dot_levels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = linear_index(gid, nwg, WG);
    if s >= p.cap { return; }
    if s >= sd_row_ptr[p.rows] {
        sd_g[s] = 0.0;
        return;
    }
    let b = sd_row_of(s);
    let i = sd_idx[s];
    var m = 0u;
    while m + 1u < p.levels && sd_widths[m] <= i {
        m += 1u;
    }
    let y0 = (m * p.rows + b) * p.d;
    let w0 = i * p.d;
    var acc = 0.0;
    for (var j = 0u; j < p.d; j++) {
        acc += sd_dy[y0 + j] * sd_w_dec[w0 + j];
    }
    sd_g[s] = acc;
}

// ---------------------------------------------------------------- gather_dw_dec_levels
@group(0) @binding(1) var<storage, read> gl_lat_ptr: array<u32>;        // (n + 1)
@group(0) @binding(2) var<storage, read> gl_lat_row: array<u32>;        // (cap)
@group(0) @binding(3) var<storage, read> gl_lat_slot: array<u32>;       // (cap)
@group(0) @binding(4) var<storage, read> gl_val: array<f32>;            // (cap)
@group(0) @binding(5) var<storage, read> gl_dy: array<f32>;             // (levels, rows, d)
@group(0) @binding(6) var<storage, read> gl_widths: array<u32>;         // (levels)
@group(0) @binding(7) var<storage, read_write> gl_dw_dec: array<f32>;   // (n, d)

@compute @workgroup_size(WG)
fn gather_dw_dec_levels(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = linear_index(gid, nwg, WG);
    if t >= p.n * p.d { return; }
    let i = t / p.d;
    let j = t - i * p.d;
    let a = gl_lat_ptr[i];
    let z = gl_lat_ptr[i + 1u];
    if p.flag != 0u && a == z { return; }
    var m = 0u;
    while m + 1u < p.levels && gl_widths[m] <= i {
        m += 1u;
    }
    var acc = 0.0;
    for (var e = a; e < z; e++) {
        let r = m * p.rows + gl_lat_row[e];
        acc += gl_val[gl_lat_slot[e]] * gl_dy[r * p.d + j];
    }
    if p.flag != 0u {
        gl_dw_dec[t] = gl_dw_dec[t] + acc;
    } else {
        gl_dw_dec[t] = acc;
    }
}
