//! Properties P1-P21 of the reliability catalogue, as proptests over every sampler (the candle
//! adapter, the native engine, the repetition-penalty decorator, `SamplingConfig` and chains of
//! every convention with every stage), hostile logits (NaN, ±inf, ±3e38, subnormals, ties, all
//! masked), hostile parameters at and beyond their bounds, and histories with out-of-vocabulary
//! ids. Each property is its own test with a fixed seed (`runner(N)`), so CI replays the same
//! cases; P20 (batch = single) lives in `tests/batch.rs`.

mod chain_support;
mod native_support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::{DType, Device, Tensor};
use chain_support::{reference, State};
use kyutai_sampling::limits::{
    MAX_ADDITIVE_PENALTY, MAX_PENALTY, MAX_TEMPERATURE, MIN_PENALTY, MIN_TEMPERATURE, MIN_TOP_P,
};
use kyutai_sampling::{
    BoxSampler, Chain, ChainConfig, Convention, LogitsProcessorSampler, NativeSampler,
    RepetitionPenalty, Sampler, SamplerExt, Sampling, SamplingConfig, SamplingError,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Runners and generators.

fn runner(property: u8, cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[property; 32]),
    )
}

const CONVENTIONS: [Convention; 3] = [
    Convention::HuggingFace,
    Convention::LlamaCpp,
    Convention::Candle,
];

/// Logit values a hostile caller passes: the ordinary range, plus every edge of f32.
fn hostile_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -30.0f32..30.0,
        1 => select(vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            3e38,
            -3e38,
            f32::MAX,
            -f32::MAX,
            1e-40,
            -1e-45,
            0.0,
            -0.0,
            0.5,
            1.0,
            100.0,
        ]),
    ]
}

/// Valid logits (no NaN, no +inf; maybe every one masked), with ties and extremes.
fn valid_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -30.0f32..30.0,
        1 => (-8i32..8).prop_map(|i| i as f32 * 0.5),
        1 => select(vec![
            f32::NEG_INFINITY,
            3e38,
            -3e38,
            f32::MAX,
            -f32::MAX,
            1e-40,
            0.0,
        ]),
    ]
}

fn hostile_logits() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        9 => prop::collection::vec(hostile_value(), 1..48),
        1 => (0usize..40).prop_map(|n| vec![f32::NEG_INFINITY; n]),
    ]
}

fn valid_logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(valid_value(), 1..48)
}

/// Ordinary logits: finite, moderate, a few masked; at least one unmasked.
fn ordinary_logits(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![9 => -8.0f32..8.0, 1 => Just(f32::NEG_INFINITY)],
        1..max_len,
    )
    .prop_map(|mut v| {
        if v.iter().all(|x| *x == f32::NEG_INFINITY) {
            v[0] = 0.0;
        }
        v
    })
}

fn history(vocab: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(
        prop_oneof![8 => 0..(vocab as u32 + 4), 1 => Just(u32::MAX)],
        0..24,
    )
}

/// Temperatures, `p`s and penalties at and beyond every bound.
fn hostile_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => 0.05f64..3.0,
        2 => select(vec![
            0.0,
            -0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
            1e-50,
            1e-8,
            MIN_TEMPERATURE,
            MAX_TEMPERATURE,
            1.5e6,
            1e38,
            1e300,
            MIN_TOP_P,
            MIN_TOP_P / 2.0,
            1.0,
            1.5,
        ]),
    ]
}

fn hostile_k() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..60, 1 => select(vec![0, 1, usize::MAX])]
}

fn hostile_sampling() -> impl Strategy<Value = Sampling> {
    (0u8..6, hostile_f64(), hostile_k(), hostile_f64()).prop_map(|(kind, t, k, p)| match kind {
        0 => Sampling::ArgMax,
        1 => Sampling::All { temperature: t },
        2 => Sampling::TopK { k, temperature: t },
        3 => Sampling::TopP { p, temperature: t },
        4 => Sampling::TopKThenTopP {
            k,
            p,
            temperature: t,
        },
        _ => Sampling::GumbelSoftmax { temperature: t },
    })
}

fn pick<T: Clone>(rng: &mut ChaCha8Rng, values: &[T]) -> T {
    values[rng.random_range(0..values.len())].clone()
}

