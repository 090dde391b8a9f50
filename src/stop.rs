//! Stopping a run cleanly: a [`StopToken`] per run, which the run checks at its safe points
//! (a step boundary, between phases), and a [`SignalGuard`] that routes SIGINT / SIGTERM to
//! one token while it lives.
//!
//! The operating system's handler can be installed only once per process, so there is one,
//! installed on first use; it holds no run state, only which token (if any) is listening.
//! A signal with a listening token stops that token (the run checkpoints, or says where it
//! stopped, and exits 130); a second signal, or one while no guard is alive, exits 130 at
//! once. A guard dropped at the end of a phase therefore never leaves a later signal
//! swallowed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

use crate::{Error, Result};

/// A request to stop one run at its next safe point. Clones share the request.
#[derive(Clone, Debug, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    pub fn new() -> StopToken {
        StopToken::default()
    }

    /// Ask the run to stop (what SIGINT / SIGTERM do under a [`SignalGuard`]).
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Interrupted)` with `what` (e.g. "interrupted after training; ...") once stopped.
    pub fn check(&self, what: impl FnOnce() -> String) -> Result<()> {
        if self.is_stopped() {
            Err(Error::Interrupted(what()))
        } else {
            Ok(())
        }
    }

    /// Route SIGINT / SIGTERM to this token until the guard is dropped.
    pub fn on_signals(&self) -> SignalGuard {
        install_handler();
        let prev = LISTENER
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(self.clone());
        SignalGuard { prev }
    }
}

/// While alive, SIGINT / SIGTERM stop its token; dropped, the previous listener (usually
/// none: a signal then exits 130) is back.
#[must_use = "signals reach the token only while the guard lives"]
pub struct SignalGuard {
    prev: Option<StopToken>,
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        *LISTENER.lock().unwrap_or_else(|e| e.into_inner()) = self.prev.take();
    }
}

/// The token the process's signal handler stops, if any.
static LISTENER: Mutex<Option<StopToken>> = Mutex::new(None);

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let handler = || {
            let listener = LISTENER.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match listener {
                Some(t) if !t.is_stopped() => t.stop(),
                // A second signal (the user insists), or nothing listening.
                _ => std::process::exit(130),
            }
        };
        if let Err(e) = ctrlc::set_handler(handler) {
            tracing::warn!("could not install the Ctrl-C handler: {e}");
        }
    });
}
