//! [`Samplers`]: the samplers a generation path holds, one for the text stream and one or more
//! for the audio codebooks.

use kyutai_sampling::{BoxSampler, Sampler, Sampling, SamplingConfig};

use crate::{Error, Result};

/// Top-k of Moshi's text stream (Kyutai's Rust servers; the Python default is the same).
pub const MOSHI_TEXT_TOP_K: usize = 25;
/// Temperature of Moshi's text stream (Kyutai's Rust default; the Python default is 0.7).
pub const MOSHI_TEXT_TEMPERATURE: f64 = 0.8;
/// Top-k of Moshi's audio codebooks.
pub const MOSHI_AUDIO_TOP_K: usize = 250;
/// Temperature of Moshi's audio codebooks.
pub const MOSHI_AUDIO_TEMPERATURE: f64 = 0.8;

/// The samplers of the generated audio codebooks.
pub enum AudioSamplers {
    /// The text sampler also samples every codebook (call order within a step: text, then
    /// codebooks 0, 1, ...). What `From<BoxSampler>` builds.
    SameAsText,
    /// One sampler for every generated codebook, called in codebook order: Moshi's layout.
    Shared(BoxSampler),
    /// One sampler per generated codebook.
    PerCodebook(Vec<BoxSampler>),
}

/// The samplers of one generation: every token a generation path produces is chosen by one of
/// these, each stream with its own history.
///
/// ```
/// use kyutai::Samplers;
/// use kyutai_sampling::SamplingConfig;
///
/// // Moshi's defaults: text TopK 25 at 0.8, audio TopK 250 at 0.8, distinct seeds.
/// let moshi = Samplers::moshi(299_792_458)?;
/// // Greedy text, sampled audio.
/// let mixed = Samplers::from_configs(&SamplingConfig::greedy(), &SamplingConfig::default())?;
/// // One sampler of your own for every stream.
/// let same: Samplers = SamplingConfig::greedy().build()?.into();
/// # let _ = (moshi, mixed, same);
/// # Ok::<(), kyutai::Error>(())
/// ```
pub struct Samplers {
    /// Samples the text stream.
    pub text: BoxSampler,
    /// Samples the audio codebooks.
    pub audio: AudioSamplers,
}

impl Samplers {
    /// A text sampler and one audio sampler shared by every codebook.
    pub fn new(text: BoxSampler, audio: BoxSampler) -> Self {
        Self {
            text,
            audio: AudioSamplers::Shared(audio),
        }
    }

    /// A text sampler and one sampler per generated audio codebook.
    pub fn per_codebook(text: BoxSampler, audio: Vec<BoxSampler>) -> Self {
        Self {
            text,
            audio: AudioSamplers::PerCodebook(audio),
        }
    }

    /// Builds the text sampler from `text` and the shared audio sampler from `audio`
    /// ([`SamplingConfig::build`]: the sampling crate's adapter over candle's sampler).
    ///
    /// # Errors
    ///
    /// [`Error::Sampling`] when either configuration is invalid.
    pub fn from_configs(text: &SamplingConfig, audio: &SamplingConfig) -> Result<Self> {
        Ok(Self::new(text.build()?, audio.build()?))
    }

    /// Moshi's sampling: text `TopK { k: 25, temperature: 0.8 }` seeded with `seed`, audio
    /// `TopK { k: 250, temperature: 0.8 }` seeded with `seed + 1`, no repetition penalty.
    ///
    /// # Errors
    ///
    /// None in practice (the parameters are valid); the signature matches the other builders.
    pub fn moshi(seed: u64) -> Result<Self> {
        Self::from_configs(&moshi_text_config(seed), &moshi_audio_config(seed))
    }

    /// Greedy decoding for every stream.
    pub fn greedy() -> Self {
        Self::from(greedy_sampler())
    }

    /// The text sampler.
    pub fn text(&mut self) -> &mut dyn Sampler {
        self.text.as_mut()
    }

    /// The sampler of generated audio codebook `codebook`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when per-codebook samplers are used and there is none for
    /// `codebook`.
    pub fn audio(&mut self, codebook: usize) -> Result<&mut dyn Sampler> {
        match &mut self.audio {
            AudioSamplers::SameAsText => Ok(self.text.as_mut()),
            AudioSamplers::Shared(sampler) => Ok(sampler.as_mut()),
            AudioSamplers::PerCodebook(samplers) => {
                let count = samplers.len();
                match samplers.get_mut(codebook) {
                    Some(sampler) => Ok(sampler.as_mut()),
                    None => Err(Error::input(
                        "samplers",
                        format!("no sampler for audio codebook {codebook} ({count} per-codebook samplers)"),
                    )),
                }
            }
        }
    }

