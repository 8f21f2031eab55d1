//! Frequency and presence penalties (OpenAI): subtract per-occurrence and per-presence amounts.
//!
//! # Definition
//! `ℓᵢ ← ℓᵢ − cᵢ · α_freq − [cᵢ > 0] · α_pres`, with `cᵢ` the number of occurrences of token `i`
//! in the window.
//!
//! # Parameters
//! `frequency_penalty`, `presence_penalty`: in `[-1e6, 1e6]` ([`limits`](crate::limits);
//! negative values encourage repeats); 0 is off. A result past f32's range stops at
//! `±f32::MAX`. The window is `repeat_last_n`, shared with the repetition penalty.
//!
//! # Library rules
//! llama.cpp counts over its last `penalty_last_n` accepted tokens and applies these after the
//! repetition penalty in the same stage (the order here too); vLLM and mistral.rs count only
//! generated tokens (pass only those as history, or set the window, to reproduce them);
//! transformers has neither.
//!
//! # Cost
//! O(window).

use crate::chain::edits::EditCx;

/// Applies the two penalties over the window.
pub(crate) fn apply(
    history: &[u32],
    last_n: Option<usize>,
    frequency: f32,
    presence: f32,
    cx: &mut EditCx<'_>,
) {
    if frequency == 0.0 && presence == 0.0 {
        return;
    }
    let window = super::repetition::window(history, last_n);
    cx.counts(window, |cx, token, count| {
        cx.add(token, -(count as f32 * frequency + presence));
    });
}
