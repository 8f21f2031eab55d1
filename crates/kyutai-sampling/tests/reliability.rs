//! Regression tests for the defects a hostile tester found at the extremes of accepted
//! parameters (issue 11): each test names the defect and failed before its fix.

mod native_support;

use candle_core::{Device, Tensor};
use kyutai_sampling::limits::{
    MAX_ADDITIVE_PENALTY, MAX_PENALTY, MAX_TEMPERATURE, MIN_PENALTY, MIN_TEMPERATURE, MIN_TOP_P,
};
use kyutai_sampling::{
    ChainConfig, Convention, LogitsProcessorSampler, NativeSampler, RepetitionPenalty, Sampler,
    Sampling, SamplingConfig, SamplingError,
};
use native_support::{assert_fits, counts, with_temperature};

fn tensor(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}

/// Every strategy with a temperature, including Gumbel.
fn tempered() -> Vec<Sampling> {
    vec![
        Sampling::All { temperature: 1.0 },
        Sampling::GumbelSoftmax { temperature: 1.0 },
        Sampling::TopK {
            k: 3,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: 0.9,
            temperature: 1.0,
        },
        Sampling::TopKThenTopP {
            k: 3,
            p: 0.9,
            temperature: 1.0,
        },
    ]
}

fn is_invalid(result: Result<impl Sized, SamplingError>, name: &str) -> bool {
    matches!(result, Err(SamplingError::InvalidParameter { name: n, .. }) if n == name)
}

/// Every way of building a sampler from a `Sampling`: the adapter, the native engine, the
/// `SamplingConfig` preset path and the candle-convention chain.
fn every_constructor_rejects(sampling: &Sampling, name: &str) {
    assert!(
        is_invalid(
            LogitsProcessorSampler::from_sampling(0, sampling.clone()),
            name
        ),
        "adapter accepted {sampling:?}"
    );
    assert!(
        is_invalid(NativeSampler::from_sampling(0, sampling.clone()), name),
        "native accepted {sampling:?}"
    );
    let config = SamplingConfig {
        sampling: sampling.clone(),
        ..SamplingConfig::default()
    };
    assert!(
        is_invalid(config.validate(), name),
        "config accepted {sampling:?}"
    );
    assert!(
        ChainConfig::from(&config).build().is_err(),
        "chain accepted {sampling:?}"
    );
}

#[test]
fn adapter_gumbel_at_a_huge_temperature_never_draws_a_masked_token() {
    // Before: T = 1e38 was accepted and candle's f32 noise `T * g` overflowed, so 127 of 4000
    // draws were -inf tokens (2532 at 1e39). Now such temperatures are errors, and at the
    // largest accepted one the noise stays finite.
    for t in [1e38, 1e39, 1.5e6] {
        every_constructor_rejects(&Sampling::GumbelSoftmax { temperature: t }, "temperature");
    }
    let logits = tensor(&[
        1.0,
        f32::NEG_INFINITY,
        3.0,
        f32::NEG_INFINITY,
        -f32::MAX,
        f32::MAX,
    ]);
    let mut sampler = LogitsProcessorSampler::from_sampling(
        0,
        Sampling::GumbelSoftmax {
            temperature: MAX_TEMPERATURE,
        },
    )
    .unwrap();
    for _ in 0..4000 {
        let token = sampler.sample(&logits, &[]).unwrap();
        assert!(token != 1 && token != 3, "drew masked token {token}");
    }
}

