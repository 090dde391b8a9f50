//! The firing metrics of `eval --truth` over held-out rows: the SAE's codes of each batch
//! against the true codes `synth` wrote beside the shards (`DIR/codes/`, see
//! `crate::synth::codes`), the same rows in the same order as the reconstruction metrics.

use std::path::PathBuf;

use super::absorption::{Absorption, AbsorptionCounts};
use super::forward::Coder;
use super::source::HeldOut;
use super::truth::{FiringCounts, FiringMetrics};
use crate::Result;
use crate::data::{discover, open_shards};
use crate::synth::{SparseCodes, codes_path, read_codes};

/// The true codes of the shards of `inputs`, handed out row by row in shard order (one
/// shard's codes in memory at a time).
struct TrueRows {
    files: Vec<(PathBuf, usize)>,
    n: usize,
    file: usize,
    codes: Option<SparseCodes>,
    row: usize,
}

impl TrueRows {
    /// Err(reason) when some shard has no codes file.
    fn open(
        inputs: &[PathBuf],
        tensor: Option<&str>,
        n: usize,
    ) -> Result<std::result::Result<TrueRows, String>> {
        let paths = discover(inputs)?;
        let shards = open_shards(&paths, tensor)?;
        let mut files = Vec::new();
        for s in &shards {
            let c = codes_path(&s.path);
            if !c.is_file() {
                return Ok(Err(format!(
                    "no true codes for {} (expected {}, written by saeforge synth)",
                    s.path.display(),
                    c.display()
                )));
            }
            files.push((c, s.rows));
        }
        Ok(Ok(TrueRows {
            files,
            n,
            file: 0,
            codes: None,
            row: 0,
        }))
    }

    /// Call `f` with the true features active in each of the next `rows` rows.
    fn each(&mut self, rows: usize, mut f: impl FnMut(&[u32])) -> Result<()> {
        for _ in 0..rows {
            while self.codes.is_none() || self.row == self.files[self.file - 1].1 {
                let (path, rows) = &self.files[self.file];
                self.codes = Some(read_codes(path, self.n, *rows)?);
                self.file += 1;
                self.row = 0;
            }
            let c = self.codes.as_ref().expect("loaded above");
            f(c.row(self.row).0);
            self.row += 1;
        }
        Ok(())
    }
}

/// Run `coder` over the first `max_rows` rows of `inputs` (batches of `batch`) and count
/// each latent's firing against its best-matching true feature `best[latent]`, and with
/// `absorption` the absorption counts on the same rows. Ok(Err) says why there are no
/// firing metrics (a shard without codes).
#[allow(clippy::too_many_arguments)]
pub fn firing_on_heldout(
    coder: &mut dyn Coder,
    inputs: &[PathBuf],
    tensor: Option<&str>,
    max_rows: usize,
    batch: usize,
    best: &[u32],
    n_true: usize,
    mut absorption: Option<AbsorptionCounts>,
) -> Result<std::result::Result<(FiringMetrics, Option<Absorption>), String>> {
    let mut truth = match TrueRows::open(inputs, tensor, n_true)? {
        Ok(t) => t,
        Err(why) => return Ok(Err(why)),
    };
    let mut src = HeldOut::open(inputs, tensor, max_rows)?;
    let mut counts = FiringCounts::new(best.to_vec(), n_true);
    while let Some((x, rows)) = src.next_batch(batch)? {
        let out = coder.run(&x, rows, true)?;
        let codes = out.codes.expect("codes were asked for");
        let mut r = 0;
        truth.each(rows, |active| {
            let fired = &codes.idx[codes.row_ptr[r]..codes.row_ptr[r + 1]];
            counts.add_row(fired, active);
            if let Some(a) = absorption.as_mut() {
                a.add_row(fired, active);
            }
            r += 1;
        })?;
    }
    Ok(Ok((counts.finish(), absorption.map(|a| a.finish()))))
}

/// The ground-truth section of `eval`: the dictionary metrics, and with an encoder and
/// `--data` whose shards have codes (`data`, its `tensor`, at most `rows` rows read
/// `batch` at a time), the firing metrics on the in-distribution rows.
pub fn report(
    model: &crate::sae::export::SaeModel,
    truth: &crate::synth::Truth,
    encoder: Option<&mut dyn Coder>,
    data: &[PathBuf],
    tensor: Option<&str>,
    rows: usize,
    batch: usize,
) -> Result<super::truth::TruthReport> {
    let dictionary = super::truth::dictionary_truth(&model.w_dec, &truth.features, model.d)?;
    let absorption = AbsorptionCounts::new(&truth.parent, &dictionary.pairs, model.n);
    let firing = match encoder {
        Some(e) if !data.is_empty() => firing_on_heldout(
            e,
            data,
            tensor,
            rows,
            batch,
            &dictionary.best,
            truth.n,
            absorption,
        )?,
        _ => Err("no --data rows".to_string()),
    };
    let (firing, absorption) = match firing {
        Ok((f, a)) => (Ok(f), a),
        Err(why) => (Err(why), None),
    };
    Ok(super::truth::TruthReport {
        dictionary,
        firing,
        absorption,
    })
}