/// A chain configuration drawn from `seed`: each field left at its default half of the time,
/// otherwise chosen among valid values and (when `hostile`) values beyond its bounds.
fn chain_config(seed: u64, vocab: usize, hostile: bool) -> ChainConfig {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut c = ChainConfig {
        convention: pick(&mut r, &CONVENTIONS),
        seed: r.random(),
        ..ChainConfig::default()
    };
    let v = vocab;
    macro_rules! field {
        ($name:ident, [$($ok:expr),*], [$($bad:expr),*]) => {
            if r.random_bool(0.5) {
                let ok = vec![$($ok),*];
                let bad: Vec<_> = vec![$($bad),*];
                c.$name = if hostile && !bad.is_empty() && r.random_bool(0.15) {
                    pick(&mut r, &bad)
                } else {
                    pick(&mut r, &ok)
                };
            }
        };
    }
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let (min_t, max_t) = (MIN_TEMPERATURE as f32, MAX_TEMPERATURE as f32);
    field!(do_sample, [true, true, true, false], []);
    field!(
        temperature,
        [1.0, 0.7, 1.6, 0.0, min_t, max_t],
        [-1.0, nan, inf, 1e-30, 1e30]
    );
    field!(top_k, [0, 1, 3, 10, v, v + 5, usize::MAX], []);
    field!(top_p, [1.0, 0.9, 0.5, 0.0, 1e-30], [1.5, -0.1, nan]);
    field!(min_p, [0.0, 0.05, 0.3, 1.0], [-0.1, 1.1, nan]);
    field!(typical_p, [1.0, 0.9, 0.5, 0.01], [0.0, 1.5, nan]);
    field!(epsilon_cutoff, [0.0, 1e-4, 0.01, 0.2], [1.0, -1.0, nan]);
    field!(eta_cutoff, [0.0, 1e-4, 0.01], [1.0, nan]);
    field!(top_n_sigma, [-1.0, 0.0, 0.5, 1.0, 3.0], [nan, inf]);
    field!(xtc_probability, [0.0, 0.5, 1.0], [1.5, nan]);
    field!(xtc_threshold, [0.1, 0.3, 0.6], [-1.0, 2.0]);
    field!(dynatemp_range, [0.0, 0.5, 2.0, max_t], [-1.0, nan, 1e30]);
    field!(dynatemp_exponent, [1.0, 0.0, 2.0, 100.0], [-1.0, nan]);
    if r.random_bool(0.2) {
        field!(mirostat, [1, 2], [3, u8::MAX]);
    }
    field!(mirostat_tau, [5.0, 0.0, 1e30], [-1.0, nan]);
    field!(mirostat_eta, [0.1, 0.0, 10.0, 1e30], [-1.0, inf]);
    field!(
        repetition_penalty,
        [1.0, 1.3, 0.7, MIN_PENALTY, MAX_PENALTY],
        [0.0, -1.0, nan, 1e-40, 1e30]
    );
    let max_add = MAX_ADDITIVE_PENALTY;
    field!(
        frequency_penalty,
        [0.0, 0.5, -0.5, max_add, -max_add],
        [nan, 1e30]
    );
    field!(
        presence_penalty,
        [0.0, 0.5, -0.5, max_add, -max_add],
        [nan, -1e30]
    );
    field!(
        repeat_last_n,
        [None, Some(0), Some(3), Some(usize::MAX)],
        []
    );
    field!(dry_multiplier, [0.0, 0.8, 1e30], [-1.0, nan]);
    field!(dry_base, [1.75, 1.0, 1e30], [0.5, nan]);
    field!(dry_allowed_length, [0, 2, usize::MAX], []);
    field!(
        dry_penalty_last_n,
        [None, Some(0), Some(5), Some(usize::MAX)],
        []
    );
    field!(
        dry_sequence_breakers,
        [vec![], vec![vec![1]], vec![vec![1, 2]]],
        [vec![vec![]]]
    );
    field!(no_repeat_ngram_size, [0, 1, 2, 3, usize::MAX], []);
    field!(
        bad_words_ids,
        [
            vec![],
            vec![vec![2]],
            vec![vec![1, 2]],
            vec![vec![u32::MAX]]
        ],
        [vec![vec![]]]
    );
    field!(
        sequence_bias,
        [
            vec![],
            vec![(vec![1], 2.0)],
            vec![(vec![0, 1], f32::NEG_INFINITY)],
            vec![(vec![2], 3e38)]
        ],
        [vec![(vec![1], nan)], vec![(vec![], 1.0)]]
    );
    field!(
        suppress_tokens,
        [vec![], vec![0], vec![u32::MAX], (0..v as u32).collect()],
        []
    );
    field!(
        logit_bias,
        [
            Default::default(),
            [(0, 1.5)].into(),
            [(1, -1e30)].into(),
            [(2, 3e38)].into(),
            [(u32::MAX, 1.0)].into()
        ],
        [[(0, nan)].into(), [(0, inf)].into()]
    );
    field!(
        allowed_token_ids,
        [None, Some(vec![0, 1]), Some(vec![v as u32 + 3])],
        [Some(vec![])]
    );
    field!(eos_token_id, [vec![], vec![0], vec![u32::MAX]], []);
    if !c.eos_token_id.is_empty() {
        field!(min_length, [0, 3, usize::MAX], []);
    }
    field!(min_keep, [0, 1, 2, v + 1, usize::MAX], []);
    c
}

/// Samplers built from a `Sampling` in every way the crate offers.
fn sampling_samplers(
    seed: u64,
    sampling: &Sampling,
    penalty: f32,
) -> Vec<(String, Result<BoxSampler, SamplingError>)> {
    let boxed = |r: Result<BoxSampler, SamplingError>| r;
    let adapter = LogitsProcessorSampler::from_sampling(seed, sampling.clone());
    let native = NativeSampler::from_sampling(seed, sampling.clone());
    let config = SamplingConfig {
        seed,
        sampling: sampling.clone(),
        repetition_penalty: Some(penalty),
        repetition_context_size: 8,
    };
    vec![
        ("adapter".into(), adapter.map(|s| Box::new(s) as BoxSampler)),
        ("native".into(), boxed(native.map(|s| Box::new(s) as _))),
        (
            "native+penalty".into(),
            NativeSampler::from_sampling(seed, sampling.clone()).and_then(|s| {
                s.with_repetition_penalty(penalty, 8)
                    .map(|s| Box::new(s) as BoxSampler)
            }),
        ),
        ("config".into(), config.build()),
        (
            "candle chain".into(),
            config.build_chain().map(|c| Box::new(c) as BoxSampler),
        ),
    ]
}

fn hostile_penalty() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => 0.5f32..2.0,
        1 => select(vec![1.0, MIN_PENALTY, MAX_PENALTY, 0.0, -1.0, f32::NAN, f32::INFINITY, 1e-40, 1e30]),
    ]
}

fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_slice(values, values.len(), &Device::Cpu).unwrap()
}

/// The tensors a hostile caller passes for `values`: the plain vector, `[1, V]`, half precision,
/// integer dtypes, `[2, V]`, a scalar and an empty vector.
fn hostile_tensors(values: &[f32]) -> Vec<Tensor> {
    let t = tensor(values);
    let mut out = vec![
        t.clone(),
        t.unsqueeze(0).unwrap(),
        t.to_dtype(DType::F16).unwrap(),
        t.to_dtype(DType::BF16).unwrap(),
        t.to_dtype(DType::F64).unwrap(),
        Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap(),
        Tensor::new(&[1i64, 2], &Device::Cpu).unwrap(),
        Tensor::new(2.5f32, &Device::Cpu).unwrap(),
        Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((0, 5), DType::F32, &Device::Cpu).unwrap(),
    ];
    if let Ok(two) = Tensor::stack(&[&t, &t], 0) {
        out.push(two);
    }
    out
}

/// Runs `f` and turns a panic into a test failure naming `what`.
fn no_panic<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{what}: panicked: {msg}"))
    })
}

