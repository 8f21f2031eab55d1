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

use crate::chain::candidates::{cut_to_top, Candidates};
use crate::constraint;

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

/// Starts `cands` from the tokens set in a constraint's `mask` (intersected with the
/// configuration's `allowed` ids when there are some), with their current values read through
/// `value`; masked ones are left out.
///
/// When the chain's first stage is top-k (`top_k`: its `k` and tie rule), tokens that cannot be
/// among its survivors are dropped while gathering: the list is cut to its top `k` (plus ties
/// when they are kept) each time it reaches a few times `k`, and later tokens below the cut's
/// floor are skipped. The top-k stage that follows then sees the same survivors as on the full
/// list. Tokens arrive in increasing id, so with ties broken by lowest id a later token equal
/// to the floor ranks below every survivor.
pub(crate) fn start_masked(
    cands: &mut Candidates,
    mask: &[u32],
    vocab: usize,
    allowed: Option<&[u32]>,
    top_k: Option<(usize, bool)>,
    value: impl Fn(u32) -> f32,
) {
    let items = cands.start(false);
    let mut limit = match top_k {
        Some((k, _)) if k > 0 => k.saturating_mul(4).max(1024),
        _ => usize::MAX,
    };
    let (k, ties) = top_k.unwrap_or((0, false));
    let mut floor = f32::NEG_INFINITY;
    let mut keep = |t: u32, items: &mut Vec<(f32, u32)>| {
        let x = value(t);
        let above = if ties { x >= floor } else { x > floor };
        if x > f32::NEG_INFINITY && above {
            items.push((x, t));
            if items.len() >= limit {
                floor = cut_to_top(items, k, ties);
                // Many ties of the floor stay: room to grow, so cuts stay rare.
                limit = limit.max(items.len().saturating_mul(2));
            }
        }
    };
    match allowed {
        Some(ids) => {
            for &t in ids {
                if constraint::is_set(mask, t) {
                    keep(t, items);
                }
            }
        }
        None => constraint::for_each_set(mask, vocab, |t| keep(t, items)),
    }
    cands.unsorted();
}
