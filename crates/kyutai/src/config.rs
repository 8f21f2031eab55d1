//! Model configuration, in the serde format of Kyutai's `moshi::lm::Config`.
//!
//! The field names and enum spellings are those of moshi 0.6.4 (and of the `[modules.*.model]`
//! tables of Kyutai's TOML server configs), so a configuration written for Kyutai's Rust code
//! deserializes here unchanged:
//!
//! ```
//! let json = r#"{
//!   "transformer": {
//!     "d_model": 64, "num_heads": 4, "num_layers": 2, "dim_feedforward": 256,
//!     "causal": true, "norm_first": true, "bias_ff": false, "bias_attn": false,
//!     "layer_scale": null, "positional_embedding": "Rope", "use_conv_block": false,
//!     "cross_attention": null, "conv_kernel_size": 3, "use_conv_bias": true,
//!     "gating": "silu", "norm": "RmsNorm", "context": 8, "max_period": 10000,
//!     "max_seq_len": 4096, "kv_repeat": 1, "conv_layout": false
//!   },
//!   "depformer": null,
//!   "text_in_vocab_size": 33, "text_out_vocab_size": 32,
//!   "audio_vocab_size": 17, "audio_codebooks": 4,
//!   "conditioners": null, "extra_heads": null
//! }"#;
//! let config = kyutai::LmConfig::from_json_str(json)?;
//! assert_eq!(config.transformer.head_dim(), 16);
//! assert_eq!(config.transformer.gating_hidden_dim(), 176); // 11 * d_model / 4
//! # Ok::<(), kyutai::Error>(())
//! ```
//!
//! One optional field is added: [`LmConfig::audio_delays`], the per-codebook delays that Kyutai
//! keeps in the Python `config.json` (`delays[1..]`) rather than in `lm::Config`. It is omitted
//! when serializing a configuration that has none, so the output stays readable by moshi.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::limits::{self, check_max, ModelSizes};
use crate::limits::{MAX_AUDIO_CODEBOOKS, MAX_DELAY, MAX_D_MODEL, MAX_EXTRA_HEADS, MAX_VOCAB_SIZE};
use crate::{Error, Result};

/// Which normalisation the transformer layers (and the LM's `out_norm`) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormType {
    /// RMS normalisation with a learnt scale `alpha` of shape `[1, 1, d]`, epsilon `1e-8`.
    RmsNorm,
    /// Layer normalisation (`alpha` `[1, 1, d]` or `weight` `[d]`, and `bias` `[d]`), epsilon
    /// `1e-5`.
    LayerNorm,
}

/// Which positional information the transformer adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionalEmbedding {
    /// Interleaved rotary embeddings on queries and keys (`candle_nn::rotary_emb::rope_i`).
    Rope,
    /// Sinusoidal embeddings added to the input.
    Sin,
    /// None (the depformers of Kyutai's models).
    None,
}

/// Gating at the output of a cross-attention layer (parsed for format compatibility; this crate
/// implements no cross-attention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrossAttentionGating {
    /// No gate.
    Normal,
    /// A learnt constant through tanh.
    ConstantGatedTanh,
    /// A learnt constant through a sigmoid.
    ConstantGatedSigmoid,
    /// An input-dependent gate through tanh.
    ConditionalGatedTanh,
    /// An input-dependent gate through a sigmoid.
    ConditionalGatedSigmoid,
    /// An input-dependent gate through a sigmoid, with a learnt bias.
    ConditionalGatedSigmoidLearnableBias,
    /// An input-dependent gate through tanh, with a learnt bias.
    ConditionalGatedTanhLearnableBias,
}

