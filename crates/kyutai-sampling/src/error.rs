//! The error type shared by every sampler in this crate.

use candle_core::DType;

/// Everything that can go wrong when building or running a [`Sampler`](crate::Sampler).
///
/// Parameter errors ([`InvalidParameter`](Self::InvalidParameter)) are reported at construction,
/// so a bad configuration fails before generation starts. Logits errors are reported by
/// [`Sampler::sample`](crate::Sampler::sample); no sampler in this crate panics on bad logits or
/// returns a token it should not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    /// A sampling parameter is out of its valid range.
    #[error("invalid sampling parameter `{name}` = {value}: expected {expected}")]
    InvalidParameter {
        /// The parameter's name (`temperature`, `top_k`, `top_p`, `repetition_penalty`, ...).
        name: &'static str,
        /// The value that was given (`k` values are converted to `f64`).
        value: f64,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// The logits tensor holds no element.
    #[error("logits are empty: the vocabulary must hold at least one token")]
    EmptyLogits,
    /// The logits tensor is neither `[vocab]` nor `[1, vocab]`.
    #[error("logits must have shape [vocab] or [1, vocab], got {shape:?}")]
    InvalidShape {
        /// The shape that was given.
        shape: Vec<usize>,
    },
    /// The logits tensor has an integer dtype.
    #[error("logits must have a float dtype (f16, bf16, f32 or f64), got {0:?}")]
    UnsupportedDType(DType),
    /// A logit is NaN or `+inf` (after conversion to f32). `-inf` is valid: it masks a token.
    #[error("logit at index {index} is {value}: NaN and +inf are not valid logits (use -inf to mask a token)")]
    NonFiniteLogit {
        /// Index of the first offending logit.
        index: usize,
        /// Its value (NaN or `+inf`).
        value: f32,
    },
    /// Every logit is `-inf`: there is no token to draw.
    #[error("every logit is -inf: no token can be sampled")]
    AllMasked,
    /// A configuration field is out of its range, or a configuration cannot be honoured.
    #[error("invalid configuration field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field, as spelled in the configuration (`top_p`, `num_beams`, ...).
        field: String,
        /// What is wrong with it, and what is expected.
        reason: String,
    },
    /// A configuration could not be parsed (malformed JSON, an unknown field, a wrong type).
    #[error("invalid configuration: {0}")]
    ConfigSyntax(String),
    /// A token id named by a configuration list is outside the vocabulary of the logits.
    #[error("token {token} in `{list}` is outside the vocabulary of {vocab} tokens")]
    TokenOutOfVocab {
        /// The configuration list that names the token (`logit_bias`, `eos_token_id`, ...).
        list: &'static str,
        /// The offending id.
        token: u32,
        /// The vocabulary size of the logits.
        vocab: usize,
    },
    /// One row of a batch failed; `source` is what its sampler reported.
    #[error("batch row {row}: {source}")]
    BatchRow {
        /// The row's index in the batch.
        row: usize,
        /// The row's own error.
        #[source]
        source: Box<SamplingError>,
    },
    /// The batch's row count, its samplers and its histories disagree.
    #[error("a batch of {rows} rows needs as many samplers and histories, got {samplers} samplers and {histories} histories")]
    BatchMismatch {
        /// Rows of the logits tensor.
        rows: usize,
        /// Samplers given.
        samplers: usize,
        /// Histories given.
        histories: usize,
    },
    /// A speculative draft's pieces disagree in size (`target_logits` rows, `draft_probs` rows
    /// or their width).
    #[error("draft verification: `{what}` has {got} entries, expected {expected}")]
    DraftMismatch {
        /// The offending argument.
        what: &'static str,
        /// The size it must have.
        expected: usize,
        /// The size it has.
        got: usize,
    },
    /// A draft token's probability under the draft distribution is not a positive finite number
    /// (the drafter could not have proposed it), or a draft probability is negative or NaN.
    #[error("draft verification: token {token} at draft position {position} has draft probability {probability}: it must be positive and finite")]
    DraftProbability {
        /// Draft position (0-based).
        position: usize,
        /// The token whose probability is invalid.
        token: u32,
        /// Its probability.
        probability: f32,
    },
    /// A constraint (grammar, schema) failed or was given a history it cannot follow.
    #[error("constraint: {0}")]
    Constraint(String),
    /// An error raised by candle (device transfer, dtype conversion, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl SamplingError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(name: &'static str, value: f64, expected: &'static str) -> Self {
        Self::InvalidParameter {
            name,
            value,
            expected,
        }
    }
}

impl From<SamplingError> for candle_core::Error {
    fn from(err: SamplingError) -> Self {
        match err {
            SamplingError::Candle(inner) => inner,
            other => candle_core::Error::wrap(other),
        }
    }
}
