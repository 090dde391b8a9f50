//! The demo's summary as printed and as report.md (with the commands that redo each step).

use std::fmt::Write as _;
use std::path::Path;

use super::DemoSummary;
use crate::Result;
use crate::eval::recovery::Recovery;
use crate::report::plots::{self, Series};

/// plots/recovery: the best |cosine| of every true feature with a decoder row, best first.
pub(super) fn recovery_plot(dir: &Path, rec: &Recovery, latents: usize) -> Result<()> {
    let mut sorted: Vec<f64> = rec.best.iter().map(|b| b.0 as f64).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    plots::line_plot(
        dir,
        "recovery",
        "Recovery of the planted dictionary",
        "true features, best recovered first",
        "best |cosine| with a decoder row",
        &[Series {
            name: format!("{latents} latents"),
            points: sorted
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as f64, v))
                .collect(),
        }],
        false,
    )
}

/// plots/steering: the activations' projection on feature `f`, binned by its true
/// coefficient, for each (name, points) series (original, ablated, clamped).
pub(super) fn steering_plot(
    dir: &Path,
    f: usize,
    latent: usize,
    series: [(String, Vec<(f64, f64)>); 3],
) -> Result<()> {
    let series = series.map(|(name, points)| Series { name, points });
    plots::line_plot(
        dir,
        "steering",
        &format!("Steering feature {f} through latent {latent}"),
        "true coefficient of the feature",
        "projection of the activations on the feature",
        &series,
        false,
    )
}

fn total_seconds(s: &DemoSummary) -> f64 {
    s.seconds.iter().map(|(_, t)| t).sum()
}

fn stage_line(s: &DemoSummary) -> String {
    s.seconds
        .iter()
        .map(|(n, t)| format!("{n} {t:.1} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary table as printed.
pub fn text_table(s: &DemoSummary, out: &Path) -> String {
    let w = s
        .table
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    let mut t = String::new();
    let _ = writeln!(t);
    let _ = writeln!(t, "saeforge demo: {}", s.engine);
    for (k, v) in &s.table {
        if v.is_empty() {
            let _ = writeln!(t, "\n  {k}");
        } else {
            let _ = writeln!(t, "    {k:<w$}  {v}");
        }
    }
    let _ = writeln!(
        t,
        "\n  {:.0} s in all ({}); report: {}",
        total_seconds(s),
        stage_line(s),
        out.join("report.md").display()
    );
    t
}

/// report.md: what ran, the table, the files, and the commands that redo each step.
pub(super) fn report_md(s: &DemoSummary, out: &Path) -> String {
    let c = &s.config;
    let st = &s.steer;
    let o = out.display();
    let mut m = String::new();
    let _ = writeln!(m, "# saeforge demo\n");
    let _ = writeln!(
        m,
        "A TopK sparse autoencoder trained on synthetic activations with a planted dictionary \
         in superposition ({} true features in {} dimensions, about {} active per row), \
         evaluated against the ground truth, then used to steer one recovered feature.\n",
        c.features, c.d_in, c.active
    );
    let _ = writeln!(m, "Engine: {}.\n", s.engine);
    let cell = |t: &str| t.replace('|', "\\|");
    let _ = writeln!(m, "| | |\n|---|---|");
    for (k, v) in &s.table {
        if v.is_empty() {
            let _ = writeln!(m, "| **{}** | |", cell(k));
        } else {
            let _ = writeln!(m, "| {} | {} |", cell(k), cell(v));
        }
    }
    let _ = writeln!(
        m,
        "\nTime: {:.0} s ({}).\n",
        total_seconds(s),
        stage_line(s)
    );
    let _ = writeln!(m, "## Steering\n");
    let _ = writeln!(
        m,
        "True feature {} is recovered by latent {} (|cos| {:.3}). `steer` edits only that \
         latent and writes x' = x + (z' - z) W_dec, so the SAE's reconstruction error stays in \
         the activations. Ablation (`--ablate {}`, unlearning) removes the feature's \
         contribution from the {} rows where the latent fired; clamping (`--set {}={}`, \
         Golden Gate style) writes it into every row. On the rows where the feature is active, \
         its projection goes from {:.3} to {:.3} after ablation: what remains is the part of \
         the feature the SAE's encoder does not capture (its share of the reconstruction \
         error), which `steer` leaves in place by design. The projection of the activations on \
         the true feature direction, binned by the feature's true coefficient, is in \
         plots/steering.png.\n",
        st.feature,
        st.latent,
        st.cosine,
        st.latent,
        st.ablate.rows_changed,
        st.latent,
        st.clamp,
        st.proj_active[0],
        st.proj_active[1]
    );
    let _ = writeln!(m, "## Files\n");
    for (p, what) in [
        (
            "data/",
            "training shards (f16), truth.safetensors (the planted dictionary), synth.json",
        ),
        ("heldout/", "held-out shard"),
        (
            "sae/",
            "the SAE in the SAELens layout (cfg.json, sae_weights.safetensors, sparsity.safetensors), training.jsonl, plots/, checkpoint/",
        ),
        (
            "heldout-codes.safetensors",
            "held-out codes as CSR (indptr, indices, values)",
        ),
        (
            "steer/ablate.safetensors",
            "held-out activations with the feature ablated",
        ),
        (
            "steer/clamp.safetensors",
            "held-out activations with the feature clamped",
        ),
        (
            "plots/",
            "recovery.png (best |cos| per true feature), steering.png",
        ),
        ("summary.json", "every number above"),
    ] {
        let _ = writeln!(m, "- `{p}`: {what}");
    }
    let _ = writeln!(m, "\n## The same steps with the CLI\n");
    let _ = writeln!(m, "```sh");
    let _ = writeln!(
        m,
        "saeforge train --data {o}/data --eval-data {o}/heldout --out {o}/sae --arch topk --d-sae {} --k {} --batch {} --steps {} --lr {} --seed {} --overwrite true",
        c.d_sae, c.k, c.batch, c.steps, c.lr, c.train_seed
    );
    let _ = writeln!(
        m,
        "saeforge eval --sae {o}/sae --data {o}/heldout --truth {o}/data/truth.safetensors"
    );
    let _ = writeln!(
        m,
        "saeforge encode --sae {o}/sae --data {o}/heldout --out {o}/heldout-codes.safetensors"
    );
    let _ = writeln!(
        m,
        "saeforge steer --sae {o}/sae --data {o}/heldout/shard-00000.safetensors --ablate {} --out {o}/steer/ablate.safetensors",
        st.latent
    );
    let _ = writeln!(
        m,
        "saeforge steer --sae {o}/sae --data {o}/heldout/shard-00000.safetensors --set {}={} --out {o}/steer/clamp.safetensors",
        st.latent, st.clamp
    );
    let _ = writeln!(m, "```");
    m
}
