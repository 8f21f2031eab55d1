//! Token sampling for [candle](https://github.com/huggingface/candle) models, behind one small,
//! object-safe trait.
//!
//! Generation code holds a [`BoxSampler`] (a `Box<dyn Sampler>`) and asks it for the next token;
//! which strategy draws that token is the caller's choice, made once at construction:
//!
//! * [`LogitsProcessorSampler`] wraps candle-transformers' `LogitsProcessor`: the same tokens for
//!   the same seed, with every parameter and every logits vector validated.
//! * [`NativeSampler`] draws from exactly the same distributions in O(vocab), without sorting or
//!   allocating, from a portable seeded stream.
//! * [`RepetitionPenalty`] decorates any sampler with candle's repetition penalty.
//! * [`SamplingConfig`] describes a sampler as plain data, with presets
//!   ([`SamplingConfig::default`], [`greedy`](SamplingConfig::greedy),
//!   [`creative`](SamplingConfig::creative)).
//! * Your own type implements [`Sampler`] and plugs in anywhere the others do.
//!
//! # Quick start
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use kyutai_sampling::{BoxSampler, Sampler, SamplingConfig};
//!
//! let mut sampler: BoxSampler = SamplingConfig::default().build()?;
//! let logits = Tensor::new(&[0.5f32, 3.0, 1.0, f32::NEG_INFINITY], &Device::Cpu)?;
//! let mut history = Vec::new();
//! for _ in 0..4 {
//!     let token = sampler.sample(&logits, &history)?;
//!     assert_ne!(token, 3, "-inf masks a token");
//!     history.push(token);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors, not panics
//!
//! Parameters are checked when a sampler is built, against the bounds of [`limits`] (chosen so
//! that their f32 forms keep their meaning), and logits every time one is sampled. Empty
//! logits, a rank other than `[V]` or `[1, V]`, integer dtypes, NaN or `+inf` entries and
//! all-`-inf` logits are [`SamplingError`]s, for every strategy including `ArgMax`. `-inf` is the
//! mask value: a token whose logit is `-inf` is never returned. `SamplingError` converts into
//! `candle_core::Error`, so `?` works inside candle code.
//!
//! # Reproducibility
//!
//! A seeded sampler replays its stream after [`Sampler::reset`]. The adapter inherits candle's
//! generator, `rand::rngs::StdRng`, whose stream rand does not promise to keep across versions:
//! the same seed gives the same tokens with the same `Cargo.lock`, not necessarily after an
//! upgrade. candle's `GumbelSoftmax` ignores the seed altogether.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![doc(test(attr(deny(warnings))))]

mod batch;
mod chain;
mod config;
mod constraint;
mod error;
pub mod limits;
mod logits;
mod logits_processor;
mod native;
mod params;
mod repetition_penalty;
mod sampler;
mod stage;

pub use batch::{sample_batch, Batch};
pub use candle_transformers::generation::Sampling;
pub use chain::{verify_draft, Chain, ChainConfig, Convention, Sampled, Verified};
pub use config::SamplingConfig;
#[cfg(feature = "llguidance")]
pub use constraint::GrammarConstraint;
pub use constraint::{Constraint, TokenSet};
pub use error::SamplingError;
pub use logits::validate_logits;
pub use logits_processor::LogitsProcessorSampler;
pub use native::NativeSampler;
pub use repetition_penalty::RepetitionPenalty;
pub use sampler::{greedy, BoxSampler, Sampler, SamplerExt};

/// Test hooks for the compiled forms of the dense passes (not part of the API).
#[doc(hidden)]
pub mod __simd {
    /// Forces the portable form (`true`) or the one chosen at start-up (`false`), process-wide.
    pub fn force_portable(portable: bool) {
        crate::native::dispatch::force_portable(portable)
    }

    /// Switches to the form named `name` (`"portable"`, `"avx2"`, `"avx512"`), process-wide;
    /// `false` when this CPU does not run it.
    pub fn force(name: &str) -> bool {
        crate::native::dispatch::force(name)
    }

    /// The forms this CPU runs, narrowest first.
    pub fn available() -> Vec<&'static str> {
        crate::native::dispatch::available()
    }

    /// The form in use.
    pub fn level() -> &'static str {
        crate::native::dispatch::level_name()
    }
}
