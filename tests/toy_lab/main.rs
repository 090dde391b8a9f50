//! The lab experiments of `saeforge toy --experiment` (src/toy/lab): each test trains an
//! experiment at a SMALL size (fewer instances and steps than the README's defaults, so
//! that the whole binary runs in about two minutes of CPU in release) and asserts the
//! paper's qualitative result, on the CPU engine and, where an adapter is there, the GPU
//! engine (lavapipe included). Measured values are printed (stderr).

#[path = "../common/mod.rs"]
mod common;

mod abs;
mod adversarial;
mod correlated;
mod dynamics;
mod geometry;
mod intervene;
mod l1;
mod perturb;
mod privileged;
mod util;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(perturb::trials());
    trials.extend(correlated::trials());
    trials.extend(geometry::trials());
    trials.extend(dynamics::trials());
    trials.extend(adversarial::trials());
    trials.extend(privileged::trials());
    trials.extend(abs::trials());
    trials.extend(l1::trials());
    trials.extend(intervene::trials());
    libtest_mimic::run(&args, trials).exit();
}
