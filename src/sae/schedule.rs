//! The k schedule of TopK / BatchTopK training (`--k-anneal-steps`): EleutherAI sparsify's
//! linear k decay (`TrainConfig.k_decay_steps`, `Trainer.get_current_k` in
//! sparsify/trainer.py). The run starts at a large k0 (by default min(10 d_in, d_sae), as
//! sparsify's `initial_k`) and k falls linearly to the final `--k` over the first
//! `k_anneal_steps` steps:
//!
//!   k(step) = round(k0 (1 - p) + k p), p = step / k_anneal_steps, for step < k_anneal_steps
//!   k(step) = k                                                   after
//!
//! with Python's `round` (halves to even) on the f64 value, as sparsify. One difference:
//! sparsify sets each step's k after the previous optimizer step from the counter before it
//! advances, so its batch s (s >= 1) trains with k(s - 1); here step s trains with k(s).
//!
//! The schedule is a pure function of the step (the checkpoint holds the step), so a
//! resumed run takes the same k at every step as an uninterrupted one. The exported SAE's k
//! is the final k.

use super::{Arch, TrainArgs, TrainConfig};
use crate::{Error, Result};

/// sparsify's initial k: min(10 d_in, d_sae), and never below the final k.
pub fn default_anneal_start(d_in: usize, d_sae: usize, k: usize) -> usize {
    d_in.saturating_mul(10).min(d_sae).max(k)
}

/// k at `step` (0-based) of a linear decay from `start` to `k` over `steps` steps (k from
/// step `steps` on; `steps` 0 = no annealing).
pub fn annealed_k(start: usize, k: usize, steps: u64, step: u64) -> usize {
    if step >= steps {
        return k;
    }
    let p = step as f64 / steps as f64;
    let v = start as f64 * (1.0 - p) + k as f64 * p;
    (v.round_ties_even() as usize).clamp(k.min(start), k.max(start))
}

impl TrainConfig {
    /// The k of step `step` (0-based): `--k`, or on the annealing schedule (see the module
    /// doc). topk / batchtopk only; both engines and the log read it.
    pub fn k_at(&self, step: u64) -> usize {
        annealed_k(self.k_anneal_start, self.k, self.k_anneal_steps, step)
    }

    /// The largest k of the run: what the engines size the codes for.
    pub fn k_max(&self) -> usize {
        if self.k_anneal_steps > 0 {
            self.k_anneal_start.max(self.k)
        } else {
            self.k
        }
    }

    /// Whether k changes during the run.
    pub fn anneals_k(&self) -> bool {
        self.k_max() != self.k
    }
}

