//! Step-wise generation: the state machines that drive an [`LmModel`] one 80 ms frame at a time.
//!
//! * [`Multistream`]: Moshi's full-duplex loop. The user's audio codes come in, the model's
//!   text token and audio codes go out, with an acoustic delay between the first (semantic)
//!   codebook and the others, an optional text repetition penalty over non-special tokens and
//!   optional classifier-free guidance. This is moshi 0.6.4's `lm_generate_multistream::State`.
//! * [`LmGenerate`]: the generic loop with one delay per audio codebook, teacher forcing of any
//!   text or audio position and "literal zero" inputs (no embedding): moshi 0.6.4's
//!   `lm_generate::State`.
//!
//! Both receive their [`Samplers`] at construction and choose every token through them: the
//! text token through `samplers.text` with the text stream's history, the token of generated
//! codebook `k` through `samplers.audio(k)` with codebook `k`'s history. Histories hold the
//! tokens each stream keeps, oldest first: the text tokens of the steps so far (teacher-forced
//! ones included), and for each codebook the tokens written into its stream (a token sampled
//! before the codebook's delay, which the stream discards, is not in it).
//!
//! ```
//! use candle_core::{DType, Device};
//! use kyutai::lm_generate::{Multistream, MultistreamConfig};
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

use crate::sampling::{guided_logits, sample_logits, single_row};
use crate::{Error, LmModel, Result, Samplers};

/// Marks an audio position of a [`Multistream`] table that has not been generated yet.
pub const UNGENERATED: u32 = u32::MAX;

/// The text pad token of Moshi's text tokenizer (`tokenizer_spm_32k_3.model`).
pub const MOSHI_TEXT_PAD_TOKEN: u32 = 3;