/// An error from candle itself is opaque to the caller: every bad input must get one of the
/// crate's own variants.
fn typed<T>(what: &str, r: &Result<T, SamplingError>) -> Result<(), TestCaseError> {
    if let Err(SamplingError::Candle(e)) = r {
        return Err(TestCaseError::fail(format!(
            "{what}: opaque candle error {e}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// P1-P3: no panic, ids in range, never a token of probability 0.

/// One call of every entry point on `sampler`, checked for P1-P3. `allowed(id)` says whether the
/// id may be drawn.
fn exercise(
    what: &str,
    sampler: &mut BoxSampler,
    logits: &[f32],
    history: &[u32],
    edits: &[(u32, f32)],
) -> Result<(), TestCaseError> {
    let vocab = logits.len();
    let check = |entry: &str, r: Result<u32, SamplingError>, effective: &[f32]| {
        typed(&format!("{what} {entry}"), &r)?;
        if let Ok(id) = r {
            prop_assert!(
                (id as usize) < vocab,
                "{what} {entry}: id {id} >= vocab {vocab}"
            );
            let x = effective[id as usize];
            prop_assert!(
                x > f32::NEG_INFINITY,
                "{what} {entry}: drew masked token {id} from {effective:?}"
            );
        }
        Ok(())
    };
    let r = no_panic(what, || sampler.sample_slice(logits, history))?;
    check("sample_slice", r, logits)?;
    for t in hostile_tensors(logits) {
        let r = no_panic(what, || sampler.sample(&t, history))?;
        typed(&format!("{what} sample {:?} {:?}", t.dtype(), t.dims()), &r)?;
        if let Ok(id) = r {
            prop_assert!((id as usize) < vocab.max(1), "{what}: id {id} from {t:?}");
        }
    }
    let mut effective = logits.to_vec();
    for &(token, x) in edits {
        if let Some(slot) = effective.get_mut(token as usize) {
            *slot = x;
        }
    }
    let r = no_panic(what, || sampler.sample_edited(logits, edits, history))?;
    check("sample_edited", r, &effective)?;
    no_panic(what, || sampler.reset())?;
    Ok(())
}

fn edits(vocab: usize) -> impl Strategy<Value = Vec<(u32, f32)>> {
    prop::collection::vec((0..(vocab as u32 + 3), hostile_value()), 0..4)
}

#[test]
fn p1_to_p3_samplers_never_panic_and_never_draw_a_masked_token() {
    let case = (
        hostile_logits(),
        hostile_sampling(),
        hostile_penalty(),
        any::<u64>(),
    )
        .prop_flat_map(|(l, s, p, seed)| {
            let v = l.len();
            (Just(l), Just(s), Just(p), Just(seed), history(v), edits(v))
        });
    runner(1, 1024)
        .run(
            &case,
            |(logits, sampling, penalty, seed, history, edits)| {
                for (name, sampler) in
                    no_panic("build", || sampling_samplers(seed, &sampling, penalty))?
                {
                    typed(&name, &sampler)?;
                    let Ok(mut sampler) = sampler else { continue };
                    exercise(
                        &format!("{name} {sampling:?} penalty {penalty}"),
                        &mut sampler,
                        &logits,
                        &history,
                        &edits,
                    )?;
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn p1_to_p3_chains_never_panic_and_never_draw_a_token_of_probability_zero() {
    let case =
        (hostile_logits(), any::<u64>(), any::<bool>()).prop_flat_map(|(l, seed, hostile)| {
            let v = l.len();
            (Just(l), Just(seed), Just(hostile), history(v), edits(v))
        });
    runner(2, 2048)
        .run(&case, |(logits, seed, hostile, history, edits)| {
            let config = chain_config(seed, logits.len(), hostile);
            let built = no_panic("build", || config.build())?;
            typed("build", &built)?;
            let Ok(chain) = built else { return Ok(()) };
            // P3 on chains: the drawn token has positive probability in the distribution the
            // chain reports for the same state (a clone sees the same XTC coin).
            let mut twin = chain.clone();
            let probs = no_panic("probabilities", || twin.probabilities(&logits, &history))?;
            typed("probabilities", &probs)?;
            let mut draw = chain.clone();
            let r = no_panic("sample_slice", || draw.sample_slice(&logits, &history))?;
            match (&probs, &r) {
                (Ok(p), Ok(id)) => {
                    prop_assert_eq!(p.len(), logits.len());
                    prop_assert!(
                        p[*id as usize] > 0.0,
                        "{config:?}: drew {id} of probability 0 from {logits:?}"
                    );
                    let total: f64 = p.iter().map(|&x| f64::from(x)).sum();
                    prop_assert!(
                        (total - 1.0).abs() < 1e-4,
                        "{config:?}: probabilities sum to {total}"
                    );
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                _ => prop_assert!(
                    false,
                    "{config:?}: probabilities {probs:?} but sample {r:?}"
                ),
            }
            let mut boxed: BoxSampler = Box::new(chain);
            exercise(
                &format!("{config:?}"),
                &mut boxed,
                &logits,
                &history,
                &edits,
            )
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// P4-P6: each truncation's membership rule, on every engine that has it.

/// The probabilities of softmax(logits / t) in f64.
fn softmax_at(logits: &[f32], t: f64) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = logits
        .iter()
        .map(|&x| ((f64::from(x) - f64::from(max)) / t).exp())
        .collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

fn kth_largest(logits: &[f32], k: usize) -> f32 {
    let mut sorted: Vec<f32> = logits.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[k.min(sorted.len()) - 1]
}

/// Draws `n` tokens from `sampler` on `logits` (valid, so every draw succeeds).
fn draws(sampler: &mut dyn Sampler, logits: &[f32], n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| sampler.sample_slice(logits, &[]).unwrap())
        .collect()
}

fn chain(config: ChainConfig) -> Chain {
    config.build().unwrap()
}

/// `got` and `want` agree entry by entry within 1e-6 (the L1 tolerance of the catalogue): two
/// equal distributions computed along different code paths may differ in the last bits.
fn close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-6)
}

#[test]
fn p4_top_k_keeps_tokens_at_or_above_the_kth_largest_logit() {
    let case = (ordinary_logits(40), 1usize..12, 0.3f64..2.0, any::<u64>());
    runner(4, 256)
        .run(&case, |(logits, k, t, seed)| {
            let floor = kth_largest(&logits, k);
            let mut samplers: Vec<(String, BoxSampler)> = vec![
                (
                    "adapter".into(),
                    Box::new(
                        LogitsProcessorSampler::from_sampling(
                            seed,
                            Sampling::TopK { k, temperature: t },
                        )
                        .unwrap(),
                    ),
                ),
                (
                    "native".into(),
                    Box::new(
                        NativeSampler::from_sampling(seed, Sampling::TopK { k, temperature: t })
                            .unwrap(),
                    ),
                ),
                (
                    "native k+p".into(),
                    Box::new(
                        NativeSampler::from_sampling(
                            seed,
                            Sampling::TopKThenTopP {
                                k,
                                p: 0.9,
                                temperature: t,
                            },
                        )
                        .unwrap(),
                    ),
                ),
            ];
            for convention in CONVENTIONS {
                let c = ChainConfig {
                    convention,
                    seed,
                    top_k: k,
                    temperature: t as f32,
                    top_p: 0.95,
                    min_p: 0.01,
                    ..ChainConfig::default()
                };
                samplers.push((format!("{convention:?}"), Box::new(chain(c))));
            }
            for (name, mut s) in samplers {
                for id in draws(&mut *s, &logits, 40) {
                    prop_assert!(
                        logits[id as usize] >= floor,
                        "{name}: drew {id} below the {k}-th logit {floor}: {logits:?}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p5_top_p_draws_inside_the_nucleus() {
    let case = (
        ordinary_logits(40),
        0.05f64..0.99,
        0.3f64..2.0,
        any::<u64>(),
    );
    runner(5, 256)
        .run(&case, |(logits, p, t, seed)| {
            // The mass strictly more likely than the drawn token is below p (tie-agnostic).
            let check = |name: &str, probs: &[f64], ids: &[u32]| -> Result<(), TestCaseError> {
                for &id in ids {
                    let above: f64 = probs.iter().filter(|&&q| q > probs[id as usize]).sum();
                    prop_assert!(
                        above < p + 1e-6,
                        "{name}: token {id} has {above} above it, p {p}"
                    );
                }
                Ok(())
            };
            let at_t = softmax_at(&logits, t);
            let sampling = Sampling::TopP { p, temperature: t };
            let mut adapter =
                LogitsProcessorSampler::from_sampling(seed, sampling.clone()).unwrap();
            check("adapter", &at_t, &draws(&mut adapter, &logits, 40))?;
            let mut native = NativeSampler::from_sampling(seed, sampling).unwrap();
            check("native", &at_t, &draws(&mut native, &logits, 40))?;
            for convention in CONVENTIONS {
                let c = ChainConfig {
                    convention,
                    seed,
                    top_p: p as f32,
                    temperature: t as f32,
                    ..ChainConfig::default()
                };
                // llama.cpp applies temperature last: its nucleus is measured at T = 1.
                let probs = if convention == Convention::LlamaCpp {
                    softmax_at(&logits, 1.0)
                } else {
                    softmax_at(&logits, f64::from(t as f32))
                };
                check(
                    &format!("{convention:?}"),
                    &probs,
                    &draws(&mut chain(c), &logits, 40),
                )?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p6_min_p_draws_tokens_at_least_min_p_times_the_most_likely() {
    let case = (ordinary_logits(40), 0.01f32..1.0, 0.3f32..2.0, any::<u64>());
    runner(6, 256)
        .run(&case, |(logits, min_p, t, seed)| {
            for convention in CONVENTIONS {
                let c = ChainConfig {
                    convention,
                    seed,
                    min_p,
                    temperature: t,
                    ..ChainConfig::default()
                };
                let probs = if convention == Convention::LlamaCpp {
                    softmax_at(&logits, 1.0)
                } else {
                    softmax_at(&logits, f64::from(t))
                };
                let max = probs.iter().copied().fold(0.0, f64::max);
                for id in draws(&mut chain(c), &logits, 40) {
                    let q = probs[id as usize];
                    prop_assert!(
                        q >= f64::from(min_p) * max - 1e-7,
                        "{convention:?}: token {id} of {q} < {min_p} x {max}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// P7-P9: greedy agreement and neutral parameters.

#[test]
fn p7_every_greedy_limit_returns_the_argmax() {
    let case = (ordinary_logits(48), any::<u64>(), 0usize..48);
    runner(7, 256)
        .run(&case, |(mut logits, seed, at)| {
            // A unique maximum with a gap of at least 1e-3 over the rest.
            let at = at % logits.len();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            logits[at] = max + 1e-2;
            let want = at as u32;
            let mut samplers: Vec<(String, BoxSampler)> = vec![
                ("greedy".into(), kyutai_sampling::greedy()),
                (
                    "native argmax".into(),
                    Box::new(NativeSampler::from_sampling(seed, Sampling::ArgMax).unwrap()),
                ),
            ];
            for sampling in [
                Sampling::TopK {
                    k: 1,
                    temperature: 1.0,
                },
                Sampling::TopP {
                    p: MIN_TOP_P,
                    temperature: 1.0,
                },
                Sampling::TopP {
                    p: 1e-9,
                    temperature: 1.0,
                },
                Sampling::All {
                    temperature: MIN_TEMPERATURE,
                },
                Sampling::TopKThenTopP {
                    k: 1,
                    p: 0.5,
                    temperature: 1.0,
                },
            ] {
                samplers.push((
                    format!("adapter {sampling:?}"),
                    Box::new(
                        LogitsProcessorSampler::from_sampling(seed, sampling.clone()).unwrap(),
                    ),
                ));
                samplers.push((
                    format!("native {sampling:?}"),
                    Box::new(NativeSampler::from_sampling(seed, sampling).unwrap()),
                ));
            }
            for convention in CONVENTIONS {
                for c in [
                    ChainConfig {
                        do_sample: false,
                        ..ChainConfig::default()
                    },
                    ChainConfig {
                        top_k: 1,
                        ..ChainConfig::default()
                    },
                    ChainConfig {
                        top_p: 1e-9,
                        ..ChainConfig::default()
                    },
                    ChainConfig {
                        min_p: 1.0,
                        ..ChainConfig::default()
                    },
                    ChainConfig {
                        temperature: MIN_TEMPERATURE as f32,
                        ..ChainConfig::default()
                    },
                ] {
                    let c = ChainConfig {
                        convention,
                        seed,
                        ..c
                    };
                    samplers.push((format!("{c:?}"), Box::new(chain(c))));
                }
            }
            for (name, mut s) in samplers {
                for id in draws(&mut *s, &logits, 20) {
                    prop_assert_eq!(id, want, "{}", name);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p8_neutral_parameters_leave_the_distribution_unchanged() {
    let case = (ordinary_logits(40), any::<u64>(), 0.5f32..1.5);
    runner(8, 128)
        .run(&case, |(logits, seed, t)| {
            let v = logits.len();
            for convention in CONVENTIONS {
                let base = ChainConfig {
                    convention,
                    seed,
                    temperature: t,
                    ..ChainConfig::default()
                };
                let want = chain(base.clone()).probabilities(&logits, &[]).unwrap();
                for neutral in [
                    ChainConfig {
                        top_k: v,
                        ..base.clone()
                    },
                    ChainConfig {
                        top_k: v + 7,
                        ..base.clone()
                    },
                    ChainConfig {
                        top_p: 1.0,
                        ..base.clone()
                    },
                    ChainConfig {
                        min_p: 0.0,
                        ..base.clone()
                    },
                    ChainConfig {
                        typical_p: 1.0,
                        ..base.clone()
                    },
                    ChainConfig {
                        repetition_penalty: 1.0,
                        repeat_last_n: Some(4),
                        ..base.clone()
                    },
                ] {
                    let got = chain(neutral.clone())
                        .probabilities(&logits, &[3, 1])
                        .unwrap();
                    prop_assert!(close(&got, &want), "{neutral:?}: {got:?} vs {want:?}");
                }
                // Temperature 1 is the identity: the chain at T = 1 draws softmax(logits).
                let one = chain(ChainConfig {
                    temperature: 1.0,
                    ..base.clone()
                })
                .probabilities(&logits, &[])
                .unwrap();
                for (g, w) in one.iter().zip(softmax_at(&logits, 1.0)) {
                    prop_assert!(
                        (f64::from(*g) - w).abs() < 1e-6,
                        "{convention:?}: {g} vs {w}"
                    );
                }
            }
            // The native engine: top-k of at least V draws the same stream as no top-k.
            let mut all = NativeSampler::from_sampling(
                seed,
                Sampling::All {
                    temperature: f64::from(t),
                },
            )
            .unwrap();
            let mut top = NativeSampler::from_sampling(
                seed,
                Sampling::TopK {
                    k: v + 3,
                    temperature: f64::from(t),
                },
            )
            .unwrap();
            prop_assert_eq!(draws(&mut all, &logits, 30), draws(&mut top, &logits, 30));
            Ok(())
        })
        .unwrap();
}

/// The logits and the edits a decorator handed its inner sampler.
type Handed = (Vec<f32>, Vec<(u32, f32)>);

/// A sampler that records what a decorator hands it.
#[derive(Default)]
struct Recorder {
    seen: Vec<Handed>,
}

impl Sampler for Recorder {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        let values = logits.to_vec1::<f32>()?;
        self.sample_slice(&values, history)
    }
    fn sample_slice(&mut self, logits: &[f32], _history: &[u32]) -> Result<u32, SamplingError> {
        self.seen.push((logits.to_vec(), Vec::new()));
        Ok(0)
    }
    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        _history: &[u32],
    ) -> Result<u32, SamplingError> {
        self.seen.push((logits.to_vec(), edits.to_vec()));
        Ok(0)
    }
}

/// The logits the inner sampler effectively sees through `RepetitionPenalty(penalty, context)`.
fn penalised(logits: &[f32], history: &[u32], penalty: f32, context: usize) -> Vec<f32> {
    let mut d = RepetitionPenalty::new(Recorder::default(), penalty, context).unwrap();
    d.sample(&tensor(logits), history).unwrap();
    let Some((mut values, edits)) = d.into_inner().seen.pop() else {
        panic!("the decorator did not call its inner sampler");
    };
    for (token, x) in edits {
        values[token as usize] = x;
    }
    values
}

#[test]
fn p9_a_penalty_of_one_or_an_empty_context_is_the_identity() {
    let case = (valid_logits(), any::<u64>()).prop_flat_map(|(l, seed)| {
        let v = l.len();
        (
            Just(l),
            Just(seed),
            history(v),
            0usize..30,
            hostile_penalty(),
        )
    });
    runner(9, 160)
        .run(&case, |(logits, seed, history, context, penalty)| {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(
                bits(&penalised(&logits, &history, 1.0, context)),
                bits(&logits)
            );
            if (MIN_PENALTY..=MAX_PENALTY).contains(&penalty) {
                prop_assert_eq!(
                    bits(&penalised(&logits, &[], penalty, context)),
                    bits(&logits)
                );
                prop_assert_eq!(
                    bits(&penalised(&logits, &history, penalty, 0)),
                    bits(&logits)
                );
            }
            // Streams: a penalty of 1 draws exactly the inner sampler's tokens.
            if logits.iter().any(|x| x.is_finite()) {
                let sampling = Sampling::All { temperature: 0.8 };
                let mut plain = NativeSampler::from_sampling(seed, sampling.clone()).unwrap();
                let mut one = NativeSampler::from_sampling(seed, sampling)
                    .unwrap()
                    .with_repetition_penalty(1.0, context)
                    .unwrap();
                for _ in 0..10 {
                    prop_assert_eq!(
                        plain.sample_slice(&logits, &history).unwrap(),
                        one.sample_slice(&logits, &history).unwrap()
                    );
                }
                for convention in CONVENTIONS {
                    let base = ChainConfig {
                        convention,
                        seed,
                        ..ChainConfig::default()
                    };
                    let want = chain(base.clone())
                        .probabilities(&logits, &history)
                        .unwrap();
                    let got = chain(ChainConfig {
                        repetition_penalty: 1.0,
                        repeat_last_n: Some(context),
                        ..base.clone()
                    })
                    .probabilities(&logits, &history)
                    .unwrap();
                    prop_assert_eq!(got, want.clone());
                    let empty = chain(ChainConfig {
                        repetition_penalty: 1.5,
                        ..base
                    })
                    .probabilities(&logits, &[])
                    .unwrap();
                    prop_assert!(close(&empty, &want), "{empty:?} vs {want:?}");
                }
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// P10-P12: the penalty's rule, its indifference to duplicates and order, its monotonicity.

#[test]
fn p10_the_penalty_changes_only_the_context_tokens_in_the_right_direction() {
    let case = valid_logits().prop_flat_map(|l| {
        let v = l.len();
        (
            Just(l),
            history(v),
            1usize..30,
            prop_oneof![
                0.2f32..0.95,
                1.05f32..5.0,
                select(vec![MIN_PENALTY, MAX_PENALTY])
            ],
        )
    });
    runner(10, 512)
        .run(&case, |(logits, history, context, penalty)| {
            let out = penalised(&logits, &history, penalty, context);
            let window = &history[history.len().saturating_sub(context)..];
            for (i, (&x, &y)) in logits.iter().zip(&out).enumerate() {
                if !window.contains(&(i as u32)) {
                    prop_assert_eq!(
                        x.to_bits(),
                        y.to_bits(),
                        "token {} outside the window changed",
                        i
                    );
                    continue;
                }
                prop_assert!(
                    y.is_finite() || (x == f32::NEG_INFINITY && y == x),
                    "token {i}: {x} -> {y}"
                );
                let strict =
                    |a: f32, b: f32| a < b || (a == b && (a.abs() == f32::MAX || a.abs() < 1e-30));
                if x == 0.0 || x == f32::NEG_INFINITY {
                    prop_assert_eq!(x.to_bits(), y.to_bits());
                } else if penalty > 1.0 {
                    prop_assert!(strict(y, x), "token {i}: {x} -> {y} under {penalty}");
                } else {
                    prop_assert!(strict(x, y), "token {i}: {x} -> {y} under {penalty}");
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p11_duplicates_and_order_of_the_context_do_not_matter() {
    let case = (ordinary_logits(40), any::<u64>()).prop_flat_map(|(l, seed)| {
        let v = l.len();
        (Just(l), Just(seed), history(v), 0.3f32..3.0)
    });
    runner(11, 160)
        .run(&case, |(logits, seed, history, penalty)| {
            let mut unique = history.clone();
            unique.sort_unstable();
            unique.dedup();
            let mut shuffled = history.clone();
            shuffled.reverse();
            shuffled.rotate_left(history.len() / 3);
            let tripled: Vec<u32> = history.iter().flat_map(|&t| [t, t, t]).collect();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let want = bits(penalised(&logits, &history, penalty, usize::MAX));
            for other in [&unique, &shuffled, &tripled] {
                prop_assert_eq!(&bits(penalised(&logits, other, penalty, usize::MAX)), &want);
            }
            for convention in CONVENTIONS {
                let c = ChainConfig {
                    convention,
                    seed,
                    repetition_penalty: penalty,
                    ..ChainConfig::default()
                };
                let want = chain(c.clone()).probabilities(&logits, &history).unwrap();
                for other in [&unique, &shuffled, &tripled] {
                    prop_assert_eq!(
                        &chain(c.clone()).probabilities(&logits, other).unwrap(),
                        &want
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p12_a_penalty_above_one_never_makes_a_context_token_more_likely() {
    // With several distinct context tokens, penalising one more than the others can raise its
    // share (logits 0 and 1.4: the 1.4 drops, the 0 gains), so the property is stated for one
    // distinct token, repeated any number of times.
    let case = (ordinary_logits(40), any::<u64>()).prop_flat_map(|(l, seed)| {
        let v = l.len();
        (Just(l), Just(seed), 0..v as u32, 1usize..5, 1.0f32..4.0)
    });
    runner(12, 160)
        .run(&case, |(logits, seed, token, repeats, penalty)| {
            let history = vec![token; repeats];
            for convention in CONVENTIONS {
                let base = ChainConfig {
                    convention,
                    seed,
                    ..ChainConfig::default()
                };
                let before = chain(base.clone())
                    .probabilities(&logits, &history)
                    .unwrap();
                let after = chain(ChainConfig {
                    repetition_penalty: penalty,
                    ..base
                })
                .probabilities(&logits, &history)
                .unwrap();
                for &t in &history {
                    if let (Some(b), Some(a)) = (before.get(t as usize), after.get(t as usize)) {
                        prop_assert!(
                            *a <= *b + 1e-7,
                            "{convention:?}: token {t} {b} -> {a} under {penalty}"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// P13-P15: seeds and threads.

/// Every seeded kind of sampler: the adapter (not Gumbel, whose noise candle does not seed), the
/// native engine, decorated, and chains with random stages (mirostat and XTC included).
fn seeded_kinds(seed: u64, vocab: usize) -> Vec<(Name, BoxSampler)> {
    let mut out: Vec<(Name, BoxSampler)> = Vec::new();
    for sampling in [
        Sampling::All { temperature: 0.9 },
        Sampling::TopK {
            k: 20,
            temperature: 1.1,
        },
        Sampling::TopP {
            p: 0.8,
            temperature: 0.7,
        },
        Sampling::TopKThenTopP {
            k: 30,
            p: 0.6,
            temperature: 1.3,
        },
    ] {
        out.push((
            Name::Other(format!("adapter {sampling:?}")),
            Box::new(LogitsProcessorSampler::from_sampling(seed, sampling.clone()).unwrap()),
        ));
        out.push((
            Name::Other(format!("native {sampling:?}")),
            Box::new(
                NativeSampler::from_sampling(seed, sampling.clone())
                    .unwrap()
                    .with_repetition_penalty(1.2, 16)
                    .unwrap(),
            ),
        ));
    }
    out.push((
        Name::Other("native gumbel".into()),
        Box::new(
            NativeSampler::from_sampling(seed, Sampling::GumbelSoftmax { temperature: 1.0 })
                .unwrap(),
        ),
    ));
    for k in 0..6u64 {
        let mut c = chain_config(seed.wrapping_mul(31).wrapping_add(k), vocab, false);
        c.seed = seed;
        c.do_sample = true;
        c.temperature = 1.0;
        c.allowed_token_ids = None;
        c.suppress_tokens.clear();
        if k == 0 {
            c.mirostat = 2;
        }
        if k == 1 {
            c.xtc_probability = 0.5;
            c.xtc_threshold = 0.01;
        }
        if let Ok(chain) = c.build() {
            out.push((Name::Chain(Box::new(c)), Box::new(chain)));
        }
    }
    out
}

/// What a sampler of [`seeded_kinds`] is: a chain (with its configuration) or another kind.
#[derive(Debug)]
enum Name {
    Chain(Box<ChainConfig>),
    Other(String),
}

impl Name {
    fn parse_chain(&self) -> Result<Chain, ()> {
        match self {
            Name::Chain(c) => Ok(chain((**c).clone())),
            Name::Other(_) => Err(()),
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Name::Chain(c) => write!(f, "{c:?}"),
            Name::Other(s) => f.write_str(s),
        }
    }
}

/// `steps` tokens from `sampler`, its history growing, on logits that change with the step.
fn stream(sampler: &mut dyn Sampler, logits: &[f32], steps: usize) -> Vec<Result<u32, String>> {
    let mut history = Vec::new();
    (0..steps)
        .map(|i| {
            let shifted: Vec<f32> = logits
                .iter()
                .enumerate()
                .map(|(j, &x)| if (i + j) % 7 == 0 { x - 1.0 } else { x })
                .collect();
            let r = sampler
                .sample_slice(&shifted, &history)
                .map_err(|e| e.to_string());
            if let Ok(t) = r {
                history.push(t);
            }
            r
        })
        .collect()
}

#[test]
fn p13_the_same_seed_gives_the_same_stream() {
    let case = (ordinary_logits(64), any::<u64>());
    runner(13, 24)
        .run(&case, |(logits, seed)| {
            let a = seeded_kinds(seed, logits.len());
            let b = seeded_kinds(seed, logits.len());
            for ((name, mut x), (_, mut y)) in a.into_iter().zip(b) {
                let first = stream(&mut *x, &logits, 200);
                prop_assert_eq!(&first, &stream(&mut *y, &logits, 200), "{}", name);
                x.reset();
                prop_assert_eq!(
                    &first,
                    &stream(&mut *x, &logits, 200),
                    "{} after reset",
                    name
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p14_different_seeds_give_different_streams() {
    let logits = vec![0.0f32; 1000];
    for seed in [0u64, 1, 42, 299_792_458] {
        let a = seeded_kinds(seed, 1000);
        let b = seeded_kinds(seed + 1, 1000);
        for ((name, mut x), (_, mut y)) in a.into_iter().zip(b) {
            // A chain whose stages keep one token of these flat logits (top-k 1, a tiny top-p,
            // epsilon 0.2, ...) is deterministic by definition: only random ones are compared.
            if let Ok(mut c) = name.parse_chain() {
                match c.probabilities(&logits, &[]) {
                    Ok(support) if support.iter().filter(|&&p| p > 0.0).count() >= 2 => {}
                    _ => continue,
                }
            }
            // A spurious failure needs 64 equal draws among at least 2 tokens: 2^-64 at most,
            // 1e-192 for the samplers that keep all 1000.
            assert_ne!(
                stream(&mut *x, &logits, 64),
                stream(&mut *y, &logits, 64),
                "{name}"
            );
        }
    }
}

#[test]
fn p15_samplers_are_send_and_static_and_threads_do_not_change_streams() {
    fn assert_send_static<T: Send + 'static>() {}
    assert_send_static::<LogitsProcessorSampler>();
    assert_send_static::<NativeSampler>();
    assert_send_static::<RepetitionPenalty<NativeSampler>>();
    assert_send_static::<Chain>();
    assert_send_static::<BoxSampler>();
    let logits: Vec<f32> = (0..300).map(|i| ((i * 7919) % 300) as f32 / 37.0).collect();
    for seed in [3u64, 77] {
        let here: Vec<_> = seeded_kinds(seed, 300)
            .into_iter()
            .map(|(_, mut s)| stream(&mut *s, &logits, 50))
            .collect();
        let moved = seeded_kinds(seed, 300);
        let logits2 = logits.clone();
        let there: Vec<_> = std::thread::spawn(move || {
            moved
                .into_iter()
                .map(|(_, mut s)| stream(&mut *s, &logits2, 50))
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        assert_eq!(here, there);
    }
}

// ---------------------------------------------------------------------------------------------
// P16-P18: invariances.

/// Chains whose stages are all shift- and permutation-invariant (no id-based edits, no
/// sign-dependent penalty).
fn invariant_chain(seed: u64, vocab: usize) -> ChainConfig {
    let mut c = chain_config(seed, vocab, false);
    c.repetition_penalty = 1.0;
    c.frequency_penalty = 0.0;
    c.presence_penalty = 0.0;
    c.dry_multiplier = 0.0;
    c.dry_sequence_breakers.clear();
    c.no_repeat_ngram_size = 0;
    c.bad_words_ids.clear();
    c.sequence_bias.clear();
    c.suppress_tokens.clear();
    c.logit_bias.clear();
    c.allowed_token_ids = None;
    c.eos_token_id.clear();
    c.min_length = 0;
    c.mirostat = 0;
    c.xtc_probability = 0.0;
    c
}

/// Logits on a grid of 1/64 in [-8, 8], so that adding an integer shift is exact in f32.
fn grid_logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-512i32..512).prop_map(|i| i as f32 / 64.0), 1..40)
}

#[test]
fn p16_shifting_every_logit_leaves_the_distribution_unchanged() {
    let case = (grid_logits(), any::<u64>(), -100i32..100);
    runner(16, 256)
        .run(&case, |(logits, seed, c)| {
            let config = invariant_chain(seed, logits.len());
            let Ok(mut ch) = config.build() else {
                return Ok(());
            };
            if reference(&config, &logits, &[], State::holds()).is_err() {
                return Ok(()); // a decision within rounding distance of its threshold
            }
            let shifted: Vec<f32> = logits.iter().map(|&x| x + c as f32).collect();
            let want = ch.probabilities(&logits, &[]).unwrap();
            let got = ch.probabilities(&shifted, &[]).unwrap();
            for (g, w) in got.iter().zip(&want) {
                prop_assert!(
                    (g - w).abs() <= 1e-6,
                    "{config:?} shift {c}: {got:?} vs {want:?}"
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p17_permuting_the_logits_permutes_the_distribution() {
    let case = (grid_logits(), any::<u64>(), any::<u64>());
    runner(17, 256)
        .run(&case, |(mut logits, seed, perm_seed)| {
            // Distinct logits: ties would be broken by index.
            logits.sort_by(f32::total_cmp);
            logits.dedup();
            let config = invariant_chain(seed, logits.len());
            let Ok(mut ch) = config.build() else {
                return Ok(());
            };
            if reference(&config, &logits, &[], State::holds()).is_err() {
                return Ok(());
            }
            let mut r = ChaCha8Rng::seed_from_u64(perm_seed);
            let mut perm: Vec<usize> = (0..logits.len()).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, r.random_range(0..=i));
            }
            let permuted: Vec<f32> = perm.iter().map(|&i| logits[i]).collect();
            let want = ch.probabilities(&logits, &[]).unwrap();
            let got = ch.probabilities(&permuted, &[]).unwrap();
            for (j, &i) in perm.iter().enumerate() {
                prop_assert!(
                    (got[j] - want[i]).abs() <= 1e-6,
                    "{config:?}: {got:?} vs {want:?} under {perm:?}"
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn p18_half_precision_logits_sample_as_their_f32_upcast() {
    let case = (ordinary_logits(48), any::<u64>());
    runner(18, 48)
        .run(&case, |(logits, seed)| {
            for dtype in [DType::F16, DType::BF16] {
                let half = tensor(&logits).to_dtype(dtype).unwrap();
                let up = half.to_dtype(DType::F32).unwrap();
                let a = seeded_kinds(seed, logits.len());
                let b = seeded_kinds(seed, logits.len());
                for ((name, mut x), (_, mut y)) in a.into_iter().zip(b) {
                    for _ in 0..8 {
                        let from_half = x.sample(&half, &[]).map_err(|e| e.to_string());
                        let from_up = y.sample(&up, &[]).map_err(|e| e.to_string());
                        prop_assert_eq!(from_half, from_up, "{} {:?}", name, dtype);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// P19: validation is complete, at construction.

/// Whether a `Sampling`'s parameters are inside the documented bounds.
fn in_bounds(s: &Sampling) -> bool {
    let t_ok = |t: f64| (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t);
    let p_ok = |p: f64| (MIN_TOP_P..=1.0).contains(&p);
    match *s {
        Sampling::ArgMax => true,
        Sampling::All { temperature } | Sampling::GumbelSoftmax { temperature } => {
            t_ok(temperature)
        }
        Sampling::TopK { k, temperature } => k >= 1 && t_ok(temperature),
        Sampling::TopP { p, temperature } => p_ok(p) && t_ok(temperature),
        Sampling::TopKThenTopP { k, p, temperature } => k >= 1 && p_ok(p) && t_ok(temperature),
    }
}

#[test]
fn p19_hostile_parameters_are_rejected_at_construction() {
    runner(19, 1024)
        .run(
            &(hostile_sampling(), hostile_penalty()),
            |(sampling, penalty)| {
                let ok = in_bounds(&sampling) && (MIN_PENALTY..=MAX_PENALTY).contains(&penalty);
                for (name, built) in sampling_samplers(0, &sampling, penalty) {
                    let ok = if name == "adapter" || name == "native" {
                        in_bounds(&sampling)
                    } else {
                        ok
                    };
                    match built {
                        Ok(_) => prop_assert!(ok, "{name} accepted {sampling:?} penalty {penalty}"),
                        Err(SamplingError::InvalidParameter { .. })
                        | Err(SamplingError::InvalidConfig { .. }) => {
                            prop_assert!(!ok, "{name} rejected {sampling:?} penalty {penalty}")
                        }
                        Err(e) => prop_assert!(false, "{name}: {e}"),
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    // Chains: every hostile field value is an InvalidConfig naming a field, never a later
    // failure: a chain that builds samples valid logits.
    runner(19, 1024)
        .run(&any::<u64>(), |seed| {
            let config = chain_config(seed, 16, true);
            match config.build() {
                Ok(mut ch) => {
                    let logits: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
                    let r = ch.sample_slice(&logits, &[1, 2, 3]);
                    let legit = matches!(
                        r,
                        Ok(_)
                            | Err(SamplingError::TokenOutOfVocab { .. })
                            | Err(SamplingError::AllMasked)
                    );
                    prop_assert!(legit, "{config:?} built but sampling gave {r:?}");
                }
                Err(SamplingError::InvalidConfig { field, .. }) => prop_assert!(!field.is_empty()),
                Err(e) => prop_assert!(false, "{config:?}: {e}"),
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// P21: composition order.

#[test]
fn p21_top_k_then_top_p_follows_each_conventions_composition() {
    let case = (ordinary_logits(40), 1usize..20, 0.05f32..0.99, 0.4f32..1.8);
    runner(21, 256)
        .run(&case, |(logits, k, p, t)| {
            for convention in CONVENTIONS {
                let c = ChainConfig {
                    convention,
                    top_k: k,
                    top_p: p,
                    temperature: t,
                    ..ChainConfig::default()
                };
                let Ok(want) = reference(&c, &logits, &[], State::holds()) else {
                    continue;
                };
                // Independent of the chain reference: the composition written out here.
                let probs = softmax_at(
                    &logits,
                    if convention == Convention::LlamaCpp {
                        1.0
                    } else {
                        f64::from(t)
                    },
                );
                let mut order: Vec<usize> = (0..logits.len()).filter(|&i| probs[i] > 0.0).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
                let kth = order
                    .get(k.min(order.len()) - 1)
                    .map(|&i| probs[i])
                    .unwrap_or(0.0);
                let top: Vec<usize> = match convention {
                    // HF keeps every token tied with the k-th.
                    Convention::HuggingFace => {
                        order.iter().copied().filter(|&i| probs[i] >= kth).collect()
                    }
                    _ => order.iter().copied().take(k).collect(),
                };
                let top_mass: f64 = top.iter().map(|&i| probs[i]).sum();
                // Candle measures p against the un-renormalised top-k mass; the others renormalise.
                let scale = if convention == Convention::Candle {
                    1.0
                } else {
                    top_mass
                };
                let mut kept = Vec::new();
                let mut cum = 0.0;
                for &i in &top {
                    if cum >= f64::from(p) * scale && !kept.is_empty() {
                        break;
                    }
                    cum += probs[i];
                    kept.push(i);
                }
                if convention == Convention::Candle && top_mass < f64::from(p) {
                    kept = top.clone();
                }
                let mut got = chain(c.clone()).probabilities(&logits, &[]).unwrap();
                if convention == Convention::LlamaCpp {
                    // Temperature last: the kept set at T = 1, then softmax at T.
                    let w: Vec<f64> = kept
                        .iter()
                        .map(|&i| (f64::from(logits[i]) / f64::from(t)).exp())
                        .collect();
                    let sum: f64 = w.iter().sum();
                    for (j, &i) in kept.iter().enumerate() {
                        prop_assert!(
                            (f64::from(got[i]) - w[j] / sum).abs() < 1e-5,
                            "{convention:?}: {got:?}"
                        );
                        got[i] = 0.0;
                    }
                } else {
                    let mass: f64 = kept.iter().map(|&i| probs[i]).sum();
                    for &i in &kept {
                        prop_assert!(
                            (f64::from(got[i]) - probs[i] / mass).abs() < 1e-5,
                            "{convention:?}: {got:?} kept {kept:?}"
                        );
                        got[i] = 0.0;
                    }
                }
                prop_assert!(
                    got.iter().all(|&x| x == 0.0),
                    "{convention:?}: outside the kept set {got:?}"
                );
                for (g, w) in chain(c)
                    .probabilities(&logits, &[])
                    .unwrap()
                    .iter()
                    .zip(&want)
                {
                    prop_assert!((f64::from(*g) - w).abs() < 1e-5);
                }
            }
            Ok(())
        })
        .unwrap();
}
