//! [`ChainConfig`]: every stage of a [`Chain`](crate::Chain) as plain, serialisable data.

use std::collections::BTreeMap;

use candle_transformers::generation::Sampling;
use serde::{Deserialize, Serialize};

use crate::{SamplingConfig, SamplingError};

/// Which library's order of stages and rules at the edges a [`Chain`](crate::Chain) follows.
///
/// The table of stage orders is in the crate's README; in short:
///
/// * [`HuggingFace`](Self::HuggingFace) (`"hf"`, the default): transformers' `generate`. Edits
///   (penalties, bans, biases) first, then temperature, then top-k (every token tied with the
///   k-th kept), top-p, min-p, typical, epsilon, eta; `do_sample: false` is greedy over the
///   edited logits.
/// * [`LlamaCpp`](Self::LlamaCpp) (`"llama.cpp"`): `common_params_sampling`'s chain: logit bias,
///   penalties, DRY, top-nσ, top-k (exactly k), typical, top-p, min-p, XTC, and temperature last
///   (`temperature <= 0` keeps only the most likely token).
/// * [`Candle`](Self::Candle) (`"candle"`): candle's `LogitsProcessor`: temperature, then top-k
///   and top-p, with top-p measured against the un-renormalised mass of the whole vocabulary
///   when both are set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Convention {
    /// HF transformers' order and rules.
    #[default]
    #[serde(rename = "hf")]
    HuggingFace,
    /// llama.cpp's order and rules.
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
    /// candle's `LogitsProcessor` rules.
    #[serde(rename = "candle")]
    Candle,
}

