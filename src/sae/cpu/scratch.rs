//! The CPU step's working buffers, kept from one step to the next.
//!
//! A step at 4096 x 16384 needs 256 MiB of pre-activations, the gradients (two 32 MiB
//! matrices) and a few MiB per row buffer. Allocated afresh each step, each is a new
//! mapping the kernel faults in and zeroes page by page, then unmaps with TLB shootdowns
//! across the threads (`io::keep_freed_memory` keeps the binary's allocations under 32 MiB
//! in the heap, not these, and a bench or a library caller does not set it): `perf` put
//! ~15 % of a CPU step in the kernel. Where freshly faulted
//! pages are slow (this VM, after the process freed lavapipe's buffers: the train bench's
//! CPU rows, `--device auto`'s first calibration), half the step went to `clear_page`, and
//! the bench's CPU topk_dead step took 2.2-2.5 s instead of 1.1-1.4. A [`Scratch`] hands
//! the same buffers back instead. It changes no value: [`Scratch::zeros`] clears a recycled
//! buffer, and [`Scratch::overwritten`] (stale contents) serves only outputs written whole,
//! such as a GEMM's C with beta 0 (`tests/train/scratch.rs` holds reused buffers to fresh
//! ones bit for bit).

use crate::sae::SaeParams;
use crate::sae::params::ParamSet;

/// Recycled `f32` buffers, matched by length.
#[derive(Default)]
pub struct Scratch {
    free: Vec<Vec<f32>>,
    reused: u64,
}

/// More free buffers than a step takes means the shapes changed: the rest are dropped.
const MAX_FREE: usize = 32;

/// Floats per rayon task when clearing a recycled buffer (256 KiB): the step's gradients
/// (64 MiB at 512 x 16384) took ~12 ms on one thread.
const CLEAR_CHUNK: usize = 1 << 16;

impl Scratch {
    /// A buffer of `len` zeros (a recycled one cleared over rayon's threads).
    pub fn zeros(&mut self, len: usize) -> Vec<f32> {
        use rayon::prelude::*;
        match self.recycled(len) {
            Some(mut v) => {
                v.par_chunks_mut(CLEAR_CHUNK).for_each(|c| c.fill(0.0));
                v
            }
            None => vec![0.0; len],
        }
    }

    /// A buffer of `len` values for an output written whole: a recycled buffer keeps its
    /// old values.
    pub fn overwritten(&mut self, len: usize) -> Vec<f32> {
        self.recycled(len).unwrap_or_else(|| vec![0.0; len])
    }

    /// The step's gradients, shaped as `p`: W_enc's and W_dec's `overwritten` (every
    /// backward writes them whole: its first gathers or GEMMs do not accumulate;
    /// `tests/train/scratch.rs` holds stale buffers to fresh ones), the small ones `zeros`.
    /// Clearing the two big ones cost a parallel pass over 64 MiB at 512 x 16384.
    pub fn gradients(&mut self, p: &SaeParams) -> SaeParams {
        ParamSet {
            w_enc: self.overwritten(p.w_enc.len()),
            w_dec: self.overwritten(p.w_dec.len()),
            b_enc: self.zeros(p.b_enc.len()),
            b_dec: self.zeros(p.b_dec.len()),
            log_threshold: self.zeros(p.log_threshold.len()),
            ..*p
        }
    }

    /// Hand `v` back for a later step.
    pub fn give(&mut self, v: Vec<f32>) {
        if !v.is_empty() && self.free.len() < MAX_FREE {
            self.free.push(v);
        }
    }

    /// How many buffers were handed out again rather than allocated.
    pub fn reused(&self) -> u64 {
        self.reused
    }

    fn recycled(&mut self, len: usize) -> Option<Vec<f32>> {
        let i = self.free.iter().position(|v| v.len() == len)?;
        self.reused += 1;
        Some(self.free.swap_remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_by_length_and_clears() {
        let mut s = Scratch::default();
        let mut a = s.zeros(4);
        a.fill(7.0);
        let ptr = a.as_ptr();
        s.give(a);
        s.give(vec![1.0; 3]);
        // Another length is a fresh buffer; the same length is the recycled one, cleared.
        assert_eq!(s.zeros(5), vec![0.0; 5]);
        let b = s.zeros(4);
        assert_eq!((b.as_ptr(), &b[..]), (ptr, &[0.0; 4][..]));
        // `overwritten` keeps the old values.
        assert_eq!(s.overwritten(3), vec![1.0; 3]);
        assert!(s.free.is_empty());
    }
}
