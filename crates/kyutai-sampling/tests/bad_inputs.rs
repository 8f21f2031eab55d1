//! Every bad parameter and every bad logits vector gives a typed error, for every variant.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{all_variants, tensor};
use kyutai_sampling::{
    LogitsProcessorSampler, Sampler, SamplerExt, Sampling, SamplingConfig, SamplingError,
};

fn samplers() -> Vec<(String, Box<dyn Sampler>)> {
    let mut out: Vec<(String, Box<dyn Sampler>)> = Vec::new();
    for sampling in all_variants() {
        let base = LogitsProcessorSampler::from_sampling(1, sampling.clone()).unwrap();
        out.push((format!("{sampling:?}"), base.boxed()));
        let penalised = LogitsProcessorSampler::from_sampling(1, sampling.clone())
            .unwrap()
            .with_repetition_penalty(1.3, 8)
            .unwrap();
        out.push((format!("{sampling:?} + penalty"), penalised.boxed()));
    }
    out
}

/// A history that makes the penalty decorator take its non-identity path.
const HISTORY: &[u32] = &[0, 1, 2];

#[test]
fn empty_logits() {
    let empty = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
    let empty_row = Tensor::zeros((1, 0), DType::F32, &Device::Cpu).unwrap();
    for (name, mut s) in samplers() {
        for logits in [&empty, &empty_row] {
            let err = s.sample(logits, HISTORY).unwrap_err();
            assert!(matches!(err, SamplingError::EmptyLogits), "{name}: {err}");
        }
        let err = s.sample_slice(&[], HISTORY).unwrap_err();
        assert!(matches!(err, SamplingError::EmptyLogits), "{name}: {err}");
    }
}

#[test]
fn wrong_ranks() {
    let scalar = Tensor::new(1.0f32, &Device::Cpu).unwrap();
    let batch = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
    let column = Tensor::zeros((5, 1), DType::F32, &Device::Cpu).unwrap();
    let cube = Tensor::zeros((1, 1, 5), DType::F32, &Device::Cpu).unwrap();
    for (name, mut s) in samplers() {
        for logits in [&scalar, &batch, &column, &cube] {
            let err = s.sample(logits, HISTORY).unwrap_err();
            match err {
                SamplingError::InvalidShape { shape } => assert_eq!(shape, logits.dims()),
                other => panic!("{name}: {other}"),
            }
        }
    }
}

#[test]
fn integer_dtypes() {
    let values = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let logits = values.to_dtype(dtype).unwrap();
        for (name, mut s) in samplers() {
            let err = s.sample(&logits, HISTORY).unwrap_err();
            assert!(
                matches!(err, SamplingError::UnsupportedDType(d) if d == dtype),
                "{name}: {err}"
            );
        }
    }
}

#[test]
fn nan_and_positive_infinity_report_their_index() {
    for bad in [f32::NAN, f32::INFINITY] {
        for index in [0usize, 5, 39] {
            let mut values = vec![0.5f32; 40];
            values[index] = bad;
            for (name, mut s) in samplers() {
                for err in [
                    s.sample(&tensor(&values), HISTORY).unwrap_err(),
                    s.sample_slice(&values, HISTORY).unwrap_err(),
                ] {
                    match err {
                        SamplingError::NonFiniteLogit { index: i, value } => {
                            assert_eq!(i, index, "{name}");
                            assert_eq!(value.is_nan(), bad.is_nan(), "{name}");
                        }
                        other => panic!("{name}: {other}"),
                    }
                }
            }
        }
    }
}

