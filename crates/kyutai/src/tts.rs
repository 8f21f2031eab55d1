//! Streaming text-to-speech: [`TtsState`], the step-wise state of Kyutai's delayed-streams TTS
//! (moshi 0.6.4's `tts_streaming::State`), and [`TtsStream`], which feeds it word by word as
//! Kyutai's TTS server does. Every sampled token, text or audio, comes from the injected
//! [`Samplers`].
//!
//! # How the TTS model is driven
//!
//! The model reads and writes two streams at 12.5 Hz: text and the Mimi codes of the speech.
//! The text leads: the caller decides the text token of each step ([`AllowedTokens`]): a token
//! of the current word, a pad, or, between words, a choice the model makes between pad ("keep
//! speaking the current word") and end-of-padding ("start the next word"). That choice is the
//! only text token the text sampler picks; after `max_consecutive_pads` pads in a row the
//! state ends the padding itself.
//!
//! The audio follows `text_audio_delay_in_tokens` steps behind: before that the depformer does
//! not run and the audio inputs are "literal zeros" (no embedding) except the initial pads;
//! afterwards each step samples one token per generated codebook, codebooks `1..` a further
//! `acoustic_delay` steps late, as in every Moshi-family model.
//!
//! # Differences from moshi 0.6.4
//!
//! * No cross-attention (the speaker-voice conditioning of Kyutai's TTS checkpoints): the
//!   model of this crate does not implement it. Without it, the two rows of moshi's
//!   classifier-free guidance would be identical, so guidance is not offered either; nor are
//!   conditioners.
//! * The token tables grow as needed: there is no maximum step count.
//! * Bad input is a typed error: tokens outside the vocabulary, words holding the pad or
//!   end-of-padding token (they would stall moshi's driver), a model without a depformer.

use std::collections::VecDeque;

use crate::lm::LmModel;
use crate::samplers::Samplers;
use crate::sampling::sample_logits;
use crate::{Error, Result};

/// The settings of a TTS stream (moshi's `tts_streaming::Config`, without the speaker
/// conditioning fields, which are ignored when deserialising).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TtsConfig {
    /// Extra delay of the generated codebooks after the first, in steps.
    pub acoustic_delay: usize,
    /// The text pad token: "no new text at this step".
    pub text_pad_token: u32,
    /// The begin-of-speech token Kyutai's servers put before the first word of the main
    /// speaker (not inserted by this module: put it in your first word).
    pub text_bos_token: u32,
    /// The token of a turn of the other speaker in Kyutai's dialogue prompts (not used by this
    /// module).
    pub text_eos_token: u32,
    /// The end-of-padding token: "the next word starts".
    pub text_eop_token: u32,
    /// The text token fed at the first step.
    pub text_start_token: u32,
    /// Steps the audio lags the text by.
    pub text_audio_delay_in_tokens: usize,
    /// After more pads than this in a row, the state emits end-of-padding without asking the
    /// sampler.
    pub max_consecutive_pads: usize,
    /// Pad steps [`TtsStream`] adds after the last word, on top of the text-audio delay.
    pub extra_steps: usize,
}

impl TtsConfig {
    /// moshi's `Config::v202501`, the settings of Kyutai's TTS 1.6B: acoustic delay 2, pad 3,
    /// BOS 1, EOS 2, end-of-padding 0, start 8000, text-audio delay 25 steps (2 s), at most 10
    /// pads in a row, 5 extra steps.
    pub fn v202501() -> Self {
        Self {
            acoustic_delay: 2,
            text_pad_token: 3,
            text_bos_token: 1,
            text_eos_token: 2,
            text_eop_token: 0,
            text_start_token: 8000,
            text_audio_delay_in_tokens: 25,
            max_consecutive_pads: 10,
            extra_steps: 5,
        }
    }

    /// Checks the special tokens against `model`'s text vocabulary.
    fn validate(&self, model: &LmModel) -> Result<()> {
        let vocab = model.text_in_vocab_size();
        for (name, token) in [
            ("config.text_pad_token", self.text_pad_token),
            ("config.text_bos_token", self.text_bos_token),
            ("config.text_eos_token", self.text_eos_token),
            ("config.text_eop_token", self.text_eop_token),
            ("config.text_start_token", self.text_start_token),
        ] {
            check_text_token(token, name, vocab)?;
        }
        if self.text_pad_token == self.text_eop_token {
            return Err(Error::input(
                "config",
                format!(
                    "the pad and end-of-padding tokens must differ, both are {}",
                    self.text_pad_token
                ),
            ));
        }
        Ok(())
    }
}

