//! The sweep's report: OUT/sweep.json, OUT/report.md and plots.

use std::path::Path;

use crate::Result;

/// Write the report of the sweep in `out` from its finished members; returns a summary.
pub fn write(_out: &Path, _truth: Option<&Path>) -> Result<String> {
    Ok(String::new())
}