#[test]
fn f16_overflow_is_reported_as_infinity() {
    // 70000 does not fit in f16: it becomes +inf, which is an error, not a token.
    let logits = tensor(&[1.0, 70000.0, 2.0]).to_dtype(DType::F16).unwrap();
    for (name, mut s) in samplers() {
        let err = s.sample(&logits, HISTORY).unwrap_err();
        assert!(
            matches!(err, SamplingError::NonFiniteLogit { index: 1, .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn everything_masked() {
    let values = [f32::NEG_INFINITY; 7];
    for (name, mut s) in samplers() {
        for err in [
            s.sample(&tensor(&values), HISTORY).unwrap_err(),
            s.sample_slice(&values, HISTORY).unwrap_err(),
        ] {
            assert!(matches!(err, SamplingError::AllMasked), "{name}: {err}");
        }
    }
}

#[test]
fn one_live_token_is_always_chosen() {
    let mut values = [f32::NEG_INFINITY; 9];
    values[6] = -3.0;
    for (name, mut s) in samplers() {
        for _ in 0..50 {
            assert_eq!(s.sample(&tensor(&values), HISTORY).unwrap(), 6, "{name}");
        }
    }
}

fn invalid_name(result: Result<LogitsProcessorSampler, SamplingError>) -> &'static str {
    match result {
        Err(SamplingError::InvalidParameter { name, .. }) => name,
        Err(other) => panic!("wrong error {other}"),
        Ok(s) => panic!("accepted {s:?}"),
    }
}

#[test]
fn invalid_temperatures_are_rejected_at_construction() {
    for t in [0.0, -0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let variants = [
            Sampling::All { temperature: t },
            Sampling::TopK {
                k: 3,
                temperature: t,
            },
            Sampling::TopP {
                p: 0.5,
                temperature: t,
            },
            Sampling::TopKThenTopP {
                k: 3,
                p: 0.5,
                temperature: t,
            },
            Sampling::GumbelSoftmax { temperature: t },
        ];
        for sampling in variants {
            assert_eq!(
                invalid_name(LogitsProcessorSampler::from_sampling(0, sampling)),
                "temperature"
            );
        }
    }
}

#[test]
fn invalid_k_and_p_are_rejected_at_construction() {
    assert_eq!(
        invalid_name(LogitsProcessorSampler::from_sampling(
            0,
            Sampling::TopK {
                k: 0,
                temperature: 1.0
            }
        )),
        "top_k"
    );
    assert_eq!(
        invalid_name(LogitsProcessorSampler::from_sampling(
            0,
            Sampling::TopKThenTopP {
                k: 0,
                p: 0.5,
                temperature: 1.0
            }
        )),
        "top_k"
    );
    for p in [0.0, -0.1, 1.0001, 1.5, f64::NAN, f64::INFINITY] {
        assert_eq!(
            invalid_name(LogitsProcessorSampler::from_sampling(
                0,
                Sampling::TopP {
                    p,
                    temperature: 1.0
                }
            )),
            "top_p"
        );
        assert_eq!(
            invalid_name(LogitsProcessorSampler::from_sampling(
                0,
                Sampling::TopKThenTopP {
                    k: 4,
                    p,
                    temperature: 1.0
                }
            )),
            "top_p"
        );
        assert_eq!(
            invalid_name(LogitsProcessorSampler::new(0, Some(1.0), Some(p))),
            "top_p"
        );
    }
}

#[test]
fn new_rejects_nan_and_infinite_temperatures() {
    assert_eq!(
        invalid_name(LogitsProcessorSampler::new(0, Some(f64::NAN), None)),
        "temperature"
    );
    assert_eq!(
        invalid_name(LogitsProcessorSampler::new(
            0,
            Some(f64::INFINITY),
            Some(0.9)
        )),
        "temperature"
    );
}

#[test]
fn invalid_penalties_are_rejected_at_construction() {
    for penalty in [0.0f32, -0.0, -1.5, f32::NAN, f32::INFINITY] {
        let base = LogitsProcessorSampler::from_sampling(0, Sampling::ArgMax).unwrap();
        match base.with_repetition_penalty(penalty, 16) {
            Err(SamplingError::InvalidParameter { name, .. }) => {
                assert_eq!(name, "repetition_penalty")
            }
            other => panic!("penalty {penalty}: {other:?}"),
        }
        let config = SamplingConfig {
            repetition_penalty: Some(penalty),
            ..SamplingConfig::default()
        };
        assert!(config.validate().is_err());
        assert!(config.build().is_err());
    }
}

#[test]
fn errors_name_the_parameter_and_convert_into_candle_errors() {
    let err = LogitsProcessorSampler::from_sampling(
        0,
        Sampling::TopP {
            p: 1.5,
            temperature: 1.0,
        },
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("top_p") && message.contains("1.5"),
        "{message}"
    );
    let candle: candle_core::Error = err.into();
    assert!(candle.to_string().contains("top_p"));
}