/// The text token a [`TtsState::step`] may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedTokens {
    /// This token (a token of the current word), without asking the sampler.
    Text(u32),
    /// The pad token, without asking the sampler.
    Pad,
    /// Pad or end-of-padding: the text sampler picks from the model's text logits; any token
    /// other than pad counts as end-of-padding. End-of-padding is forced, without asking the
    /// sampler, after more than `max_consecutive_pads` pads in a row.
    PadOrEpad,
}

/// The step-wise TTS state (moshi's `tts_streaming::State`, without cross-attention).
///
/// Each [`step`](Self::step) runs the model on the previous text token and the delayed audio
/// tokens, picks the step's text token as `allowed` says, then (once past the text-audio
/// delay) samples one audio token per generated codebook. [`TtsStream`] drives it word by word.
///
/// The samplers see the text stream's tokens so far as the text history and, for audio
/// codebook `k`, the tokens sampled for `k` so far.
pub struct TtsState {
    model: LmModel,
    samplers: Samplers,
    config: TtsConfig,
    step_idx: usize,
    /// `text_tokens[s]`: the text token of step `s`.
    text_tokens: Vec<u32>,
    /// `audio_tokens[s][k]`: codebook `k`'s token at audio position `s`, `None` until written.
    audio_tokens: Vec<Vec<Option<u32>>>,
    /// `audio_histories[k]`: the tokens sampled for codebook `k`.
    audio_histories: Vec<Vec<u32>>,
    consecutive_pads: usize,
}

impl std::fmt::Debug for TtsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtsState")
            .field("config", &self.config)
            .field("samplers", &self.samplers)
            .field("step_idx", &self.step_idx)
            .field("consecutive_pads", &self.consecutive_pads)
            .finish_non_exhaustive()
    }
}