#[test]
fn a_top_p_that_rounds_to_zero_in_f32_is_rejected() {
    // Before: 1e-50 passed the f64 check; in f32 it is 0, so the adapter sampled the whole top-k
    // and the native engine reported AllMasked.
    for p in [1e-50, 1e-40, f64::from(f32::MIN_POSITIVE) / 2.0] {
        every_constructor_rejects(
            &Sampling::TopP {
                p,
                temperature: 1.0,
            },
            "top_p",
        );
        every_constructor_rejects(
            &Sampling::TopKThenTopP {
                k: 3,
                p,
                temperature: 1.0,
            },
            "top_p",
        );
    }
    // The smallest accepted p keeps exactly the most likely token, in every engine.
    let logits = tensor(&[0.5, 2.0, 1.9, -1.0]);
    for sampling in [
        Sampling::TopP {
            p: MIN_TOP_P,
            temperature: 1.0,
        },
        Sampling::TopKThenTopP {
            k: 3,
            p: MIN_TOP_P,
            temperature: 1.0,
        },
    ] {
        let mut samplers: Vec<Box<dyn Sampler>> = vec![
            Box::new(LogitsProcessorSampler::from_sampling(1, sampling.clone()).unwrap()),
            Box::new(NativeSampler::from_sampling(1, sampling.clone()).unwrap()),
            Box::new(
                ChainConfig::from(&SamplingConfig {
                    sampling: sampling.clone(),
                    ..SamplingConfig::default()
                })
                .build()
                .unwrap(),
            ),
        ];
        for sampler in &mut samplers {
            for _ in 0..200 {
                assert_eq!(sampler.sample(&logits, &[]).unwrap(), 1, "{sampling:?}");
            }
        }
    }
}

#[test]
fn temperatures_that_failed_at_sampling_time_are_rejected_at_construction() {
    // Before: below about 3e-39 (and 1e-37 with a logit of 100), or above 1.4e45 with a -inf
    // logit, the adapter failed while sampling with an opaque candle error.
    for t in [
        1e-300,
        3e-39,
        1e-37,
        1e-8,
        1.4e45,
        1e300,
        f64::INFINITY,
        f64::NAN,
    ] {
        for sampling in tempered() {
            every_constructor_rejects(&with_temperature(&sampling, t), "temperature");
        }
    }
    // `new`'s mapping: below 1e-7 is greedy (as candle), above 1e6 an error.
    assert!(matches!(
        LogitsProcessorSampler::new(0, Some(9e-8), None)
            .unwrap()
            .sampling(),
        Sampling::ArgMax
    ));
    assert!(is_invalid(
        LogitsProcessorSampler::new(0, Some(2e6), None),
        "temperature"
    ));
    assert!(is_invalid(
        NativeSampler::new(0, Some(2e6), Some(0.5)),
        "temperature"
    ));
    for t in [MIN_TEMPERATURE, MAX_TEMPERATURE] {
        for sampling in tempered() {
            let sampling = with_temperature(&sampling, t);
            LogitsProcessorSampler::from_sampling(0, sampling.clone()).unwrap();
            NativeSampler::from_sampling(0, sampling).unwrap();
        }
    }
}

#[test]
fn the_adapter_samples_extreme_logits_at_the_smallest_temperature() {
    // candle computes `x * (1 / T)` in f32: a logit of 3e38 (or 100 at tiny T) overflows and its
    // softmax is NaN. The adapter hands candle the shifted logits instead, so the draw follows
    // the true distribution: the two tied maxima, half each.
    let logits = [3e38f32, 1.0, 3e38, -3e38, f32::NEG_INFINITY, 100.0];
    for sampling in tempered() {
        let sampling = with_temperature(&sampling, MIN_TEMPERATURE);
        let mut sampler = LogitsProcessorSampler::from_sampling(7, sampling.clone()).unwrap();
        let observed = counts(&mut sampler, &logits, 2000);
        let top_k_of_one = matches!(sampling, Sampling::TopK { k: 1, .. });
        let expected: Vec<f64> = if top_k_of_one {
            vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        } else {
            vec![0.5, 0.0, 0.5, 0.0, 0.0, 0.0]
        };
        assert_fits(&observed, &expected, &format!("{sampling:?}"));
        // The same through the tensor entry point, with the largest temperature too.
        for t in [MIN_TEMPERATURE, MAX_TEMPERATURE] {
            let mut sampler =
                LogitsProcessorSampler::from_sampling(7, with_temperature(&sampling, t)).unwrap();
            for _ in 0..50 {
                let token = sampler.sample(&tensor(&logits), &[]).unwrap();
                assert!(token == 0 || token == 2, "{sampling:?} at {t}: {token}");
            }
        }
    }
    // A logit of 100 at T = 1e-7 (candle: 1e9, finite) still reaches candle unchanged.
    let mut sampler = LogitsProcessorSampler::from_sampling(
        3,
        Sampling::All {
            temperature: MIN_TEMPERATURE,
        },
    )
    .unwrap();
    assert_eq!(sampler.sample_slice(&[1.0, 100.0, 99.0], &[]).unwrap(), 1);
}

