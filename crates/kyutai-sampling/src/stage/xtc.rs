//! XTC (exclude top choices): sometimes removes the most likely tokens.
//!
//! # Definition
//! With probability `xtc_probability` per call, among the tokens with `pᵢ >= threshold` remove
//! all but the least likely one. Nothing happens unless at least two tokens pass the threshold.
//!
//! # Parameters
//! `xtc_probability` in `[0, 1]` (0 is off); `xtc_threshold` in `[0, 1]`, and a threshold above
//! 0.5 can never be passed by two tokens, so it is a no-op.
//!
//! # Library rules
//! llama.cpp's `xtc`: the coin is drawn from the chain's stream on every call where the stage
//! can act (here after checking that two candidates remain), and `min_keep` is all-or-nothing:
//! when removing would leave fewer than `min_keep` tokens, nothing is removed. Which of several
//! tokens tied at the threshold is "least likely" is unspecified; here the highest id. Absent
//! from transformers and vLLM (in the `hf` convention it runs last).
//!
//! # Cost
//! O(c log c) for `c` candidates, plus one 64-bit word of the random stream per call.

use rand::RngCore;

use crate::chain::candidates::Candidates;

/// XTC with the given parameters, drawing its coin from `rng`.
pub(crate) fn apply(
    cands: &mut Candidates,
    probability: f32,
    threshold: f32,
    min_keep: usize,
    rng: &mut impl RngCore,
) {
    if probability <= 0.0 || threshold > 0.5 || cands.len() < 2 {
        return;
    }
    let chance = crate::native::unit(rng);
    if chance >= f64::from(probability) {
        return;
    }
    cands.sort();
    let threshold = f64::from(threshold);
    let (_, probs) = cands.with_probs();
    let above = probs.iter().take_while(|&&p| p >= threshold).count();
    // Keep the last of the `above` tokens and everything after it.
    let remove = above.saturating_sub(1);
    if remove > 0 && cands.len() - remove >= min_keep {
        cands.items.drain(..remove);
    }
}
