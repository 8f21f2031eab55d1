//! [`Multistream`]: Moshi's full-duplex generation, one 80 ms frame at a time: moshi 0.6.4's
//! `lm_generate_multistream::State`, with injected [`Samplers`]. (Its sibling, the generic
//! delayed-stream loop with teacher forcing, is [`LmGenerate`](crate::LmGenerate).)
//!
//! The user's audio codes come in, the model's text token and audio codes go out, with an
//! acoustic delay between the first (semantic) codebook and the others, an optional text
//! repetition penalty over non-special tokens, an optional pad bias and optional
//! classifier-free guidance. The text token is chosen through `samplers.text` with the text
//! stream's history, the token of generated codebook `k` through `samplers.audio(k)` with
//! codebook `k`'s history. Histories hold the tokens each stream keeps, oldest first: the text
//! tokens of the steps so far (teacher-forced ones included), and for each codebook the tokens
//! written into its stream (a token sampled before the codebook's delay, which the stream
//! discards, is not in it).
//!
//! ```
//! use candle_core::{DType, Device};
//! use kyutai::generate::multistream::{Multistream, MultistreamConfig};
//! use kyutai::{LmConfig, LmModel, Samplers};
//!
//! // A tiny model with Moshi's layout (8 generated + 8 user codebooks); random weights.
//! let mut config = LmConfig::moshi_7b_v0_1();
//! (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
//! let dep = config.depformer.as_mut().unwrap();
//! (dep.transformer.d_model, dep.transformer.num_heads, dep.transformer.num_layers) = (16, 2, 1);
//! (config.text_in_vocab_size, config.text_out_vocab_size, config.audio_vocab_size) = (101, 100, 33);
//! let model = LmModel::random(&config, 1, DType::F32, &Device::Cpu)?;
//!
//! let ms_config = MultistreamConfig::from_model(&model);
//! assert_eq!(ms_config.acoustic_delay, 1); // from the model's `audio_delays`
//! let mut state = Multistream::new(model, Samplers::moshi(42)?, ms_config)?;
//! let user = [5u32; 8]; // one frame of the user's Mimi codes
//! for _ in 0..4 {
//!     let text = state.step(&user)?;
//!     assert!(text < 100);
//! }
//! // Frames come out `acoustic_delay` steps late.
//! let frame = state.last_audio_tokens().expect("a complete frame");
//! assert_eq!(frame.len(), 16);
//! # Ok::<(), kyutai::Error>(())
//! ```

use candle_core::Tensor;

use super::sample::{sample_text, single_row, TextPenalty};
use super::streams::{DelayedStreams, Token};
use crate::config::audio_pad_token;
use crate::error::check_tokens;
use crate::limits::MAX_DELAY;
use crate::model::guidance::{check_alpha, guided_logits};
use crate::{Error, LmModel, Result, Samplers};

/// Marks an audio position of a [`Multistream`] table that has not been generated yet.
pub const UNGENERATED: u32 = u32::MAX;

/// The text pad token of Moshi's text tokenizer (`tokenizer_spm_32k_3.model`): the crate's
/// one [`TEXT_PAD_TOKEN`](crate::TEXT_PAD_TOKEN).
pub const MOSHI_TEXT_PAD_TOKEN: u32 = crate::config::TEXT_PAD_TOKEN;

/// The end-of-padding token of Moshi's text tokenizer: the crate's one
/// [`TEXT_EOP_TOKEN`](crate::TEXT_EOP_TOKEN).
pub const MOSHI_TEXT_EOP_TOKEN: u32 = crate::config::TEXT_EOP_TOKEN;

/// The acoustic delay moshi 0.6.4's Rust state machine uses for Moshi
/// (`lm_generate_multistream::Config::v0_1`), used by [`MultistreamConfig::from_model`] when the
/// model's configuration has no delays.
pub const MOSHI_RUST_ACOUSTIC_DELAY: usize = 2;

