//! The documented bounds of every numeric parameter, shared by every engine.
//!
//! Every sampler computes in `f32` (candle's `LogitsProcessor` does, and the native engine and the
//! chain keep their logits in `f32`), so a parameter is accepted only where its `f32` form still
//! means what the caller asked for. Outside these bounds the constructors return
//! [`SamplingError::InvalidParameter`](crate::SamplingError::InvalidParameter) (or
//! [`InvalidConfig`](crate::SamplingError::InvalidConfig) naming the field of a
//! [`ChainConfig`](crate::ChainConfig)); nothing is clamped silently.
//!
//! | Parameter | Accepted | Why the bound |
//! |---|---|---|
//! | temperature (when it scales) | [`MIN_TEMPERATURE`] ..= [`MAX_TEMPERATURE`] | below `1e-7` candle's `LogitsProcessor::new` already means greedy, and `1 / T` in `f32` reaches infinity near `3e-39`; above `1e6` a gap between two finite logits that overflows `f32` would no longer scale to a certain zero |
//! | `top_p` of a [`Sampling`](crate::Sampling) | [`MIN_TOP_P`] ..= 1 | candle compares in `f32`: a `p` below the smallest normal `f32` rounds to 0 or loses its precision |
//! | repetition penalty (multiplicative) | [`MIN_PENALTY`] ..= [`MAX_PENALTY`] | `1e-40` is subnormal in `f32` and turns every positive logit into `+inf` |
//! | frequency and presence penalties (additive) | `-`[`MAX_ADDITIVE_PENALTY`] ..= [`MAX_ADDITIVE_PENALTY`] | a count times a larger factor leaves `f32` |
//!
//! Edited logits never leave `f32`'s finite range: a penalty or bias that would push a finite
//! logit past `±f32::MAX` stops at `±f32::MAX` (only the caller's `-inf`, and bans, mask a
//! token), so an edit can never turn valid logits into a
//! [`NonFiniteLogit`](crate::SamplingError::NonFiniteLogit) error.

/// The smallest temperature that scales the logits (smaller ones are errors; use greedy
/// decoding instead).
pub const MIN_TEMPERATURE: f64 = 1e-7;

/// The largest temperature.
pub const MAX_TEMPERATURE: f64 = 1e6;

/// The smallest `top_p` of a [`Sampling`](crate::Sampling) strategy: the smallest normal `f32`.
pub const MIN_TOP_P: f64 = f32::MIN_POSITIVE as f64;

/// The smallest multiplicative repetition penalty.
pub const MIN_PENALTY: f32 = 1e-6;

/// The largest multiplicative repetition penalty.
pub const MAX_PENALTY: f32 = 1e6;

/// The largest magnitude of the additive (frequency and presence) penalties.
pub const MAX_ADDITIVE_PENALTY: f32 = 1e6;

/// The edit result `x` of the finite logit `before`, kept inside `f32`'s finite range: a result
/// that overflowed stops at `±f32::MAX`. A `before` that is not finite passes through as `x`, so
/// `-inf` (a masked token) stays masked and a NaN or `+inf` input is still reported.
#[inline]
pub(crate) fn saturate(x: f32, before: f32) -> f32 {
    if x.is_finite() || !before.is_finite() {
        x
    } else if x > 0.0 {
        f32::MAX
    } else {
        -f32::MAX
    }
}
