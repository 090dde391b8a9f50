//! Shared by the lab tests: the small training recipe and a trial on both engines.

use libtest_mimic::{Failed, Trial};
use saeforge::gpu::Engine;
use saeforge::toy::Init;
use saeforge::toy::lab::Recipe;

use crate::common::{self, cpu_test, gpu_test};

/// The notebook's recipe at `steps` steps of `batch` rows, seed 0.
pub fn recipe(steps: u64, batch: usize) -> Recipe {
    Recipe {
        steps,
        batch,
        lr: 1e-3,
        weight_decay: 0.01,
        init: Init::Notebook,
        seed: 0,
        eval_batches: 2,
    }
}

/// `name/cpu` on the CPU engine and `name/gpu` on the adapter (ignored without one).
pub fn both(name: &str, body: fn(&Engine) -> Result<(), Failed>) -> Vec<Trial> {
    vec![
        cpu_test(format!("{name}/cpu"), move |_| body(&Engine::Cpu)),
        gpu_test(format!("{name}/gpu"), move |_, _| {
            body(&Engine::Gpu(common::gpu().map_err(Failed::from)?))
        }),
    ]
}

/// Ok, or every error on its own line.
pub fn verdict(errors: Vec<String>) -> Result<(), Failed> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n").into())
    }
}
