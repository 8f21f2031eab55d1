//! The checks a [`MimiConfig`] passes before candle's Mimi is built: what candle assumes
//! without checking (it would panic, divide by zero or overflow), and the documented size
//! bounds, with checked arithmetic so that debug and release builds agree.
//!
//! | bound | value | bounds |
//! | --- | --- | --- |
//! | codebooks | 1..=[`MAX_AUDIO_CODEBOOKS`] (1024) | `quantizer_n_q` |
//! | codes per codebook | 1..=[`MAX_VOCAB_SIZE`] (2^24) | `quantizer_bins` |
//! | widths | 1..=4096 | `quantizer_dim`, `seanet.dimension`, `transformer.d_model`, the widest SEANet layer (`n_filters * 2^ratios`) |
//! | codebook elements | 2^28 | `quantizer_n_q * quantizer_bins * quantizer_dim` |
//! | channels | 1..=16 | `channels` (`seanet.channels` is candle's and unused) |
//! | SEANet ratios | 1 to 8 ratios, each 1..=1024, product (hop length) at most 65 536 | `seanet.ratios` |
//! | kernels | 1..=1024 | `seanet.kernel_size`, `residual_kernel_size`, `last_kernel_size` |
//! | residual layers | at most 16, dilations `dilation_base^layer` at most 65 536 | `seanet.n_residual_layers`, `dilation_base` |
//! | compression | 1..=`n_filters` | `seanet.compress` |
//! | frame size | 1..=65 536 samples (`sample_rate / frame_rate`), sample rate at most 1 MHz | `sample_rate`, `frame_rate` |
//! | transformer | 1..=64 layers, feed-forward 1..=16 384, context and `max_seq_len` 1..=[`MAX_CONTEXT`] | `transformer.*` |

use super::MimiConfig;
use crate::limits::{MAX_AUDIO_CODEBOOKS, MAX_CONTEXT, MAX_VOCAB_SIZE};
use crate::{Error, Result};

const MAX_WIDTH: usize = 1 << 12;
const MAX_CODEBOOK_ELEMENTS: u64 = 1 << 28;
const MAX_CHANNELS: usize = 16;
const MAX_RATIOS: usize = 8;
const MAX_RATIO: usize = 1 << 10;
const MAX_HOP: usize = 1 << 16;
const MAX_KERNEL: usize = 1 << 10;
const MAX_RESIDUAL_LAYERS: usize = 16;
const MAX_DILATION: usize = 1 << 16;
const MAX_FRAME_SIZE: usize = 1 << 16;
const MAX_SAMPLE_RATE: f64 = 1e6;
const MAX_MIMI_LAYERS: usize = 64;
const MAX_MIMI_FEEDFORWARD: usize = 1 << 14;

/// `value` in `min..=max`, or an [`Error::InvalidConfig`] naming `field`.
fn within(field: &str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min || value > max {
        return Err(Error::config(
            field,
            format!("must be in {min}..={max} (got {value})"),
        ));
    }
    Ok(())
}

