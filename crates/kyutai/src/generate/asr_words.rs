//! One batch item of an [`AsrState`](super::asr::AsrState): its streaming state, and moshi's
//! rule for reading its text tokens as words with timestamps.

use super::asr::{AsrConfig, AsrMessage};

/// The streaming state of one batch item.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// Steps taken by this item since its last reset.
    pub(crate) steps: usize,
    /// The last sampled text token.
    pub(crate) text_token: u32,
    /// The tokens of the word being read.
    word_tokens: Vec<u32>,
    /// A word was closed and its end not yet reported.
    unended_word: bool,
    /// The time of the last end-of-padding, in seconds.
    last_stop_time: f64,
    /// The codes of the previous frame, read at the next step.
    pub(crate) previous_codes: Vec<u32>,
    /// The item's sampled text tokens since its last reset (the sampler's history).
    pub(crate) history: Vec<u32>,
}

impl Item {
    pub(crate) fn new(codebooks: usize, audio_pad_token: u32) -> Self {
        Self {
            steps: 0,
            text_token: 0,
            word_tokens: Vec::new(),
            unended_word: false,
            last_stop_time: 0.0,
            previous_codes: vec![audio_pad_token; codebooks],
            history: Vec::new(),
        }
    }
}

impl Item {
    /// Records the item's step of text `token`, and reads it as words (moshi's word logic).
    pub(crate) fn read(
        &mut self,
        token: u32,
        batch_idx: usize,
        config: &AsrConfig,
        messages: &mut Vec<AsrMessage>,
    ) {
        self.history.push(token);
        self.text_token = token;
        self.steps += 1;
        if self.steps < config.asr_delay_in_tokens {
            return;
        }
        if token == config.text_pad_token || token == config.text_eop_token {
            if !self.word_tokens.is_empty() {
                messages.push(AsrMessage::Word {
                    tokens: std::mem::take(&mut self.word_tokens),
                    start_time: self.last_stop_time,
                    batch_idx,
                });
                self.unended_word = true;
            }
        } else {
            self.word_tokens.push(token);
        }
        if token == config.text_eop_token {
            let stop_time = (self.steps - config.asr_delay_in_tokens) as f64 / config.frame_rate;
            if self.unended_word {
                self.unended_word = false;
                messages.push(AsrMessage::EndWord {
                    stop_time,
                    batch_idx,
                });
            }
            self.last_stop_time = stop_time;
        }
    }
}