/// The stream layout of a [`Multistream`] generation: moshi's
/// `lm_generate_multistream::Config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultistreamConfig {
    /// Audio codebooks the model generates per step (its depformer slices).
    pub generated_audio_codebooks: usize,
    /// Audio codebooks of the user's stream, read after the generated ones.
    pub input_audio_codebooks: usize,
    /// Audio vocabulary: codes plus the pad token (the last id).
    pub audio_vocab_size: usize,
    /// Steps by which each stream's codebooks other than the first lag behind it.
    pub acoustic_delay: usize,
    /// Text pad token (skipped by the repetition penalty).
    pub text_pad_token: u32,
    /// Text end-of-padding token (skipped by the repetition penalty).
    pub text_eop_token: u32,
    /// Text start token, fed at the first step (skipped by the repetition penalty).
    pub text_start_token: u32,
}

impl MultistreamConfig {
    /// The layout of `model`: its generated and input codebook counts, audio vocabulary and
    /// start token; the acoustic delay from its configuration's `audio_delays` (the largest
    /// delay of a generated codebook other than the first), or
    /// [`MOSHI_RUST_ACOUSTIC_DELAY`] when it has none; Moshi's pad and end-of-padding text
    /// tokens.
    ///
    /// Kyutai's Python configuration of Moshi 7B (and [`LmConfig::moshi_7b_v0_1`](crate::LmConfig::moshi_7b_v0_1))
    /// gives a delay of 1, while moshi 0.6.4's Rust server runs Moshi with 2: set
    /// [`acoustic_delay`](Self::acoustic_delay) to reproduce the latter.
    pub fn from_model(model: &LmModel) -> Self {
        let generated = model.generated_audio_codebooks();
        let acoustic_delay = match model.audio_delays() {
            Some(delays) => delays
                .iter()
                .take(generated)
                .skip(1)
                .copied()
                .max()
                .unwrap_or(0),
            None => MOSHI_RUST_ACOUSTIC_DELAY,
        };
        Self {
            generated_audio_codebooks: generated,
            input_audio_codebooks: model.in_audio_codebooks().saturating_sub(generated),
            audio_vocab_size: model.audio_vocab_size(),
            acoustic_delay,
            text_pad_token: MOSHI_TEXT_PAD_TOKEN,
            text_eop_token: MOSHI_TEXT_EOP_TOKEN,
            text_start_token: model.text_start_token(),
        }
    }

    /// The audio pad token: `audio_vocab_size - 1`.
    pub fn audio_pad_token(&self) -> u32 {
        audio_pad_token(self.audio_vocab_size)
    }

    /// Each codebook's delay: 0 for the first codebook of each stream (the model's, then the
    /// user's), `acoustic_delay` for the others.
    fn delays(&self) -> Vec<usize> {
        let stream =
            |count: usize| (0..count).map(|k| if k == 0 { 0 } else { self.acoustic_delay });
        stream(self.generated_audio_codebooks)
            .chain(stream(self.input_audio_codebooks))
            .collect()
    }

    /// Generated plus input codebooks: the model's input codebooks (`usize::MAX` when the sum
    /// overflows, which [`Multistream::new`] rejects).
    pub fn total_audio_codebooks(&self) -> usize {
        self.generated_audio_codebooks
            .saturating_add(self.input_audio_codebooks)
    }