#[test]
fn a_tiny_repetition_penalty_is_rejected_and_a_penalised_logit_stays_finite() {
    // Before: 1e-40 was accepted and turned the finite logit 2.0 into +inf, which the sampler
    // then reported as a NonFiniteLogit the caller never passed.
    for penalty in [1e-40f32, 1e-7, 2e6, f32::INFINITY, f32::NAN, 0.0, -1.0] {
        assert!(is_invalid(
            RepetitionPenalty::new(LogitsProcessorSampler::greedy(), penalty, 8),
            "repetition_penalty"
        ));
        let config = SamplingConfig {
            repetition_penalty: Some(penalty),
            ..SamplingConfig::default()
        };
        assert!(is_invalid(config.validate(), "repetition_penalty"));
        let chain = ChainConfig {
            repetition_penalty: penalty,
            ..ChainConfig::default()
        };
        assert!(matches!(
            chain.build(),
            Err(SamplingError::InvalidConfig { field, .. }) if field == "repetition_penalty"
        ));
    }
    // At the bounds, a logit whose penalised value would overflow stops at ±f32::MAX: at the
    // smallest penalty 1e33 would become +inf (an error), at the largest -1e33 and -2e33 would
    // become -inf (AllMasked, since every token is in the history).
    for (penalty, logits, want) in [
        (MIN_PENALTY, [1e33f32, 0.5, -1e33, f32::NEG_INFINITY], 0u32),
        (MAX_PENALTY, [-1e33f32, -2e33, -3e33, f32::NEG_INFINITY], 0),
    ] {
        let mut decorated =
            RepetitionPenalty::new(LogitsProcessorSampler::greedy(), penalty, 8).unwrap();
        let mut native = RepetitionPenalty::new(
            NativeSampler::from_sampling(0, Sampling::ArgMax).unwrap(),
            penalty,
            8,
        )
        .unwrap();
        let history = [0u32, 1, 2, 3];
        assert_eq!(decorated.sample(&tensor(&logits), &history).unwrap(), want);
        assert_eq!(native.sample_slice(&logits, &history).unwrap(), want);
        for convention in [
            Convention::HuggingFace,
            Convention::LlamaCpp,
            Convention::Candle,
        ] {
            let mut chain = ChainConfig {
                convention,
                repetition_penalty: penalty,
                ..ChainConfig::default()
            }
            .build()
            .unwrap();
            assert_ne!(chain.sample_slice(&logits, &history).unwrap(), 3);
            let probs = chain.probabilities(&logits, &history).unwrap();
            assert_eq!(probs[3], 0.0, "a masked token stays masked");
            assert!(probs[want as usize] > 0.3, "{convention:?}: {probs:?}");
        }
    }
}

