//! Compiling a [`ChainConfig`] into a [`Plan`]: validation of every field, the convention's order
//! of stages, and the choice of the fastest exact strategy.

use crate::native::{scale, Mode};
use crate::stage::{logit_bias, Edit, Select, Step};
use crate::{limits, ChainConfig, Convention, SamplingError};

/// The temperature bounds of [`limits`], in `f32`.
const MIN_T: f32 = limits::MIN_TEMPERATURE as f32;
const MAX_T: f32 = limits::MAX_TEMPERATURE as f32;

/// A validated, ordered chain: edits, an optional restriction, candidate stages, a selector.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) edits: Vec<Edit>,
    /// Sorted, deduplicated allowed ids.
    pub(crate) allowed: Option<Vec<u32>>,
    pub(crate) steps: Vec<Step>,
    pub(crate) select: Select,
    pub(crate) min_keep: usize,
    /// The native strategy that draws exactly this plan's distribution from the edited view,
    /// when there is one.
    pub(crate) fast: Option<Mode>,
    /// The largest id named by any configuration list, with the list's name.
    pub(crate) max_id: Option<(u32, &'static str)>,
}

fn err(field: &str, reason: impl Into<String>) -> SamplingError {
    SamplingError::config(field, reason)
}

fn finite(field: &str, x: f32) -> Result<(), SamplingError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(err(field, format!("{x} is not a finite number")))
    }
}

fn in_range(field: &str, x: f32, lo: f32, hi: f32, hi_open: bool) -> Result<(), SamplingError> {
    let ok = x >= lo && if hi_open { x < hi } else { x <= hi };
    if ok {
        Ok(())
    } else {
        let close = if hi_open { ")" } else { "]" };
        Err(err(field, format!("{x} is outside [{lo}, {hi}{close}")))
    }
}

