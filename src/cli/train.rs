//! `saeforge train`: see `crate::sae::train` for the loop and `crate::sae::config` for the
//! options (all of which may also come from a TOML file).

use crate::sae::{TrainArgs, train};
use crate::stop::StopToken;

pub fn run(args: TrainArgs) -> crate::Result<()> {
    // Ctrl-C / SIGTERM: checkpoint at the next step and exit 130 (a second one: at once).
    let stop = StopToken::new();
    let _signals = stop.on_signals();
    let o = train::run_until(&args, &stop)?;
    if o.interrupted {
        // Exit 130 with one line (printed by main) saying how to go on.
        return Err(crate::Error::Interrupted(format!(
            "interrupted at step {} of {}; checkpoint written to {}. Resume with: saeforge train --resume {}",
            o.steps,
            o.total_steps,
            crate::sae::checkpoint::path(&o.out).display(),
            o.out.display()
        )));
    }
    let last = o.last.as_ref();
    println!(
        "trained {} steps ({} tokens) on the {} at {:.0} tokens/s{}",
        o.steps,
        o.tokens,
        o.engine,
        o.tokens_per_s,
        last.map(|r| format!(
            "; final mse {:.4}, explained variance {:.4}, L0 {:.1}, dead {:.1}%",
            r.mse,
            r.explained_variance,
            r.l0,
            100.0 * r.dead_fraction
        ))
        .unwrap_or_default()
    );
    if o.skipped_rows > 0 {
        println!(
            "skipped {} rows holding NaN or Inf (--skip-nonfinite)",
            o.skipped_rows
        );
    }
    println!("SAELens folder: {}", o.out.display());
    Ok(())
}
