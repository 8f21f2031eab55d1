//! Reset, threads, presets, the penalty's exact arithmetic and user-defined samplers.

mod common;

use candle_core::Tensor;
use common::{random_logits, seeded_variants, tensor};
use kyutai_sampling::{
    BoxSampler, LogitsProcessorSampler, RepetitionPenalty, Sampler, SamplerExt, Sampling,
    SamplingConfig, SamplingError,
};

fn draw(sampler: &mut dyn Sampler, n: u64) -> Vec<u32> {
    let mut history = Vec::new();
    for step in 0..n {
        let logits = tensor(&random_logits(step, 500, 3.0));
        let token = sampler.sample(&logits, &history).unwrap();
        history.push(token);
    }
    history
}

#[test]
fn reset_replays_the_stream() {
    for sampling in seeded_variants() {
        let mut plain = LogitsProcessorSampler::from_sampling(11, sampling.clone()).unwrap();
        let first = draw(&mut plain, 200);
        plain.reset();
        assert_eq!(draw(&mut plain, 200), first, "{sampling:?}");

        let mut boxed: BoxSampler = LogitsProcessorSampler::from_sampling(11, sampling.clone())
            .unwrap()
            .with_repetition_penalty(1.2, 32)
            .unwrap()
            .boxed();
        let first = draw(&mut boxed, 200);
        // Drawing more moves the stream on; reset brings it back.
        let _ = draw(&mut boxed, 17);
        boxed.reset();
        assert_eq!(draw(&mut boxed, 200), first, "{sampling:?} + penalty");
    }
}

#[test]
fn different_seeds_give_different_streams() {
    let sampling = Sampling::All { temperature: 1.0 };
    let a = draw(
        &mut LogitsProcessorSampler::from_sampling(1, sampling.clone()).unwrap(),
        100,
    );
    let b = draw(
        &mut LogitsProcessorSampler::from_sampling(2, sampling).unwrap(),
        100,
    );
    assert_ne!(a, b);
}

#[test]
fn a_box_sampler_moves_into_another_thread() {
    let mut sampler: BoxSampler = SamplingConfig::default().build().unwrap();
    let expected = draw(&mut sampler, 50);
    sampler.reset();
    let handle = std::thread::spawn(move || draw(&mut sampler, 50));
    assert_eq!(handle.join().unwrap(), expected);
}

#[test]
fn every_variant_through_the_config_returns_a_valid_id() {
    let variants = [
        Sampling::ArgMax,
        Sampling::All { temperature: 0.7 },
        Sampling::TopK {
            k: 50,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: 0.9,
            temperature: 1.0,
        },
        Sampling::TopKThenTopP {
            k: 50,
            p: 0.9,
            temperature: 1.0,
        },
        Sampling::GumbelSoftmax { temperature: 1.0 },
    ];
    for sampling in variants {
        let config = SamplingConfig {
            sampling: sampling.clone(),
            repetition_penalty: Some(1.1),
            repetition_context_size: 64,
            seed: 3,
        };
        let mut sampler = config.build().unwrap();
        let mut history: Vec<u32> = Vec::new();
        for step in 0..200u64 {
            let mut values = random_logits(step, 1000, 4.0);
            values[999] = f32::NEG_INFINITY;
            let token = sampler.sample(&tensor(&values), &history).unwrap();
            assert!(token < 999, "{sampling:?} returned {token}");
            history.push(token);
        }
    }
}

#[test]
fn presets() {
    let default = SamplingConfig::default();
    assert_eq!(
        default.sampling,
        Sampling::TopKThenTopP {
            k: 50,
            p: 0.9,
            temperature: 1.0
        }
    );
    assert_eq!(default.repetition_penalty, Some(1.1));
    assert_eq!(default.repetition_context_size, 64);
    assert_eq!(default.seed, 42);

    let greedy = SamplingConfig::greedy();
    assert_eq!(greedy.sampling, Sampling::ArgMax);
    assert_eq!(greedy.repetition_penalty, None);
    let logits = tensor(&[0.1, 4.0, 2.0]);
    assert_eq!(greedy.build().unwrap().sample(&logits, &[1, 1]).unwrap(), 1);

    let creative = SamplingConfig::creative();
    assert_eq!(
        creative.sampling,
        Sampling::TopP {
            p: 0.95,
            temperature: 1.2
        }
    );
    assert_eq!(creative.repetition_penalty, Some(1.05));
    assert_eq!(creative.repetition_context_size, 128);
    // Random seeds: two presets agree on everything but the seed (a clash has odds 2^-64).
    assert_ne!(SamplingConfig::creative().seed, creative.seed);
    for config in [default, greedy, creative] {
        config.validate().unwrap();
    }
}