/// Checks every field of `c` against its range.
fn validate(c: &ChainConfig) -> Result<(), SamplingError> {
    finite("temperature", c.temperature)?;
    if c.temperature < 0.0 {
        return Err(err("temperature", "must be >= 0"));
    }
    if c.temperature > 0.0 {
        in_range("temperature", c.temperature, MIN_T, MAX_T, false)?;
    }
    if c.temperature == 0.0
        && c.do_sample
        && c.convention != Convention::LlamaCpp
        && c.dynatemp_range == 0.0
    {
        return Err(err(
            "temperature",
            "0 with do_sample true: set do_sample to false for greedy decoding (only the \
             llama.cpp convention reads temperature 0 as greedy)",
        ));
    }
    let top_p_lo = if c.convention == Convention::Candle {
        f32::MIN_POSITIVE
    } else {
        0.0
    };
    in_range("top_p", c.top_p, top_p_lo, 1.0, false)?;
    in_range("min_p", c.min_p, 0.0, 1.0, false)?;
    in_range("typical_p", c.typical_p, 0.0, 1.0, false)?;
    if c.convention == Convention::HuggingFace && c.typical_p == 0.0 {
        return Err(err("typical_p", "transformers requires a mass > 0"));
    }
    in_range("epsilon_cutoff", c.epsilon_cutoff, 0.0, 1.0, true)?;
    in_range("eta_cutoff", c.eta_cutoff, 0.0, 1.0, true)?;
    finite("top_n_sigma", c.top_n_sigma)?;
    in_range("xtc_probability", c.xtc_probability, 0.0, 1.0, false)?;
    in_range("xtc_threshold", c.xtc_threshold, 0.0, 1.0, false)?;
    in_range("dynatemp_range", c.dynatemp_range, 0.0, MAX_T, false)?;
    finite("dynatemp_exponent", c.dynatemp_exponent)?;
    if c.dynatemp_exponent < 0.0 {
        return Err(err("dynatemp_exponent", "must be >= 0"));
    }
    if c.mirostat > 2 {
        return Err(err(
            "mirostat",
            format!("{} is not 0 (off), 1 or 2", c.mirostat),
        ));
    }
    for (field, x) in [
        ("mirostat_tau", c.mirostat_tau),
        ("mirostat_eta", c.mirostat_eta),
    ] {
        finite(field, x)?;
        if x < 0.0 {
            return Err(err(field, "must be >= 0"));
        }
    }
    in_range(
        "repetition_penalty",
        c.repetition_penalty,
        limits::MIN_PENALTY,
        limits::MAX_PENALTY,
        false,
    )?;
    for (field, x) in [
        ("frequency_penalty", c.frequency_penalty),
        ("presence_penalty", c.presence_penalty),
    ] {
        let max = limits::MAX_ADDITIVE_PENALTY;
        in_range(field, x, -max, max, false)?;
    }
    finite("dry_multiplier", c.dry_multiplier)?;
    if c.dry_multiplier < 0.0 {
        return Err(err("dry_multiplier", "must be >= 0 (0 is off)"));
    }
    finite("dry_base", c.dry_base)?;
    if c.dry_multiplier > 0.0 && c.dry_base < 1.0 {
        return Err(err("dry_base", "must be >= 1"));
    }
    if c.dry_sequence_breakers.iter().any(Vec::is_empty) {
        return Err(err("dry_sequence_breakers", "a sequence breaker is empty"));
    }
    if c.bad_words_ids.iter().any(Vec::is_empty) {
        return Err(err("bad_words_ids", "a bad word is an empty sequence"));
    }
    for (ids, bias) in &c.sequence_bias {
        if ids.is_empty() {
            return Err(err("sequence_bias", "a biased sequence is empty"));
        }
        if bias.is_nan() || *bias == f32::INFINITY {
            return Err(err("sequence_bias", format!("bias {bias} is not finite")));
        }
    }
    for (&token, &bias) in &c.logit_bias {
        if bias.is_nan() || bias == f32::INFINITY {
            return Err(err(
                "logit_bias",
                format!("bias {bias} of token {token} is not finite (use -1e30 or less to ban)"),
            ));
        }
    }
    if c.allowed_token_ids.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(
            "allowed_token_ids",
            "an empty set allows no token (use null for no restriction)",
        ));
    }
    if c.min_length > 0 && c.eos_token_id.is_empty() {
        return Err(err("min_length", "needs eos_token_id"));
    }
    Ok(())
}

