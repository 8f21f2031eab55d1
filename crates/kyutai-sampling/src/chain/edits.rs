//! [`Edits`]: the one sparse buffer that every edit stage (penalties, biases, bans) writes into,
//! and that the engine reads through its view without copying the vocabulary.

use crate::SamplingError;

/// Replaced logits, at most one entry per token, with O(1) reads and writes.
///
/// `marks` has a bit set for every token with an entry, and then `slot[t]` is the index of token
/// `t`'s entry in `entries` (slots of unmarked tokens are stale, never read). The bitset is sized
/// to the vocabulary once and cleared entry by entry after each call, so a call costs O(edits);
/// most reads and writes touch only the bitset (a few KiB, which stay in cache), not the
/// vocabulary-sized slot table.
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
    /// One bit per token of the vocabulary: set for every token with an entry, so that the
    /// entries come out in token order by a scan of the words instead of a sort (when the
    /// words are few next to the entries). Cleared entry by entry.
    marks: Vec<u64>,
    /// The entries in token order, built from `marks` (then swapped with `entries`).
    ordered: Vec<(u32, f32)>,
    /// One bit per token (sized by [`EditCx::distinct`]), all clear between calls: the tokens
    /// it has seen.
    seen: Vec<u64>,
}

/// [`Edits::sorted`] scans the marks rather than sorting when the vocabulary has at most this
/// many 64-token words per entry (a word costs about a comparison of the sort).
const SCAN_RATIO: usize = 8;

impl Edits {
    /// Empties the buffer (O(entries)) and sizes the slot table for `vocab` tokens.
    pub(crate) fn reset(&mut self, vocab: usize) {
        for &(token, _) in &self.entries {
            if let Some(word) = self.marks.get_mut(token as usize / 64) {
                *word = 0;
            }
        }
        self.entries.clear();
        if self.slot.len() != vocab {
            self.slot.clear();
            self.slot.resize(vocab, 0);
            self.counts.clear();
            self.stamp.clear();
            self.epoch = 0;
            self.marks.clear();
            self.marks.resize(vocab.div_ceil(64), 0);
        }
    }

    /// Whether token `t` has an entry.
    #[inline]
    fn is_marked(&self, t: usize) -> bool {
        self.marks
            .get(t / 64)
            .is_some_and(|&word| word & (1 << (t % 64)) != 0)
    }

    /// The entries, one per edited token, in the order the tokens were first edited.
    pub(crate) fn entries(&self) -> &[(u32, f32)] {
        &self.entries
    }

