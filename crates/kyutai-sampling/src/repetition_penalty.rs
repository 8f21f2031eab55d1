//! [`RepetitionPenalty`]: a decorator that penalises recently produced tokens.

use candle_core::Tensor;

use crate::logits::copy_to_host;
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
/// The penalty is applied to a host copy of the logits in O(vocab) for the copy plus O(context)
/// for the penalty; the buffers are reused from call to call. The inner sampler receives the
/// result through [`Sampler::sample_slice`].
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
    buffer: Vec<f32>,
    window: Vec<u32>,
}

impl<S: Sampler> RepetitionPenalty<S> {
    /// Wraps `inner`, penalising the last `context_size` tokens of history by `penalty`.
    ///
    /// # Errors
    ///
    /// [`SamplingError::InvalidParameter`] unless `penalty` is finite and > 0.
    pub fn new(inner: S, penalty: f32, context_size: usize) -> Result<Self, SamplingError> {
        check_penalty(penalty)?;
        Ok(Self {
            inner,
            penalty,
            context_size,
            buffer: Vec::new(),
            window: Vec::with_capacity(context_size.min(4096)),
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

    /// Applies the penalty to `self.buffer` in place.
    fn penalise(&mut self, history: &[u32]) {
        let start = history.len().saturating_sub(self.context_size);
        let vocab = self.buffer.len();
        self.window.clear();
        self.window.extend(
            history[start..]
                .iter()
                .copied()
                .filter(|&id| (id as usize) < vocab),
        );
        self.window.sort_unstable();
        self.window.dedup();
        for &id in &self.window {
            let logit = &mut self.buffer[id as usize];
            if *logit >= 0.0 {
                *logit /= self.penalty;
            } else {
                *logit *= self.penalty;
            }
        }
    }
}

impl<S: Sampler> Sampler for RepetitionPenalty<S> {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        if self.is_identity(history) {
            return self.inner.sample(logits, history);
        }
        copy_to_host(logits, &mut self.buffer)?;
        self.penalise(history);
        self.inner.sample_slice(&self.buffer, history)
    }

    fn sample_slice(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplingError> {
        if self.is_identity(history) {
            return self.inner.sample_slice(logits, history);
        }
        self.buffer.clear();
        self.buffer.extend_from_slice(logits);
        self.penalise(history);
        self.inner.sample_slice(&self.buffer, history)
    }

    fn reset(&mut self) {
        self.inner.reset();
    }
}
