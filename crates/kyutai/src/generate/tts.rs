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
//! * The token tables grow as needed: there is no maximum step count. The delays are bounded
//!   by [`MAX_DELAY`] and the pads in a row by [`MAX_CONSECUTIVE_PADS`], so
//!   every word ends after a bounded number of steps whatever the sampler picks.
//! * Bad input is a typed error: tokens outside the vocabulary, words holding the pad or
//!   end-of-padding token (they would stall moshi's driver), a model without a depformer.
//! * A delayed codebook's sample is dropped before its `acoustic_delay` (moshi writes it to
//!   position 0 unless that position is already set; the two agree whenever
//!   `text_audio_delay_in_tokens > acoustic_delay`, as in every Kyutai configuration).

use super::sample::sample_logits;
use super::samplers::Samplers;
use super::streams::DelayedStreams;
use crate::config::{TEXT_EOP_TOKEN, TEXT_PAD_TOKEN};
use crate::error::check_tokens;
use crate::limits::MAX_DELAY;
use crate::{Error, LmModel, Result};

pub use super::tts_stream::{TtsEvent, TtsOutput, TtsStream};

/// The largest [`TtsConfig::max_consecutive_pads`]: 1024 pads (82 s of silence at 12.5 Hz;
/// Kyutai's TTS uses 10). It bounds the steps a word can take however the text sampler
/// chooses, so that [`TtsStream::generate`] always returns.
pub const MAX_CONSECUTIVE_PADS: usize = 1 << 10;

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
    /// sampler; at most [`MAX_CONSECUTIVE_PADS`].
    pub max_consecutive_pads: usize,
    /// Pad steps [`TtsStream`] adds after the last word, on top of the text-audio delay; at
    /// most [`MAX_DELAY`], like the two delays.
    pub extra_steps: usize,
}

impl TtsConfig {
    /// moshi's `Config::v202501`, the settings of Kyutai's TTS 1.6B: acoustic delay 2, pad 3,
    /// BOS 1, EOS 2, end-of-padding 0, start 8000, text-audio delay 25 steps (2 s), at most 10
    /// pads in a row, 5 extra steps.
    pub fn v202501() -> Self {
        Self {
            acoustic_delay: 2,
            text_pad_token: TEXT_PAD_TOKEN,
            text_bos_token: 1,
            text_eos_token: 2,
            text_eop_token: TEXT_EOP_TOKEN,
            text_start_token: 8000,
            text_audio_delay_in_tokens: 25,
            max_consecutive_pads: 10,
            extra_steps: 5,
        }
    }