impl TtsState {
    /// A state over `model` (its streaming state is reset) sampling with `samplers`.
    ///
    /// # Errors
    ///
    /// [`Error::NoDepformer`] for a model that generates no audio; [`Error::InvalidInput`]
    /// when per-codebook samplers do not match the model's generated codebooks, or the pad and
    /// end-of-padding tokens are equal; [`Error::TokenOutOfRange`] for a special token outside
    /// the model's text vocabulary.
    pub fn new(mut model: LmModel, config: TtsConfig, samplers: Samplers) -> Result<Self> {
        let codebooks = model.generated_audio_codebooks();
        if codebooks == 0 {
            return Err(Error::NoDepformer);
        }
        samplers.check_codebooks(codebooks)?;
        config.validate(&model)?;
        model.reset_state();
        Ok(Self {
            model,
            samplers,
            config,
            step_idx: 0,
            text_tokens: Vec::new(),
            audio_tokens: Vec::new(),
            audio_histories: vec![Vec::new(); codebooks],
            consecutive_pads: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &TtsConfig {
        &self.config
    }

    /// The language model.
    pub fn model(&self) -> &LmModel {
        &self.model
    }

    /// Steps taken.
    pub fn step_idx(&self) -> usize {
        self.step_idx
    }

    /// Generated audio codebooks per step.
    pub fn audio_codebooks(&self) -> usize {
        self.audio_histories.len()
    }

    /// The text token of each step so far (after any
    /// [`overwrite_last_text_token`](Self::overwrite_last_text_token)).
    pub fn text_tokens(&self) -> &[u32] {
        &self.text_tokens
    }

    /// The audio table so far: `audio_tokens()[s][k]` is codebook `k`'s token at audio
    /// position `s`, one row per step taken. Codebook 0's token of position `s` is written at
    /// step `s`, the others' `acoustic_delay` steps later, so the last rows are partly `None`
    /// (moshi's `UNGENERATED`). Before the text-audio delay the rows hold the audio pad token.
    pub fn audio_tokens(&self) -> &[Vec<Option<u32>>] {
        &self.audio_tokens
    }

    /// The newest complete audio frame (one token per codebook), if it holds no pad token:
    /// the frame to decode after this step (moshi's `last_audio_tokens`).
    pub fn last_audio_tokens(&self) -> Option<Vec<u32>> {
        let row = self.step_idx.checked_sub(self.config.acoustic_delay + 1)?;
        let pad = self.model.audio_pad_token();
        self.audio_tokens
            .get(row)?
            .iter()
            .map(|t| t.filter(|&t| t < pad))
            .collect()
    }

    /// Replaces the text token of the last step (Kyutai's server writes a pad over the final
    /// end-of-padding). It changes what [`text_tokens`](Self::text_tokens) and the text
    /// sampler's history hold, not what the model has read.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] before the first step; [`Error::TokenOutOfRange`] for a token
    /// outside the text vocabulary.
    pub fn overwrite_last_text_token(&mut self, token: u32) -> Result<()> {
        check_text_token(token, "token", self.model.text_in_vocab_size())?;
        match self.text_tokens.last_mut() {
            Some(last) => {
                *last = token;
                Ok(())
            }
            None => Err(Error::input(
                "overwrite_last_text_token",
                "no step has been taken yet",
            )),
        }
    }

    /// Starts over: the model's state, the tables and every sampler.
    pub fn reset(&mut self) {
        self.model.reset_state();
        self.samplers.reset();
        self.step_idx = 0;
        self.text_tokens.clear();
        self.audio_tokens.clear();
        self.audio_histories.iter_mut().for_each(Vec::clear);
        self.consecutive_pads = 0;
    }

    /// One step: the model reads `prev_text_token` and the delayed audio tokens; the step's
    /// text token is chosen as `allowed` says and returned; once past the text-audio delay,
    /// the depformer samples the step's audio tokens (readable with
    /// [`audio_tokens`](Self::audio_tokens) and [`last_audio_tokens`](Self::last_audio_tokens)).
    ///
    /// # Errors
    ///
    /// [`Error::TokenOutOfRange`] for `prev_text_token` or an [`AllowedTokens::Text`] token
    /// outside the text vocabulary (checked before anything changes); the samplers' errors
    /// (including a sampled token outside the logits), after which the model has read the
    /// step but the tables have not recorded it: [`reset`](Self::reset) before going on.
    pub fn step(&mut self, prev_text_token: u32, allowed: AllowedTokens) -> Result<u32> {
        let text_vocab = self.model.text_in_vocab_size();
        check_text_token(prev_text_token, "prev_text_token", text_vocab)?;
        if let AllowedTokens::Text(token) = allowed {
            check_text_token(token, "allowed", text_vocab)?;
        }
        let step = self.step_idx;
        let config = &self.config;
        let pad = self.model.audio_pad_token();
        let codebooks = self.audio_histories.len();

        // The audio inputs: one per generated codebook, then nothing for any further input
        // codebook the model may have (moshi passes only the generated ones).
        let mut inputs = Vec::with_capacity(self.model.in_audio_codebooks());
        for k in 0..codebooks {
            let (delay, window) = if k == 0 {
                (0, config.text_audio_delay_in_tokens)
            } else {
                (
                    config.acoustic_delay,
                    config.text_audio_delay_in_tokens + config.acoustic_delay,
                )
            };
            let input = if step <= delay {
                Some(pad)
            } else if step <= window {
                None
            } else {
                let position = step - delay - 1;
                match self.audio_tokens.get(position).and_then(|row| row.get(k)) {
                    Some(Some(token)) => Some(*token),
                    _ => {
                        return Err(Error::input(
                            "audio_tokens",
                            format!("codebook {k} at position {position} was never generated"),
                        ))
                    }
                }
            };
            inputs.push(input);
        }
        inputs.resize(self.model.in_audio_codebooks(), None);
        let inputs: Vec<Option<&[u32]>> = inputs
            .iter()
            .map(|t| t.as_ref().map(std::slice::from_ref))
            .collect();
        let (logits, hidden) = self
            .model
            .forward_tokens(Some(&[prev_text_token]), &inputs)?;

        let text_token = match allowed {
            AllowedTokens::Text(token) => token,
            AllowedTokens::Pad => config.text_pad_token,
            AllowedTokens::PadOrEpad => {
                if self.consecutive_pads > config.max_consecutive_pads {
                    config.text_eop_token
                } else {
                    let sampled = sample_logits(&logits, self.samplers.text(), &self.text_tokens)?;
                    if sampled == config.text_pad_token {
                        config.text_pad_token
                    } else {
                        config.text_eop_token
                    }
                }
            }
        };

        let sampled = if step < config.text_audio_delay_in_tokens {
            None
        } else {
            let mut forced = Vec::new();
            if step < config.acoustic_delay {
                forced.push(None);
                forced.resize(codebooks, Some(pad));
            }
            let samplers = &mut self.samplers;
            let histories = &mut self.audio_histories;
            let tokens = self.model.depformer_step_with(
                &hidden,
                Some(text_token),
                &forced,
                None,
                |k, logits| {
                    let history = histories.get_mut(k).ok_or_else(|| {
                        Error::input("audio codebook", format!("{k} has no history"))
                    })?;
                    let token = sample_logits(logits, samplers.audio(k)?, history)?;
                    history.push(token);
                    Ok(token)
                },
            )?;
            Some(tokens)
        };

        // Everything that can fail has run: update the state.
        if text_token == config.text_pad_token {
            self.consecutive_pads += 1;
        } else {
            self.consecutive_pads = 0;
        }
        self.text_tokens.push(text_token);
        self.audio_tokens.push(vec![None; codebooks]);
        for k in 0..codebooks {
            let delay = if k == 0 { 0 } else { config.acoustic_delay };
            let value = match &sampled {
                Some(tokens) => tokens.get(k).copied().unwrap_or(pad),
                None => pad,
            };
            if let Some(slot) = self
                .audio_tokens
                .get_mut(step.saturating_sub(delay))
                .and_then(|row| row.get_mut(k))
            {
                if slot.is_none() {
                    *slot = Some(value);
                }
            }
        }
        self.step_idx += 1;
        Ok(text_token)
    }
}

/// What one [`TtsStream::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtsEvent {
    /// A model step ran.
    Step {
        /// The step's text token (the value the state returned, before any overwrite).
        text_token: u32,
        /// The audio frame to decode after this step, if one is complete
        /// ([`TtsState::last_audio_tokens`]).
        audio_tokens: Option<Vec<u32>>,
    },
    /// The stream waits for the next word: [`push_word`](TtsStream::push_word) or
    /// [`finish`](TtsStream::finish). No step ran.
    NeedsText,
    /// The text has ended and the trailing steps have run: nothing more to generate.
    Finished,
}

/// The whole output of [`TtsStream::generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtsOutput {
    /// The text token each step returned.
    pub text_tokens: Vec<u32>,
    /// The complete audio frames, in order (one token per generated codebook), ready for
    /// Mimi's decoder.
    pub audio_frames: Vec<Vec<u32>>,
}

/// Feeds a [`TtsState`] word by word, as Kyutai's streaming TTS server does.
///
/// Words are lists of text tokens. The stream starts with an empty word, so the model decides
/// when the first word starts. Each word's tokens are forced one per step; after the last, the
/// model chooses between pad and end-of-padding; at end-of-padding the next word starts. After
/// [`finish`](Self::finish), the final end-of-padding is overwritten with a pad in the state's
/// text table and `text_audio_delay_in_tokens + extra_steps` pad steps let the audio catch up.
///
/// Kyutai's servers put `text_bos_token` before the first word's tokens; do the same when
/// driving a real checkpoint.
///
/// ```
/// use candle_core::{DType, Device};
/// use kyutai::tts::{TtsConfig, TtsState, TtsStream};
/// use kyutai::{LmConfig, LmModel, Samplers};
///
/// // A small model with 4 generated codebooks and random weights: the audio is noise.
/// let mut config = LmConfig::moshi_7b_v0_1();
/// (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
/// let dep = config.depformer.as_mut().unwrap();
/// (dep.num_slices, dep.transformer.d_model, dep.transformer.num_heads, dep.transformer.num_layers) = (4, 16, 2, 1);
/// (config.audio_codebooks, config.text_in_vocab_size, config.text_out_vocab_size, config.audio_vocab_size) = (4, 33, 32, 17);
/// config.audio_delays = None;
/// let model = LmModel::random(&config, 1, DType::F32, &Device::Cpu)?;
///
/// let tts = TtsConfig { text_start_token: 32, text_audio_delay_in_tokens: 3, ..TtsConfig::v202501() };
/// let state = TtsState::new(model, tts, Samplers::moshi(42)?)?;
/// let mut stream = TtsStream::new(state);
/// stream.push_word(vec![1, 10, 11])?; // BOS, then the word's tokens
/// stream.push_word(vec![12])?;
/// stream.finish();
/// let output = stream.generate()?;
/// assert_eq!(&output.text_tokens[1..4], &[1, 10, 11]);
/// assert!(output.audio_frames.iter().all(|frame| frame.len() == 4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TtsStream {
    state: TtsState,
    /// Words pushed and not started yet.
    queued: VecDeque<Vec<u32>>,
    /// The word being spoken; `None` once the text has ended.
    current: Option<Vec<u32>>,
    /// The next token of `current` to force.
    token_idx: usize,
    /// The last step ended a word and the next word has not been taken yet.
    awaiting_word: bool,
    /// `finish` was called.
    text_ended: bool,
    /// Pad steps taken after the text ended.
    steps_past_end: usize,
    /// The text token the next step reads.
    last_text_token: u32,
    finished: bool,
}

