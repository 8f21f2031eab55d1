//! Dynamic temperature (llama.cpp `temp_ext`): a temperature chosen from the entropy.
//!
//! # Definition
//! With `N` candidates, `H` the entropy of their distribution, `T_min = max(0, T − δ)` and
//! `T_max = T + δ`: `T' = T_min + (T_max − T_min) · (H / ln N)^κ`, then `ℓᵢ ← ℓᵢ / T'`.
//!
//! # Parameters
//! `dynatemp_range` (δ) in `[0, 1e6]`, 0 is off (a plain temperature); `dynatemp_exponent` (κ) finite
//! and `>= 0`; `temperature` (T) `>= 0`.
//!
//! # Library rules
//! llama.cpp counts masked entries of its candidate array in `N` and its `min_keep`; here only
//! unmasked candidates count. When `T'` is 0 (a zero-entropy distribution with `T <= δ`) the
//! most likely candidate is kept, as llama.cpp's `T <= 0`. A single candidate is left as is.
//! Absent from transformers (in the `hf` convention it replaces the temperature stage).
//!
//! # Cost
//! O(candidates): a softmax for the entropy, then a scale. As the first truncation every
//! unmasked token is a candidate.

use crate::chain::candidates::Candidates;

/// Dynamic temperature around `t` with range `delta` and exponent `exponent`.
pub(crate) fn apply(cands: &mut Candidates, t: f32, delta: f32, exponent: f32) {
    if cands.len() <= 1 {
        return;
    }
    let min_t = (f64::from(t) - f64::from(delta)).max(0.0);
    let max_t = f64::from(t) + f64::from(delta);
    let max_entropy = (cands.len() as f64).ln();
    let entropy: f64 = cands
        .probs()
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| -p * p.ln())
        .sum();
    let normalised = (entropy / max_entropy).clamp(0.0, 1.0);
    let dyn_t = min_t + (max_t - min_t) * normalised.powf(f64::from(exponent));
    super::temperature::apply(cands, dyn_t as f32);
}
