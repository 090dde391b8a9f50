//! The superposition lab's experiments (`saeforge toy --experiment NAME`): each asserts
//! the paper's qualitative result at a small size, on the CPU engine and, where there is an
//! adapter, on the GPU engine.

#[path = "../common/mod.rs"]
mod common;

mod abs;
mod intervene;
mod l1;
mod privileged;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(abs::trials());
    trials.extend(intervene::trials());
    trials.extend(l1::trials());
    trials.extend(privileged::trials());
    libtest_mimic::run(&args, trials).exit();
}