/// One streaming transformer (the temporal transformer or one depformer slice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// Model width.
    pub d_model: usize,
    /// Attention heads (`d_model` must be a multiple).
    pub num_heads: usize,
    /// Layers.
    pub num_layers: usize,
    /// Causal attention (must be `true`).
    pub causal: bool,
    /// Pre-norm layers (must be `true`).
    pub norm_first: bool,
    /// Biases in the feed-forward block.
    pub bias_ff: bool,
    /// Biases in the attention projections.
    pub bias_attn: bool,
    /// Layer scale: when set, each residual branch is multiplied by a learnt `scale` of shape
    /// `[d_model]` (the value itself is only the training-time initialisation).
    pub layer_scale: Option<f64>,
    /// Positional embedding.
    pub positional_embedding: PositionalEmbedding,
    /// Convolution blocks (must be `false`).
    pub use_conv_block: bool,
    /// Cross-attention (must be `None`).
    pub cross_attention: Option<(CrossAttentionGating, NormType, Option<usize>)>,
    /// Convolution kernel size (unused without convolution blocks).
    pub conv_kernel_size: usize,
    /// Convolution bias (unused without convolution blocks).
    pub use_conv_bias: bool,
    /// Gated feed-forward activation (`"silu"` for Kyutai's models); `None` for a plain
    /// `linear1` → GELU → `linear2` block.
    pub gating: Option<candle_nn::Activation>,
    /// Normalisation.
    pub norm: NormType,
    /// Attention window in steps: the KV cache keeps this many steps.
    pub context: usize,
    /// RoPE / sinusoidal base period.
    pub max_period: usize,
    /// Unused by the language model (positions are not capped); kept for format compatibility.
    pub max_seq_len: usize,
    /// Query heads per key/value head (must be 1).
    pub kv_repeat: usize,
    /// Feed-forward width; see [`gating_hidden_dim`](Self::gating_hidden_dim) for the gated case.
    pub dim_feedforward: usize,
    /// Unused by the language model; kept for format compatibility.
    pub conv_layout: bool,
    /// Whether cross-attention weights are shared between layers (unused here).
    #[serde(default)]
    pub shared_cross_attn: bool,
}

/// The depformer: one small transformer per generated audio codebook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepFormerConfig {
    /// The configuration of each slice's transformer.
    pub transformer: TransformerConfig,
    /// Slices, i.e. generated audio codebooks.
    pub num_slices: usize,
    /// Rank of the factorised input embeddings (`emb.weight` `[vocab, r]` and
    /// `emb.low_rank.weight` `[d, r]`), or `None` for plain embeddings.
    pub low_rank_embeddings: Option<usize>,
}

/// Extra linear heads on the temporal transformer's output (the voice-activity heads of the STT
/// models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHeadsConfig {
    /// Number of heads.
    pub num_heads: usize,
    /// Output width of each head.
    pub dim: usize,
}

/// A lookup-table conditioner (parsed for format compatibility; not implemented).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LutConditionerConfig {
    /// Number of bins.
    pub n_bins: usize,
    /// Embedding width.
    pub dim: usize,
    /// The accepted values.
    pub possible_values: Vec<String>,
}

/// A continuous-attribute conditioner (parsed for format compatibility; not implemented).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuousAttributeConditionerConfig {
    /// Embedding width.
    pub dim: usize,
    /// Scale applied to the value.
    pub scale_factor: f32,
    /// Sinusoidal base period.
    pub max_period: f32,
}

/// A conditioner, tagged by `"type"` as in moshi.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ConditionerConfig {
    /// See [`LutConditionerConfig`].
    Lut(LutConditionerConfig),
    /// See [`ContinuousAttributeConditionerConfig`].
    ContinuousAttribute(ContinuousAttributeConditionerConfig),
}

/// A Moshi-family language model: Kyutai's `lm::Config`, plus optional per-codebook delays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmConfig {
    /// The temporal transformer.
    pub transformer: TransformerConfig,
    /// The depformer, `None` for models that generate no audio (STT).
    pub depformer: Option<DepFormerConfig>,
    /// Rows of the text embedding: the text vocabulary plus the start token (the last id).
    pub text_in_vocab_size: usize,
    /// Text logits per step.
    pub text_out_vocab_size: usize,
    /// Rows of each audio embedding: the codebook size plus the pad token (the last id).
    pub audio_vocab_size: usize,
    /// Input audio codebooks (generated and, for Moshi, the user's stream).
    pub audio_codebooks: usize,
    /// Conditioners (must be `None` or empty: not implemented).
    pub conditioners: Option<HashMap<String, ConditionerConfig>>,
    /// Extra heads on the temporal transformer's output.
    pub extra_heads: Option<ExtraHeadsConfig>,
    /// Delay in steps of each input audio codebook relative to the text stream (Kyutai's
    /// `delays[1..]`), when known. Not part of moshi's format; the generation code reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_delays: Option<Vec<usize>>,
}

