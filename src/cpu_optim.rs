//! The CPU engine's optimizer: [`crate::reference::optim`]'s `adam` and `adam_unit_rows`
//! with the same contracts and bitwise the same results (each element, and each decoder
//! row's norm, computed by the same operations in the same order), over rayon's pool.
//!
//! `src/reference/optim.rs` stays the plain loops that judge the GPU kernels; this module
//! is tested against it bit for bit (unit tests below). Why: the optimizer touches every
//! parameter and both moments every step, on one thread in the reference (adam_unit_rows
//! alone was 5 % of a step at 384 -> 6144 latents, batch 512).
//!
//! [`AdamStep::zero_moments`] says the moments are the zeros of a fresh state (its first
//! step): each block's moments are then populated (`io::prefault`: one madvise for the
//! block instead of a fault per page) and written with zeros before Adam reads them. Same
//! values, but a fresh allocation's pages are first touched by a write: read first, each
//! page was mapped to the kernel's zero page and then copied on write, with a TLB shootdown
//! to the other cores. At 2048 -> 32768 (1 GiB of moments) that made the first step
//! 2.8-3.1 s against 0.8 s for the next ones on this project's 2-core machine.

use rayon::prelude::*;

use crate::reference::optim::AdamHyper;

/// Elements per rayon task (elementwise Adam).
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// What one optimizer step applies to every tensor: the hyper-parameters, the clip factors
/// (`clip_scale`'s output) and whether the moments are a fresh state's zeros (see the
/// module doc).
pub struct AdamStep<'a> {
    pub hyper: &'a AdamHyper,
    pub clip: &'a [f32],
    pub zero_moments: bool,
}

impl AdamStep<'_> {
    /// A block's moments mapped for writing before Adam reads them, when they are a fresh
    /// state's zeros: populated (`io::prefault`, the pages wholly within the block), then
    /// written with zeros (which maps the pages it shares with its neighbours).
    fn touch(&self, m: &mut [f32], v: &mut [f32]) {
        if self.zero_moments {
            for t in [m, v] {
                crate::io::prefault(t);
                t.fill(0.0);
            }
        }
    }
}

/// [`crate::reference::optim::adam`], in parallel blocks.
pub fn adam(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    assert!(
        grad.len() == param.len() && m.len() == param.len() && v.len() == param.len(),
        "adam: tensor lengths"
    );
    param
        .par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(grad.par_chunks(ELEMENTS_PER_TASK))
        .zip(m.par_chunks_mut(ELEMENTS_PER_TASK))
        .zip(v.par_chunks_mut(ELEMENTS_PER_TASK))
        .for_each(|(((p, g), m), v)| {
            s.touch(m, v);
            crate::reference::optim::adam(p, g, m, v, s.hyper, s.clip);
        });
}

/// [`crate::reference::optim::adam_unit_rows`], rows in parallel: per row, the projected
/// gradient grad - coef[i] param, the Adam update, then the row divided by its norm.
/// param, grad, m, v: (n, d), coef: (n) -> param, m, v updated
#[allow(clippy::too_many_arguments)]
pub fn adam_unit_rows(
    param: &mut [f32],
    grad: &[f32],
    coef: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    s: &AdamStep,
    n: usize,
    d: usize,
) {
    assert!(
        param.len() == n * d && grad.len() == n * d && m.len() == n * d && v.len() == n * d,
        "adam_unit_rows: tensor lengths"
    );
    assert_eq!(coef.len(), n, "adam_unit_rows: coef length");
    if d == 0 {
        return;
    }
    param
        .par_chunks_mut(d)
        .zip(grad.par_chunks(d))
        .zip(m.par_chunks_mut(d))
        .zip(v.par_chunks_mut(d))
        .zip(coef.par_iter())
        .with_min_len(64)
        .for_each(|((((p, gr), m), v), &c)| {
            let g: Vec<f32> = gr
                .iter()
                .zip(p.iter())
                .map(|(&gj, &pj)| gj - c * pj)
                .collect();
            s.touch(m, v);
            crate::reference::optim::adam(p, &g, m, v, s.hyper, s.clip);
            crate::reference::optim::normalize_rows(p, 1, d);
        });
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use crate::reference::optim::{self as reference, AdamHyper};

    fn random(rng: &mut ChaCha8Rng, len: usize, lo: f32) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(lo..1.0)).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn hyper(rng: &mut ChaCha8Rng) -> AdamHyper {
        AdamHyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            bias1: 1.0 - 0.9f32.powi(3),
            bias2: 1.0 - 0.999f32.powi(3),
            weight_decay: if rng.random_bool(0.5) { 0.0 } else { 1e-2 },
            _pad: 0.0,
        }
    }

    #[test]
    fn adam_and_adam_unit_rows_are_the_reference_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(crate::test_seed());
        // The first step's moments are zeros, and are said to be (the last two shapes).
        let shapes = [
            (1, 1, false),
            (3, 7, false),
            (300, 65, false),
            (2, 40000, false),
        ];
        for (n, d, zero) in shapes
            .into_iter()
            .chain([(300, 65, true), (2, 40000, true)])
        {
            let h = hyper(&mut rng);
            let clip = [rng.random_range(0.2..1.0f32), 0.0];
            let p0 = random(&mut rng, n * d, -1.0);
            let g = random(&mut rng, n * d, -1.0);
            let (m0, v0) = if zero {
                (vec![0.0; n * d], vec![0.0; n * d])
            } else {
                (random(&mut rng, n * d, -1.0), random(&mut rng, n * d, 0.0))
            };
            let coef = random(&mut rng, n, -1.0);
            let (mut pw, mut mw, mut vw) = (p0.clone(), m0.clone(), v0.clone());
            let (mut pg, mut mg, mut vg) = (p0.clone(), m0.clone(), v0.clone());
            reference::adam(&mut pw, &g, &mut mw, &mut vw, &h, &clip);
            let s = super::AdamStep {
                hyper: &h,
                clip: &clip,
                zero_moments: zero,
            };
            super::adam(&mut pg, &g, &mut mg, &mut vg, &s);
            assert_eq!(
                (bits(&pg), bits(&mg), bits(&vg)),
                (bits(&pw), bits(&mw), bits(&vw)),
                "adam ({n}, {d}, zero moments {zero})"
            );
            let (mut pw, mut mw, mut vw) = (p0.clone(), m0.clone(), v0.clone());
            let (mut pg, mut mg, mut vg) = (p0, m0, v0);
            reference::adam_unit_rows(&mut pw, &g, &coef, &mut mw, &mut vw, &h, &clip, n, d);
            super::adam_unit_rows(&mut pg, &g, &coef, &mut mg, &mut vg, &s, n, d);
            assert_eq!(
                (bits(&pg), bits(&mg), bits(&vg)),
                (bits(&pw), bits(&mw), bits(&vw)),
                "adam_unit_rows ({n}, {d}, zero moments {zero})"
            );
        }
    }
}
