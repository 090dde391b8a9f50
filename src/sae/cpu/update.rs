//! The step's last two stages on the CPU engine, after the chunks: `finish_gradients`
//! (relu's decoder-norm term, an SAE's db_dec term through the encoder) and `optimizer`
//! (global-norm clipping and Adam), as `gpu/update.rs` holds the GPU engine's. They live
//! apart from `cpu.rs` to keep that module to the per-chunk stages.

use super::{Grads, Step};
use crate::blas::gemm;
use crate::cpu_optim::{AdamStep, adam, adam_unit_rows};
use crate::reference::gemm::GemmSpec;
use crate::reference::optim::{clip_scale, decoder_grad_prep, sum_slot, sumsq};
use crate::reference::reduce::l1_decoder_grad;
use crate::sae::engine::{GRAD_NORM_SLOT_COUNT, GRAD_NORM_SLOTS, StepScalars, TrainState};
use crate::sae::{Arch, DecoderNorm, TrainConfig};

impl Step<'_> {
    /// After the chunks: relu's L1 decoder-norm term, d/dW_dec of coef / B sum_i zsum_i
    /// ||W_dec_i||; db_dec = sum_b dy_b - db_enc W_enc^T (b_dec enters through x_hat and
    /// through xc; a transcoder's only through y_hat).
    pub(super) fn finish_gradients(&mut self) {
        let p = &self.st.params;
        let (n, d, d_out, g) = (p.n, p.d, p.d_out(), &mut self.grads);
        if self.cfg.arch == Arch::Relu {
            let scale = self.coef * self.inv_b;
            l1_decoder_grad(
                &self.zsum,
                &p.w_dec,
                &self.norms,
                n,
                d_out,
                scale,
                &mut g.w_dec,
            );
        }
        if self.cfg.d_out.is_some() {
            return;
        }
        let spec = GemmSpec::nt(1, d, n).alpha(-1.0).accumulate(true);
        gemm(&spec, &g.b_enc, &p.w_enc, None, &mut g.b_dec);
    }
}

/// Global gradient-norm clipping, of the gradients after the unit-norm decoder's
/// projection (the component of each decoder row's gradient along the row removed):
/// decoder_grad_prep gives the projection coefficients and the projected rows' sums of
/// squares without writing the projection, which adam_unit_rows applies; then Adam on
/// every parameter (for a unit-norm W_dec: projection, Adam and renormalisation of each
/// row).
pub(super) fn optimizer(cfg: &TrainConfig, st: &mut TrainState, g: &Grads, sc: &StepScalars) {
    // The decoder's rows have d_out values (d for an SAE).
    let (n, d) = (st.params.n, st.params.d_out());
    let unit = cfg.decoder_norm == DecoderNorm::Unit;
    let slots = &GRAD_NORM_SLOTS;
    let mut acc = vec![0.0f32; GRAD_NORM_SLOT_COUNT];
    let mut coef = vec![0.0f32; n];
    // W_enc's sum of squares is one sequential f64 sum (the reference's order, so the same
    // bits): ~11 ms at 512 x 16384 on one core, run beside the decoder's on the other.
    let mut enc_acc = [0.0f32; GRAD_NORM_SLOT_COUNT];
    rayon::join(
        || sumsq(&g.w_enc, &mut enc_acc, slots.w_enc),
        || {
            if unit {
                let mut part = vec![0.0f32; n];
                decoder_grad_prep(&st.params.w_dec, &g.w_dec, n, d, &mut coef, &mut part);
                sum_slot(&part, &mut acc, slots.w_dec);
            } else {
                sumsq(&g.w_dec, &mut acc, slots.w_dec);
            }
        },
    );
    acc[slots.w_enc as usize] = enc_acc[slots.w_enc as usize];
    sumsq(&g.b_enc, &mut acc, slots.b_enc);
    sumsq(&g.b_dec, &mut acc, slots.b_dec);
    sumsq(&g.log_threshold, &mut acc, slots.log_threshold);
    let mut clip = [0.0f32; 2];
    clip_scale(&acc, acc.len() as u32, cfg.grad_clip, &mut clip);
    st.grad_norm = clip[1];

    let h = &sc.adam(cfg, st.step);
    let s = &AdamStep {
        hyper: h,
        clip: &clip,
        zero_moments: st.moments_are_zero(),
    };
    let (p, m, v) = (&mut st.params, &mut st.moments.m, &mut st.moments.v);
    adam(&mut p.w_enc, &g.w_enc, &mut m.w_enc, &mut v.w_enc, s);
    if unit {
        #[rustfmt::skip]
        adam_unit_rows(&mut p.w_dec, &g.w_dec, &coef, &mut m.w_dec, &mut v.w_dec, s, n, d);
    } else {
        adam(&mut p.w_dec, &g.w_dec, &mut m.w_dec, &mut v.w_dec, s);
    }
    adam(&mut p.b_enc, &g.b_enc, &mut m.b_enc, &mut v.b_enc, s);
    adam(&mut p.b_dec, &g.b_dec, &mut m.b_dec, &mut v.b_dec, s);
    if !p.log_threshold.is_empty() {
        #[rustfmt::skip]
        adam(&mut p.log_threshold, &g.log_threshold, &mut m.log_threshold, &mut v.log_threshold, s);
    }
}