/// `--k-anneal-steps` and `--k-anneal-start` resolved and checked: (steps, start), start =
/// k when there is no annealing. `k` is the final k. A decay longer than the run is
/// allowed (a run may be stopped and resumed with more --steps); such a run ends above k
/// but exports k.
pub fn resolve_k_anneal(
    a: &TrainArgs,
    arch: Arch,
    k: usize,
    d_in: usize,
    d_sae: usize,
) -> Result<(u64, usize)> {
    let n = a.k_anneal_steps.unwrap_or(0);
    if n == 0 {
        if let Some(s) = a.k_anneal_start {
            return Err(Error::input(format!(
                "--k-anneal-start {s}: has no effect without --k-anneal-steps N (N > 0)"
            )));
        }
        return Ok((0, k));
    }
    if !super::engine::selects_topk(arch) {
        let name = format!("{arch:?}").to_lowercase();
        return Err(Error::input(format!(
            "--k-anneal-steps {n}: only for --arch topk, batchtopk or matryoshka (--arch {name} has no k)"
        )));
    }
    let start = match a.k_anneal_start {
        None => default_anneal_start(d_in, d_sae, k),
        Some(s) if s < k => {
            return Err(Error::input(format!(
                "--k-anneal-start {s}: expected at least --k ({k})"
            )));
        }
        Some(s) if s > d_sae => {
            return Err(Error::input(format!(
                "--k-anneal-start {s}: expected at most d_sae = {d_sae}"
            )));
        }
        Some(s) => s,
    };
    Ok((n, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(annealed_k(400, 32, 100, 0), 400);
        assert_eq!(annealed_k(400, 32, 100, 99), 36); // 400 - 368 * 0.99 = 35.68
        assert_eq!(annealed_k(400, 32, 100, 100), 32);
        assert_eq!(annealed_k(400, 32, 100, 10_000), 32);
        // No annealing: k throughout.
        assert_eq!(annealed_k(400, 32, 0, 0), 32);
        assert_eq!(annealed_k(32, 32, 50, 7), 32);
    }

    #[test]
    fn monotone_and_in_range() {
        for (start, k, steps) in [(400, 32, 100), (7, 3, 1000), (1000, 1, 3), (65, 64, 10)] {
            let mut prev = usize::MAX;
            for step in 0..steps + 5 {
                let v = annealed_k(start, k, steps, step);
                assert!(v <= prev, "{start}->{k}/{steps}: k({step}) = {v} > {prev}");
                assert!((k..=start).contains(&v));
                prev = v;
            }
            assert_eq!(prev, k);
        }
    }

    #[test]
    fn rounds_halves_to_even() {
        // sparsify's Python round: 10 -> 5 over 2 steps is 7.5 at step 1 -> 8; 9 -> 4 is
        // 6.5 -> 6.
        assert_eq!(annealed_k(10, 5, 2, 1), 8);
        assert_eq!(annealed_k(9, 4, 2, 1), 6);
        // 100 -> 10 over 3 steps: 70, 40.
        assert_eq!(annealed_k(100, 10, 3, 1), 70);
        assert_eq!(annealed_k(100, 10, 3, 2), 40);
    }

    #[test]
    fn start_rule() {
        assert_eq!(default_anneal_start(384, 6144, 32), 3840);
        assert_eq!(default_anneal_start(128, 1024, 13), 1024);
        assert_eq!(default_anneal_start(2, 1000, 32), 32);
    }

    fn resolve(extra: impl FnOnce(&mut TrainArgs)) -> Result<TrainConfig> {
        crate::sae::config::tests::resolve_with(|a| {
            (a.d_sae, a.k) = (Some(64), Some(4));
            extra(a);
        })
    }

    fn refusal(extra: impl FnOnce(&mut TrainArgs)) -> String {
        resolve(extra).unwrap_err().to_string()
    }

    #[test]
    fn config() {
        let c = resolve(|_| {}).unwrap();
        assert_eq!((c.k_anneal_steps, c.k_anneal_start, c.k_max()), (0, 4, 4));
        assert!(!c.anneals_k());
        let c = resolve(|a| a.k_anneal_steps = Some(10)).unwrap();
        // min(10 x 8, 64)
        assert_eq!(
            (c.k_anneal_start, c.k_max(), c.k_at(0), c.k_at(10)),
            (64, 64, 64, 4)
        );
        let c = resolve(|a| {
            a.arch = Some(Arch::Batchtopk);
            a.k_anneal_steps = Some(10);
            a.k_anneal_start = Some(20);
        })
        .unwrap();
        assert_eq!((c.k_at(0), c.k_at(5), c.k_at(10)), (20, 12, 4));
        assert!(c.anneals_k());
    }

    #[test]
    fn refusals() {
        let e = refusal(|a| {
            a.arch = Some(Arch::Relu);
            a.k_anneal_steps = Some(10);
        });
        assert!(e.contains(
            "--k-anneal-steps 10: only for --arch topk, batchtopk or matryoshka (--arch relu"
        ));
        let e = refusal(|a| {
            a.arch = Some(Arch::Jumprelu);
            a.k_anneal_steps = Some(10);
        });
        assert!(e.contains("--arch jumprelu has no k"), "{e}");
        let e = refusal(|a| a.k_anneal_start = Some(10));
        assert!(e.contains("--k-anneal-start 10: has no effect without --k-anneal-steps"));
        let e = refusal(|a| {
            a.k_anneal_steps = Some(10);
            a.k_anneal_start = Some(3);
        });
        assert!(
            e.contains("--k-anneal-start 3: expected at least --k (4)"),
            "{e}"
        );
        let e = refusal(|a| {
            a.k_anneal_steps = Some(10);
            a.k_anneal_start = Some(65);
        });
        assert!(
            e.contains("--k-anneal-start 65: expected at most d_sae = 64"),
            "{e}"
        );
        // 0 is "off", for every architecture.
        resolve(|a| {
            a.arch = Some(Arch::Relu);
            a.k_anneal_steps = Some(0);
        })
        .unwrap();
    }
}
