//! DRY ("don't repeat yourself"): penalises every token that would extend a repeat of the
//! recent context.
//!
//! # Definition
//! Let `w` be the window (the last `last_n` tokens of the history, or all of it) and `m` its
//! length.
//!
//! 1. **Repeat limit `R`.** Walk `w` from its newest token back to the first position `p` whose
//!    token is the head (first token) of a sequence breaker lying wholly inside the window,
//!    `w[p..=p + t] == breaker` with `t` the breaker's length less one; when several breakers
//!    share that head, take the longest that matches. `R = m − 1 − (p + t)`, the number of tokens after it; `R = m` when no breaker
//!    occurs. A repeated suffix may not reach back over that breaker.
//! 2. **Repeat lengths.** For each position `j < m − 1`, `n_j = min(R, s_j)`, where `s_j` is the
//!    length of the longest common suffix of `w[..=j]` and `w`: the newest `s_j` tokens also
//!    occurred ending at `j`, and were followed there by `w[j + 1]`.
//! 3. **Per token.** `L(c) = max { n_j : w[j + 1] = c }`: the longest repeat that emitting `c`
//!    would extend.
//! 4. **Penalty.** When `L(c) ≥ allowed_length` and `c` is not itself a single-token breaker,
//!    `ℓ_c ← ℓ_c − multiplier · base^e` with `e = min(L(c) − allowed_length, E)`, where
//!    `E = ⌊88.72284 / ln base⌋` (f32 arithmetic; `ln f32::MAX ≈ 88.72284`) keeps `base^e` from
//!    overflowing, and applies only when `base > 1.000001`. The power and the product are
//!    computed in f64 and rounded once to f32, as llama.cpp's `std::pow(float, int)` promotes
//!    to double. A masked token stays masked.
//!
//! # Parameters
//! * `multiplier`: finite, `≥ 0`; 0 is off.
//! * `base`: finite, `≥ 1`; below 1 is off (llama.cpp's rule).
//! * `allowed_length`: repeats shorter than this are free (llama.cpp's default 2). With 0,
//!   every token of `w[1..]` is penalised by at least `multiplier`.
//! * `last_n`: the window in tokens of history; `None` is the whole history, `Some(0)` is off.
//! * `breakers`: sequence breakers as token-id sequences, head first; empty ones are ignored,
//!   duplicates count once.
//!
//! History ids outside the vocabulary are compared like any other id but are never edited.
//!
//! # Library rules
//! llama.cpp's `llama_sampler_dry_apply` (ported from koboldcpp PR 982, after p-e-w's design in
//! text-generation-webui PR 5677), followed step for step, including its edges:
//! * the breaker scan stops at the newest *head* that completes a breaker, not at the newest
//!   breaker *end*: a longer breaker whose head is older is ignored even when it ends later;
//! * a multi-token breaker only counts once wholly inside the window: one still being written
//!   at the end of the window, or whose head has slid out of it, does not limit the repeat;
//! * only the newest suffix is limited by the breaker: the earlier occurrence it matches may
//!   span breakers;
//! * single-token breakers are never penalised; the head or tail tokens of a multi-token
//!   breaker can be.
//!
//! Where this differs from llama.cpp's API, not its rule: llama.cpp takes breakers as strings
//! and expands each against the vocabulary (every token containing the string becomes a
//! single-token breaker; a token ending in a prefix of the string becomes a head whose tail is
//! the tokenised rest, cut to 20 tokens). Without a tokenizer this crate takes the expanded id
//! sequences, as llama.cpp's `llama_sampler_init_dry_testing` does, and cuts nothing. llama.cpp
//! also caps the window at the model's training context; `None` here is the whole history
//! given. mistral.rs has DRY with single-token breakers and repeats capped at 50 tokens;
//! transformers and vLLM have none.
//!
//! # Cost
//! O(m) for the repeat lengths (a Z-algorithm over the reversed window), O(k log k) to keep
//! the longest repeat per token among the `k ≤ m` positions reaching `allowed_length`, and one
//! `pow` per penalised token. The breaker scan usually stops at the first breaker met; its
//! worst case is O(m · T), `T` the total tail length of the breakers sharing a head. Scratch
//! buffers live in the stage and grow to the window once; no per-call allocation after that.

