//! [`GrammarConstraint`]: the tokens a [llguidance](https://github.com/guidance-ai/llguidance)
//! grammar (Lark, regex or JSON schema) allows next, over a [`TokTrie`] the caller supplies.
//! Behind the cargo feature `llguidance`. The type's docs describe EOS handling, prompt tokens,
//! cost and errors (this module is private: they live where rustdoc shows them).

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokTrie, TokenId};

use super::{mask_words, Constraint};
use crate::SamplingError;

/// A [`Constraint`] from an llguidance [`Matcher`]: a Lark grammar, a regex or a JSON schema
/// ([`TopLevelGrammar`]) over the caller's [`TokTrie`].
///
/// It follows one sequence: at each call of [`Constraint::allowed`] it feeds the matcher the
/// history tokens that appeared since its last call, then writes the matcher's mask;
/// [`reset`](Constraint::reset) starts over. Tokens past the trie's vocabulary (a model's padded
/// logits) are never allowed.
///
/// # End of sequence
///
/// llguidance's conventions: while the grammar is in an accepting state (the output so far is a
/// complete match), the trie's EOS tokens are allowed alongside whatever may extend it; once
/// nothing can follow (the grammar has ended, or an EOS was consumed), only the EOS tokens are.
/// A trie without a valid EOS token then allows nothing, and the chain returns
/// [`SamplingError::AllMasked`]. EOS tokens in the history after the grammar has ended are
/// accepted; any other token there is a violation.
///
/// # Prompt tokens
///
/// The history a [`Chain`](crate::Chain) sees is whatever the caller passes, often the prompt
/// followed by the generated tokens (repetition penalties want both). The grammar constrains the
/// output only: [`skip_prefix`](GrammarConstraint::skip_prefix) tells the constraint how many
/// leading history tokens to leave out.
///
/// # Cost
///
/// * Per call: one parser step per new token, then llguidance's mask computation (its authors
///   quote about 50 µs for a 128k vocabulary; more while the lexer cache is cold), then a copy
///   of `ceil(V / 32)` words. The mask is cached while
///   the history does not grow, so [`probabilities`](crate::Chain::probabilities) then a draw on
///   the same history computes it once.
/// * Allocation: [`Matcher`] returns each mask as a freshly allocated [`SimpleVob`] of
///   `ceil(V / 32)` words and allocates inside its parser; llguidance 1.9 has no API that writes
///   into a caller's buffer. Nothing else is allocated per call.
/// * The history is not re-read: the constraint checks its length and the last token it
///   consumed, so the cost of a call does not grow with the history.
/// * Construction: [`from_trie`](GrammarConstraint::from_trie) and
///   [`from_grammar`](GrammarConstraint::from_grammar) build a [`ParserFactory`], whose token
///   slices cost `O(V)`; to build many constraints over one tokenizer, build the factory once
///   and call [`from_factory`](GrammarConstraint::from_factory).
/// * [`Clone`] (and [`Constraint::boxed_clone`]) copies the matcher's lexer cache, so clones on
///   different threads share no lock; [`reset`](Constraint::reset) restores a copy of the
///   matcher kept from construction and is cheap.
///
/// # Errors
///
/// Every failure is [`SamplingError::Constraint`] with a message:
///
/// * a grammar that does not compile (at construction, with llguidance's message);
/// * a history token that the grammar forbids where it appears, or that is outside the trie's
///   vocabulary (naming the token and its position, with llguidance's reason);
/// * a history shorter than the tokens already consumed, or whose last consumed token changed:
///   the constraint follows one sequence, so [`reset`](Constraint::reset) it before another;
/// * an error inside llguidance (a limit, `max_tokens`, an internal error).
///
/// After a rejected token the matcher stays at the last valid position: the same history gives
/// the same error again, and [`reset`](Constraint::reset) starts over.
///
/// # Examples
///
/// Sampling until EOS, with a regex:
///
/// ```
/// use kyutai_sampling::{ChainConfig, GrammarConstraint, Sampler};
/// use llguidance::api::TopLevelGrammar;
/// use toktrie::{TokRxInfo, TokTrie};
///
/// // The 256 bytes, then an end-of-sequence token (id 256).
/// let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
/// words.push(b"\xFF<|eos|>".to_vec());
/// let trie = TokTrie::from(&TokRxInfo::new(words.len() as u32, 256), &words);
///
/// let grammar = TopLevelGrammar::from_regex("(yes|no)!");
/// let constraint = GrammarConstraint::from_trie(trie.clone(), grammar)?;
/// let mut chain = ChainConfig::default().build()?.with_constraint(constraint);
///
/// let logits = vec![0.0f32; 320]; // the model pads its vocabulary: ids 257.. are never drawn
/// let mut history = Vec::new();
/// loop {
///     let token = chain.sample_slice(&logits, &history)?;
///     if token == 256 {
///         break;
///     }
///     history.push(token);
/// }
/// let text = trie.decode_str(&history);
/// assert!(text == "yes!" || text == "no!", "{text}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The mask after a history, and a violation:
///
/// ```
/// use kyutai_sampling::{Constraint, GrammarConstraint, SamplingError};
/// use llguidance::api::TopLevelGrammar;
/// use toktrie::{TokRxInfo, TokTrie};
///
/// let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
/// words.push(b"\xFF<|eos|>".to_vec());
/// let trie = TokTrie::from(&TokRxInfo::new(257, 256), &words);
/// let mut digits = GrammarConstraint::from_trie(trie, TopLevelGrammar::from_regex("[0-9]+"))?;
///
/// let mut mask = vec![0u32; 9];
/// digits.allowed(&[u32::from(b'4')], &mut mask)?;
/// let allowed = |mask: &[u32], t: u32| mask[(t / 32) as usize] & (1 << (t % 32)) != 0;
/// assert!(allowed(&mask, u32::from(b'2')) && allowed(&mask, 256)); // a digit, or EOS
/// assert!(!allowed(&mask, u32::from(b'x')));
///
/// // `x` after `4` violates the grammar.
/// let err = digits.allowed(&[u32::from(b'4'), u32::from(b'x')], &mut mask);
/// assert!(matches!(err, Err(SamplingError::Constraint(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GrammarConstraint {
    /// The matcher, at the position after `consumed` output tokens.
    matcher: Matcher,
    /// The matcher as it was at construction, restored by `reset`.
    pristine: Matcher,
    /// The trie's vocabulary size: tokens at or past it are never allowed.
    vocab: usize,
    /// The trie's EOS tokens.
    eos: Vec<TokenId>,
    /// Leading history tokens that are not grammar output (a prompt).
    skip: usize,
    /// Output tokens consumed by the matcher.
    consumed: usize,
    /// The last of them, checked against the history at each call.
    last: Option<TokenId>,
    /// The mask at `consumed`, while the history has not grown.
    cached: Option<SimpleVob>,
}

