//! [`Candidates`]: the short list of tokens that the rank stages work on once a truncation has
//! made one, with their current logits.

use std::cmp::Ordering;

/// `(logit, token)` pairs. Stages that need rank order call [`sort`](Self::sort) (larger logit
/// first, lower id first among equal logits); the flag makes a second call free.
#[derive(Clone, Debug, Default)]
pub(crate) struct Candidates {
    pub(crate) items: Vec<(f32, u32)>,
    sorted: bool,
    probs: Vec<f64>,
}

/// Rank order: larger logit first, lower id first on ties (logits are never NaN here).
pub(crate) fn rank(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

impl Candidates {
    /// Replaces the list; `sorted` says whether it is already in rank order.
    pub(crate) fn start(&mut self, sorted: bool) -> &mut Vec<(f32, u32)> {
        self.items.clear();
        self.sorted = sorted;
        &mut self.items
    }

    /// Marks the list as possibly out of rank order (after a caller pushed into it).
    pub(crate) fn unsorted(&mut self) {
        self.sorted = false;
    }

    /// Number of candidates.
    /// Whether the items are in rank order.
    pub(crate) fn is_sorted(&self) -> bool {
        self.sorted
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Puts the list in rank order.
    pub(crate) fn sort(&mut self) {
        if !self.sorted {
            self.items.sort_unstable_by(rank);
            self.sorted = true;
        }
    }

    /// Keeps the first `n` candidates (in the current order).
    pub(crate) fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
    }

    /// Keeps the candidates for which `keep` holds, in order.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&(f32, u32)) -> bool) {
        self.items.retain(keep);
    }

    /// The largest logit (`-inf` when empty).
    pub(crate) fn max(&self) -> f32 {
        self.items
            .iter()
            .fold(f32::NEG_INFINITY, |m, &(x, _)| if x > m { x } else { m })
    }

    /// The softmax of the current logits, in list order, in f64.
    pub(crate) fn probs(&mut self) -> &[f64] {
        let max = f64::from(self.max());
        self.probs.clear();
        self.probs
            .extend(self.items.iter().map(|&(x, _)| (f64::from(x) - max).exp()));
        let total: f64 = self.probs.iter().sum();
        if total > 0.0 {
            for p in &mut self.probs {
                *p /= total;
            }
        }
        &self.probs
    }

    /// The list and its softmax together (for stages that filter on probabilities).
    pub(crate) fn with_probs(&mut self) -> (&mut Vec<(f32, u32)>, &[f64]) {
        self.probs();
        (&mut self.items, &self.probs)
    }
}

/// Cuts `items` to its top `k` by [`rank`] (plus the ties of the `k`-th value when `ties`), in
/// no particular order, and returns the `k`-th value (`-inf` when nothing was cut). `O(n)`.
pub(crate) fn cut_to_top(items: &mut Vec<(f32, u32)>, k: usize, ties: bool) -> f32 {
    if k == 0 || k >= items.len() {
        return f32::NEG_INFINITY;
    }
    items.select_nth_unstable_by(k - 1, rank);
    let kth = items.get(k - 1).map_or(f32::NEG_INFINITY, |c| c.0);
    let mut kept = k;
    if ties {
        for j in k..items.len() {
            if items[j].0 == kth {
                items.swap(kept, j);
                kept += 1;
            }
        }
    }
    items.truncate(kept);
    kth
}
