//! `saeforge sweep --emit slurm`: a Slurm job array.

use std::path::Path;

use super::SweepSpec;
use crate::Result;

pub fn emit(_spec: &SweepSpec, _out: &Path, _per_task: usize, _overwrite: bool) -> Result<String> {
    Ok(String::new())
}