/// A sampling chain as data: which stages run, with which parameters, under which
/// [`Convention`]. [`build`](Self::build) validates it and compiles it into a [`Chain`](crate::Chain).
///
/// The default is neutral: every stage off, temperature 1, sampling on, so a JSON object only
/// names what it changes. Unknown fields are an error (a typo never becomes a silent default),
/// and so is a number that does not fit an `f32` (`1e50` would silently be infinite). A bias of
/// `-inf` (a ban) is written as the string `"-inf"`, which is also read, as is `"-Infinity"`.
///
/// ```
/// use kyutai_sampling::{ChainConfig, Convention};
///
/// let config: ChainConfig = serde_json::from_str(
///     r#"{ "convention": "llama.cpp", "temperature": 0.7, "top_k": 40, "min_p": 0.05,
///          "logit_bias": { "2": -1e30 } }"#,
/// )?;
/// assert_eq!(config.convention, Convention::LlamaCpp);
/// let chain = config.build()?;
/// # let _ = chain;
/// assert!(serde_json::from_str::<ChainConfig>(r#"{ "top_kk": 4 }"#).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// The library whose order and rules the chain follows.
    pub convention: Convention,
    /// Seed of the chain's random stream ([`rand_chacha::ChaCha8Rng`]).
    pub seed: u64,
    /// `false`: greedy over the edited logits (HF's `do_sample`); truncation and temperature are
    /// then skipped.
    pub do_sample: bool,
    /// Temperature, in `[1e-7, 1e6]` ([`limits`](crate::limits)), or 0 where the convention
    /// reads it as greedy; 1.0 leaves the distribution unchanged.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 is off.
    pub top_k: usize,
    /// Nucleus mass; 1.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub top_p: f32,
    /// Keep tokens at least `min_p` times as likely as the most likely one; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub min_p: f32,
    /// Locally typical sampling mass; 1.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub typical_p: f32,
    /// Drop tokens less likely than this; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub epsilon_cutoff: f32,
    /// Entropy-dependent cutoff; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub eta_cutoff: f32,
    /// Keep logits within `top_n_sigma` standard deviations of the maximum; `<= 0` is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub top_n_sigma: f32,
    /// Probability that XTC removes the most likely tokens at a step; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub xtc_probability: f32,
    /// XTC's probability threshold.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub xtc_threshold: f32,
    /// Dynamic temperature range (llama.cpp `temp_ext`'s δ), at most 1e6; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub dynatemp_range: f32,
    /// Dynamic temperature exponent (κ).
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub dynatemp_exponent: f32,
    /// Mirostat version: 0 (off), 1 or 2.
    pub mirostat: u8,
    /// Mirostat's target surprise τ.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub mirostat_tau: f32,
    /// Mirostat's learning rate η.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub mirostat_eta: f32,
    /// CTRL repetition penalty, in `[1e-6, 1e6]`; 1.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub repetition_penalty: f32,
    /// OpenAI frequency penalty, in `[-1e6, 1e6]`; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub frequency_penalty: f32,
    /// OpenAI presence penalty, in `[-1e6, 1e6]`; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub presence_penalty: f32,
    /// Window of the three penalties, in tokens of history; `None` is the whole history.
    pub repeat_last_n: Option<usize>,
    /// DRY multiplier; 0.0 is off.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub dry_multiplier: f32,
    /// DRY base.
    #[serde(deserialize_with = "super::serde_f32::number")]
    pub dry_base: f32,
    /// DRY: repeats up to this length are not penalised.
    pub dry_allowed_length: usize,
    /// DRY window; `None` is the whole history.
    pub dry_penalty_last_n: Option<usize>,
    /// DRY sequence breakers, as token-id sequences.
    pub dry_sequence_breakers: Vec<Vec<u32>>,
    /// Ban tokens that would repeat an n-gram of this size; 0 is off.
    pub no_repeat_ngram_size: usize,
    /// Banned token sequences (HF `bad_words_ids`).
    pub bad_words_ids: Vec<Vec<u32>>,
    /// Biases added to the last token of a sequence when the history ends with the rest of it.
    #[serde(with = "super::serde_f32::sequence_biases")]
    pub sequence_bias: Vec<(Vec<u32>, f32)>,
    /// Tokens never sampled.
    pub suppress_tokens: Vec<u32>,
    /// Values added to single tokens' logits; a value at or below `-1e30` bans the token.
    #[serde(with = "super::serde_f32::token_biases")]
    pub logit_bias: BTreeMap<u32, f32>,
    /// When set, only these tokens can be sampled.
    pub allowed_token_ids: Option<Vec<u32>>,
    /// The end-of-sequence tokens are masked while the history is shorter than this.
    pub min_length: usize,
    /// End-of-sequence tokens (JSON: an integer or a list).
    #[serde(deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    /// Truncation stages keep at least this many tokens (HF `min_tokens_to_keep`, llama.cpp
    /// `min_keep`); 0 means 1.
    pub min_keep: usize,
}

/// Accepts `7` as well as `[7, 8]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(de)? {
        None => Vec::new(),
        Some(OneOrMany::One(id)) => vec![id],
        Some(OneOrMany::Many(ids)) => ids,
    })
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            convention: Convention::HuggingFace,
            seed: 0,
            do_sample: true,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            epsilon_cutoff: 0.0,
            eta_cutoff: 0.0,
            top_n_sigma: -1.0,
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            dynatemp_range: 0.0,
            dynatemp_exponent: 1.0,
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repeat_last_n: None,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: None,
            dry_sequence_breakers: Vec::new(),
            no_repeat_ngram_size: 0,
            bad_words_ids: Vec::new(),
            sequence_bias: Vec::new(),
            suppress_tokens: Vec::new(),
            logit_bias: BTreeMap::new(),
            allowed_token_ids: None,
            min_length: 0,
            eos_token_id: Vec::new(),
            min_keep: 0,
        }
    }
}

