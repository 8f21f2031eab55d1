//! Eta cutoff: an entropy-dependent epsilon cutoff.
//!
//! # Definition
//! With `H` the entropy of the current distribution, `η' = min(η, √η · e^(−H))`; keep
//! `pᵢ >= η'`.
//!
//! # Parameters
//! `eta_cutoff` in `[0, 1)`; 0 is off. `min_keep` as for epsilon.
//!
//! # Library rules
//! transformers' `EtaLogitsWarper`; absent from llama.cpp and vLLM (in the `llama.cpp`
//! convention it runs after epsilon, before temperature).
//!
//! # Cost
//! O(candidates): one softmax for the entropy, then epsilon's cut.

use crate::chain::candidates::Candidates;

/// Eta cutoff `eta`.
pub(crate) fn apply(cands: &mut Candidates, eta: f32, min_keep: usize) {
    if eta <= 0.0 {
        return;
    }
    let entropy: f64 = cands
        .probs()
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.ln())
        .sum();
    let eta = f64::from(eta);
    let cutoff = eta.min(eta.sqrt() * (-entropy).exp());
    super::epsilon::cut(cands, cutoff, min_keep);
}