impl GrammarConstraint {
    /// The constraint that `matcher` drives, starting from the matcher's current state (which
    /// [`reset`](Constraint::reset) returns to).
    ///
    /// # Errors
    ///
    /// [`SamplingError::Constraint`] when the matcher is in an error state, with its message
    /// (for instance the grammar did not compile: `Matcher::new` keeps that error).
    pub fn new(matcher: Matcher) -> Result<Self, SamplingError> {
        if let Some(e) = matcher.get_error() {
            return Err(constraint_error(format!("the grammar matcher failed: {e}")));
        }
        let tok_env = matcher
            .tok_env()
            .map_err(|e| constraint_error(format!("the grammar matcher has no tokenizer: {e}")))?;
        let trie = tok_env.tok_trie();
        let vocab = trie.vocab_size();
        let eos = trie
            .eos_tokens()
            .iter()
            .copied()
            .filter(|&t| (t as usize) < vocab)
            .collect();
        Ok(Self {
            pristine: matcher.clone(),
            matcher,
            vocab,
            eos,
            skip: 0,
            consumed: 0,
            last: None,
            cached: None,
        })
    }

    /// The constraint for `grammar`, compiled by `factory` (which holds the tokenizer): build
    /// one factory per tokenizer and reuse it for every grammar.
    ///
    /// # Errors
    ///
    /// [`SamplingError::Constraint`] with llguidance's message when the grammar does not compile.
    pub fn from_factory(
        factory: &ParserFactory,
        grammar: TopLevelGrammar,
    ) -> Result<Self, SamplingError> {
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| constraint_error(format!("the grammar does not compile: {e}")))?;
        Self::new(Matcher::new(Ok(parser)))
    }

    /// The constraint for `grammar` over the tokenizer `tok_env`, in one call. llguidance's
    /// logging is off (the factory is [quiet](ParserFactory::quiet)).
    ///
    /// # Errors
    ///
    /// [`SamplingError::Constraint`] with llguidance's message when the tokenizer or the grammar
    /// is rejected.
    pub fn from_grammar(tok_env: &TokEnv, grammar: TopLevelGrammar) -> Result<Self, SamplingError> {
        let mut factory = ParserFactory::new_simple(tok_env)
            .map_err(|e| constraint_error(format!("llguidance rejected the tokenizer: {e}")))?;
        factory.quiet();
        Self::from_factory(&factory, grammar)
    }

    /// The constraint for `grammar` over the vocabulary `trie`, with llguidance's approximate
    /// (greedy, non-canonical) tokenizer environment: enough to compute masks, which never
    /// tokenize. Use [`from_grammar`](Self::from_grammar) with the model's own [`TokEnv`] when
    /// one exists.
    ///
    /// # Errors
    ///
    /// As [`from_grammar`](Self::from_grammar).
    pub fn from_trie(trie: TokTrie, grammar: TopLevelGrammar) -> Result<Self, SamplingError> {
        let tok_env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        Self::from_grammar(&tok_env, grammar)
    }

    /// This constraint with the first `len` history tokens left out of the grammar: the
    /// prompt, when the caller passes prompt and output as one history. A history shorter than
    /// `len` is an error.
    #[must_use]
    pub fn skip_prefix(mut self, len: usize) -> Self {
        self.skip = len;
        self
    }

    /// The matcher, at the position after the consumed tokens: its stop reason, captures,
    /// errors. (Read-only: advancing it behind the constraint's back would desynchronise the two.)
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// How many output tokens (history past the skipped prefix) the grammar has consumed.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The trie's vocabulary size: tokens at or past it are never allowed.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Feeds the matcher `new`, the output tokens from position `self.consumed` on.
    fn consume(&mut self, new: &[TokenId]) -> Result<(), SamplingError> {
        for &token in new {
            let position = self.skip + self.consumed;
            if token as usize >= self.vocab {
                return Err(constraint_error(format!(
                    "token {token} at history position {position} is outside the grammar's \
                     vocabulary of {} tokens",
                    self.vocab
                )));
            }
            let accepted = if self.matcher.is_stopped() {
                if let Some(e) = self.matcher.get_error() {
                    return Err(self.poisoned(e));
                }
                // Nothing can follow: only EOS, which the mask allows again.
                self.eos.contains(&token)
            } else {
                let n = self
                    .matcher
                    .try_consume_tokens(&[token])
                    .map_err(|e| self.poisoned(e))?;
                n == 1
            };
            if !accepted {
                return Err(self.rejected(token, position));
            }
            self.consumed += 1;
            self.last = Some(token);
            self.cached = None;
        }
        Ok(())
    }

    /// The error for `token` at `position`, which the matcher refused.
    fn rejected(&self, token: TokenId, position: usize) -> SamplingError {
        let shown = self
            .matcher
            .tok_env()
            .map(|env| env.tok_trie().token_dbg(token))
            .unwrap_or_else(|_| token.to_string());
        let reason = if self.matcher.is_stopped() {
            format!(
                "the grammar has ended ({}), only EOS may follow",
                self.matcher.stop_reason()
            )
        } else {
            // llguidance's reason, from a copy: the matcher itself stays usable.
            let mut probe = self.matcher.deep_clone();
            match probe.consume_token(token) {
                Err(e) => first_line(&e.to_string()),
                Ok(()) => "the token cannot be consumed here".to_string(),
            }
        };
        constraint_error(format!(
            "token {token} ({shown}) at history position {position} violates the grammar: \
             {reason}; call reset to start over"
        ))
    }

    /// The error once the matcher itself failed: only `reset` recovers.
    fn poisoned(&self, e: impl std::fmt::Display) -> SamplingError {
        constraint_error(format!(
            "the grammar matcher failed after {} output tokens: {}; call reset to start over",
            self.consumed,
            first_line(&e.to_string())
        ))
    }
}