    /// The entries, sorted by token (the invariant of the engine's view). No entry can be read or
    /// written afterwards until the next [`reset`](Self::reset): the slots are left stale.
    pub(crate) fn sorted(&mut self) -> &[(u32, f32)] {
        if self.entries.is_sorted_by_key(|&(t, _)| t) {
            return &self.entries;
        }
        if self.marks.len() <= self.entries.len().saturating_mul(SCAN_RATIO) {
            // Every entry's token is marked: the set bits, word by word, are the tokens in
            // order.
            self.ordered.clear();
            for (w, &word) in self.marks.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let token = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if let Some(&s) = self.slot.get(token) {
                        if let Some(&entry) = self.entries.get(s as usize) {
                            self.ordered.push(entry);
                        }
                    }
                }
            }
            std::mem::swap(&mut self.entries, &mut self.ordered);
        } else {
            self.entries.sort_unstable_by_key(|&(t, _)| t);
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
        let t = token as usize;
        if self.edits.is_marked(t) {
            let entry = self
                .edits
                .slot
                .get(t)
                .and_then(|&s| self.edits.entries.get(s as usize));
            if let Some(&(_, value)) = entry {
                return value;
            }
        }
        self.base.get(t).copied().unwrap_or(f32::NEG_INFINITY)
    }

    /// Replaces the logit of `token`; ids past the vocabulary are ignored.
    #[inline]
    pub(crate) fn set(&mut self, token: u32, value: f32) {
        let t = token as usize;
        let e = &mut *self.edits;
        let (Some(s), Some(word)) = (e.slot.get_mut(t), e.marks.get_mut(t / 64)) else {
            return;
        };
        let bit = 1u64 << (t % 64);
        if *word & bit == 0 {
            *word |= bit;
            *s = e.entries.len() as u32;
            e.entries.push((token, value));
        } else if let Some(entry) = e.entries.get_mut(*s as usize) {
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

    /// Calls `f(cx, token)` once for each distinct in-vocabulary token of `window`, in order of
    /// first occurrence: [`counts`](Self::counts) without the counts, through a bitset of the
    /// vocabulary (a few KiB that stay in cache) rather than its per-token tables.
    pub(crate) fn distinct(&mut self, window: &[u32], mut f: impl FnMut(&mut Self, u32)) {
        let vocab = self.base.len();
        if self.edits.seen.len() != vocab.div_ceil(64) {
            self.edits.seen.clear();
            self.edits.seen.resize(vocab.div_ceil(64), 0);
        }
        let mut seen = std::mem::take(&mut self.edits.seen);
        for &token in window {
            if (token as usize) < vocab {
                if let Some(word) = seen.get_mut(token as usize / 64) {
                    let bit = 1u64 << (token % 64);
                    if *word & bit == 0 {
                        *word |= bit;
                        f(self, token);
                    }
                }
            }
        }
        for &token in window {
            if let Some(word) = seen.get_mut(token as usize / 64) {
                *word = 0;
            }
        }
        self.edits.seen = seen;
    }

    /// Replaces the logit `x` of each distinct in-vocabulary token of `window` by `f(x)`, once per
    /// token; masked tokens stay masked (`f` is not called for them). The same as
    /// [`distinct`](Self::distinct) with a [`get`](Self::get) and a [`set`](Self::set) per
    /// token, and as cheap as one bit test per token when nothing has been edited yet (a
    /// penalty stage first in the chain): every token's value is then its base logit and the
    /// marks of the entries themselves tell the tokens seen.
    pub(crate) fn map_distinct(&mut self, window: &[u32], mut f: impl FnMut(f32) -> f32) {
        if !self.edits.entries.is_empty() {
            self.distinct(window, |cx, token| {
                let x = cx.get(token);
                if x > f32::NEG_INFINITY {
                    cx.set(token, f(x));
                }
            });
            return;
        }
        let Edits {
            entries,
            slot,
            marks,
            ..
        } = &mut *self.edits;
        // Slices and a running count in locals, so that the loop keeps them in registers (a
        // `push` would make the compiler reload every length after each store).
        let (base, slot, marks) = (self.base, slot.as_mut_slice(), marks.as_mut_slice());
        let start = entries.len();
        entries.resize(start + window.len(), (0, 0.0));
        let mut count = start;
        if let Some(out) = entries.get_mut(start..) {
            let mut out = out.iter_mut();
            for &token in window {
                let t = token as usize;
                let (Some(&x), Some(s), Some(word)) =
                    (base.get(t), slot.get_mut(t), marks.get_mut(t / 64))
                else {
                    continue;
                };
                let bit = 1u64 << (t % 64);
                if *word & bit != 0 {
                    continue;
                }
                let Some(entry) = out.next() else { break };
                // A masked token gets an entry too (its own `-inf`), which marks it as seen.
                *word |= bit;
                *s = count as u32;
                let y = if x > f32::NEG_INFINITY { f(x) } else { x };
                *entry = (token, y);
                count += 1;
            }
        }
        entries.truncate(count);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn entries_come_out_sorted_with_their_last_values() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut edits = Edits::default();
        for case in 0..400 {
            // Small and large vocabularies, few and many entries: both the scan and the sort.
            let vocab = [70usize, 1000, 32000][case % 3];
            let base: Vec<f32> = (0..vocab).map(|i| i as f32).collect();
            edits.reset(vocab);
            let mut expected = std::collections::BTreeMap::new();
            let n = rng.random_range(0..[5usize, 300][case % 2]);
            {
                let mut cx = EditCx::new(&base, &mut edits);
                for _ in 0..n {
                    let token = rng.random_range(0..vocab as u32 + 3);
                    if rng.random_bool(0.5) {
                        cx.add(token, 1.0);
                    } else {
                        cx.set(token, -(token as f32));
                    }
                    if (token as usize) < vocab {
                        expected.insert(token, cx.get(token));
                    } else {
                        assert_eq!(cx.get(token), f32::NEG_INFINITY);
                    }
                }
                for t in 0..vocab as u32 {
                    let want = expected.get(&t).copied().unwrap_or(t as f32);
                    assert_eq!(cx.get(t), want, "case {case} token {t}");
                }
                assert_eq!(cx.len(), expected.len());
            }
            let want: Vec<(u32, f32)> = expected.into_iter().collect();
            assert_eq!(edits.sorted(), want.as_slice(), "case {case}");
        }
    }

    #[test]
    fn map_distinct_maps_each_distinct_token_once_like_get_and_set() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let (mut fast, mut slow) = (Edits::default(), Edits::default());
        for case in 0..300 {
            let vocab = [70usize, 1000, 32000][case % 3];
            let base: Vec<f32> = (0..vocab)
                .map(|i| {
                    if i % 11 == 0 {
                        f32::NEG_INFINITY
                    } else {
                        i as f32 - 500.0
                    }
                })
                .collect();
            let window: Vec<u32> = (0..rng.random_range(0..300))
                .map(|_| rng.random_range(0..vocab as u32 + 5))
                .collect();
            // Half the cases start from earlier edits (the general path).
            let earlier: Vec<(u32, f32)> = (0..[0usize, 20][case % 2])
                .map(|_| {
                    (
                        rng.random_range(0..vocab as u32),
                        rng.random_range(-9.0..9.0),
                    )
                })
                .collect();
            let f = |x: f32| x * 0.5 - 1.0;
            fast.reset(vocab);
            slow.reset(vocab);
            let mut calls = 0usize;
            {
                let mut cx = EditCx::new(&base, &mut fast);
                for &(t, v) in &earlier {
                    cx.set(t, v);
                }
                cx.map_distinct(&window, |x| {
                    calls += 1;
                    f(x)
                });
            }
            let mut want_calls = 0usize;
            {
                let mut cx = EditCx::new(&base, &mut slow);
                for &(t, v) in &earlier {
                    cx.set(t, v);
                }
                cx.distinct(&window, |cx, token| {
                    let x = cx.get(token);
                    if x > f32::NEG_INFINITY {
                        want_calls += 1;
                        cx.set(token, f(x));
                    }
                });
            }
            assert_eq!(calls, want_calls, "case {case}");
            let (a, b) = (EditCx::new(&base, &mut fast), EditCx::new(&base, &mut slow));
            for t in 0..vocab as u32 + 2 {
                assert_eq!(
                    a.get(t).to_bits(),
                    b.get(t).to_bits(),
                    "case {case} token {t}"
                );
            }
        }
    }

    #[test]
    fn distinct_tokens_in_order_of_first_occurrence() {
        let base = vec![0.0f32; 200];
        let mut edits = Edits::default();
        for window in [
            vec![5u32, 7, 5, 199, 7, 200, 3, 5, u32::MAX, 3],
            vec![],
            vec![64, 0, 63, 64, 128, 0],
        ] {
            edits.reset(base.len());
            let mut cx = EditCx::new(&base, &mut edits);
            let mut seen = Vec::new();
            cx.distinct(&window, |_, t| seen.push(t));
            let mut want: Vec<u32> = Vec::new();
            for &t in &window {
                if (t as usize) < base.len() && !want.contains(&t) {
                    want.push(t);
                }
            }
            assert_eq!(seen, want);
            // The bitset is clear again: a second walk sees the same tokens.
            let mut again = Vec::new();
            cx.distinct(&window, |_, t| again.push(t));
            assert_eq!(again, want);
        }
    }
}