impl TtsStream {
    /// A stream over `state`, which it starts over ([`TtsState::reset`]), beginning with an
    /// empty word.
    pub fn new(mut state: TtsState) -> Self {
        state.reset();
        let last_text_token = state.config.text_start_token;
        Self {
            state,
            queued: VecDeque::new(),
            current: Some(Vec::new()),
            token_idx: 0,
            awaiting_word: false,
            text_ended: false,
            steps_past_end: 0,
            last_text_token,
            finished: false,
        }
    }

    /// The state.
    pub fn state(&self) -> &TtsState {
        &self.state
    }

    /// The state, giving up the stream.
    pub fn into_state(self) -> TtsState {
        self.state
    }

    /// Whether everything has been generated.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Queues a word (its text tokens; an empty word is a pause the model decides the length
    /// of).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] after [`finish`](Self::finish), or for a word holding the pad or
    /// end-of-padding token (it would never end, or end early); [`Error::TokenOutOfRange`] for
    /// a token outside the text vocabulary.
    pub fn push_word(&mut self, tokens: Vec<u32>) -> Result<()> {
        if self.text_ended {
            return Err(Error::input(
                "push_word",
                "the text has ended (`finish` was called)",
            ));
        }
        let config = &self.state.config;
        let vocab = self.state.model.text_in_vocab_size();
        for &token in &tokens {
            check_text_token(token, "word", vocab)?;
            if token == config.text_pad_token || token == config.text_eop_token {
                return Err(Error::input(
                    "word",
                    format!(
                        "holds token {token}, the pad or end-of-padding token, which the stream uses to pace the words"
                    ),
                ));
            }
        }
        self.queued.push_back(tokens);
        Ok(())
    }