/// Checks `config` (see the module documentation for the bounds).
pub(super) fn validate(config: &MimiConfig) -> Result<()> {
    within(
        "quantizer_n_q",
        config.quantizer_n_q,
        1,
        MAX_AUDIO_CODEBOOKS,
    )?;
    within("quantizer_bins", config.quantizer_bins, 1, MAX_VOCAB_SIZE)?;
    within("quantizer_dim", config.quantizer_dim, 1, MAX_WIDTH)?;
    let codebook_elements = [
        config.quantizer_n_q,
        config.quantizer_bins,
        config.quantizer_dim,
    ]
    .iter()
    .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64));
    if codebook_elements.is_none_or(|n| n > MAX_CODEBOOK_ELEMENTS) {
        return Err(Error::config(
            "quantizer_bins",
            format!(
                "quantizer_n_q * quantizer_bins * quantizer_dim must be at most \
                 {MAX_CODEBOOK_ELEMENTS}"
            ),
        ));
    }
    within("channels", config.channels, 1, MAX_CHANNELS)?;
    let seanet = &config.seanet;
    within("seanet.dimension", seanet.dimension, 1, MAX_WIDTH)?;
    let ratios = &seanet.ratios;
    within("seanet.ratios", ratios.len(), 1, MAX_RATIOS)?;
    for (i, &ratio) in ratios.iter().enumerate() {
        within(&format!("seanet.ratios[{i}]"), ratio, 1, MAX_RATIO)?;
    }
    let hop = ratios
        .iter()
        .try_fold(1usize, |acc, &r| acc.checked_mul(r))
        .filter(|&hop| hop <= MAX_HOP)
        .ok_or_else(|| {
            Error::config(
                "seanet.ratios",
                format!("their product (the hop length) must be at most {MAX_HOP}"),
            )
        })?;
    // The widest SEANet layer: the filters double at each ratio.
    let widest = 1usize
        .checked_shl(ratios.len() as u32)
        .and_then(|m| m.checked_mul(seanet.n_filters));
    if seanet.n_filters == 0 || widest.is_none_or(|w| w > MAX_WIDTH) {
        return Err(Error::config(
            "seanet.n_filters",
            format!(
                "must be at least 1, and n_filters * 2^{} at most {MAX_WIDTH} (got {})",
                ratios.len(),
                seanet.n_filters
            ),
        ));
    }
    for (name, value) in [
        ("seanet.kernel_size", seanet.kernel_size),
        ("seanet.residual_kernel_size", seanet.residual_kernel_size),
        ("seanet.last_kernel_size", seanet.last_kernel_size),
    ] {
        within(name, value, 1, MAX_KERNEL)?;
    }
    within(
        "seanet.n_residual_layers",
        seanet.n_residual_layers,
        0,
        MAX_RESIDUAL_LAYERS,
    )?;
    let top_dilation = seanet.n_residual_layers.saturating_sub(1) as u32;
    let dilation = seanet.dilation_base.checked_pow(top_dilation);
    if seanet.dilation_base == 0 || dilation.is_none_or(|d| d > MAX_DILATION) {
        return Err(Error::config(
            "seanet.dilation_base",
            format!(
                "must be at least 1, with dilation_base^(n_residual_layers - 1) at most \
                 {MAX_DILATION} (got {})",
                seanet.dilation_base
            ),
        ));
    }
    within("seanet.compress", seanet.compress, 1, seanet.n_filters)?;
    check_rates(config, hop)?;
    check_transformer(config)
}

fn check_rates(config: &MimiConfig, hop: usize) -> Result<()> {
    let rates_ok = config.sample_rate.is_finite()
        && config.frame_rate.is_finite()
        && config.sample_rate > 0.0
        && config.sample_rate <= MAX_SAMPLE_RATE
        && config.frame_rate > 0.0;
    let frame_size = config.sample_rate / config.frame_rate;
    if !rates_ok || !(1.0..=MAX_FRAME_SIZE as f64).contains(&frame_size.round()) {
        return Err(Error::config(
            "frame_rate",
            format!(
                "sample_rate must be in (0, {MAX_SAMPLE_RATE}] and sample_rate / frame_rate in \
                 1..={MAX_FRAME_SIZE} samples (got {} and {})",
                config.sample_rate, config.frame_rate
            ),
        ));
    }
    let stride = config.sample_rate / hop as f64 / config.frame_rate;
    if stride < 1.0 || stride.fract() != 0.0 {
        return Err(Error::config(
            "frame_rate",
            format!(
                "must divide the encoder's rate sample_rate / prod(ratios) = {} / {hop} a whole \
                 number of times (got frame_rate {})",
                config.sample_rate, config.frame_rate
            ),
        ));
    }
    Ok(())
}

fn check_transformer(config: &MimiConfig) -> Result<()> {
    let t = &config.transformer;
    within("transformer.d_model", t.d_model, 1, MAX_WIDTH)?;
    if t.num_heads == 0 || !t.d_model.is_multiple_of(t.num_heads) {
        return Err(Error::config(
            "transformer",
            format!(
                "num_heads ({}) must divide d_model ({})",
                t.num_heads, t.d_model
            ),
        ));
    }
    within("transformer.num_layers", t.num_layers, 1, MAX_MIMI_LAYERS)?;
    within(
        "transformer.dim_feedforward",
        t.dim_feedforward,
        1,
        MAX_MIMI_FEEDFORWARD,
    )?;
    within("transformer.context", t.context, 1, MAX_CONTEXT)?;
    within("transformer.max_seq_len", t.max_seq_len, 1, MAX_CONTEXT)?;
    within("transformer.max_period", t.max_period, 1, usize::MAX)?;
    within("transformer.kv_repeat", t.kv_repeat, 1, 1)?;
    for (name, unsupported) in [
        ("transformer.use_conv_block", t.use_conv_block),
        ("transformer.cross_attention", t.cross_attention),
        ("transformer.norm_first = false", !t.norm_first),
    ] {
        if unsupported {
            return Err(Error::unsupported(format!("`{name}` in a Mimi config")));
        }
    }
    Ok(())
}
