//! CPU twins of shaders/toy_mlp.wgsl: the two-layer toy models of the rest of "Toy Models of
//! Superposition" (Elhage et al. 2022), many instances trained at once. Instance e is
//!
//!   pre = W1 x + b1,  h = act_h(pre),  o = W2 h + b2,  y = act_o(o)
//!
//! trained on sum_i I_i (y_i - t_i)^2 + l1_e sum_k |h_k| (batch mean), with t = x (identity)
//! or t = |x| (the absolute-value task), act_h identity, ReLU or top-k (ReLU of the k_e
//! largest pre-activations, the others 0) and act_o ReLU or identity; W2 = W1^T (tied) or
//! its own matrix.
//!
//! The privileged-basis model h = ReLU(W x), x' = ReLU(W^T h + b) is act_h ReLU, tied, no
//! hidden bias; the absolute-value model is act_h ReLU, untied, with b1, signed inputs.
//!
//! Layout, instance-major and row-major throughout:
//! - `prm` (instances, P), P = 2 m n + m + n: one flat parameter vector per instance,
//!   [W1 (m, n) | W2 (n, m) | b1 (m) | b2 (n)] (W2 unused when tied; Adam runs on it whole);
//! - `importance` (instances, n); `density`, `l1` (instances); `topk` (instances, u32);
//! - `x`, `g` (instances, rows, n); `h`, `dpre` (instances, rows, m); `loss` (instances, rows);
//! - gradient partials `part` (instances, chunks, P), summed by `toy::toy_sum_chunks`.
//!
//! One training step: `mlp_data`, `mlp_forward`, `mlp_grad`, `toy::toy_sum_chunks`,
//! `optim::adam` on `prm`. Every sum has a fixed order, the kernel's. Work is split over
//! instances (and chunks) with rayon; within one these are plain loops.

use rayon::prelude::*;

use super::toy::{draw, row_key};

/// Shape of a batch of two-layer toy instances trained together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpShape {
    pub instances: usize,
    /// Batch rows per instance.
    pub rows: usize,
    /// Features (input and output width).
    pub n: usize,
    /// Hidden neurons.
    pub m: usize,
}

impl MlpShape {
    /// Parameters per instance: 2 m n + m + n.
    pub fn params(&self) -> usize {
        2 * self.m * self.n + self.m + self.n
    }
    /// Row chunks of `chunk` rows each (the last may be shorter).
    pub fn chunks(&self, chunk: usize) -> usize {
        self.rows.div_ceil(chunk.max(1))
    }
    /// Offsets of W2, b1 and b2 in an instance's parameter vector (W1 is at 0).
    pub fn offsets(&self) -> (usize, usize, usize) {
        let mn = self.m * self.n;
        (mn, 2 * mn, 2 * mn + self.m)
    }
}

/// The hidden activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    Identity,
    Relu,
    /// ReLU of the `topk[e]` largest pre-activations (ties: the lower index), others 0.
    TopK,
}

impl HiddenAct {
    /// The WGSL code (`Params.act_h`).
    pub fn code(self) -> u32 {
        match self {
            HiddenAct::Identity => 0,
            HiddenAct::Relu => 1,
            HiddenAct::TopK => 2,
        }
    }
}

/// What the model is (the same for every instance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MlpSpec {
    pub act_h: HiddenAct,
    /// y = ReLU(o) (true) or o.
    pub relu_out: bool,
    /// W2 = W1^T.
    pub tied: bool,
    /// b1 trained (false: its gradient is 0, so it stays at its initial 0).
    pub hidden_bias: bool,
    /// x_i = 2u - 1 in [-1, 1) when present (else u in [0, 1)).
    pub signed: bool,
    /// Target |x| (else x).
    pub abs_target: bool,
}

/// The batch for `step`: feature f of row r of instance e is present when
/// draw(key, 2f) < density[e], and then x = u or 2u - 1 (`signed`), u = draw(key, 2f + 1);
/// else 0. key = row_key(seed, step, e, r). Unsigned, this is `toy::toy_data` bit for bit.
/// density: (instances) -> x: (instances, rows, n)
pub fn mlp_data(
    shape: MlpShape,
    signed: bool,
    seed: u64,
    step: u32,
    density: &[f32],
    x: &mut [f32],
) {
    let MlpShape { rows, n, .. } = shape;
    x[..shape.instances * rows * n]
        .par_chunks_mut((rows * n).max(1))
        .enumerate()
        .for_each(|(e, xe)| {
            for (r, xr) in xe.chunks_exact_mut(n.max(1)).enumerate() {
                let key = row_key(seed, step, e as u32, r as u32);
                for (f, v) in xr.iter_mut().enumerate() {
                    let f = f as u32;
                    *v = if draw(key, 2 * f) < density[e] {
                        let u = draw(key, 2 * f + 1);
                        if signed { 2.0 * u - 1.0 } else { u }
                    } else {
                        0.0
                    };
                }
            }
        });
}

