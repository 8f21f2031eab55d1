//! [`BasicGenerator`]: a model, a Mimi and samplers held together, ready to generate.

use candle_core::Device;

use crate::gen::{check_compatible, generate_audio_with_progress, GenOutput, GenPrompt};
use crate::{Error, LmModel, Mimi, Result, Samplers};

/// The convenience wrapper around [`generate_audio`](crate::gen::generate_audio): it owns the
/// model, the Mimi and the samplers, checked once at construction.
///
/// [`generate`](Self::generate) produces exactly what `generate_audio` produces with the same
/// model, Mimi and samplers. The samplers carry on from call to call (a second call continues
/// their random streams); [`reset`](Self::reset) restarts them from their seeds, so that the
/// next call replays the first.
///
/// ```
/// use candle_core::{DType, Device};
/// use kyutai::gen::GenPrompt;
/// use kyutai::generator::BasicGenerator;
/// use kyutai::{LmConfig, LmModel, Mimi, Samplers};
///
/// // Tiny random models: the output is noise.
/// let mut config = LmConfig::moshi_7b_v0_1();
/// (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
/// let dep = config.depformer.as_mut().unwrap();
/// (dep.transformer.d_model, dep.transformer.num_heads, dep.transformer.num_layers) = (16, 2, 1);
/// (config.text_in_vocab_size, config.text_out_vocab_size, config.audio_vocab_size) = (101, 100, 33);
/// let device = Device::Cpu;
/// let model = LmModel::random(&config, 1, DType::F32, &device)?;
/// let mut mimi_config = Mimi::small_config(8);
/// mimi_config.quantizer_bins = 32;
/// let mimi = Mimi::random(mimi_config, 2, &device)?;
///
/// let mut generator = BasicGenerator::new(model, mimi, &device, Samplers::moshi(7)?)?;
/// let first = generator.generate(&GenPrompt::default(), 4)?;
/// generator.reset();
/// assert_eq!(generator.generate(&GenPrompt::default(), 4)?, first);
/// # Ok::<(), kyutai::Error>(())
/// ```
#[derive(Debug)]
pub struct BasicGenerator {
    model: LmModel,
    mimi: Mimi,
    samplers: Samplers,
}

impl BasicGenerator {
    /// Holds `model`, `mimi` and `samplers`, which must run on `device`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the model or Mimi is on another device or Mimi does not
    /// fit the model (see [`generate_audio`](crate::gen::generate_audio));
    /// [`Error::NoDepformer`] for a model that generates no audio; [`Error::InvalidInput`] when
    /// per-codebook samplers do not number the generated codebooks.
    pub fn new(model: LmModel, mimi: Mimi, device: &Device, samplers: Samplers) -> Result<Self> {
        for (what, other) in [("model", model.device()), ("mimi", mimi.device())] {
            if !other.same_device(device) {
                return Err(Error::input(
                    what,
                    format!("runs on {other:?}, the generator on {device:?}"),
                ));
            }
        }
        check_compatible(&model, &mimi)?;
        samplers.check_codebooks(model.generated_audio_codebooks())?;
        Ok(Self {
            model,
            mimi,
            samplers,
        })
    }

    /// Generates `steps` steps (80 ms each) from `prompt`.
    ///
    /// # Errors
    ///
    /// As [`generate_audio`](crate::gen::generate_audio).
    pub fn generate(&mut self, prompt: &GenPrompt, steps: usize) -> Result<GenOutput> {
        self.generate_with_progress(prompt, steps, &mut |_, _| {})
    }

    /// [`generate`](Self::generate), calling `on_step(steps_done, text_token)` after every
    /// step.
    ///
    /// # Errors
    ///
    /// As [`generate_audio`](crate::gen::generate_audio).
    pub fn generate_with_progress(
        &mut self,
        prompt: &GenPrompt,
        steps: usize,
        on_step: &mut dyn FnMut(usize, u32),
    ) -> Result<GenOutput> {
        generate_audio_with_progress(
            &self.model,
            &mut self.mimi,
            prompt,
            steps,
            &mut self.samplers,
            on_step,
        )
    }

    /// Restarts the samplers from their seeds.
    pub fn reset(&mut self) {
        self.samplers.reset();
    }

    /// The model.
    pub fn model(&self) -> &LmModel {
        &self.model
    }

    /// The Mimi.
    pub fn mimi(&self) -> &Mimi {
        &self.mimi
    }

    /// The samplers.
    pub fn samplers_mut(&mut self) -> &mut Samplers {
        &mut self.samplers
    }
}
