//! Synthetic activations with a planted dictionary: the ground truth an SAE should recover.
//!
//! n true features are random unit directions in d dimensions (superposition when n > d);
//! x = sum_i c_i f_i (+ bias) (+ noise), with codes c drawn per row:
//!
//! - the plain world ([`SynthConfig`]): each feature fires independently with probability
//!   p_i (uniform, or Zipf-like p_i ~ (i+1)^-decay), scaled so that sum_i p_i = `active`,
//!   magnitude U[lo, hi); optional correlated groups fire together, anti-correlated groups
//!   keep at most one member;
//! - the structured world ([`Structure`], the structure of SAELens's SynthSAEBench): a
//!   feature hierarchy (children fire only with their parent, optionally mutually
//!   exclusive), low-rank correlated firing, Zipf probabilities between a minimum and a
//!   maximum, per-feature magnitude means and spreads, a bias ([`generator`] has the
//!   order of the draws).
//!
//! [`write_world`] writes the shards, each row's true codes beside them ([`codes`]),
//! truth.safetensors (the dictionary, with the hierarchy) and synth.json (the settings).
//! [`write_compositional`] writes a compositional out-of-distribution split instead
//! (train/, test/ and ood/ folders over one dictionary; see [`CompositionalConfig`]).

pub mod codes;
mod compositional;
mod config;
pub mod correlation;
mod files;
pub mod generator;
pub mod hierarchy;
pub mod structure;

pub use codes::{SparseCodes, codes_path, read_codes, write_codes};
pub use compositional::{
    Compositional, CompositionalConfig, CompositionalRow, write_compositional,
};
pub use config::{SynthConfig, probabilities, random_directions};
pub use files::{read_truth, truth_file, write_dataset, write_truth, write_world};
pub use generator::{Generator, Truth};
pub use structure::{CorrelationSettings, HierarchySettings, PerFeature, Structure};