    pub(crate) fn check(&self, model: &LmModel) -> Result<()> {
        let mismatch = |field: &str, ours: usize, model: usize| {
            Err(Error::config(
                format!("multistream.{field}"),
                format!("is {ours} but the model has {model}"),
            ))
        };
        if self.generated_audio_codebooks != model.generated_audio_codebooks() {
            return mismatch(
                "generated_audio_codebooks",
                self.generated_audio_codebooks,
                model.generated_audio_codebooks(),
            );
        }
        if self.acoustic_delay > MAX_DELAY {
            return Err(Error::config(
                "multistream.acoustic_delay",
                format!(
                    "must be at most MAX_DELAY = {MAX_DELAY} (got {})",
                    self.acoustic_delay
                ),
            ));
        }
        let total = self
            .generated_audio_codebooks
            .checked_add(self.input_audio_codebooks);
        if total != Some(model.in_audio_codebooks()) {
            return mismatch(
                "generated_audio_codebooks + input_audio_codebooks",
                self.total_audio_codebooks(),
                model.in_audio_codebooks(),
            );
        }
        if self.audio_vocab_size != model.audio_vocab_size() {
            return mismatch(
                "audio_vocab_size",
                self.audio_vocab_size,
                model.audio_vocab_size(),
            );
        }
        check_text_tokens(
            model,
            &[
                ("text_pad_token", self.text_pad_token),
                ("text_eop_token", self.text_eop_token),
                ("text_start_token", self.text_start_token),
            ],
        )
    }
}

/// Checks that the named special tokens fall in `model`'s text input vocabulary.
pub(crate) fn check_text_tokens(model: &LmModel, tokens: &[(&str, u32)]) -> Result<()> {
    for &(name, token) in tokens {
        if token as usize >= model.text_in_vocab_size() {
            return Err(Error::config(
                name,
                format!(
                    "is {token}, outside the model's text vocabulary of {}",
                    model.text_in_vocab_size()
                ),
            ));
        }
    }
    Ok(())
}

/// Moshi's full-duplex generation, one step (80 ms) at a time: moshi 0.6.4's
/// `lm_generate_multistream::State`, with injected samplers.
///
/// At step `s` the model reads the previous text token (the start token at step 0) and one
/// token per codebook: the first codebook of each stream (the model's codebook 0 and the
/// user's first codebook) from step `s - 1`, the other codebooks from step
/// `s - 1 - acoustic_delay`, the pad token before that. It samples the text token (after the
/// optional guidance, repetition penalty and pad bias), then the depformer samples one token per
/// generated codebook; before the acoustic delay has passed, the depformer reads the pad token
/// instead of the delayed codebooks' tokens. Codebook 0's token belongs to frame `s`, the
/// others' to frame `s - acoustic_delay`, so a frame is complete `acoustic_delay` steps after
/// it starts ([`last_audio_tokens`](Self::last_audio_tokens)).
///
/// Differences from moshi: tables grow as needed (no maximum step), bad inputs are errors,
/// the pre-delay forcing applies to the generated codebooks (moshi hard-codes two streams of
/// eight), and the optional pad bias is added to the pad logit for every sampler (moshi's
/// `pad_mult` scales a probability inside its sampler and is ignored under greedy decoding).
pub struct Multistream {
    model: LmModel,
    samplers: Samplers,
    config: MultistreamConfig,
    /// `[position][codebook]`: generated codebooks first, then the user's.
    audio: DelayedStreams,
    text_tokens: Vec<u32>,
    /// The text tokens other than pad, end-of-padding and start: the repetition penalty's
    /// window.
    penalised_text: Vec<u32>,
    audio_histories: Vec<Vec<u32>>,
    step_idx: usize,
    repetition_penalty: Option<(usize, f32)>,
    cfg_alpha: Option<f64>,
    text_pad_bias: Option<f32>,
}

impl std::fmt::Debug for Multistream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multistream")
            .field("config", &self.config)
            .field("step_idx", &self.step_idx)
            .field("repetition_penalty", &self.repetition_penalty)
            .field("cfg_alpha", &self.cfg_alpha)
            .field("text_pad_bias", &self.text_pad_bias)
            .field("samplers", &self.samplers)
            .finish_non_exhaustive()
    }
}

