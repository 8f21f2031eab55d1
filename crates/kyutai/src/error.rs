//! The crate's error type.

use std::path::PathBuf;

use kyutai_sampling::SamplingError;

/// Everything that can go wrong when building or running a model of this crate.
///
/// Bad configurations, checkpoints that do not match their configuration and bad inputs are
/// reported as typed variants that name what is wrong; nothing in this crate panics on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error raised by candle (device, dtype, kernel, I/O of a checkpoint, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error raised by a sampler.
    #[error(transparent)]
    Sampling(#[from] SamplingError),

    /// A configuration value is out of its valid range.
    #[error("invalid model config: `{field}` {reason}")]
    InvalidConfig {
        /// The field, as a dotted path (`transformer.num_heads`, `depformer.num_slices`, ...).
        field: String,
        /// What is wrong with it, in words.
        reason: String,
    },

    /// The configuration asks for a feature this crate does not implement.
    #[error("unsupported model config: {feature} is not implemented by this crate")]
    Unsupported {
        /// The feature, in words (and the field that asks for it).
        feature: String,
    },

    /// A JSON configuration could not be parsed.
    #[error("could not parse the model config: {0}")]
    ConfigParse(#[from] serde_json::Error),

    /// A file could not be read.
    #[error("could not read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The checkpoint lacks a tensor the configuration needs.
    #[error("the checkpoint has no tensor `{name}` (the model needs one of shape {expected:?})")]
    MissingTensor {
        /// Full tensor name, in Kyutai's candle layout (`transformer.layers.0.norm1.alpha`, ...).
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
    },

    /// A checkpoint tensor does not have the shape the configuration implies.
    #[error("checkpoint tensor `{name}` has shape {found:?}, the model needs {expected:?}")]
    TensorShape {
        /// Full tensor name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape stored in the checkpoint.
        found: Vec<usize>,
    },

    /// A checkpoint tensor is not a floating-point tensor (the model's weights are floats; an
    /// integer tensor would be converted without a word).
    #[error("checkpoint tensor `{name}` holds {found:?} values, the model needs floats")]
    TensorDType {
        /// Full tensor name.
        name: String,
        /// The dtype stored in the checkpoint.
        found: candle_core::DType,
    },

    /// An allocation the input asked for could not be made (the allocator refused it): the
    /// process is not aborted.
    #[error("could not allocate {bytes} bytes for {what}")]
    OutOfMemory {
        /// What the memory was for.
        what: String,
        /// How much was asked.
        bytes: u128,
    },

    /// An input tensor or slice has the wrong rank, shape, dtype or length.
    #[error("invalid input `{input}`: {reason}")]
    InvalidInput {
        /// The argument, in words (`text`, `audio[3]`, `hidden`, `histories`, ...).
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A token id is outside the vocabulary it indexes.
    #[error("token {token} in `{input}` is outside the vocabulary of {vocab_size} entries")]
    TokenOutOfRange {
        /// Where the token came from (`text`, `audio[2]`, `forced_audio_tokens[1]`, a sampler).
        input: String,
        /// The offending token.
        token: u32,
        /// The size of the vocabulary (valid tokens are `0..vocab_size`).
        vocab_size: usize,
    },

    /// A depformer method was called on a model without a depformer (an STT model).
    #[error("this model has no depformer: it generates no audio codebooks")]
    NoDepformer,
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(feature: impl Into<String>) -> Self {
        Self::Unsupported {
            feature: feature.into(),
        }
    }

    pub(crate) fn input(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            input: input.into(),
            reason: reason.into(),
        }
    }
}

/// Checks that every token of `tokens` (the input named `input`) is below `vocab`: the one
/// token-range check of the crate.
pub(crate) fn check_tokens(tokens: &[u32], input: &str, vocab: usize) -> Result<()> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        Some(&token) => Err(Error::TokenOutOfRange {
            input: input.to_string(),
            token,
            vocab_size: vocab,
        }),
        None => Ok(()),
    }
}
