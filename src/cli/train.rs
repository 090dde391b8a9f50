//! `saeforge train`: see `crate::sae::train` for the loop and `crate::sae::config` for the
//! options (all of which may also come from a TOML file).

use crate::sae::config::ARCH_ONLY;
use crate::sae::{Arch, TrainArgs, train};
use crate::stop::StopToken;

/// Refuse an option given on the command line that the run's architecture ignores (`--l1`
/// with topk, `--k` with relu, ...; see `ARCH_ONLY`): it would be accepted and silently do
/// nothing. Checked here, for the command line only: library callers share one option set
/// across architectures. `--k-anneal-*` and `--matryoshka-widths` are refused by the
/// config itself. `file`: the `--config` file, read once by the caller.
fn check_arch_options(a: &TrainArgs, file: Option<&TrainArgs>) -> crate::Result<()> {
    if a.resume.is_some() {
        return Ok(()); // check_resume refuses every such option
    }
    let arch = a
        .arch
        .or_else(|| file.and_then(|f| f.arch))
        .unwrap_or(Arch::Topk);
    let name = serde_json::to_value(arch).expect("plain data");
    let name = name.as_str().unwrap_or_default();
    let given = serde_json::to_value(a).expect("plain data");
    for (k, archs) in ARCH_ONLY {
        if matches!(k, "k_anneal_steps" | "k_anneal_start" | "matryoshka_widths") {
            continue;
        }
        if given.get(k).is_some_and(|v| !v.is_null()) && !archs.contains(&name) {
            return Err(crate::Error::input(format!(
                "--{}: has no effect with arch {name} (it is for {}); drop it",
                k.replace('_', "-"),
                archs.join(" / ")
            )));
        }
    }
    Ok(())
}

pub fn run(args: TrainArgs) -> crate::Result<()> {
    // The --config file, read once here (a resumed run refuses --config: check_resume).
    let file = match (&args.resume, &args.config) {
        (None, Some(p)) => Some(TrainArgs::from_toml(p)?),
        _ => None,
    };
    check_arch_options(&args, file.as_ref())?;
    // Ctrl-C / SIGTERM: checkpoint at the next step and exit 130 (a second one: at once).
    let stop = StopToken::new();
    let _signals = stop.on_signals();
    let o = train::run_until_with(&args, file, &stop)?;
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
    let pace = if o.run_tokens == 0 {
        // A resumed run that was already at its budget: nothing trained, exported again.
        "; nothing left to train (the run was already at its last step)".to_string()
    } else {
        format!(" on the {} at {:.0} tokens/s", o.engine, o.tokens_per_s)
    };
    println!(
        "trained {} steps ({} tokens){pace}{}",
        o.steps,
        o.tokens,
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