/// Records the values the inner sampler is given.
#[derive(Default)]
struct Recorder {
    seen: Vec<f32>,
    via_tensor: bool,
}

impl Sampler for Recorder {
    fn sample(&mut self, logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
        self.seen = logits.flatten_all()?.to_vec1::<f32>()?;
        self.via_tensor = true;
        Ok(0)
    }
    fn sample_slice(&mut self, logits: &[f32], _history: &[u32]) -> Result<u32, SamplingError> {
        self.seen = logits.to_vec();
        self.via_tensor = false;
        Ok(0)
    }
}

fn penalised(penalty: f32, context: usize, logits: &[f32], history: &[u32]) -> Vec<f32> {
    let mut s = RepetitionPenalty::new(Recorder::default(), penalty, context).unwrap();
    s.sample(&tensor(logits), history).unwrap();
    s.into_inner().seen
}

#[test]
fn penalty_arithmetic() {
    let base = [2.0, -2.0, 0.0, 1.0, f32::NEG_INFINITY, 3.0];
    // Positive divided, negative multiplied, zero and -inf unchanged, token 5 not in history.
    assert_eq!(
        penalised(2.0, 64, &base, &[0, 1, 2, 4]),
        [1.0, -4.0, 0.0, 1.0, f32::NEG_INFINITY, 3.0]
    );
    // Each distinct id once.
    assert_eq!(
        penalised(2.0, 64, &base, &[0, 0, 0, 1, 1]),
        [1.0, -4.0, 0.0, 1.0, f32::NEG_INFINITY, 3.0]
    );
    // Only the last `context` entries count: 0 and 1 fall outside a window of 2.
    assert_eq!(
        penalised(2.0, 2, &base, &[0, 1, 3, 5]),
        [2.0, -2.0, 0.0, 0.5, f32::NEG_INFINITY, 1.5]
    );
    // Ids at or beyond the vocabulary are skipped.
    assert_eq!(
        penalised(2.0, 64, &base, &[6, 99, u32::MAX, 3]),
        [2.0, -2.0, 0.0, 0.5, f32::NEG_INFINITY, 3.0]
    );
    // A penalty below 1 encourages repetition.
    assert_eq!(penalised(0.5, 64, &base, &[0, 1])[..2], [4.0, -1.0]);
}

