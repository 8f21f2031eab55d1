//! Streaming speech-to-text: [`AsrState`] turns Mimi codes (or PCM, through [`Mimi`]) into
//! words with timestamps, as moshi 0.6.4's `asr::State` does, with every text token chosen by an
//! injected [`Sampler`](kyutai_sampling::Sampler): the text sampler of each batch item's
//! [`Samplers`].
//!
//! # What a step does
//!
//! Each frame of audio codes (80 ms at 12.5 Hz) is one step of the language model, for every
//! item of the batch at once:
//!
//! 1. The model reads, per item, the previous text token (the text start token at the item's
//!    first step) and the audio codes of the **previous** frame (the audio pad token at the
//!    first step): the audio stream is shifted by one step, as in moshi.
//! 2. When the model has extra heads (the voice-activity heads of Kyutai's STT models), an
//!    [`AsrMessage::Step`] reports, for each head and item, the probability of the head's
//!    first class.
//! 3. Each item's text sampler picks the item's next text token from its row of the logits
//!    (greedy for Kyutai's STT); the batch is sampled at once by
//!    [`kyutai_sampling::Batch`], from one host copy of the logits. Once an item has taken `asr_delay_in_tokens` steps, its text tokens are
//!    read as words: a token other than pad and end-of-padding extends the current word; pad or
//!    end-of-padding closes it ([`AsrMessage::Word`], stamped with the time of the last
//!    end-of-padding); end-of-padding also ends the closed word ([`AsrMessage::EndWord`]), at
//!    `(item steps - asr_delay_in_tokens) / frame_rate` seconds.
//!
//! # Differences from moshi 0.6.4
//!
//! * Tokens come from one text sampler per batch item, where moshi takes the largest logit
//!   (temperature 0) or draws with Gumbel-softmax. A greedy sampler reproduces moshi's
//!   temperature-0 output.
//! * The pad and end-of-padding tokens and the frame rate are configurable ([`AsrConfig`];
//!   moshi hard-codes 3, 0 and 12.5).
//! * Inputs are checked before the state changes: a bad call is an error and leaves the state
//!   as it was (moshi may have advanced the delayed codes of some items).
//! * [`reset`](AsrState::reset) also restarts the step counter of the [`AsrMessage::Step`]
//!   messages and the samplers.
//! * No stream mask (every item is active at every step) and no conditioning.

use candle_core::{DType, Device, IndexOp, Tensor};
use kyutai_sampling::{Batch, BoxSampler};

use super::asr_words::Item;
use super::samplers::Samplers;
use crate::error::check_tokens;
use crate::mimi::Mimi;
use crate::{Error, LmModel, Result};

/// The frame rate of Mimi codes, in steps per second (moshi's ASR timestamps assume it).
pub const MIMI_FRAME_RATE: f64 = 12.5;

pub use crate::config::{TEXT_EOP_TOKEN, TEXT_PAD_TOKEN};

/// The settings of an [`AsrState`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AsrConfig {
    /// Steps an item takes before its text tokens are read as words: the model's text lags the
    /// audio by this many frames (`asr_delay_in_tokens` in Kyutai's STT configurations, for
    /// example 6 for STT 1B en/fr).
    pub asr_delay_in_tokens: usize,
    /// The text pad token (3 in moshi).
    pub text_pad_token: u32,
    /// The text end-of-padding token (0 in moshi).
    pub text_eop_token: u32,
    /// Steps per second, for the timestamps (12.5 in moshi).
    pub frame_rate: f64,
}

impl AsrConfig {
    /// moshi's settings with the given delay: pad 3, end-of-padding 0, 12.5 Hz.
    pub fn new(asr_delay_in_tokens: usize) -> Self {
        Self {
            asr_delay_in_tokens,
            text_pad_token: TEXT_PAD_TOKEN,
            text_eop_token: TEXT_EOP_TOKEN,
            frame_rate: MIMI_FRAME_RATE,
        }
    }

    fn validate(&self, model: &LmModel) -> Result<()> {
        if !(self.frame_rate.is_finite() && self.frame_rate > 0.0) {
            return Err(Error::input(
                "config.frame_rate",
                format!("must be a positive number, got {}", self.frame_rate),
            ));
        }
        let vocab = model.text_out_vocab_size();
        check_tokens(&[self.text_pad_token], "config.text_pad_token", vocab)?;
        check_tokens(&[self.text_eop_token], "config.text_eop_token", vocab)
    }
}