/// The largest id of every configuration list, with the list's name (for the check against the
/// vocabulary at sampling time).
fn max_id(c: &ChainConfig) -> Option<(u32, &'static str)> {
    let lists: [(&'static str, Option<u32>); 7] = [
        ("logit_bias", c.logit_bias.keys().next_back().copied()),
        ("suppress_tokens", c.suppress_tokens.iter().max().copied()),
        (
            "allowed_token_ids",
            c.allowed_token_ids
                .as_ref()
                .and_then(|a| a.iter().max().copied()),
        ),
        ("eos_token_id", c.eos_token_id.iter().max().copied()),
        (
            "bad_words_ids",
            c.bad_words_ids.iter().flatten().max().copied(),
        ),
        (
            "sequence_bias",
            c.sequence_bias.iter().flat_map(|(s, _)| s).max().copied(),
        ),
        (
            "dry_sequence_breakers",
            c.dry_sequence_breakers.iter().flatten().max().copied(),
        ),
    ];
    lists
        .into_iter()
        .filter_map(|(name, id)| id.map(|id| (id, name)))
        .max_by_key(|&(id, _)| id)
}

/// The edit stages in the convention's order.
fn edits(c: &ChainConfig) -> Vec<Edit> {
    let bias: Vec<(u32, f32)> = c.logit_bias.iter().map(|(&t, &b)| (t, b)).collect();
    let logit_bias = (!bias.is_empty()).then_some(Edit::LogitBias(bias));
    let repetition = (c.repetition_penalty != 1.0).then_some(Edit::Repetition {
        penalty: c.repetition_penalty,
        last_n: c.repeat_last_n,
    });
    let frequency_presence = (c.frequency_penalty != 0.0 || c.presence_penalty != 0.0).then_some(
        Edit::FrequencyPresence {
            frequency: c.frequency_penalty,
            presence: c.presence_penalty,
            last_n: c.repeat_last_n,
        },
    );
    let dry = crate::stage::dry_edit(c);
    let sequence_bias = crate::stage::sequence_bias_edit(c);
    let ngram = crate::stage::no_repeat_ngram_edit(c);
    let bad_words = crate::stage::bad_words_edit(c);
    let min_length = (c.min_length > 0).then(|| Edit::MinLength {
        min_length: c.min_length,
        eos: c.eos_token_id.clone(),
    });
    let suppress =
        (!c.suppress_tokens.is_empty()).then(|| Edit::Suppress(c.suppress_tokens.clone()));
    let order = match c.convention {
        Convention::HuggingFace => [
            sequence_bias,
            logit_bias,
            repetition,
            frequency_presence,
            dry,
            ngram,
            bad_words,
            min_length,
            suppress,
        ],
        Convention::LlamaCpp => [
            logit_bias,
            repetition,
            frequency_presence,
            dry,
            sequence_bias,
            ngram,
            bad_words,
            min_length,
            suppress,
        ],
        Convention::Candle => [
            repetition,
            sequence_bias,
            logit_bias,
            frequency_presence,
            dry,
            ngram,
            bad_words,
            min_length,
            suppress,
        ],
    };
    order.into_iter().flatten().collect()
}

/// The temperature stage (plain or dynamic), if it changes anything.
fn temperature(c: &ChainConfig) -> Option<Step> {
    if c.dynatemp_range > 0.0 {
        Some(Step::DynamicTemperature {
            t: c.temperature,
            delta: c.dynatemp_range,
            exponent: c.dynatemp_exponent,
        })
    } else if c.temperature != 1.0 {
        Some(Step::Temperature(c.temperature))
    } else {
        None
    }
}

/// The candidate stages and the selector, in the convention's order.
fn steps(c: &ChainConfig) -> (Vec<Step>, Select) {
    if !c.do_sample {
        return (Vec::new(), Select::Greedy);
    }
    if c.mirostat > 0 {
        let select = Select::Mirostat {
            version: c.mirostat,
            tau: c.mirostat_tau,
            eta: c.mirostat_eta,
        };
        return (temperature(c).into_iter().collect(), select);
    }
    let min_keep = c.min_keep.max(1);
    let top_k = |ties: bool| {
        let k = if ties { c.top_k.max(min_keep) } else { c.top_k };
        (c.top_k > 0).then_some(Step::TopK { k, ties })
    };
    let top_p = (c.top_p < 1.0).then_some(Step::TopP(c.top_p));
    let min_p = (c.min_p > 0.0).then_some(Step::MinP(c.min_p));
    let typical = |hf: bool| (c.typical_p < 1.0).then_some(Step::Typical { p: c.typical_p, hf });
    let epsilon = (c.epsilon_cutoff > 0.0).then_some(Step::Epsilon(c.epsilon_cutoff));
    let eta = (c.eta_cutoff > 0.0).then_some(Step::Eta(c.eta_cutoff));
    let sigma = (c.top_n_sigma > 0.0).then_some(Step::TopNSigma(c.top_n_sigma));
    let xtc = (c.xtc_probability > 0.0 && c.xtc_threshold <= 0.5).then_some(Step::Xtc {
        probability: c.xtc_probability,
        threshold: c.xtc_threshold,
    });
    let order: Vec<Option<Step>> = match c.convention {
        Convention::HuggingFace => vec![
            temperature(c),
            top_k(true),
            top_p,
            min_p,
            typical(true),
            epsilon,
            eta,
            sigma,
            xtc,
        ],
        Convention::LlamaCpp => vec![
            sigma,
            top_k(false),
            typical(false),
            top_p,
            min_p,
            xtc,
            epsilon,
            eta,
            temperature(c),
        ],
        Convention::Candle => {
            let truncation = match (c.top_k > 0, c.top_p < 1.0) {
                (true, true) => Some(Step::CandleTopKTopP {
                    k: c.top_k,
                    p: c.top_p,
                }),
                (true, false) => top_k(false),
                (false, true) => top_p,
                (false, false) => None,
            };
            vec![
                temperature(c),
                truncation,
                min_p,
                typical(true),
                epsilon,
                eta,
                sigma,
                xtc,
            ]
        }
    };
    (order.into_iter().flatten().collect(), Select::Multinomial)
}

/// The native strategy equal to `steps` + `select`, if any.
fn fast(steps: &[Step], select: Select, min_keep: usize) -> Option<Mode> {
    let t = |t: f32| scale(f64::from(t));
    match (steps, select) {
        ([], Select::Greedy) => Some(Mode::ArgMax),
        ([], Select::Multinomial) => Some(Mode::All { scale: t(1.0) }),
        ([Step::Temperature(x)], Select::Multinomial) if *x > 0.0 => {
            Some(Mode::All { scale: t(*x) })
        }
        ([Step::TopK { k, ties: false }], Select::Multinomial) => Some(Mode::TopK {
            k: *k,
            scale: t(1.0),
        }),
        (
            [Step::Temperature(x), Step::TopK { k, ties: false }]
            | [Step::TopK { k, ties: false }, Step::Temperature(x)],
            Select::Multinomial,
        ) if *x > 0.0 => Some(Mode::TopK {
            k: *k,
            scale: t(*x),
        }),
        ([Step::TopP(p)], Select::Multinomial) if min_keep <= 1 && *p > 0.0 => Some(Mode::TopP {
            p: f64::from(*p),
            scale: t(1.0),
        }),
        ([Step::Temperature(x), Step::TopP(p)], Select::Multinomial)
            if min_keep <= 1 && *p > 0.0 && *x > 0.0 =>
        {
            Some(Mode::TopP {
                p: f64::from(*p),
                scale: t(*x),
            })
        }
        ([Step::CandleTopKTopP { k, p }], Select::Multinomial) => Some(Mode::TopKThenTopP {
            k: *k,
            p: f64::from(*p),
            scale: t(1.0),
        }),
        ([Step::Temperature(x), Step::CandleTopKTopP { k, p }], Select::Multinomial)
            if *x > 0.0 =>
        {
            Some(Mode::TopKThenTopP {
                k: *k,
                p: f64::from(*p),
                scale: t(*x),
            })
        }
        _ => None,
    }
}

impl Plan {
    /// Validates `c` and compiles it.
    pub(crate) fn compile(c: &ChainConfig) -> Result<Self, SamplingError> {
        validate(c)?;
        let (steps, select) = steps(c);
        let min_keep = c.min_keep.max(1);
        let allowed = c.allowed_token_ids.as_ref().map(|ids| {
            let mut ids = ids.clone();
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        Ok(Self {
            edits: edits(c),
            fast: fast(&steps, select, min_keep),
            allowed,
            steps,
            select,
            min_keep,
            max_id: max_id(c),
        })
    }

    /// Checks the configuration's ids against a vocabulary of `vocab` tokens.
    pub(crate) fn check_vocab(&self, vocab: usize) -> Result<(), SamplingError> {
        match self.max_id {
            Some((token, list)) if token as usize >= vocab => {
                Err(SamplingError::TokenOutOfVocab { list, token, vocab })
            }
            _ => Ok(()),
        }
    }
}

// Keep the ban threshold in one place.
const _: () = assert!(logit_bias::BAN < -1e29);