#[test]
fn penalty_one_is_an_exact_identity() {
    let values = random_logits(3, 100, 5.0);
    let history: Vec<u32> = (0..100).collect();
    let mut s = RepetitionPenalty::new(Recorder::default(), 1.0, 64).unwrap();
    s.sample(&tensor(&values), &history).unwrap();
    let inner = s.get_ref();
    assert!(inner.via_tensor, "penalty 1.0 hands the tensor through");
    assert_eq!(
        inner.seen.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        values.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn penalty_reads_row_vectors_and_other_dtypes() {
    let row = tensor(&[2.0, -2.0, 4.0]).unsqueeze(0).unwrap();
    assert_eq!(penalised_tensor(&row, &[0, 1, 2]), [1.0, -4.0, 2.0]);
    let half = row.to_dtype(candle_core::DType::BF16).unwrap();
    assert_eq!(penalised_tensor(&half, &[0, 1, 2]), [1.0, -4.0, 2.0]);
}

fn penalised_tensor(logits: &Tensor, history: &[u32]) -> Vec<f32> {
    let mut s = RepetitionPenalty::new(Recorder::default(), 2.0, 8).unwrap();
    s.sample(logits, history).unwrap();
    s.into_inner().seen
}

/// A user's own sampler: always the token with the smallest finite logit.
struct Contrarian;

impl Sampler for Contrarian {
    fn sample(&mut self, logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
        let values = logits.flatten_all()?.to_vec1::<f32>()?;
        kyutai_sampling::validate_logits(&values)?;
        let (index, _) = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
            .ok_or(SamplingError::AllMasked)?;
        Ok(index as u32)
    }
}

fn generate(sampler: &mut dyn Sampler, logits: &Tensor, steps: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for _ in 0..steps {
        let token = sampler.sample(logits, &out).unwrap();
        out.push(token);
    }
    out
}

#[test]
fn a_custom_sampler_plugs_in_and_composes() {
    let logits = tensor(&[5.0, -1.0, 2.0, -3.0, f32::NEG_INFINITY]);
    let mut plain: BoxSampler = Contrarian.boxed();
    assert_eq!(generate(&mut plain, &logits, 3), [3, 3, 3]);
    // Penalty 4 makes a seen negative logit smaller still, so the contrarian keeps token 3,
    // while a penalty of 0.1 lifts it to -0.3 and the contrarian moves on to token 1.
    let mut keen: BoxSampler = Contrarian.with_repetition_penalty(4.0, 8).unwrap().boxed();
    assert_eq!(generate(&mut keen, &logits, 3), [3, 3, 3]);
    let mut shy: BoxSampler = Contrarian.with_repetition_penalty(0.1, 8).unwrap().boxed();
    assert_eq!(generate(&mut shy, &logits, 2), [3, 1]);
    // Swapping the sampler in the same loop changes the output.
    let mut greedy = SamplingConfig::greedy().build().unwrap();
    assert_eq!(generate(&mut greedy, &logits, 2), [0, 0]);
    // `&mut S` is a sampler too.
    fn first<S: Sampler>(mut sampler: S, logits: &Tensor) -> u32 {
        sampler.sample(logits, &[]).unwrap()
    }
    let mut contrarian = Contrarian;
    assert_eq!(first(&mut contrarian, &logits), 3);
    let as_dyn: &mut dyn Sampler = &mut contrarian;
    assert_eq!(first(as_dyn, &logits), 3);
}

#[test]
fn debug_output_names_the_strategy() {
    let s = LogitsProcessorSampler::from_sampling(
        5,
        Sampling::TopK {
            k: 3,
            temperature: 1.0,
        },
    )
    .unwrap();
    let text = format!("{s:?}");
    assert!(text.contains("TopK") && text.contains("seed: 5"), "{text}");
}

#[test]
fn accessors_and_with_seed() {
    let config = SamplingConfig::default().with_seed(9);
    assert_eq!(config.seed, 9);
    assert_eq!(
        config.sampling,
        SamplingConfig::default().sampling,
        "with_seed changes only the seed"
    );
    let base = LogitsProcessorSampler::from_sampling(9, config.sampling.clone()).unwrap();
    assert_eq!(base.seed(), 9);
    let mut decorated = base.with_repetition_penalty(1.25, 12).unwrap();
    assert_eq!(decorated.penalty(), 1.25);
    assert_eq!(decorated.context_size(), 12);
    assert_eq!(decorated.get_mut().seed(), 9);
    // The same seed through the config and by hand gives the same stream.
    let mut from_config = config.build().unwrap();
    let mut by_hand = LogitsProcessorSampler::from_sampling(9, config.sampling.clone())
        .unwrap()
        .with_repetition_penalty(1.1, 64)
        .unwrap();
    assert_eq!(draw(&mut from_config, 100), draw(&mut by_hand, 100));
}

#[test]
fn candle_errors_round_trip_unchanged() {
    let original = candle_core::Error::Msg("device lost".into());
    let wrapped = SamplingError::from(original);
    let back: candle_core::Error = wrapped.into();
    assert!(matches!(back, candle_core::Error::Msg(ref m) if m == "device lost"));
}

#[test]
fn greedy_constructor_is_argmax() {
    let mut greedy = LogitsProcessorSampler::greedy();
    assert_eq!(greedy.sampling(), &Sampling::ArgMax);
    for step in 0..50 {
        let values = random_logits(step, 300, 3.0);
        let expected = values
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32;
        assert_eq!(greedy.sample(&tensor(&values), &[]).unwrap(), expected);
    }
}
