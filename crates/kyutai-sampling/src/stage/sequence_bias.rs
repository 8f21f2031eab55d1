//! Sequence bias: adds a bias to the token that would complete a given token sequence.
//!
//! # Definition
//! For every sequence `s` with bias `b`: if `s` has one token, `b` goes to `s[0]` at every
//! step; otherwise, when the history ends with `s[..len − 1]`, `b` goes to `s[len − 1]`. The
//! biases that go to one token are summed first, in f32, and the sum is added to its logit once:
//! `ℓ_t ← ℓ_t + (0 + b₁ + b₂ + …)`, in transformers' order (the single-token bias first, then
//! the completed sequences grouped by prefix length, the groups in order of first appearance,
//! each group in list order). A bias at or below `-1e30` counts as `−∞` and bans the token. A
//! masked token stays masked.
//!
//! # Parameters
//! `sequence_bias`: `(token sequence, bias)` pairs; finite biases (or `≤ -1e30` for a ban);
//! non-empty sequences (the configuration layer rejects empty ones; here they are ignored). A
//! sequence listed twice keeps the last bias, at the position of its first listing, as
//! transformers' dict does.
//!
//! History ids outside the vocabulary are compared like any other id; biased ids outside the
//! vocabulary are never edited.
//!
//! # Library rules
//! transformers' `SequenceBiasLogitsProcessor` (5.x): biases of sequences sharing a last token
//! add up, a prefix as long as the whole history matches (earlier releases skipped a sequence
//! longer than the history, so there it did not), and the per-token sums are added to the
//! scores at once. The order of the sums is the CPU order of its `index_add_` (on CUDA the
//! additions are atomic and their order, so the last bit, may vary). transformers raises on ids
//! past the vocabulary and on empty sequences; this stage skips them. The `-1e30` ban is this
//! crate's convention (JSON has no `-inf`), shared with the logit bias. llama.cpp's and vLLM's
//! `logit_bias` only bias single tokens (this crate's logit-bias stage).
//!
//! # Cost
//! O(single-token sequences + Σ prefix lengths) per call at worst (each prefix is compared with
//! the end of the history, stopping at the first mismatch), plus O(k log k) to group the `k`
//! completed multi-token sequences by token; the grouping buffer is scratch kept in the stage,
//! so no allocation once it has grown.

use std::collections::HashMap;

use crate::chain::edits::EditCx;

/// Biases at or below this are bans.
const BAN: f32 = -1e30;

/// A token sequence with its bias.
type Biased = (Vec<u32>, f32);

/// The sequence-bias stage: biases in transformers' order and a reusable grouping buffer.
#[derive(Clone, Debug)]
pub(crate) struct SequenceBias {
    /// Single-token biases, sorted by token (one per token).
    single: Vec<(u32, f32)>,
    /// Multi-token sequences with their bias, in transformers' order of summation.
    multi: Vec<Biased>,
    /// Scratch: `(last token, rank in multi, bias)` of the sequences completed this call.
    completed: Vec<(u32, usize, f32)>,
}

impl SequenceBias {
    /// A stage adding each bias of `sequence_bias` to the last token of its sequence when the
    /// history ends with the rest of it (always, for a single-token sequence). Empty sequences
    /// are ignored; a bias at or below `-1e30` is a ban.
    pub(crate) fn new(sequence_bias: Vec<(Vec<u32>, f32)>) -> Self {
        // transformers builds a dict: the first listing fixes the position, the last the bias.
        let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
        let mut entries: Vec<Biased> = Vec::new();
        for (sequence, bias) in sequence_bias {
            if sequence.is_empty() {
                continue;
            }
            let bias = if bias <= BAN { f32::NEG_INFINITY } else { bias };
            match index.get(&sequence) {
                Some(&i) => {
                    if let Some(entry) = entries.get_mut(i) {
                        entry.1 = bias;
                    }
                }
                None => {
                    index.insert(sequence.clone(), entries.len());
                    entries.push((sequence, bias));
                }
            }
        }

        let mut single = Vec::new();
        // Prefix lengths in order of first appearance, then each group in dict order.
        let mut groups: Vec<(usize, Vec<Biased>)> = Vec::new();
        for (sequence, bias) in entries {
            match sequence.as_slice() {
                [] => {}
                [token] => single.push((*token, bias)),
                _ => {
                    let prefix_len = sequence.len() - 1;
                    match groups.iter_mut().find(|(len, _)| *len == prefix_len) {
                        Some((_, group)) => group.push((sequence, bias)),
                        None => groups.push((prefix_len, vec![(sequence, bias)])),
                    }
                }
            }
        }
        single.sort_unstable_by_key(|&(token, _)| token);
        let multi = groups.into_iter().flat_map(|(_, group)| group).collect();
        Self {
            single,
            multi,
            completed: Vec::new(),
        }
    }