impl TransformerConfig {
    /// Width of one attention head (0 when `num_heads` is 0).
    pub fn head_dim(&self) -> usize {
        self.d_model.checked_div(self.num_heads).unwrap_or(0)
    }

    /// Hidden width of the gated feed-forward block, by moshi's rule: `11 * d_model / 4` when
    /// `dim_feedforward == 4 * d_model`, `2 * dim_feedforward / 3` otherwise. (Both equal
    /// Kyutai's Python `hidden_scale = 4.125` for the published models.)
    ///
    /// Total and exact for every value of the fields: computed in 128-bit arithmetic, so that
    /// debug and release builds agree (`4 * d_model` and `2 * dim_feedforward` no longer
    /// overflow). [`LmConfig::validate`] bounds the result by
    /// [`MAX_HIDDEN_DIM`](crate::MAX_HIDDEN_DIM).
    pub fn gating_hidden_dim(&self) -> usize {
        let (d, ff) = (self.d_model as u128, self.dim_feedforward as u128);
        let hidden = if 4 * d == ff { 11 * d / 4 } else { 2 * ff / 3 };
        // Fits: 4 * d == ff <= usize::MAX gives 11 * d / 4 < usize::MAX, and 2 * ff / 3 < ff.
        usize::try_from(hidden).unwrap_or(usize::MAX)
    }

