//! `saeforge sweep`: every member bitwise equal to its solo `saeforge train` run on both
//! engines, bad sweep files refused before any work, whole-sweep checkpoint / resume /
//! interruption, one diverging member stopped alone, the report and the Slurm job array.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod merged;
mod report;
mod runs;
mod slurm;
mod spec;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    let args = libtest_mimic::Arguments::from_args();
    if let Err(why) = common::gpu() {
        eprintln!("GPU sweep tests: {why}");
    }
    let mut trials = Vec::new();
    trials.extend(runs::trials());
    trials.extend(spec::trials());
    trials.extend(report::trials());
    trials.extend(cli::trials());
    trials.extend(merged::trials());
    trials.extend(slurm::trials());
    libtest_mimic::run(&args, trials).exit();
}

/// Shared helpers.
pub mod util {
    use std::path::{Path, PathBuf};

    use libtest_mimic::Failed;
    use saeforge::data::FloatType;
    use saeforge::synth::{SynthConfig, write_dataset};

    use crate::common::fail;

    pub fn tmp(name: &str) -> PathBuf {
        crate::common::tmp_dir("sweep", name)
    }

    /// 3 shards of 1000 rows x 16 dims, 64 planted features.
    pub fn synth(dir: &Path) -> Result<(), Failed> {
        write_dataset(
            dir,
            SynthConfig {
                features: 64,
                d_in: 16,
                active: 2.0,
                density_decay: 0.0,
                magnitude: (0.0, 1.0),
                correlated_groups: 0,
                anticorrelated_groups: 0,
                group_size: 2,
                noise: 0.0,
                tokens: 3000,
                shard_tokens: 1000,
                dtype: FloatType::F16,
                seed: 5,
            },
        )
        .map(|_| ())
        .map_err(fail)
    }
}
