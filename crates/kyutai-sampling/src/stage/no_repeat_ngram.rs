//! No-repeat n-gram: bans every token that would complete an n-gram already in the history.
//!
//! # Definition
//! With `h` the history and `n` the n-gram size: if `h.len() < n`, nothing is banned.
//! Otherwise, for every window `h[s..s + n]` (`0 ≤ s ≤ h.len() − n`) whose first `n − 1` tokens
//! equal the last `n − 1` tokens of `h`, `ℓ_{h[s + n − 1]} ← −∞`. For `n = 1` the prefix is
//! empty and every token of the history is banned.
//!
//! # Parameters
//! `ngram_size` (`n`): 0 is off; any size works (one larger than the history bans nothing).
//!
//! History ids outside the vocabulary are compared like any other id but are never banned.
//!
//! # Library rules
//! transformers' `NoRepeatNGramLogitsProcessor` (5.x; the same rule as fairseq's, which
//! transformers copied): the n-grams are taken over the whole `input_ids`, prompt included, so
//! pass the prompt in the history to reproduce it. transformers returns early when
//! `cur_len < n` (older releases wrote `cur_len + 1 < n`; the window `cur_len = n − 1` bans
//! nothing either way, as no n-gram is complete yet), rejects `n = 0`, and drops ids past the
//! logits' width into a spare column: this crate does the same by never editing them.
//! `EncoderNoRepeatNGramLogitsProcessor` (n-grams of the encoder input) is not this stage.
//! llama.cpp, vLLM and mistral.rs have no such stage (vLLM's `repetition_detection` stops
//! generation instead of banning).
//!
//! # Cost
//! O(h) per call: the last `n − 1` tokens are searched for in the history with
//! Knuth–Morris–Pratt, whose failure table (`n − 1` entries) is scratch kept in the stage, so
//! no allocation once it has grown. transformers builds every n-gram, O(h·n).

use crate::chain::edits::EditCx;

/// The no-repeat n-gram stage: the n-gram size and a reusable KMP failure table.
#[derive(Clone, Debug)]
pub(crate) struct NoRepeatNGram {
    /// The n-gram size; 0 is off.
    ngram_size: usize,
    /// Scratch: `failure[i]` is the length of the longest proper border of the pattern's first
    /// `i + 1` tokens.
    failure: Vec<usize>,
}

impl NoRepeatNGram {
    /// A stage banning the tokens that would repeat an n-gram of `ngram_size` tokens (0 is
    /// off).
    pub(crate) fn new(ngram_size: usize) -> Self {
        Self {
            ngram_size,
            failure: Vec::new(),
        }
    }

    /// Bans every token that would complete an n-gram already in `history` (oldest first).
    pub(crate) fn apply(&mut self, history: &[u32], cx: &mut EditCx<'_>) {
        let n = self.ngram_size;
        if n == 0 || history.len() < n {
            return;
        }
        if n == 1 {
            for &token in history {
                cx.ban(token);
            }
            return;
        }
        // The pattern is the last n - 1 tokens; the text is the history without its last token
        // (a window's last token must exist). A match ending at `e` bans `history[e + 1]`.
        let Some((text, pattern)) = history
            .split_last()
            .map(|(_, text)| text)
            .zip(history.get(history.len() - (n - 1)..))
        else {
            return;
        };
        build_failure(pattern, &mut self.failure);
        let mut matched = 0usize;
        for (e, &token) in text.iter().enumerate() {
            while matched > 0 && pattern.get(matched) != Some(&token) {
                matched = self.failure.get(matched - 1).copied().unwrap_or(0);
            }
            if pattern.get(matched) == Some(&token) {
                matched += 1;
            }
            if matched == pattern.len() {
                if let Some(&next) = history.get(e + 1) {
                    cx.ban(next);
                }
                matched = self.failure.get(matched - 1).copied().unwrap_or(0);
            }
        }
    }
}

