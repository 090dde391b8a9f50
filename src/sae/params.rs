//! SAE parameters on the host, their initialisation, and the geometric median used for b_dec.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::{BDecInit, DecoderNorm, TrainConfig};

/// One value per parameter tensor, by name: the parameters themselves ([`SaeParams`]),
/// their gradients and Adam moments, on the host (`Vec<f32>`) and on the device
/// (`GpuTensor`), and anything else kept per tensor. SAELens orientation; `log_threshold`
/// is empty (one unused element on the device) unless the architecture trains a threshold
/// (jumprelu).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSet<T> {
    pub d: usize,
    pub n: usize,
    /// (d, n)
    pub w_enc: T,
    /// (n, d)
    pub w_dec: T,
    /// (n)
    pub b_enc: T,
    /// (d)
    pub b_dec: T,
    /// (n) or empty
    pub log_threshold: T,
}

/// The parameters of an SAE in training.
pub type SaeParams = ParamSet<Vec<f32>>;

/// The tensors' names, as checkpoints store them, in the order [`ParamSet::iter`] visits
/// them.
pub const PARAM_NAMES: [&str; 5] = ["W_enc", "W_dec", "b_enc", "b_dec", "log_threshold"];

impl<T> ParamSet<T> {
    /// Build each tensor from its name (see [`PARAM_NAMES`]).
    pub fn try_from_fn<E>(
        d: usize,
        n: usize,
        mut f: impl FnMut(&'static str) -> std::result::Result<T, E>,
    ) -> std::result::Result<ParamSet<T>, E> {
        Ok(ParamSet {
            d,
            n,
            w_enc: f(PARAM_NAMES[0])?,
            w_dec: f(PARAM_NAMES[1])?,
            b_enc: f(PARAM_NAMES[2])?,
            b_dec: f(PARAM_NAMES[3])?,
            log_threshold: f(PARAM_NAMES[4])?,
        })
    }

    /// Each tensor mapped through `f(name, tensor)`.
    pub fn try_map<U, E>(
        &self,
        mut f: impl FnMut(&'static str, &T) -> std::result::Result<U, E>,
    ) -> std::result::Result<ParamSet<U>, E> {
        self.try_zip_map(self, |name, t, _| f(name, t))
    }

    /// Each pair of tensors of the same name mapped through `f(name, mine, other's)`.
    pub fn try_zip_map<U, V, E>(
        &self,
        other: &ParamSet<U>,
        mut f: impl FnMut(&'static str, &T, &U) -> std::result::Result<V, E>,
    ) -> std::result::Result<ParamSet<V>, E> {
        let [w_enc, w_dec, b_enc, b_dec, log_threshold] = self.zip(other);
        Ok(ParamSet {
            d: self.d,
            n: self.n,
            w_enc: f(w_enc.0, w_enc.1, w_enc.2)?,
            w_dec: f(w_dec.0, w_dec.1, w_dec.2)?,
            b_enc: f(b_enc.0, b_enc.1, b_enc.2)?,
            b_dec: f(b_dec.0, b_dec.1, b_dec.2)?,
            log_threshold: f(log_threshold.0, log_threshold.1, log_threshold.2)?,
        })
    }

    /// Each tensor mapped through `f(name, tensor)`.
    pub fn map<U>(&self, mut f: impl FnMut(&'static str, &T) -> U) -> ParamSet<U> {
        self.try_map(|name, t| Ok::<U, std::convert::Infallible>(f(name, t)))
            .unwrap_or_else(|e| match e {})
    }

    /// (name, this set's tensor, `other`'s tensor) of every tensor, in [`PARAM_NAMES`]
    /// order.
    pub fn zip<'a, U>(&'a self, other: &'a ParamSet<U>) -> [(&'static str, &'a T, &'a U); 5] {
        let (a, b) = (self.iter(), other.iter());
        std::array::from_fn(|i| (a[i].0, a[i].1, b[i].1))
    }

    /// The tensors themselves, in [`PARAM_NAMES`] order.
    pub fn into_tensors(self) -> [T; 5] {
        [
            self.w_enc,
            self.w_dec,
            self.b_enc,
            self.b_dec,
            self.log_threshold,
        ]
    }

    /// (name, tensor) of every tensor, in [`PARAM_NAMES`] order.
    pub fn iter(&self) -> [(&'static str, &T); 5] {
        [
            (PARAM_NAMES[0], &self.w_enc),
            (PARAM_NAMES[1], &self.w_dec),
            (PARAM_NAMES[2], &self.b_enc),
            (PARAM_NAMES[3], &self.b_dec),
            (PARAM_NAMES[4], &self.log_threshold),
        ]
    }
}

impl SaeParams {
    /// W_dec rows random directions at norm `init_norm` (unit-norm decoders: at norm 1),
    /// W_enc = init_norm x the unit directions^T, b_enc = 0, b_dec = geometric median / mean
    /// of `sample` (rows x d, already scaled) or zeros, log threshold for jumprelu at
    /// ln(threshold_init).
    /// A transcoder (`cfg.d_out`) is initialised by [`init_transcoder`].
    pub fn init(cfg: &TrainConfig, sample: &[f32]) -> SaeParams {
        if cfg.d_out.is_some() {
            return init_transcoder(cfg, sample);
        }
        let (d, n) = (cfg.d_in, cfg.d_sae);
        let norm = cfg.init_norm;
        let mut w_dec = random_rows(cfg.seed, 0, n, d, norm);
        let w_enc = transpose(&w_dec, n, d);
        if cfg.decoder_norm == DecoderNorm::Unit && norm != 1.0 {
            for v in w_dec.iter_mut() {
                *v /= norm;
            }
        }
        SaeParams {
            d,
            n,
            w_enc,
            b_enc: vec![0.0; n],
            w_dec,
            b_dec: b_dec_at_start(cfg, sample, d),
            log_threshold: log_threshold_at_start(cfg, n),
        }
    }

    /// The decoder's width: d for an SAE, d_out for a transcoder (b_dec is (d_out)).
    pub fn d_out(&self) -> usize {
        self.b_dec.len()
    }

    /// Each tensor's shape (log_threshold: (n), or (0) when there is none).
    pub fn shapes(&self) -> ParamSet<Vec<usize>> {
        let (d, n, d_out) = (self.d, self.n, self.d_out());
        ParamSet {
            d,
            n,
            w_enc: vec![d, n],
            w_dec: vec![n, d_out],
            b_enc: vec![n],
            b_dec: vec![d_out],
            log_threshold: vec![self.log_threshold.len()],
        }
    }

    /// Zeros of every tensor's length (Adam's moments at the start).
    pub fn zeros_like(&self) -> SaeParams {
        self.map(|_, t| vec![0.0f32; t.len()])
    }

    /// The same SAE with the decoder norms of `--decoder-norm rescale` folded in: unit
    /// decoder rows, encoder columns and b_enc multiplied by the norms (what the codes see).
    pub fn rescale_folded(&self) -> SaeParams {
        let (d, n) = (self.d, self.n);
        let mut out = self.clone();
        let mut norms = vec![0.0f32; n];
        crate::reference::optim::rescale_view(
            &self.w_enc,
            &self.b_enc,
            &self.w_dec,
            n,
            d,
            &mut out.w_enc,
            &mut out.b_enc,
            &mut out.w_dec,
            &mut norms,
        );
        out
    }

    /// True when every value is finite.
    pub fn all_finite(&self) -> bool {
        self.iter()
            .iter()
            .all(|(_, t)| t.iter().all(|v| v.is_finite()))
    }
}

/// Geometric median of `points` (rows x d) by Weiszfeld's algorithm, started at the mean.
/// f64 accumulation; stops when the update moves less than 1e-6 relative.
pub fn geometric_median(points: &[f32], d: usize, iters: usize) -> Vec<f32> {
    let rows = points.len() / d;
    let mut m = vec![0.0f64; d];
    for r in points.chunks_exact(d) {
        for (a, &b) in m.iter_mut().zip(r) {
            *a += b as f64;
        }
    }
    for a in m.iter_mut() {
        *a /= rows as f64;
    }
    for _ in 0..iters {
        // The distances in parallel; the weighted sums in row order (they vectorise across
        // the columns, and the pass is bound by reading the sample).
        let dists = distances(points, d, &m);
        let mut num = vec![0.0f64; d];
        let mut den = 0.0f64;
        for (r, dist) in points.chunks_exact(d).zip(dists) {
            let w = 1.0 / dist;
            for (a, &x) in num.iter_mut().zip(r) {
                *a += w * x as f64;
            }
            den += w;
        }
        let next: Vec<f64> = num.iter().map(|a| a / den).collect();
        let shift = next
            .iter()
            .zip(&m)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale = next.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        m = next;
        if shift / scale < 1e-6 {
            break;
        }
    }
    m.into_iter().map(|v| v as f32).collect()
}

/// Rows whose distances [`distances`] sums side by side.
const DIST_LANES: usize = 8;

/// Each row's Euclidean distance to `m` (at least 1e-12): the sum of (x - m)^2 over the
/// row's columns in column order, in f64, then its square root. A row's sum is one chain
/// of dependent adds, so each task runs 8 rows' chains side by side (each row's adds in
/// the same order, so the same bits as one row at a time: `tests::distances_row_by_row`),
/// and the tasks run in parallel. At 8192 x 4096 this was most of the geometric median.
fn distances(points: &[f32], d: usize, m: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0f64; points.len() / d];
    out.par_chunks_mut(DIST_LANES)
        .zip(points.par_chunks(DIST_LANES * d))
        .for_each(|(o, block)| {
            let mut acc = [0.0f64; DIST_LANES];
            if o.len() == DIST_LANES {
                for (j, &c) in m.iter().enumerate() {
                    for (l, a) in acc.iter_mut().enumerate() {
                        *a += (block[l * d + j] as f64 - c).powi(2);
                    }
                }
            } else {
                for (l, a) in acc.iter_mut().enumerate().take(o.len()) {
                    for (&x, &c) in block[l * d..(l + 1) * d].iter().zip(m) {
                        *a += (x as f64 - c).powi(2);
                    }
                }
            }
            for (v, a) in o.iter_mut().zip(acc) {
                *v = a.sqrt().max(1e-12);
            }
        });
    out
}

/// `rows` random directions of `cols` values at norm `norm`: row i drawn from ChaCha8
/// stream `first_stream + i` of `seed`, rows in parallel, so the result does not depend on
/// the thread count (one stream for all rows took seconds at 4096 -> 65536).
pub(crate) fn random_rows(
    seed: u64,
    first_stream: u64,
    rows: usize,
    cols: usize,
    norm: f32,
) -> Vec<f32> {
    let mut w = crate::io::prefaulted_zeros(rows * cols);
    w.par_chunks_mut(cols.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(first_stream + i as u64);
            loop {
                for v in row.iter_mut() {
                    *v = rng.sample(StandardNormal);
                }
                let len = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if len > 1e-6 {
                    for v in row.iter_mut() {
                        *v *= norm / len;
                    }
                    break;
                }
            }
        });
    w
}

/// b_dec at the start: the geometric median / mean of `sample` (rows x d, scaled), or
/// zeros (`--b-dec-init zeros`, or no sample).
pub(crate) fn b_dec_at_start(cfg: &TrainConfig, sample: &[f32], d: usize) -> Vec<f32> {
    match cfg.b_dec_init {
        _ if sample.is_empty() => vec![0.0; d],
        BDecInit::Median => geometric_median(sample, d, 100),
        BDecInit::Mean => geometric_median(sample, d, 0),
        BDecInit::Zeros => vec![0.0; d],
    }
}

/// JumpReLU's log threshold at the start (ln threshold_init per latent); empty for the
/// other architectures.
pub(crate) fn log_threshold_at_start(cfg: &TrainConfig, n: usize) -> Vec<f32> {
    if cfg.arch == super::Arch::Jumprelu {
        vec![cfg.threshold_init.ln(); n]
    } else {
        Vec::new()
    }
}

/// `a` (rows, cols) transposed to (cols, rows), in square tiles (both sides' cache lines
/// reused), output rows in parallel. Within a tile each output row's segment is written
/// in one contiguous run (the strided side is the read): at 32768 x 2048 that took half
/// the time of writing down the columns, one 4 KiB page a value. Inside a tile the values
/// move in 4 x 4 blocks (four 16-byte loads, four 16-byte stores: the compiler turns the
/// block into register shuffles), which took 1.2-1.4 ns a value on one thread against
/// 3.0-3.1 for the value-by-value loop (16384 x 4096); ragged edges go value by value.
pub(crate) fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 64;
    const B: usize = 4;
    let mut t = crate::io::prefaulted_zeros(rows * cols);
    if rows == 0 || cols == 0 {
        return t;
    }
    t.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(jb, out)| {
            let j0 = jb * TILE;
            let jn = out.len() / rows;
            for i0 in (0..rows).step_by(TILE) {
                let i1 = (i0 + TILE).min(rows);
                // The tile's whole 4 x 4 blocks, then its ragged right and bottom edges.
                let (jq, iq) = (jn - jn % B, i0 + (i1 - i0) / B * B);
                for j in (0..jq).step_by(B) {
                    for i in (i0..iq).step_by(B) {
                        let mut m = [[0f32; B]; B];
                        for (r, mr) in m.iter_mut().enumerate() {
                            mr.copy_from_slice(&a[(i + r) * cols + j0 + j..][..B]);
                        }
                        for (c, o) in out[j * rows..].chunks_mut(rows).take(B).enumerate() {
                            for (r, mr) in m.iter().enumerate() {
                                o[i + r] = mr[c];
                            }
                        }
                    }
                }
                for j in 0..jn {
                    let from = if j < jq { iq } else { i0 };
                    let seg = &mut out[j * rows + from..j * rows + i1];
                    for (v, i) in seg.iter_mut().zip(from..i1) {
                        *v = a[i * cols + j0 + j];
                    }
                }
            }
        });
    t
}