impl ChainConfig {
    /// llama.cpp's default chain and parameters (`common_params_sampling`): temperature 0.8,
    /// top-k 40, top-p 0.95, min-p 0.05, the three penalties off over a window of 64 tokens,
    /// DRY off (base 1.75, allowed length 2), XTC off (threshold 0.1), top-nσ off.
    ///
    /// llama.cpp's DRY sequence breakers are strings (`"\n"`, `":"`, `"\""`, `"*"`); this crate
    /// has no tokenizer, so give their token ids in
    /// [`dry_sequence_breakers`](Self::dry_sequence_breakers) when enabling DRY.
    pub fn llama_cpp() -> Self {
        Self {
            convention: Convention::LlamaCpp,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_last_n: Some(64),
            dry_penalty_last_n: None,
            ..Self::default()
        }
    }

    /// A HF `generation_config.json` with transformers' semantics and defaults (`do_sample`
    /// false; with `do_sample` true and no `top_k`, top-k 50).
    ///
    /// Read: `do_sample`, `temperature`, `top_k`, `top_p`, `min_p`, `typical_p`,
    /// `epsilon_cutoff`, `eta_cutoff`, `repetition_penalty` (over the whole history),
    /// `no_repeat_ngram_size`, `bad_words_ids`, `sequence_bias` (`[[ids...], bias]` pairs),
    /// `suppress_tokens`, `min_length`, `eos_token_id`. Ignored, since they do not change the
    /// next-token distribution: lengths and stopping (`max_length`, `max_new_tokens`, ...), special
    /// ids (`bos_token_id`, `pad_token_id`, ...), output and cache switches, metadata
    /// (`transformers_version`). Rejected, naming the field: whatever would change the
    /// distribution in a way a chain cannot honour (beam search with `num_beams > 1`,
    /// `guidance_scale`, `penalty_alpha`, watermarking, forced tokens, `begin_suppress_tokens`,
    /// speculative-decoding fields, ...) and unknown fields with a value.
    ///
    /// # Errors
    ///
    /// [`SamplingError::ConfigSyntax`] for malformed JSON or a document that is not an object;
    /// [`SamplingError::InvalidConfig`] naming the field for a value of the wrong type or out of
    /// range, or a field that would change the next-token distribution in a way the chain cannot
    /// honour (`num_beams > 1`, `guidance_scale`, ...).
    pub fn from_generation_config(json: &str) -> Result<Self, SamplingError> {
        super::hf::parse(json)
    }

    /// Validates every field and compiles the chain.
    ///
    /// # Errors
    ///
    /// [`SamplingError::InvalidConfig`] naming the first field out of its range.
    pub fn build(&self) -> Result<super::Chain, SamplingError> {
        super::Chain::new(self)
    }
}

impl From<&SamplingConfig> for ChainConfig {
    /// The candle-convention chain drawing the same distributions as `config` (its sampling
    /// strategy and repetition penalty, over the same window). The conversion does not validate:
    /// out-of-range values carry over and fail [`build`](Self::build), except a `k` of 0, which
    /// becomes `top_k: 0` ("off"). [`SamplingConfig::build_chain`] validates first.
    fn from(config: &SamplingConfig) -> Self {
        let base = Self {
            convention: Convention::Candle,
            seed: config.seed,
            ..Self::default()
        };
        let mut out = match config.sampling {
            Sampling::ArgMax => Self {
                do_sample: false,
                ..base
            },
            Sampling::All { temperature } => Self {
                temperature: temperature as f32,
                ..base
            },
            Sampling::TopK { k, temperature } => Self {
                temperature: temperature as f32,
                top_k: k,
                ..base
            },
            Sampling::TopP { p, temperature } => Self {
                temperature: temperature as f32,
                top_p: p as f32,
                ..base
            },
            Sampling::TopKThenTopP { k, p, temperature } => Self {
                temperature: temperature as f32,
                top_k: k,
                top_p: p as f32,
                ..base
            },
            // Gumbel-max draws the softmax distribution: the same law as `All`.
            Sampling::GumbelSoftmax { temperature } => Self {
                temperature: temperature as f32,
                ..base
            },
        };
        if let Some(penalty) = config.repetition_penalty {
            out.repetition_penalty = penalty;
            out.repeat_last_n = Some(config.repetition_context_size);
        }
        out
    }
}
