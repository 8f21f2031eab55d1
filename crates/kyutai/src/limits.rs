//! The documented size bounds of the crate, and [`ModelSizes`], the sizes a configuration
//! implies, computed without allocating.
//!
//! Every configuration, tensor shape and step count that reaches an allocation is checked
//! against one of these bounds first, with checked arithmetic, so that no input can make the
//! crate overflow an integer (a panic in debug builds, a silent wrap in release builds) or ask
//! the allocator for more than it can give (an abort). A value out of bounds is an
//! [`Error::InvalidConfig`] (configurations) or an [`Error::InvalidInput`] (arguments and
//! tensors) naming it.
//!
//! The bounds are far above Kyutai's published models (Moshi 7B: width 4096, 32 layers,
//! context 3000, 7.7 G parameters, a text vocabulary of 32 001; the STT and TTS models are
//! smaller), and low enough that every size computed from them fits a `usize` many times over.
//!
//! | bound | value | bounds |
//! | --- | --- | --- |
//! | [`MAX_D_MODEL`] | 65 536 | `d_model` of every transformer, `low_rank_embeddings` |
//! | [`MAX_NUM_LAYERS`] | 1024 | `num_layers` of every transformer |
//! | [`MAX_HIDDEN_DIM`] | 1 048 576 | `dim_feedforward`, and the gated feed-forward width |
//! | [`MAX_CONTEXT`] | 65 536 | `context` of every transformer (KV cache slots) |
//! | [`MAX_VOCAB_SIZE`] | 16 777 216 | text and audio vocabularies, extra-head widths |
//! | [`MAX_AUDIO_CODEBOOKS`] | 1024 | `audio_codebooks`, hence depformer slices |
//! | [`MAX_EXTRA_HEADS`] | 1024 | `extra_heads.num_heads` |
//! | [`MAX_DELAY`] | 65 536 | every delay in steps (`audio_delays`, acoustic and text-audio delays) |
//! | [`MAX_PARAMETERS`] | 2^35 (34.4 G) | the parameters of a model (all its weight tensors) |
//! | [`MAX_KV_CACHE_ELEMENTS`] | 2^34 | keys and values of one batch row of a model, and of all rows of one transformer |
//! | [`MAX_FORWARD_STEPS`] | 65 536 | steps of one forward call |
//! | [`MAX_ATTENTION_SCORES`] | 2^32 | `batch * heads * steps * keys` of one attention call |

use crate::config::{LmConfig, NormType, TransformerConfig};
use crate::{Error, Result};

/// The largest `d_model` (and low-rank embedding rank) of a transformer.
pub const MAX_D_MODEL: usize = 1 << 16;
/// The largest number of layers of a transformer.
pub const MAX_NUM_LAYERS: usize = 1 << 10;
/// The largest feed-forward width: `dim_feedforward`, and the gated hidden width derived from
/// it ([`TransformerConfig::gating_hidden_dim`]).
pub const MAX_HIDDEN_DIM: usize = 1 << 20;
/// The largest attention context, in steps: the KV cache of every layer holds this many slots
/// at most.
pub const MAX_CONTEXT: usize = 1 << 16;
/// The largest vocabulary (text in and out, audio) and extra-head width.
pub const MAX_VOCAB_SIZE: usize = 1 << 24;
/// The largest number of input audio codebooks (and so of depformer slices).
pub const MAX_AUDIO_CODEBOOKS: usize = 1 << 10;
/// The largest number of extra heads.
pub const MAX_EXTRA_HEADS: usize = 1 << 10;
/// The largest delay, in steps, of any stream: a configuration's `audio_delays`, a
/// multistream's acoustic delay, a TTS configuration's delays.
pub const MAX_DELAY: usize = 1 << 16;
/// The largest number of parameters (elements of all weight tensors together) of a model.
pub const MAX_PARAMETERS: u64 = 1 << 35;
/// The largest number of key and value elements the KV caches of one batch row of a model
/// hold (all layers of the temporal transformer and the depformer), and of all batch rows of
/// one transformer: the batch size of a forward call is bounded by it.
pub const MAX_KV_CACHE_ELEMENTS: u64 = 1 << 34;
/// The largest number of steps of one forward call (a prefill).
pub const MAX_FORWARD_STEPS: usize = 1 << 16;
/// The largest `batch * heads * steps * keys` of one attention call: the size of its score
/// matrix.
pub const MAX_ATTENTION_SCORES: u64 = 1 << 32;