/// sign(v): 1, -1, or 0 at 0 (WGSL `sign`; Rust's signum gives 1 at +0).
fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Forward pass and backward pass to the pre-activations, per row of each instance:
/// pre_k = b1_k + sum_i W1[k, i] x_i (i ascending, skipping x_i = 0);
/// h_k = act_h(pre_k) (top-k: rank_k = #{j: pre_j > pre_k or (pre_j = pre_k and j < k)},
///       h_k = max(pre_k, 0) if rank_k < topk[e] else 0);
/// o_i = b2_i + sum_k W2[i, k] h_k (k ascending, skipping h_k = 0); y_i = act_o(o_i);
/// d_i = y_i - t_i (t = x or |x|); loss = sum_i (I_i d_i) d_i + l1[e] sum_k |h_k|;
/// g_i = dL/do_i = (2 / rows) I_i d_i where o_i > 0 or act_o is the identity, else 0;
/// dh_k = sum_i W2[i, k] g_i (skipping g_i = 0) + (l1[e] (1 / rows)) sign(h_k);
/// dpre_k = dh_k where h_k > 0 or act_h is the identity, else 0.
/// x: (instances, rows, n), prm: (instances, P), importance: (instances, n),
/// l1: (instances), topk: (instances)
/// -> h: (instances, rows, m), g: (instances, rows, n), dpre: (instances, rows, m),
///    loss: (instances, rows)
#[allow(clippy::too_many_arguments)]
pub fn mlp_forward(
    shape: MlpShape,
    spec: MlpSpec,
    x: &[f32],
    prm: &[f32],
    importance: &[f32],
    l1: &[f32],
    topk: &[u32],
    h: &mut [f32],
    g: &mut [f32],
    dpre: &mut [f32],
    loss: &mut [f32],
) {
    let MlpShape {
        instances,
        rows,
        n,
        m,
    } = shape;
    let p = shape.params();
    let (ow2, ob1, ob2) = shape.offsets();
    let scale = 2.0f32 / rows as f32;
    let inv_rows = 1.0f32 / rows as f32;
    let (rn, rm) = ((rows * n).max(1), (rows * m).max(1));
    h[..instances * rows * m]
        .par_chunks_mut(rm)
        .zip(g[..instances * rows * n].par_chunks_mut(rn))
        .zip(dpre[..instances * rows * m].par_chunks_mut(rm))
        .zip(loss[..instances * rows].par_chunks_mut(rows.max(1)))
        .enumerate()
        .for_each(|(e, (((he, ge), de), le))| {
            let w = &prm[e * p..(e + 1) * p];
            let imp = &importance[e * n..(e + 1) * n];
            let w2 = |i: usize, k: usize| {
                if spec.tied {
                    w[k * n + i]
                } else {
                    w[ow2 + i * m + k]
                }
            };
            let coef = l1[e] * inv_rows;
            let mut pre = vec![0.0f32; m];
            let (mut nz, mut hnz, mut gnz) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..rows {
                let xr = &x[(e * rows + r) * n..(e * rows + r + 1) * n];
                nz.clear();
                nz.extend((0..n).filter(|&i| xr[i] != 0.0));
                for (k, pk) in pre.iter_mut().enumerate() {
                    let mut s = w[ob1 + k];
                    for &i in &nz {
                        s += w[k * n + i] * xr[i];
                    }
                    *pk = s;
                }
                let hr = &mut he[r * m..(r + 1) * m];
                for k in 0..m {
                    hr[k] = match spec.act_h {
                        HiddenAct::Identity => pre[k],
                        HiddenAct::Relu => pre[k].max(0.0),
                        HiddenAct::TopK => {
                            let rank = (0..m)
                                .filter(|&j| pre[j] > pre[k] || (pre[j] == pre[k] && j < k))
                                .count();
                            if rank < topk[e] as usize {
                                pre[k].max(0.0)
                            } else {
                                0.0
                            }
                        }
                    };
                }
                hnz.clear();
                hnz.extend((0..m).filter(|&k| hr[k] != 0.0));
                let gr = &mut ge[r * n..(r + 1) * n];
                let mut l = 0.0f32;
                for i in 0..n {
                    let mut o = w[ob2 + i];
                    for &k in &hnz {
                        o += w2(i, k) * hr[k];
                    }
                    let y = if spec.relu_out { o.max(0.0) } else { o };
                    let t = if spec.abs_target { xr[i].abs() } else { xr[i] };
                    let d = y - t;
                    let id = imp[i] * d;
                    l += id * d;
                    gr[i] = if !spec.relu_out || o > 0.0 {
                        scale * id
                    } else {
                        0.0
                    };
                }
                let mut la = 0.0f32;
                for &hk in hr.iter() {
                    la += hk.abs();
                }
                le[r] = l + l1[e] * la;
                gnz.clear();
                gnz.extend((0..n).filter(|&i| gr[i] != 0.0));
                let dr = &mut de[r * m..(r + 1) * m];
                for k in 0..m {
                    let mut s = 0.0f32;
                    for &i in &gnz {
                        s += w2(i, k) * gr[i];
                    }
                    s += coef * sign(hr[k]);
                    dr[k] = if spec.act_h == HiddenAct::Identity || hr[k] > 0.0 {
                        s
                    } else {
                        0.0
                    };
                }
            }
        });
}

