//! [`Constraint`]: which tokens may come next (a grammar, a JSON schema, a fixed set), as a packed
//! bitmask that a [`Chain`](crate::Chain) applies before every other stage.
//!
//! # Why the mask comes first
//!
//! A constrained chain samples exactly `chain(mask(logits))`: the disallowed tokens are `-inf`
//! before the first stage runs, so every truncation sees only allowed tokens. The alternative
//! that llama.cpp and mistral.rs use by default, *validate then resample* (draw from
//! `chain(logits)`, and only when the token is rejected draw again from the masked logits), is
//! cheaper on average but draws from a different distribution once a truncation is in the
//! chain: a truncation computed over the whole vocabulary keeps a set shaped by tokens the
//! grammar forbids. Take top-k 2 over `[a, b, c]` with `a` and `c` allowed and `b` forbidden,
//! and `b` among the top 2: validate then resample draws `a` with probability
//! `p(a | {a, b}) + p(b | {a, b}) · p(a | {a, c})`, while `chain(mask(logits))` draws it with
//! probability `p(a | {a, c})`. The mask-first rule has no such mixture.
//!
//! # Mask layout
//!
//! `ceil(V / 32)` words; bit `t % 32` of word `t / 32` set means token `t` is allowed. Bits past
//! the vocabulary are ignored. The chain zeroes the mask before each call of
//! [`Constraint::allowed`], so a constraint only sets bits.
//!
//! # Cost
//!
//! Reading the mask costs `O(V / 32)` words plus the allowed tokens: the chain gathers the
//! allowed tokens into its candidate list without copying the vocabulary.

#[cfg(feature = "llguidance")]
mod grammar;
mod token_set;

#[cfg(feature = "llguidance")]
pub use grammar::GrammarConstraint;
pub use token_set::TokenSet;

use crate::SamplingError;

/// A constraint on which tokens may come next (a grammar, a JSON schema, a fixed set).
///
/// Implementations are state machines over the history they are shown: [`allowed`] is called
/// once per sampling call with the whole history, and [`reset`](Self::reset) starts them over.
///
/// [`allowed`]: Self::allowed
///
/// ```
/// use kyutai_sampling::{ChainConfig, Constraint, SamplingError};
///
/// /// Only even tokens.
/// #[derive(Clone)]
/// struct Even;
///
/// impl Constraint for Even {
///     fn allowed(&mut self, _history: &[u32], mask: &mut [u32]) -> Result<(), SamplingError> {
///         mask.iter_mut().for_each(|word| *word = 0x5555_5555);
///         Ok(())
///     }
///     fn boxed_clone(&self) -> Box<dyn Constraint> {
///         Box::new(self.clone())
///     }
/// }
///
/// let mut chain = ChainConfig::default().build()?.with_constraint(Even);
/// let probs = chain.probabilities(&[1.0, 9.0, 1.0, 9.0], &[])?;
/// assert_eq!(probs, [0.5, 0.0, 0.5, 0.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Constraint: Send {
    /// Writes the allowed set after `history` into `mask` (ceil(V/32) words, bit t%32 of word t/32 set = t allowed).
    ///
    /// # Errors
    ///
    /// Whatever the constraint cannot follow: a history that violates a grammar is
    /// [`SamplingError::Constraint`].
    fn allowed(&mut self, history: &[u32], mask: &mut [u32]) -> Result<(), SamplingError>;

    /// Starts over, before a new sequence. The default does nothing (for stateless constraints).
    fn reset(&mut self) {}

    /// A copy with the same state: `Chain` stays `Clone`, and each clone owns its constraint.
    fn boxed_clone(&self) -> Box<dyn Constraint>;
}

impl Clone for Box<dyn Constraint> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

impl std::fmt::Debug for dyn Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Constraint")
    }
}

/// Words of a mask over `vocab` tokens.
pub(crate) fn mask_words(vocab: usize) -> usize {
    vocab.div_ceil(32)
}

/// Whether token `t` is set in `mask`.
#[inline]
pub(crate) fn is_set(mask: &[u32], t: u32) -> bool {
    mask.get((t / 32) as usize)
        .is_some_and(|w| w & (1 << (t % 32)) != 0)
}
