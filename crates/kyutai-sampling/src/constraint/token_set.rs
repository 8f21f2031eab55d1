//! [`TokenSet`]: a fixed set of allowed tokens, the same at every step.

use super::Constraint;
use crate::SamplingError;

/// A constraint that allows the same tokens at every step (a closed vocabulary, a choice among
/// labels' first tokens). Token ids past the vocabulary are ignored.
///
/// # Cost
///
/// `O(n)` per call for `n` tokens in the set.
///
/// ```
/// use kyutai_sampling::{ChainConfig, TokenSet};
///
/// let mut chain = ChainConfig::default().build()?.with_constraint(TokenSet::new([0, 2]));
/// let probs = chain.probabilities(&[0.0, 5.0, 0.0], &[])?;
/// assert_eq!(probs, [0.5, 0.0, 0.5]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSet {
    tokens: Vec<u32>,
}

impl TokenSet {
    /// The set of `tokens` (duplicates are harmless).
    pub fn new(tokens: impl IntoIterator<Item = u32>) -> Self {
        let mut tokens: Vec<u32> = tokens.into_iter().collect();
        tokens.sort_unstable();
        tokens.dedup();
        Self { tokens }
    }

    /// The allowed tokens, ascending.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

impl Constraint for TokenSet {
    fn allowed(&mut self, _history: &[u32], mask: &mut [u32]) -> Result<(), SamplingError> {
        for &t in &self.tokens {
            if let Some(word) = mask.get_mut((t / 32) as usize) {
                *word |= 1 << (t % 32);
            }
        }
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Constraint> {
        Box::new(self.clone())
    }
}
