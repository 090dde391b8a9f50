//! Command tests: `encode` (CSR and dense agree with `SaeModel::encode`), `steer` (no edits
//! return the input bit for bit, an ablation removes exactly that latent's contribution,
//! set / scale / add semantics, refusals), the streaming safetensors writer, and `demo` end
//! to end at a reduced size and stopped in each of its phases (token and SIGINT). Each runs
//! on the CPU engine and, where the engine matters, on the GPU engine (ignored with the
//! reason when there is no adapter).

#[path = "../common/mod.rs"]
mod common;

mod demo;
mod demo_stop;
mod encode;
mod steer;
mod support;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    if let Err(why) = common::gpu() {
        eprintln!("GPU command tests: {why}");
    }
    let mut trials = Vec::new();
    trials.extend(support::trials());
    trials.extend(encode::trials());
    trials.extend(steer::trials());
    trials.extend(demo::trials());
    trials.extend(demo_stop::trials());
    libtest_mimic::run(&args, trials).exit();
}
