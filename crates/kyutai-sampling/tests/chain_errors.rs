//! Every invalid `ChainConfig` field is an `InvalidConfig` naming it; JSON with unknown fields is
//! rejected; `from_generation_config` rejects what a chain cannot honour, ignores what does not
//! change the distribution, and applies transformers' defaults; bad logits are errors through
//! every entry point and every kind of plan.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use kyutai_sampling::{ChainConfig, Convention, Sampler, SamplingError};

fn field_of(c: &ChainConfig) -> String {
    match c.build() {
        Err(SamplingError::InvalidConfig { field, .. }) => field,
        Err(other) => panic!("{c:?}: expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("{c:?}: built, expected an error"),
    }
}

fn hf() -> ChainConfig {
    ChainConfig::default()
}

fn with(convention: Convention) -> ChainConfig {
    ChainConfig {
        convention,
        ..ChainConfig::default()
    }
}

const CONVENTIONS: [Convention; 3] = [
    Convention::HuggingFace,
    Convention::LlamaCpp,
    Convention::Candle,
];

#[test]
fn every_invalid_field_is_named() {
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    type Edit = fn(&mut ChainConfig, f32);
    // (field, setter, invalid values): each is invalid in every convention.
    let cases: Vec<(&str, Edit, Vec<f32>)> = vec![
        (
            "temperature",
            |c, v| c.temperature = v,
            vec![nan, -0.5, inf, -inf],
        ),
        ("top_p", |c, v| c.top_p = v, vec![nan, -0.1, 1.1, inf]),
        ("min_p", |c, v| c.min_p = v, vec![nan, -0.1, 1.1]),
        ("typical_p", |c, v| c.typical_p = v, vec![nan, -0.1, 1.1]),
        (
            "epsilon_cutoff",
            |c, v| c.epsilon_cutoff = v,
            vec![nan, -0.1, 1.0, 2.0],
        ),
        (
            "eta_cutoff",
            |c, v| c.eta_cutoff = v,
            vec![nan, -0.1, 1.0, 2.0],
        ),
        ("top_n_sigma", |c, v| c.top_n_sigma = v, vec![nan, inf]),
        (
            "xtc_probability",
            |c, v| c.xtc_probability = v,
            vec![nan, -0.1, 1.1],
        ),
        (
            "xtc_threshold",
            |c, v| c.xtc_threshold = v,
            vec![nan, -0.1, 1.1],
        ),
        (
            "dynatemp_range",
            |c, v| c.dynatemp_range = v,
            vec![nan, -0.1, inf],
        ),
        (
            "dynatemp_exponent",
            |c, v| c.dynatemp_exponent = v,
            vec![nan, -1.0, inf],
        ),
        (
            "mirostat_tau",
            |c, v| c.mirostat_tau = v,
            vec![nan, -1.0, inf],
        ),
        (
            "mirostat_eta",
            |c, v| c.mirostat_eta = v,
            vec![nan, -1.0, inf],
        ),
        (
            "repetition_penalty",
            |c, v| c.repetition_penalty = v,
            vec![nan, 0.0, -1.0, inf],
        ),
        (
            "frequency_penalty",
            |c, v| c.frequency_penalty = v,
            vec![nan, inf, -inf],
        ),
        (
            "presence_penalty",
            |c, v| c.presence_penalty = v,
            vec![nan, inf, -inf],
        ),
        (
            "dry_multiplier",
            |c, v| c.dry_multiplier = v,
            vec![nan, -1.0],
        ),
        (
            "dry_base",
            |c, v| {
                c.dry_multiplier = 0.8;
                c.dry_base = v
            },
            vec![0.5, 0.0, nan],
        ),
    ];
    for convention in CONVENTIONS {
        for (field, set, values) in &cases {
            for &v in values {
                let mut c = with(convention);
                set(&mut c, v);
                assert_eq!(field_of(&c), *field, "{convention:?} {field} = {v}");
            }
        }
    }
}

#[test]
fn temperature_zero_needs_do_sample_false_except_in_llama_cpp() {
    for convention in [Convention::HuggingFace, Convention::Candle] {
        let c = ChainConfig {
            temperature: 0.0,
            ..with(convention)
        };
        assert_eq!(field_of(&c), "temperature", "{convention:?}");
        ChainConfig {
            do_sample: false,
            ..c
        }
        .build()
        .unwrap();
    }
    ChainConfig {
        temperature: 0.0,
        ..with(Convention::LlamaCpp)
    }
    .build()
    .unwrap();
}

#[test]
fn convention_specific_ranges() {
    // candle's top-p must be positive; transformers' typical mass too.
    assert_eq!(
        field_of(&ChainConfig {
            top_p: 0.0,
            ..with(Convention::Candle)
        }),
        "top_p"
    );
    assert_eq!(
        field_of(&ChainConfig {
            typical_p: 0.0,
            ..hf()
        }),
        "typical_p"
    );
    ChainConfig {
        typical_p: 0.0,
        ..with(Convention::LlamaCpp)
    }
    .build()
    .unwrap();
    for convention in [Convention::HuggingFace, Convention::LlamaCpp] {
        ChainConfig {
            top_p: 0.0,
            ..with(convention)
        }
        .build()
        .unwrap();
    }
}

#[test]
fn list_fields_are_checked() {
    let cases: Vec<(&str, ChainConfig)> = vec![
        (
            "mirostat",
            ChainConfig {
                mirostat: 3,
                ..hf()
            },
        ),
        (
            "bad_words_ids",
            ChainConfig {
                bad_words_ids: vec![vec![1], vec![]],
                ..hf()
            },
        ),
        (
            "dry_sequence_breakers",
            ChainConfig {
                dry_sequence_breakers: vec![vec![]],
                ..hf()
            },
        ),
        (
            "sequence_bias",
            ChainConfig {
                sequence_bias: vec![(vec![], 1.0)],
                ..hf()
            },
        ),
        (
            "sequence_bias",
            ChainConfig {
                sequence_bias: vec![(vec![1], f32::NAN)],
                ..hf()
            },
        ),
        (
            "logit_bias",
            ChainConfig {
                logit_bias: [(1, f32::NAN)].into_iter().collect(),
                ..hf()
            },
        ),
        (
            "logit_bias",
            ChainConfig {
                logit_bias: [(0, 1.0), (1, f32::INFINITY)].into_iter().collect(),
                ..hf()
            },
        ),
        (
            "allowed_token_ids",
            ChainConfig {
                allowed_token_ids: Some(vec![]),
                ..hf()
            },
        ),
        (
            "min_length",
            ChainConfig {
                min_length: 5,
                ..hf()
            },
        ),
    ];
    for convention in CONVENTIONS {
        for (field, c) in &cases {
            let c = ChainConfig {
                convention,
                ..c.clone()
            };
            assert_eq!(field_of(&c), *field, "{convention:?} {c:?}");
        }
    }
}

#[test]
fn boundary_values_are_valid() {
    let ok: Vec<ChainConfig> = vec![
        ChainConfig {
            top_p: 1.0,
            min_p: 1.0,
            typical_p: 1.0,
            ..hf()
        },
        ChainConfig {
            min_p: 0.0,
            epsilon_cutoff: 0.0,
            eta_cutoff: 0.0,
            ..hf()
        },
        ChainConfig {
            epsilon_cutoff: 0.999,
            eta_cutoff: 0.999,
            ..hf()
        },
        ChainConfig {
            xtc_probability: 1.0,
            xtc_threshold: 1.0,
            ..hf()
        },
        ChainConfig {
            xtc_probability: 0.0,
            xtc_threshold: 0.0,
            ..hf()
        },
        ChainConfig {
            mirostat: 2,
            mirostat_tau: 0.0,
            mirostat_eta: 0.0,
            ..hf()
        },
        ChainConfig {
            mirostat: 1,
            ..hf()
        },
        ChainConfig {
            repetition_penalty: 1e-3,
            frequency_penalty: -2.0,
            presence_penalty: -2.0,
            ..hf()
        },
        ChainConfig {
            logit_bias: [(0, f32::NEG_INFINITY), (1, -1e30), (2, 1e30)]
                .into_iter()
                .collect(),
            ..hf()
        },
        // dry_base is only checked when DRY is on.
        ChainConfig {
            dry_base: 0.5,
            ..hf()
        },
        ChainConfig {
            min_length: 3,
            eos_token_id: vec![2],
            ..hf()
        },
        ChainConfig {
            dynatemp_range: 0.5,
            dynatemp_exponent: 0.0,
            temperature: 0.0,
            ..hf()
        },
        ChainConfig {
            top_n_sigma: -3.0,
            ..hf()
        },
    ];
    for convention in CONVENTIONS {
        for c in &ok {
            let c = ChainConfig {
                convention,
                ..c.clone()
            };
            c.build().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
    }
}

#[test]
fn json_rejects_unknown_fields_and_round_trips() {
    assert!(serde_json::from_str::<ChainConfig>(r#"{ "top_kk": 4 }"#).is_err());
    assert!(serde_json::from_str::<ChainConfig>(r#"{ "top_k": 4, "tempreature": 0.5 }"#).is_err());
    assert!(serde_json::from_str::<ChainConfig>(r#"{ "convention": "vllm" }"#).is_err());
    assert!(serde_json::from_str::<ChainConfig>(r#"{ "top_k": -1 }"#).is_err());
    assert!(serde_json::from_str::<ChainConfig>(r#"{ "top_k": "4" }"#).is_err());
    let empty: ChainConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, ChainConfig::default());
    let c: ChainConfig = serde_json::from_str(
        r#"{ "convention": "llama.cpp", "eos_token_id": 7, "logit_bias": { "3": -1e30 } }"#,
    )
    .unwrap();
    assert_eq!(c.convention, Convention::LlamaCpp);
    assert_eq!(c.eos_token_id, vec![7]);
    assert_eq!(c.logit_bias, BTreeMap::from([(3, -1e30)]));
    let candle: ChainConfig = serde_json::from_str(r#"{ "convention": "candle" }"#).unwrap();
    assert_eq!(candle.convention, Convention::Candle);
    let mut full = ChainConfig::llama_cpp();
    full.logit_bias.insert(5, 2.5);
    full.allowed_token_ids = Some(vec![1, 2, 5]);
    full.eos_token_id = vec![1, 2];
    let text = serde_json::to_string(&full).unwrap();
    assert_eq!(serde_json::from_str::<ChainConfig>(&text).unwrap(), full);
}

fn gen_field(json: &str) -> String {
    match ChainConfig::from_generation_config(json) {
        Err(SamplingError::InvalidConfig { field, .. }) => field,
        other => panic!("{json}: expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn generation_config_rejects_what_a_chain_cannot_honour() {
    for (json, field) in [
        (r#"{ "num_beams": 4 }"#, "num_beams"),
        (r#"{ "do_sample": true, "num_beams": 2 }"#, "num_beams"),
        (r#"{ "guidance_scale": 3.0 }"#, "guidance_scale"),
        (r#"{ "penalty_alpha": 0.6, "top_k": 4 }"#, "penalty_alpha"),
        (r#"{ "num_beam_groups": 2 }"#, "num_beam_groups"),
        (r#"{ "num_return_sequences": 3 }"#, "num_return_sequences"),
        (r#"{ "diversity_penalty": 0.5 }"#, "diversity_penalty"),
        (
            r#"{ "encoder_repetition_penalty": 1.2 }"#,
            "encoder_repetition_penalty",
        ),
        (r#"{ "renormalize_logits": true }"#, "renormalize_logits"),
        (r#"{ "forced_bos_token_id": 0 }"#, "forced_bos_token_id"),
        (
            r#"{ "begin_suppress_tokens": [220] }"#,
            "begin_suppress_tokens",
        ),
        (
            r#"{ "watermarking_config": { "greenlist_ratio": 0.25 } }"#,
            "watermarking_config",
        ),
        (
            r#"{ "prompt_lookup_num_tokens": 10 }"#,
            "prompt_lookup_num_tokens",
        ),
        (r#"{ "frobnicate": 1 }"#, "frobnicate"),
        (r#"{ "frobnicate": [] }"#, "frobnicate"),
        (r#"{ "do_sample": true, "top_p": 1.5 }"#, "top_p"),
        (r#"{ "do_sample": true, "temperature": -1 }"#, "temperature"),
        (r#"{ "min_length": 4 }"#, "min_length"),
    ] {
        assert_eq!(gen_field(json), field, "{json}");
    }
    for json in ["{", "[]", "null", r#"{ "top_k": 4, }"#] {
        assert!(
            matches!(
                ChainConfig::from_generation_config(json),
                Err(SamplingError::ConfigSyntax(_))
            ),
            "{json}"
        );
    }
}

#[test]
fn generation_config_ignores_what_does_not_change_the_distribution() {
    let plain = ChainConfig::from_generation_config("{}").unwrap();
    let noisy = ChainConfig::from_generation_config(
        r#"{ "max_length": 512, "pad_token_id": 0, "transformers_version": "4.46.0",
             "bos_token_id": 1, "_from_model_config": true, "use_cache": true,
             "num_beams": 1, "guidance_scale": 1.0, "penalty_alpha": null,
             "renormalize_logits": false, "begin_suppress_tokens": [],
             "num_return_sequences": 1, "length_penalty": 2.0, "frobnicate": null }"#,
    )
    .unwrap();
    assert_eq!(plain, noisy);
}

#[test]
fn generation_config_defaults() {
    // Greedy unless do_sample: no warper at all.
    let greedy =
        ChainConfig::from_generation_config(r#"{ "temperature": 0.6, "top_p": 0.9 }"#).unwrap();
    assert!(!greedy.do_sample);
    assert_eq!(greedy.convention, Convention::HuggingFace);
    let logits = [0.0f32, 1.0, 3.0, 2.0];
    assert_eq!(
        greedy.build().unwrap().probabilities(&logits, &[]).unwrap(),
        vec![0.0, 0.0, 1.0, 0.0]
    );
    let off = ChainConfig::from_generation_config(
        r#"{ "do_sample": false, "top_k": 10, "temperature": 0.0 }"#,
    )
    .unwrap();
    assert!(!off.do_sample);
    // top_k 50 when sampling and top_k is absent; null or 0 turns it off.
    let sampling = ChainConfig::from_generation_config(r#"{ "do_sample": true }"#).unwrap();
    assert!(sampling.do_sample);
    assert_eq!(sampling.top_k, 50);
    for (json, k) in [
        (r#"{ "do_sample": true, "top_k": null }"#, 0),
        (r#"{ "do_sample": true, "top_k": 0 }"#, 0),
        (r#"{ "do_sample": true, "top_k": 7 }"#, 7),
    ] {
        assert_eq!(
            ChainConfig::from_generation_config(json).unwrap().top_k,
            k,
            "{json}"
        );
    }
    let full = ChainConfig::from_generation_config(
        r#"{ "do_sample": true, "temperature": 0.7, "top_p": 0.8, "min_p": 0.05,
             "typical_p": 0.9, "epsilon_cutoff": 0.001, "eta_cutoff": 0.002,
             "repetition_penalty": 1.2, "suppress_tokens": [5, 6], "min_length": 3,
             "eos_token_id": 2 }"#,
    )
    .unwrap();
    assert_eq!(
        (
            full.temperature,
            full.top_p,
            full.min_p,
            full.typical_p,
            full.epsilon_cutoff,
            full.eta_cutoff,
            full.repetition_penalty,
        ),
        (0.7, 0.8, 0.05, 0.9, 0.001, 0.002, 1.2)
    );
    assert_eq!(full.suppress_tokens, vec![5, 6]);
    assert_eq!((full.min_length, full.eos_token_id.clone()), (3, vec![2]));
    assert_eq!(
        full.repeat_last_n, None,
        "transformers penalises the whole history"
    );
}

// --- bad logits ----------------------------------------------------------------------------

/// Chains covering every kind of plan (native strategies, fused first truncations, the
/// allowed-set path, mirostat, greedy).
fn plans() -> Vec<ChainConfig> {
    let llama = |c: ChainConfig| ChainConfig {
        convention: Convention::LlamaCpp,
        ..c
    };
    let candle = |c: ChainConfig| ChainConfig {
        convention: Convention::Candle,
        ..c
    };
    vec![
        hf(),
        ChainConfig {
            do_sample: false,
            ..hf()
        },
        ChainConfig { top_p: 0.5, ..hf() },
        ChainConfig { top_k: 3, ..hf() },
        ChainConfig { min_p: 0.1, ..hf() },
        ChainConfig {
            top_n_sigma: 1.0,
            ..hf()
        },
        ChainConfig {
            typical_p: 0.5,
            ..hf()
        },
        ChainConfig {
            allowed_token_ids: Some(vec![0, 1]),
            ..hf()
        },
        ChainConfig {
            repetition_penalty: 1.5,
            suppress_tokens: vec![1],
            ..hf()
        },
        llama(ChainConfig {
            top_k: 3,
            temperature: 0.7,
            ..hf()
        }),
        ChainConfig::llama_cpp(),
        llama(ChainConfig {
            mirostat: 2,
            ..hf()
        }),
        llama(ChainConfig {
            mirostat: 1,
            ..hf()
        }),
        llama(ChainConfig {
            xtc_probability: 1.0,
            ..hf()
        }),
        candle(ChainConfig {
            top_k: 3,
            top_p: 0.5,
            ..hf()
        }),
    ]
}

/// The four entry points' results on `logits`.
fn all_entry_points(c: &ChainConfig, logits: &[f32]) -> Vec<Result<(), SamplingError>> {
    let mut chain = c.build().unwrap();
    let tensor = Tensor::new(logits, &Device::Cpu).unwrap();
    vec![
        chain.probabilities(logits, &[0]).map(drop),
        chain.sample_slice(logits, &[0]).map(drop),
        chain.sample(&tensor, &[0]).map(drop),
        chain.sample_detailed(&tensor, &[0], 2).map(drop),
    ]
}

#[test]
fn empty_logits() {
    for c in plans() {
        let mut chain = c.build().unwrap();
        assert!(matches!(
            chain.probabilities(&[], &[]),
            Err(SamplingError::EmptyLogits)
        ));
        assert!(matches!(
            chain.sample_slice(&[], &[]),
            Err(SamplingError::EmptyLogits)
        ));
        let t = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            chain.sample(&t, &[]),
            Err(SamplingError::EmptyLogits)
        ));
        assert!(matches!(
            chain.sample_detailed(&t, &[], 1),
            Err(SamplingError::EmptyLogits)
        ));
    }
}

#[test]
fn nan_and_plus_inf_logits() {
    for c in plans() {
        for len in [4usize, 2000] {
            for index in [0, 2, len - 1] {
                for bad in [f32::NAN, f32::INFINITY] {
                    let mut logits: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.3).collect();
                    logits[index] = bad;
                    for (entry, r) in all_entry_points(&c, &logits).into_iter().enumerate() {
                        match r {
                            Err(SamplingError::NonFiniteLogit { index: i, value }) => {
                                assert_eq!(i, index, "{c:?} entry {entry} len {len}");
                                assert!(
                                    value.is_nan() == bad.is_nan(),
                                    "{c:?} entry {entry}: {value}"
                                );
                            }
                            other => {
                                panic!("{c:?} entry {entry} len {len}, {bad} at {index}: {other:?}")
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_nan_hidden_by_an_edit_is_still_an_error() {
    let logits = [0.5f32, f32::NAN, 1.0, 0.0];
    for convention in CONVENTIONS {
        for c in [
            ChainConfig {
                suppress_tokens: vec![1],
                ..with(convention)
            },
            ChainConfig {
                logit_bias: [(1, -1e30)].into_iter().collect(),
                ..with(convention)
            },
            ChainConfig {
                logit_bias: [(1, 2.0)].into_iter().collect(),
                ..with(convention)
            },
            ChainConfig {
                allowed_token_ids: Some(vec![0, 2]),
                ..with(convention)
            },
            ChainConfig {
                min_length: 9,
                eos_token_id: vec![1],
                top_k: 2,
                ..with(convention)
            },
        ] {
            for (entry, r) in all_entry_points(&c, &logits).into_iter().enumerate() {
                assert!(
                    matches!(r, Err(SamplingError::NonFiniteLogit { index: 1, .. })),
                    "{c:?} entry {entry}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn all_masked_logits() {
    let all = [f32::NEG_INFINITY; 5];
    for c in plans() {
        for (entry, r) in all_entry_points(&c, &all).into_iter().enumerate() {
            assert!(
                matches!(r, Err(SamplingError::AllMasked)),
                "{c:?} entry {entry}: {r:?}"
            );
        }
    }
    // Every unmasked token banned by the configuration.
    let logits = [0.0f32, f32::NEG_INFINITY, 2.0];
    for convention in CONVENTIONS {
        for c in [
            ChainConfig {
                suppress_tokens: vec![0, 2],
                ..with(convention)
            },
            ChainConfig {
                logit_bias: [(0, -1e30), (2, f32::NEG_INFINITY)].into_iter().collect(),
                top_k: 1,
                ..with(convention)
            },
            ChainConfig {
                allowed_token_ids: Some(vec![1]),
                ..with(convention)
            },
            ChainConfig {
                min_length: 4,
                eos_token_id: vec![0, 2],
                do_sample: false,
                ..with(convention)
            },
        ] {
            for (entry, r) in all_entry_points(&c, &logits).into_iter().enumerate() {
                assert!(
                    matches!(r, Err(SamplingError::AllMasked)),
                    "{c:?} entry {entry}: {r:?}"
                );
            }
        }
    }
}

#[test]
fn ids_outside_the_vocabulary_name_their_list() {
    let logits = [0.0f32, 1.0, 2.0, 3.0, 4.0];
    for convention in CONVENTIONS {
        for (list, c) in [
            (
                "allowed_token_ids",
                ChainConfig {
                    allowed_token_ids: Some(vec![1, 5]),
                    ..with(convention)
                },
            ),
            (
                "logit_bias",
                ChainConfig {
                    logit_bias: [(0, 1.0), (9, 1.0)].into_iter().collect(),
                    ..with(convention)
                },
            ),
            (
                "suppress_tokens",
                ChainConfig {
                    suppress_tokens: vec![2, 100],
                    ..with(convention)
                },
            ),
            (
                "eos_token_id",
                ChainConfig {
                    min_length: 3,
                    eos_token_id: vec![5],
                    ..with(convention)
                },
            ),
        ] {
            for (entry, r) in all_entry_points(&c, &logits).into_iter().enumerate() {
                match r {
                    Err(SamplingError::TokenOutOfVocab { list: l, vocab, .. }) => {
                        assert_eq!((l, vocab), (list, 5), "{c:?} entry {entry}");
                    }
                    other => panic!("{c:?} entry {entry}: {other:?}"),
                }
            }
            // A larger vocabulary is fine; going back to the small one is an error again.
            let mut chain = c.build().unwrap();
            let big: Vec<f32> = (0..200).map(|i| i as f32 * 0.01).collect();
            chain.sample_slice(&big, &[]).unwrap();
            assert!(matches!(
                chain.sample_slice(&logits, &[]),
                Err(SamplingError::TokenOutOfVocab { .. })
            ));
            chain.sample_slice(&big, &[]).unwrap();
        }
    }
    // History ids outside the vocabulary are not errors: they are skipped.
    let mut chain = ChainConfig {
        repetition_penalty: 1.3,
        frequency_penalty: 0.5,
        ..ChainConfig::llama_cpp()
    }
    .build()
    .unwrap();
    chain.sample_slice(&logits, &[7, 1_000_000, 2]).unwrap();
}

#[test]
fn bad_tensors() {
    let mut chain = ChainConfig::default().build().unwrap();
    let two_rows = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        chain.sample(&two_rows, &[]),
        Err(SamplingError::InvalidShape { .. })
    ));
    let ints = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    assert!(matches!(
        chain.sample(&ints, &[]),
        Err(SamplingError::UnsupportedDType(_))
    ));
    // [1, V] and other float dtypes are read like [V] f32.
    let x = [0.0f32, 5.0, 1.0];
    let mut a = ChainConfig::default().build().unwrap();
    let mut b = ChainConfig::default().build().unwrap();
    let row = Tensor::new(&x, &Device::Cpu)
        .unwrap()
        .reshape((1, 3))
        .unwrap();
    let f64s = Tensor::new(&[0.0f64, 5.0, 1.0], &Device::Cpu).unwrap();
    for _ in 0..50 {
        assert_eq!(a.sample(&row, &[]).unwrap(), b.sample(&f64s, &[]).unwrap());
    }
}
