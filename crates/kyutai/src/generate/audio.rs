//! [`generate_audio`]: a whole Moshi-style generation, from a prompt to PCM, and
//! [`BasicGenerator`], which holds a model, a Mimi and samplers ready to call it. (Formerly the
//! `gen` and `generator` modules.)
//!
//! The model runs [`Multistream`]'s full-duplex loop for a number of steps (80 ms each): it
//! listens to the user's stream (Mimi codes of the prompt's PCM, or of silence) and produces
//! its own text and audio, which Mimi decodes to 24 kHz PCM. Every token comes from the
//! [`Samplers`] passed in.
//!
//! ```
//! use candle_core::{DType, Device};
//! use kyutai::generate::audio::{generate_audio, GenPrompt};
//! use kyutai::{LmConfig, LmModel, Mimi, Samplers};
//!
//! // Tiny random models (the output is noise): Moshi's layout with 2 generated + 2 user
//! // codebooks of 16 codes, and a matching Mimi.
//! let mut config = LmConfig::moshi_7b_v0_1();
//! (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
//! let dep = config.depformer.as_mut().unwrap();
//! (dep.transformer.d_model, dep.transformer.num_heads, dep.transformer.num_layers) = (16, 2, 1);
//! dep.num_slices = 2;
//! (config.audio_codebooks, config.audio_delays) = (4, Some(vec![0, 1, 0, 1]));
//! (config.text_in_vocab_size, config.text_out_vocab_size, config.audio_vocab_size) = (101, 100, 17);
//! let model = LmModel::random(&config, 1, DType::F32, &Device::Cpu)?;
//! let mut mimi_config = Mimi::small_config(2);
//! mimi_config.quantizer_bins = 16;
//! let mut mimi = Mimi::random(mimi_config, 2, &Device::Cpu)?;
//!
//! let prompt = GenPrompt { text: vec![7, 8], user_pcm: None };
//! let mut samplers = Samplers::moshi(42)?;
//! let out = generate_audio(&model, &mut mimi, &prompt, 6, &mut samplers)?;
//! assert_eq!(out.text_tokens.len(), 6);
//! assert_eq!(&out.text_tokens[..2], &[7, 8]); // teacher-forced
//! assert_eq!(out.audio_codes.len(), 5); // frames lag by the acoustic delay (1 here)
//! assert_eq!(out.pcm.len(), 5 * 1920);
//! # Ok::<(), kyutai::Error>(())
//! ```

use candle_core::Device;

use super::multistream::{Multistream, MultistreamConfig};
use crate::{Error, LmModel, Mimi, Result, Samplers};

/// The largest number of steps of one [`generate_audio`] call: 16 384 steps, 21 min 50 s of
/// audio at 12.5 Hz. The PCM it returns (126 MB of f32 at 24 kHz), and the user's stream it
/// encodes at once, stay within a workstation's memory; more steps are an
/// [`Error::InvalidInput`], checked before anything is allocated. Longer sessions step a
/// [`Multistream`] directly.
pub const MAX_GENERATE_STEPS: usize = 1 << 14;

/// What a generation starts from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenPrompt {
    /// Text tokens forced at the first steps, one per step (the text sampler is not called for
    /// them); the model continues after them. Empty: the model chooses from the first step.
    pub text: Vec<u32>,
    /// The user's side of the conversation: mono PCM at Mimi's sample rate (24 kHz), encoded by
    /// Mimi and fed one frame per step. It is cut or padded with silence to the number of
    /// steps; `None` is silence throughout. Ignored by models without a user stream.
    pub user_pcm: Option<Vec<f32>>,
}

/// What a generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    /// The text token of every step (the prompt's forced tokens first).
    pub text_tokens: Vec<u32>,
    /// The model's audio frames, one code per generated codebook each: one per step after the
    /// acoustic delay (`steps - acoustic_delay` frames).
    pub audio_codes: Vec<Vec<u32>>,
    /// `audio_codes` decoded by Mimi: mono PCM, `frame_size` samples per frame.
    pub pcm: Vec<f32>,
    /// The sample rate of `pcm` (24000 for Kyutai's Mimi).
    pub sample_rate: u32,
}

