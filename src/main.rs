//! The `saeforge` binary: parse, run, map errors to exit codes (2 bad input, 1 internal).

use clap::Parser;

fn main() {
    saeforge::gpu::quiet_headless_probe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = saeforge::cli::Cli::parse();
    if let Err(e) = saeforge::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
