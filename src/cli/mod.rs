//! Command-line surface: one clap derive struct per command. Validation into library configs
//! happens here so that bad flags are refused with one line before any work starts.

pub mod devices;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "saeforge",
    version,
    about = "Train sparse autoencoders on captured activations with WGSL compute shaders on any GPU wgpu reaches"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every wgpu adapter with the limits that matter for SAE training.
    Devices(devices::DevicesArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    match cli.command {
        Command::Devices(a) => devices::run(a),
    }
}
