//! Half-space trees (Tan, Ting and Liu, 2011): the online multivariate model. A forest of random,
//! fixed-shape trees over the unit cube; each node counts how many of the last `WINDOW` points fell in
//! its half-space (the reference mass, `r`) while the current window fills (`l`). A point that falls in
//! regions the reference window rarely visited scores a low mass: anomalous. No training run, fixed
//! memory (`TREES * NODES` nodes), learning as it goes.

use super::sketch::mix;
use serde::{Deserialize, Serialize};

/// Number of features of a point; each in `[0, 1]`.
pub(crate) const DIMS: usize = 8;
const TREES: usize = 20;
const DEPTH: usize = 12;
const NODES: usize = (1 << (DEPTH + 1)) - 1;
/// Points per window: the reference mass is the last full window.
const WINDOW: u32 = 256;
/// A walk stops at a node whose reference mass is below this (a sparse region).
const SIZE_LIMIT: u32 = WINDOW / 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Forest {
    /// Per node (tree-major): the split dimension and value.
    dim: Vec<u8>,
    split: Vec<f32>,
    /// Reference and latest masses per node.
    r: Vec<u32>,
    l: Vec<u32>,
    /// Points in the window being filled, and windows completed.
    filled: u32,
    windows: u32,
}

impl Forest {
    pub(crate) fn new(seed: u64) -> Forest {
        let mut rng = seed;
        let mut next = move || {
            rng = mix(rng);
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut dim = vec![0u8; TREES * NODES];
        let mut split = vec![0f32; TREES * NODES];
        for t in 0..TREES {
            // A random work range per dimension that covers [0, 1] (the paper's perturbed cube, half as
            // wide: the features are already scaled into [0, 1], so deeper splits are worth more).
            let mut lo = [0f64; DIMS];
            let mut hi = [0f64; DIMS];
            for q in 0..DIMS {
                let s = next();
                let w = s.max(1.0 - s);
                lo[q] = s - w;
                hi[q] = s + w;
            }
            build(t * NODES, 0, 0, &mut lo, &mut hi, &mut dim, &mut split, &mut next);
        }
        Forest { dim, split, r: vec![0; TREES * NODES], l: vec![0; TREES * NODES], filled: 0, windows: 0 }
    }

    /// Whether a reference window exists (the model scores only then).
    pub(crate) fn ready(&self) -> bool {
        self.windows >= 2
    }

    /// The normalised mass of `x`: the median over the trees of the depth-scaled reference mass of the
    /// node where its walk stops, over the window size. About 1 in the bulk of the reference window,
    /// near 0 where it was empty. Low is anomalous. The median, not the mean: a tree that never splits
    /// on the dimension where a point is odd says nothing about it, and should not outvote the others.
    pub(crate) fn mass(&self, x: &[f64; DIMS]) -> f64 {
        let mut per_tree = [0f64; TREES];
        for (t, m) in per_tree.iter_mut().enumerate() {
            let base = t * NODES;
            let mut k = 0usize;
            let mut depth = 0usize;
            loop {
                let r = self.r.get(base + k).copied().unwrap_or(0);
                if r < SIZE_LIMIT || depth == DEPTH {
                    *m = f64::from(r) * (1u64 << depth) as f64;
                    break;
                }
                k = self.child(base, k, x);
                depth += 1;
            }
        }
        per_tree.sort_by(f64::total_cmp);
        (per_tree[TREES / 2 - 1] + per_tree[TREES / 2]) / 2.0 / f64::from(WINDOW)
    }

    pub(crate) fn update(&mut self, x: &[f64; DIMS]) {
        for t in 0..TREES {
            let base = t * NODES;
            let mut k = 0usize;
            for depth in 0..=DEPTH {
                if let Some(l) = self.l.get_mut(base + k) {
                    *l += 1;
                }
                if depth < DEPTH {
                    k = self.child(base, k, x);
                }
            }
        }
        self.filled += 1;
        if self.filled >= WINDOW {
            std::mem::swap(&mut self.r, &mut self.l);
            self.l.iter_mut().for_each(|m| *m = 0);
            self.filled = 0;
            self.windows = self.windows.saturating_add(1);
        }
    }

    fn child(&self, base: usize, k: usize, x: &[f64; DIMS]) -> usize {
        let q = usize::from(self.dim.get(base + k).copied().unwrap_or(0)) % DIMS;
        let split = f64::from(self.split.get(base + k).copied().unwrap_or(0.5));
        if x[q] < split {
            2 * k + 1
        } else {
            2 * k + 2
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.dim.capacity() + self.split.capacity() * 4 + (self.r.capacity() + self.l.capacity()) * 4
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    base: usize,
    k: usize,
    depth: usize,
    lo: &mut [f64; DIMS],
    hi: &mut [f64; DIMS],
    dim: &mut [u8],
    split: &mut [f32],
    next: &mut impl FnMut() -> f64,
) {
    if depth == DEPTH {
        return;
    }
    let q = ((next() * DIMS as f64) as usize).min(DIMS - 1);
    let mid = (lo[q] + hi[q]) / 2.0;
    if let (Some(d), Some(s)) = (dim.get_mut(base + k), split.get_mut(base + k)) {
        *d = q as u8;
        *s = mid as f32;
    }
    let old_hi = hi[q];
    hi[q] = mid;
    build(base, 2 * k + 1, depth + 1, lo, hi, dim, split, next);
    hi[q] = old_hi;
    let old_lo = lo[q];
    lo[q] = mid;
    build(base, 2 * k + 2, depth + 1, lo, hi, dim, split, next);
    lo[q] = old_lo;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_have_low_mass() {
        let mut f = Forest::new(7);
        let mut rng = 1u64;
        let mut point = || {
            let mut x = [0.0; DIMS];
            for v in &mut x {
                rng = mix(rng);
                *v = 0.2 + 0.1 * ((rng >> 11) as f64 / (1u64 << 53) as f64);
            }
            x
        };
        for _ in 0..(3 * WINDOW) {
            let x = point();
            f.update(&x);
        }
        assert!(f.ready());
        let normal: f64 = (0..50).map(|_| f.mass(&point())).sum::<f64>() / 50.0;
        let outlier = f.mass(&[0.9; DIMS]);
        assert!(normal > 0.5, "{normal}");
        assert!(outlier < 0.05, "{outlier}");
    }
}
