//! Memory-mapped reads that cannot die of SIGBUS.
//!
//! The loader gathers one random row at a time; a positioned read (a system call) per row
//! costs about as much as the rest of the row's work, so rows are copied out of a memory
//! map instead. Touching a mapped page past the end of a file that was truncated after it
//! was mapped raises SIGBUS, which by default kills the process without a word. This module
//! installs (once) a SIGBUS handler that, for a fault raised inside [`guarded`] on this
//! thread, maps a page of zeros over the faulting page, notes the fault and lets the copy
//! finish; [`guarded`] then reports it, and the reader turns it into an error naming the
//! file. A SIGBUS raised anywhere else gets the previous disposition back and is raised
//! again, as if this module did not exist.
//!
//! Linux only (elsewhere the loader reads with positioned reads).

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{Ordering, compiler_fence};

thread_local! {
    /// Inside `guarded` on this thread. Const-initialised `Cell`s without destructors are
    /// plain thread-local words: reading them from a signal handler is sound.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static FAULTED: Cell<bool> = const { Cell::new(false) };
}

static INSTALL: Once = Once::new();
static mut PREVIOUS: Option<libc::sigaction> = None;
static mut PAGE: usize = 4096;
static mut INSTALLED: bool = false;

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if ACTIVE.with(Cell::get) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let addr = unsafe { (*info).si_addr() } as usize;
        // SAFETY: PAGE is written once, before the handler is installed.
        let page = unsafe { PAGE };
        let base = addr & !(page - 1);
        // SAFETY: replaces one page of a read-only file mapping that this thread is
        // reading inside `guarded` with anonymous zeros; mmap is a plain system call.
        let p = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            FAULTED.with(|f| f.set(true));
            return;
        }
    }
    // Not ours: hand the signal to whoever had it before (the default: terminate).
    // SAFETY: PREVIOUS was saved by `install` before this handler could run.
    unsafe {
        #[allow(static_mut_refs)]
        match PREVIOUS {
            Some(prev)
                if prev.sa_sigaction != libc::SIG_DFL
                    && prev.sa_sigaction != libc::SIG_IGN
                    && prev.sa_flags & libc::SA_SIGINFO != 0 =>
            {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(prev.sa_sigaction);
                f(sig, info, ctx);
            }
            Some(prev) => {
                libc::sigaction(libc::SIGBUS, &prev, std::ptr::null_mut());
            }
            None => {
                libc::signal(libc::SIGBUS, libc::SIG_DFL);
            }
        }
    }
}

/// Install the handler (once per process). False if it could not be installed (then
/// callers read without a map).
pub fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: plain libc calls; the statics are written before the handler exists.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE);
            if page > 0 {
                PAGE = page as usize;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            let mut prev: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &sa, &mut prev) == 0 {
                PREVIOUS = Some(prev);
                INSTALLED = true;
            }
        }
    });
    // SAFETY: written once inside call_once, which synchronises with this read.
    unsafe { INSTALLED }
}

/// Run `f` (which reads from memory maps) with SIGBUS turned into a flag: returns f's
/// result and whether a mapped page it touched had vanished (its file was truncated).
/// Pages that faulted read as zeros, so the result must be thrown away when the flag is set.
pub fn guarded<R>(f: impl FnOnce() -> R) -> (R, bool) {
    FAULTED.with(|c| c.set(false));
    ACTIVE.with(|c| c.set(true));
    compiler_fence(Ordering::SeqCst);
    let r = f();
    compiler_fence(Ordering::SeqCst);
    ACTIVE.with(|c| c.set(false));
    (r, FAULTED.with(Cell::get))
}