/// Gradient partials over chunks of `chunk` rows (chunk c covers rows c chunk ..
/// (c + 1) chunk, clipped to rows), row order within the chunk, per parameter:
/// W1[k, i]: sum_r dpre_rk x_ri (skipping x_ri = 0), then when tied + g_ri h_rk (skipping
///           g_ri = 0), both terms of a row before the next row's;
/// W2[i, k]: sum_r g_ri h_rk (skipping g_ri = 0); 0 when tied;
/// b1[k]: sum_r dpre_rk (0 without a hidden bias); b2[i]: sum_r g_ri.
/// x, g: (instances, rows, n), h, dpre: (instances, rows, m) -> part: (instances, chunks, P)
#[allow(clippy::too_many_arguments)]
pub fn mlp_grad(
    shape: MlpShape,
    spec: MlpSpec,
    chunk: usize,
    x: &[f32],
    g: &[f32],
    h: &[f32],
    dpre: &[f32],
    part: &mut [f32],
) {
    let MlpShape {
        instances,
        rows,
        n,
        m,
    } = shape;
    let p = shape.params();
    let (ow2, ob1, ob2) = shape.offsets();
    let chunks = shape.chunks(chunk);
    part[..instances * chunks * p]
        .par_chunks_mut(p.max(1))
        .enumerate()
        .for_each(|(ec, pc)| {
            let (e, c) = (ec / chunks, ec % chunks);
            pc.fill(0.0);
            for r in c * chunk..((c + 1) * chunk).min(rows) {
                let row = e * rows + r;
                let xr = &x[row * n..(row + 1) * n];
                let gr = &g[row * n..(row + 1) * n];
                let hr = &h[row * m..(row + 1) * m];
                let dr = &dpre[row * m..(row + 1) * m];
                // Per element the x term of a row comes before its tied g term, as in the kernel.
                for i in (0..n).filter(|&i| xr[i] != 0.0) {
                    for k in 0..m {
                        pc[k * n + i] += dr[k] * xr[i];
                    }
                    if spec.tied && gr[i] != 0.0 {
                        for k in 0..m {
                            pc[k * n + i] += gr[i] * hr[k];
                        }
                    }
                }
                if spec.tied {
                    for i in (0..n).filter(|&i| xr[i] == 0.0 && gr[i] != 0.0) {
                        for k in 0..m {
                            pc[k * n + i] += gr[i] * hr[k];
                        }
                    }
                }
                if !spec.tied {
                    for i in 0..n {
                        if gr[i] != 0.0 {
                            for k in 0..m {
                                pc[ow2 + i * m + k] += gr[i] * hr[k];
                            }
                        }
                    }
                }
                if spec.hidden_bias {
                    for k in 0..m {
                        pc[ob1 + k] += dr[k];
                    }
                }
                for i in 0..n {
                    pc[ob2 + i] += gr[i];
                }
            }
        });
}