/// What an [`AsrState`] reports (moshi's `AsrMsg`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AsrMessage {
    /// A model step ran (only reported for models with extra heads).
    Step {
        /// Model steps taken since the state was created or reset, this one included.
        step_idx: usize,
        /// `prs[head][item]`: the probability of the first class of each extra head, for each
        /// batch item (for Kyutai's STT models, the probability that no one is speaking).
        prs: Vec<Vec<f32>>,
    },
    /// A word is complete.
    Word {
        /// Its text tokens.
        tokens: Vec<u32>,
        /// When it started, in seconds: the time of the previous end-of-padding.
        start_time: f64,
        /// The batch item it belongs to.
        batch_idx: usize,
    },
    /// The last word of an item has ended.
    EndWord {
        /// When it ended, in seconds.
        stop_time: f64,
        /// The batch item.
        batch_idx: usize,
    },
}

/// The tokens the language model read at one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsrInputs {
    /// `text[item]`: each item's text input.
    pub text: Vec<u32>,
    /// `audio[codebook][item]`: each item's audio input per codebook.
    pub audio: Vec<Vec<u32>>,
}

/// Streaming speech-to-text over a batch of independent audio streams (moshi's `asr::State`).
///
/// The batch size is the number of [`Samplers`] given at construction (a batch of them, one per
/// item; a [`BoxSampler`] converts into one): item `i`'s text is chosen by the text sampler of
/// `samplers[i]`, with the item's own history (the audio samplers are not used: speech-to-text
/// generates no audio). Feed audio codes with
/// [`step_tokens`](Self::step_tokens), or PCM with [`step_pcm`](Self::step_pcm) once a
/// [`Mimi`] is attached ([`with_mimi`](Self::with_mimi)).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use kyutai::asr::{AsrConfig, AsrMessage, AsrState};
/// use kyutai::{LmConfig, LmModel};
///
/// // The layout of Kyutai STT 1B, shrunk, with random weights: the words are noise.
/// let mut config = LmConfig::stt_1b_en_fr();
/// (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
/// let model = LmModel::random(&config, 0, DType::F32, &Device::Cpu)?;
/// let codebooks = model.in_audio_codebooks();
///
/// // One item, greedy text (what Kyutai's STT servers use).
/// let mut asr = AsrState::greedy(model, AsrConfig::new(2), 1)?;
/// // 10 frames of Mimi codes, shape [batch, codebooks, frames].
/// let codes = Tensor::zeros((1, codebooks, 10), DType::U32, &Device::Cpu)?;
/// for message in asr.step_tokens(&codes)? {
///     match message {
///         AsrMessage::Word { tokens, start_time, .. } => println!("{start_time:.2}s {tokens:?}"),
///         AsrMessage::EndWord { stop_time, .. } => println!("  ends at {stop_time:.2}s"),
///         AsrMessage::Step { .. } => {} // voice-activity probabilities
///     }
/// }
/// assert_eq!(asr.model_step_idx(), 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsrState {
    model: LmModel,
    mimi: Option<Mimi>,
    config: AsrConfig,
    samplers: Vec<Samplers>,
    batch: Batch,
    items: Vec<Item>,
    model_step_idx: usize,
    last_inputs: Option<AsrInputs>,
    /// Messages of the frames a failed call had taken: returned first by the next call.
    pending: Vec<AsrMessage>,
}

impl std::fmt::Debug for AsrState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrState")
            .field("config", &self.config)
            .field("batch_size", &self.items.len())
            .field("model_step_idx", &self.model_step_idx)
            .field("has_mimi", &self.mimi.is_some())
            .finish_non_exhaustive()
    }
}

impl AsrState {
    /// A state over `model` with one [`Samplers`] per batch item (the batch size is
    /// `samplers.len()`; `vec![sampler]` of [`BoxSampler`]s works too, each the text sampler of
    /// one item). The model's streaming state is reset.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `samplers` is empty or the frame rate is not positive;
    /// [`Error::TokenOutOfRange`] when the pad or end-of-padding token is not a text output
    /// token of the model.
    pub fn new<S: Into<Samplers>>(
        mut model: LmModel,
        config: AsrConfig,
        samplers: Vec<S>,
    ) -> Result<Self> {
        if samplers.is_empty() {
            return Err(Error::input(
                "samplers",
                "must hold one sampler per batch item, got none",
            ));
        }
        config.validate(&model)?;
        model.reset_state();
        let item = Item::new(model.in_audio_codebooks(), model.audio_pad_token());
        Ok(Self {
            items: vec![item; samplers.len()],
            model,
            mimi: None,
            config,
            samplers: samplers.into_iter().map(Into::into).collect(),
            batch: Batch::new(),
            model_step_idx: 0,
            last_inputs: None,
            pending: Vec::new(),
        })
    }

