//! What a trained toy model's W says (Elhage et al. 2022, "Feature Dimensionality"):
//! per feature the norm ||W_i||, the superposition sum_{j != i} (W_i_hat . W_j)^2 and the
//! dimensionality D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2; per model W^T W and
//! D* = m / ||W||_F^2, the hidden dimensions per embedded feature. All in f64.

/// Norms below this count as zero when normalising W_i (the notebook's clamp).
const NORM_FLOOR: f64 = 1e-6;

/// A feature counts as represented when ||W_i|| exceeds this.
pub const REPRESENTED: f64 = 0.5;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Geometry {
    /// ||W_i|| per feature.
    pub norms: Vec<f64>,
    /// sum_{j != i} (W_i_hat . W_j)^2 per feature: 0 for a feature orthogonal to all others.
    pub superposition: Vec<f64>,
    /// D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 (j = i included): 1 for a dedicated
    /// dimension, 1/2 for an antipodal pair, 0 for a feature not learned.
    pub dims: Vec<f64>,
    /// W^T W: (n, n) row-major, entry (i, j) = W_i . W_j.
    pub wtw: Vec<f64>,
    /// m / ||W||_F^2.
    pub dstar: f64,
}

/// Geometry of one instance's w: (n, m), row i = W_i.
pub fn geometry(w: &[f32], n: usize, m: usize) -> Geometry {
    let row = |i: usize| &w[i * m..(i + 1) * m];
    let mut wtw = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            wtw[i * n + j] = row(i)
                .iter()
                .zip(row(j))
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
        }
    }
    let norms: Vec<f64> = (0..n).map(|i| wtw[i * n + i].sqrt()).collect();
    let mut superposition = vec![0.0; n];
    let mut dims = vec![0.0; n];
    for i in 0..n {
        let ni = norms[i].max(NORM_FLOOR);
        let mut all = 0.0;
        let mut others = 0.0;
        for j in 0..n {
            let c = wtw[i * n + j] / ni;
            all += c * c;
            if j != i {
                others += c * c;
            }
        }
        superposition[i] = others;
        dims[i] = if all > 0.0 {
            norms[i] * norms[i] / all
        } else {
            0.0
        };
    }
    let frob2: f64 = (0..n).map(|i| wtw[i * n + i]).sum();
    Geometry {
        norms,
        superposition,
        dims,
        wtw,
        dstar: if frob2 > 0.0 { m as f64 / frob2 } else { 0.0 },
    }
}

impl Geometry {
    /// Indices of the features with ||W_i|| > [`REPRESENTED`], in index order.
    pub fn represented(&self) -> Vec<usize> {
        (0..self.norms.len())
            .filter(|&i| self.norms[i] > REPRESENTED)
            .collect()
    }
}
