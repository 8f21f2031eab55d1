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
    let p = f64::from(p);
    let keep = match fast_cut(scratch, p, min_keep, hf) {
        Some(keep) => keep,
        None => sorted_cut(scratch, p, min_keep, hf),
    };
    let items = &mut cands.items;
    items.clear();
    items.extend(scratch.iter().take(keep.max(1)).map(|e| (e.2, e.3)));
    cands.unsorted();
}

/// Score order: smaller score first, lower id first among equal scores.
fn order(a: &(f64, f64, f32, u32), b: &(f64, f64, f32, u32)) -> Ordering {
    a.0.partial_cmp(&b.0)
        .unwrap_or(Ordering::Equal)
        .then(a.3.cmp(&b.3))
}

/// Whether a cumulative mass ends the typical set: `>= p` (transformers) or `> p` (llama.cpp).
fn reached(mass: f64, p: f64, hf: bool) -> bool {
    if hf {
        mass >= p
    } else {
        mass > p
    }
}

/// The typical cut by a weighted quickselect, without sorting the kept set: moves the kept
/// entries to the front of `scratch` and returns their number, or `None` for the rare cases
/// (`min_keep` beyond the cut's neighbourhood) that the full sort handles.
fn fast_cut(
    scratch: &mut [(f64, f64, f32, u32)],
    p: f64,
    min_keep: usize,
    hf: bool,
) -> Option<usize> {
    let len = scratch.len();
    // Invariant: scratch[..lo] come first in score order and hold `before`; the cut is in
    // lo..hi (or the set is everything when hi == len and p is never reached).
    let (mut lo, mut hi) = (0usize, len);
    let mut before = 0.0f64;
    while hi - lo > 64 {
        let mid = lo + (hi - lo) / 2;
        let part = scratch.get_mut(lo..hi)?;
        part.select_nth_unstable_by(mid - lo, order);
        let left = before + part[..mid - lo].iter().map(|e| e.1).sum::<f64>();
        if reached(left, p, hf) {
            hi = mid;
        } else {
            before = left;
            lo = mid;
        }
    }
    if min_keep > hi {
        return None;
    }
    let window = scratch.get_mut(lo..hi)?;
    window.sort_unstable_by(order);
    let mut mass = before;
    let mut cut = None;
    for (i, entry) in window.iter().enumerate() {
        mass += entry.1;
        // transformers cuts where p is reached and applies `min_keep` after the ties;
        // llama.cpp cuts at the first index past both.
        if reached(mass, p, hf) && (hf || lo + i + 1 >= min_keep) {
            cut = Some(lo + i);
            break;
        }
    }
    let cut = match cut {
        Some(cut) => cut,
        // Never reached: everything stays (only possible when the window ends the list).
        None if hi == len => return Some(len),
        None => return None,
    };
    if !hf {
        return Some(cut + 1);
    }
    // transformers keeps every token whose score ties with the cut's: those in the sorted
    // window follow it, the others are gathered from the unsorted rest.
    let last = scratch.get(cut)?.0;
    let mut end = cut + 1;
    while scratch.get(end).is_some_and(|e| e.0 == last) && end < hi {
        end += 1;
    }
    for j in hi..len {
        if scratch.get(j).is_some_and(|e| e.0 == last) {
            scratch.swap(end, j);
            end += 1;
        }
    }
    // More than the cut and its ties: the next tokens in score order are not placed; sort.
    (end >= min_keep).then_some(end)
}

/// The typical cut on the fully sorted `scratch` (the reference the fast path agrees with).
fn sorted_cut(scratch: &mut [(f64, f64, f32, u32)], p: f64, min_keep: usize, hf: bool) -> usize {
    scratch.sort_unstable_by(order);
    let mut mass = 0.0f64;
    if hf {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::test_support::SplitMix;

    /// The quickselect cut keeps the same set as the cut on the fully sorted list.
    #[test]
    fn fast_cut_keeps_the_sorted_cut_set() {
        let mut rng = SplitMix(5);
        let mut fast_used = 0;
        for case in 0..3000 {
            let n = 1 + rng.below(700) as usize;
            // Coarse scores and probabilities: many ties, sums near p.
            let mut entries: Vec<(f64, f64, f32, u32)> = (0..n)
                .map(|t| {
                    let score = rng.below(40) as f64 * 0.25;
                    let prob = (1 + rng.below(9)) as f64;
                    (score, prob, 0.0, t as u32)
                })
                .collect();
            let total: f64 = entries.iter().map(|e| e.1).sum();
            entries.iter_mut().for_each(|e| e.1 /= total);
            let p = rng.below(101) as f64 / 100.0;
            let min_keep = [1, 1, 1, 2, 5, 40][rng.below(6) as usize];
            let hf = case % 2 == 0;
            let mut a = entries.clone();
            let mut b = entries;
            let want = sorted_cut(&mut b, p, min_keep, hf).min(n);
            // A cumulative mass within rounding of p may be cut either way: skip such cases.
            let mut mass = 0.0;
            if b.iter().any(|e| {
                mass += e.1;
                (mass - p).abs() < 1e-9
            }) {
                continue;
            }
            let mut want: Vec<u32> = b[..want].iter().map(|e| e.3).collect();
            want.sort_unstable();
            if let Some(keep) = fast_cut(&mut a, p, min_keep, hf) {
                fast_used += 1;
                let mut got: Vec<u32> = a[..keep.min(n)].iter().map(|e| e.3).collect();
                got.sort_unstable();
                assert_eq!(
                    got, want,
                    "case {case}: n {n} p {p} min_keep {min_keep} hf {hf}"
                );
            }
        }
        assert!(fast_used > 2000, "the fast path ran {fast_used} times");
    }
}
