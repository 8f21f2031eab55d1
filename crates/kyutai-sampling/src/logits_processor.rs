//! [`LogitsProcessorSampler`]: candle's `LogitsProcessor` behind the [`Sampler`] trait.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::logits::{argmax, to_f32_vector, validate_logits, with_f32_slice};
use crate::params::{check_sampling, sampling_from_options};
use crate::sampler::apply_edits;
use crate::{Sampler, SamplingError};

/// An adapter over candle-transformers' [`LogitsProcessor`]: for the same seed and the same
/// logits it returns exactly the tokens `LogitsProcessor` returns, for every [`Sampling`] variant.
///
/// What it adds is validation. Parameters are checked at construction (see
/// [`from_sampling`](Self::from_sampling)); logits are checked at every call, so the inputs on
/// which candle panics (empty or rank-0 logits) or returns a wrong token silently (NaN, `+inf`,
/// everything masked, integer dtypes) give a [`SamplingError`] instead. `[1, vocab]` logits are
/// accepted and squeezed.
///
/// # Reproducibility
///
/// candle draws from `rand::rngs::StdRng`, which rand documents as *not* portable: a later rand
/// release may change the stream for the same seed. Streams are therefore reproducible for a fixed
/// `Cargo.lock` and platform, not across dependency upgrades; use
/// [`NativeSampler`](crate::NativeSampler) for streams pinned by this crate.
///
/// `Sampling::GumbelSoftmax` is the exception: candle draws its noise from the device's own,
/// unseeded generator, so the seed does not control it and two samplers built alike give
/// different streams. `ArgMax` consumes no randomness at all (the adapter computes the argmax
/// during validation; the lowest index wins ties, as in candle).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{LogitsProcessorSampler, Sampler, Sampling};
///
/// let logits = Tensor::new(&[1.0f32, 3.0, 0.5, 2.0], &Device::Cpu)?;
/// let mut sampler = LogitsProcessorSampler::from_sampling(42, Sampling::TopK { k: 2, temperature: 1.0 })?;
/// let token = sampler.sample(&logits, &[])?;
/// assert!(token == 1 || token == 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LogitsProcessorSampler {
    seed: u64,
    sampling: Sampling,
    processor: LogitsProcessor,
    scratch: Vec<f32>,
}

impl LogitsProcessorSampler {
    /// A sampler for `sampling`, seeded with `seed`.
    ///
    /// # Errors
    ///
    /// [`SamplingError::InvalidParameter`] when a temperature is not finite and > 0, `k` is 0, or
    /// `p` is outside `(0, 1]`. (candle accepts all of these and then fails at sampling time or
    /// samples from a different distribution than asked.)
    pub fn from_sampling(seed: u64, sampling: Sampling) -> Result<Self, SamplingError> {
        check_sampling(&sampling)?;
        Ok(Self {
            seed,
            processor: LogitsProcessor::from_sampling(seed, sampling.clone()),
            sampling,
            scratch: Vec::new(),
        })
    }

    /// candle's `LogitsProcessor::new` mapping: no temperature, or one below `1e-7` (negative ones
    /// included), means `ArgMax`; otherwise `TopP { p, temperature }` when `top_p` is given and
    /// `All { temperature }` when it is not.
    ///
    /// # Errors
    ///
    /// A NaN or `+inf` temperature, or a `top_p` outside `(0, 1]` (checked even when the
    /// temperature makes the sampler greedy).
    pub fn new(
        seed: u64,
        temperature: Option<f64>,
        top_p: Option<f64>,
    ) -> Result<Self, SamplingError> {
        Self::from_sampling(seed, sampling_from_options(temperature, top_p)?)
    }

    /// A greedy sampler (`Sampling::ArgMax`): the largest logit, the lowest index on ties. It
    /// draws no random numbers, so it needs no seed and cannot fail to build.
    pub fn greedy() -> Self {
        Self {
            seed: 0,
            processor: LogitsProcessor::from_sampling(0, Sampling::ArgMax),
            sampling: Sampling::ArgMax,
            scratch: Vec::new(),
        }
    }

    /// The strategy this sampler draws with.
    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// The seed it was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn draw(&mut self, logits: &Tensor) -> Result<u32, SamplingError> {
        Ok(self.processor.sample(logits)?)
    }
}

impl Sampler for LogitsProcessorSampler {
    fn sample(&mut self, logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
        let logits = to_f32_vector(logits)?;
        let greedy = matches!(self.sampling, Sampling::ArgMax);
        let token = with_f32_slice(&logits, &mut self.scratch, |values| {
            if greedy {
                argmax(values).map(Some)
            } else {
                validate_logits(values).map(|()| None)
            }
        })?;
        match token {
            Some(token) => Ok(token),
            None => self.draw(&logits),
        }
    }

    fn sample_slice(&mut self, logits: &[f32], _history: &[u32]) -> Result<u32, SamplingError> {
        if matches!(self.sampling, Sampling::ArgMax) {
            return argmax(logits);
        }
        validate_logits(logits)?;
        let tensor = Tensor::from_slice(logits, logits.len(), &Device::Cpu)?;
        self.draw(&tensor)
    }

    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        history: &[u32],
    ) -> Result<u32, SamplingError> {
        let mut copy = std::mem::take(&mut self.scratch);
        copy.clear();
        copy.extend_from_slice(logits);
        apply_edits(&mut copy, edits);
        let token = self.sample_slice(&copy, history);
        self.scratch = copy;
        token
    }

    fn reset(&mut self) {
        self.processor = LogitsProcessor::from_sampling(self.seed, self.sampling.clone());
    }
}

impl std::fmt::Debug for LogitsProcessorSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitsProcessorSampler")
            .field("seed", &self.seed)
            .field("sampling", &self.sampling)
            .finish_non_exhaustive()
    }
}