/// Runs `model` for `steps` steps of [`Multistream`] generation (layout and acoustic delay
/// from [`MultistreamConfig::from_model`]) on `prompt`, sampling with `samplers`, and decodes
/// the model's audio with `mimi`.
///
/// `model` is cloned (cheap: the weights are shared) and starts from an empty state; `mimi`'s
/// streaming state is reset; `samplers` are used as they are (not reset), so two calls with the
/// same seeded samplers continue one random stream. Call [`Samplers::reset`] to replay.
///
/// # Errors
///
/// [`Error::InvalidInput`] for zero steps or more than [`MAX_GENERATE_STEPS`], or a Mimi
/// that does not fit the model (its
/// codebooks must be the model's generated codebooks, at least as many as the user's, and its
/// cardinality the model's audio vocabulary minus the pad token); the errors of
/// [`Multistream`] (bad prompt tokens, sampler errors) and of Mimi.
pub fn generate_audio(
    model: &LmModel,
    mimi: &mut Mimi,
    prompt: &GenPrompt,
    steps: usize,
    samplers: &mut Samplers,
) -> Result<GenOutput> {
    generate_audio_with_progress(model, mimi, prompt, steps, samplers, &mut |_, _| {})
}

/// [`generate_audio`], calling `on_step(steps_done, text_token)` after every step.
///
/// # Errors
///
/// As [`generate_audio`].
pub fn generate_audio_with_progress(
    model: &LmModel,
    mimi: &mut Mimi,
    prompt: &GenPrompt,
    steps: usize,
    samplers: &mut Samplers,
    on_step: &mut dyn FnMut(usize, u32),
) -> Result<GenOutput> {
    check_compatible(model, mimi)?;
    check_steps(steps)?;
    let config = MultistreamConfig::from_model(model);
    config.check(model)?;
    samplers.check_codebooks(config.generated_audio_codebooks)?;
    let user_frames = user_frames(mimi, prompt, steps, config.input_audio_codebooks)?;
    // The state owns its samplers: lend it the caller's (the checks above are those of
    // `Multistream::new`, which therefore cannot fail and drop them) and take them back.
    let lent = std::mem::replace(samplers, Samplers::greedy());
    let mut state = Multistream::new(model.clone(), lent, config)?;
    let result = run(&mut state, mimi, prompt, &user_frames, steps, on_step);
    let (_, lent) = state.into_parts();
    *samplers = lent;
    result
}

fn run(
    state: &mut Multistream,
    mimi: &mut Mimi,
    prompt: &GenPrompt,
    user_frames: &[Vec<u32>],
    steps: usize,
    on_step: &mut dyn FnMut(usize, u32),
) -> Result<GenOutput> {
    mimi.reset_state();
    let mut text_tokens = Vec::with_capacity(steps);
    let mut audio_codes = Vec::with_capacity(steps);
    // Grown as frames arrive: a capacity computed from `steps` and Mimi's frame size could be
    // more than the allocator gives.
    let mut pcm = Vec::new();
    for step in 0..steps {
        let user = user_frames.get(step).map_or(&[][..], Vec::as_slice);
        let previous = text_tokens
            .last()
            .copied()
            .unwrap_or(state.config().text_start_token);
        let forced = prompt.text.get(step).copied();
        let text = state.step_with(Some(previous), user, forced)?;
        text_tokens.push(text);
        if let Some(frame) = state.last_generated_audio_tokens() {
            let codes = mimi.frames_to_tensor(std::slice::from_ref(&frame))?;
            if let Some(samples) = mimi.decode_step(&codes)? {
                pcm.extend(samples.flatten_all()?.to_vec1::<f32>()?);
            }
            audio_codes.push(frame);
        }
        on_step(step + 1, text);
    }
    Ok(GenOutput {
        text_tokens,
        audio_codes,
        pcm,
        sample_rate: mimi.sample_rate(),
    })
}

