//! [`RepetitionPenalty`]: a decorator that penalises recently produced tokens.

use candle_core::Tensor;

use crate::logits::{to_f32_vector, with_f32_slice};
use crate::params::check_penalty;
use crate::{Sampler, SamplingError};

/// Penalises the tokens seen in the last `context_size` entries of the history, then asks the
/// inner sampler.
///
/// The rule is candle's `apply_repeat_penalty`: each distinct token id in the window is penalised
/// once, a positive logit is divided by `penalty` and a negative one multiplied by it (0 and
/// `-inf` stay as they are). Ids at or beyond the vocabulary are skipped, not errors: Moshi's text
/// history, for instance, holds a start token outside the output vocabulary. A penalty above 1
/// discourages repetition, one below 1 encourages it, and exactly 1.0 is an exact identity (the
/// logits are handed to the inner sampler untouched).
///
/// The decorator costs O(context): it reads the logits of the tokens in the window (in place for
/// contiguous CPU f32 tensors) and hands the inner sampler the original logits plus the penalised
/// values through [`Sampler::sample_edited`]. When the window is long next to the vocabulary (a
/// 64-token window over a 2048-code codebook, where the native engine would copy the logits to
/// apply the edits anyway), it instead writes the penalised values into a copy of the logits and
/// hands that over through [`Sampler::sample_slice`]: no deduplication is needed then, since
/// penalising a token twice from the original logit writes the same value twice. Both forms give
/// the inner sampler the same logits, and so the same token. Its buffers are reused from call to
/// call.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{LogitsProcessorSampler, Sampler, SamplerExt, Sampling};
///
/// // Greedy would pick token 0 (logit 2.0); once 0 has been produced, 2.0 / 4 = 0.5 < 1.0.
/// let logits = Tensor::new(&[2.0f32, 1.0, -1.0], &Device::Cpu)?;
/// let mut sampler = LogitsProcessorSampler::from_sampling(0, Sampling::ArgMax)?
///     .with_repetition_penalty(4.0, 16)?;
/// assert_eq!(sampler.sample(&logits, &[])?, 0);
/// assert_eq!(sampler.sample(&logits, &[0])?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RepetitionPenalty<S> {
    inner: S,
    penalty: f32,
    context_size: usize,
    /// The distinct in-vocabulary ids of the window, then their penalised logits.
    edits: Vec<(u32, f32)>,
    /// Host copy of logits that cannot be read in place (other devices, strided views).
    scratch: Vec<f32>,
    /// One bit per token: the window's ids, for deduplicating them without a sort.
    seen: Vec<u64>,
    /// The penalised copy of the logits, when the window is long next to the vocabulary.
    copy: Vec<f32>,
}

impl<S: Sampler> RepetitionPenalty<S> {
    /// Wraps `inner`, penalising the last `context_size` tokens of history by `penalty`.
    ///
    /// # Errors
    ///
    /// [`SamplingError::InvalidParameter`] unless `penalty` is in `[1e-6, 1e6]`
    /// ([`limits`](crate::limits)).
    pub fn new(inner: S, penalty: f32, context_size: usize) -> Result<Self, SamplingError> {
        check_penalty(penalty)?;
        Ok(Self {
            inner,
            penalty,
            context_size,
            edits: Vec::with_capacity(context_size.min(4096)),
            scratch: Vec::new(),
            seen: Vec::new(),
            copy: Vec::new(),
        })
    }

    /// The penalty factor.
    pub fn penalty(&self) -> f32 {
        self.penalty
    }

    /// How many of the most recent history entries are penalised.
    pub fn context_size(&self) -> usize {
        self.context_size
    }

    /// The wrapped sampler.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped sampler, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner sampler.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn is_identity(&self, history: &[u32]) -> bool {
        self.penalty == 1.0 || self.context_size == 0 || history.is_empty()
    }
}

/// Fills `edits` with the penalised logit of each distinct in-vocabulary id of the window, in
/// increasing id order.
///
/// When the vocabulary's bitset is not much longer than the window (a 2048-code codebook, or
/// 32000 tokens under a 64-token window), the ids are marked in it and read back in order, with
/// no sort; otherwise they are sorted and deduplicated.
fn penalise(
    edits: &mut Vec<(u32, f32)>,
    seen: &mut Vec<u64>,
    logits: &[f32],
    window: &[u32],
    penalty: f32,
) {
    edits.clear();
    let words = logits.len().div_ceil(64);
    if words <= window.len().saturating_mul(8).saturating_add(64) {
        seen.clear();
        seen.resize(words, 0);
        for &id in window {
            if (id as usize) < logits.len() {
                if let Some(word) = seen.get_mut(id as usize / 64) {
                    *word |= 1 << (id % 64);
                }
            }
        }
        for (base, &word) in (0u32..).step_by(64).zip(seen.iter()) {
            let mut bits = word;
            while bits != 0 {
                let id = base + bits.trailing_zeros();
                bits &= bits - 1;
                if let Some(&logit) = logits.get(id as usize) {
                    edits.push((id, penalised(logit, penalty)));
                }
            }
        }
        return;
    }
    edits.extend(
        window
            .iter()
            .filter(|&&id| (id as usize) < logits.len())
            .map(|&id| (id, 0.0)),
    );
    edits.sort_unstable_by_key(|&(id, _)| id);
    edits.dedup_by_key(|&mut (id, _)| id);
    for (id, value) in edits.iter_mut() {
        if let Some(&logit) = logits.get(*id as usize) {
            *value = penalised(logit, penalty);
        }
    }
}

