//! `NativeSampler` rejects bad parameters and bad logits with exactly the adapter's errors, for
//! every variant, bare and under the repetition penalty, through every entry point.

use candle_core::{DType, Device, Tensor};
use kyutai_sampling::{
    BoxSampler, LogitsProcessorSampler, NativeSampler, Sampler, SamplerExt, Sampling, SamplingError,
};

fn all_variants() -> Vec<Sampling> {
    vec![
        Sampling::ArgMax,
        Sampling::All { temperature: 0.9 },
        Sampling::TopK {
            k: 3,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: 0.7,
            temperature: 1.0,
        },
        Sampling::TopKThenTopP {
            k: 3,
            p: 0.7,
            temperature: 1.0,
        },
        Sampling::GumbelSoftmax { temperature: 1.0 },
    ]
}

/// A name, the native engine and the adapter, built alike.
type Pair = (String, BoxSampler, BoxSampler);

/// A [`Pair`] for every variant, bare and penalised.
fn pairs() -> Vec<Pair> {
    let mut out: Vec<Pair> = Vec::new();
    for sampling in all_variants() {
        out.push((
            format!("{sampling:?}"),
            NativeSampler::from_sampling(1, sampling.clone())
                .unwrap()
                .boxed(),
            LogitsProcessorSampler::from_sampling(1, sampling.clone())
                .unwrap()
                .boxed(),
        ));
        out.push((
            format!("{sampling:?} + penalty"),
            NativeSampler::from_sampling(1, sampling.clone())
                .unwrap()
                .with_repetition_penalty(1.3, 8)
                .unwrap()
                .boxed(),
            LogitsProcessorSampler::from_sampling(1, sampling.clone())
                .unwrap()
                .with_repetition_penalty(1.3, 8)
                .unwrap()
                .boxed(),
        ));
    }
    out
}

/// A history that makes the penalty decorator take its non-identity path.
const HISTORY: &[u32] = &[0, 1, 2];

fn show(result: Result<u32, SamplingError>) -> String {
    format!("{result:?}")
}

/// Asserts that both samplers fail on `logits` with the same error.
fn same_error(logits: &Tensor) {
    for (name, mut native, mut adapter) in pairs() {
        let a = native.sample(logits, HISTORY);
        let b = adapter.sample(logits, HISTORY);
        assert!(a.is_err(), "{name}: {a:?} on {logits:?}");
        assert_eq!(show(a), show(b), "{name}");
    }
}

/// Asserts that both samplers fail on the host slice `values` with the same error.
fn same_slice_error(values: &[f32]) {
    for (name, mut native, mut adapter) in pairs() {
        let a = native.sample_slice(values, HISTORY);
        let b = adapter.sample_slice(values, HISTORY);
        assert!(a.is_err(), "{name}: {a:?}");
        assert_eq!(show(a), show(b), "{name}");
    }
}

fn tensor(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}

#[test]
fn empty_logits() {
    same_error(&Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap());
    same_error(&Tensor::zeros((1, 0), DType::F32, &Device::Cpu).unwrap());
    same_slice_error(&[]);
    let mut native = NativeSampler::from_sampling(0, Sampling::ArgMax).unwrap();
    assert!(matches!(
        native.sample_slice(&[], &[]),
        Err(SamplingError::EmptyLogits)
    ));
}

#[test]
fn wrong_ranks() {
    same_error(&Tensor::new(1.0f32, &Device::Cpu).unwrap());
    for shape in [(2usize, 5usize), (5, 1)] {
        same_error(&Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap());
    }
    same_error(&Tensor::zeros((1, 1, 5), DType::F32, &Device::Cpu).unwrap());
}

#[test]
fn integer_dtypes() {
    let values = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    for dtype in [DType::U8, DType::U32, DType::I64] {
        same_error(&values.to_dtype(dtype).unwrap());
    }
}

#[test]
fn nan_and_positive_infinity_report_their_first_index() {
    for bad in [f32::NAN, f32::INFINITY] {
        // Indices in the first chunk, in the middle, in the partial chunk at the end; and a
        // second bad value after the first.
        for index in [0usize, 5, 16, 33, 39] {
            let mut values = vec![0.5f32; 40];
            if index < 39 {
                values[39] = f32::NAN;
            }
            values[index] = bad;
            same_error(&tensor(&values));
            same_slice_error(&values);
            let mut native =
                NativeSampler::from_sampling(0, Sampling::All { temperature: 1.0 }).unwrap();
            match native.sample_slice(&values, &[]) {
                Err(SamplingError::NonFiniteLogit { index: i, value }) => {
                    assert_eq!(i, index);
                    assert_eq!(value.is_nan(), bad.is_nan());
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Behind a masked prefix, and with +inf as the only finite-looking maximum.
    let mut values = vec![f32::NEG_INFINITY; 100];
    values[70] = f32::INFINITY;
    same_error(&tensor(&values));
    values[20] = f32::NAN;
    same_slice_error(&values);
}

#[test]
fn f16_overflow_is_reported_as_infinity() {
    // 70000 does not fit in f16: it becomes +inf, which is an error, not a token.
    same_error(&tensor(&[1.0, 70000.0, 2.0]).to_dtype(DType::F16).unwrap());
}

#[test]
fn everything_masked() {
    let values = [f32::NEG_INFINITY; 37];
    same_error(&tensor(&values));
    same_slice_error(&values);
}

#[test]
fn one_live_token_is_always_chosen() {
    for len in [1usize, 9, 16, 17, 300] {
        let mut values = vec![f32::NEG_INFINITY; len];
        values[len - 1] = -3.0;
        for (name, mut native, _) in pairs() {
            for _ in 0..20 {
                assert_eq!(
                    native.sample(&tensor(&values), HISTORY).unwrap() as usize,
                    len - 1,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn invalid_parameters_are_rejected_like_the_adapter() {
    let bad = [
        Sampling::All { temperature: 0.0 },
        Sampling::All { temperature: -1.0 },
        Sampling::All {
            temperature: f64::NAN,
        },
        Sampling::GumbelSoftmax {
            temperature: f64::INFINITY,
        },
        Sampling::TopK {
            k: 0,
            temperature: 1.0,
        },
        Sampling::TopK {
            k: 5,
            temperature: 0.0,
        },
        Sampling::TopP {
            p: 0.0,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: 1.5,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: f64::NAN,
            temperature: 1.0,
        },
        Sampling::TopKThenTopP {
            k: 0,
            p: 0.5,
            temperature: 1.0,
        },
        Sampling::TopKThenTopP {
            k: 5,
            p: -0.1,
            temperature: 1.0,
        },
    ];
    for sampling in bad {
        let native = NativeSampler::from_sampling(0, sampling.clone());
        let adapter = LogitsProcessorSampler::from_sampling(0, sampling.clone());
        assert!(
            matches!(native, Err(SamplingError::InvalidParameter { .. })),
            "{sampling:?}"
        );
        assert_eq!(
            format!("{:?}", native.unwrap_err()),
            format!("{:?}", adapter.unwrap_err()),
            "{sampling:?}"
        );
    }
}
