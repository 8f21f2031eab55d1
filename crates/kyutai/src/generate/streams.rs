//! [`DelayedStreams`]: the table of delayed audio streams that every step-wise generation of
//! this crate keeps (multistream, delayed-stream generation, TTS), with its delay arithmetic
//! written once.
//!
//! Each audio codebook `k` is a stream of [`Token`]s by position, with a delay `d_k`: the token
//! the depformer samples for `k` at step `s` belongs to position `s - d_k` (before the delay it
//! belongs nowhere and is dropped), and the model reads position `s - d_k - 1` of `k` at step
//! `s` (the audio pad token while `s <= d_k`). "Not generated yet" has one encoding,
//! [`Token::Ungenerated`].

use crate::{Error, Result};

/// One position of a delayed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A token: sampled, or set in advance (teacher forcing).
    Set(u32),
    /// Not generated yet: the sampler fills it.
    Ungenerated,
    /// No token: the model reads no embedding for this stream at this position.
    LiteralZero,
}

impl Token {
    /// The token, when there is one.
    pub fn get(self) -> Option<u32> {
        match self {
            Self::Set(t) => Some(t),
            Self::Ungenerated | Self::LiteralZero => None,
        }
    }
}

/// The positions of a set of delayed audio streams: `rows[position][codebook]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DelayedStreams {
    delays: Vec<usize>,
    pad: u32,
    rows: Vec<Vec<Token>>,
}

impl DelayedStreams {
    /// Empty streams, one per entry of `delays` (codebook `k` lags by `delays[k]` steps);
    /// `pad` is what the model reads before a stream's delay has passed.
    pub(crate) fn new(delays: Vec<usize>, pad: u32) -> Self {
        Self {
            delays,
            pad,
            rows: Vec::new(),
        }
    }

    /// The number of streams (codebooks).
    pub(crate) fn codebooks(&self) -> usize {
        self.delays.len()
    }

    /// The positions so far, `rows()[position][codebook]`.
    pub(crate) fn rows(&self) -> &[Vec<Token>] {
        &self.rows
    }

    /// Position `position`, if it exists.
    pub(crate) fn row(&self, position: usize) -> Option<&[Token]> {
        self.rows.get(position).map(Vec::as_slice)
    }

    /// The slot of codebook `k` at `position` (`Ungenerated` when it does not exist yet).
    pub(crate) fn slot(&self, position: usize, k: usize) -> Token {
        self.rows
            .get(position)
            .and_then(|row| row.get(k))
            .copied()
            .unwrap_or(Token::Ungenerated)
    }

    /// Makes sure `position` exists, adding `Ungenerated` positions as needed.
    pub(crate) fn ensure(&mut self, position: usize) {
        let codebooks = self.codebooks();
        while self.rows.len() <= position {
            self.rows.push(vec![Token::Ungenerated; codebooks]);
        }
    }

    /// Sets codebook `k` at `position` (which is created if needed) to `token`.
    pub(crate) fn set(&mut self, position: usize, k: usize, token: Token) {
        self.ensure(position);
        if let Some(slot) = self.rows.get_mut(position).and_then(|row| row.get_mut(k)) {
            *slot = token;
        }
    }