impl Multistream {
    /// A state over `model` (whose streaming state is reset) sampling with `samplers`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `config` does not describe `model` (codebook counts, audio
    /// vocabulary, special tokens outside the text vocabulary) or its acoustic delay is above
    /// [`MAX_DELAY`]; [`Error::InvalidInput`] when
    /// per-codebook samplers do not number the generated codebooks.
    pub fn new(mut model: LmModel, samplers: Samplers, config: MultistreamConfig) -> Result<Self> {
        config.check(&model)?;
        samplers.check_codebooks(config.generated_audio_codebooks)?;
        model.reset_state();
        Ok(Self {
            audio_histories: vec![Vec::new(); config.generated_audio_codebooks],
            audio: DelayedStreams::new(config.delays(), config.audio_pad_token()),
            model,
            samplers,
            config,
            text_tokens: Vec::new(),
            penalised_text: Vec::new(),
            step_idx: 0,
            repetition_penalty: None,
            cfg_alpha: None,
            text_pad_bias: None,
        })
    }

    /// Penalises repeated text, as moshi does: before the text token is sampled, each distinct
    /// token among the last `context_size` text tokens that are not pad, end-of-padding or
    /// start tokens has its logit divided by `penalty` (multiplied when negative). This is
    /// [`RepetitionPenalty`](kyutai_sampling::RepetitionPenalty)'s rule over the text history
    /// with those special tokens removed. A penalty of 1 changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] unless `penalty` is within the sampling crate's bounds,
    /// `[1e-6, 1e6]` ([`kyutai_sampling::limits`]): a tiny penalty would turn finite logits
    /// into `+inf`.
    pub fn with_repetition_penalty(mut self, context_size: usize, penalty: f32) -> Result<Self> {
        use kyutai_sampling::limits::{MAX_PENALTY, MIN_PENALTY};
        if !(MIN_PENALTY..=MAX_PENALTY).contains(&penalty) {
            return Err(Error::input(
                "repetition_penalty",
                format!("must be in [{MIN_PENALTY:e}, {MAX_PENALTY:e}], got {penalty}"),
            ));
        }
        self.repetition_penalty = Some((context_size, penalty));
        Ok(self)
    }

    /// Classifier-free guidance: the model runs two rows and every token (text and audio) is
    /// sampled from `alpha * cond - (alpha - 1) * uncond`. As in moshi without conditioning,
    /// both rows read the same tokens. Resets the model's state (the batch size changes), so
    /// call it before the first step.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a non-finite `alpha` or a state that has already stepped.
    pub fn with_cfg(mut self, alpha: f64) -> Result<Self> {
        check_alpha(alpha)?;
        self.check_not_started("cfg_alpha")?;
        self.model.reset_state();
        self.cfg_alpha = Some(alpha);
        Ok(self)
    }

    /// Adds `bias` to the text pad token's logit before every text sample, whatever the
    /// sampler (positive: more pauses, negative: fewer).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a non-finite bias.
    pub fn with_text_pad_bias(mut self, bias: f32) -> Result<Self> {
        if !bias.is_finite() {
            return Err(Error::input(
                "text_pad_bias",
                format!("must be finite, got {bias}"),
            ));
        }
        self.text_pad_bias = Some(bias);
        Ok(self)
    }

    fn check_not_started(&self, what: &str) -> Result<()> {
        if self.step_idx > 0 {
            return Err(Error::input(
                what,
                "must be set before the first step (or after reset)",
            ));
        }
        Ok(())
    }

    /// One step: feeds the previous text token (the start token at step 0) and `user_audio`
    /// (one code per input codebook of the user's stream, empty when the model has none),
    /// samples and returns the text token, and samples the step's audio tokens.
    ///
    /// # Errors
    ///
    /// As [`step_with`](Self::step_with).
    pub fn step(&mut self, user_audio: &[u32]) -> Result<u32> {
        let text = match self.text_tokens.last() {
            Some(&token) => token,
            None => self.config.text_start_token,
        };
        self.step_with(Some(text), user_audio, None)
    }

