//! Sweeps: many SAEs from one pass over the data (`saeforge sweep`). `spec` reads and checks
//! what to train, `run` trains it (members sharing a stream drive `saeforge train`'s own
//! [`crate::sae::train::Member`] loop over one loader), `state` is what a sweep keeps on
//! disk, `memory` checks the members fit the device together, `merge` runs same-shape GPU members'
//! encoder products as one launch where that is faster, `report` writes
//! OUT/sweep.json, OUT/report.md and the plots, and `slurm` writes a job array for a
//! cluster.

mod group;
pub mod memory;
pub mod merge;
pub mod report;
pub mod run;
pub mod slurm;
pub mod spec;
pub mod state;

pub use run::{SweepOutcome, run_until};
pub use spec::{MemberSpec, SpecParts, SweepSpec};
pub use state::{SweepOptions, SweepState};

use crate::Error;

/// `e`, its message prefixed with the member it is about.
pub(crate) fn named(name: &str, e: Error) -> Error {
    let p = |m: String| format!("member `{name}`: {m}");
    match e {
        Error::Input(m) => Error::Input(p(m)),
        Error::Device(m) => Error::Device(p(m)),
        Error::Interrupted(m) => Error::Interrupted(p(m)),
        Error::Diverged(m) => Error::Diverged(p(m)),
        Error::DataChanged(m) => Error::DataChanged(p(m)),
        Error::DeviceFault(m) => Error::DeviceFault(p(m)),
        Error::Internal(m) => Error::Internal(p(m)),
        e @ Error::Io { .. } => e.with_hint(format!("while training member `{name}`")),
    }
}

trait Named {
    fn with_prefix(self, what: &str) -> Self;
}

impl Named for Error {
    /// `what` is "member `NAME`".
    fn with_prefix(self, what: &str) -> Error {
        let name = what
            .trim_start_matches("member `")
            .trim_end_matches('`')
            .to_string();
        named(&name, self)
    }
}
