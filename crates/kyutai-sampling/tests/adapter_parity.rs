//! `LogitsProcessorSampler` returns exactly the tokens of candle's `LogitsProcessor`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use candle_transformers::utils::apply_repeat_penalty;
use common::{random_logits, seeded_variants, tensor};
use kyutai_sampling::{
    BoxSampler, LogitsProcessorSampler, Sampler, SamplerExt, Sampling, SamplingConfig,
};

const DRAWS: usize = 3000;

/// Draws `DRAWS` tokens from both, on fresh random logits each step, and compares them.
fn assert_parity(seed: u64, sampling: Sampling, vocab: usize) {
    let mut raw = LogitsProcessor::from_sampling(seed, sampling.clone());
    let mut adapter: BoxSampler = LogitsProcessorSampler::from_sampling(seed, sampling.clone())
        .unwrap()
        .boxed();
    let mut distinct = std::collections::BTreeSet::new();
    for step in 0..DRAWS {
        let logits = tensor(&random_logits(seed ^ (step as u64) << 20, vocab, 3.0));
        let expected = raw.sample(&logits).unwrap();
        let got = adapter.sample(&logits, &[]).unwrap();
        assert_eq!(got, expected, "{sampling:?}, seed {seed}, step {step}");
        distinct.insert(got);
    }
    // Guard against a vacuous comparison (e.g. both always returning 0).
    assert!(distinct.len() > 10, "{sampling:?}: only {distinct:?}");
}

#[test]
fn every_seeded_variant_matches_candle_token_for_token() {
    for (i, sampling) in seeded_variants().into_iter().enumerate() {
        assert_parity(1000 + i as u64, sampling, 257);
    }
}

#[test]
fn parity_at_the_edges_of_each_parameter() {
    let cases = [
        Sampling::TopK {
            k: 1,
            temperature: 1.0,
        },
        Sampling::TopK {
            k: 10_000,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: 1.0,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: 1e-3,
            temperature: 2.0,
        },
        Sampling::TopKThenTopP {
            k: 5,
            p: 0.999,
            temperature: 1.0,
        },
        Sampling::All { temperature: 25.0 },
    ];
    for (i, sampling) in cases.into_iter().enumerate() {
        let mut raw = LogitsProcessor::from_sampling(i as u64, sampling.clone());
        let mut adapter =
            LogitsProcessorSampler::from_sampling(i as u64, sampling.clone()).unwrap();
        for step in 0..500u64 {
            let logits = tensor(&random_logits(step, 64, 2.0));
            assert_eq!(
                adapter.sample(&logits, &[]).unwrap(),
                raw.sample(&logits).unwrap(),
                "{sampling:?} step {step}"
            );
        }
    }
}

#[test]
fn new_maps_arguments_like_candle() {
    let cases: [(Option<f64>, Option<f64>); 6] = [
        (None, None),
        (None, Some(0.9)),
        (Some(1e-8), Some(0.9)),
        (Some(-1.0), None),
        (Some(0.8), None),
        (Some(0.8), Some(0.5)),
    ];
    for (i, (t, p)) in cases.into_iter().enumerate() {
        let seed = 77 + i as u64;
        let mut raw = LogitsProcessor::new(seed, t, p);
        let mut adapter = LogitsProcessorSampler::new(seed, t, p).unwrap();
        for step in 0..500u64 {
            let logits = tensor(&random_logits(step * 31 + 5, 100, 2.0));
            assert_eq!(
                adapter.sample(&logits, &[]).unwrap(),
                raw.sample(&logits).unwrap(),
                "new({t:?}, {p:?}) step {step}"
            );
        }
    }
    let greedy = LogitsProcessorSampler::new(0, Some(1e-8), None).unwrap();
    assert_eq!(greedy.sampling(), &Sampling::ArgMax);
    let top_p = LogitsProcessorSampler::new(0, Some(0.5), Some(0.9)).unwrap();
    assert_eq!(
        top_p.sampling(),
        &Sampling::TopP {
            p: 0.9,
            temperature: 0.5
        }
    );
}

#[test]
fn masked_logits_match_candle_and_are_never_drawn() {
    for (i, sampling) in seeded_variants().into_iter().enumerate() {
        let seed = 500 + i as u64;
        let mut raw = LogitsProcessor::from_sampling(seed, sampling.clone());
        let mut adapter = LogitsProcessorSampler::from_sampling(seed, sampling.clone()).unwrap();
        for step in 0..1000u64 {
            let mut values = random_logits(step, 50, 2.0);
            // Mask every third token, the likely ones included.
            for v in values.iter_mut().step_by(3) {
                *v = f32::NEG_INFINITY;
            }
            let logits = tensor(&values);
            let got = adapter.sample(&logits, &[]).unwrap();
            assert_eq!(got, raw.sample(&logits).unwrap(), "{sampling:?}");
            assert_ne!(got % 3, 0, "{sampling:?} drew a masked token");
        }
    }
}