#[test]
fn additive_edits_saturate_instead_of_overflowing() {
    // A bias or a negative penalty that pushes a finite logit past f32::MAX used to make it
    // +inf, and the chain reported a NonFiniteLogit the caller never passed.
    let logits = [3e38f32, 1.0, f32::NEG_INFINITY];
    for convention in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        let bias = ChainConfig {
            convention,
            logit_bias: [(0, 3e38f32), (2, 3e38)].into_iter().collect(),
            ..ChainConfig::default()
        };
        let presence = ChainConfig {
            convention,
            presence_penalty: -MAX_ADDITIVE_PENALTY,
            frequency_penalty: -MAX_ADDITIVE_PENALTY,
            ..ChainConfig::default()
        };
        let sequence = ChainConfig {
            convention,
            sequence_bias: vec![(vec![0], 3e38), (vec![1, 0], 3e38)],
            ..ChainConfig::default()
        };
        for config in [bias, presence, sequence] {
            let mut chain = config.build().unwrap();
            let history = [1u32, 0, 0];
            let probs = chain.probabilities(&[f32::MAX, 1.0, f32::NEG_INFINITY], &history);
            let probs = probs.unwrap_or_else(|e| panic!("{config:?}: {e}"));
            assert_eq!(probs[2], 0.0, "{config:?}: the masked token stays masked");
            assert_eq!(chain.sample_slice(&logits, &history).unwrap(), 0);
        }
    }
    // Additive penalties are bounded.
    for field in ["frequency_penalty", "presence_penalty"] {
        for x in [1.1e6f32, -1.1e6, 1e30] {
            let mut config = ChainConfig::default();
            if field == "frequency_penalty" {
                config.frequency_penalty = x;
            } else {
                config.presence_penalty = x;
            }
            assert!(matches!(
                config.build(),
                Err(SamplingError::InvalidConfig { field: f, .. }) if f == field
            ));
        }
    }
}

#[test]
fn a_dry_penalty_past_f32_never_masks_the_only_token() {
    // DRY's `multiplier * base^n` can exceed f32; subtracting it used to give -inf, which masks
    // the token (here the whole vocabulary: AllMasked for valid logits).
    let config = ChainConfig {
        convention: Convention::LlamaCpp,
        dry_multiplier: 1e30,
        dry_base: 1e30,
        dry_allowed_length: 1,
        ..ChainConfig::default()
    };
    let mut chain = config.build().unwrap();
    let history = [0u32; 12];
    assert_eq!(chain.sample_slice(&[0.0], &history).unwrap(), 0);
    // With a second, unrepeated token, the repeat is (almost surely) avoided.
    let probs = chain.probabilities(&[0.0, -5.0], &history).unwrap();
    assert_eq!(probs, vec![0.0, 1.0]);
}

#[test]
fn chain_temperatures_are_bounded() {
    for convention in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        for t in [1e-38f32, 1e-8, 1.5e6, 3e38] {
            let config = ChainConfig {
                convention,
                temperature: t,
                ..ChainConfig::default()
            };
            assert!(
                matches!(config.build(), Err(SamplingError::InvalidConfig { field, .. }) if field == "temperature"),
                "{convention:?} accepted {t}"
            );
        }
        let range = ChainConfig {
            convention,
            dynatemp_range: 2e6,
            ..ChainConfig::default()
        };
        assert!(range.build().is_err());
        for t in [MIN_TEMPERATURE as f32, MAX_TEMPERATURE as f32] {
            let mut chain = ChainConfig {
                convention,
                temperature: t,
                ..ChainConfig::default()
            }
            .build()
            .unwrap();
            let probs = chain
                .probabilities(&[3e38, -3e38, 0.0, 3e38, f32::NEG_INFINITY], &[])
                .unwrap();
            assert_eq!(
                probs,
                vec![0.5, 0.0, 0.0, 0.5, 0.0],
                "{convention:?} at {t}"
            );
        }
    }
    // The llama.cpp convention's temperature 0 is still greedy.
    let mut greedy = ChainConfig {
        convention: Convention::LlamaCpp,
        temperature: 0.0,
        ..ChainConfig::default()
    }
    .build()
    .unwrap();
    assert_eq!(greedy.sample_slice(&[0.0, 2.0, 1.0], &[]).unwrap(), 1);
}