/// The sizes a valid [`LmConfig`] implies, computed without allocating
/// ([`LmConfig::sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSizes {
    /// The temporal transformer's head width (`d_model / num_heads`).
    pub head_dim: usize,
    /// The temporal transformer's feed-forward hidden width: the gated width
    /// ([`TransformerConfig::gating_hidden_dim`]) or `dim_feedforward`.
    pub hidden_dim: usize,
    /// The depformer's head width (0 without a depformer).
    pub depformer_head_dim: usize,
    /// The depformer's feed-forward hidden width (0 without a depformer).
    pub depformer_hidden_dim: usize,
    /// Elements of all weight tensors (an upper bound: every optional bias counted), at most
    /// [`MAX_PARAMETERS`].
    pub parameters: u64,
    /// Elements of the largest weight tensor.
    pub largest_tensor: u64,
    /// Key and value elements of one batch row's KV caches (all layers, temporal transformer
    /// and depformer), at most [`MAX_KV_CACHE_ELEMENTS`].
    pub kv_cache_elements_per_row: u64,
}

/// `value <= max`, or an [`Error::InvalidConfig`] naming `field` and the bound.
pub(crate) fn check_max(field: &str, value: usize, max: usize, bound: &str) -> Result<()> {
    if value > max {
        return Err(Error::config(
            field,
            format!("must be at most {bound} = {max} (got {value})"),
        ));
    }
    Ok(())
}

/// Sums and products of sizes, in u64 with overflow reported as an error naming `what`.
struct Counter<'a> {
    what: &'a str,
    total: u64,
    largest: u64,
}

impl Counter<'_> {
    fn product(&self, dims: &[usize]) -> Result<u64> {
        dims.iter().try_fold(1u64, |acc, &d| {
            acc.checked_mul(d as u64).ok_or_else(|| self.overflow())
        })
    }

    fn add(&mut self, dims: &[usize]) -> Result<()> {
        let n = self.product(dims)?;
        self.largest = self.largest.max(n);
        self.total = self.total.checked_add(n).ok_or_else(|| self.overflow())?;
        Ok(())
    }

    /// Adds `count` copies of the tensors of `dims_list`.
    fn add_times(&mut self, count: usize, dims_list: &[&[usize]]) -> Result<()> {
        let mut one = Counter {
            what: self.what,
            total: 0,
            largest: 0,
        };
        for dims in dims_list {
            one.add(dims)?;
        }
        self.largest = self.largest.max(one.largest);
        let all = one
            .total
            .checked_mul(count as u64)
            .ok_or_else(|| self.overflow())?;
        self.total = self.total.checked_add(all).ok_or_else(|| self.overflow())?;
        Ok(())
    }

    fn overflow(&self) -> Error {
        Error::config(self.what, "implies sizes that overflow a 64-bit count")
    }
}

/// The feed-forward hidden width of `t`, checked against [`MAX_HIDDEN_DIM`].
pub(crate) fn hidden_dim(t: &TransformerConfig, prefix: &str) -> Result<usize> {
    let hidden = match t.gating {
        Some(_) => t.gating_hidden_dim(),
        None => t.dim_feedforward,
    };
    check_max(
        &format!("{prefix}.dim_feedforward"),
        hidden,
        MAX_HIDDEN_DIM,
        "MAX_HIDDEN_DIM (as the feed-forward hidden width)",
    )?;
    Ok(hidden)
}

/// Checks the size fields of `t` against their bounds (before any arithmetic on them).
pub(crate) fn check_transformer(t: &TransformerConfig, prefix: &str) -> Result<()> {
    let field = |name: &str| format!("{prefix}.{name}");
    check_max(&field("d_model"), t.d_model, MAX_D_MODEL, "MAX_D_MODEL")?;
    check_max(
        &field("num_layers"),
        t.num_layers,
        MAX_NUM_LAYERS,
        "MAX_NUM_LAYERS",
    )?;
    check_max(&field("context"), t.context, MAX_CONTEXT, "MAX_CONTEXT")?;
    check_max(
        &field("dim_feedforward"),
        t.dim_feedforward,
        MAX_HIDDEN_DIM,
        "MAX_HIDDEN_DIM",
    )?;
    Ok(())
}

/// Adds the weights of one transformer of configuration `t` (hidden width `hidden`).
fn count_transformer(c: &mut Counter, t: &TransformerConfig, hidden: usize) -> Result<()> {
    let d = t.d_model;
    let norm_width = match t.norm {
        NormType::RmsNorm => d,
        NormType::LayerNorm => 2 * d,
    };
    let (ff_in, ff_out) = match t.gating {
        Some(_) => (2 * hidden, hidden),
        None => (hidden, hidden),
    };
    c.add_times(
        t.num_layers,
        &[
            &[3 * d, d],
            &[3 * d],
            &[d, d],
            &[d],
            &[norm_width],
            &[norm_width],
            &[ff_in, d],
            &[ff_in],
            &[d, ff_out],
            &[d],
            &[d],
            &[d],
        ],
    )
}