use crate::chain::edits::EditCx;

/// `ln(f32::MAX)`, rounded as llama.cpp writes it (`88.7228391f`, the same f32).
const FLOAT_MAX_LOG: f32 = 88.72284;

/// The DRY stage: validated parameters and reusable scratch buffers.
#[derive(Clone, Debug)]
pub(crate) struct Dry {
    /// Penalty scale; the stage is off when 0.
    multiplier: f32,
    /// Growth of the penalty per token of repeat beyond `allowed_length`.
    base: f32,
    /// Shortest repeat that is penalised.
    allowed_length: usize,
    /// Window in tokens of history; `None` is the whole history.
    last_n: Option<usize>,
    /// Whether the stage does anything (llama.cpp's `multiplier != 0 && base >= 1`).
    enabled: bool,
    /// Largest exponent of `base`, or 0 for no clamp (llama.cpp's `max_exponent`).
    max_exponent: usize,
    /// Sequence breakers as `(head, tail)`, sorted and deduplicated; an empty tail is a
    /// single-token breaker.
    breakers: Vec<(u32, Vec<u32>)>,
    /// Scratch: the window, newest token first.
    reversed: Vec<u32>,
    /// Scratch: the Z-array of `reversed`.
    z: Vec<usize>,
    /// Scratch: `(candidate token, repeat length)` for every position reaching
    /// `allowed_length`.
    hits: Vec<(u32, usize)>,
}

