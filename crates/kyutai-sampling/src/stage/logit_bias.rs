//! Logit bias: adds a value to single tokens' logits.
//!
//! # Definition
//! `ℓᵢ ← ℓᵢ + bᵢ` for each listed token; a bias at or below `-1e30` (JSON cannot write `-inf`)
//! bans the token.
//!
//! # Parameters
//! `logit_bias`: token id → finite bias (a biased logit past f32's range stops at `±f32::MAX`). Ids must lie in the vocabulary of the logits (checked at
//! sampling: [`TokenOutOfVocab`](crate::SamplingError::TokenOutOfVocab) names the list).
//!
//! # Library rules
//! llama.cpp's `logit_bias` (first in its chain), vLLM's and OpenAI's `logit_bias`;
//! transformers' single-token `sequence_bias`. A biased masked token stays masked.
//!
//! # Cost
//! O(entries).

use crate::chain::edits::EditCx;

/// Biases at or below this are bans.
pub(crate) const BAN: f32 = -1e30;

/// Applies `bias` (sorted `(token, bias)` pairs).
pub(crate) fn apply(bias: &[(u32, f32)], cx: &mut EditCx<'_>) {
    for &(token, b) in bias {
        if b <= BAN {
            cx.ban(token);
        } else {
            cx.add(token, b);
        }
    }
}