/// Checks a step count of [`generate_audio`]: `1..=MAX_GENERATE_STEPS`.
pub(crate) fn check_steps(steps: usize) -> Result<()> {
    if steps == 0 {
        return Err(Error::input("steps", "must be at least 1"));
    }
    if steps > MAX_GENERATE_STEPS {
        return Err(Error::input(
            "steps",
            format!("must be at most MAX_GENERATE_STEPS = {MAX_GENERATE_STEPS} (got {steps})"),
        ));
    }
    Ok(())
}

/// The user's codes for each step: the prompt's PCM (or silence), cut or padded with silence
/// to `steps` frames, encoded by Mimi, first `codebooks` codebooks.
fn user_frames(
    mimi: &mut Mimi,
    prompt: &GenPrompt,
    steps: usize,
    codebooks: usize,
) -> Result<Vec<Vec<u32>>> {
    if codebooks == 0 {
        return Ok(Vec::new());
    }
    let samples = steps
        .checked_mul(mimi.frame_size())
        .ok_or_else(|| Error::input("steps", format!("{steps} steps is too many")))?;
    let mut pcm = prompt.user_pcm.clone().unwrap_or_default();
    if let Some(bad) = pcm.iter().position(|x| !x.is_finite()) {
        return Err(Error::input(
            "user_pcm",
            format!("sample {bad} is not finite"),
        ));
    }
    pcm.try_reserve_exact(samples.saturating_sub(pcm.len()))
        .map_err(|_| Error::OutOfMemory {
            what: "the user's stream".into(),
            bytes: samples as u128 * 4,
        })?;
    pcm.resize(samples, 0.0);
    mimi.reset_state();
    let mut frames = mimi.encode_pcm(&pcm)?;
    frames.truncate(steps);
    for frame in &mut frames {
        frame.truncate(codebooks);
    }
    Ok(frames)
}

/// Checks that `mimi` decodes what `model` generates and encodes what it listens to.
pub(crate) fn check_compatible(model: &LmModel, mimi: &Mimi) -> Result<()> {
    let generated = model.generated_audio_codebooks();
    if generated == 0 {
        return Err(Error::NoDepformer);
    }
    let user = model.in_audio_codebooks().saturating_sub(generated);
    if mimi.num_codebooks() != generated || mimi.num_codebooks() < user {
        return Err(Error::input(
            "mimi",
            format!(
                "has {} codebooks; the model generates {generated} and listens to {user}",
                mimi.num_codebooks()
            ),
        ));
    }
    if mimi.cardinality() + 1 != model.audio_vocab_size() {
        return Err(Error::input(
            "mimi",
            format!(
                "has {} codes per codebook; the model's audio vocabulary of {} needs {}",
                mimi.cardinality(),
                model.audio_vocab_size(),
                model.audio_vocab_size().saturating_sub(1)
            ),
        ));
    }
    Ok(())
}

/// The convenience wrapper around [`generate_audio`]: it owns the
/// model, the Mimi and the samplers, checked once at construction.
///
/// [`generate`](Self::generate) produces exactly what `generate_audio` produces with the same
/// model, Mimi and samplers. The samplers carry on from call to call (a second call continues
/// their random streams); [`reset`](Self::reset) restarts them from their seeds, so that the
/// next call replays the first.
///
/// ```
/// use candle_core::{DType, Device};
/// use kyutai::generate::audio::{BasicGenerator, GenPrompt};
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
    /// fit the model (see [`generate_audio`]);
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
    /// As [`generate_audio`].
    pub fn generate(&mut self, prompt: &GenPrompt, steps: usize) -> Result<GenOutput> {
        self.generate_with_progress(prompt, steps, &mut |_, _| {})
    }

    /// [`generate`](Self::generate), calling `on_step(steps_done, text_token)` after every
    /// step.
    ///
    /// # Errors
    ///
    /// As [`generate_audio`].
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
