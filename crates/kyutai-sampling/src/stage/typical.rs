//! Locally typical sampling: keeps the tokens whose surprise is closest to the entropy.
//!
//! # Definition
//! With `H = −Σ pᵢ ln pᵢ`, rank tokens by `sᵢ = |−ln pᵢ − H|` ascending and keep the shortest
//! prefix of that order whose mass reaches `p`.
//!
//! # Parameters
//! `typical_p` in `[0, 1]`; 1 is off. At least `min_keep` tokens survive.
//!
//! # Library rules
//! * transformers stops at the first cumulative mass `>= p` and keeps **every token whose score
//!   ties with the last kept one**.
//! * llama.cpp stops at the first cumulative mass **`> p`** and keeps exactly that prefix.
//! * llama.cpp computes the entropy over its whole candidate array, masked (`-inf`) entries
//!   included, which turns it into NaN: a bug not copied here, where masked tokens are never
//!   candidates.
//! * It can drop the most likely token.
//!
//! # Cost
//! O(c log c) for `c` candidates (a softmax and a sort by score); as the first truncation every
//! unmasked token is a candidate.

use std::cmp::Ordering;

use crate::chain::candidates::Candidates;

/// Locally typical filter of mass `p`; `hf` selects transformers' rule, otherwise llama.cpp's.
pub(crate) fn apply(
    cands: &mut Candidates,
    p: f32,
    min_keep: usize,
    hf: bool,
    scratch: &mut Vec<(f64, f64, f32, u32)>,
) {
    if p >= 1.0 || cands.len() <= 1 {
        return;
    }
    cands.sort();
    let (items, probs) = cands.with_probs();
    let entropy: f64 = probs
        .iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| -q * q.ln())
        .sum();
    scratch.clear();
    scratch.extend(items.iter().zip(probs).map(|(&(x, t), &q)| (0.0, q, x, t)));
    keep(cands, p, min_keep, hf, scratch, entropy);
}

/// The same filter on a candidate list that holds only part of the distribution: `log_z` and
/// `entropy` are those of the whole distribution, whose logits (shifted so that the maximum is 0)
/// the candidates hold (the maximum included). The list must contain every token whose score is at most the kept
/// set's largest score (the engine collects a Chebyshev interval around the mean that does).
pub(crate) fn apply_partial(
    cands: &mut Candidates,
    p: f32,
    min_keep: usize,
    hf: bool,
    scratch: &mut Vec<(f64, f64, f32, u32)>,
    log_z: f64,
    entropy: f64,
) {
    cands.sort();
    // The list holds the maximum: shifting by it gives y whatever scale the logits are in.
    let max = f64::from(cands.max());
    scratch.clear();
    scratch.extend(
        cands
            .items
            .iter()
            .map(|&(x, t)| (0.0, (f64::from(x) - max - log_z).exp(), x, t)),
    );
    keep(cands, p, min_keep, hf, scratch, entropy);
}

/// Scores the `(_, probability, logit, token)` entries of `scratch`, orders them by score and
/// keeps the typical prefix in `cands`.
fn keep(
    cands: &mut Candidates,
    p: f32,
    min_keep: usize,
    hf: bool,
    scratch: &mut [(f64, f64, f32, u32)],
    entropy: f64,
) {
    // A zero probability has an infinite surprise.
    for entry in scratch.iter_mut() {
        let surprise = if entry.1 > 0.0 {
            -entry.1.ln()
        } else {
            f64::INFINITY
        };
        entry.0 = (surprise - entropy).abs();
    }
    scratch.sort_unstable_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(Ordering::Equal)
            .then(a.3.cmp(&b.3))
    });
    let p = f64::from(p);
    let mut mass = 0.0f64;
    let keep = if hf {
        // The cut is the first token at which the cumulative mass reaches p (the last one if it
        // never does); every token whose score ties with it stays, and then at least `min_keep`.
        let mut cut = scratch.len().saturating_sub(1);
        for (i, entry) in scratch.iter().enumerate() {
            mass += entry.1;
            if mass >= p {
                cut = i;
                break;
            }
        }
        let last = scratch.get(cut).map_or(0.0, |e| e.0);
        let rest = scratch.get(cut + 1..).unwrap_or_default();
        let ties = cut + 1 + rest.iter().take_while(|e| e.0 == last).count();
        ties.max(min_keep)
    } else {
        // The first token at which the cumulative mass exceeds p, once `min_keep` are in.
        let mut keep = scratch.len();
        for (i, entry) in scratch.iter().enumerate() {
            mass += entry.1;
            if mass > p && i + 1 >= min_keep {
                keep = i + 1;
                break;
            }
        }
        keep
    };
    let items = &mut cands.items;
    items.clear();
    items.extend(scratch.iter().take(keep.max(1)).map(|e| (e.2, e.3)));
    cands.unsorted();
}
