//! The `saeforge` binary: parse, run, map errors to exit codes (2 bad input, 1 internal,
//! 130 interrupted). Every failure is ONE line on stderr: a researcher reads it in a log
//! hours after the start, so it names the file, tensor or flag and what was expected.

use clap::Parser;

fn main() {
    default_sigpipe();
    saeforge::report::startup::mark_process_start();
    saeforge::io::keep_freed_memory();
    saeforge::gpu::quiet_headless_probe();
    install_panic_hook();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    refuse_non_utf8_args();
    let cli = match saeforge::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => parse_error(e),
    };
    if let Err(e) = saeforge::cli::run(cli) {
        // One line even if some library's message (a driver's, a parser's) spans several.
        let text = e.to_string();
        let line: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let line = line.join(" ");
        match e {
            saeforge::Error::Interrupted(_) => eprintln!("saeforge: {line}"),
            _ => eprintln!("error: {line}"),
        }
        std::process::exit(e.exit_code());
    }
}

/// Paths are recorded as JSON strings (config.json, cfg.json, checkpoints, reports, lock
/// records), which cannot hold a name that is not UTF-8: refuse one before any work.
fn refuse_non_utf8_args() {
    if let Some(a) = std::env::args_os().skip(1).find(|a| a.to_str().is_none()) {
        eprintln!(
            "error: argument {:?} is not valid UTF-8; saeforge records paths in JSON files (config.json, cfg.json, checkpoints, reports), so name files and folders in UTF-8",
            a.to_string_lossy()
        );
        std::process::exit(2);
    }
}

/// clap's errors span several lines (usage, tips); keep the first, which names the flag,
/// and point at --help. Help and version requests print as usual.
fn parse_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("error");
    let first = first.trim_end();
    let first = if first.starts_with("error:") {
        first.to_string()
    } else {
        format!("error: {first}")
    };
    eprintln!("{first} (see saeforge --help)");
    std::process::exit(2);
}

/// Rust ignores SIGPIPE, so a print into a pipe whose reader has gone (`saeforge info acts/
/// | head -1`) fails and panics. Restore the default: the process ends quietly, as any Unix
/// tool does. Training's progress goes to stderr, its results to files written atomically.
fn default_sigpipe() {
    // SAFETY: sets a signal's disposition to the default, at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A panic is a bug in saeforge, never the user's fault: one line naming where it happened
/// and exit 1, with the usual message and backtrace only when RUST_BACKTRACE asks for them.
/// Outputs are written atomically, so exiting here leaves no half-written file.
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let msg = msg.lines().next().unwrap_or("").to_string();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (a bug in saeforge): {msg}{at}; set RUST_BACKTRACE=1 for a backtrace"
        );
        std::process::exit(1);
    }));
}
