//! CPU twins of shaders/toy.wgsl: the toy models of superposition (Elhage et al. 2022),
//! many instances trained at once. Instance `e` is x' = ReLU(W_e^T W_e x + b_e) (or the
//! linear x' = W_e^T W_e x + b_e) with its own feature density and importances.
//!
//! Layout, instance-major and row-major throughout:
//! - `w` (instances, n, m): row i of instance e is the feature direction W_i (the i-th
//!   column of the paper's W, which is (m, n));
//! - `b`, `importance` (instances, n); `density` (instances);
//! - `x`, `g` (instances, rows, n); `h`, `dh` (instances, rows, m); `loss` (instances, rows);
//! - gradient partials `pw` (instances, chunks, n, m), `pb` (instances, chunks, n).
//!
//! One training step: `toy_data` (the batch, from a counter-based hash, so both engines see
//! the same numbers bit for bit and nothing crosses the bus), `toy_forward` (activations,
//! the output gradient, the hidden gradient and the per-row loss), `toy_grad` (dW and db per
//! chunk of rows), `toy_sum_chunks` (the chunks summed in a fixed order), then
//! `optim::adam` on w and b. Every sum has a fixed order, the same as the kernel's.
//!
//! The work is split over instances with rayon; within an instance these are plain loops.

use rayon::prelude::*;

/// Shape of a batch of toy-model instances trained together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToyShape {
    /// Independent models (one per density level, restart, ...).
    pub instances: usize,
    /// Batch rows per instance.
    pub rows: usize,
    /// Features (input and output width).
    pub n: usize,
    /// Hidden width.
    pub m: usize,
}

impl ToyShape {
    /// Row chunks of `chunk` rows each (the last may be shorter).
    pub fn chunks(&self, chunk: usize) -> usize {
        self.rows.div_ceil(chunk.max(1))
    }
}

/// The PCG hash (Jarzynski and Olano 2020, "Hash Functions for GPU Rendering"): one step of
/// the PCG LCG followed by its RXS-M-XS output permutation. A bijection on u32.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// Key of one data row: the seed, the step, the instance and the row chained through `pcg`.
pub fn row_key(seed: u64, step: u32, instance: u32, row: u32) -> u32 {
    pcg(instance_key(seed, step, instance) ^ row)
}

/// The part of [`row_key`] shared by every row of an instance.
fn instance_key(seed: u64, step: u32, instance: u32) -> u32 {
    let k = pcg(seed as u32);
    let k = pcg(k ^ (seed >> 32) as u32);
    let k = pcg(k ^ step);
    pcg(k ^ instance)
}

/// Uniform draw number `counter` of a row, in [0, 1) with 24 bits: (hash >> 8) * 2^-24,
/// exact in f32 on every device.
pub fn draw(key: u32, counter: u32) -> f32 {
    (pcg(key ^ pcg(counter)) >> 8) as f32 * (1.0 / 16777216.0)
}

/// How the features of a row are drawn: independently, or in sets of consecutive features
/// (set s = features s size .. (s + 1) size, for s < sets; the features after the last set
/// stay independent) that fire together or never together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SetMode {
    /// Feature f is present when draw(key, 2f) < density[e, f].
    #[default]
    Independent,
    /// Every feature of a set is present when draw(key, 2 first) < density[e, first]
    /// (first: the set's first feature), each with its own value.
    Correlated,
    /// At most one feature of a set: with u = draw(key, 2 first) and d = density[e, first],
    /// member j (f = first + j) is present when j d <= u < (j + 1) d (products in f32,
    /// correctly rounded on every device), so each member fires with probability d and the
    /// set with size d (which must not exceed 1).
    Anticorrelated,
}

/// The feature sets of [`toy_data`] (WGSL `Step.mode`, `Step.sets`, `Step.set_size`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeatureSets {
    pub mode: SetMode,
    pub sets: usize,
    pub size: usize,
}

impl FeatureSets {
    /// The kernel's code of the mode (WGSL `Step.mode`).
    pub fn code(&self) -> u32 {
        match self.mode {
            SetMode::Independent => 0,
            SetMode::Correlated => 1,
            SetMode::Anticorrelated => 2,
        }
    }

    /// The set feature `f` belongs to, as (its first feature, f's index in it), or None for
    /// an independent feature.
    pub fn member(&self, f: usize) -> Option<(usize, usize)> {
        if self.mode == SetMode::Independent || self.size == 0 || f >= self.sets * self.size {
            return None;
        }
        let first = f / self.size * self.size;
        Some((first, f - first))
    }
}

