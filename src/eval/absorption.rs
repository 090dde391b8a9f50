//! Feature absorption against a planted hierarchy (`eval --truth` on a `synth` world made
//! with `--hierarchy`), in both directions: `absorption`, how often a child feature's
//! latent stays silent while its parent's latent fires in its place (the measure as the
//! Matryoshka issue words it), and `absorption_parent`, Chanin et al. 2024's failure, which
//! Matryoshka SAEs are meant to cure (the child's latent fires and the parent's goes
//! quiet). Kept apart from `truth.rs`: it needs the one-to-one matching and the hierarchy,
//! the SAELens metrics need neither.
//!
//! Definition. Match latents to true features one-to-one by the MCC's assignment. For every
//! (parent p, child c) edge of the truth's forest (`parent[c] = p`) whose both features are
//! matched, to latents L_p and L_c, count over the evaluated rows where c truly fires
//! (true code > 0) and L_p fires (code != 0): `eligible`, and among those the rows where
//! L_c is silent: `absorbed`. absorption = the mean over edges with eligible > 0 of
//! absorbed / eligible (0 = every child latent fires with its parent's, 1 = the parent's
//! latent always fires in the child's place).
//!
//! The other direction, Chanin et al.'s own (the child's latent takes the parent's
//! direction and the parent's latent goes quiet), is `absorption_parent`: over the rows
//! where c truly fires (so p does too) and L_c fires, the fraction where L_p is silent,
//! averaged over edges the same way.

use serde::Serialize;

/// The absorption counts, row by row.
#[derive(Clone, Debug)]
pub struct AbsorptionCounts {
    /// (child feature, parent latent, child latent) per matched edge.
    edges: Vec<(u32, u32, u32)>,
    eligible: Vec<u64>,
    absorbed: Vec<u64>,
    /// The other direction: rows with c on and L_c firing, and of those L_p silent.
    eligible_parent: Vec<u64>,
    absorbed_parent: Vec<u64>,
    /// Scratch: true features active / latents fired in the current row.
    on: Vec<bool>,
    fired: Vec<bool>,
}

/// The absorption measure (see the module doc).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Absorption {
    /// Mean over the edges with eligible rows of absorbed / eligible.
    pub absorption: f64,
    /// Edges that had eligible rows (the mean's count).
    pub absorption_edges: usize,
    /// Eligible (child fires, parent latent fires) rows, summed over those edges.
    pub absorption_rows: u64,
    /// The other direction (parent's latent silent while the child's fires), the same way.
    pub absorption_parent: f64,
    pub absorption_parent_edges: usize,
}

impl AbsorptionCounts {
    /// `parent`: the truth's parent of each true feature (-1: none); `pairs`: the
    /// matching's (latent, feature) pairs; `n`: latents. None when the truth has no edges.
    pub fn new(parent: &[i32], pairs: &[(usize, usize)], n: usize) -> Option<AbsorptionCounts> {
        // A truth without a hierarchy has no parent list at all.
        let mut latent_of = vec![None; parent.len()];
        for &(i, j) in pairs {
            if let Some(l) = latent_of.get_mut(j) {
                *l = Some(i as u32);
            }
        }
        let edges: Vec<(u32, u32, u32)> = parent
            .iter()
            .enumerate()
            .filter(|&(_, &p)| p >= 0)
            .filter_map(|(c, &p)| {
                let lp = latent_of[p as usize]?;
                let lc = latent_of[c]?;
                Some((c as u32, lp, lc))
            })
            .collect();
        if edges.is_empty() {
            return None;
        }
        let e = edges.len();
        Some(AbsorptionCounts {
            edges,
            eligible: vec![0; e],
            absorbed: vec![0; e],
            eligible_parent: vec![0; e],
            absorbed_parent: vec![0; e],
            on: vec![false; parent.len()],
            fired: vec![false; n],
        })
    }

    /// One row: the latents that fired (code != 0) and the true features active (> 0).
    pub fn add_row(&mut self, fired: &[u32], active: &[u32]) {
        for &j in active {
            self.on[j as usize] = true;
        }
        for &i in fired {
            self.fired[i as usize] = true;
        }
        for (e, &(c, lp, lc)) in self.edges.iter().enumerate() {
            if self.on[c as usize] && self.fired[lp as usize] {
                self.eligible[e] += 1;
                if !self.fired[lc as usize] {
                    self.absorbed[e] += 1;
                }
            }
            if self.on[c as usize] && self.fired[lc as usize] {
                self.eligible_parent[e] += 1;
                if !self.fired[lp as usize] {
                    self.absorbed_parent[e] += 1;
                }
            }
        }
        for &j in active {
            self.on[j as usize] = false;
        }
        for &i in fired {
            self.fired[i as usize] = false;
        }
    }

    pub fn finish(&self) -> Absorption {
        let (a, edges, rows) = mean_rate(&self.eligible, &self.absorbed);
        let (ap, edges_p, _) = mean_rate(&self.eligible_parent, &self.absorbed_parent);
        Absorption {
            absorption: a,
            absorption_edges: edges,
            absorption_rows: rows,
            absorption_parent: ap,
            absorption_parent_edges: edges_p,
        }
    }
}

/// Mean over the edges with eligible rows of absorbed / eligible; those edges; their rows.
fn mean_rate(eligible: &[u64], absorbed: &[u64]) -> (f64, usize, u64) {
    let (mut sum, mut edges, mut rows) = (0.0f64, 0usize, 0u64);
    for (&el, &ab) in eligible.iter().zip(absorbed) {
        if el > 0 {
            sum += ab as f64 / el as f64;
            edges += 1;
            rows += el;
        }
    }
    let mean = if edges > 0 { sum / edges as f64 } else { 0.0 };
    (mean, edges, rows)
}