impl<S: Sampler> Sampler for RepetitionPenalty<S> {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        if self.is_identity(history) {
            return self.inner.sample(logits, history);
        }
        let logits = to_f32_vector(logits)?;
        let window = &history[history.len().saturating_sub(self.context_size)..];
        let (inner, edits, seen, copy, penalty) = (
            &mut self.inner,
            &mut self.edits,
            &mut self.seen,
            &mut self.copy,
            self.penalty,
        );
        with_f32_slice(&logits, &mut self.scratch, |values| {
            penalise_into(inner, edits, seen, copy, values, window, penalty, history)
        })
    }

    fn sample_slice(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplingError> {
        if self.is_identity(history) {
            return self.inner.sample_slice(logits, history);
        }
        let window = &history[history.len().saturating_sub(self.context_size)..];
        penalise_into(
            &mut self.inner,
            &mut self.edits,
            &mut self.seen,
            &mut self.copy,
            logits,
            window,
            self.penalty,
            history,
        )
    }

    /// Penalises the edited logits (`logits` with `edits` applied) and hands the inner sampler
    /// one merged list of edits, so that decorators stack without copying the vocabulary.
    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        history: &[u32],
    ) -> Result<u32, SamplingError> {
        if self.is_identity(history) {
            return self.inner.sample_edited(logits, edits, history);
        }
        let window = &history[history.len().saturating_sub(self.context_size)..];
        merge_penalised(&mut self.edits, logits, edits, window, self.penalty);
        self.inner.sample_edited(logits, &self.edits, history)
    }

    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Fills `out` with `edits` (each token once, the later entry winning) merged with the penalty
/// of each distinct in-vocabulary id of the window, applied to the edited value; sorted by token.
fn merge_penalised(
    out: &mut Vec<(u32, f32)>,
    logits: &[f32],
    edits: &[(u32, f32)],
    window: &[u32],
    penalty: f32,
) {
    out.clear();
    out.extend(
        edits
            .iter()
            .copied()
            .filter(|&(id, _)| (id as usize) < logits.len()),
    );
    // A stable sort keeps equal tokens in input order; keep the last of each run.
    out.sort_by_key(|&(id, _)| id);
    let mut write = 0;
    for read in 0..out.len() {
        if write > 0 && out[write - 1].0 == out[read].0 {
            out[write - 1] = out[read];
        } else {
            out[write] = out[read];
            write += 1;
        }
    }
    out.truncate(write);
    let given = out.len();
    out.extend(
        window
            .iter()
            .filter(|&&id| (id as usize) < logits.len())
            .map(|&id| (id, 0.0)),
    );
    out[given..].sort_unstable_by_key(|&(id, _)| id);
    let (head, tail) = out.split_at_mut(given);
    let mut last = None;
    for entry in tail.iter_mut() {
        if last == Some(entry.0) {
            entry.0 = u32::MAX; // a repeat of the previous id: dropped below
            continue;
        }
        last = Some(entry.0);
        match head.binary_search_by_key(&entry.0, |&(t, _)| t) {
            Ok(i) => {
                head[i].1 = penalised(head[i].1, penalty);
                entry.0 = u32::MAX; // merged into the given entry
            }
            Err(_) => entry.1 = penalised(logits[entry.0 as usize], penalty),
        }
    }
    out.retain(|&(id, _)| id != u32::MAX);
    out.sort_unstable_by_key(|&(id, _)| id);
}

/// Penalises `window`'s tokens of `logits` and asks `inner`: through a penalised copy when the
/// window is long next to the vocabulary (the native engine's copy rule, [`copies`] with the
/// window's length as the bound of its distinct ids), through [`penalise`]'s edits otherwise.
///
/// [`copies`]: crate::native::copies
#[allow(clippy::too_many_arguments)]
fn penalise_into<S: Sampler>(
    inner: &mut S,
    edits: &mut Vec<(u32, f32)>,
    seen: &mut Vec<u64>,
    copy: &mut Vec<f32>,
    logits: &[f32],
    window: &[u32],
    penalty: f32,
    history: &[u32],
) -> Result<u32, SamplingError> {
    if crate::native::copies(logits.len(), window.len()) {
        crate::native::copy_into(copy, logits);
        for &id in window {
            // Each write reads the original logit, so a repeated id writes the same value again.
            if let (Some(slot), Some(&logit)) = (copy.get_mut(id as usize), logits.get(id as usize))
            {
                *slot = penalised(logit, penalty);
            }
        }
        return inner.sample_slice(copy, history);
    }
    penalise(edits, seen, logits, window, penalty);
    inner.sample_edited(logits, edits, history)
}

