//! Bad words: bans the token that would complete a banned token sequence.
//!
//! # Definition
//! For every bad word `b` (a token sequence): if `b` has one token, `ℓ_{b[0]} ← −∞` always;
//! otherwise, when the history ends with `b[..len − 1]`, `ℓ_{b[len − 1]} ← −∞`. A bad word equal
//! to `[eos]`, for any end-of-sequence id, is dropped at construction, so that generation can
//! always stop.
//!
//! # Parameters
//! * `bad_words_ids`: token sequences (the configuration layer rejects empty ones; here they
//!   are ignored). Duplicates count once.
//! * `eos_token_id`: the end-of-sequence ids.
//!
//! History ids outside the vocabulary are compared like any other id; banned ids outside the
//! vocabulary are never edited.
//!
//! # Library rules
//! transformers' `NoBadWordsLogitsProcessor` (5.x), a `SequenceBiasLogitsProcessor` with bias
//! `−∞` on every sequence: it drops the single-token bad words equal to an EOS id (only those:
//! a longer bad word ending in EOS is kept), matches a prefix as long as the whole history
//! (5.x compares the prefix's length with the history's; earlier releases skipped a sequence
//! longer than the history, so a prefix equal to the whole history did not match there), and
//! raises on ids past the vocabulary or an empty list, where this stage skips what it cannot
//! edit. vLLM's
//! `bad_words` are strings, tokenised with and without a leading space, with the same
//! last-token rule; llama.cpp has no such stage (a `−inf` logit bias or a grammar).
//!
//! # Cost
//! O(Σ prefix lengths) per call at worst (each multi-token word compares its prefix with the
//! end of the history, stopping at the first mismatch), plus O(single-token words); no
//! allocation.

use crate::chain::edits::EditCx;

/// The bad-words stage: single-token bans and multi-token sequences.
#[derive(Clone, Debug)]
pub(crate) struct BadWords {
    /// Tokens banned at every step, sorted and deduplicated.
    always: Vec<u32>,
    /// Sequences of two tokens or more, deduplicated: the last token is banned when the
    /// history ends with the others.
    sequences: Vec<Vec<u32>>,
}

impl BadWords {
    /// A stage banning `bad_words_ids`, less the single-token words equal to one of
    /// `eos_token_id` (transformers' rule). Empty sequences are ignored.
    pub(crate) fn new(bad_words_ids: Vec<Vec<u32>>, eos_token_id: &[u32]) -> Self {
        let mut always = Vec::new();
        let mut sequences = Vec::new();
        for word in bad_words_ids {
            match word.as_slice() {
                [] => {}
                [token] => {
                    if !eos_token_id.contains(token) {
                        always.push(*token);
                    }
                }
                _ => sequences.push(word),
            }
        }
        always.sort_unstable();
        always.dedup();
        sequences.sort_unstable();
        sequences.dedup();
        Self { always, sequences }
    }

    /// Bans the single-token bad words, and the last token of every bad word whose other
    /// tokens end `history` (oldest first).
    pub(crate) fn apply(&self, history: &[u32], cx: &mut EditCx<'_>) {
        for &token in &self.always {
            cx.ban(token);
        }
        for word in &self.sequences {
            if let Some((&last, prefix)) = word.split_last() {
                if history.ends_with(prefix) {
                    cx.ban(last);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::stage::test_support::{edited, SplitMix};

    fn run(stage: &BadWords, history: &[u32], logits: &[f32]) -> Vec<f32> {
        edited(logits, |cx| stage.apply(history, cx))
    }

    /// The rule word by word, comparing positions one at a time.
    fn reference(words: &[Vec<u32>], eos: &[u32], history: &[u32], logits: &[f32]) -> Vec<f32> {
        let mut out = logits.to_vec();
        for word in words {
            if word.is_empty() || (word.len() == 1 && eos.contains(&word[0])) {
                continue;
            }
            let k = word.len() - 1;
            if k > history.len() {
                continue;
            }
            let start = history.len() - k;
            if (0..k).all(|i| history[start + i] == word[i]) {
                if let Some(v) = out.get_mut(word[k] as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        out
    }

    /// transformers `tests/generation/test_logits_process.py::test_no_bad_words_dist_processor`
    /// (transcribed in `shared/fixtures/reference/hf_vectors.json`), row by row.
    #[test]
    fn transformers_vector() {
        let words = vec![
            vec![1],
            vec![4],
            vec![1, 0],
            vec![0, 1, 2],
            vec![1, 3, 1, 3],
        ];
        let stage = BadWords::new(words, &[4]);
        let scores = [0.2f32; 5];
        let ban = f32::NEG_INFINITY;
        assert_eq!(
            run(&stage, &[0, 1, 3, 1], &scores),
            [ban, ban, 0.2, ban, 0.2]
        );
        assert_eq!(
            run(&stage, &[0, 1, 0, 1], &scores),
            [ban, ban, ban, 0.2, 0.2]
        );
    }

    #[test]
    fn matches_reference_on_random_histories() {
        let mut rng = SplitMix(0xbad_0bad);
        for case in 0..5000 {
            let vocab = 1 + rng.below(5) as usize;
            let ids = vocab as u64 + rng.below(2);
            let history: Vec<u32> = (0..rng.below(8)).map(|_| rng.below(ids) as u32).collect();
            let words: Vec<Vec<u32>> = (0..rng.below(5))
                .map(|_| (0..rng.below(5)).map(|_| rng.below(ids) as u32).collect())
                .collect();
            let eos: Vec<u32> = (0..rng.below(3)).map(|_| rng.below(ids) as u32).collect();
            let logits: Vec<f32> = (0..vocab).map(|i| i as f32 * 0.5).collect();
            let stage = BadWords::new(words.clone(), &eos);
            let got = run(&stage, &history, &logits);
            let want = reference(&words, &eos, &history, &logits);
            assert_eq!(got, want, "case {case}: {words:?} eos {eos:?} {history:?}");
        }
    }

    #[test]
    fn edges() {
        let logits = [0.0f32; 4];
        let ban = f32::NEG_INFINITY;
        // Empty words, empty history, out-of-vocabulary ids: no panic.
        let stage = BadWords::new(vec![vec![], vec![9], vec![9, 2], vec![1, 9]], &[]);
        assert_eq!(run(&stage, &[], &logits), logits);
        assert_eq!(run(&stage, &[9], &logits), [0.0, 0.0, ban, 0.0]);
        assert_eq!(run(&stage, &[1], &logits), logits);
        // A prefix as long as the history matches (transformers 5.x); a longer one does not.
        let stage = BadWords::new(vec![vec![1, 2, 3]], &[]);
        assert_eq!(run(&stage, &[1, 2], &logits), [0.0, 0.0, 0.0, ban]);
        assert_eq!(run(&stage, &[2], &logits), logits);
        // Only the single-token word equal to an EOS id is dropped.
        let stage = BadWords::new(vec![vec![3], vec![2], vec![1, 3]], &[3, 0]);
        assert_eq!(run(&stage, &[0], &logits), [0.0, 0.0, ban, 0.0]);
        assert_eq!(run(&stage, &[1], &logits), [0.0, 0.0, ban, ban]);
        // An already masked token stays masked.
        let masked = [ban, 0.0, 0.0, 0.0];
        let stage = BadWords::new(vec![vec![0]], &[]);
        assert_eq!(run(&stage, &[], &masked), masked);
    }
}
