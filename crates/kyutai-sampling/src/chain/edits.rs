//! [`Edits`]: the one sparse buffer that every edit stage (penalties, biases, bans) writes into,
//! and that the engine reads through its view without copying the vocabulary.

use crate::SamplingError;

/// Replaced logits, at most one entry per token, with O(1) reads and writes.
///
/// `slot[t]` is the index of token `t`'s entry in `entries`, or [`NONE`]. The slot table is sized
/// to the vocabulary once and cleared entry by entry after each call, so a call costs O(edits).
#[derive(Clone, Debug, Default)]
pub(crate) struct Edits {
    entries: Vec<(u32, f32)>,
    slot: Vec<u32>,
    /// Per-token counts for [`EditCx::counts`], valid where `stamp[t] == epoch`.
    counts: Vec<u32>,
    stamp: Vec<u32>,
    epoch: u32,
    /// The distinct tokens of the last counted window, in order of first occurrence.
    distinct: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Edits {
    /// Empties the buffer (O(entries)) and sizes the slot table for `vocab` tokens.
    pub(crate) fn reset(&mut self, vocab: usize) {
        for &(token, _) in &self.entries {
            if let Some(s) = self.slot.get_mut(token as usize) {
                *s = NONE;
            }
        }
        self.entries.clear();
        if self.slot.len() != vocab {
            self.slot.clear();
            self.slot.resize(vocab, NONE);
            self.counts.clear();
            self.stamp.clear();
            self.epoch = 0;
        }
    }

    /// The entries, sorted by token (the invariant of the engine's view).
    pub(crate) fn sorted(&mut self) -> &[(u32, f32)] {
        if !self.entries.is_sorted_by_key(|&(t, _)| t) {
            self.entries.sort_unstable_by_key(|&(t, _)| t);
            for (i, &(token, _)) in self.entries.iter().enumerate() {
                if let Some(s) = self.slot.get_mut(token as usize) {
                    *s = i as u32;
                }
            }
        }
        &self.entries
    }
}

/// What an edit stage sees: the caller's logits with the earlier stages' edits applied.
#[derive(Debug)]
pub(crate) struct EditCx<'a> {
    base: &'a [f32],
    edits: &'a mut Edits,
}

impl<'a> EditCx<'a> {
    /// `edits` must have been [`reset`](Edits::reset) for `base.len()` tokens.
    pub(crate) fn new(base: &'a [f32], edits: &'a mut Edits) -> Self {
        debug_assert_eq!(edits.slot.len(), base.len());
        Self { base, edits }
    }

    /// The current logit of `token` (earlier edits applied); `-inf` past the vocabulary.
    #[inline]
    pub(crate) fn get(&self, token: u32) -> f32 {
        match self.edits.slot.get(token as usize) {
            Some(&NONE) => self.base[token as usize],
            Some(&s) => self.edits.entries[s as usize].1,
            None => f32::NEG_INFINITY,
        }
    }

    /// Replaces the logit of `token`; ids past the vocabulary are ignored.
    #[inline]
    pub(crate) fn set(&mut self, token: u32, value: f32) {
        let Some(s) = self.edits.slot.get_mut(token as usize) else {
            return;
        };
        if *s == NONE {
            *s = self.edits.entries.len() as u32;
            self.edits.entries.push((token, value));
        } else if let Some(entry) = self.edits.entries.get_mut(*s as usize) {
            entry.1 = value;
        }
    }

    /// Adds `delta` to the logit of `token` (a masked token stays masked; a sum past `f32`'s
    /// range stops at `±f32::MAX`, so that no edit masks a token or makes a logit `+inf`).
    #[inline]
    pub(crate) fn add(&mut self, token: u32, delta: f32) {
        let value = self.get(token);
        if value > f32::NEG_INFINITY {
            self.set(token, crate::limits::saturate(value + delta, value));
        }
    }

    /// Masks `token`: no later stage sees it as a candidate.
    #[inline]
    pub(crate) fn ban(&mut self, token: u32) {
        self.set(token, f32::NEG_INFINITY);
    }

    /// Calls `f(cx, token, count)` once for each distinct in-vocabulary token of `window`, in
    /// order of first occurrence, with its number of occurrences. O(window), no allocation once
    /// the tables are sized.
    pub(crate) fn counts(&mut self, window: &[u32], mut f: impl FnMut(&mut Self, u32, u32)) {
        let vocab = self.base.len();
        let e = &mut *self.edits;
        if e.stamp.len() != vocab {
            e.stamp.clear();
            e.stamp.resize(vocab, 0);
            e.counts.clear();
            e.counts.resize(vocab, 0);
            e.epoch = 0;
        }
        e.epoch = e.epoch.wrapping_add(1);
        if e.epoch == 0 {
            e.stamp.iter_mut().for_each(|s| *s = 0);
            e.epoch = 1;
        }
        let mut distinct = std::mem::take(&mut e.distinct);
        distinct.clear();
        for &token in window {
            let t = token as usize;
            if let (Some(stamp), Some(count)) = (e.stamp.get_mut(t), e.counts.get_mut(t)) {
                if *stamp == e.epoch {
                    *count += 1;
                } else {
                    *stamp = e.epoch;
                    *count = 1;
                    distinct.push(token);
                }
            }
        }
        for &token in &distinct {
            let count = self.edits.counts.get(token as usize).copied().unwrap_or(0);
            f(self, token, count);
        }
        self.edits.distinct = distinct;
    }

    /// Number of edited tokens so far.
    pub(crate) fn len(&self) -> usize {
        self.edits.entries.len()
    }

    /// Checks the caller's logit under every entry edited by a stage (a ban must not hide a
    /// NaN), so that a bad input is reported wherever it is. The first `skip` entries are the
    /// caller's own replacements, whose base values the caller discarded.
    pub(crate) fn check_edited_inputs(&self, skip: usize) -> Result<(), SamplingError> {
        for &(token, _) in self.edits.entries.iter().skip(skip) {
            let x = self.base[token as usize];
            if x.is_nan() || x == f32::INFINITY {
                return Err(SamplingError::NonFiniteLogit {
                    index: token as usize,
                    value: x,
                });
            }
        }
        Ok(())
    }
}
