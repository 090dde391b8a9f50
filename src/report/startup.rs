//! Where the time before the first training step goes. A researcher who starts a run waits
//! for its first step; the speed issue bounds that wait (2 s plus shard validation), so
//! each phase of `train`'s start-up is timed from process start and reported at `info`
//! (`RUST_LOG=saeforge=info saeforge train ...`), never on the normal output.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Records the process start (the binary calls this first; a library user's first call
/// to [`phase`] stands in for it).
pub fn mark_process_start() {
    START.get_or_init(Instant::now);
}

/// Seconds since [`mark_process_start`].
pub fn since_start() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Logs that start-up phase `name` ended, with the seconds since process start.
pub fn phase(name: &str) {
    tracing::info!(
        target: "saeforge::startup",
        at_s = format!("{:.3}", since_start()),
        "{name}"
    );
}
