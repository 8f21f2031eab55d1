//! The generation layer: everything that chooses tokens, through injected samplers.
//!
//! * [`samplers`]: [`Samplers`], the samplers of one generation (text, audio codebooks), the
//!   one injection type of every state machine below.
//! * [`sample`]: [`sample_logits`], turning one row of logits into a token, and the model's
//!   sampling entry points ([`LmModel::sample_from_logits`](crate::LmModel::sample_from_logits),
//!   [`LmModel::depformer_sample`](crate::LmModel::depformer_sample)).
//! * [`multistream`]: [`Multistream`], Moshi's full-duplex loop.
//! * [`delayed`]: [`LmGenerate`], generic delayed-stream generation with teacher forcing.
//! * [`audio`]: [`generate_audio`] and [`BasicGenerator`], a whole generation from a prompt to
//!   PCM.
//! * [`asr`]: [`AsrState`], streaming speech-to-text.
//! * [`tts`]: [`TtsState`] and [`TtsStream`], streaming text-to-speech.
//!
//! The three step-wise state machines (multistream, delayed generation, TTS) keep their audio
//! in one table of delayed streams (`streams`), whose positions are [`Token`]s.

pub mod asr;
mod asr_words;
pub mod audio;
pub mod delayed;
pub mod multistream;
pub mod sample;
pub mod samplers;
mod streams;
pub mod tts;
mod tts_stream;

pub use asr::{AsrConfig, AsrMessage, AsrState};
pub use audio::{generate_audio, BasicGenerator, GenOutput, GenPrompt};
pub use delayed::{LmGenerate, LmGenerateConfig};
pub use multistream::{Multistream, MultistreamConfig};
pub use sample::sample_logits;
pub use samplers::{AudioSamplers, Samplers};
pub use streams::Token;
pub use tts::{AllowedTokens, TtsConfig, TtsEvent, TtsOutput, TtsState, TtsStream};