    /// Marks the end of the text: once the queued words are spoken, the stream pads until the
    /// audio has caught up, then reports [`TtsEvent::Finished`].
    pub fn finish(&mut self) {
        self.text_ended = true;
    }

    /// Runs the next step, if the text allows it.
    ///
    /// # Errors
    ///
    /// As [`TtsState::step`].
    pub fn step(&mut self) -> Result<TtsEvent> {
        if self.finished {
            return Ok(TtsEvent::Finished);
        }
        if self.awaiting_word && !self.take_next_word()? {
            return Ok(TtsEvent::NeedsText);
        }
        let config = &self.state.config;
        let allowed = match &self.current {
            None => {
                self.steps_past_end += 1;
                if self.steps_past_end > config.extra_steps + config.text_audio_delay_in_tokens {
                    self.finished = true;
                    return Ok(TtsEvent::Finished);
                }
                AllowedTokens::Pad
            }
            Some(word) => match word.get(self.token_idx) {
                Some(&token) => AllowedTokens::Text(token),
                None => AllowedTokens::PadOrEpad,
            },
        };
        let text_token = self.state.step(self.last_text_token, allowed)?;
        self.last_text_token = text_token;
        let config = &self.state.config;
        if text_token == config.text_eop_token {
            self.awaiting_word = true;
            self.take_next_word()?;
        } else if text_token != config.text_pad_token {
            self.token_idx += 1;
        }
        Ok(TtsEvent::Step {
            text_token,
            audio_tokens: self.state.last_audio_tokens(),
        })
    }

    /// Calls [`finish`](Self::finish), then [`step`](Self::step) until
    /// [`TtsEvent::Finished`], collecting the text tokens and complete audio frames of these
    /// steps.
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step).
    pub fn generate(&mut self) -> Result<TtsOutput> {
        self.finish();
        let mut output = TtsOutput {
            text_tokens: Vec::new(),
            audio_frames: Vec::new(),
        };
        loop {
            match self.step()? {
                TtsEvent::Step {
                    text_token,
                    audio_tokens,
                } => {
                    output.text_tokens.push(text_token);
                    output.audio_frames.extend(audio_tokens);
                }
                // `finish` was called: the stream never waits for text.
                TtsEvent::NeedsText | TtsEvent::Finished => return Ok(output),
            }
        }
    }

    /// After an end-of-padding: starts the next queued word, or, when the text has ended,
    /// overwrites the end-of-padding with a pad and enters the trailing steps. Returns whether
    /// the stream can step.
    fn take_next_word(&mut self) -> Result<bool> {
        if let Some(word) = self.queued.pop_front() {
            self.current = Some(word);
        } else if self.text_ended {
            let pad = self.state.config.text_pad_token;
            self.state.overwrite_last_text_token(pad)?;
            self.current = None;
        } else {
            return Ok(false);
        }
        self.token_idx = 0;
        self.awaiting_word = false;
        Ok(true)
    }
}

fn check_text_token(token: u32, input: &str, vocab: usize) -> Result<()> {
    if token as usize >= vocab {
        return Err(Error::TokenOutOfRange {
            input: input.into(),
            token,
            vocab_size: vocab,
        });
    }
    Ok(())
}
