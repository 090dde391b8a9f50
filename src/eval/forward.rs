//! The [`Coder`] interface of `eval`: anything that turns rows into codes over a dictionary
//! and reconstructs them, batch by batch: the SAE's one encoder
//! ([`crate::sae::infer::Encoder`], the same one `encode`, `steer` and training's held-out
//! evaluation use) or FISTA (`FistaSolver`, in the `fista` module, which uses this one).

use crate::Result;
use crate::sae::infer::Encoder;

pub use crate::sae::infer::{BatchOut, dense_to_codes, log_thresholds};

/// Anything that turns rows into codes over a dictionary and reconstructs them: the SAE's
/// encoder or FISTA.
pub trait Coder {
    /// Input dimension.
    fn d(&self) -> usize;
    /// Latents.
    fn n(&self) -> usize;
    /// Code and reconstruct `rows` rows of `x` (rows, d); the codes only if `want_codes`.
    fn run(&mut self, x: &[f32], rows: usize, want_codes: bool) -> Result<BatchOut>;
    /// Rows each latent fired on since the last reset.
    fn fire_counts(&self) -> Result<Vec<u64>>;
    fn reset_counts(&mut self) -> Result<()>;
}

impl Coder for Encoder {
    fn d(&self) -> usize {
        self.model().d
    }
    fn n(&self) -> usize {
        self.model().n
    }
    fn run(&mut self, x: &[f32], rows: usize, want_codes: bool) -> Result<BatchOut> {
        Encoder::run(self, x, rows, want_codes)
    }
    fn fire_counts(&self) -> Result<Vec<u64>> {
        Encoder::fire_counts(self)
    }
    fn reset_counts(&mut self) -> Result<()> {
        Encoder::reset_counts(self)
    }
}
