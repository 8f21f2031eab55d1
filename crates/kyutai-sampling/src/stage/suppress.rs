//! Suppressed tokens: never sampled.
//!
//! # Definition
//! `ℓᵢ ← −∞` for every listed token.
//!
//! # Parameters
//! `suppress_tokens`: token ids in the vocabulary (checked at sampling).
//!
//! # Library rules
//! transformers' `SuppressTokensLogitsProcessor`; vLLM's `bad_words` for single tokens, and a
//! `-inf` logit bias in llama.cpp.
//!
//! # Cost
//! O(entries).

use crate::chain::edits::EditCx;

/// Bans `tokens`.
pub(crate) fn apply(tokens: &[u32], cx: &mut EditCx<'_>) {
    for &token in tokens {
        cx.ban(token);
    }
}
