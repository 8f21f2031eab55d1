//! Temperature: divides the logits by `T`.
//!
//! # Definition
//! `ℓᵢ ← ℓᵢ / T`: `T < 1` sharpens the distribution, `T > 1` flattens it.
//!
//! # Parameters
//! `temperature`: 0, or in `[1e-7, 1e6]` ([`limits`](crate::limits)). `0` is only valid where
//! the convention gives it a meaning (llama.cpp: keep only the most likely token; HF and candle
//! need `do_sample: false` instead). A scaled gap past f32's range stops at `-f32::MAX`.
//!
//! # Library rules
//! * transformers applies it first, before every truncation; candle inside each strategy, also
//!   first; llama.cpp last, so its top-k, top-p and min-p see the `T = 1` distribution.
//! * llama.cpp: `T <= 0` keeps the most likely remaining candidate and masks the rest (ties: the
//!   lowest id here, the first in its candidate array there).
//!
//! # Cost
//! Folded into the dense pass's scale before the first truncation, O(candidates) after it.

use crate::chain::candidates::Candidates;

/// Applies temperature `t` to the candidates: `t > 0` scales (relative to the maximum, so that
/// no logit overflows), `t <= 0` keeps the best-ranked candidate only.
pub(crate) fn apply(cands: &mut Candidates, t: f32) {
    if t > 0.0 {
        let max = cands.max();
        let factor = 1.0 / f64::from(t);
        for item in &mut cands.items {
            // A scaled gap past f32's range stops at -f32::MAX: such a candidate's weight is 0
            // either way, and it stays a finite candidate for the later stages (top-nσ's
            // moments, min_keep).
            let scaled = ((f64::from(item.0) - f64::from(max)) * factor) as f32;
            item.0 = scaled.max(-f32::MAX);
        }
    } else {
        cands.sort();
        cands.truncate(1);
    }
}
