//! The stages of a [`Chain`](crate::Chain), one file each, every file with the same layout:
//! definition, parameters and valid ranges, which library's rule it follows and where the
//! libraries differ, and cost.
//!
//! Three shapes:
//! * **edits** (penalties, biases, bans, n-gram and DRY) write a few logits into the chain's one
//!   sparse edit buffer, read by the engine through its view: no vocabulary copy, however many
//!   stack;
//! * **filters and temperatures** work on the candidate list once a truncation has made one
//!   (the first truncation is fused into the dense passes where its math allows: top-k, min-p,
//!   top-nσ);
//! * **selectors** (greedy, multinomial, mirostat) draw the token.

pub(crate) mod allowed;
pub(crate) mod bad_words;
pub(crate) mod dry;
pub(crate) mod dynatemp;
pub(crate) mod epsilon;
pub(crate) mod eta;
pub(crate) mod frequency_presence;
pub(crate) mod logit_bias;
pub(crate) mod min_length;
pub(crate) mod min_p;
pub(crate) mod mirostat;
pub(crate) mod no_repeat_ngram;
pub(crate) mod repetition;
pub(crate) mod select;
pub(crate) mod sequence_bias;
pub(crate) mod suppress;
pub(crate) mod temperature;
#[cfg(test)]
pub(crate) mod test_support;
pub(crate) mod top_k;
pub(crate) mod top_n_sigma;
pub(crate) mod top_p;
pub(crate) mod typical;
pub(crate) mod xtc;

use crate::chain::edits::EditCx;

/// A sparse edit stage, with its validated parameters.
#[derive(Clone, Debug)]
pub(crate) enum Edit {
    LogitBias(Vec<(u32, f32)>),
    Repetition {
        penalty: f32,
        last_n: Option<usize>,
    },
    FrequencyPresence {
        frequency: f32,
        presence: f32,
        last_n: Option<usize>,
    },
    Dry(dry::Dry),
    NoRepeatNGram(no_repeat_ngram::NoRepeatNGram),
    BadWords(bad_words::BadWords),
    SequenceBias(sequence_bias::SequenceBias),
    Suppress(Vec<u32>),
    MinLength {
        min_length: usize,
        eos: Vec<u32>,
    },
}

impl Edit {
    /// Writes this stage's edits for `history`.
    pub(crate) fn apply(&mut self, history: &[u32], cx: &mut EditCx<'_>) {
        match self {
            Self::LogitBias(bias) => logit_bias::apply(bias, cx),
            Self::Repetition { penalty, last_n } => {
                repetition::apply(history, *last_n, *penalty, cx)
            }
            Self::FrequencyPresence {
                frequency,
                presence,
                last_n,
            } => frequency_presence::apply(history, *last_n, *frequency, *presence, cx),
            Self::Dry(dry) => dry.apply(history, cx),
            Self::NoRepeatNGram(ngram) => ngram.apply(history, cx),
            Self::BadWords(words) => words.apply(history, cx),
            Self::SequenceBias(bias) => bias.apply(history, cx),
            Self::Suppress(tokens) => suppress::apply(tokens, cx),
            Self::MinLength { min_length, eos } => min_length::apply(history, *min_length, eos, cx),
        }
    }
}

/// A filter or temperature stage on the candidates, with its validated parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Step {
    Temperature(f32),
    DynamicTemperature {
        t: f32,
        delta: f32,
        exponent: f32,
    },
    TopK {
        k: usize,
        ties: bool,
    },
    /// candle's top-k then top-p, `p` measured against the whole vocabulary's mass.
    CandleTopKTopP {
        k: usize,
        p: f32,
    },
    TopP(f32),
    MinP(f32),
    Typical {
        p: f32,
        hf: bool,
    },
    Epsilon(f32),
    Eta(f32),
    TopNSigma(f32),
    Xtc {
        probability: f32,
        threshold: f32,
    },
}

/// The terminal selector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Select {
    Greedy,
    Multinomial,
    Mirostat { version: u8, tau: f32, eta: f32 },
}

/// DRY's edit stage, when enabled.
pub(crate) fn dry_edit(c: &crate::ChainConfig) -> Option<Edit> {
    (c.dry_multiplier > 0.0 && c.dry_penalty_last_n != Some(0)).then(|| {
        Edit::Dry(dry::Dry::new(
            c.dry_multiplier,
            c.dry_base,
            c.dry_allowed_length,
            c.dry_penalty_last_n,
            c.dry_sequence_breakers.clone(),
        ))
    })
}

/// Sequence bias's edit stage, when configured.
pub(crate) fn sequence_bias_edit(c: &crate::ChainConfig) -> Option<Edit> {
    (!c.sequence_bias.is_empty())
        .then(|| Edit::SequenceBias(sequence_bias::SequenceBias::new(c.sequence_bias.clone())))
}

/// No-repeat n-gram's edit stage, when enabled.
pub(crate) fn no_repeat_ngram_edit(c: &crate::ChainConfig) -> Option<Edit> {
    (c.no_repeat_ngram_size > 0)
        .then(|| Edit::NoRepeatNGram(no_repeat_ngram::NoRepeatNGram::new(c.no_repeat_ngram_size)))
}

/// Bad words' edit stage, when configured.
pub(crate) fn bad_words_edit(c: &crate::ChainConfig) -> Option<Edit> {
    (!c.bad_words_ids.is_empty()).then(|| {
        Edit::BadWords(bad_words::BadWords::new(
            c.bad_words_ids.clone(),
            &c.eos_token_id,
        ))
    })
}