/// A transcoder's initial parameters: W_dec rows random directions in the output space
/// (unit norm for unit-norm decoders, else `init_norm`), W_enc columns independent random
/// directions in the input space at `init_norm` (there is no transpose to tie to when
/// d_in != d_out), b_enc = 0, b_dec = geometric median / mean of the scaled target sample
/// (`sample`, rows x d_out) or zeros, jumprelu's log threshold at ln(threshold_init).
fn init_transcoder(cfg: &TrainConfig, sample: &[f32]) -> SaeParams {
    let (d, n) = (cfg.d_in, cfg.d_sae);
    let d_out = cfg.d_out.expect("a transcoder");
    let dec_norm = if cfg.decoder_norm == DecoderNorm::Unit {
        1.0
    } else {
        cfg.init_norm
    };
    // Streams 0..n for W_dec's rows, n..2n for W_enc's columns (see `random_rows`).
    let w_dec = random_rows(cfg.seed, 0, n, d_out, dec_norm);
    let w_enc_t = random_rows(cfg.seed, n as u64, n, d, cfg.init_norm);
    SaeParams {
        d,
        n,
        w_enc: transpose(&w_enc_t, n, d),
        b_enc: vec![0.0; n],
        w_dec,
        b_dec: b_dec_at_start(cfg, sample, d_out),
        log_threshold: log_threshold_at_start(cfg, n),
    }
}

