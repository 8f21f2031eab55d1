//! [`TokenSet`]: a fixed set of allowed tokens, the same at every step.

use super::Constraint;
use crate::SamplingError;

/// A constraint that allows the same tokens at every step (a closed vocabulary, a choice among
/// labels' first tokens). Token ids past the vocabulary are ignored.
///
/// # Cost
///
/// A copy of `ceil(V / 32)` words per call; `O(n)` for `n` tokens in the set when the mask's
/// size changes.
///
/// ```
/// use kyutai_sampling::{ChainConfig, TokenSet};
///
/// let mut chain = ChainConfig::default().build()?.with_constraint(TokenSet::new([0, 2]));
/// let probs = chain.probabilities(&[0.0, 5.0, 0.0], &[])?;
/// assert_eq!(probs, [0.5, 0.0, 0.5]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct TokenSet {
    tokens: Vec<u32>,
    /// The mask last written, for its length: copied while the vocabulary stays the same.
    cached: Vec<u32>,
}

impl TokenSet {
    /// The set of `tokens` (duplicates are harmless).
    pub fn new(tokens: impl IntoIterator<Item = u32>) -> Self {
        let mut tokens: Vec<u32> = tokens.into_iter().collect();
        tokens.sort_unstable();
        tokens.dedup();
        Self {
            tokens,
            cached: Vec::new(),
        }
    }

    /// The allowed tokens, ascending.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

impl Constraint for TokenSet {
    fn allowed(&mut self, _history: &[u32], mask: &mut [u32]) -> Result<(), SamplingError> {
        if self.cached.len() != mask.len() {
            self.cached.clear();
            self.cached.resize(mask.len(), 0);
            for &t in &self.tokens {
                if let Some(word) = self.cached.get_mut((t / 32) as usize) {
                    *word |= 1 << (t % 32);
                }
            }
        }
        mask.copy_from_slice(&self.cached);
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Constraint> {
        Box::new(self.clone())
    }
}