    /// Checks that there is a sampler for each of `codebooks` generated codebooks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when per-codebook samplers do not number `codebooks`.
    pub fn check_codebooks(&self, codebooks: usize) -> Result<()> {
        match &self.audio {
            AudioSamplers::PerCodebook(samplers) if samplers.len() != codebooks => {
                Err(Error::input(
                    "samplers",
                    format!(
                        "the model generates {codebooks} audio codebooks, but {} per-codebook samplers were given",
                        samplers.len()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Resets every sampler (random streams restart from their seeds).
    pub fn reset(&mut self) {
        self.text.reset();
        match &mut self.audio {
            AudioSamplers::SameAsText => {}
            AudioSamplers::Shared(sampler) => sampler.reset(),
            AudioSamplers::PerCodebook(samplers) => samplers.iter_mut().for_each(|s| s.reset()),
        }
    }
}

impl std::fmt::Debug for AudioSamplers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SameAsText => f.write_str("SameAsText"),
            Self::Shared(_) => f.write_str("Shared(..)"),
            Self::PerCodebook(samplers) => write!(f, "PerCodebook({} samplers)", samplers.len()),
        }
    }
}

impl std::fmt::Debug for Samplers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Samplers")
            .field("audio", &self.audio)
            .finish_non_exhaustive()
    }
}

impl From<BoxSampler> for Samplers {
    /// One sampler for the text stream and every codebook.
    fn from(sampler: BoxSampler) -> Self {
        Self {
            text: sampler,
            audio: AudioSamplers::SameAsText,
        }
    }
}

/// Moshi's text sampling ([`MOSHI_TEXT_TOP_K`], [`MOSHI_TEXT_TEMPERATURE`]) seeded with `seed`.
pub fn moshi_text_config(seed: u64) -> SamplingConfig {
    SamplingConfig {
        sampling: Sampling::TopK {
            k: MOSHI_TEXT_TOP_K,
            temperature: MOSHI_TEXT_TEMPERATURE,
        },
        repetition_penalty: None,
        repetition_context_size: 64,
        seed,
    }
}

/// Moshi's audio sampling ([`MOSHI_AUDIO_TOP_K`], [`MOSHI_AUDIO_TEMPERATURE`]) seeded with
/// `seed + 1`, so that text and audio never share a random stream.
pub fn moshi_audio_config(seed: u64) -> SamplingConfig {
    SamplingConfig {
        sampling: Sampling::TopK {
            k: MOSHI_AUDIO_TOP_K,
            temperature: MOSHI_AUDIO_TEMPERATURE,
        },
        repetition_penalty: None,
        repetition_context_size: 64,
        seed: seed.wrapping_add(1),
    }
}

/// A greedy sampler (`ArgMax`, lowest index on ties).
pub fn greedy_sampler() -> BoxSampler {
    kyutai_sampling::greedy()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn logits() -> Tensor {
        Tensor::new(&[0.0f32, 3.0, 1.0], &Device::Cpu).unwrap()
    }

    #[test]
    fn audio_sampler_lookup() {
        let mut same = Samplers::greedy();
        assert_eq!(same.audio(5).unwrap().sample(&logits(), &[]).unwrap(), 1);
        let mut per = Samplers::per_codebook(greedy_sampler(), Vec::new());
        assert!(per.audio(0).is_err());
        assert!(per.check_codebooks(2).is_err());
        let mut per =
            Samplers::per_codebook(greedy_sampler(), vec![greedy_sampler(), greedy_sampler()]);
        assert!(per.check_codebooks(2).is_ok());
        assert!(per.audio(1).is_ok());
        assert!(per.audio(2).is_err());
    }

    #[test]
    fn moshi_defaults() {
        assert_eq!(moshi_text_config(7).seed, 7);
        assert_eq!(moshi_audio_config(7).seed, 8);
        assert_eq!(
            moshi_audio_config(u64::MAX).seed,
            0,
            "the audio seed wraps instead of overflowing"
        );
        assert_eq!(
            moshi_text_config(0).sampling,
            Sampling::TopK {
                k: 25,
                temperature: 0.8
            }
        );
        assert_eq!(
            moshi_audio_config(0).sampling,
            Sampling::TopK {
                k: 250,
                temperature: 0.8
            }
        );
        assert!(Samplers::moshi(0).is_ok());
    }
}