#[cfg(test)]
mod tests {
    use super::{distances, geometric_median, transpose};
    use rand::{Rng, SeedableRng};

    /// The geometric median bit for bit as the plain loops compute it (row by row: the
    /// mean, each distance, the weighted sums), at shapes with partial blocks of rows and
    /// columns.
    #[test]
    fn geometric_median_as_the_plain_loops() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for (rows, d, iters) in [(1, 1, 3), (9, 300, 100), (40, 513, 100), (5, 7, 0)] {
            let x: Vec<f32> = (0..rows * d).map(|_| rng.random::<f32>() * 3.0).collect();
            let mut m = vec![0.0f64; d];
            for r in x.chunks_exact(d) {
                for (a, &b) in m.iter_mut().zip(r) {
                    *a += b as f64;
                }
            }
            for a in m.iter_mut() {
                *a /= rows as f64;
            }
            for _ in 0..iters {
                let mut num = vec![0.0f64; d];
                let mut den = 0.0f64;
                for r in x.chunks_exact(d) {
                    let dist: f64 = r
                        .iter()
                        .zip(&m)
                        .map(|(&x, &c)| (x as f64 - c).powi(2))
                        .sum();
                    let w = 1.0 / dist.sqrt().max(1e-12);
                    for (a, &x) in num.iter_mut().zip(r) {
                        *a += w * x as f64;
                    }
                    den += w;
                }
                let next: Vec<f64> = num.iter().map(|a| a / den).collect();
                let shift: f64 = next.iter().zip(&m).map(|(a, b)| (a - b).powi(2)).sum();
                let scale = next.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
                m = next;
                if shift.sqrt() / scale < 1e-6 {
                    break;
                }
            }
            let want: Vec<u32> = m.iter().map(|&v| (v as f32).to_bits()).collect();
            let got: Vec<u32> = geometric_median(&x, d, iters)
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(got, want, "({rows}, {d}, {iters})");
        }
    }

    /// 8 rows side by side give each row's distance bit for bit as the row's own sum
    /// (`Iterator::sum` in column order), for row counts that leave a partial block.
    #[test]
    fn distances_row_by_row() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (rows, d) in [(1, 1), (7, 3), (8, 5), (19, 130), (64, 33)] {
            let x: Vec<f32> = (0..rows * d)
                .map(|_| rng.random::<f32>() * 4.0 - 2.0)
                .collect();
            let m: Vec<f64> = (0..d).map(|_| rng.random::<f64>()).collect();
            let want: Vec<f64> = x
                .chunks_exact(d)
                .map(|r| {
                    r.iter()
                        .zip(&m)
                        .map(|(&x, &c)| (x as f64 - c).powi(2))
                        .sum::<f64>()
                        .sqrt()
                        .max(1e-12)
                })
                .collect();
            let got = distances(&x, d, &m);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same && got.len() == rows,
                "({rows}, {d}): {got:?} against {want:?}"
            );
        }
    }

    #[test]
    fn transpose_matches_the_plain_loop() {
        for (rows, cols) in [
            (1, 1),
            (3, 130),
            (130, 3),
            (65, 129),
            (200, 64),
            (67, 70),
            (128, 256),
        ] {
            let a: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let t = transpose(&a, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        t[j * rows + i],
                        a[i * cols + j],
                        "({rows}, {cols}) at ({i}, {j})"
                    );
                }
            }
        }
    }
}