#[test]
fn row_vectors_and_the_slice_path_draw_the_same_tokens() {
    let sampling = Sampling::TopKThenTopP {
        k: 40,
        p: 0.9,
        temperature: 1.0,
    };
    let mut raw = LogitsProcessor::from_sampling(3, sampling.clone());
    let mut as_row = LogitsProcessorSampler::from_sampling(3, sampling.clone()).unwrap();
    let mut as_slice = LogitsProcessorSampler::from_sampling(3, sampling).unwrap();
    for step in 0..1000u64 {
        let values = random_logits(step, 300, 3.0);
        let logits = tensor(&values);
        let expected = raw.sample(&logits).unwrap();
        let row = logits.unsqueeze(0).unwrap();
        assert_eq!(as_row.sample(&row, &[]).unwrap(), expected);
        assert_eq!(as_slice.sample_slice(&values, &[]).unwrap(), expected);
    }
}

#[test]
fn f16_bf16_and_f64_logits_sample_like_their_f32_upcast() {
    for dtype in [DType::F16, DType::BF16, DType::F64] {
        let sampling = Sampling::TopK {
            k: 10,
            temperature: 1.0,
        };
        let mut on_dtype = LogitsProcessorSampler::from_sampling(9, sampling.clone()).unwrap();
        let mut on_upcast = LogitsProcessor::from_sampling(9, sampling);
        for step in 0..500u64 {
            let logits = tensor(&random_logits(step, 128, 3.0))
                .to_dtype(dtype)
                .unwrap();
            let upcast = logits.to_dtype(DType::F32).unwrap();
            assert_eq!(
                on_dtype.sample(&logits, &[]).unwrap(),
                on_upcast.sample(&upcast).unwrap(),
                "{dtype:?}"
            );
        }
    }
}

#[test]
fn repetition_penalty_matches_candle_apply_repeat_penalty() {
    for (i, sampling) in seeded_variants().into_iter().enumerate() {
        let seed = 40 + i as u64;
        let mut raw = LogitsProcessor::from_sampling(seed, sampling.clone());
        let mut decorated = LogitsProcessorSampler::from_sampling(seed, sampling.clone())
            .unwrap()
            .with_repetition_penalty(1.7, 16)
            .unwrap()
            .boxed();
        let mut history: Vec<u32> = Vec::new();
        for step in 0..1500u64 {
            let logits = tensor(&random_logits(step + 9000, 64, 2.0));
            let window = &history[history.len().saturating_sub(16)..];
            let penalised = apply_repeat_penalty(&logits, 1.7, window).unwrap();
            let expected = raw.sample(&penalised).unwrap();
            let got = decorated.sample(&logits, &history).unwrap();
            assert_eq!(got, expected, "{sampling:?} step {step}");
            history.push(got);
        }
    }
}

#[test]
fn default_config_matches_the_equivalent_candle_pipeline() {
    let config = SamplingConfig::default();
    let mut sampler = config.build().unwrap();
    let mut raw = LogitsProcessor::from_sampling(config.seed, config.sampling.clone());
    let penalty = config.repetition_penalty.unwrap();
    let mut history = Vec::new();
    for step in 0..1000u64 {
        let logits = tensor(&random_logits(step, 1000, 4.0));
        let window = &history[history.len().saturating_sub(config.repetition_context_size)..];
        let expected = raw
            .sample(&apply_repeat_penalty(&logits, penalty, window).unwrap())
            .unwrap();
        let got = sampler.sample(&logits, &history).unwrap();
        assert_eq!(got, expected, "step {step}");
        history.push(got);
    }
}

#[test]
fn non_contiguous_logits_match() {
    let sampling = Sampling::All { temperature: 1.0 };
    let mut raw = LogitsProcessor::from_sampling(5, sampling.clone());
    let mut adapter = LogitsProcessorSampler::from_sampling(5, sampling).unwrap();
    for step in 0..300u64 {
        let grid = Tensor::from_vec(random_logits(step, 200, 3.0), (100, 2), &Device::Cpu).unwrap();
        let column = grid.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
        assert!(!column.is_contiguous());
        assert_eq!(
            adapter.sample(&column, &[]).unwrap(),
            raw.sample(&column).unwrap()
        );
    }
}
