//! Sparse autoencoders: architectures, the training step on two engines (GPU kernels, and
//! the CPU engine: fast CPU stages each tested against the plain reference in
//! `src/reference`), schedules, checkpoints and the SAELens export.
//!
//! Both engines run the same named sequence of operations (see `cpu.rs` and `gpu.rs`), so
//! that a test can hold N GPU steps against N CPU steps for every architecture.

pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod engine_choice;
pub mod export;
pub mod formats;
pub mod forward;
pub mod gpu;
pub mod infer;
pub mod matryoshka;
pub mod params;
pub mod schedule;
pub mod storage;
pub mod tensors;
pub mod train;
pub mod transcoder;

pub use config::{Arch, BDecInit, DecoderNorm, LrDecay, TrainArgs, TrainConfig};
pub use params::SaeParams;
