//! Min-p: keeps the tokens at least `p` times as likely as the most likely one.
//!
//! # Definition
//! Keep `pᵢ >= p · p_max`, i.e. `ℓᵢ >= ℓ_max + ln p`: a floor in logit space, needing neither a
//! softmax nor a sort.
//!
//! # Parameters
//! `min_p` in `[0, 1]`; 0 is off. At least `min_keep` tokens survive (the most likely ones).
//!
//! # Library rules
//! transformers and llama.cpp agree on the rule; they differ in where it runs: after temperature
//! in transformers (and vLLM), before it in llama.cpp (temperature is last there), which changes
//! the kept set.
//!
//! # Cost
//! As the first truncation, a threshold computed after the dense maximum pass, then a gather of
//! the groups whose maximum reaches it; O(candidates) on a list.

use crate::chain::candidates::Candidates;

/// The logit floor for min-p `p` given the current maximum logit and the scale applied to logits
/// (`1 / T` for a temperature not yet folded into them).
pub(crate) fn floor(max: f32, p: f32, scale: f64) -> f32 {
    (f64::from(max) + f64::from(p).ln() / scale) as f32
}

/// Keeps the candidates above the min-p floor, at least `min_keep` of them.
pub(crate) fn apply(cands: &mut Candidates, p: f32, min_keep: usize) {
    if p <= 0.0 || cands.len() <= 1 {
        return;
    }
    let floor = floor(cands.max(), p, 1.0);
    let kept = cands.items.iter().filter(|c| c.0 >= floor).count();
    if kept >= min_keep {
        cands.retain(|c| c.0 >= floor);
    } else {
        cands.sort();
        cands.truncate(min_keep);
    }
}