#[test]
fn generation_config_numbers_that_do_not_fit_f32_name_their_field() {
    for (json, field) in [
        (
            r#"{"do_sample": true, "temperature": 1e-50}"#,
            "temperature",
        ),
        (r#"{"do_sample": true, "top_p": 1e-60}"#, "top_p"),
        (
            r#"{"do_sample": true, "repetition_penalty": 1e39}"#,
            "repetition_penalty",
        ),
    ] {
        match ChainConfig::from_generation_config(json) {
            Err(SamplingError::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
}

#[test]
fn a_min_keep_of_usize_max_keeps_every_token_instead_of_aborting() {
    // Found by the P1 property: the chain reserved room for `min_keep` candidates, and
    // `usize::MAX` panicked with a capacity overflow.
    let logits = [0.5f32, 2.0, f32::NEG_INFINITY, 1.0];
    for convention in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        let config = |min_keep| ChainConfig {
            convention,
            min_keep,
            top_k: 1,
            min_p: 0.9,
            typical_p: 0.5,
            ..ChainConfig::default()
        };
        let huge = config(usize::MAX)
            .build()
            .unwrap()
            .probabilities(&logits, &[]);
        let all = config(logits.len())
            .build()
            .unwrap()
            .probabilities(&logits, &[]);
        assert_eq!(huge.unwrap(), all.unwrap(), "{convention:?}");
        let mut chain = config(usize::MAX).build().unwrap();
        let sampled = chain
            .sample_detailed(&tensor(&logits), &[], usize::MAX)
            .unwrap();
        assert_ne!(sampled.token, 2);
    }
}

#[test]
fn top_n_sigma_after_an_overflowing_temperature_keeps_the_maximum() {
    // Found by the P1 property: at T = 1e-7 the scaled gap of -f32::MAX overflowed to -inf, a
    // candidate kept by min_keep then made top-nσ's mean -inf and its floor NaN, and the chain
    // kept nothing (all-zero probabilities, AllMasked while sampling valid logits).
    let logits = [f32::MAX, -f32::MAX, 1.0, 3e38];
    for min_keep in [3, usize::MAX] {
        let mut chain = ChainConfig {
            temperature: 1e-7,
            top_p: 0.5,
            min_keep,
            top_n_sigma: 0.5,
            ..ChainConfig::default()
        }
        .build()
        .unwrap();
        assert_eq!(
            chain.probabilities(&logits, &[]).unwrap(),
            vec![1.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(chain.sample_slice(&logits, &[]).unwrap(), 0);
    }
    // The dense path (top-nσ first, llama.cpp order) sums the moments of such logits in f64.
    let mut chain = ChainConfig {
        convention: Convention::LlamaCpp,
        top_n_sigma: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        ..ChainConfig::default()
    }
    .build()
    .unwrap();
    let probs = chain.probabilities(&logits, &[]).unwrap();
    assert_eq!(probs, vec![1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn chain_config_json_numbers_must_fit_f32_and_bans_round_trip() {
    // Found by the chain_config fuzzer: `"temperature": 1e46` was read as +inf, and a config
    // holding an infinity (also a valid `-inf` bias, which bans) was written as `null`, which
    // did not parse back.
    for json in [
        r#"{"temperature": 1e46}"#,
        r#"{"top_p": -1e39}"#,
        r#"{"min_p": 1e-50}"#,
        r#"{"logit_bias": {"3": 1e40}}"#,
        r#"{"sequence_bias": [[[1, 2], -1e300]]}"#,
        r#"{"logit_bias": {"3": "ban"}}"#,
    ] {
        let err = serde_json::from_str::<ChainConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not fit an f32") || err.contains("\"-inf\""),
            "{json}: {err}"
        );
    }
    let config = ChainConfig {
        logit_bias: [(3, f32::NEG_INFINITY), (4, -2.5)].into_iter().collect(),
        sequence_bias: vec![(vec![1, 2], f32::NEG_INFINITY), (vec![5], 1e-40)],
        temperature: 1e-7,
        ..ChainConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""3":"-inf""#), "{json}");
    let back: ChainConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
    let python: ChainConfig = serde_json::from_str(
        r#"{"logit_bias": {"3": "-Infinity"}, "sequence_bias": [[[1], "-inf"]]}"#,
    )
    .unwrap();
    assert_eq!(python.logit_bias[&3], f32::NEG_INFINITY);
    assert_eq!(python.sequence_bias, vec![(vec![1], f32::NEG_INFINITY)]);
}
