//! Activation shards: discovery (files, folders, globs), validation of every shard before
//! any work starts (and a fingerprint of each), positioned reads with f16/bf16 conversion
//! that turn a file changed under the reader into an error, and a seeded
//! shuffled batch stream with a prefetch thread.
//!
//! The shuffle buffer holds row *ids*, not rows: the stream of batches is a pure function of
//! (shards, seed, batch size, buffer size), so a resumed run fast-forwards by replaying ids
//! (no data is read) and sees exactly the batches the uninterrupted run would have seen.

mod file;
#[cfg(target_os = "linux")]
mod guard;
mod loader;
pub mod paired;
mod shard;

pub use file::{describe, digest_blocks, open_input, parse_safetensors, read_header, read_input};
pub use loader::{Batch, BatchStream, Prefetcher, RowId};
pub use shard::{FloatType, Shard, convert, discover, open_shards};