/// The batch for `step`: feature f of row r of instance e is present as [`FeatureSets`]
/// says (independently: when draw(key, 2f) < density[e, f]), and then has the value
/// draw(key, 2f + 1) ~ U[0, 1); else 0. key = row_key(seed, step, e, r).
/// density: (instances, n) -> x: (instances, rows, n)
pub fn toy_data(
    shape: ToyShape,
    seed: u64,
    step: u32,
    sets: FeatureSets,
    density: &[f32],
    x: &mut [f32],
) {
    let ToyShape { rows, n, .. } = shape;
    // pcg(c) for every draw counter c of a row: the inner hash of `draw`, the same for all rows.
    let salt: Vec<u32> = (0..2 * n as u32).map(pcg).collect();
    let member: Vec<Option<(usize, usize)>> = (0..n).map(|f| sets.member(f)).collect();
    x[..shape.instances * rows * n]
        .par_chunks_mut((rows * n).max(1))
        .enumerate()
        .for_each(|(e, xe)| {
            let de = &density[e * n..(e + 1) * n];
            let ekey = instance_key(seed, step, e as u32);
            for (r, xr) in xe.chunks_exact_mut(n.max(1)).enumerate() {
                let key = pcg(ekey ^ r as u32); // row_key(seed, step, e, r)
                let u = |c: usize| (pcg(key ^ salt[c]) >> 8) as f32 * (1.0 / 16777216.0);
                for (f, v) in xr.iter_mut().enumerate() {
                    // Both draws always (no branch to mispredict at middling densities).
                    let value = u(2 * f + 1);
                    let present = match member[f] {
                        None => u(2 * f) < de[f],
                        Some((first, j)) => {
                            let (a, d) = (u(2 * first), de[first]);
                            if sets.mode == SetMode::Correlated {
                                a < d
                            } else {
                                j as f32 * d <= a && a < (j + 1) as f32 * d
                            }
                        }
                    };
                    *v = if present { value } else { 0.0 };
                }
            }
        });
}

/// Forward pass and the backward pass up to the hidden layer, per row of each instance:
/// h = W x (h_k = sum_i w[i, k] x_i, skipping x_i = 0);
/// o_i = b_i + sum_k w[i, k] h_k; y_i = max(o_i, 0) (relu) or o_i (linear);
/// loss = sum_i (I_i (y_i - x_i)) (y_i - x_i);
/// g_i = dL/do_i = (2 / rows) (I_i (y_i - x_i)) where o_i > 0 or linear, else 0;
/// dh_k = sum_i w[i, k] g_i (skipping g_i = 0). Sums run in index order.
/// x: (instances, rows, n), w: (instances, n, m), b, importance: (instances, n)
/// -> h: (instances, rows, m), g: (instances, rows, n), dh: (instances, rows, m),
///    loss: (instances, rows)
#[allow(clippy::too_many_arguments)]
pub fn toy_forward(
    shape: ToyShape,
    relu: bool,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    importance: &[f32],
    h: &mut [f32],
    g: &mut [f32],
    dh: &mut [f32],
    loss: &mut [f32],
) {
    let ToyShape {
        instances,
        rows,
        n,
        m,
    } = shape;
    let scale = 2.0f32 / rows as f32;
    let rn = (rows * n).max(1);
    let rm = (rows * m).max(1);
    h[..instances * rows * m]
        .par_chunks_mut(rm)
        .zip(g[..instances * rows * n].par_chunks_mut(rn))
        .zip(dh[..instances * rows * m].par_chunks_mut(rm))
        .zip(loss[..instances * rows].par_chunks_mut(rows.max(1)))
        .enumerate()
        .for_each(|(e, (((he, ge), dhe), le))| {
            let we = &w[e * n * m..(e + 1) * n * m];
            let be = &b[e * n..(e + 1) * n];
            let ie = &importance[e * n..(e + 1) * n];
            // W transposed, (m, n), so that o = b + sum_k W[:, k] h_k runs as n-long axpys
            // (each o_i still sums b_i, then k = 0, 1, ... in order, as the kernel does).
            let mut wt = vec![0.0f32; m * n];
            for i in 0..n {
                for k in 0..m {
                    wt[k * n + i] = we[i * m + k];
                }
            }
            let mut o = vec![0.0f32; n];
            // Indices of the non-zero x_i (then g_i) of a row, in order: the skipped terms
            // are the kernel's, without a branch per feature.
            let mut nz = vec![0usize; n];
            for r in 0..rows {
                let xr = &x[(e * rows + r) * n..(e * rows + r + 1) * n];
                let hr = &mut he[r * m..(r + 1) * m];
                sum_nonzero_rows(xr, we, &mut nz, hr);
                o.copy_from_slice(be);
                for k in 0..m {
                    let hk = hr[k];
                    for (oi, &wk) in o.iter_mut().zip(&wt[k * n..(k + 1) * n]) {
                        *oi += wk * hk;
                    }
                }
                let gr = &mut ge[r * n..(r + 1) * n];
                let mut l = 0.0f32;
                for i in 0..n {
                    let y = if relu { o[i].max(0.0) } else { o[i] };
                    let d = y - xr[i];
                    let id = ie[i] * d;
                    l += id * d;
                    gr[i] = if !relu || o[i] > 0.0 { scale * id } else { 0.0 };
                }
                le[r] = l;
                let dhr = &mut dhe[r * m..(r + 1) * m];
                sum_nonzero_rows(gr, we, &mut nz, dhr);
            }
        });
}

