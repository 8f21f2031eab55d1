//! [`LmGenerate`]: generic step-wise generation with one delay per audio codebook, teacher
//! forcing of any text or audio position and "literal zero" inputs: moshi 0.6.4's
//! `lm_generate::State`, with injected [`Samplers`].
//!
//! The text token is chosen through `samplers.text` with the text stream's history, the token
//! of generated codebook `k` through `samplers.audio(k)` with codebook `k`'s history: the tokens
//! written into its stream (a token sampled before the codebook's delay, which the stream
//! discards, is not in it).

use super::multistream::{check_text_tokens, MOSHI_TEXT_EOP_TOKEN, MOSHI_TEXT_PAD_TOKEN};
use super::sample::sample_logits;
use super::streams::DelayedStreams;
pub use super::streams::Token;
use crate::config::audio_pad_token;
use crate::error::check_tokens;
use crate::limits::MAX_DELAY;
use crate::{Error, LmModel, Result, Samplers};

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
        audio_pad_token(self.audio_vocab_size)
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
    audio: DelayedStreams,
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
    /// codebook, the audio vocabulary, tokens in the text vocabulary) or a delay is above
    /// [`MAX_DELAY`];
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
        for (k, &delay) in config.audio_delays.iter().enumerate() {
            if delay > MAX_DELAY {
                return Err(Error::config(
                    format!("audio_delays[{k}]"),
                    format!("must be at most MAX_DELAY = {MAX_DELAY} (got {delay})"),
                ));
            }
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
            audio: DelayedStreams::new(config.audio_delays.clone(), config.audio_pad_token()),
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
                check_tokens(
                    &[*t],
                    &format!("audio_tokens[{k}]"),
                    self.config.audio_vocab_size,
                )?;
            }
        }
        let step = self.step_idx;
        self.ensure_position(step);
        for (k, token) in tokens.iter().enumerate() {
            if let Some(token) = token {
                self.audio.set(step, k, *token);
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
            check_tokens(&[t], "text_token", self.model.text_in_vocab_size())?;
        }
        let step = self.step_idx;
        self.ensure_position(step);
        self.text_tokens[step] = token;
        Ok(())
    }

    fn ensure_position(&mut self, position: usize) {
        self.audio.ensure(position);
        if self.text_tokens.len() <= position {
            self.text_tokens
                .resize(position.saturating_add(1), Token::Ungenerated);
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
        let (logits, hidden) = self.forward()?;
        let text_token = match self.text_tokens.get(step).copied() {
            Some(Token::Ungenerated) | None => {
                let token = sample_logits(&logits, self.samplers.text(), &self.text_history)?;
                self.text_tokens[step] = Token::Set(token);
                Some(token)
            }
            Some(token) => token.get(),
        };
        self.text_history.extend(text_token);
        if self.model.generated_audio_codebooks() > 0 {
            self.sample_audio(&hidden, text_token)?;
        }
        self.step_idx += 1;
        Ok(text_token)
    }

    /// Runs the model on the text of the previous position and the delayed audio streams.
    fn forward(&mut self) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
        let step = self.step_idx;
        let codes = (0..self.audio.codebooks())
            .map(|k| self.audio.input(step, k))
            .collect::<Result<Vec<_>>>()?;
        let text_input = match step.checked_sub(1) {
            None => Some(self.config.text_start_token),
            Some(previous) => match self.text_tokens.get(previous).copied() {
                Some(Token::Set(t)) => Some(t),
                Some(Token::LiteralZero) => None,
                Some(Token::Ungenerated) | None => {
                    return Err(Error::input(
                        "text_tokens",
                        format!("position {previous} was not generated"),
                    ))
                }
            },
        };
        let codes: Vec<Option<&[u32]>> = codes
            .iter()
            .map(|c| c.as_ref().map(std::slice::from_ref))
            .collect();
        self.model
            .forward_tokens(text_input.as_ref().map(std::slice::from_ref), &codes)
    }

    /// The depformer's tokens for this step, written into the streams unless set in advance.
    fn sample_audio(
        &mut self,
        hidden: &candle_core::Tensor,
        text_token: Option<u32>,
    ) -> Result<()> {
        let step = self.step_idx;
        let generated = self.model.generated_audio_codebooks();
        let forced: Vec<Option<u32>> = (0..generated).map(|k| self.audio.forced(step, k)).collect();
        let (samplers, histories) = (&mut self.samplers, &self.audio_histories);
        let tokens =
            self.model
                .depformer_step_with(hidden, text_token, &forced, None, |k, logits| {
                    let history = histories.get(k).map_or(&[][..], Vec::as_slice);
                    sample_logits(logits, samplers.audio(k)?, history)
                })?;
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
        let first = self.config.max_audio_delay().saturating_add(1);
        let Some(index) = self.step_idx.checked_sub(first) else {
            return Ok(None);
        };
        let Some(row) = self.audio.row(index) else {
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
        let rows = self.audio.rows();
        &rows[..self.step_idx.min(rows.len())]
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
        self.audio.clear();
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
