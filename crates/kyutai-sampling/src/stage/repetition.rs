//! Repetition penalty (CTRL): makes every token of the recent history less likely.
//!
//! # Definition
//! For each distinct token of the window, once: `ℓ ← ℓ / θ` when `ℓ > 0`, `ℓ ← ℓ · θ` otherwise.
//! `θ > 1` discourages repeats, `θ < 1` encourages them.
//!
//! # Parameters
//! `repetition_penalty` (θ): in `[1e-6, 1e6]` ([`limits`](crate::limits)); 1 is off. A
//! penalised logit that would leave `f32`'s range stops at `±f32::MAX`. `repeat_last_n`: the window, in tokens of
//! history (`None`: the whole history; 0: off).
//!
//! # Library rules
//! transformers (`l < 0 → l·θ`), llama.cpp (`l <= 0 → l·θ`) and candle (`l >= 0 → l/θ`) agree
//! on every value (at 0 both branches give 0). They differ in the window: transformers
//! penalises the whole `input_ids` (prompt included), llama.cpp the last `penalty_last_n` (64)
//! accepted tokens, candle whatever slice the caller passes. History ids outside the vocabulary
//! are skipped. A masked token stays masked.
//!
//! # Cost
//! O(window), no sort: distinct ids are found with a bitset of the vocabulary.

use crate::chain::edits::EditCx;

/// The window of `history` that the penalties look at.
pub(crate) fn window(history: &[u32], last_n: Option<usize>) -> &[u32] {
    match last_n {
        None => history,
        Some(n) => &history[history.len().saturating_sub(n)..],
    }
}

/// The CTRL rule for one logit; a result past `f32`'s range stops at `±f32::MAX`.
#[inline]
pub(crate) fn penalise(x: f32, penalty: f32) -> f32 {
    let y = if x > 0.0 { x / penalty } else { x * penalty };
    crate::limits::saturate(y, x)
}

/// Applies penalty `penalty` to the distinct tokens of the window.
pub(crate) fn apply(history: &[u32], last_n: Option<usize>, penalty: f32, cx: &mut EditCx<'_>) {
    if penalty == 1.0 {
        return;
    }
    cx.map_distinct(window(history, last_n), |x| penalise(x, penalty));
}
