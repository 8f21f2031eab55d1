//! [`SamplingConfig`]: a plain description of a sampler, with presets.

use candle_transformers::generation::Sampling;

use crate::params::{check_penalty, check_sampling};
use crate::{BoxSampler, LogitsProcessorSampler, SamplerExt, SamplingError};

/// A sampling strategy, an optional repetition penalty and a seed: everything needed to build a
/// sampler, as plain data.
///
/// ```
/// use kyutai_sampling::{Sampler, SamplingConfig, Sampling};
///
/// let config = SamplingConfig {
///     sampling: Sampling::TopK { k: 25, temperature: 0.8 },
///     repetition_penalty: None,
///     ..SamplingConfig::default()
/// };
/// let mut sampler = config.build()?;
/// let logits = candle_core::Tensor::new(&[0.1f32, 2.0, 1.0], &candle_core::Device::Cpu)?;
/// let token = sampler.sample(&logits, &[])?;
/// assert!(token < 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// The strategy: greedy, temperature, top-k, top-p, both, or Gumbel-max.
    pub sampling: Sampling,
    /// Repetition penalty factor (`None` for no penalty; `Some(1.0)` is an identity).
    pub repetition_penalty: Option<f32>,
    /// How many of the most recent history tokens the penalty looks at.
    pub repetition_context_size: usize,
    /// Seed of the random stream.
    pub seed: u64,
}

impl Default for SamplingConfig {
    /// `TopKThenTopP { k: 50, p: 0.9, temperature: 1.0 }`, penalty 1.1 over the last 64 tokens,
    /// seed 42.
    fn default() -> Self {
        Self {
            sampling: Sampling::TopKThenTopP {
                k: 50,
                p: 0.9,
                temperature: 1.0,
            },
            repetition_penalty: Some(1.1),
            repetition_context_size: 64,
            seed: 42,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding (`ArgMax`), no penalty. Deterministic whatever the seed.
    pub fn greedy() -> Self {
        Self {
            sampling: Sampling::ArgMax,
            repetition_penalty: None,
            ..Self::default()
        }
    }

    /// More varied output: `TopP { p: 0.95, temperature: 1.2 }`, penalty 1.05 over the last 128
    /// tokens.
    ///
    /// The seed is drawn from the operating system's random source, so two calls give different
    /// streams and runs are **not reproducible**. Set [`seed`](Self::seed) afterwards to make
    /// them so.
    pub fn creative() -> Self {
        Self {
            sampling: Sampling::TopP {
                p: 0.95,
                temperature: 1.2,
            },
            repetition_penalty: Some(1.05),
            repetition_context_size: 128,
            seed: rand::random(),
        }
    }

    /// The same configuration with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks every parameter, as the samplers' constructors do.
    pub fn validate(&self) -> Result<(), SamplingError> {
        check_sampling(&self.sampling)?;
        if let Some(penalty) = self.repetition_penalty {
            check_penalty(penalty)?;
        }
        Ok(())
    }

    /// Validates, then builds the [`LogitsProcessorSampler`] adapter, wrapped in a
    /// [`RepetitionPenalty`](crate::RepetitionPenalty) when a penalty is set.
    pub fn build(&self) -> Result<BoxSampler, SamplingError> {
        self.validate()?;
        let base = LogitsProcessorSampler::from_sampling(self.seed, self.sampling.clone())?;
        Ok(match self.repetition_penalty {
            Some(penalty) => base
                .with_repetition_penalty(penalty, self.repetition_context_size)?
                .boxed(),
            None => base.boxed(),
        })
    }
}