/// Fills `failure` with the KMP failure function of `pattern`.
fn build_failure(pattern: &[u32], failure: &mut Vec<usize>) {
    failure.clear();
    failure.push(0);
    let mut border = 0usize;
    for &token in pattern.iter().skip(1) {
        while border > 0 && pattern.get(border) != Some(&token) {
            border = failure.get(border - 1).copied().unwrap_or(0);
        }
        if pattern.get(border) == Some(&token) {
            border += 1;
        }
        failure.push(border);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::stage::test_support::{edited, SplitMix};

    fn run(stage: &mut NoRepeatNGram, history: &[u32], logits: &[f32]) -> Vec<f32> {
        edited(logits, |cx| stage.apply(history, cx))
    }

    /// fairseq's rule as transformers used to write it: a map from every (n − 1)-gram to the
    /// tokens that followed it, looked up with the current prefix.
    fn reference(n: usize, history: &[u32], logits: &[f32]) -> Vec<f32> {
        let mut out = logits.to_vec();
        if n == 0 || history.len() + 1 < n {
            return out;
        }
        let mut followers: HashMap<&[u32], Vec<u32>> = HashMap::new();
        for gram in history.windows(n) {
            followers
                .entry(&gram[..n - 1])
                .or_default()
                .push(gram[n - 1]);
        }
        let prefix = &history[history.len() + 1 - n..];
        for &t in followers.get(prefix).into_iter().flatten() {
            if let Some(v) = out.get_mut(t as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
        out
    }

    fn parse(row: &[&str]) -> Vec<f32> {
        row.iter()
            .map(|s| match *s {
                "-inf" => f32::NEG_INFINITY,
                s => s.parse().unwrap_or(f32::NAN),
            })
            .collect()
    }

    /// transformers `tests/generation/test_logits_process.py` (transcribed in
    /// `shared/fixtures/reference/hf_vectors.json`): `test_no_repeat_ngram_dist_processor`,
    /// `..._banned_token_reappears` and `..._sequence_shorter_than_ngram`, row by row.
    #[test]
    fn transformers_vectors() {
        /// `(ngram_size, input_ids row, scores row, expected row)`.
        type Case<'a> = (usize, &'a [u32], Vec<f32>, Vec<f32>);
        let third = "0.333333333";
        let cases: &[Case<'_>] = &[
            (
                2,
                &[1, 1, 2, 1],
                parse(&[third; 3]),
                parse(&[third, "-inf", "-inf"]),
            ),
            (
                2,
                &[0, 1, 0, 1],
                parse(&[third; 3]),
                parse(&["-inf", third, third]),
            ),
            (3, &[1, 1, 2, 1], parse(&[third; 3]), parse(&[third; 3])),
            (
                3,
                &[0, 1, 0, 1],
                parse(&[third; 3]),
                parse(&["-inf", third, third]),
            ),
            (
                3,
                &[1, 2, 5, 7, 8, 5, 1, 2],
                parse(&["0.1"; 10]),
                parse(&[
                    "0.1", "0.1", "0.1", "0.1", "0.1", "-inf", "0.1", "0.1", "0.1", "0.1",
                ]),
            ),
            (3, &[1, 2], parse(&[third; 3]), parse(&[third; 3])),
            (3, &[0, 1], parse(&[third; 3]), parse(&[third; 3])),
        ];
        for (n, history, scores, expected) in cases {
            let mut stage = NoRepeatNGram::new(*n);
            assert_eq!(
                &run(&mut stage, history, scores),
                expected,
                "n={n} {history:?}"
            );
        }
    }

    #[test]
    fn matches_reference_on_random_histories() {
        let mut rng = SplitMix(0x6e67_7261_6d73);
        let mut stage = NoRepeatNGram::new(0);
        for case in 0..5000 {
            let vocab = 1 + rng.below(5) as usize;
            let ids = vocab as u64 + rng.below(2);
            let len = rng.below(30) as usize;
            let history: Vec<u32> = (0..len).map(|_| rng.below(ids) as u32).collect();
            let n = rng.below(8) as usize;
            let logits: Vec<f32> = (0..vocab).map(|i| i as f32 - 1.5).collect();
            // One stage reused across sizes: the scratch table must not leak between calls.
            stage.ngram_size = n;
            let got = run(&mut stage, &history, &logits);
            let want = reference(n, &history, &logits);
            assert_eq!(got, want, "case {case}: n={n} {history:?}");
        }
    }

    #[test]
    fn edges() {
        let logits = [0.0f32; 4];
        let ban = f32::NEG_INFINITY;
        // Empty history, off, n larger than the history.
        assert_eq!(run(&mut NoRepeatNGram::new(1), &[], &logits), logits);
        assert_eq!(run(&mut NoRepeatNGram::new(0), &[1, 1, 1], &logits), logits);
        assert_eq!(run(&mut NoRepeatNGram::new(9), &[1, 1, 1], &logits), logits);
        // History exactly n - 1 or n long.
        assert_eq!(run(&mut NoRepeatNGram::new(3), &[1, 1], &logits), logits);
        assert_eq!(
            run(&mut NoRepeatNGram::new(3), &[1, 1, 1], &logits),
            [0.0, ban, 0.0, 0.0]
        );
        // n = 1 bans the whole history; ids past the vocabulary are skipped.
        assert_eq!(
            run(&mut NoRepeatNGram::new(1), &[3, 7, 1, 3], &logits),
            [0.0, ban, 0.0, ban]
        );
        // Out-of-vocabulary ids still match: "7 2" was followed by 9 (skipped) and by 3.
        assert_eq!(
            run(
                &mut NoRepeatNGram::new(3),
                &[7, 2, 9, 7, 2, 3, 7, 2],
                &logits
            ),
            [0.0, 0.0, 0.0, ban]
        );
        // Overlapping occurrences of the prefix.
        assert_eq!(
            run(&mut NoRepeatNGram::new(3), &[1, 1, 1, 2, 1, 1], &logits),
            [0.0, ban, ban, 0.0]
        );
    }
}