/// The end-of-padding token of Moshi's text tokenizer.
pub const MOSHI_TEXT_EOP_TOKEN: u32 = 0;

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
        u32::try_from(self.audio_vocab_size.saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// Generated plus input codebooks: the model's input codebooks.
    pub fn total_audio_codebooks(&self) -> usize {
        self.generated_audio_codebooks + self.input_audio_codebooks
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
        if self.total_audio_codebooks() != model.in_audio_codebooks() {
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

fn check_text_tokens(model: &LmModel, tokens: &[(&str, u32)]) -> Result<()> {
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
    /// `audio_tokens[position][codebook]`: generated codebooks first, then the user's.
    audio_tokens: Vec<Vec<u32>>,
    text_tokens: Vec<u32>,
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
    /// vocabulary, special tokens outside the text vocabulary); [`Error::InvalidInput`] when
    /// per-codebook samplers do not number the generated codebooks.
    pub fn new(mut model: LmModel, samplers: Samplers, config: MultistreamConfig) -> Result<Self> {
        config.check(&model)?;
        samplers.check_codebooks(config.generated_audio_codebooks)?;
        model.reset_state();
        Ok(Self {
            audio_histories: vec![Vec::new(); config.generated_audio_codebooks],
            model,
            samplers,
            config,
            audio_tokens: Vec::new(),
            text_tokens: Vec::new(),
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
    /// [`Error::InvalidInput`] unless `penalty` is finite and positive.
    pub fn with_repetition_penalty(mut self, context_size: usize, penalty: f32) -> Result<Self> {
        if !(penalty.is_finite() && penalty > 0.0) {
            return Err(Error::input(
                "repetition_penalty",
                format!("must be finite and positive, got {penalty}"),
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
        if !alpha.is_finite() {
            return Err(Error::input(
                "cfg_alpha",
                format!("must be finite, got {alpha}"),
            ));
        }
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
        let config = &self.config;
        let generated = config.generated_audio_codebooks;
        let total = config.total_audio_codebooks();
        let pad = config.audio_pad_token();
        let delay = config.acoustic_delay;
        let step = self.step_idx;
        if user_audio.len() != config.input_audio_codebooks {
            return Err(Error::input(
                "user_audio",
                format!(
                    "must hold one code per user codebook ({}), got {}",
                    config.input_audio_codebooks,
                    user_audio.len()
                ),
            ));
        }
        check_range(user_audio, "user_audio", config.audio_vocab_size)?;
        let text_vocab = self.model.text_in_vocab_size();
        if let Some(token) = text_input {
            check_range(&[token], "text_input", text_vocab)?;
        }
        if let Some(token) = force_text {
            check_range(&[token], "force_text", text_vocab)?;
        }

        // This step's row, with the user's codes written without delay.
        let mut row = vec![UNGENERATED; total];
        row[generated..].copy_from_slice(user_audio);
        self.audio_tokens.push(row);

        let rows = if self.cfg_alpha.is_some() { 2 } else { 1 };
        let mut codes = Vec::with_capacity(total);
        for codebook in 0..total {
            let token = if codebook == 0 || codebook == generated {
                match step {
                    0 => pad,
                    _ => self.audio_tokens[step - 1][codebook],
                }
            } else if step <= delay {
                pad
            } else {
                self.audio_tokens[step - delay - 1][codebook]
            };
            if token == UNGENERATED {
                return Err(Error::input(
                    "audio_tokens",
                    format!("codebook {codebook} was not generated in time for step {step}"),
                ));
            }
            codes.push(vec![token; rows]);
        }
        let codes: Vec<Option<&[u32]>> = codes.iter().map(|c| Some(c.as_slice())).collect();
        let text_rows = text_input.map(|t| vec![t; rows]);
        let (logits, hidden) = self.model.forward_tokens(text_rows.as_deref(), &codes)?;

        let text_token = match force_text {
            Some(token) => token,
            None => {
                let logits = match self.cfg_alpha {
                    Some(alpha) => guided_logits(&logits, alpha)?,
                    None => single_row(&logits)?,
                };
                let logits = self.prepare_text_logits(logits)?;
                sample_logits(&logits, self.samplers.text(), &self.text_tokens)?
            }
        };
        self.text_tokens.push(text_token);

        if generated > 0 {
            let forced: Vec<Option<u32>> = if step < delay {
                (0..generated)
                    .map(|k| if k == 0 { None } else { Some(pad) })
                    .collect()
            } else {
                Vec::new()
            };
            let (samplers, histories) = (&mut self.samplers, &self.audio_histories);
            let tokens = self.model.depformer_step_with(
                &hidden,
                Some(text_token),
                &forced,
                self.cfg_alpha,
                |k, logits| {
                    let history = histories.get(k).map_or(&[][..], Vec::as_slice);
                    sample_logits(logits, samplers.audio(k)?, history)
                },
            )?;
            for (k, &token) in tokens.iter().enumerate() {
                let codebook_delay = if k == 0 { 0 } else { delay };
                // Before the delay, the token lands on position 0 and is overwritten later.
                let position = step.saturating_sub(codebook_delay);
                self.audio_tokens[position][k] = token;
                if step >= codebook_delay {
                    self.audio_histories[k].push(token);
                }
            }
        }
        self.step_idx += 1;
        Ok(text_token)
    }

    /// The text logits as the sampler sees them: after the repetition penalty and pad bias.
    fn prepare_text_logits(&self, logits: Tensor) -> Result<Tensor> {
        let penalty = self.repetition_penalty.filter(|&(_, p)| p != 1.0);
        if penalty.is_none() && self.text_pad_bias.is_none() {
            return Ok(logits);
        }
        let mut values = logits.to_vec1::<f32>()?;
        if let Some((context_size, penalty)) = penalty {
            let config = &self.config;
            let specials = [
                config.text_pad_token,
                config.text_eop_token,
                config.text_start_token,
            ];
            penalise_text(
                &mut values,
                &self.text_tokens,
                &specials,
                context_size,
                penalty,
            );
        }
        if let Some(bias) = self.text_pad_bias {
            if let Some(value) = values.get_mut(self.config.text_pad_token as usize) {
                *value += bias;
            }
        }
        let len = values.len();
        Ok(Tensor::from_vec(values, len, logits.device())?)
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
    /// [`UNGENERATED`] until step `s + acoustic_delay` has run.
    pub fn audio_tokens(&self) -> &[Vec<u32>] {
        &self.audio_tokens
    }

    /// The newest complete frame (moshi's `last_audio_tokens`): after step `s`, row
    /// `s - acoustic_delay` with every codebook (generated, then the user's), or `None` before
    /// the delay has passed or when the row holds a pad token.
    pub fn last_audio_tokens(&self) -> Option<Vec<u32>> {
        let index = self.step_idx.checked_sub(self.config.acoustic_delay + 1)?;
        let row = self.audio_tokens.get(index)?;
        let pad = self.config.audio_pad_token();
        if row.iter().any(|&t| t >= pad) {
            None
        } else {
            Some(row.clone())
        }
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
        self.audio_tokens.clear();
        self.text_tokens.clear();
        self.audio_histories.iter_mut().for_each(Vec::clear);
        self.step_idx = 0;
    }

    /// The model and the samplers back.
    pub fn into_parts(self) -> (LmModel, Samplers) {
        (self.model, self.samplers)
    }
}

/// Moshi's text repetition penalty, in place: the distinct tokens among the last
/// `context_size` entries of `history` that are not in `specials` get their logit divided by
/// `penalty` (multiplied when negative). Tokens beyond the logits are skipped.
fn penalise_text(
    logits: &mut [f32],
    history: &[u32],
    specials: &[u32],
    context_size: usize,
    penalty: f32,
) {
    let mut window: Vec<u32> = history
        .iter()
        .rev()
        .filter(|t| !specials.contains(t))
        .take(context_size)
        .copied()
        .collect();
    window.sort_unstable();
    window.dedup();
    for token in window {
        if let Some(logit) = logits.get_mut(token as usize) {
            *logit = if *logit >= 0.0 {
                *logit / penalty
            } else {
                *logit * penalty
            };
        }
    }
}

fn check_range(tokens: &[u32], input: &str, vocab: usize) -> Result<()> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(&token) => Err(Error::TokenOutOfRange {
            input: input.to_string(),
            token,
            vocab_size: vocab,
        }),
        None => Ok(()),
    }
}

/// One position of an [`LmGenerate`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A token: sampled, or set in advance (teacher forcing).
    Set(u32),
    /// Not generated yet: the sampler fills it.
    Ungenerated,
    /// No token: the model reads no embedding for this stream at this position.
    LiteralZero,
}

/// The stream layout of an [`LmGenerate`] generation: moshi's `lm_generate::Config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmGenerateConfig {
    /// The delay, in steps, of each of the model's input audio codebooks.
    pub audio_delays: Vec<usize>,
    /// Audio vocabulary: codes plus the pad token (the last id).
    pub audio_vocab_size: usize,
    /// Text pad token.
    pub text_pad_token: u32,
    /// Text end-of-padding token.
    pub text_eop_token: u32,
    /// Text start token, fed at the first step.
    pub text_start_token: u32,
}

impl LmGenerateConfig {
    /// The layout of `model`: the delays of its configuration (`audio_delays`), its audio
    /// vocabulary and start token, Moshi's pad and end-of-padding text tokens.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the model's configuration has no `audio_delays` (build
    /// the configuration by hand then).
    pub fn from_model(model: &LmModel) -> Result<Self> {
        let delays = model.audio_delays().ok_or_else(|| {
            Error::config(
                "audio_delays",
                "the model's configuration has none; give the delays in an LmGenerateConfig",
            )
        })?;
        Ok(Self {
            audio_delays: delays.to_vec(),
            audio_vocab_size: model.audio_vocab_size(),
            text_pad_token: MOSHI_TEXT_PAD_TOKEN,
            text_eop_token: MOSHI_TEXT_EOP_TOKEN,
            text_start_token: model.text_start_token(),
        })
    }

    /// The audio pad token: `audio_vocab_size - 1`.
    pub fn audio_pad_token(&self) -> u32 {
        u32::try_from(self.audio_vocab_size.saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// Audio codebooks: one per delay.
    pub fn audio_codebooks(&self) -> usize {
        self.audio_delays.len()
    }

    /// The largest delay (0 without codebooks).
    pub fn max_audio_delay(&self) -> usize {
        self.audio_delays.iter().copied().max().unwrap_or(0)
    }
}

/// Generic step-wise generation with per-codebook delays: moshi 0.6.4's `lm_generate::State`,
/// with injected samplers.
///
/// Each stream is a sequence of [`Token`]s by position. At step `s` the model reads the text
/// token of position `s - 1` (the start token at step 0) and, for codebook `k` of delay `d`,
/// the token of position `s - d - 1` (the pad token while `s <= d`); a
/// [`LiteralZero`](Token::LiteralZero) adds no embedding. The text token of position `s` is
/// sampled unless it was set; then the depformer samples one token per generated codebook,
/// and codebook `k`'s token fills position `s - d` unless that was set in advance, in which
/// case the set token is also what the next slice of the depformer reads. Before its delay, a
/// codebook's depformer input is the pad token and its sample is dropped.
///
/// Codebooks that the model does not generate (the user's stream, for instance) must be set
/// with [`set_audio_tokens`](Self::set_audio_tokens) before they are read.
pub struct LmGenerate {
    model: LmModel,
    samplers: Samplers,
    config: LmGenerateConfig,
    audio_tokens: Vec<Vec<Token>>,
    text_tokens: Vec<Token>,
    text_history: Vec<u32>,
    audio_histories: Vec<Vec<u32>>,
    step_idx: usize,
}

impl std::fmt::Debug for LmGenerate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmGenerate")
            .field("config", &self.config)
            .field("step_idx", &self.step_idx)
            .field("samplers", &self.samplers)
            .finish_non_exhaustive()
    }
}

impl LmGenerate {
    /// A state over `model` (whose streaming state is reset) sampling with `samplers`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `config` does not describe `model` (one delay per input
    /// codebook, the audio vocabulary, tokens in the text vocabulary);
    /// [`Error::InvalidInput`] when per-codebook samplers do not number the generated
    /// codebooks.
    pub fn new(mut model: LmModel, samplers: Samplers, config: LmGenerateConfig) -> Result<Self> {
        if config.audio_codebooks() != model.in_audio_codebooks() {
            return Err(Error::config(
                "audio_delays",
                format!(
                    "must hold one delay per input codebook of the model ({}), got {}",
                    model.in_audio_codebooks(),
                    config.audio_codebooks()
                ),
            ));
        }
        if config.audio_vocab_size != model.audio_vocab_size() {
            return Err(Error::config(
                "audio_vocab_size",
                format!(
                    "is {} but the model has {}",
                    config.audio_vocab_size,
                    model.audio_vocab_size()
                ),
            ));
        }
        check_text_tokens(
            &model,
            &[
                ("text_pad_token", config.text_pad_token),
                ("text_eop_token", config.text_eop_token),
                ("text_start_token", config.text_start_token),
            ],
        )?;
        let generated = model.generated_audio_codebooks();
        samplers.check_codebooks(generated)?;
        model.reset_state();
        Ok(Self {
            model,
            samplers,
            audio_tokens: Vec::new(),
            text_tokens: Vec::new(),
            text_history: Vec::new(),
            audio_histories: vec![Vec::new(); generated],
            step_idx: 0,
            config,
        })
    }

    /// Sets positions of the current step (`tokens[k]` for codebook `k`; `None` leaves a
    /// position as it is): teacher forcing, or the user's codes. Codebook `k`'s position is
    /// read at step `step_idx + delay_k + 1`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `tokens` has more entries than codebooks;
    /// [`Error::TokenOutOfRange`] for a token outside the audio vocabulary.
    pub fn set_audio_tokens(&mut self, tokens: &[Option<Token>]) -> Result<()> {
        let codebooks = self.config.audio_codebooks();
        if tokens.len() > codebooks {
            return Err(Error::input(
                "audio_tokens",
                format!("has {} entries for {codebooks} codebooks", tokens.len()),
            ));
        }
        for (k, token) in tokens.iter().enumerate() {
            if let Some(Token::Set(t)) = token {
                check_range(
                    &[*t],
                    &format!("audio_tokens[{k}]"),
                    self.config.audio_vocab_size,
                )?;
            }
        }
        let step = self.step_idx;
        self.ensure_position(step);
        for (slot, token) in self.audio_tokens[step].iter_mut().zip(tokens) {
            if let Some(token) = token {
                *slot = *token;
            }
        }
        Ok(())
    }

    /// Sets the text position of the current step (teacher forcing): the text sampler is not
    /// called for it.
    ///
    /// # Errors
    ///
    /// [`Error::TokenOutOfRange`] for a token outside the model's text input vocabulary.
    pub fn set_text_token(&mut self, token: Token) -> Result<()> {
        if let Token::Set(t) = token {
            check_range(&[t], "text_token", self.model.text_in_vocab_size())?;
        }
        let step = self.step_idx;
        self.ensure_position(step);
        self.text_tokens[step] = token;
        Ok(())
    }

    fn ensure_position(&mut self, position: usize) {
        let codebooks = self.config.audio_codebooks();
        while self.audio_tokens.len() <= position {
            self.audio_tokens.push(vec![Token::Ungenerated; codebooks]);
            self.text_tokens.push(Token::Ungenerated);
        }
    }

    /// One step. Returns the step's text token (`None` for a literal zero).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when a codebook the model does not generate has not been set
    /// in time; the model's and the samplers' errors. A failed step leaves the state
    /// unusable: [`reset`](Self::reset) it.
    pub fn step(&mut self) -> Result<Option<u32>> {
        let step = self.step_idx;
        self.ensure_position(step);
        let pad = self.config.audio_pad_token();
        let delays = &self.config.audio_delays;

        let mut forced = Vec::with_capacity(delays.len());
        let mut codes: Vec<Option<u32>> = Vec::with_capacity(delays.len());
        for (k, &delay) in delays.iter().enumerate() {
            forced.push(if step < delay {
                Some(pad)
            } else {
                match self.audio_tokens[step - delay][k] {
                    Token::Set(t) => Some(t),
                    Token::Ungenerated | Token::LiteralZero => None,
                }
            });
            codes.push(if step <= delay {
                Some(pad)
            } else {
                match self.audio_tokens[step - delay - 1][k] {
                    Token::Set(t) => Some(t),
                    Token::LiteralZero => None,
                    Token::Ungenerated => {
                        return Err(Error::input(
                            "audio_tokens",
                            format!(
                                "codebook {k} at position {} was neither generated nor set \
                                 before step {step}",
                                step - delay - 1
                            ),
                        ))
                    }
                }
            });
        }
        let text_input = match step {
            0 => Some(self.config.text_start_token),
            _ => match self.text_tokens[step - 1] {
                Token::Set(t) => Some(t),
                Token::LiteralZero => None,
                Token::Ungenerated => {
                    return Err(Error::input(
                        "text_tokens",
                        format!("position {} was not generated", step - 1),
                    ))
                }
            },
        };
        let code_slices: Vec<Option<[u32; 1]>> = codes.iter().map(|c| c.map(|t| [t])).collect();
        let code_refs: Vec<Option<&[u32]>> = code_slices
            .iter()
            .map(|c| c.as_ref().map(|a| &a[..]))
            .collect();
        let text_slice = text_input.map(|t| [t]);
        let (logits, hidden) = self
            .model
            .forward_tokens(text_slice.as_ref().map(|a| &a[..]), &code_refs)?;

        let text_token = match self.text_tokens[step] {
            Token::Ungenerated => {
                let token = sample_logits(&logits, self.samplers.text(), &self.text_history)?;
                self.text_tokens[step] = Token::Set(token);
                Some(token)
            }
            Token::Set(t) => Some(t),
            Token::LiteralZero => None,
        };
        if let Some(token) = text_token {
            self.text_history.push(token);
        }

        let generated = self.model.generated_audio_codebooks();
        if generated > 0 {
            forced.truncate(generated);
            let (samplers, histories) = (&mut self.samplers, &self.audio_histories);
            let tokens = self.model.depformer_step_with(
                &hidden,
                text_token,
                &forced,
                None,
                |k, logits| {
                    let history = histories.get(k).map_or(&[][..], Vec::as_slice);
                    sample_logits(logits, samplers.audio(k)?, history)
                },
            )?;
            for (k, token) in tokens.into_iter().enumerate() {
                let delay = self.config.audio_delays[k];
                let Some(position) = step.checked_sub(delay) else {
                    continue;
                };
                let slot = &mut self.audio_tokens[position][k];
                if *slot == Token::Ungenerated {
                    *slot = Token::Set(token);
                }
                if let Token::Set(kept) = *slot {
                    self.audio_histories[k].push(kept);
                }
            }
        }
        self.step_idx += 1;
        Ok(text_token)
    }

    /// Steps taken since construction or the last reset.
    pub fn step_idx(&self) -> usize {
        self.step_idx
    }

    /// The layout.
    pub fn config(&self) -> &LmGenerateConfig {
        &self.config
    }

    /// The text token of the last step (`None` before the first step or for a literal zero).
    pub fn last_text_token(&self) -> Option<u32> {
        let index = self.step_idx.checked_sub(1)?;
        match self.text_tokens.get(index)? {
            Token::Set(t) => Some(*t),
            _ => None,
        }
    }

    /// The newest complete frame (moshi's `last_audio_tokens`): after step `s`, position
    /// `s - max_delay` of every codebook, or `None` before the largest delay has passed or
    /// when a codebook holds a literal zero there.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when a codebook was neither generated nor set at that position.
    pub fn last_audio_tokens(&self) -> Result<Option<Vec<u32>>> {
        let Some(index) = self.step_idx.checked_sub(self.config.max_audio_delay() + 1) else {
            return Ok(None);
        };
        let Some(row) = self.audio_tokens.get(index) else {
            return Ok(None);
        };
        let mut frame = Vec::with_capacity(row.len());
        for (k, token) in row.iter().enumerate() {
            match token {
                Token::Set(t) => frame.push(*t),
                Token::LiteralZero => return Ok(None),
                Token::Ungenerated => {
                    return Err(Error::input(
                        "audio_tokens",
                        format!("codebook {k} at position {index} was neither generated nor set"),
                    ))
                }
            }
        }
        Ok(Some(frame))
    }

    /// The text positions of the steps so far.
    pub fn text_tokens(&self) -> &[Token] {
        &self.text_tokens[..self.step_idx.min(self.text_tokens.len())]
    }

    /// The audio positions of the steps so far (`[position][codebook]`).
    pub fn audio_tokens(&self) -> &[Vec<Token>] {
        &self.audio_tokens[..self.step_idx.min(self.audio_tokens.len())]
    }

    /// The text history: the text tokens of the steps so far, literal zeros left out.
    pub fn text_history(&self) -> &[u32] {
        &self.text_history
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

    /// Starts over: the model's state, every stream and history, and the samplers.
    pub fn reset(&mut self) {
        self.model.reset_state();
        self.samplers.reset();
        self.audio_tokens.clear();
        self.text_tokens.clear();
        self.text_history.clear();
        self.audio_histories.iter_mut().for_each(Vec::clear);
        self.step_idx = 0;
    }

    /// The model and the samplers back.
    pub fn into_parts(self) -> (LmModel, Samplers) {
        (self.model, self.samplers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use kyutai_sampling::{Sampler, SamplerExt, SamplingError};

    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(Vec<f32>, Vec<u32>)>>>;

    /// Records the logits and history it is given, returns the token of the largest logit.
    struct Spy {
        seen: Seen,
    }

    impl Sampler for Spy {
        fn sample(
            &mut self,
            logits: &Tensor,
            history: &[u32],
        ) -> std::result::Result<u32, SamplingError> {
            let values = logits.to_vec1::<f32>()?;
            self.seen
                .lock()
                .unwrap()
                .push((values.clone(), history.to_vec()));
            let best =
                values
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                        if v > bv {
                            (i, v)
                        } else {
                            (bi, bv)
                        }
                    });
            Ok(best.0 as u32)
        }
    }

    #[test]
    fn the_text_penalty_is_the_sampling_crates_rule_on_the_history_without_specials() {
        let logits = [2.0f32, -1.0, 0.5, 3.0, 1.5, -0.25, 0.0, 4.0];
        let specials = [3u32, 0, 7];
        let history = [1u32, 3, 2, 2, 0, 5, 7, 4, 3, 9, 1, 6];
        for context in [0usize, 1, 3, 5, 12] {
            let mut ours = logits.to_vec();
            penalise_text(&mut ours, &history, &specials, context, 1.7);
            // The decorator over the filtered history.
            let filtered: Vec<u32> = history
                .iter()
                .copied()
                .filter(|t| !specials.contains(t))
                .collect();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut decorated = Spy { seen: seen.clone() }
                .with_repetition_penalty(1.7, context)
                .unwrap();
            let t = Tensor::new(&logits[..], &Device::Cpu).unwrap();
            decorated.sample(&t, &filtered).unwrap();
            let theirs = seen.lock().unwrap()[0].0.clone();
            assert_eq!(ours, theirs, "context {context}");
        }
        // Moshi counts repeated tokens towards the window: context 2 over [.., 5, 5] is {5}.
        let mut values = vec![1.0f32; 8];
        penalise_text(&mut values, &[1, 5, 5], &[], 2, 2.0);
        assert_eq!(values, vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0]);
        // Out-of-vocabulary history entries are skipped.
        let mut values = vec![1.0f32; 2];
        penalise_text(&mut values, &[9], &[], 4, 2.0);
        assert_eq!(values, vec![1.0, 1.0]);
    }
}