impl Clone for GrammarConstraint {
    /// An independent copy at the same position: the matchers' lexer caches are copied too
    /// ([`Matcher::deep_clone`]), so the clone shares no lock with the original.
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
            pristine: self.pristine.deep_clone(),
            vocab: self.vocab,
            eos: self.eos.clone(),
            skip: self.skip,
            consumed: self.consumed,
            last: self.last,
            cached: self.cached.clone(),
        }
    }
}

impl Constraint for GrammarConstraint {
    fn allowed(&mut self, history: &[u32], mask: &mut [u32]) -> Result<(), SamplingError> {
        let output = history.get(self.skip..).ok_or_else(|| {
            constraint_error(format!(
                "history of {} tokens is shorter than the {}-token prefix the grammar skips",
                history.len(),
                self.skip
            ))
        })?;
        if output.len() < self.consumed {
            return Err(constraint_error(format!(
                "history shorter than the tokens the grammar already consumed ({} output tokens \
                 after the {}-token prefix, {} consumed); call reset",
                output.len(),
                self.skip,
                self.consumed
            )));
        }
        let previous = output.get(self.consumed.wrapping_sub(1)).copied();
        if let (Some(last), Some(now)) = (self.last, previous) {
            if now != last {
                return Err(constraint_error(format!(
                    "history token at position {} changed since the grammar consumed it \
                     (was {last}, now {now}); call reset",
                    self.skip + self.consumed - 1
                )));
            }
        }
        self.consume(&output[self.consumed..])?;

        if self.cached.is_none() {
            let vob = self
                .matcher
                .compute_mask_or_eos()
                .map_err(|e| self.poisoned(e))?;
            self.cached = Some(vob);
        }
        if let Some(vob) = &self.cached {
            write_mask(vob.as_slice(), self.vocab, mask);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.matcher = self.pristine.clone();
        self.consumed = 0;
        self.last = None;
        self.cached = None;
    }

    fn boxed_clone(&self) -> Box<dyn Constraint> {
        Box::new(self.clone())
    }
}

impl std::fmt::Debug for GrammarConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarConstraint")
            .field("vocab", &self.vocab)
            .field("eos", &self.eos)
            .field("skip", &self.skip)
            .field("consumed", &self.consumed)
            .field("stop_reason", &self.matcher.stop_reason())
            .field("error", &self.matcher.get_error())
            .finish_non_exhaustive()
    }
}

/// ORs the allowed tokens below `vocab` from `words` into `mask`, as many words as both hold:
/// the bits of tokens at or past `vocab` are never set.
fn write_mask(words: &[u32], vocab: usize, mask: &mut [u32]) {
    // Words whose 32 tokens are all in the vocabulary; the next one (if any) is partial.
    let full = vocab / 32;
    let tail = (1u32 << (vocab % 32)) - 1;
    let n = mask_words(vocab).min(words.len()).min(mask.len());
    for (i, (out, &word)) in mask[..n].iter_mut().zip(words).enumerate() {
        *out |= if i < full { word } else { word & tail };
    }
}

/// The first line of an llguidance message (the rest is a dump of the parser's state).
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

fn constraint_error(message: String) -> SamplingError {
    SamplingError::Constraint(message)
}