impl Dry {
    /// A DRY stage. The parameters are expected in the ranges of the module documentation (the
    /// configuration layer checks them); out of range, the stage still never panics, and is off
    /// for a zero or NaN `multiplier` and a `base` below 1 or NaN.
    pub(crate) fn new(
        multiplier: f32,
        base: f32,
        allowed_length: usize,
        last_n: Option<usize>,
        breakers: Vec<Vec<u32>>,
    ) -> Self {
        let enabled = multiplier != 0.0 && !multiplier.is_nan() && base >= 1.0;
        let max_exponent = if base > 1.000_001 {
            // Truncation toward zero, as C++'s float-to-int conversion.
            (FLOAT_MAX_LOG / base.ln()) as usize
        } else {
            0
        };
        let mut breakers: Vec<(u32, Vec<u32>)> = breakers
            .into_iter()
            .filter_map(|b| {
                let (&head, tail) = b.split_first()?;
                Some((head, tail.to_vec()))
            })
            .collect();
        breakers.sort_unstable();
        breakers.dedup();
        Self {
            multiplier,
            base,
            allowed_length,
            last_n,
            enabled,
            max_exponent,
            breakers,
            reversed: Vec::new(),
            z: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// Subtracts the DRY penalty from every token that would extend a repeat of `history`
    /// (oldest first).
    pub(crate) fn apply(&mut self, history: &[u32], cx: &mut EditCx<'_>) {
        if !self.enabled {
            return;
        }
        let window = match self.last_n {
            None => history,
            Some(n) => history
                .get(history.len().saturating_sub(n)..)
                .unwrap_or_default(),
        };
        let m = window.len();
        // No repeat can reach `allowed_length` (n_j <= j + 1 <= m - 1): llama.cpp's early exit.
        if m <= self.allowed_length {
            return;
        }
        let limit = self.repeat_limit(window);
        if limit < self.allowed_length {
            return;
        }

        self.reversed.clear();
        self.reversed.extend(window.iter().rev());
        z_array(&self.reversed, &mut self.z);

        // z[k] (k >= 1) is the longest common suffix of w[..m - k] and w; the token that
        // followed it is w[m - k] = reversed[k - 1].
        self.hits.clear();
        for (&s, &next) in self.z.iter().skip(1).zip(&self.reversed) {
            let n = s.min(limit);
            if n >= self.allowed_length {
                self.hits.push((next, n));
            }
        }
        if self.hits.is_empty() {
            return;
        }
        // Sorted by (token, length): the last entry of each token's run is its longest repeat.
        self.hits.sort_unstable();
        let mut hits = self.hits.iter().peekable();
        while let Some(&(token, len)) = hits.next() {
            if hits.peek().is_some_and(|&&(next, _)| next == token) {
                continue;
            }
            if self.is_single_token_breaker(token) {
                continue;
            }
            let mut exponent = len - self.allowed_length;
            if self.max_exponent > 0 && exponent > self.max_exponent {
                exponent = self.max_exponent;
            }
            let penalty =
                (f64::from(self.multiplier) * f64::from(self.base).powf(exponent as f64)) as f32;
            cx.add(token, -penalty);
        }
    }

    /// The tails of the breakers whose head is `token`.
    fn tails(&self, token: u32) -> impl Iterator<Item = &[u32]> {
        let start = self.breakers.partition_point(|(head, _)| *head < token);
        self.breakers
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(move |(head, _)| *head == token)
            .map(|(_, tail)| tail.as_slice())
    }

    /// Whether `token` on its own is a sequence breaker.
    fn is_single_token_breaker(&self, token: u32) -> bool {
        self.tails(token).any(|tail| tail.is_empty())
    }

    /// Step 1: the number of tokens after the breaker found by scanning back from the newest
    /// head (the window's length when none is found).
    fn repeat_limit(&self, window: &[u32]) -> usize {
        if self.breakers.is_empty() {
            return window.len();
        }
        for (p, &token) in window.iter().enumerate().rev() {
            let after = window.get(p + 1..).unwrap_or_default();
            let longest = self
                .tails(token)
                .filter(|tail| after.starts_with(tail))
                .map(<[u32]>::len)
                .max();
            if let Some(tail_len) = longest {
                return after.len() - tail_len;
            }
        }
        window.len()
    }
}

/// The Z-array of `s` into `z`: `z[k]` is the length of the longest common prefix of `s` and
/// `s[k..]` (`z[0] = s.len()`). Linear: the box `[left, right)` is the rightmost match found,
/// and each comparison that succeeds moves `right`.
fn z_array(s: &[u32], z: &mut Vec<usize>) {
    z.clear();
    z.push(s.len());
    let (mut left, mut right) = (0usize, 0usize);
    for k in 1..s.len() {
        let mut len = if k < right {
            (right - k).min(z.get(k - left).copied().unwrap_or(0))
        } else {
            0
        };
        while let (Some(a), Some(b)) = (s.get(len), s.get(k + len)) {
            if a != b {
                break;
            }
            len += 1;
        }
        z.push(len);
        if k + len > right {
            left = k;
            right = k + len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::stage::test_support::{edited, SplitMix};

    /// Runs `dry` on `logits` and returns the edited logits.
    fn run(dry: &mut Dry, history: &[u32], logits: &[f32]) -> Vec<f32> {
        edited(logits, |cx| dry.apply(history, cx))
    }

    fn softmax(x: &[f32]) -> Vec<f32> {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = x.iter().map(|&v| (v - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        e.iter().map(|&v| v / sum).collect()
    }

    /// The rule written out literally, O(m²) and more: for every candidate token and every
    /// earlier position it followed, compare suffixes one token at a time.
    fn reference(
        multiplier: f32,
        base: f32,
        allowed: usize,
        last_n: Option<usize>,
        breakers: &[Vec<u32>],
        history: &[u32],
        logits: &[f32],
    ) -> Vec<f32> {
        let mut out = logits.to_vec();
        if multiplier == 0.0 || base < 1.0 {
            return out;
        }
        let start = match last_n {
            None => 0,
            Some(n) => history.len().saturating_sub(n),
        };
        let w = &history[start..];
        let m = w.len();
        let breakers: Vec<&Vec<u32>> = breakers.iter().filter(|b| !b.is_empty()).collect();

        // Newest head position first; at that head, the longest breaker wholly in the window.
        let mut limit = m;
        'scan: for p in (0..m).rev() {
            let mut best: Option<usize> = None;
            for b in &breakers {
                let fits = p + b.len() <= m;
                if b[0] == w[p] && fits && w[p..p + b.len()] == b[..] {
                    best = Some(best.map_or(b.len(), |x: usize| x.max(b.len())));
                }
            }
            if let Some(len) = best {
                limit = m - (p + len);
                break 'scan;
            }
        }

        for (c, value) in out.iter_mut().enumerate() {
            let c = c as u32;
            if breakers.iter().any(|b| b.len() == 1 && b[0] == c) {
                continue;
            }
            let mut longest: Option<usize> = None;
            for j in 0..m.saturating_sub(1) {
                if w[j + 1] != c {
                    continue;
                }
                let mut s = 0;
                while s <= j && w[j - s] == w[m - 1 - s] {
                    s += 1;
                }
                let n = s.min(limit);
                if n >= allowed {
                    longest = Some(longest.map_or(n, |x: usize| x.max(n)));
                }
            }
            if let Some(len) = longest {
                let mut e = (len - allowed) as i64;
                if base > 1.000_001 {
                    let cap = (88.722_84_f32 / base.ln()) as i64;
                    if cap > 0 && e > cap {
                        e = cap;
                    }
                }
                let penalty = (multiplier as f64 * (base as f64).powf(e as f64)) as f32;
                *value -= penalty;
            }
        }
        out
    }

    /// llama.cpp `tests/test-sampling.cpp`, `test_dry` (transcribed in
    /// `shared/fixtures/reference/llamacpp_vectors.json`): probabilities after DRY and a
    /// softmax, uniform inputs, window `penalty_last_n`.
    #[test]
    fn llama_cpp_vectors() {
        #[allow(clippy::type_complexity)]
        let cases: &[(f32, f32, usize, usize, &[&[u32]], &[u32], &[f32], &[f32])] = &[
            (1.0, 1.1, 2, 4, &[], &[0, 1], &[0.25; 4], &[0.25; 4]),
            (
                1.0,
                1.1,
                2,
                5,
                &[],
                &[0, 1, 2, 0, 1],
                &[0.25; 4],
                &[0.296923, 0.296923, 0.109232, 0.296923],
            ),
            (
                1.0,
                1.1,
                2,
                6,
                &[&[3]],
                &[0, 1, 3, 4, 0, 1],
                &[0.2; 5],
                &[0.2; 5],
            ),
            (
                2.0,
                1.1,
                2,
                5,
                &[],
                &[0, 1, 2, 0, 1],
                &[0.2; 5],
                &[0.241818, 0.241818, 0.032727, 0.241818, 0.241818],
            ),
            (
                1.0,
                1.1,
                4,
                7,
                &[],
                &[0, 1, 2, 3, 4, 0, 1],
                &[0.2; 5],
                &[0.2; 5],
            ),
        ];
        for &(mult, base, allowed, last_n, breakers, history, probs, expected) in cases {
            let breakers: Vec<Vec<u32>> = breakers.iter().map(|b| b.to_vec()).collect();
            let mut dry = Dry::new(mult, base, allowed, Some(last_n), breakers);
            let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
            let got = softmax(&run(&mut dry, history, &logits));
            for (g, e) in got.iter().zip(expected) {
                assert!(
                    (g - e).abs() <= 1e-5,
                    "{history:?}: {got:?} vs {expected:?}"
                );
            }
        }
    }

    #[test]
    fn matches_reference_on_random_histories() {
        let mut rng = SplitMix(0x0d1e_5eed);
        for case in 0..3000 {
            let vocab = 2 + rng.below(6) as usize;
            // Some ids past the vocabulary, which are matched but never edited.
            let ids = vocab as u64 + rng.below(2);
            let len = rng.below(40) as usize;
            let history: Vec<u32> = (0..len).map(|_| rng.below(ids) as u32).collect();
            let breakers: Vec<Vec<u32>> = (0..rng.below(4))
                .map(|_| (0..rng.below(4)).map(|_| rng.below(ids) as u32).collect())
                .collect();
            let allowed = rng.below(4) as usize;
            let last_n = match rng.below(3) {
                0 => None,
                _ => Some(rng.below(45) as usize),
            };
            let mult = [0.0, 0.8, 2.0][rng.below(3) as usize];
            let base = [0.9, 1.0, 1.75, 3.0][rng.below(4) as usize];
            let logits: Vec<f32> = (0..vocab)
                .map(|i| {
                    if rng.below(8) == 0 {
                        f32::NEG_INFINITY
                    } else {
                        i as f32 * 0.37 - 1.0
                    }
                })
                .collect();
            let mut dry = Dry::new(mult, base, allowed, last_n, breakers.clone());
            let got = run(&mut dry, &history, &logits);
            let want = reference(mult, base, allowed, last_n, &breakers, &history, &logits);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "case {case}: history {history:?} breakers {breakers:?} allowed {allowed} \
                 last_n {last_n:?}: {got:?} vs {want:?}"
            );
            // The scratch buffers carry nothing over: a second call gives the same result.
            assert_eq!(run(&mut dry, &history, &logits), got);
        }
    }

    #[test]
    fn edges() {
        let logits = [0.0f32; 4];
        let mut dry = Dry::new(1.0, 2.0, 2, None, vec![]);
        // Empty and short histories.
        assert_eq!(run(&mut dry, &[], &logits), logits);
        assert_eq!(run(&mut dry, &[1, 1], &logits), logits);
        // "a a a": the suffix "a a" ended at position 1 and was followed by a.
        assert_eq!(run(&mut dry, &[1, 1, 1], &logits), [0.0, -1.0, 0.0, 0.0]);
        // Out-of-vocabulary ids: matched, never edited, no panic.
        assert_eq!(run(&mut dry, &[9, 9, 9, 9], &logits), logits);
        assert_eq!(
            run(&mut dry, &[9, 2, 7, 9, 2], &logits),
            logits,
            "7 follows the repeat, but is outside the vocabulary"
        );
        assert_eq!(
            run(&mut dry, &[9, 2, 3, 9, 2], &logits),
            [0.0, 0.0, 0.0, -1.0]
        );
        // Off: window of 0, multiplier 0, base below 1.
        for mut off in [
            Dry::new(1.0, 2.0, 2, Some(0), vec![]),
            Dry::new(0.0, 2.0, 2, None, vec![]),
            Dry::new(1.0, 0.5, 2, None, vec![]),
        ] {
            assert_eq!(run(&mut off, &[1, 2, 1, 2, 1, 2], &logits), logits);
        }
        // Masked tokens stay masked.
        let masked = [0.0, f32::NEG_INFINITY, 0.0, 0.0];
        assert_eq!(run(&mut dry, &[1, 1, 1], &masked), masked);
    }

    #[test]
    fn single_token_breakers_are_never_penalised() {
        let logits = [0.0f32; 4];
        // "1 2 1 2 1" repeats "1 2 1" before 2; 2 is a breaker itself, but nothing after the
        // newest 2 repeats, so only the limit matters: R = 1 < allowed 2, nothing penalised.
        let mut dry = Dry::new(1.0, 2.0, 2, None, vec![vec![2]]);
        assert_eq!(run(&mut dry, &[1, 2, 1, 2, 1], &logits), logits);
        // With allowed 0 every following token would pay, except the breaker 2.
        let mut dry = Dry::new(1.0, 2.0, 0, None, vec![vec![2]]);
        let got = run(&mut dry, &[1, 2, 1, 2, 1], &logits);
        assert_eq!(got[2], 0.0);
        assert!(got[1] < 0.0);
    }

    #[test]
    fn multi_token_breaker_edges() {
        let logits = [0.0f32; 8];
        // Window 0 1 2 3 0 1 2 with breaker (3, 0): the suffix "1 2" after it repeats; the
        // newest "1 2" was followed by 3 before: L(3) = 2, penalty 1.
        let mut dry = Dry::new(1.0, 2.0, 2, None, vec![vec![3, 0]]);
        assert_eq!(run(&mut dry, &[0, 1, 2, 3, 0, 1, 2], &logits)[3], -1.0);
        // Breaker (3, 0, 1): the suffix after it is "2" alone, R = 1 < 2: nothing.
        let mut dry = Dry::new(1.0, 2.0, 2, None, vec![vec![3, 0, 1]]);
        assert_eq!(run(&mut dry, &[0, 1, 2, 3, 0, 1, 2], &logits), logits);
        // A breaker still being written at the end of the window does not count:
        // "0 1 2 0 1" with breaker (1, 5): its tail 5 is not there yet, L(2) = 2.
        let mut dry = Dry::new(1.0, 2.0, 2, None, vec![vec![1, 5]]);
        assert_eq!(run(&mut dry, &[0, 1, 2, 0, 1], &logits)[2], -1.0);
        // A breaker whose head slid out of the window does not count either: breaker (7, 0, 0)
        // before a run of 0s. In the whole history it limits the repeat to the 3 tokens after
        // it (L(0) = 3, penalty 2); in a window of 5 its head is gone (L(0) = 4, penalty 4).
        let history = [7, 0, 0, 0, 0, 0];
        let mut whole = Dry::new(1.0, 2.0, 2, None, vec![vec![7, 0, 0]]);
        assert_eq!(run(&mut whole, &history, &logits)[0], -2.0);
        let mut window = Dry::new(1.0, 2.0, 2, Some(5), vec![vec![7, 0, 0]]);
        assert_eq!(run(&mut window, &history, &logits)[0], -4.0);
        // The newest head wins, even when an older head's longer breaker ends later. In
        // "1..7 1..7 1 2 3" the suffix "1 2 3 4 5 6 7 1 2 3" follows an earlier one by 4.
        // Breaker (5, 6, 7) alone ends 3 tokens from the end: L(4) = 3, penalty 2. With (6)
        // too, the scan meets the head 6 first and stops there: 4 tokens after it, L(4) = 4,
        // penalty 4.
        let history = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3];
        let mut only_long = Dry::new(1.0, 2.0, 2, None, vec![vec![5, 6, 7]]);
        assert_eq!(run(&mut only_long, &history, &logits)[4], -2.0);
        let mut newest = Dry::new(1.0, 2.0, 2, None, vec![vec![6], vec![5, 6, 7]]);
        assert_eq!(run(&mut newest, &history, &logits)[4], -4.0);
        // Among the breakers sharing the head, the longest that matches is used: (6, 7) ends
        // one token later than (6).
        let mut same_head = Dry::new(1.0, 2.0, 2, None, vec![vec![6], vec![6, 7]]);
        assert_eq!(run(&mut same_head, &history, &logits)[4], -2.0);
        let mut single = Dry::new(1.0, 2.0, 2, None, vec![vec![6]]);
        assert_eq!(run(&mut single, &history, &logits)[4], -4.0);
    }

    #[test]
    fn exponent_is_clamped() {
        // base 1e10: E = floor(88.72284 / ln 1e10) = 3, so a repeat of 20 pays base^3 only.
        let history: Vec<u32> = std::iter::repeat_n(1, 22).collect();
        let logits = [0.0f32; 3];
        let mut dry = Dry::new(1.0, 1e10, 0, None, vec![]);
        let got = run(&mut dry, &history, &logits);
        assert_eq!(got[1], -((1e10f64).powi(3) as f32));
        // Below the clamp threshold the penalty is not clamped (and may overflow to -inf).
        let mut dry = Dry::new(1.0, 1.000_000_5, 0, None, vec![]);
        let got = run(&mut dry, &history, &logits);
        assert_eq!(got[1], -((1.000_000_5f32 as f64).powf(21.0) as f32));
    }
}