    /// Forgets every position.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
    }

    fn delay(&self, k: usize) -> usize {
        self.delays.get(k).copied().unwrap_or(0)
    }

    /// What the model reads for codebook `k` at `step`: the pad token while `step <= delay`,
    /// then the token of position `step - delay - 1` (`None` for a literal zero).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when that position was neither generated nor set.
    pub(crate) fn input(&self, step: usize, k: usize) -> Result<Option<u32>> {
        let delay = self.delay(k);
        if step <= delay {
            return Ok(Some(self.pad));
        }
        let position = step - delay - 1;
        match self.slot(position, k) {
            Token::Set(t) => Ok(Some(t)),
            Token::LiteralZero => Ok(None),
            Token::Ungenerated => Err(Error::input(
                "audio_tokens",
                format!(
                    "codebook {k} at position {position} was neither generated nor set before \
                     step {step}"
                ),
            )),
        }
    }

    /// The token the depformer reads in place of its own sample of codebook `k` at `step`
    /// (moshi's forced audio tokens): the pad token before the delay, the token set in advance
    /// at position `step - delay`, `None` otherwise.
    pub(crate) fn forced(&self, step: usize, k: usize) -> Option<u32> {
        match step.checked_sub(self.delay(k)) {
            None => Some(self.pad),
            Some(position) => self.slot(position, k).get(),
        }
    }

    /// Records `token`, sampled for codebook `k` at `step`, at position `step - delay` unless
    /// that position was set in advance; returns the token the stream keeps there (`None`
    /// before the delay, when the sample is dropped, or for a literal zero set in advance).
    pub(crate) fn fill(&mut self, step: usize, k: usize, token: u32) -> Option<u32> {
        let position = step.checked_sub(self.delay(k))?;
        if self.slot(position, k) == Token::Ungenerated {
            self.set(position, k, Token::Set(token));
        }
        self.slot(position, k).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAD: u32 = 99;

    /// Codebook 0 without delay, codebook 1 two steps late.
    fn streams() -> DelayedStreams {
        DelayedStreams::new(vec![0, 2], PAD)
    }

    #[test]
    fn the_model_reads_pads_until_the_delay_then_the_previous_position() {
        let mut s = streams();
        assert_eq!(s.input(0, 0).unwrap(), Some(PAD));
        assert_eq!(s.input(2, 1).unwrap(), Some(PAD));
        assert!(
            s.input(1, 0).is_err(),
            "position 0 of codebook 0 is ungenerated"
        );
        s.set(0, 0, Token::Set(5));
        s.set(0, 1, Token::LiteralZero);
        assert_eq!(s.input(1, 0).unwrap(), Some(5));
        assert_eq!(
            s.input(3, 1).unwrap(),
            None,
            "a literal zero reads no embedding"
        );
        assert!(s.input(4, 1).is_err());
        assert!(matches!(s.input(4, 1), Err(Error::InvalidInput { .. })));
    }

    #[test]
    fn samples_land_delay_steps_back_and_never_overwrite_a_set_position() {
        let mut s = streams();
        // Before the delay, codebook 1's sample is dropped.
        assert_eq!(s.fill(0, 1, 7), None);
        assert_eq!(s.fill(1, 1, 7), None);
        assert_eq!(s.rows().len(), 0, "nothing was written");
        assert_eq!(s.fill(0, 0, 4), Some(4));
        assert_eq!(s.fill(2, 1, 8), Some(8));
        assert_eq!(s.row(0), Some(&[Token::Set(4), Token::Set(8)][..]));
        // Teacher forcing wins over the sample, and is what the stream keeps.
        s.set(1, 0, Token::Set(6));
        assert_eq!(s.fill(1, 0, 3), Some(6));
        s.set(2, 0, Token::LiteralZero);
        assert_eq!(s.fill(2, 0, 3), None);
        assert_eq!(s.slot(2, 0), Token::LiteralZero);
        assert_eq!(s.slot(9, 1), Token::Ungenerated, "beyond the table");
    }

    #[test]
    fn forced_inputs_are_pads_before_the_delay_then_what_was_set() {
        let mut s = streams();
        assert_eq!(s.forced(0, 0), None);
        assert_eq!((s.forced(0, 1), s.forced(1, 1)), (Some(PAD), Some(PAD)));
        assert_eq!(s.forced(2, 1), None, "ungenerated: the sample is read");
        s.set(1, 1, Token::Set(3));
        assert_eq!(s.forced(3, 1), Some(3));
        s.set(4, 0, Token::LiteralZero);
        assert_eq!(s.forced(4, 0), None);
    }

    #[test]
    fn ensure_grows_with_ungenerated_positions_and_clear_forgets() {
        let mut s = streams();
        s.ensure(2);
        assert_eq!(s.rows().len(), 3);
        assert!(s.rows().iter().flatten().all(|&t| t == Token::Ungenerated));
        assert_eq!(s.codebooks(), 2);
        s.clear();
        assert!(s.rows().is_empty());
        assert_eq!(Token::Set(2).get(), Some(2));
        assert_eq!(Token::LiteralZero.get(), None);
    }
}
