//! Dictionary quality on held-out data: reconstruction metrics of an SAE's codes, FISTA
//! (iterative sparse inference over a fixed dictionary, on either engine), ground-truth
//! recovery against a planted dictionary, and the whole `saeforge eval` report.
//!
//! - [`crate::sae::infer::Encoder`]: an SAE's encoder and decoder on an engine, batch by
//!   batch (codes, reconstructions, L0 / L1 and fire counts);
//! - [`fista::FistaSolver`]: FISTA over any dictionary (the SAE's decoder or the truth);
//! - both are [`forward::Coder`]s, which [`run::evaluate`] runs side by side over the same
//!   held-out rows ([`source::HeldOut`]) into [`metrics::ReconMetrics`];
//! - [`run::run_eval`]: the command's report (text table and JSON);
//! - [`recovery::recovery`]: best |cosine| of every true feature with the decoder;
//! - [`truth`]: SAELens's ground-truth metrics (MCC by optimal matching, uniqueness,
//!   per-latent firing precision / recall / F1 against the true codes, via
//!   [`truth_codes`]).

pub mod absorption;
pub mod fista;
pub mod forward;
pub mod metrics;
pub mod recovery;
pub mod run;
pub mod source;
pub mod steer;
pub mod transcoder;
pub mod truth;
pub mod truth_codes;
