//! Held-out rows for evaluation: shards in the order given, rows in file order, read one
//! batch at a time (memory bounded by one batch), up to a row limit. No shuffling and no
//! repeats, so every method sees exactly the same rows.

use std::path::PathBuf;

use crate::data::{Shard, discover, open_shards};
use crate::{Error, Result};

pub struct HeldOut {
    shards: Vec<Shard>,
    /// Rows this source hands out in total.
    pub rows: usize,
    pub d: usize,
    shard: usize,
    row: usize,
    given: usize,
}

impl HeldOut {
    /// Shards from files, folders or globs (`crate::data::discover`), at most `max_rows`
    /// rows; `tensor` picks the tensor when a shard holds several.
    pub fn open(inputs: &[PathBuf], tensor: Option<&str>, max_rows: usize) -> Result<HeldOut> {
        let paths = discover(inputs)?;
        let shards = open_shards(&paths, tensor)?;
        let total: usize = shards.iter().map(|s| s.rows).sum();
        if total == 0 {
            return Err(Error::input(format!(
                "{}: the shards hold no rows",
                inputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let d = shards[0].d;
        Ok(HeldOut {
            rows: total.min(max_rows.max(1)),
            d,
            shards,
            shard: 0,
            row: 0,
            given: 0,
        })
    }

    /// Start again from the first row.
    pub fn rewind(&mut self) {
        self.shard = 0;
        self.row = 0;
        self.given = 0;
    }

    /// The next up-to-`batch` rows (rows, d), or None at the end. A row holding NaN or Inf
    /// is an error naming its file and row.
    pub fn next_batch(&mut self, batch: usize) -> Result<Option<(Vec<f32>, usize)>> {
        let want = batch.max(1).min(self.rows - self.given);
        if want == 0 {
            return Ok(None);
        }
        let d = self.d;
        let mut out = vec![0.0f32; want * d];
        let mut got = 0;
        while got < want {
            let s = &self.shards[self.shard];
            let take = (want - got).min(s.rows - self.row);
            let dst = &mut out[got * d..(got + take) * d];
            s.read_rows(self.row, take, dst)?;
            if let Some(i) = dst.iter().position(|v| !v.is_finite()) {
                let row = self.row + i / d;
                let at = s.position_of(row);
                return Err(Error::input(format!(
                    "{}: tensor {:?} row {row}{at} column {} is {} (evaluation needs finite rows: repair or drop it; train's --skip-nonfinite skips such rows)",
                    s.path.display(),
                    s.tensor,
                    i % d,
                    dst[i]
                )));
            }
            got += take;
            self.row += take;
            if self.row == s.rows {
                self.shard += 1;
                self.row = 0;
            }
        }
        self.given += want;
        Ok(Some((out, want)))
    }
}
