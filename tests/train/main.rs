//! Training tests: the reference gradients against finite differences (f64), N GPU steps
//! against N CPU steps for every architecture, exact resume, and recovery of a planted
//! dictionary. GPU tests are reported as ignored (with the reason) when there is no adapter,
//! and fail under SAEFORGE_REQUIRE_GPU=1.

#[path = "../common/mod.rs"]
mod common;

mod edges;
mod equivalence;
mod finite_diff;
mod init;
mod runs;
mod scratch;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    if let Err(why) = common::gpu() {
        eprintln!("GPU training tests: {why}");
    }
    let mut trials = Vec::new();
    trials.extend(finite_diff::trials());
    trials.extend(init::trials());
    trials.extend(equivalence::trials());
    trials.extend(runs::trials());
    trials.extend(scratch::trials());
    libtest_mimic::run(&args, trials).exit();
}
