//! `--batch-dtype`: the dtype a training batch is stored in between the loader and the
//! step. `f16` rounds every value of the (scaled) batch to the nearest IEEE half, round to
//! nearest even, as `half::f16::from_f32` does; the GPU engine then uploads two halves per
//! u32 (half the bytes of f32) and widens them on the device (`unpack_f16`), and the CPU
//! engine steps on the rounded values, so both engines train on the same numbers and stay
//! equal to each other as with f32. Everything after the upload (the encoder's product, the
//! accumulations, the parameters, the held-out evaluation) stays f32.
//!
//! Halves need no shader-f16: the device decodes them with integer operations, so the
//! option works on every adapter.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchDtype {
    /// The batch as the loader gives it.
    #[default]
    F32,
    /// Each value rounded to the nearest IEEE half (f32 math after it).
    F16,
}

impl BatchDtype {
    /// Device bytes beside the widened f32 batch for `values` values: the packed upload.
    pub fn packed_bytes(self, values: u128) -> u128 {
        match self {
            BatchDtype::F32 => 0,
            BatchDtype::F16 => 2 * values,
        }
    }
}

/// The batch rounded to halves (as f32 values).
pub fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

/// The batch as halves, two per u32: element i in bits 16 * (i % 2) of word i / 2 (what
/// `kernels::ops::unpack_f16` reads); an odd length leaves the last word's top half 0.
pub fn pack_f16(x: &[f32]) -> Vec<u32> {
    x.chunks(2)
        .map(|p| {
            let h = |v: f32| half::f16::from_f32(v).to_bits() as u32;
            h(p[0]) | p.get(1).map_or(0, |&v| h(v) << 16)
        })
        .collect()
}

/// Put a batch (or a target) into `to`: written as it is, or with --batch-dtype f16
/// written as halves into `packed` and widened on the device.
pub(crate) fn upload(
    g: &crate::gpu::Gpu,
    enc: &mut wgpu::CommandEncoder,
    x: &[f32],
    to: &crate::gpu::GpuTensor,
    packed: Option<&crate::gpu::GpuTensor>,
) -> crate::Result<()> {
    match packed {
        None => g.write(to, x),
        Some(p) => {
            g.write(p, &pack_f16(x))?;
            crate::kernels::ops::unpack_f16(g, enc, p, to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ops::unpack_f16;

    /// Packing then unpacking gives the rounded values, odd lengths included.
    #[test]
    fn pack_then_unpack_is_round() {
        let x: Vec<f32> = (0..1001)
            .map(|i| ((i as f32) * 0.7311).sin() * 10f32.powi(i % 9 - 6))
            .collect();
        let mut back = vec![f32::NAN; x.len()];
        unpack_f16(&pack_f16(&x), &mut back);
        let want = round_f16(&x);
        assert!(
            back.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert!(
            want.iter().zip(&x).any(|(a, b)| a != b),
            "nothing was rounded"
        );
    }
}
