//! Parameter checks shared by every engine.

use candle_transformers::generation::Sampling;

use crate::limits::{MAX_PENALTY, MAX_TEMPERATURE, MIN_PENALTY, MIN_TEMPERATURE, MIN_TOP_P};
use crate::SamplingError;

pub(crate) fn check_temperature(temperature: f64) -> Result<(), SamplingError> {
    if (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&temperature) {
        Ok(())
    } else {
        Err(SamplingError::invalid(
            "temperature",
            temperature,
            "a number in [1e-7, 1e6] (use Sampling::ArgMax for greedy decoding)",
        ))
    }
}

pub(crate) fn check_top_k(k: usize) -> Result<(), SamplingError> {
    if k >= 1 {
        Ok(())
    } else {
        Err(SamplingError::invalid(
            "top_k",
            k as f64,
            "k >= 1 (a k above the vocabulary size keeps every token)",
        ))
    }
}

pub(crate) fn check_top_p(p: f64) -> Result<(), SamplingError> {
    if (MIN_TOP_P..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(SamplingError::invalid(
            "top_p",
            p,
            "p in [1.1754944e-38, 1] (f32's smallest normal number: a smaller p rounds to 0 in f32)",
        ))
    }
}

pub(crate) fn check_penalty(penalty: f32) -> Result<(), SamplingError> {
    if (MIN_PENALTY..=MAX_PENALTY).contains(&penalty) {
        Ok(())
    } else {
        Err(SamplingError::invalid(
            "repetition_penalty",
            f64::from(penalty),
            "a number in [1e-6, 1e6] (1.0 disables the penalty)",
        ))
    }
}

/// Checks every parameter of a [`Sampling`] strategy.
pub(crate) fn check_sampling(sampling: &Sampling) -> Result<(), SamplingError> {
    match *sampling {
        Sampling::ArgMax => Ok(()),
        Sampling::All { temperature } | Sampling::GumbelSoftmax { temperature } => {
            check_temperature(temperature)
        }
        Sampling::TopK { k, temperature } => {
            check_top_k(k)?;
            check_temperature(temperature)
        }
        Sampling::TopP { p, temperature } => {
            check_top_p(p)?;
            check_temperature(temperature)
        }
        Sampling::TopKThenTopP { k, p, temperature } => {
            check_top_k(k)?;
            check_top_p(p)?;
            check_temperature(temperature)
        }
    }
}

/// Maps `(temperature, top_p)` the way candle's `LogitsProcessor::new` does: no temperature, or
/// one below `1e-7`, means greedy; otherwise `TopP` when `top_p` is given and `All` when not.
/// Unlike candle, a NaN temperature and an out-of-range `top_p` are errors.
pub(crate) fn sampling_from_options(
    temperature: Option<f64>,
    top_p: Option<f64>,
) -> Result<Sampling, SamplingError> {
    if let Some(t) = temperature {
        if t.is_nan() {
            return Err(SamplingError::invalid(
                "temperature",
                t,
                "a number (absent or below 1e-7 means greedy)",
            ));
        }
    }
    if let Some(p) = top_p {
        check_top_p(p)?;
    }
    let sampling = match temperature {
        Some(temperature) if temperature >= MIN_TEMPERATURE => match top_p {
            None => Sampling::All { temperature },
            Some(p) => Sampling::TopP { p, temperature },
        },
        _ => Sampling::ArgMax,
    };
    check_sampling(&sampling)?;
    Ok(sampling)
}
