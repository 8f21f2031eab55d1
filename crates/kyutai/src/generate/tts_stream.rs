//! [`TtsStream`]: feeds a [`TtsState`] word by word, as Kyutai's streaming TTS server does.

use std::collections::VecDeque;

use super::tts::{AllowedTokens, TtsState};
use crate::error::check_tokens;
use crate::{Error, Result};

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
        let last_text_token = state.config().text_start_token;
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
        let config = self.state.config();
        let vocab = self.state.model().text_in_vocab_size();
        for &token in &tokens {
            check_tokens(&[token], "word", vocab)?;
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
        let config = self.state.config();
        let allowed = match &self.current {
            None => {
                self.steps_past_end = self.steps_past_end.saturating_add(1);
                let trailing = config
                    .extra_steps
                    .saturating_add(config.text_audio_delay_in_tokens);
                if self.steps_past_end > trailing {
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
        let config = self.state.config();
        if text_token == config.text_eop_token {
            self.awaiting_word = true;
            self.take_next_word()?;
        } else if text_token != config.text_pad_token {
            self.token_idx = self.token_idx.saturating_add(1);
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
    /// It always returns: each word takes at most its tokens plus
    /// `max_consecutive_pads + 1` steps (bounded by
    /// [`MAX_CONSECUTIVE_PADS`](crate::MAX_CONSECUTIVE_PADS), whatever the text sampler picks),
    /// and the trailing pads `text_audio_delay_in_tokens + extra_steps` steps (each bounded by
    /// [`MAX_DELAY`](crate::MAX_DELAY)).
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
            let pad = self.state.config().text_pad_token;
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