/// The sizes of `config`, whose fields [`check_transformer`] and the field checks of
/// [`LmConfig::validate`] have bounded.
pub(crate) fn model_sizes(config: &LmConfig) -> Result<ModelSizes> {
    let t = &config.transformer;
    let d = t.d_model;
    let hidden = hidden_dim(t, "transformer")?;
    let mut c = Counter {
        what: "config",
        total: 0,
        largest: 0,
    };
    c.add(&[config.text_in_vocab_size, d])?;
    c.add_times(config.audio_codebooks, &[&[config.audio_vocab_size, d]])?;
    c.add(&[2 * d])?;
    c.add(&[config.text_out_vocab_size, d])?;
    count_transformer(&mut c, t, hidden)?;
    if let Some(heads) = &config.extra_heads {
        c.add_times(heads.num_heads, &[&[heads.dim, d]])?;
    }
    let kv =
        |c: &Counter, t: &TransformerConfig| c.product(&[2, t.num_layers, t.context, t.d_model]);
    let mut kv_per_row = kv(&c, t)?;
    let (mut dep_head_dim, mut dep_hidden) = (0, 0);
    if let Some(dep) = &config.depformer {
        let dt = &dep.transformer;
        let dd = dt.d_model;
        dep_hidden = hidden_dim(dt, "depformer.transformer")?;
        dep_head_dim = dt.head_dim();
        let vocab = config.text_in_vocab_size.max(config.audio_vocab_size);
        let mut slice = Counter {
            what: "config",
            total: 0,
            largest: 0,
        };
        count_transformer(&mut slice, dt, dep_hidden)?;
        match dep.low_rank_embeddings {
            Some(r) => {
                slice.add(&[vocab, r])?;
                slice.add(&[dd, r])?;
            }
            None => slice.add(&[vocab, dd])?,
        }
        slice.add(&[dd, d])?;
        slice.add(&[config.audio_vocab_size, dd])?;
        c.largest = c.largest.max(slice.largest);
        let all = slice
            .total
            .checked_mul(dep.num_slices as u64)
            .ok_or_else(|| c.overflow())?;
        c.total = c.total.checked_add(all).ok_or_else(|| c.overflow())?;
        kv_per_row = kv_per_row
            .checked_add(kv(&c, dt)?)
            .ok_or_else(|| c.overflow())?;
    }
    if c.total > MAX_PARAMETERS {
        return Err(Error::config(
            "config",
            format!(
                "describes a model of about {} parameters, more than MAX_PARAMETERS = {MAX_PARAMETERS}",
                c.total
            ),
        ));
    }
    if kv_per_row > MAX_KV_CACHE_ELEMENTS {
        return Err(Error::config(
            "transformer.context",
            format!(
                "gives KV caches of {kv_per_row} elements per batch row, more than \
                 MAX_KV_CACHE_ELEMENTS = {MAX_KV_CACHE_ELEMENTS}"
            ),
        ));
    }
    Ok(ModelSizes {
        head_dim: t.head_dim(),
        hidden_dim: hidden,
        depformer_head_dim: dep_head_dim,
        depformer_hidden_dim: dep_hidden,
        parameters: c.total,
        largest_tensor: c.largest,
        kv_cache_elements_per_row: kv_per_row,
    })
}

/// Checks that a forward call of `batch` rows and `steps` steps over `keys` keys fits
/// [`MAX_FORWARD_STEPS`], [`MAX_ATTENTION_SCORES`] and, with `kv_per_row` cache elements per
/// row, [`MAX_KV_CACHE_ELEMENTS`]; `input` names the argument in errors.
pub(crate) fn check_forward(
    input: &str,
    batch: usize,
    steps: usize,
    heads: usize,
    keys: usize,
    kv_per_row: u64,
) -> Result<()> {
    if steps > MAX_FORWARD_STEPS {
        return Err(Error::input(
            input,
            format!(
                "holds {steps} steps, more than MAX_FORWARD_STEPS = {MAX_FORWARD_STEPS} per call"
            ),
        ));
    }
    let scores = [batch, heads, steps, keys]
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64));
    if scores.is_none_or(|s| s > MAX_ATTENTION_SCORES) {
        return Err(Error::input(
            input,
            format!(
                "{batch} rows of {steps} steps over {keys} keys and {heads} heads exceed \
                 MAX_ATTENTION_SCORES = {MAX_ATTENTION_SCORES}"
            ),
        ));
    }
    let kv = kv_per_row.checked_mul(batch as u64);
    if kv.is_none_or(|kv| kv > MAX_KV_CACHE_ELEMENTS) {
        return Err(Error::input(
            input,
            format!(
                "{batch} rows need KV caches of more than MAX_KV_CACHE_ELEMENTS = \
                 {MAX_KV_CACHE_ELEMENTS} elements"
            ),
        ));
    }
    Ok(())
}