/// out[k] = sum over the non-zero v_i (i ascending, from 0) of w[i * m + k] v_i, w as stored
/// (n, m): [`toy_forward`]'s h from x and dh from g, the terms with v_i = 0 skipped as in
/// the kernel. v: (n), nz: scratch (n) -> out: (m)
fn sum_nonzero_rows(v: &[f32], w: &[f32], nz: &mut [usize], out: &mut [f32]) {
    let m = out.len();
    out.fill(0.0);
    let count = nonzeros(v, nz);
    for &i in &nz[..count] {
        let vi = v[i];
        for (ok, &wk) in out.iter_mut().zip(&w[i * m..(i + 1) * m]) {
            *ok += wk * vi;
        }
    }
}

/// Write the indices of the non-zero entries of `v` to the front of `idx`, in order;
/// return how many there are.
fn nonzeros(v: &[f32], idx: &mut [usize]) -> usize {
    let mut count = 0;
    for (i, &a) in v.iter().enumerate() {
        idx[count] = i;
        count += (a != 0.0) as usize;
    }
    count
}

/// Gradient partials over chunks of `chunk` rows (chunk c covers rows c chunk .. (c + 1)
/// chunk, clipped to rows). In row order within the chunk, for each feature i:
/// pw[i, k] = sum_r (g_ri h_rk) + (x_ri dh_rk)   (dL/dw: W is used twice, h = W x and
///            o = W^T h; terms with g_ri = 0 or x_ri = 0 are skipped)
/// pb[i] = sum_r g_ri.
/// x, g: (instances, rows, n), h, dh: (instances, rows, m)
/// -> pw: (instances, chunks, n, m), pb: (instances, chunks, n)
#[allow(clippy::too_many_arguments)]
pub fn toy_grad(
    shape: ToyShape,
    chunk: usize,
    x: &[f32],
    g: &[f32],
    h: &[f32],
    dh: &[f32],
    pw: &mut [f32],
    pb: &mut [f32],
) {
    let ToyShape {
        instances,
        rows,
        n,
        m,
    } = shape;
    let chunks = shape.chunks(chunk);
    pw[..instances * chunks * n * m]
        .par_chunks_mut((n * m).max(1))
        .zip(pb[..instances * chunks * n].par_chunks_mut(n.max(1)))
        .enumerate()
        .for_each(|(ec, (pwc, pbc))| {
            let (e, c) = (ec / chunks, ec % chunks);
            pwc.fill(0.0);
            pbc.fill(0.0);
            let (mut gnz, mut xnz) = (vec![0usize; n], vec![0usize; n]);
            for r in c * chunk..((c + 1) * chunk).min(rows) {
                let row = e * rows + r;
                let hr = &h[row * m..(row + 1) * m];
                let dhr = &dh[row * m..(row + 1) * m];
                let gr = &g[row * n..(row + 1) * n];
                let xr = &x[row * n..(row + 1) * n];
                // Per element the g term of a row comes before its x term, as in the kernel.
                let gc = nonzeros(gr, &mut gnz);
                for &i in &gnz[..gc] {
                    let gi = gr[i];
                    for (a, &hk) in pwc[i * m..(i + 1) * m].iter_mut().zip(hr) {
                        *a += gi * hk;
                    }
                    pbc[i] += gi;
                }
                let xc = nonzeros(xr, &mut xnz);
                for &i in &xnz[..xc] {
                    let xi = xr[i];
                    for (a, &dk) in pwc[i * m..(i + 1) * m].iter_mut().zip(dhr) {
                        *a += xi * dk;
                    }
                }
            }
        });
}

/// out[e, j] = partials[e, 0, j] + partials[e, 1, j] + ... + partials[e, chunks - 1, j],
/// summed in that order.
/// partials: (groups, chunks, len) -> out: (groups, len)
pub fn toy_sum_chunks(partials: &[f32], groups: usize, chunks: usize, len: usize, out: &mut [f32]) {
    out[..groups * len]
        .par_chunks_mut(len.max(1))
        .enumerate()
        .for_each(|(e, oe)| {
            for (j, o) in oe.iter_mut().enumerate() {
                let base = e * chunks * len + j;
                let mut s = partials[base];
                for c in 1..chunks {
                    s += partials[base + c * len];
                }
                *o = s;
            }
        });
}