/// candle's rule for one logit, kept inside `f32`'s finite range (candle's own would overflow to
/// `±inf` for a logit beyond `penalty * f32::MAX` or `f32::MAX / penalty`).
fn penalised(logit: f32, penalty: f32) -> f32 {
    let value = if logit >= 0.0 {
        logit / penalty
    } else {
        logit * penalty
    };
    crate::limits::saturate(value, logit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Each distinct in-vocabulary id once, increasing, with candle's rule applied.
    fn reference(logits: &[f32], window: &[u32], penalty: f32) -> Vec<(u32, f32)> {
        let mut ids: Vec<u32> = window
            .iter()
            .copied()
            .filter(|&id| (id as usize) < logits.len())
            .collect();
        ids.sort();
        ids.dedup();
        ids.iter()
            .map(|&id| (id, penalised(logits[id as usize], penalty)))
            .collect()
    }

    #[test]
    fn the_bitset_and_the_sort_give_the_same_edits() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (mut edits, mut seen) = (Vec::new(), Vec::new());
        // 2048 and 32000 under a 64-token window take the bitset; 262144 the sort.
        for (len, window_len, bitset) in [
            (2048usize, 64usize, true),
            (32000, 64, true),
            (262_144, 64, false),
            (5, 3, true),
        ] {
            for _ in 0..20 {
                let logits: Vec<f32> = (0..len).map(|_| rng.random_range(-5.0..5.0)).collect();
                // Repeats, and ids past the vocabulary.
                let window: Vec<u32> = (0..window_len)
                    .map(|_| rng.random_range(0..(len as u32 + 4).min(len as u32 / 2 + 4)))
                    .collect();
                seen.clear();
                penalise(&mut edits, &mut seen, &logits, &window, 1.3);
                assert_eq!(edits, reference(&logits, &window, 1.3), "len {len}");
                assert_eq!(!seen.is_empty(), bitset, "len {len}");
            }
        }
    }
    /// Records what it is handed: through which method, and the logits it would sample.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<(&'static str, Vec<f32>)>,
    }

    impl Sampler for Recorder {
        fn sample(&mut self, logits: &Tensor, _: &[u32]) -> Result<u32, SamplingError> {
            let values = logits.to_vec1::<f32>()?;
            self.seen.push(("tensor", values));
            Ok(0)
        }

        fn sample_slice(&mut self, logits: &[f32], _: &[u32]) -> Result<u32, SamplingError> {
            self.seen.push(("slice", logits.to_vec()));
            Ok(0)
        }

        fn sample_edited(
            &mut self,
            logits: &[f32],
            edits: &[(u32, f32)],
            _: &[u32],
        ) -> Result<u32, SamplingError> {
            let mut values = logits.to_vec();
            crate::sampler::apply_edits(&mut values, edits);
            self.seen.push(("edited", values));
            Ok(0)
        }
    }

    #[test]
    fn long_windows_hand_over_a_penalised_copy_and_short_ones_edits_of_the_same_logits() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // (vocabulary, window, whether the copy rule takes the copy)
        for (len, window_len, copied) in [
            (2048usize, 64usize, true),
            (5, 3, true),
            (4096, 16, true),
            (4096, 15, false),
            (32000, 64, false),
            (262_144, 64, false),
        ] {
            for round in 0..6 {
                let logits: Vec<f32> = (0..len).map(|_| rng.random_range(-5.0..5.0)).collect();
                // Repeats, and ids past the vocabulary.
                let window: Vec<u32> = (0..window_len)
                    .map(|_| rng.random_range(0..(len as u32 + 4).min(len as u32 / 2 + 4)))
                    .collect();
                let mut expected = logits.clone();
                crate::sampler::apply_edits(&mut expected, &reference(&logits, &window, 1.3));
                let mut sampler = RepetitionPenalty::new(Recorder::default(), 1.3, 1000).unwrap();
                if round % 2 == 0 {
                    sampler.sample_slice(&logits, &window).unwrap();
                } else {
                    let tensor = Tensor::new(logits.as_slice(), &candle_core::Device::Cpu).unwrap();
                    sampler.sample(&tensor, &window).unwrap();
                }
                let (how, values) = &sampler.get_ref().seen[0];
                assert_eq!(*how, if copied { "slice" } else { "edited" }, "len {len}");
                assert_eq!(values, &expected, "len {len} window {window_len}");
            }
        }
    }
}