    /// Checks the values this crate relies on; `prefix` names the transformer in errors.
    pub(crate) fn validate(&self, prefix: &str) -> Result<()> {
        let field = |name: &str| format!("{prefix}.{name}");
        limits::check_transformer(self, prefix)?;
        if self.d_model == 0 {
            return Err(Error::config(field("d_model"), "must be at least 1"));
        }
        if self.num_heads == 0 {
            return Err(Error::config(field("num_heads"), "must be at least 1"));
        }
        if !self.d_model.is_multiple_of(self.num_heads) {
            return Err(Error::config(
                field("num_heads"),
                format!(
                    "must divide d_model = {} (got {})",
                    self.d_model, self.num_heads
                ),
            ));
        }
        if self.num_layers == 0 {
            return Err(Error::config(field("num_layers"), "must be at least 1"));
        }
        if self.context == 0 {
            return Err(Error::config(field("context"), "must be at least 1"));
        }
        match self.positional_embedding {
            PositionalEmbedding::Rope => {
                if !self.head_dim().is_multiple_of(2) {
                    return Err(Error::config(
                        field("num_heads"),
                        format!(
                            "rotary embeddings need an even head width, got {}",
                            self.head_dim()
                        ),
                    ));
                }
                if self.max_period == 0 {
                    return Err(Error::config(field("max_period"), "must be at least 1"));
                }
            }
            PositionalEmbedding::Sin => {
                if !self.d_model.is_multiple_of(2) || self.d_model < 4 {
                    return Err(Error::config(
                        field("d_model"),
                        "sinusoidal embeddings need an even d_model of at least 4",
                    ));
                }
                if self.max_period == 0 {
                    return Err(Error::config(field("max_period"), "must be at least 1"));
                }
            }
            PositionalEmbedding::None => {}
        }
        if self.kv_repeat == 0 {
            return Err(Error::config(field("kv_repeat"), "must be at least 1"));
        }
        if self.kv_repeat != 1 {
            return Err(Error::unsupported(format!(
                "grouped-query attention (`{}` = {})",
                field("kv_repeat"),
                self.kv_repeat
            )));
        }
        if !self.causal {
            return Err(Error::unsupported(format!(
                "non-causal attention (`{}` = false)",
                field("causal")
            )));
        }
        if !self.norm_first {
            return Err(Error::unsupported(format!(
                "post-norm layers (`{}` = false)",
                field("norm_first")
            )));
        }
        if self.use_conv_block {
            return Err(Error::unsupported(format!(
                "convolution blocks (`{}` = true)",
                field("use_conv_block")
            )));
        }
        if self.cross_attention.is_some() {
            return Err(Error::unsupported(format!(
                "cross-attention (`{}` is set)",
                field("cross_attention")
            )));
        }
        match self.gating {
            Some(activation) => {
                if matches!(activation, candle_nn::Activation::Swiglu) {
                    return Err(Error::config(
                        field("gating"),
                        "must be an element-wise activation (swiglu changes the width)",
                    ));
                }
                if limits::hidden_dim(self, prefix)? == 0 {
                    return Err(Error::config(
                        field("dim_feedforward"),
                        format!(
                            "gives a gated hidden width of 0 (got {})",
                            self.dim_feedforward
                        ),
                    ));
                }
            }
            None => {
                if self.dim_feedforward == 0 {
                    return Err(Error::config(
                        field("dim_feedforward"),
                        "must be at least 1",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl LmConfig {
    /// Parses a configuration from JSON (moshi's serde format) and validates it.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigParse`] for malformed JSON or missing fields, and the errors of
    /// [`validate`](Self::validate).
    pub fn from_json_str(json: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(json)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a JSON configuration file of at most 16 MiB (Kyutai's are a few
    /// kilobytes); see [`from_json_str`](Self::from_json_str).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read, is larger than 16 MiB (or endless, like
    /// `/dev/zero`) or is not UTF-8, then as `from_json_str`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read;
        const MAX_BYTES: u64 = 1 << 24;
        let path = path.as_ref();
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut json = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_BYTES + 1).read_to_string(&mut json))
            .map_err(io_error)?;
        if json.len() as u64 > MAX_BYTES {
            let too_big = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a model config is at most {MAX_BYTES} bytes"),
            );
            return Err(io_error(too_big));
        }
        Self::from_json_str(&json)
    }

    /// The configuration as pretty-printed JSON, in moshi's format.
    ///
    /// # Errors
    ///
    /// [`Error::ConfigParse`] if serialization fails (it does not for valid configurations).
    pub fn to_json_string(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The text start token: `text_in_vocab_size - 1`.
    pub fn text_start_token(&self) -> u32 {
        token_id(self.text_in_vocab_size.saturating_sub(1))
    }

    /// The audio pad (and initial) token: `audio_vocab_size - 1`.
    pub fn audio_pad_token(&self) -> u32 {
        audio_pad_token(self.audio_vocab_size)
    }

    /// The temporal transformer's head width ([`TransformerConfig::head_dim`]).
    pub fn head_dim(&self) -> usize {
        self.transformer.head_dim()
    }

    /// The temporal transformer's gated hidden width
    /// ([`TransformerConfig::gating_hidden_dim`]); total.
    pub fn gating_hidden_dim(&self) -> usize {
        self.transformer.gating_hidden_dim()
    }

    /// Audio codebooks the depformer generates (0 without a depformer).
    pub fn generated_audio_codebooks(&self) -> usize {
        self.depformer.as_ref().map_or(0, |d| d.num_slices)
    }

    /// Checks that the configuration describes a model this crate can build, within the
    /// crate's documented size bounds (the table of [`limits`](crate::limits)): the same as
    /// [`sizes`](Self::sizes), without the result.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the field for out-of-range values (zero sizes, sizes
    /// above their bound, widths that do not divide, more depformer slices than audio
    /// codebooks, a text output vocabulary larger than the input one, delays of the wrong
    /// length or above [`MAX_DELAY`], more parameters than
    /// [`MAX_PARAMETERS`](crate::MAX_PARAMETERS), ...), and [`Error::Unsupported`] for features
    /// this crate does not implement (cross-attention, conditioners, convolution blocks,
    /// grouped-query attention, post-norm or non-causal layers).
    pub fn validate(&self) -> Result<()> {
        self.sizes().map(|_| ())
    }

    /// Validates the configuration and computes, without allocating, the sizes it implies:
    /// head and hidden widths, parameter count, largest tensor and KV cache elements per batch
    /// row. Total: any value of every field gives either sizes or an error, never a panic or an
    /// overflow.
    ///
    /// ```
    /// let sizes = kyutai::LmConfig::moshi_7b_v0_1().sizes()?;
    /// assert_eq!(sizes.head_dim, 128);
    /// assert!(sizes.parameters > 7_000_000_000 && sizes.parameters < 8_000_000_000);
    /// # Ok::<(), kyutai::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn sizes(&self) -> Result<ModelSizes> {
        self.check_fields()?;
        limits::model_sizes(self)
    }

    fn check_fields(&self) -> Result<()> {
        self.transformer.validate("transformer")?;
        for (name, value, min) in [
            ("text_in_vocab_size", self.text_in_vocab_size, 1),
            ("text_out_vocab_size", self.text_out_vocab_size, 1),
            ("audio_vocab_size", self.audio_vocab_size, 2),
        ] {
            if value < min {
                return Err(Error::config(
                    name,
                    format!("must be at least {min} (got {value})"),
                ));
            }
            check_max(name, value, MAX_VOCAB_SIZE, "MAX_VOCAB_SIZE")?;
        }
        if self.text_out_vocab_size > self.text_in_vocab_size {
            return Err(Error::config(
                "text_out_vocab_size",
                format!(
                    "must not exceed text_in_vocab_size = {} (got {}): every sampled text token \
                     is read back as an input",
                    self.text_in_vocab_size, self.text_out_vocab_size
                ),
            ));
        }
        check_max(
            "audio_codebooks",
            self.audio_codebooks,
            MAX_AUDIO_CODEBOOKS,
            "MAX_AUDIO_CODEBOOKS",
        )?;
        if let Some(depformer) = &self.depformer {
            depformer.transformer.validate("depformer.transformer")?;
            if depformer.num_slices == 0 {
                return Err(Error::config("depformer.num_slices", "must be at least 1"));
            }
            if depformer.num_slices > self.audio_codebooks {
                return Err(Error::config(
                    "depformer.num_slices",
                    format!(
                        "must not exceed audio_codebooks = {} (got {}): each generated codebook \
                         is also an input codebook",
                        self.audio_codebooks, depformer.num_slices
                    ),
                ));
            }
            if let Some(rank) = depformer.low_rank_embeddings {
                if rank == 0 {
                    return Err(Error::config(
                        "depformer.low_rank_embeddings",
                        "must be at least 1 when set",
                    ));
                }
                check_max(
                    "depformer.low_rank_embeddings",
                    rank,
                    MAX_D_MODEL,
                    "MAX_D_MODEL",
                )?;
            }
        }
        if let Some(heads) = &self.extra_heads {
            if heads.num_heads > 0 && heads.dim == 0 {
                return Err(Error::config("extra_heads.dim", "must be at least 1"));
            }
            check_max(
                "extra_heads.num_heads",
                heads.num_heads,
                MAX_EXTRA_HEADS,
                "MAX_EXTRA_HEADS",
            )?;
            check_max(
                "extra_heads.dim",
                heads.dim,
                MAX_VOCAB_SIZE,
                "MAX_VOCAB_SIZE",
            )?;
        }
        if self.conditioners.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(Error::unsupported("conditioners (`conditioners` is set)"));
        }
        if let Some(delays) = &self.audio_delays {
            if delays.len() != self.audio_codebooks {
                return Err(Error::config(
                    "audio_delays",
                    format!(
                        "must hold one delay per audio codebook ({}), got {}",
                        self.audio_codebooks,
                        delays.len()
                    ),
                ));
            }
            for (k, &delay) in delays.iter().enumerate() {
                check_max(&format!("audio_delays[{k}]"), delay, MAX_DELAY, "MAX_DELAY")?;
            }
        }
        Ok(())
    }
}

/// The text pad token of Kyutai's text tokenizers: "no new text at this step" (moshi's
/// `existing_text_padding_id`). The one definition behind every pad-token default and
/// re-export of the crate.
pub const TEXT_PAD_TOKEN: u32 = 3;

/// The text end-of-padding token of Kyutai's text tokenizers: "a word starts here".
pub const TEXT_EOP_TOKEN: u32 = 0;

/// The audio pad token of an audio vocabulary of `audio_vocab_size` ids: the last id (`u32::MAX`
/// for a vocabulary too large for a token id). The one definition behind every
/// `audio_pad_token` method of the crate.
pub(crate) fn audio_pad_token(audio_vocab_size: usize) -> u32 {
    token_id(audio_vocab_size.saturating_sub(1))
}

/// `value` as a token id; only called on sizes that [`LmConfig::validate`] bounds by
/// [`MAX_VOCAB_SIZE`](crate::MAX_VOCAB_SIZE) (`u32::MAX` for larger values).
fn token_id(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
