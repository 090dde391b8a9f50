//! Kernel tests: every WGSL kernel against its CPU twin in `saeforge::reference` on fresh
//! random inputs, at shapes that are not multiples of any tile or workgroup size and at one
//! production shape, with outputs poisoned (NaN) before each run.
//!
//! A libtest-mimic harness, so that without an adapter the GPU tests are reported as
//! ignored with the reason (and fail under SAEFORGE_REQUIRE_GPU=1) instead of passing.

#[path = "../common/mod.rs"]
mod common;

mod activations;
mod blas;
mod codes;
mod fista;
mod gate;
mod gemm;
mod gemm_batched;
mod gemm_coop;
mod gemm_reg;
mod matryoshka;
mod ops;
mod optim;
mod profile;
mod reduce;
mod rescale;
mod sparse;
mod topk;
mod toy;
mod toy_mlp;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    if let Err(why) = common::gpu() {
        eprintln!("GPU kernel tests: {why}");
    }
    let mut trials = Vec::new();
    trials.extend(activations::trials());
    trials.extend(blas::trials());
    trials.extend(codes::trials());
    trials.extend(fista::trials());
    trials.extend(gate::trials());
    trials.extend(gemm::trials());
    trials.extend(gemm_batched::trials());
    trials.extend(gemm_coop::trials());
    trials.extend(gemm_reg::trials());
    trials.extend(matryoshka::trials());
    trials.extend(ops::trials());
    trials.extend(optim::trials());
    trials.extend(profile::trials());
    trials.extend(reduce::trials());
    trials.extend(rescale::trials());
    trials.extend(sparse::trials());
    trials.extend(topk::trials());
    trials.extend(toy::trials());
    trials.extend(toy_mlp::trials());
    libtest_mimic::run(&args, trials).exit();
}