    /// Checks the step counts against their bounds and the special tokens against `model`'s
    /// text vocabulary.
    fn validate(&self, model: &LmModel) -> Result<()> {
        for (name, value, max, bound) in [
            (
                "config.acoustic_delay",
                self.acoustic_delay,
                MAX_DELAY,
                "MAX_DELAY",
            ),
            (
                "config.text_audio_delay_in_tokens",
                self.text_audio_delay_in_tokens,
                MAX_DELAY,
                "MAX_DELAY",
            ),
            (
                "config.extra_steps",
                self.extra_steps,
                MAX_DELAY,
                "MAX_DELAY",
            ),
            (
                "config.max_consecutive_pads",
                self.max_consecutive_pads,
                MAX_CONSECUTIVE_PADS,
                "MAX_CONSECUTIVE_PADS",
            ),
        ] {
            if value > max {
                return Err(Error::input(
                    name,
                    format!("must be at most {bound} = {max} (got {value})"),
                ));
            }
        }
        let vocab = model.text_in_vocab_size();
        for (name, token) in [
            ("config.text_pad_token", self.text_pad_token),
            ("config.text_bos_token", self.text_bos_token),
            ("config.text_eos_token", self.text_eos_token),
            ("config.text_eop_token", self.text_eop_token),
            ("config.text_start_token", self.text_start_token),
        ] {
            check_tokens(&[token], name, vocab)?;
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
    /// Codebook `k`'s token at audio position `s`, codebooks `1..` `acoustic_delay` steps late.
    audio: DelayedStreams,
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
    /// when per-codebook samplers do not match the model's generated codebooks, the pad and
    /// end-of-padding tokens are equal, a delay or `extra_steps` is above
    /// [`MAX_DELAY`] or `max_consecutive_pads` above
    /// [`MAX_CONSECUTIVE_PADS`]; [`Error::TokenOutOfRange`] for a special token outside
    /// the model's text vocabulary.
    pub fn new(mut model: LmModel, config: TtsConfig, samplers: Samplers) -> Result<Self> {
        let codebooks = model.generated_audio_codebooks();
        if codebooks == 0 {
            return Err(Error::NoDepformer);
        }
        samplers.check_codebooks(codebooks)?;
        config.validate(&model)?;
        model.reset_state();
        let delays = (0..codebooks)
            .map(|k| if k == 0 { 0 } else { config.acoustic_delay })
            .collect();
        Ok(Self {
            audio: DelayedStreams::new(delays, model.audio_pad_token()),
            model,
            samplers,
            config,
            step_idx: 0,
            text_tokens: Vec::new(),
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
    pub fn audio_tokens(&self) -> Vec<Vec<Option<u32>>> {
        self.audio
            .rows()
            .iter()
            .map(|row| row.iter().map(|t| t.get()).collect())
            .collect()
    }

    /// The newest complete audio frame (one token per codebook), if it holds no pad token:
    /// the frame to decode after this step (moshi's `last_audio_tokens`).
    pub fn last_audio_tokens(&self) -> Option<Vec<u32>> {
        let row = self
            .step_idx
            .checked_sub(self.config.acoustic_delay.saturating_add(1))?;
        let pad = self.model.audio_pad_token();
        self.audio
            .row(row)?
            .iter()
            .map(|t| t.get().filter(|&t| t < pad))
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
        check_tokens(&[token], "token", self.model.text_in_vocab_size())?;
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
        self.audio.clear();
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
        check_tokens(&[prev_text_token], "prev_text_token", text_vocab)?;
        if let AllowedTokens::Text(token) = allowed {
            check_tokens(&[token], "allowed", text_vocab)?;
        }
        let (logits, hidden) = self.forward(prev_text_token)?;
        let text_token = self.choose_text(&logits, allowed)?;
        let sampled = if self.step_idx < self.config.text_audio_delay_in_tokens {
            None
        } else {
            Some(self.sample_audio(&hidden, text_token)?)
        };

        // Everything that can fail has run: update the state.
        if text_token == self.config.text_pad_token {
            self.consecutive_pads = self.consecutive_pads.saturating_add(1);
        } else {
            self.consecutive_pads = 0;
        }
        self.text_tokens.push(text_token);
        let step = self.step_idx;
        self.audio.ensure(step);
        let pad = self.model.audio_pad_token();
        for k in 0..self.audio.codebooks() {
            let value = sampled.as_ref().and_then(|t| t.get(k).copied());
            self.audio.fill(step, k, value.unwrap_or(pad));
        }
        self.step_idx += 1;
        Ok(text_token)
    }

    /// Runs the model on `prev_text_token` and the delayed audio: one input per generated
    /// codebook (a literal zero between its delay and the text-audio delay), nothing for any
    /// further input codebook the model may have (moshi passes only the generated ones).
    fn forward(
        &mut self,
        prev_text_token: u32,
    ) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
        let step = self.step_idx;
        let mut inputs = Vec::with_capacity(self.model.in_audio_codebooks());
        for k in 0..self.audio.codebooks() {
            let delay = if k == 0 {
                0
            } else {
                self.config.acoustic_delay
            };
            let silent = step > delay
                && step <= self.config.text_audio_delay_in_tokens.saturating_add(delay);
            inputs.push(if silent {
                None
            } else {
                self.audio.input(step, k)?
            });
        }
        inputs.resize(self.model.in_audio_codebooks(), None);
        let inputs: Vec<Option<&[u32]>> = inputs
            .iter()
            .map(|t| t.as_ref().map(std::slice::from_ref))
            .collect();
        self.model.forward_tokens(Some(&[prev_text_token]), &inputs)
    }

    /// The step's text token, as `allowed` says.
    fn choose_text(&mut self, logits: &candle_core::Tensor, allowed: AllowedTokens) -> Result<u32> {
        let config = &self.config;
        Ok(match allowed {
            AllowedTokens::Text(token) => token,
            AllowedTokens::Pad => config.text_pad_token,
            AllowedTokens::PadOrEpad if self.consecutive_pads > config.max_consecutive_pads => {
                config.text_eop_token
            }
            AllowedTokens::PadOrEpad => {
                let sampled = sample_logits(logits, self.samplers.text(), &self.text_tokens)?;
                if sampled == config.text_pad_token {
                    config.text_pad_token
                } else {
                    config.text_eop_token
                }
            }
        })
    }

    /// The depformer's tokens for this step (every sample goes into its codebook's history).
    fn sample_audio(&mut self, hidden: &candle_core::Tensor, text_token: u32) -> Result<Vec<u32>> {
        let step = self.step_idx;
        let forced: Vec<Option<u32>> = (0..self.audio.codebooks())
            .map(|k| self.audio.forced(step, k))
            .collect();
        let samplers = &mut self.samplers;
        let histories = &mut self.audio_histories;
        self.model
            .depformer_step_with(hidden, Some(text_token), &forced, None, |k, logits| {
                let history = histories
                    .get_mut(k)
                    .ok_or_else(|| Error::input("audio codebook", format!("{k} has no history")))?;
                let token = sample_logits(logits, samplers.audio(k)?, history)?;
                history.push(token);
                Ok(token)
            })
    }
}
