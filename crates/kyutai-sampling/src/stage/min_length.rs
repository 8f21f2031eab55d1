//! Minimum length: the end-of-sequence tokens are masked while the history is too short.
//!
//! # Definition
//! While `history.len() < min_length`, `ℓ_eos ← −∞` for every end-of-sequence id.
//!
//! # Parameters
//! `min_length` (0 is off) with `eos_token_id` (ids in the vocabulary, checked at sampling).
//!
//! # Library rules
//! transformers' `MinLengthLogitsProcessor`, whose length counts the prompt: pass the prompt in
//! the history to reproduce it (vLLM's `min_tokens` counts generated tokens only). llama.cpp
//! has no such stage.
//!
//! # Cost
//! O(eos ids).

use crate::chain::edits::EditCx;

/// Masks `eos` while `history` is shorter than `min_length`.
pub(crate) fn apply(history: &[u32], min_length: usize, eos: &[u32], cx: &mut EditCx<'_>) {
    if history.len() < min_length {
        for &token in eos {
            cx.ban(token);
        }
    }
}
