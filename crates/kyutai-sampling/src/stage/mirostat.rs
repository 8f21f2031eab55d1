//! Mirostat v1 and v2: selectors that adapt a truncation to hold the surprise near `τ`.
//!
//! # Definition
//! * v2: drop tokens whose surprise `−log₂ pᵢ` exceeds `μ` (keep at least one), renormalise,
//!   draw, then `μ ← μ − η · (−log₂ p_sel − τ)`.
//! * v1: estimate the Zipf exponent `ŝ` from the top `m = 100` probabilities
//!   (`ŝ = Σ tᵢbᵢ / Σ tᵢ²`, `tᵢ = ln((i+2)/(i+1))`, `bᵢ = ln(pᵢ/pᵢ₊₁)`), set
//!   `k = (ε̂ · 2^μ / (1 − V^(−ε̂)))^(1/ŝ)` with `ε̂ = ŝ − 1` and `V` the vocabulary size, keep the
//!   top `k`, draw, and update `μ` as v2.
//!
//! # Parameters
//! `mirostat`: 1 or 2; `mirostat_tau` (τ) finite and `>= 0`; `mirostat_eta` (η) finite and
//! `>= 0`. `μ` starts at `2τ` and [`reset`](crate::Sampler::reset) restores it.
//!
//! # Library rules
//! llama.cpp's `mirostat` and `mirostat_v2`: they replace the truncation stages (the chain is
//! edits, temperature, mirostat) and keep `μ` across calls; `p_sel` is the selected token's
//! probability after the truncation. llama.cpp skips the penalties when mirostat is on; here the
//! edit stages still run, as configured. Where `k` is not a finite number (degenerate
//! distributions), every candidate is kept. Absent from transformers and vLLM.
//!
//! # Cost
//! v2: O(c) for `c` candidates after a sort; v1: O(c log c).

use crate::chain::candidates::Candidates;

/// The number of top probabilities v1 uses to estimate `ŝ`.
const M: usize = 100;

/// Truncates to mirostat v2's set for the current `mu`.
pub(crate) fn truncate_v2(cands: &mut Candidates, mu: f32) {
    cands.sort();
    let mu = f64::from(mu);
    let (_, probs) = cands.with_probs();
    let keep = probs
        .iter()
        .take_while(|&&p| p > 0.0 && -p.log2() <= mu)
        .count();
    cands.truncate(keep.max(1));
}

/// Truncates to mirostat v1's top `k` for the current `mu` and vocabulary size.
pub(crate) fn truncate_v1(cands: &mut Candidates, mu: f32, vocab: usize) {
    cands.sort();
    let (_, probs) = cands.with_probs();
    let mut sum_ti_bi = 0.0f64;
    let mut sum_ti_sq = 0.0f64;
    for i in 0..(M - 1).min(probs.len().saturating_sub(1)) {
        let t = ((i + 2) as f64 / (i + 1) as f64).ln();
        let b = (probs[i] / probs[i + 1]).ln();
        sum_ti_bi += t * b;
        sum_ti_sq += t * t;
    }
    let s_hat = sum_ti_bi / sum_ti_sq;
    let eps_hat = s_hat - 1.0;
    let k = ((eps_hat * 2f64.powf(f64::from(mu))) / (1.0 - (vocab as f64).powf(-eps_hat)))
        .powf(1.0 / s_hat);
    let k = if k.is_finite() {
        (k as usize).max(1)
    } else {
        cands.len()
    };
    cands.truncate(k);
}

/// `μ` after drawing a token of (renormalised) probability `p`.
pub(crate) fn update(mu: f32, tau: f32, eta: f32, p: f64) -> f32 {
    let surprise = -p.log2();
    (f64::from(mu) - f64::from(eta) * (surprise - f64::from(tau))) as f32
}
