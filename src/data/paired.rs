//! Paired shards for transcoders: `--data` (inputs) and `--target-data` (targets), row i
//! of the j-th target shard the target of row i of the j-th input shard. The pairing is
//! checked before any work: the same number of shards, the same rows in each pair, and,
//! where both files of a pair carry a shard number in their name (`acts-00003`), the same
//! number, so that a listing in another order (a glob sorted differently, a file renamed)
//! is refused rather than silently training on mismatched rows. Every message names the
//! pair of files.
//!
//! The batch stream draws row ids from the inputs; the target rows are read at the same
//! ids (`BatchStream::target`), so shuffling keeps every pair together. A batch of a
//! transcoder holds its input rows (rows, d_in) followed by its target rows (rows, d_out);
//! the engines split it (`split_batch`).

use std::path::Path;

use super::Shard;
use crate::{Error, Result};

/// The shard number in a file's name: the last run of digits of its stem, if any.
fn shard_number(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let digits: String = stem
        .chars()
        .rev()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// Err (one line naming the pair of files) unless `targets` pair with `inputs` shard by
/// shard and row by row.
pub fn check_pairs(inputs: &[Shard], targets: &[Shard]) -> Result<()> {
    if inputs.len() != targets.len() {
        let (more, fewer, which) = if inputs.len() > targets.len() {
            (inputs, targets, "--data")
        } else {
            (targets, inputs, "--target-data")
        };
        let extra = &more[fewer.len()];
        let last = fewer
            .last()
            .map(|s| s.path.display().to_string())
            .unwrap_or_else(|| "nothing".into());
        return Err(Error::input(format!(
            "{} (shard {} of {which}) has no partner: --data has {} shards, --target-data {} (last pair ends at {last})",
            extra.path.display(),
            fewer.len() + 1,
            inputs.len(),
            targets.len()
        )));
    }
    for (i, (x, y)) in inputs.iter().zip(targets).enumerate() {
        let pair = format!("{} and {}", x.path.display(), y.path.display());
        if x.rows != y.rows {
            return Err(Error::input(format!(
                "{pair} (pair {}): {} input rows but {} target rows; each target shard must hold one row per input row",
                i + 1,
                x.rows,
                y.rows
            )));
        }
        if let (Some(a), Some(b)) = (shard_number(&x.path), shard_number(&y.path))
            && a != b
        {
            return Err(Error::input(format!(
                "{pair} (pair {}): shard numbers {a} and {b} differ; list --target-data in the order of --data",
                i + 1
            )));
        }
    }
    Ok(())
}

/// A transcoder's batch split into its input rows (rows, d_in) and target rows (rows,
/// d_out); an SAE's batch (`d_out` None) is its own target.
pub fn split_batch(x: &[f32], rows: usize, d_in: usize, d_out: Option<usize>) -> (&[f32], &[f32]) {
    match d_out {
        Some(_) => x.split_at(rows * d_in),
        None => (x, x),
    }
}

#[cfg(test)]
mod tests {
    use super::shard_number;
    use std::path::Path;

    #[test]
    fn shard_numbers() {
        assert_eq!(
            shard_number(Path::new("a/acts-00012.safetensors")),
            Some(12)
        );
        assert_eq!(shard_number(Path::new("layer6_out_3.safetensors")), Some(3));
        assert_eq!(shard_number(Path::new("acts.safetensors")), None);
    }
}
