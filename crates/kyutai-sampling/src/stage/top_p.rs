//! Top-p (nucleus): keeps the smallest set of most likely tokens whose mass reaches `p`.
//!
//! # Definition
//! In rank order, keep a token when the probability mass ranked strictly before it is below `p`
//! (so the token that crosses `p` is kept), renormalised over the current candidates.
//!
//! # Parameters
//! `top_p` in `[0, 1]`; 1 is off; 0 keeps `min_keep` tokens (at least one).
//!
//! # Library rules
//! * transformers removes ascending-sorted tokens whose cumulative mass is `<= 1 - p`, llama.cpp
//!   stops at the first cumulative mass `>= p`: the same set up to f32 rounding. Both keep at
//!   least `min_keep`. Which of several tokens tied at the cut survive is unspecified (each has
//!   the same probability); here the lowest ids.
//! * candle measures `p` against the mass of the whole vocabulary when a top-k precedes it (the
//!   `candle` convention's own stage); everywhere else the mass is renormalised.
//!
//! # Cost
//! Alone (with temperature), rejection sampling against the full distribution with no sort;
//! O(candidates · log) on a candidate list.

use crate::chain::candidates::Candidates;

/// Keeps the nucleus of mass `p` (at least `min_keep` candidates).
pub(crate) fn apply(cands: &mut Candidates, p: f32, min_keep: usize) {
    if p >= 1.0 {
        return;
    }
    cands.sort();
    let p = f64::from(p);
    let (_, probs) = cands.with_probs();
    let mut mass = 0.0f64;
    let mut keep = probs.len();
    for (i, &q) in probs.iter().enumerate() {
        if mass >= p && i >= min_keep {
            keep = i;
            break;
        }
        mass += q;
    }
    cands.truncate(keep.max(1));
}

/// candle's top-k then top-p: among the top `k` candidates (exactly `k`, lowest ids on ties),
/// keep those whose preceding mass is below `p` times the mass of **all** current candidates
/// (not renormalised over the `k`); when the `k` hold less than that, all `k` stay.
pub(crate) fn apply_candle(cands: &mut Candidates, k: usize, p: f32) {
    cands.sort();
    let limit = f64::from(p);
    let (_, probs) = cands.with_probs();
    let mut mass = 0.0f64;
    let mut keep = 0;
    for &q in probs.iter().take(k) {
        if mass >= limit {
            break;
        }
        mass += q;
        keep += 1;
    }
    cands.truncate(keep.max(1));
}
