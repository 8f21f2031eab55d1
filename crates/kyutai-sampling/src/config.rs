//! [`SamplingConfig`]: a plain description of a sampler, with presets.

use candle_transformers::generation::Sampling;

use crate::params::{check_penalty, check_sampling};
use crate::{BoxSampler, LogitsProcessorSampler, NativeSampler, SamplerExt, SamplingError};

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

    /// Validates, then builds a [`NativeSampler`] for the same strategy and seed, wrapped in a
    /// [`RepetitionPenalty`](crate::RepetitionPenalty) when a penalty is set.
    ///
    /// It draws from the same distributions as [`build`](Self::build)'s adapter, at a fraction
    /// of the cost and without allocating per call, from a random stream that this crate pins
    /// (the tokens differ from the adapter's for the same seed).
    ///
    /// ```
    /// use kyutai_sampling::{Sampler, SamplingConfig};
    ///
    /// let mut sampler = SamplingConfig::default().build_native()?;
    /// let logits = candle_core::Tensor::new(&[0.1f32, 2.0, 1.0], &candle_core::Device::Cpu)?;
    /// let mut history = Vec::new();
    /// for _ in 0..4 {
    ///     history.push(sampler.sample(&logits, &history)?);
    /// }
    /// assert!(history.iter().all(|&t| t < 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_native(&self) -> Result<BoxSampler, SamplingError> {
        self.validate()?;
        let base = NativeSampler::from_sampling(self.seed, self.sampling.clone())?;
        Ok(match self.repetition_penalty {
            Some(penalty) => base
                .with_repetition_penalty(penalty, self.repetition_context_size)?
                .boxed(),
            None => base.boxed(),
        })
    }

    /// Validates, then builds the candle-convention [`Chain`](crate::Chain) that draws the same
    /// distributions ([`ChainConfig::from`](crate::ChainConfig) without the validation: there
    /// a `k` of 0, an error here, would become a chain's `top_k: 0`, which means "off").
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn build_chain(&self) -> Result<crate::Chain, SamplingError> {
        self.validate()?;
        crate::ChainConfig::from(self).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sampler;

    fn stream(sampler: &mut dyn Sampler) -> Vec<u32> {
        let mut history = Vec::new();
        for step in 0..40u32 {
            let logits: Vec<f32> = (0..97u32)
                .map(|i| ((i * 31 + step * 7) % 97) as f32 * 0.05)
                .collect();
            history.push(sampler.sample_slice(&logits, &history).unwrap());
        }
        history
    }

    #[test]
    fn build_native_composes_the_native_engine_and_the_penalty() {
        let config = SamplingConfig::default().with_seed(5);
        let mut built = config.build_native().unwrap();
        let mut manual = NativeSampler::from_sampling(5, config.sampling.clone())
            .unwrap()
            .with_repetition_penalty(1.1, 64)
            .unwrap();
        assert_eq!(stream(&mut built), stream(&mut manual));

        let plain = SamplingConfig {
            repetition_penalty: None,
            ..config.clone()
        };
        let mut built = plain.build_native().unwrap();
        let mut manual = NativeSampler::from_sampling(5, config.sampling.clone()).unwrap();
        assert_eq!(stream(&mut built), stream(&mut manual));
        // The penalty changes the stream (history repeats), so the two cases differ.
        assert_ne!(
            stream(&mut config.build_native().unwrap()),
            stream(&mut plain.build_native().unwrap())
        );
    }

    #[test]
    fn build_native_validates_like_build() {
        let bad_penalty = SamplingConfig {
            repetition_penalty: Some(0.0),
            ..SamplingConfig::default()
        };
        let bad_k = SamplingConfig {
            sampling: Sampling::TopK {
                k: 0,
                temperature: 1.0,
            },
            ..SamplingConfig::default()
        };
        for config in [bad_penalty, bad_k] {
            let native = config.build_native().err().map(|e| format!("{e:?}"));
            let adapter = config.build().err().map(|e| format!("{e:?}"));
            assert!(native.is_some());
            assert_eq!(native, adapter);
        }
    }
}
