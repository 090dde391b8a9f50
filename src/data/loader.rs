//! The batch stream: shards in a seeded order that changes every epoch, rows in file order
//! within a shard, then a shuffle buffer of row ids (uniform draw, replace with the next id
//! of the stream). Batches are gathered from the files (a memory map read inside a SIGBUS
//! guard, or positioned reads; see `shard.rs` and `guard.rs`) and converted to f32 by a
//! prefetch thread that keeps a bounded queue full, so the device does not wait
//! on the disk.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Shard, convert};
use crate::{Error, Result};

/// A row of a shard: (shard index, row within the shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowId {
    pub shard: u32,
    pub row: u64,
}

/// A ready batch: `rows` x `d` f32, already scaled.
pub struct Batch {
    /// 0-based index of this batch in the stream.
    pub index: u64,
    pub data: Vec<f32>,
    pub rows: usize,
    /// Rows skipped because they held NaN or Inf (with --skip-nonfinite).
    pub skipped: usize,
    /// Row ids drawn from the stream up to and including this batch (the resume point).
    pub drawn: u64,
}

/// Deterministic stream of row ids over the training rows of a set of shards.
pub struct BatchStream {
    shards: Arc<Vec<Shard>>,
    /// Rows of each shard that belong to this stream (train or eval split).
    ranges: Vec<(u64, u64)>,
    seed: u64,
    batch: usize,
    epoch: u64,
    order: Vec<usize>,
    order_pos: usize,
    row_pos: u64,
    buffer: Vec<RowId>,
    rng: ChaCha8Rng,
    shuffle: bool,
    /// Batches handed out so far.
    pub batches: u64,
    /// Row ids drawn so far.
    pub drawn: u64,
    /// Scale applied to every value (activation normalisation).
    pub scale: f32,
    /// Skip rows with NaN/Inf instead of stopping.
    pub skip_nonfinite: bool,
    /// Transcoders: the target shards' stream, read at this stream's row ids; its rows
    /// follow the input rows in every batch (`super::paired`).
    pub target: Option<Box<BatchStream>>,
}

impl BatchStream {
    /// `ranges[i]` = rows of shard i used by this stream. `shuffle_rows` <= 1 disables
    /// shuffling (rows come in file order, shards in a fixed order).
    pub fn new(
        shards: Arc<Vec<Shard>>,
        ranges: Vec<(u64, u64)>,
        seed: u64,
        batch: usize,
        shuffle_rows: usize,
    ) -> Result<Self> {
        let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        if total == 0 {
            return Err(Error::input(
                "no rows to stream (all shards empty after the eval split)",
            ));
        }
        let shuffle = shuffle_rows > 1;
        let mut s = BatchStream {
            order: (0..shards.len()).collect(),
            shards,
            ranges,
            seed,
            batch,
            epoch: 0,
            order_pos: 0,
            row_pos: 0,
            buffer: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5AEF_096E),
            shuffle,
            batches: 0,
            drawn: 0,
            scale: 1.0,
            skip_nonfinite: false,
            target: None,
        };
        s.start_epoch(0);
        if shuffle {
            let cap = (shuffle_rows as u64).min(total) as usize;
            for _ in 0..cap {
                let id = s.next_stream_id();
                s.buffer.push(id);
            }
        }
        Ok(s)
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.order = (0..self.shards.len()).collect();
        if self.shuffle {
            let mut r = ChaCha8Rng::seed_from_u64(
                self.seed
                    .wrapping_add(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            );
            self.order.shuffle(&mut r);
        }
        self.order_pos = 0;
        self.row_pos = self.ranges[self.order[0]].0;
    }

    /// The next id of the unshuffled stream (shard order, then file order), across epochs.
    fn next_stream_id(&mut self) -> RowId {
        loop {
            let shard = self.order[self.order_pos];
            let (_, end) = self.ranges[shard];
            if self.row_pos < end {
                let id = RowId {
                    shard: shard as u32,
                    row: self.row_pos,
                };
                self.row_pos += 1;
                return id;
            }
            self.order_pos += 1;
            if self.order_pos == self.order.len() {
                self.start_epoch(self.epoch + 1);
            } else {
                self.row_pos = self.ranges[self.order[self.order_pos]].0;
            }
        }
    }

