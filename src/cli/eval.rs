//! `saeforge eval`: held-out reconstruction metrics of an SAE folder, and ground-truth
//! recovery of a planted dictionary with --truth.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::Result;
use crate::data::{BatchStream, discover, open_shards};
use crate::eval::recovery::recovery;
use crate::sae::export::SaeModel;
use crate::sae::train::evaluate;
use crate::synth::read_truth;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// SAE folder in the SAELens layout.
    #[arg(long)]
    pub sae: PathBuf,
    /// Held-out shards (files, folders, globs).
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Tensor name inside the shards.
    #[arg(long)]
    pub tensor: Option<String>,
    /// A planted dictionary (truth.safetensors from `saeforge synth`).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Rows to evaluate (default: all, at most 65536).
    #[arg(long, default_value_t = 65536)]
    pub rows: usize,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    if a.data.is_empty() && a.truth.is_none() {
        return Err(crate::Error::input(
            "nothing to evaluate: give --data (held-out shards) and/or --truth (a planted dictionary)",
        ));
    }
    if let Some(j) = &a.json {
        crate::io::check_output_file("json", j)?;
    }
    let model = SaeModel::load(&a.sae)?;
    let mut out = Map::new();
    if !a.data.is_empty() {
        let paths = discover(&a.data)?;
        let shards = std::sync::Arc::new(open_shards(&paths, a.tensor.as_deref())?);
        if shards[0].d != model.d {
            return Err(crate::Error::input(format!(
                "{}: d = {}, but the SAE in {} has d_in = {}",
                shards[0].path.display(),
                shards[0].d,
                a.sae.display(),
                model.d
            )));
        }
        let total: usize = shards.iter().map(|s| s.rows).sum();
        let rows = a.rows.min(total).max(1);
        crate::io::check_host_memory(
            &format!("--rows {rows} with d_sae {}", model.n),
            rows as u128 * (model.d as u128 * 3 + model.n as u128 * 2) * 4,
            "lower --rows",
        )?;
        let ranges = shards.iter().map(|s| (0, s.rows as u64)).collect();
        let mut st = BatchStream::new(shards, ranges, 0, rows, 0)?;
        let b = st.next_batch()?;
        let (mse, ev, l0) = evaluate(&model, &b.data, b.rows);
        println!("rows {rows}: mse {mse:.6}  explained variance {ev:.4}  L0 {l0:.2}");
        out.insert("rows".into(), json!(rows));
        out.insert("mse".into(), json!(mse));
        out.insert("explained_variance".into(), json!(ev));
        out.insert("l0".into(), json!(l0));
    }
    if let Some(t) = &a.truth {
        let truth = read_truth(t)?;
        if truth.d != model.d {
            return Err(crate::Error::input(format!(
                "{}: features have d = {}, but the SAE has d_in = {}",
                t.display(),
                truth.d,
                model.d
            )));
        }
        let r = recovery(&truth.features, &model.w_dec, model.d);
        println!(
            "recovery of {} true features by {} latents: MMCS {:.4}, recovered >= 0.9: {:.1}%, >= 0.7: {:.1}%, unique best matches {}",
            truth.n,
            model.n,
            r.mmcs,
            100.0 * r.recovered_0_9,
            100.0 * r.recovered_0_7,
            r.uniqueness
        );
        for (k, v) in serde_json::to_value(&r)
            .expect("plain data")
            .as_object()
            .expect("struct")
            .iter()
        {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(j) = &a.json {
        crate::io::write_json(j, &Value::Object(out))?;
    }
    Ok(())
}