    /// [`new`](Self::new) with a greedy sampler for each of `batch_size` items: moshi's
    /// temperature 0, what Kyutai's STT servers run.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new) (a `batch_size` of 0 is an error).
    pub fn greedy(model: LmModel, config: AsrConfig, batch_size: usize) -> Result<Self> {
        Self::new(
            model,
            config,
            (0..batch_size).map(|_| Samplers::greedy()).collect(),
        )
    }

    /// Attaches the Mimi codec that [`step_pcm`](Self::step_pcm) encodes with. Its streaming
    /// state is reset with this state's: [`reset`](Self::reset) goes back to a copy of the codec
    /// as attached, so attach one that has not encoded yet (`Mimi::reset_state` does not clear
    /// every buffer of candle's encoder).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the codec's number of codebooks differs from the model's
    /// input audio codebooks, or its codes do not all fall below the model's audio pad token.
    pub fn with_mimi(mut self, mut mimi: Mimi) -> Result<Self> {
        let (have, want) = (mimi.num_codebooks(), self.model.in_audio_codebooks());
        if have != want {
            return Err(Error::input(
                "mimi",
                format!("produces {have} codebooks, the model reads {want}"),
            ));
        }
        let (codes, pad) = (mimi.cardinality(), self.model.audio_pad_token() as usize);
        if codes > pad {
            return Err(Error::input(
                "mimi",
                format!(
                    "produces codes up to {}, the model reads audio tokens below {pad} (its pad token)",
                    codes.saturating_sub(1)
                ),
            ));
        }
        mimi.reset_state();
        self.mimi = Some(mimi);
        Ok(self)
    }

    /// The settings.
    pub fn config(&self) -> &AsrConfig {
        &self.config
    }

    /// The language model.
    pub fn model(&self) -> &LmModel {
        &self.model
    }

    /// Batch items (streams) processed together.
    pub fn batch_size(&self) -> usize {
        self.items.len()
    }

    /// Model steps taken since the state was created or reset.
    pub fn model_step_idx(&self) -> usize {
        self.model_step_idx
    }

    /// The tokens the model read at the last step, if any.
    pub fn last_inputs(&self) -> Option<&AsrInputs> {
        self.last_inputs.as_ref()
    }

    /// The text tokens sampled for batch item `item` since its last reset (the history its
    /// sampler sees), or `None` when there is no such item.
    pub fn text_tokens(&self, item: usize) -> Option<&[u32]> {
        self.items.get(item).map(|item| item.history.as_slice())
    }

    /// Starts every stream over: the model's and the codec's streaming state, every item, every
    /// sampler and the step counter.
    pub fn reset(&mut self) {
        self.model.reset_state();
        if let Some(codec) = &mut self.mimi {
            codec.reset_state();
        }
        let fresh = Item::new(
            self.model.in_audio_codebooks(),
            self.model.audio_pad_token(),
        );
        self.items.iter_mut().for_each(|item| *item = fresh.clone());
        self.samplers.iter_mut().for_each(Samplers::reset);
        self.model_step_idx = 0;
        self.last_inputs = None;
        self.pending.clear();
    }

    /// Starts batch item `index` over (its model state, words and sampler); the other items
    /// continue (moshi's `reset_batch_idx`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when there is no such item; [`Error::Unsupported`] when a Mimi
    /// is attached and the batch has several items (the codec's streaming state cannot be reset
    /// for one item).
    pub fn reset_batch_item(&mut self, index: usize) -> Result<()> {
        let batch = self.items.len();
        if index >= batch {
            return Err(Error::input(
                "index",
                format!("batch item {index} does not exist (batch of {batch})"),
            ));
        }
        if self.mimi.is_some() && batch > 1 {
            return Err(Error::unsupported(
                "resetting one batch item of a state with a Mimi codec (the codec's streaming state is shared by the batch)",
            ));
        }
        self.model.reset_batch_item(index)?;
        if let Some(codec) = &mut self.mimi {
            codec.reset_state();
        }
        let fresh = Item::new(
            self.model.in_audio_codebooks(),
            self.model.audio_pad_token(),
        );
        if let (Some(item), Some(sampler)) =
            (self.items.get_mut(index), self.samplers.get_mut(index))
        {
            *item = fresh;
            sampler.reset();
        }
        Ok(())
    }

