//! Evaluation tests: held-out metrics against figures computed independently (f64 loops)
//! on both engines, FISTA's recovery of planted codes on both engines, the compositional
//! split's construction, and the in-distribution / OOD table on a small trained SAE.
//! GPU tests are reported as ignored (with the reason) when there is no adapter, and fail
//! under SAEFORGE_REQUIRE_GPU=1.

#[path = "../common/mod.rs"]
mod common;

mod compositional;
mod fista;
mod metrics;
mod peer;
mod peer_export;
mod truth;
mod worlds;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    if let Err(why) = common::gpu() {
        eprintln!("GPU eval tests: {why}");
    }
    let mut trials = Vec::new();
    trials.extend(metrics::trials());
    trials.extend(fista::trials());
    trials.extend(compositional::trials());
    trials.extend(worlds::trials());
    trials.extend(truth::trials());
    trials.extend(peer::trials());
    trials.extend(peer_export::trials());
    libtest_mimic::run(&args, trials).exit();
}
