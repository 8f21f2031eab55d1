//! The [`Sampler`] trait, its forwarding impls and the [`SamplerExt`] combinators.

use candle_core::{Device, Tensor};

use crate::{RepetitionPenalty, SamplingError};

/// Chooses the next token of one stream from a vector of logits.
///
/// This is the one interface that generation code holds, usually as a [`BoxSampler`]. It is
/// object safe: `Box<dyn Sampler>` and `&mut dyn Sampler` are samplers too.
///
/// # Contract
///
/// * `logits` has shape `[vocab]` or `[1, vocab]`, any float dtype (f16, bf16 and f64 are
///   converted to f32 first) and any device.
/// * `history` holds the tokens this stream has produced so far, oldest first. Samplers that do
///   not look at history ignore it.
/// * A sampler never panics on bad logits and never returns a token whose logit is `-inf`:
///   empty logits, a wrong rank, an integer dtype, a NaN or `+inf` entry and all-`-inf` logits are
///   reported as [`SamplingError`]s.
///
/// # Implementing it
///
/// Only [`sample`](Self::sample) is required. [`reset`](Self::reset) should restore the state the
/// sampler had right after construction (a seeded sampler restarts its random stream).
/// [`sample_slice`](Self::sample_slice) is the host-memory entry point used by decorators that have
/// already read the logits into host memory; its default builds a CPU tensor and calls `sample`,
/// so override it only to skip that copy. [`sample_edited`](Self::sample_edited) is the entry
/// point of decorators that change a few logits, such as [`RepetitionPenalty`]: it receives the
/// unmodified logits plus a short list of replacements, so an engine that reads logits in place
/// can apply them without copying the whole vocabulary.
///
/// ```
/// use candle_core::Tensor;
/// use kyutai_sampling::{Sampler, SamplingError};
///
/// /// Always picks the last unmasked token.
/// struct Last;
///
/// impl Sampler for Last {
///     fn sample(&mut self, logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
///         let values = logits.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
///         kyutai_sampling::validate_logits(&values)?;
///         let last = values.iter().rposition(|x| *x > f32::NEG_INFINITY);
///         Ok(last.ok_or(SamplingError::AllMasked)? as u32)
///     }
/// }
///
/// let logits = Tensor::new(&[0.5f32, 2.0, f32::NEG_INFINITY], &candle_core::Device::Cpu)?;
/// let mut sampler: kyutai_sampling::BoxSampler = Box::new(Last);
/// assert_eq!(sampler.sample(&logits, &[])?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Sampler: Send {
    /// Next token from `logits` (shape `[vocab]`, or `[1, vocab]`; any float dtype, any device),
    /// given this stream's tokens so far, oldest first.
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError>;

    /// Back to the state right after construction (random stream restarted from the seed).
    fn reset(&mut self) {}

    /// Next token from logits already in host memory as f32 (one entry per token).
    ///
    /// Same contract as [`sample`](Self::sample): the values are validated and the same token is
    /// drawn as for a CPU tensor holding them. The default implementation builds that tensor.
    fn sample_slice(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplingError> {
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        let tensor = Tensor::from_slice(logits, logits.len(), &Device::Cpu)?;
        self.sample(&tensor, history)
    }

    /// Next token from `logits` with a few entries replaced: `edits` holds `(token, new_logit)`
    /// pairs, each token at most once and below `logits.len()`.
    ///
    /// The result is the token [`sample_slice`](Self::sample_slice) would draw from a copy of
    /// `logits` with the edits applied, which is what the default implementation does (it
    /// allocates that copy). Edited values are validated like any other logit.
    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        history: &[u32],
    ) -> Result<u32, SamplingError> {
        let mut copy = logits.to_vec();
        apply_edits(&mut copy, edits);
        self.sample_slice(&copy, history)
    }
}

/// Writes `edits` into `values`, ignoring tokens beyond its end.
pub(crate) fn apply_edits(values: &mut [f32], edits: &[(u32, f32)]) {
    for &(token, logit) in edits {
        if let Some(slot) = values.get_mut(token as usize) {
            *slot = logit;
        }
    }
}

impl<S: Sampler + ?Sized> Sampler for Box<S> {
    #[inline]
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        (**self).sample(logits, history)
    }
    #[inline]
    fn reset(&mut self) {
        (**self).reset()
    }
    #[inline]
    fn sample_slice(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplingError> {
        (**self).sample_slice(logits, history)
    }
    #[inline]
    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        history: &[u32],
    ) -> Result<u32, SamplingError> {
        (**self).sample_edited(logits, edits, history)
    }
}

impl<S: Sampler + ?Sized> Sampler for &mut S {
    #[inline]
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        (**self).sample(logits, history)
    }
    #[inline]
    fn reset(&mut self) {
        (**self).reset()
    }
    #[inline]
    fn sample_slice(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplingError> {
        (**self).sample_slice(logits, history)
    }
    #[inline]
    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        history: &[u32],
    ) -> Result<u32, SamplingError> {
        (**self).sample_edited(logits, edits, history)
    }
}

/// A type-erased sampler, the form generation code stores.
pub type BoxSampler = Box<dyn Sampler>;

/// A boxed greedy sampler: the largest logit, the lowest index on ties, with the same
/// validation as every other sampler. It draws no random numbers and cannot fail to build.
///
/// ```
/// use candle_core::{Device, Tensor};
///
/// let mut sampler = kyutai_sampling::greedy();
/// let logits = Tensor::new(&[0.5f32, 2.0, 2.0, -1.0], &Device::Cpu)?;
/// assert_eq!(sampler.sample(&logits, &[])?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn greedy() -> BoxSampler {
    Box::new(crate::LogitsProcessorSampler::greedy())
}

/// Combinators available on every [`Sampler`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{BoxSampler, LogitsProcessorSampler, Sampler, SamplerExt, Sampling};
///
/// let mut sampler: BoxSampler =
///     LogitsProcessorSampler::from_sampling(7, Sampling::TopK { k: 40, temperature: 0.8 })?
///         .with_repetition_penalty(1.1, 64)?
///         .boxed();
/// let logits = Tensor::new(&[0.2f32, 1.5, -0.3], &Device::Cpu)?;
/// assert!(sampler.sample(&logits, &[1, 1, 0])? < 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait SamplerExt: Sampler + Sized {
    /// Wraps `self` in a [`RepetitionPenalty`] over the last `context_size` tokens of history.
    fn with_repetition_penalty(
        self,
        penalty: f32,
        context_size: usize,
    ) -> Result<RepetitionPenalty<Self>, SamplingError> {
        RepetitionPenalty::new(self, penalty, context_size)
    }

    /// Erases the type: `Box::new(self)` as a [`BoxSampler`].
    fn boxed(self) -> BoxSampler
    where
        Self: 'static,
    {
        Box::new(self)
    }
}

impl<S: Sampler> SamplerExt for S {}
