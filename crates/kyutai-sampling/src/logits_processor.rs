//! [`LogitsProcessorSampler`]: candle's `LogitsProcessor` behind the [`Sampler`] trait.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use crate::logits::{argmax, max_logit, to_f32_vector, with_f32_slice};
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
/// Where candle's own arithmetic would overflow (`logits / temperature` past `f32::MAX` for a
/// logit near `±3e38`, or a tiny temperature), candle would fail with NaN probabilities; the
/// adapter then hands it the logits shifted by their maximum, which leaves the distribution
/// unchanged and keeps candle's arithmetic finite. For `GumbelSoftmax` it always does: candle
/// adds its noise, scaled by the temperature, to the unscaled logits, where it vanishes below
/// the rounding step of large logits (or of any logit at a tiny temperature), so that tied
/// maxima would always give the lowest index. Temperatures are bounded
/// ([`limits`](crate::limits)), which also keeps that noise finite, so a `-inf` logit is never
/// drawn.
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
    /// [`SamplingError::InvalidParameter`] when a temperature is outside `[1e-7, 1e6]`, `k` is 0,
    /// or `p` is outside `[1.1754944e-38, 1]` (see [`limits`](crate::limits)). (candle accepts all
    /// of these and then fails at sampling time or samples from a different distribution than
    /// asked.)
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
    /// A NaN temperature or one above `1e6`, or a `top_p` outside `[1.1754944e-38, 1]` (checked
    /// even when the temperature makes the sampler greedy).
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

    /// Whether candle needs the logits shifted by their maximum `max` to compute what it means
    /// to: when its `logits / temperature` (computed in `f32` as `x * (1 / T)`) takes `max` out
    /// of `f32`'s range, which makes its softmax NaN, and always for Gumbel-max, which adds
    /// noise of size `T` to the *unscaled* logits in `f32`: next to a logit of `1e10` (or of 10
    /// at `T = 1e-7`) the noise is below the logit's rounding step, so ties and near-ties
    /// would go to the lowest index instead of being drawn.
    fn needs_shift(&self, max: f32) -> bool {
        let temperature = match self.sampling {
            Sampling::All { temperature }
            | Sampling::TopK { temperature, .. }
            | Sampling::TopP { temperature, .. }
            | Sampling::TopKThenTopP { temperature, .. } => temperature,
            Sampling::GumbelSoftmax { .. } => return true,
            Sampling::ArgMax => return false,
        };
        !(max * (1.0 / temperature) as f32).is_finite()
    }

    /// Draws from validated logits whose largest value is `max`. Where
    /// [`needs_shift`](Self::needs_shift), candle gets the logits shifted by `-max`: the
    /// distribution does not change under a shift, the shifted maximum is 0, and the logits
    /// near it are exact (`x - max` is exact for `x` within a factor of 2 of `max`). Every other
    /// input reaches candle unchanged.
    fn draw_checked(&mut self, logits: &[f32], max: f32) -> Result<u32, SamplingError> {
        let tensor = if self.needs_shift(max) {
            let shifted: Vec<f32> = logits.iter().map(|&x| x - max).collect();
            Tensor::from_vec(shifted, logits.len(), &Device::Cpu)?
        } else {
            Tensor::from_slice(logits, logits.len(), &Device::Cpu)?
        };
        self.draw(&tensor)
    }
}

impl Sampler for LogitsProcessorSampler {
    fn sample(&mut self, logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
        let logits = to_f32_vector(logits)?;
        if matches!(self.sampling, Sampling::ArgMax) {
            return with_f32_slice(&logits, &mut self.scratch, argmax);
        }
        let max = with_f32_slice(&logits, &mut self.scratch, max_logit)?;
        if self.needs_shift(max) {
            let values = logits.flatten_all()?.to_vec1::<f32>()?;
            return self.draw_checked(&values, max);
        }
        self.draw(&logits)
    }

    fn sample_slice(&mut self, logits: &[f32], _history: &[u32]) -> Result<u32, SamplingError> {
        if matches!(self.sampling, Sampling::ArgMax) {
            return argmax(logits);
        }
        let max = max_logit(logits)?;
        self.draw_checked(logits, max)
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