    /// Runs one model step per frame of `codes`, a `[batch, codebooks, frames]` u32 tensor of
    /// Mimi codes (`codebooks` = the model's input audio codebooks; 0 frames is a no-op), and
    /// returns the messages of these steps in order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a tensor of another rank, dtype, batch size or number of
    /// codebooks; [`Error::TokenOutOfRange`] for a code outside the model's audio vocabulary.
    /// These are checked before anything changes.
    ///
    /// The samplers' errors (and a sampled token outside the logits) at frame `f`: the frames
    /// before `f` have been taken, and **their messages are kept**: the next call of
    /// `step_tokens` or [`step_pcm`](Self::step_pcm) returns them first, before its own (or
    /// [`take_pending_messages`](Self::take_pending_messages) hands them over now). Frame `f`
    /// itself has been read by the model (its [`AsrMessage::Step`], if any, is kept too) but
    /// gave no text token: each item's words continue from its last sampled token at the next
    /// frame. [`reset`](Self::reset) drops the kept messages.
    pub fn step_tokens(&mut self, codes: &Tensor) -> Result<Vec<AsrMessage>> {
        let frames = self.check_codes(codes)?;
        let mut messages = std::mem::take(&mut self.pending);
        for frame in frames {
            if let Err(e) = self.step_frame(&frame, &mut messages) {
                self.pending = messages;
                return Err(e);
            }
        }
        Ok(messages)
    }

    /// The messages of the frames taken by calls that then failed (see
    /// [`step_tokens`](Self::step_tokens)), which the next call would return first; the state
    /// no longer holds them.
    pub fn take_pending_messages(&mut self) -> Vec<AsrMessage> {
        std::mem::take(&mut self.pending)
    }

    /// Encodes `pcm` (`[batch, channels, samples]`: one channel at 24 kHz for Kyutai's Mimi,
    /// any float dtype) with the attached [`Mimi`] in streaming mode and runs
    /// [`step_tokens`](Self::step_tokens) on the frames it completes (none until a whole frame
    /// of [`Mimi::frame_size`] samples has arrived).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when no Mimi is attached or `pcm` does not have the shape
    /// `[batch, channels, samples]`; the codec's errors (an integer tensor, no samples, a NaN
    /// or infinite sample), before anything changes; then as `step_tokens`.
    pub fn step_pcm(&mut self, pcm: &Tensor) -> Result<Vec<AsrMessage>> {
        let batch = self.items.len();
        let Some(mimi) = self.mimi.as_mut() else {
            return Err(Error::input(
                "pcm",
                "this state has no Mimi codec: attach one with `with_mimi`, or feed codes to `step_tokens`",
            ));
        };
        let channels = mimi.channels();
        match pcm.dims() {
            &[b, c, _] if b == batch && c == channels => {}
            dims => {
                return Err(Error::input(
                    "pcm",
                    format!(
                        "must have shape [batch = {batch}, channels = {channels}, samples], got {dims:?}"
                    ),
                ))
            }
        }
        match mimi.encode_step(pcm)? {
            Some(codes) => self.step_tokens(&codes),
            None => Ok(self.take_pending_messages()),
        }
    }

    /// Checks `codes` and returns its frames: `frames[t][item][codebook]`.
    fn check_codes(&self, codes: &Tensor) -> Result<Vec<Vec<Vec<u32>>>> {
        let batch = self.items.len();
        let codebooks = self.model.in_audio_codebooks();
        let (b, c, t) = match codes.dims() {
            &[b, c, t] => (b, c, t),
            dims => {
                return Err(Error::input(
                    "codes",
                    format!("must have shape [batch, codebooks, frames], got {dims:?}"),
                ))
            }
        };
        if b != batch {
            return Err(Error::input(
                "codes",
                format!("holds {b} batch items, the state has {batch}"),
            ));
        }
        if c != codebooks {
            return Err(Error::input(
                "codes",
                format!("holds {c} codebooks, the model reads {codebooks}"),
            ));
        }
        if codes.dtype() != DType::U32 {
            return Err(Error::input(
                "codes",
                format!("must hold u32 codes, got {:?}", codes.dtype()),
            ));
        }
        let values = codes.to_vec3::<u32>()?;
        let vocab = self.model.audio_vocab_size();
        for (item, rows) in values.iter().enumerate() {
            for (codebook, row) in rows.iter().enumerate() {
                check_tokens(row, &format!("codes[{item}][{codebook}]"), vocab)?;
            }
        }
        Ok((0..t)
            .map(|frame| {
                values
                    .iter()
                    .map(|rows| {
                        rows.iter()
                            .map(|row| row.get(frame).copied().unwrap_or_default())
                            .collect()
                    })
                    .collect()
            })
            .collect())
    }

