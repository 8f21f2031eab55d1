//! Allowed tokens: only the listed tokens can be sampled.
//!
//! # Definition
//! Every token outside the set is masked.
//!
//! # Parameters
//! `allowed_token_ids`: a non-empty list of ids in the vocabulary (checked at sampling).
//!
//! # Library rules
//! vLLM's `allowed_token_ids` (applied first there), transformers'
//! `PrefixConstrainedLogitsProcessor` with a fixed set. Not a sparse edit: the engine starts from
//! the allowed tokens as its candidate list instead of the vocabulary, so a small set costs
//! O(set) plus the validation pass.
//!
//! # Cost
//! O(set) after the dense validation pass.

use crate::chain::candidates::Candidates;

/// Starts `cands` from the allowed tokens (sorted, deduplicated ids) with their current values,
/// read through `value`; masked ones are left out.
pub(crate) fn start(cands: &mut Candidates, allowed: &[u32], value: impl Fn(u32) -> f32) {
    let items = cands.start(false);
    items.extend(
        allowed
            .iter()
            .map(|&t| (value(t), t))
            .filter(|&(x, _)| x > f32::NEG_INFINITY),
    );
    cands.unsorted();
}