    /// Adds the biases of the single-token sequences and of the sequences that `history`
    /// (oldest first) is about to complete.
    pub(crate) fn apply(&mut self, history: &[u32], cx: &mut EditCx<'_>) {
        self.completed.clear();
        for (rank, (sequence, bias)) in self.multi.iter().enumerate() {
            if let Some((&last, prefix)) = sequence.split_last() {
                if history.ends_with(prefix) {
                    self.completed.push((last, rank, *bias));
                }
            }
        }
        // By token, then in summation order (the rank makes the key unique, so an unstable
        // sort is deterministic and does not allocate).
        self.completed
            .sort_unstable_by_key(|&(token, rank, _)| (token, rank));

        let mut single = self.single.iter().peekable();
        let mut completed = self.completed.iter().peekable();
        loop {
            let token = match (single.peek(), completed.peek()) {
                (None, None) => break,
                (Some(&&(a, _)), None) => a,
                (None, Some(&&(b, _, _))) => b,
                (Some(&&(a, _)), Some(&&(b, _, _))) => a.min(b),
            };
            let mut total = 0.0f32;
            if let Some(&(_, bias)) = single.next_if(|&&(t, _)| t == token) {
                total += bias;
            }
            while let Some(&(_, _, bias)) = completed.next_if(|&&(t, _, _)| t == token) {
                total += bias;
            }
            if total == f32::NEG_INFINITY {
                cx.ban(token);
            } else {
                cx.add(token, total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::stage::test_support::{edited, SplitMix};

    fn run(stage: &mut SequenceBias, history: &[u32], logits: &[f32]) -> Vec<f32> {
        edited(logits, |cx| stage.apply(history, cx))
    }

    /// transformers 5.x step by step over a dense bias row: dict, length-1 biases assigned,
    /// groups by prefix length added in turn, then `scores + bias`.
    fn reference(pairs: &[(Vec<u32>, f32)], history: &[u32], scores: &[f32]) -> Vec<f32> {
        let mut dict: Vec<(Vec<u32>, f32)> = Vec::new();
        for (seq, bias) in pairs {
            if seq.is_empty() {
                continue;
            }
            let bias = if *bias <= -1e30 {
                f32::NEG_INFINITY
            } else {
                *bias
            };
            match dict.iter_mut().find(|(s, _)| s == seq) {
                Some(entry) => entry.1 = bias,
                None => dict.push((seq.clone(), bias)),
            }
        }
        let mut row = vec![0.0f32; scores.len()];
        for (seq, bias) in &dict {
            if seq.len() == 1 {
                if let Some(v) = row.get_mut(seq[0] as usize) {
                    *v = *bias;
                }
            }
        }
        let mut lengths: Vec<usize> = Vec::new();
        for (seq, _) in &dict {
            if seq.len() > 1 && !lengths.contains(&(seq.len() - 1)) {
                lengths.push(seq.len() - 1);
            }
        }
        for k in lengths {
            if k > history.len() {
                continue;
            }
            for (seq, bias) in dict.iter().filter(|(s, _)| s.len() == k + 1) {
                let matches = history[history.len() - k..] == seq[..k];
                if let Some(v) = row.get_mut(seq[k] as usize) {
                    *v += if matches { *bias } else { 0.0 };
                }
            }
        }
        scores.iter().zip(&row).map(|(s, b)| s + b).collect()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// transformers `tests/generation/test_logits_process.py::test_bias_dist_processor`
    /// (transcribed in `shared/fixtures/reference/hf_vectors.json`), row by row.
    #[test]
    fn transformers_vector() {
        let pairs = vec![
            (vec![1], 100.0),
            (vec![4], 100.0),
            (vec![1, 0], -100.0),
            (vec![0, 1, 2], -100.0),
            (vec![1, 3, 1, 3], -100.0),
            (vec![1, 3, 1, 3, 1, 3], -100.0),
        ];
        let mut stage = SequenceBias::new(pairs);
        let scores = [0.0f32; 5];
        assert_eq!(
            run(&mut stage, &[0, 1, 3, 1], &scores),
            [-100.0, 100.0, 0.0, -100.0, 100.0]
        );
        assert_eq!(
            run(&mut stage, &[0, 1, 0, 1], &scores),
            [-100.0, 100.0, -100.0, 0.0, 100.0]
        );
    }

    #[test]
    fn matches_reference_on_random_histories() {
        // Biases of very different sizes, so that the order of summation shows in the bits.
        let biases = [1e8f32, 1.0, -1e8, 0.1, 3.3, -0.7, 1e-8, -1e30, -2e30, 0.0];
        let mut rng = SplitMix(0x5e9_b1a5);
        for case in 0..5000 {
            let vocab = 1 + rng.below(4) as usize;
            let ids = vocab as u64 + rng.below(2);
            let history: Vec<u32> = (0..rng.below(6)).map(|_| rng.below(ids) as u32).collect();
            let pairs: Vec<(Vec<u32>, f32)> = (0..rng.below(8))
                .map(|_| {
                    let seq = (0..rng.below(4)).map(|_| rng.below(ids) as u32).collect();
                    (seq, biases[rng.below(biases.len() as u64) as usize])
                })
                .collect();
            let scores: Vec<f32> = (0..vocab)
                .map(|i| {
                    if rng.below(6) == 0 {
                        f32::NEG_INFINITY
                    } else {
                        i as f32 * 0.3 - 0.2
                    }
                })
                .collect();
            let mut stage = SequenceBias::new(pairs.clone());
            let got = run(&mut stage, &history, &scores);
            let want = reference(&pairs, &history, &scores);
            assert_eq!(
                bits(&got),
                bits(&want),
                "case {case}: {pairs:?} {history:?}: {got:?} vs {want:?}"
            );
            assert_eq!(bits(&run(&mut stage, &history, &scores)), bits(&got));
        }
    }

    #[test]
    fn edges() {
        let logits = [0.0f32; 4];
        let ban = f32::NEG_INFINITY;
        // Empty sequences, empty history, out-of-vocabulary ids: no panic.
        let mut stage = SequenceBias::new(vec![
            (vec![], 5.0),
            (vec![9], 1.0),
            (vec![9, 2], 2.0),
            (vec![1, 9], 3.0),
        ]);
        assert_eq!(run(&mut stage, &[], &logits), logits);
        assert_eq!(run(&mut stage, &[9], &logits), [0.0, 0.0, 2.0, 0.0]);
        // A prefix as long as the history matches; a longer one does not.
        let mut stage = SequenceBias::new(vec![(vec![1, 2, 3], 1.5)]);
        assert_eq!(run(&mut stage, &[1, 2], &logits), [0.0, 0.0, 0.0, 1.5]);
        assert_eq!(run(&mut stage, &[2], &logits), logits);
        // Biases sharing a last token add up; a ban wins over them.
        let mut stage = SequenceBias::new(vec![(vec![3], 1.0), (vec![1, 3], 2.0), (vec![3], 4.0)]);
        assert_eq!(run(&mut stage, &[1], &logits), [0.0, 0.0, 0.0, 6.0]);
        assert_eq!(run(&mut stage, &[0], &logits), [0.0, 0.0, 0.0, 4.0]);
        let mut stage = SequenceBias::new(vec![(vec![3], 1.0), (vec![1, 3], -1e30)]);
        assert_eq!(run(&mut stage, &[1], &logits), [0.0, 0.0, 0.0, ban]);
        // A masked token stays masked, whatever its bias.
        let masked = [ban, 0.0, 0.0, 0.0];
        let mut stage = SequenceBias::new(vec![(vec![0], 1e6)]);
        assert_eq!(run(&mut stage, &[], &masked), masked);
        // The sums follow transformers' order: the single-token bias, then the groups by
        // prefix length in order of first appearance. In f32, 1e8 + 1 = 1e8.
        let on = |pairs: Vec<(Vec<u32>, f32)>| {
            let mut stage = SequenceBias::new(pairs);
            run(&mut stage, &[0, 0], &logits)[3]
        };
        let (two, one, single) = ((vec![0, 0, 3], 1e8), (vec![0, 3], 1.0), (vec![3], -1e8));
        // -1e8 + 1e8 + 1 = 1.
        assert_eq!(on(vec![two.clone(), one.clone(), single.clone()]), 1.0);
        // -1e8 + 1 + 1e8 = 0.
        assert_eq!(on(vec![one.clone(), two.clone(), single]), 0.0);
        // A sequence listed twice keeps its last bias: -1e8 + 1 = -1e8.
        assert_eq!(on(vec![two, one, (vec![0, 0, 3], -1e8)]), -1e8);
    }
}
