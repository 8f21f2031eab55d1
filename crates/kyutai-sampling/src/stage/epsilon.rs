//! Epsilon cutoff: drops the tokens less likely than `ε`.
//!
//! # Definition
//! Keep `pᵢ >= ε` (probabilities renormalised over the current candidates).
//!
//! # Parameters
//! `epsilon_cutoff` in `[0, 1)`; 0 is off. The `min_keep` most likely tokens (and every token tied
//! with the last of them) always survive.
//!
//! # Library rules
//! transformers' `EpsilonLogitsWarper`; llama.cpp and vLLM have no such stage (in the
//! `llama.cpp` convention it runs after XTC, before temperature).
//!
//! # Cost
//! O(candidates) on a candidate list; as the first truncation, every unmasked token becomes one.

use crate::chain::candidates::Candidates;

/// Keeps `p >= cutoff`, plus the `min_keep` best (ties with the last of them included).
pub(crate) fn cut(cands: &mut Candidates, cutoff: f64, min_keep: usize) {
    cands.sort();
    let kth = cands
        .items
        .get(min_keep.clamp(1, cands.len().max(1)) - 1)
        .map_or(f32::INFINITY, |c| c.0);
    let (items, probs) = cands.with_probs();
    let mut i = 0;
    items.retain(|c| {
        let keep = probs.get(i).is_some_and(|&p| p >= cutoff) || c.0 >= kth;
        i += 1;
        keep
    });
}

/// Epsilon cutoff `eps`.
pub(crate) fn apply(cands: &mut Candidates, eps: f32, min_keep: usize) {
    if eps <= 0.0 {
        return;
    }
    cut(cands, f64::from(eps), min_keep);
}
