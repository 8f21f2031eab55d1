//! Selectors: greedy and multinomial draws over the candidates (mirostat has its own file).
//!
//! # Definition
//! * greedy: the most likely candidate;
//! * multinomial: candidate `i` with probability `pᵢ` (inverse CDF over the candidates in list
//!   order, f64 accumulation).
//!
//! # Parameters
//! None: greedy when `do_sample` is false, multinomial otherwise.
//!
//! # Library rules
//! Greedy takes the **lowest id** among tied maxima (candle's and transformers' `argmax`;
//! llama.cpp takes the first in its candidate array). Multinomial draws the same law as
//! `torch.multinomial`, llama.cpp's `dist` and candle's `WeightedIndex`, from this crate's own
//! portable stream (one 64-bit word per draw). Gumbel-max, which draws the same law, is the
//! native engine's (`Sampling::GumbelSoftmax`).
//!
//! # Cost
//! O(candidates); without any truncation, the native engine's block-sum draw over the view.

use rand::RngCore;

use crate::chain::candidates::Candidates;

/// The best-ranked candidate and its index in the list.
pub(crate) fn greedy(cands: &mut Candidates) -> Option<usize> {
    cands.sort();
    (cands.len() > 0).then_some(0)
}

/// Index into the list of the candidate drawn with `u` uniform in `[0, 1)` from `probs`
/// (summing to 1); never a zero-probability candidate.
pub(crate) fn draw(probs: &[f64], u: f64) -> Option<usize> {
    let total: f64 = probs.iter().sum();
    let target = u * total;
    let mut acc = 0.0f64;
    let mut last = None;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p;
            last = Some(i);
            if acc > target {
                break;
            }
        }
    }
    last
}

/// A multinomial draw over the candidates; returns the index in the list and its probability
/// (0 when nothing can be drawn).
pub(crate) fn multinomial(cands: &mut Candidates, rng: &mut impl RngCore) -> (Option<usize>, f64) {
    let u = crate::native::unit(rng);
    let probs = cands.probs();
    let index = draw(probs, u);
    (
        index,
        index.and_then(|i| probs.get(i).copied()).unwrap_or(0.0),
    )
}
