//! Top-k: keeps the `k` most likely tokens.
//!
//! # Definition
//! Keep the candidates whose logit is among the `k` largest.
//!
//! # Parameters
//! `top_k`: 0 is off; a `k` at or above the number of candidates keeps them all.
//!
//! # Library rules
//! * transformers keeps **every token tied with the k-th** (`scores < kth` are removed) and
//!   raises `k` to `min_tokens_to_keep`.
//! * llama.cpp (and candle) keep **exactly k**; ties at the k-th value go to the lowest ids here
//!   (llama.cpp leaves the choice to its sort). llama.cpp does not apply `min_keep` to top-k.
//!
//! # Cost
//! As the first truncation, a pass that records the maximum of each group of 64 tokens, then a
//! threshold search through the groups that can hold a top-k logit; O(candidates · log) after.

use crate::chain::candidates::{cut_to_top, Candidates};

/// Keeps the top `k` candidates, and with `ties` every candidate equal to the k-th as well.
pub(crate) fn apply(cands: &mut Candidates, k: usize, ties: bool) {
    if k == 0 || k >= cands.len() {
        return;
    }
    if !cands.is_sorted() && cands.len() > 2 * k {
        // Cut in O(n) first: only the survivors are sorted.
        cut_to_top(&mut cands.items, k, ties);
    }
    cands.sort();
    let kth = cands.items.get(k - 1).map_or(f32::NEG_INFINITY, |c| c.0);
    let keep = if ties {
        k + cands.items[k..].iter().take_while(|c| c.0 == kth).count()
    } else {
        k
    };
    cands.truncate(keep);
}
