//! The feature hierarchy (SAELens's `generate_hierarchy` and hierarchy modifier): a forest
//! whose roots are features 0 .. roots, grown breadth first, so that parents have lower
//! indices (and, with Zipf probabilities, higher firing rates) than their children.
//!
//! In a row, a child keeps its value only if its parent's value is > 0 (after the parent's
//! own gating), level by level from the roots down; among the children of a mutually
//! exclusive parent that is active, when more than one fired, one chosen uniformly at
//! random keeps its value and the others are zeroed (before the next level is gated, so a
//! zeroed child's own children go too).

use rand::Rng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::structure::HierarchySettings;

/// The forest over n features; features outside every tree have no parent.
#[derive(Clone, Debug, PartialEq)]
pub struct Forest {
    /// Per feature: its parent, or -1.
    pub parent: Vec<i32>,
    /// Per feature: are its children mutually exclusive?
    pub exclusive: Vec<bool>,
    /// Per level L >= 1 (index L - 1): the features at that level, ascending.
    pub levels: Vec<Vec<usize>>,
    /// Per level L >= 1: the exclusive parents whose children are at level L, ascending.
    pub exclusive_parents: Vec<Vec<usize>>,
    /// Children of each feature, ascending (CSR over features).
    child_ptr: Vec<usize>,
    child_idx: Vec<usize>,
}

impl Forest {
    /// Grow the forest (breadth first, as SAELens does): roots 0 .. roots; every parent
    /// above `depth` gets U{lo ..= hi} children, numbered on from the last feature used,
    /// until the features run out; then floor(exclusive x eligible) of the parents with at
    /// least two children, chosen at random, get mutually exclusive children.
    pub fn grow(n: usize, s: &HierarchySettings, rng: &mut ChaCha8Rng) -> Forest {
        let mut parent = vec![-1i32; n];
        let mut depth_of = vec![0usize; n];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let roots = s.roots.min(n);
        let mut next = roots;
        let mut frontier: Vec<usize> = (0..roots).collect();
        // Every node that may have children, in the order created (SAELens's list).
        let mut parents: Vec<usize> = frontier.clone();
        while !frontier.is_empty() {
            let mut level = Vec::new();
            for &p in &frontier {
                if depth_of[p] >= s.depth {
                    continue;
                }
                let b = rng.random_range(s.branching.0..=s.branching.1);
                for _ in 0..b {
                    if next >= n {
                        break;
                    }
                    let c = next;
                    next += 1;
                    parent[c] = p as i32;
                    depth_of[c] = depth_of[p] + 1;
                    children[p].push(c);
                    if depth_of[c] < s.depth {
                        level.push(c);
                        parents.push(c);
                    }
                }
            }
            frontier = level;
        }
        let eligible: Vec<usize> = parents
            .into_iter()
            .filter(|&p| children[p].len() >= 2)
            .collect();
        let mut exclusive = vec![false; n];
        let count = (eligible.len() as f64 * s.exclusive).floor() as usize;
        if count > 0 {
            for i in sample(rng, eligible.len(), count) {
                exclusive[eligible[i]] = true;
            }
        }
        let max_depth = depth_of.iter().copied().max().unwrap_or(0);
        let mut levels = vec![Vec::new(); max_depth];
        let mut exclusive_parents = vec![Vec::new(); max_depth];
        for f in 0..n {
            if parent[f] >= 0 {
                levels[depth_of[f] - 1].push(f);
            }
            if exclusive[f] {
                exclusive_parents[depth_of[f]].push(f);
            }
        }
        let mut child_ptr = vec![0usize];
        let mut child_idx = Vec::new();
        for c in &children {
            child_idx.extend_from_slice(c);
            child_ptr.push(child_idx.len());
        }
        Forest {
            parent,
            exclusive,
            levels,
            exclusive_parents,
            child_ptr,
            child_idx,
        }
    }

    pub fn children(&self, f: usize) -> &[usize] {
        &self.child_idx[self.child_ptr[f]..self.child_ptr[f + 1]]
    }

    /// Features with a parent.
    pub fn members(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// SAELens's `compute_probability_correction_factors`: a child's sampling probability
    /// is its target divided by its parent's target; a child of an exclusive parent P is
    /// raised further by 1 + (sum of its siblings' targets) / target(P). Roots and
    /// features outside the forest keep factor 1.
    pub fn compensation(&self, base: &[f32]) -> Vec<f64> {
        let n = base.len();
        let mut factor = vec![1.0f64; n];
        for (k, &p) in factor.iter_mut().zip(&self.parent) {
            if p >= 0 && base[p as usize] > 0.0 {
                *k = 1.0 / base[p as usize] as f64;
            }
        }
        for f in 0..n {
            let kids = self.children(f);
            if !self.exclusive[f] || kids.len() < 2 || base[f] <= 0.0 {
                continue;
            }
            let total: f64 = kids.iter().map(|&c| base[c] as f64).sum();
            for &c in kids {
                let others = (total - base[c] as f64).max(0.0);
                factor[c] *= 1.0 + others / base[f] as f64;
            }
        }
        factor
    }

    /// Gate one dense row of codes in place (see the module doc); `rng` picks the winners
    /// among exclusive siblings.
    pub fn apply(&self, row: &mut [f32], rng: &mut ChaCha8Rng, scratch: &mut Vec<usize>) {
        for (level, feats) in self.levels.iter().enumerate() {
            for &f in feats {
                if row[self.parent[f] as usize] <= 0.0 {
                    row[f] = 0.0;
                }
            }
            for &p in &self.exclusive_parents[level] {
                if row[p] <= 0.0 {
                    continue;
                }
                scratch.clear();
                scratch.extend(self.children(p).iter().copied().filter(|&c| row[c] > 0.0));
                if scratch.len() > 1 {
                    let keep = scratch[rng.random_range(0..scratch.len())];
                    for &c in scratch.iter() {
                        if c != keep {
                            row[c] = 0.0;
                        }
                    }
                }
            }
        }
    }
}