    fn next_id(&mut self) -> RowId {
        self.drawn += 1;
        if !self.shuffle {
            return self.next_stream_id();
        }
        let j = self.rng.random_range(0..self.buffer.len());
        let next = self.next_stream_id();
        std::mem::replace(&mut self.buffer[j], next)
    }

    /// Ids of the next batch.
    pub fn next_ids(&mut self) -> Vec<RowId> {
        self.batches += 1;
        (0..self.batch).map(|_| self.next_id()).collect()
    }

    /// Skip the first `drawn` row ids without reading data (exact resume: a checkpoint
    /// stores `Batch::drawn` of the last batch it trained on).
    pub fn skip_ids(&mut self, drawn: u64) {
        while self.drawn < drawn {
            self.next_id();
        }
        self.batches = drawn / self.batch as u64;
    }

    /// Epochs started so far (0-based epoch of the stream head).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn d(&self) -> usize {
        self.shards[0].d
    }

    /// Gather, convert and scale the rows `ids` into `out` (ids.len() * d). A row with NaN
    /// or Inf is an error naming the file and row, unless `skip_nonfinite`, in which case
    /// it is dropped and the number dropped is returned (the batch is then shorter).
    pub fn fill(&self, ids: &[RowId], out: &mut Vec<f32>) -> Result<usize> {
        let finite = self.read_rows(ids, out)?;
        Ok(self.keep_rows(out, &finite))
    }

    /// Gather and convert the rows `ids` into `out` (ids.len() * d), unscaled; whether each
    /// row is finite. A row with NaN or Inf is an error naming the file and row unless
    /// `skip_nonfinite`.
    fn read_rows(&self, ids: &[RowId], out: &mut Vec<f32>) -> Result<Vec<bool>> {
        let d = self.d();
        // A fresh buffer (the first batch; the initialisation sample, 134 MB at d 4096) is
        // populated in parallel rather than faulted a page at a time by this one thread:
        // that sample's read took 65-95 ms instead of 100-135 (io::prefaulted_zeros).
        if out.capacity() < ids.len() * d {
            *out = crate::io::prefaulted_zeros(ids.len() * d);
        }
        out.resize(ids.len() * d, 0.0);
        // Consecutive rows of a shard (all of them without shuffling) are one read; with
        // the mapped gather a row costs no system call (see `guard`).
        let mut raw = Vec::with_capacity(d * 4);
        let mut touched = vec![false; self.shards.len()];
        let mut k = 0;
        while k < ids.len() {
            let first = ids[k];
            let mut run = 1;
            while k + run < ids.len()
                && ids[k + run]
                    == (RowId {
                        shard: first.shard,
                        row: first.row + run as u64,
                    })
            {
                run += 1;
            }
            let shard = &self.shards[first.shard as usize];
            touched[first.shard as usize] = true;
            let dst = &mut out[k * d..(k + run) * d];
            match shard.mapped(first.row as usize, run) {
                #[cfg(target_os = "linux")]
                Some(bytes) => {
                    let ((), faulted) = super::guard::guarded(|| convert(shard.dtype, bytes, dst));
                    if faulted {
                        return Err(shard.truncated_error());
                    }
                }
                _ => {
                    shard.read_run_raw(first.row as usize, run, &mut raw)?;
                    convert(shard.dtype, &raw, dst);
                }
            }
            k += run;
        }
        // Every shard this batch read from is still the file that was opened: a shard
        // rewritten or replaced mid-run must not hand over rows of two different files.
        for (i, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
            self.shards[i].check_unchanged()?;
        }
        let mut finite = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let shard = &self.shards[id.shard as usize];
            let row = &out[i * d..(i + 1) * d];
            let bad = row.iter().position(|v| !v.is_finite());
            if let (Some(col), false) = (bad, self.skip_nonfinite) {
                let at = shard.position_of(id.row as usize);
                return Err(Error::input(format!(
                    "{}: tensor {:?} row {}{at} column {col} is {} (use --skip-nonfinite to drop such rows)",
                    shard.path.display(),
                    shard.tensor,
                    id.row,
                    row[col]
                )));
            }
            finite.push(bad.is_none());
        }
        Ok(finite)
    }

    /// Keep the rows of `out` marked in `keep` (in order), scaled; the number dropped.
    fn keep_rows(&self, out: &mut Vec<f32>, keep: &[bool]) -> usize {
        let d = self.d();
        let mut kept = 0usize;
        for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            if kept != i {
                out.copy_within(i * d..(i + 1) * d, kept * d);
            }
            if self.scale != 1.0 {
                for v in out[kept * d..(kept + 1) * d].iter_mut() {
                    *v *= self.scale;
                }
            }
            kept += 1;
        }
        out.truncate(kept * d);
        keep.len() - kept
    }

    /// The rows `ids` of this stream into `x` and of the paired `target` stream into `y`,
    /// each scaled by its stream's scale; a pair with NaN or Inf on either side is an error
    /// (naming that side's file) or, with `skip_nonfinite`, dropped from both. The number
    /// of pairs dropped.
    fn fill_pairs(
        &self,
        target: &BatchStream,
        ids: &[RowId],
        x: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<usize> {
        let fx = self.read_rows(ids, x)?;
        let fy = target.read_rows(ids, y)?;
        let both: Vec<bool> = fx.iter().zip(&fy).map(|(a, b)| *a && *b).collect();
        target.keep_rows(y, &both);
        Ok(self.keep_rows(x, &both))
    }

    /// The next batch, read now. With `skip_nonfinite`, rows holding NaN/Inf are dropped
    /// and replaced by the next rows of the stream, so a batch is always full.
    /// A transcoder's batch (with a `target` stream) holds the input rows followed by the
    /// target rows of the same ids; a pair is kept or dropped whole.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let index = self.batches;
        let mut ids = self.next_ids();
        let d = self.d();
        let target = self.target.take();
        let (mut data, mut y) = (Vec::new(), Vec::new());
        let (mut extra, mut extra_y) = (Vec::new(), Vec::new());
        let mut skipped = 0;
        let filled = loop {
            let dropped = match &target {
                Some(t) => self.fill_pairs(t, &ids, &mut extra, &mut extra_y),
                None => self.fill(&ids, &mut extra),
            };
            match dropped {
                Ok(n) => skipped += n,
                Err(e) => break Err(e),
            }
            if data.is_empty() {
                // The first fill is the batch (no copy); refills are appended.
                std::mem::swap(&mut data, &mut extra);
                std::mem::swap(&mut y, &mut extra_y);
            } else {
                data.extend_from_slice(&extra);
                y.extend_from_slice(&extra_y);
            }
            if data.len() >= self.batch * d {
                break Ok(());
            }
            if skipped > 10 * self.batch {
                break Err(Error::input(format!(
                    "more than {} rows with NaN/Inf while filling batch {index}; the data looks broken",
                    10 * self.batch
                )));
            }
            let need = self.batch - data.len() / d;
            ids = (0..need).map(|_| self.next_id()).collect();
        };
        self.target = target;
        filled?;
        data.extend_from_slice(&y);
        Ok(Batch {
            index,
            rows: self.batch,
            data,
            skipped,
            drawn: self.drawn,
        })
    }
}

/// A thread that keeps up to `depth` batches ready.
pub struct Prefetcher {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    pub fn new(mut stream: BatchStream, depth: usize) -> Self {
        let (tx, rx): (SyncSender<Result<Batch>>, _) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("saeforge-prefetch".into())
            .spawn(move || {
                loop {
                    let b = stream.next_batch();
                    let stop = b.is_err();
                    if tx.send(b).is_err() || stop {
                        return;
                    }
                }
            })
            .expect("spawning the prefetch thread");
        Prefetcher {
            rx: Some(rx),
            handle: Some(handle),
        }
    }

    /// The next batch (blocks until the prefetch thread has it).
    #[allow(clippy::should_implement_trait)] // fallible, blocking: not an Iterator
    pub fn next(&mut self) -> Result<Batch> {
        self.rx
            .as_ref()
            .expect("receiver lives until drop")
            .recv()
            .map_err(|_| Error::Internal("prefetch thread stopped".into()))?
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
