//! Top-nσ: keeps the logits within `n` standard deviations of the maximum.
//!
//! # Definition
//! With `σ` the population standard deviation of the unmasked logits, keep `ℓᵢ >= ℓ_max − n·σ`.
//! The kept set does not depend on temperature (scaling moves `ℓ_max` and `σ` alike).
//!
//! # Parameters
//! `top_n_sigma`: `<= 0` is off; finite.
//!
//! # Library rules
//! llama.cpp's `top_n_sigma` (masked logits excluded from the mean and σ, as there); absent from
//! transformers and vLLM (in the `hf` convention it runs after eta).
//!
//! # Cost
//! As the first truncation, one extra dense pass for the sums of the logits and their squares;
//! O(candidates) on a list.

use crate::chain::candidates::Candidates;

/// The floor `max − n·σ` from the count, sum and sum of squares of the unmasked logits
/// (accumulated about `max` for accuracy).
pub(crate) fn floor_from_moments(max: f32, n: f32, count: f64, sum: f64, sum_sq: f64) -> f32 {
    if count <= 0.0 {
        return f32::NEG_INFINITY;
    }
    let mean = sum / count;
    let var = (sum_sq / count - mean * mean).max(0.0);
    (f64::from(max) - f64::from(n) * var.sqrt()) as f32
}

/// Top-nσ on a candidate list.
pub(crate) fn apply(cands: &mut Candidates, n: f32) {
    if n <= 0.0 || cands.len() <= 1 {
        return;
    }
    let max = cands.max();
    let count = cands.len() as f64;
    let mean = cands.items.iter().map(|c| f64::from(c.0)).sum::<f64>() / count;
    let var = cands
        .items
        .iter()
        .map(|c| (f64::from(c.0) - mean).powi(2))
        .sum::<f64>()
        / count;
    let floor = (f64::from(max) - f64::from(n) * var.sqrt()) as f32;
    // Candidates are finite (the temperature stage keeps them so), hence so is the floor; a
    // NaN floor would otherwise keep nothing.
    if !floor.is_nan() {
        cands.retain(|c| c.0 >= floor);
    }
}
