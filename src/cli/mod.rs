//! Command-line surface: one clap derive struct per command. Validation into library configs
//! happens here so that bad flags are refused with one line before any work starts.

pub mod convert;
pub mod demo;
pub mod devices;
pub mod encode;
pub mod eval;
pub mod info;
pub mod steer;
pub mod sweep;
pub mod synth;
pub mod toy;
pub mod toy_lab_b;
pub mod train;

use clap::{Parser, Subcommand};

pub use crate::gpu::EngineArgs;
use crate::sae::export::SaeModel;
use crate::sae::infer::{Encoder, default_batch};

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
// One command is parsed per run: the size of the largest (train's options) costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// List every wgpu adapter with the limits that matter for SAE training.
    Devices(devices::DevicesArgs),
    /// Train an SAE on activation shards and export it in the SAELens layout.
    Train(crate::sae::TrainArgs),
    /// Train many SAEs from one pass over the data (a grid or a list of members), with a
    /// Pareto report; `sweep report OUT` rebuilds the report, `--emit slurm` a job array.
    Sweep(sweep::SweepArgs),
    /// Describe a shard, a folder of shards, or an SAE (SAELens, sparsify, Gemma Scope).
    Info(info::InfoArgs),
    /// Write synthetic activations with a planted dictionary (--compositional: an
    /// in-distribution / out-of-distribution split).
    Synth(synth::SynthArgs),
    /// Evaluate an SAE folder on held-out data: reconstruction metrics, FISTA on its
    /// dictionary (--fista), an out-of-distribution split (--ood), a planted dictionary (--truth).
    Eval(eval::EvalArgs),
    /// Latent codes of activation shards under an SAE (sparse CSR, or --dense).
    Encode(encode::EncodeArgs),
    /// Edit chosen SAE latents (--set / --scale / --ablate / --add) and write the activations.
    Steer(steer::SteerArgs),
    /// The whole story on synthetic data: synthesise, train, evaluate, steer, report.
    Demo(demo::DemoArgs),
    /// Toy models of superposition (Elhage et al. 2022): sweeps and the phase diagram.
    Toy(toy::ToyArgs),
    /// Rewrite an SAE (SAELens, sparsify, Gemma Scope) in the SAELens or sparsify layout.
    Convert(convert::ConvertArgs),
}

/// The engine and the batch of the commands that encode shards (`encode`, `steer`).
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Rows per batch (default: about 64 MiB of pre-activations).
    #[arg(long)]
    pub batch: Option<usize>,
}

impl EncoderArgs {
    /// Refuse `--batch 0`.
    pub fn check_batch(&self) -> crate::Result<()> {
        if self.batch == Some(0) {
            return Err(crate::Error::input("--batch 0: expected at least 1 row"));
        }
        Ok(())
    }

    /// The encoder of `model` on the chosen engine (the choice printed first), `--batch`
    /// rows at a time.
    pub fn encoder(&self, model: &SaeModel) -> crate::Result<Encoder> {
        let (engine, why) = self.engine.select()?;
        println!("saeforge: {why}");
        let batch = self.batch.unwrap_or_else(|| default_batch(model.n));
        // The batch's rows, pre-activations, codes and reconstructions on the host.
        let width = model.d + model.d_out.unwrap_or(model.d) + 2 * model.n;
        crate::io::check_host_memory(
            &format!("--batch {batch} with d_sae {}", model.n),
            4 * batch as u128 * width as u128,
            "lower --batch",
        )?;
        Encoder::new(model, &engine, batch)
    }
}

/// `A<sep>B` as two values, each trimmed; `bad` is the error of a malformed one.
pub(crate) fn parse_pair<A: std::str::FromStr, B: std::str::FromStr>(
    s: &str,
    sep: char,
    bad: impl Fn() -> crate::Error,
) -> crate::Result<(A, B)> {
    let (a, b) = s.split_once(sep).ok_or_else(&bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

/// The first of `flags` that is set.
pub(crate) fn first_set<'a>(flags: &[(&'a str, bool)]) -> Option<&'a str> {
    flags.iter().find(|(_, set)| *set).map(|(flag, _)| *flag)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    match cli.command {
        Command::Devices(a) => devices::run(a),
        Command::Train(a) => train::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Info(a) => info::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Encode(a) => encode::run(a),
        Command::Steer(a) => steer::run(a),
        Command::Demo(a) => demo::run(a).map(|_| ()),
        Command::Toy(a) => toy::run(a),
        Command::Convert(a) => convert::run(a),
    }
}