    /// One model step on one checked frame (`frame[item][codebook]`).
    fn step_frame(&mut self, frame: &[Vec<u32>], messages: &mut Vec<AsrMessage>) -> Result<()> {
        let inputs = self.inputs(frame);
        let device = self.model.device().clone();
        let text_tensor = column_tensor(&inputs.text, &device)?;
        let audio_tensors = inputs
            .audio
            .iter()
            .map(|column| Ok(Some(column_tensor(column, &device)?)))
            .collect::<Result<Vec<_>>>()?;
        self.last_inputs = Some(inputs);

        let output = self.model.forward_asr(Some(&text_tensor), &audio_tensors)?;
        self.model_step_idx += 1;
        let probs = output.extra_head_probs()?;
        if !probs.is_empty() {
            let prs = probs
                .iter()
                .map(|p| Ok(p.i((.., 0, 0))?.to_vec1::<f32>()?))
                .collect::<Result<Vec<_>>>()?;
            messages.push(AsrMessage::Step {
                step_idx: self.model_step_idx,
                prs,
            });
        }

        let tokens = self.sample_text(&output.text_logits)?;
        for (batch_idx, (item, token)) in self.items.iter_mut().zip(tokens).enumerate() {
            item.read(token, batch_idx, &self.config, messages);
        }
        Ok(())
    }

    /// What the model reads at this step: per item, the previous text token and the codes of
    /// the previous frame (the start and pad tokens at the item's first step); `frame`'s codes
    /// are kept for the next step.
    fn inputs(&mut self, frame: &[Vec<u32>]) -> AsrInputs {
        let batch = self.items.len();
        let start = self.model.text_start_token();
        let audio_pad = self.model.audio_pad_token();
        let mut audio = vec![Vec::with_capacity(batch); self.model.in_audio_codebooks()];
        let mut text = Vec::with_capacity(batch);
        for (item, codes) in self.items.iter_mut().zip(frame) {
            let first = item.steps == 0;
            text.push(if first { start } else { item.text_token });
            for (column, (previous, &code)) in audio
                .iter_mut()
                .zip(item.previous_codes.iter_mut().zip(codes))
            {
                let read = std::mem::replace(previous, code);
                column.push(if first { audio_pad } else { read });
            }
        }
        AsrInputs { text, audio }
    }

    /// Each item's next text token, from its row of `logits` (`[batch, 1, vocab]`) and its
    /// text sampler: the whole batch through [`Batch`], from one host copy.
    ///
    /// # Errors
    ///
    /// [`Error::Sampling`] with [`SamplingError::BatchRow`](kyutai_sampling::SamplingError::BatchRow) naming the lowest failing item
    /// (every item's sampler has still run); [`Error::TokenOutOfRange`] naming the item whose
    /// sampler returned a token outside the logits.
    fn sample_text(&mut self, logits: &Tensor) -> Result<Vec<u32>> {
        let vocab = logits.dim(candle_core::D::Minus1)?;
        let histories: Vec<&[u32]> = self.items.iter().map(|i| i.history.as_slice()).collect();
        let mut samplers: Vec<&mut BoxSampler> =
            self.samplers.iter_mut().map(|s| &mut s.text).collect();
        let tokens = self.batch.sample(logits, &mut samplers, &histories)?;
        for (item, &token) in tokens.iter().enumerate() {
            check_tokens(
                &[token],
                &format!("the text sampler's output for batch item {item}"),
                vocab,
            )?;
        }
        Ok(tokens.to_vec())
    }
}

/// `values` as a `[len, 1]` u32 tensor.
fn column_tensor(values: &[u32], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(values, (values.len(), 1), device)?)
}