    /// One step with every input given: `text_input` is the text token fed to the model (moshi
    /// feeds the previous step's token, or the start token; `None` adds no text embedding),
    /// `user_audio` the user's codes of this step, and `force_text`, when set, the text token
    /// recorded for this step instead of a sampled one (the text sampler is then not called).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for `user_audio` of the wrong length;
    /// [`Error::TokenOutOfRange`] for tokens outside their vocabularies; the model's and the
    /// samplers' errors. A failed step leaves the state unusable: [`reset`](Self::reset) it.
    pub fn step_with(
        &mut self,
        text_input: Option<u32>,
        user_audio: &[u32],
        force_text: Option<u32>,
    ) -> Result<u32> {
        self.check_step(text_input, user_audio, force_text)?;
        let step = self.step_idx;
        // This step's position, with the user's codes written without delay.
        let generated = self.config.generated_audio_codebooks;
        for (k, &code) in user_audio.iter().enumerate() {
            self.audio.set(step, generated + k, Token::Set(code));
        }
        self.audio.ensure(step);
        let (logits, hidden) = self.forward(text_input)?;
        let text_token = match force_text {
            Some(token) => token,
            None => self.sample_text(&logits)?,
        };
        self.text_tokens.push(text_token);
        let c = &self.config;
        if ![c.text_pad_token, c.text_eop_token, c.text_start_token].contains(&text_token) {
            self.penalised_text.push(text_token);
        }
        if generated > 0 {
            self.sample_audio(&hidden, text_token)?;
        }
        self.step_idx += 1;
        Ok(text_token)
    }

    fn check_step(
        &self,
        text_input: Option<u32>,
        user_audio: &[u32],
        force_text: Option<u32>,
    ) -> Result<()> {
        let users = self.config.input_audio_codebooks;
        if user_audio.len() != users {
            return Err(Error::input(
                "user_audio",
                format!(
                    "must hold one code per user codebook ({users}), got {}",
                    user_audio.len()
                ),
            ));
        }
        check_tokens(user_audio, "user_audio", self.config.audio_vocab_size)?;
        let text_vocab = self.model.text_in_vocab_size();
        check_tokens(text_input.as_slice(), "text_input", text_vocab)?;
        check_tokens(force_text.as_slice(), "force_text", text_vocab)
    }

    /// Runs the model on `text_input` and the delayed audio of this step, one row (two with
    /// guidance).
    fn forward(&mut self, text_input: Option<u32>) -> Result<(Tensor, Tensor)> {
        let step = self.step_idx;
        let rows = if self.cfg_alpha.is_some() { 2 } else { 1 };
        let mut codes = Vec::with_capacity(self.audio.codebooks() * rows);
        for k in 0..self.audio.codebooks() {
            let code = self.audio.input(step, k)?.ok_or_else(|| {
                Error::input("audio_tokens", format!("codebook {k} is a literal zero"))
            })?;
            codes.extend(std::iter::repeat_n(code, rows));
        }
        let codes: Vec<Option<&[u32]>> = codes.chunks(rows).map(Some).collect();
        let text_rows = text_input.map(|t| vec![t; rows]);
        self.model.forward_tokens(text_rows.as_deref(), &codes)
    }

    /// The text token from the step's logits, after guidance, the repetition penalty and the
    /// pad bias.
    fn sample_text(&mut self, logits: &Tensor) -> Result<u32> {
        let logits = match self.cfg_alpha {
            Some(alpha) => guided_logits(logits, alpha)?,
            None => single_row(logits)?,
        };
        let penalty = self
            .repetition_penalty
            .map(|(context_size, penalty)| TextPenalty {
                penalty,
                context_size,
                history: &self.penalised_text,
            });
        let pad_bias = self.text_pad_bias.map(|b| (self.config.text_pad_token, b));
        sample_text(
            &logits,
            self.samplers.text(),
            &self.text_tokens,
            penalty,
            pad_bias,
        )
    }

