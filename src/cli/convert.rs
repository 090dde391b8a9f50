//! `saeforge convert IN OUT --to saelens|sparsify`: another trainer's dictionary in the
//! layout a tool wants (see `crate::sae::formats` for what is read). The folder is written
//! beside OUT under a temporary name and renamed into place, so OUT is either complete or
//! absent.

use std::path::PathBuf;

use serde_json::json;

use crate::sae::formats::{self, sparsify};
use crate::{Error, Result};

/// The layouts `convert` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// SAELens v6: cfg.json + sae_weights.safetensors (standard, topk, jumprelu).
    Saelens,
    /// EleutherAI sparsify: cfg.json + sae.safetensors (topk only).
    Sparsify,
}

impl To {
    fn layout(self) -> formats::Layout {
        match self {
            To::Saelens => formats::Layout::Saelens,
            To::Sparsify => formats::Layout::Sparsify,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The SAE to read: a SAELens or sparsify folder, or a Gemma Scope params.npz (or the
    /// folder holding it).
    pub input: PathBuf,
    /// The folder to write; must not exist yet.
    pub out: PathBuf,
    /// The layout to write.
    #[arg(long, value_enum, default_value_t = To::Saelens)]
    pub to: To,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    if a.out.exists() {
        return Err(Error::input(format!(
            "{}: already exists; convert writes a new folder (remove it or choose another OUT)",
            a.out.display()
        )));
    }
    crate::io::check_output_dir("OUT", &a.out)?;
    let (layout, model) = formats::load(&a.input)?;
    match a.to {
        To::Saelens => model.check_saelens(&a.out)?,
        To::Sparsify => sparsify::check(&model, &a.out).map(|_| ())?,
    }
    let name = a
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::input(format!("{}: not a folder name", a.out.display())))?;
    let tmp = a
        .out
        .with_file_name(format!(".{name}.convert-{}.tmp", std::process::id()));
    let written = match a.to {
        To::Saelens => {
            let source = json!({
                "converted_from": layout.name(),
                "source": a.input.display().to_string(),
            });
            model.save(&tmp, None, source)
        }
        To::Sparsify => sparsify::save(&model, &tmp),
    }
    .and_then(|()| std::fs::rename(&tmp, &a.out).map_err(|e| Error::io(&a.out, e)));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.with_hint(format!("{} was not written", a.out.display())));
    }
    println!(
        "{}: {} SAE (d_in {}, d_sae {}{}) from {} ({} layout), written in the {} layout",
        a.out.display(),
        model.kind.name(),
        model.d,
        model.n,
        match model.kind {
            crate::sae::export::SaeKind::Topk { k } => format!(", k {k}"),
            _ => String::new(),
        },
        a.input.display(),
        layout.name(),
        a.to.layout().name()
    );
    Ok(())
}