    /// The depformer's tokens for this step, written into the delayed streams.
    fn sample_audio(&mut self, hidden: &Tensor, text_token: u32) -> Result<()> {
        let step = self.step_idx;
        let generated = self.config.generated_audio_codebooks;
        let forced: Vec<Option<u32>> = (0..generated).map(|k| self.audio.forced(step, k)).collect();
        let (samplers, histories) = (&mut self.samplers, &self.audio_histories);
        let tokens = self.model.depformer_step_with(
            hidden,
            Some(text_token),
            &forced,
            self.cfg_alpha,
            |k, logits| {
                let history = histories.get(k).map_or(&[][..], Vec::as_slice);
                super::sample::sample_logits(logits, samplers.audio(k)?, history)
            },
        )?;
        for (k, token) in tokens.into_iter().enumerate() {
            if let (Some(kept), Some(history)) = (
                self.audio.fill(step, k, token),
                self.audio_histories.get_mut(k),
            ) {
                history.push(kept);
            }
        }
        Ok(())
    }

    /// Steps taken since construction or the last reset.
    pub fn step_idx(&self) -> usize {
        self.step_idx
    }

    /// The layout.
    pub fn config(&self) -> &MultistreamConfig {
        &self.config
    }

    /// The text token of every step so far.
    pub fn text_tokens(&self) -> &[u32] {
        &self.text_tokens
    }

    /// The audio table, one row per step so far: `row[k]` for the generated codebooks, then
    /// the user's codebooks. Row `s` holds frame `s`; its delayed codebooks are
    /// [`UNGENERATED`] until step `s + acoustic_delay` has run (a copy of the state's table of
    /// delayed streams, in moshi's encoding).
    pub fn audio_tokens(&self) -> Vec<Vec<u32>> {
        self.audio
            .rows()
            .iter()
            .map(|row| row.iter().map(|t| t.get().unwrap_or(UNGENERATED)).collect())
            .collect()
    }

    /// The newest complete frame (moshi's `last_audio_tokens`): after step `s`, row
    /// `s - acoustic_delay` with every codebook (generated, then the user's), or `None` before
    /// the delay has passed or when the row holds a pad token.
    pub fn last_audio_tokens(&self) -> Option<Vec<u32>> {
        let index = self
            .step_idx
            .checked_sub(self.config.acoustic_delay.saturating_add(1))?;
        let pad = self.config.audio_pad_token();
        self.audio
            .row(index)?
            .iter()
            .map(|t| t.get().filter(|&t| t < pad))
            .collect()
    }

    /// [`last_audio_tokens`](Self::last_audio_tokens) restricted to the generated codebooks:
    /// the model's own frame, what Mimi decodes.
    pub fn last_generated_audio_tokens(&self) -> Option<Vec<u32>> {
        let mut row = self.last_audio_tokens()?;
        row.truncate(self.config.generated_audio_codebooks);
        Some(row)
    }

    /// Each generated codebook's history: the tokens written into its stream so far.
    pub fn audio_histories(&self) -> &[Vec<u32>] {
        &self.audio_histories
    }

    /// The model.
    pub fn model(&self) -> &LmModel {
        &self.model
    }

    /// The samplers.
    pub fn samplers_mut(&mut self) -> &mut Samplers {
        &mut self.samplers
    }

    /// Starts over: the model's state, the tables and histories, and the samplers (whose
    /// random streams restart from their seeds). Guidance, penalty and bias are kept.
    pub fn reset(&mut self) {
        self.model.reset_state();
        self.samplers.reset();
        self.audio.clear();
        self.text_tokens.clear();
        self.penalised_text.clear();
        self.audio_histories.iter_mut().for_each(Vec::clear);
        self.step_idx = 0;
    }

    /// The model and the samplers back.
    pub fn into_parts(self) -> (LmModel, Samplers) {
        (self.model, self.samplers)
    }
}
