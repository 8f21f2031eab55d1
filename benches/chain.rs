//! Per-token cost of a [`Chain`], grouped by vocabulary size, with its contenders in one run.
//!
//! In every `chain/{vocab}` group, on the same Zipf-shaped logits (see `benches/sampling.rs`):
//! * `read_pass/max`: one scalar read of the logits (their maximum, `fold(f32::max)`);
//! * `read_pass/vectorised`: one vectorised read (the crate's validating maximum pass, with the
//!   engine's runtime dispatch), the floor any sampler pays;
//! * `chain/llama_cpp`: [`ChainConfig::llama_cpp`] (top-k 40, top-p 0.95, min-p 0.05,
//!   temperature 0.8), over 256 tokens of history; also the "without edits" side of
//!   `chain/llama_cpp+5_edits`;
//! * `chain/hf_typical`: temperature 0.7, top-k 50, top-p 0.9, repetition penalty 1.1 over 256
//!   tokens of random history;
//! * `chain/min_p_0.05`, `chain/top_p_0.9`, `chain/mirostat_v2`, `chain/typical_p_0.9`: one
//!   stage alone (HF convention);
//! * `chain/llama_cpp+5_edits`: the llama.cpp chain plus repetition 1.1, frequency 0.1, presence
//!   0.1, 100 logit-bias entries and DRY (multiplier 0.8) over 256 tokens of history whose end
//!   repeats an earlier span;
//! * `chain/candle_conv`: the chain under [`Convention::Candle`] with candle's contender's
//!   parameters (top-k 40 then top-p 0.95, temperature 0.8);
//! * `candle/top_k_40_top_p_0.95`: candle-transformers' `LogitsProcessor`, the same parameters;
//! * `llm-samplers/llama_cpp`: llm-samplers 0.0.7's `SamplerChain` (top-k 40, top-p 0.95, min-p
//!   0.05, temperature 0.8, random distribution), building its `Logits` from the slice on every
//!   call (what a user pays per token);
//! * `llm-samplers/llama_cpp_prefilter`: the same chain on `Logits::try_from_iter_top_k(.., 40)`,
//!   llm-samplers' own fast path (a bounded insertion instead of sorting the vocabulary).
//!
//! Run with `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456` for stable
//! timings of the contenders that allocate vocabulary-sized buffers on every call.

mod support;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;
use support::zipf_logits;

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kyutai_sampling::{ChainConfig, Convention, Sampler, Sampling};
use llm_samplers::prelude::{
    Logits, SampleMinP, SampleRandDistrib, SampleTemperature, SampleTopK, SampleTopP, Sampler as _,
    SamplerChain, SimpleSamplerResources,
};
use rand::{Rng, SeedableRng};

/// Vocabulary sizes: Llama 2 / Mistral, and Llama 3.
const VOCABS: [usize; 2] = [32000, 128256];
/// Tokens of history handed to every chain.
const HISTORY: usize = 256;
/// Logit-bias entries of the five-edits chain.
const BIASES: usize = 100;

/// The reference: one read pass over the logits, their maximum.
fn read_pass(logits: &[f32]) -> f32 {
    logits.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `len` random token ids below `vocab`.
fn random_history(vocab: usize, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect()
}

/// `HISTORY` tokens drawn from a pool of 64 ids, whose last 24 tokens repeat an earlier span:
/// DRY finds a long match and penalises the token that followed it.
fn repetitive_history(vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pool: Vec<u32> = (0..64).map(|_| rng.random_range(0..vocab as u32)).collect();
    let mut history: Vec<u32> = (0..HISTORY - 24)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect();
    let span = history[100..124].to_vec();
    history.extend(span);
    history
}

/// The llama.cpp chain with the five edit stages stacked on top.
fn five_edits(vocab: usize) -> ChainConfig {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut logit_bias = BTreeMap::new();
    while logit_bias.len() < BIASES {
        logit_bias.insert(
            rng.random_range(0..vocab as u32),
            rng.random_range(-2.0..2.0f32),
        );
    }
    ChainConfig {
        repetition_penalty: 1.1,
        frequency_penalty: 0.1,
        presence_penalty: 0.1,
        logit_bias,
        dry_multiplier: 0.8,
        ..ChainConfig::llama_cpp()
    }
}

/// The chain configurations measured, by name, with the history each is handed.
fn chains(vocab: usize) -> Vec<(&'static str, ChainConfig, Vec<u32>)> {
    let random = random_history(vocab, HISTORY, 11);
    let repetitive = repetitive_history(vocab, 12);
    vec![
        ("llama_cpp", ChainConfig::llama_cpp(), repetitive.clone()),
        (
            "hf_typical",
            ChainConfig {
                temperature: 0.7,
                top_k: 50,
                top_p: 0.9,
                repetition_penalty: 1.1,
                ..Default::default()
            },
            random.clone(),
        ),
        (
            "min_p_0.05",
            ChainConfig {
                min_p: 0.05,
                ..Default::default()
            },
            random.clone(),
        ),
        (
            "top_p_0.9",
            ChainConfig {
                top_p: 0.9,
                ..Default::default()
            },
            random.clone(),
        ),
        (
            "mirostat_v2",
            ChainConfig {
                mirostat: 2,
                ..Default::default()
            },
            random.clone(),
        ),
        (
            "typical_p_0.9",
            ChainConfig {
                typical_p: 0.9,
                ..Default::default()
            },
            random.clone(),
        ),
        ("llama_cpp+5_edits", five_edits(vocab), repetitive),
        (
            "candle_conv",
            ChainConfig {
                convention: Convention::Candle,
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                ..Default::default()
            },
            random,
        ),
    ]
}

/// llm-samplers' llama.cpp-like chain: top-k 40, top-p 0.95, min-p 0.05, temperature 0.8, draw.
fn llm_samplers_chain() -> SamplerChain {
    SamplerChain::new()
        + SampleTopK::new(40, 1)
        + SampleTopP::new(0.95, 1)
        + SampleMinP::new(0.05, 1)
        + SampleTemperature::new(0.8)
        + SampleRandDistrib::new()
}

fn llm_samplers_resources() -> SimpleSamplerResources {
    use rand08::SeedableRng as _;
    SimpleSamplerResources::new(Some(Box::new(rand08::rngs::StdRng::seed_from_u64(1))), None)
}

/// Asserts a contender's first token is inside the vocabulary.
fn check(name: &str, vocab: usize, token: u32) {
    assert!(
        (token as usize) < vocab,
        "{name} returned token {token} for a vocabulary of {vocab}"
    );
}

fn chain(c: &mut Criterion) {
    for vocab in VOCABS {
        let values = zipf_logits(vocab, 7);
        let logits = Tensor::new(values.as_slice(), &Device::Cpu).expect("tensor");
        let mut group = c.benchmark_group(format!("chain/{vocab}"));
        group.throughput(Throughput::Elements(vocab as u64));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);

        group.bench_function("read_pass/max", |b| {
            b.iter(|| read_pass(black_box(&values)))
        });
        group.bench_function("read_pass/vectorised", |b| {
            b.iter(|| kyutai_sampling::validate_logits(black_box(&values)))
        });

        for (name, config, history) in chains(vocab) {
            let mut chain = config.build().expect("valid chain config");
            let first = chain.sample(&logits, &history).expect("chain sample");
            check(name, vocab, first);
            group.bench_function(format!("chain/{name}"), |b| {
                b.iter(|| {
                    chain
                        .sample(black_box(&logits), black_box(&history))
                        .expect("chain sample")
                })
            });
        }

        let mut candle = LogitsProcessor::from_sampling(
            1,
            Sampling::TopKThenTopP {
                k: 40,
                p: 0.95,
                temperature: 0.8,
            },
        );
        check("candle", vocab, candle.sample(&logits).expect("candle"));
        group.bench_function("candle/top_k_40_top_p_0.95", |b| {
            b.iter(|| candle.sample(black_box(&logits)).expect("candle sample"))
        });

        let mut sc = llm_samplers_chain();
        let mut res = llm_samplers_resources();
        let mut draw = |values: &[f32]| {
            let mut l = Logits::try_from_iter(values.iter().copied()).expect("llm-samplers logits");
            sc.sample_token(&mut res, &mut l)
                .expect("llm-samplers sample")
                .expect("llm-samplers token")
        };
        check("llm-samplers", vocab, draw(&values));
        group.bench_function("llm-samplers/llama_cpp", |b| {
            b.iter(|| draw(black_box(&values)))
        });

        let mut sc = llm_samplers_chain();
        let mut res = llm_samplers_resources();
        let mut draw = |values: &[f32]| {
            let mut l = Logits::try_from_iter_top_k(values.iter().copied(), 40)
                .expect("llm-samplers logits");
            sc.sample_token(&mut res, &mut l)
                .expect("llm-samplers sample")
                .expect("llm-samplers token")
        };
        check("llm-samplers prefilter", vocab, draw(&values));
        group.bench_function("llm-samplers/llama_cpp_prefilter", |b| {
            b.iter(|| draw(black_box(&values)))
        });

        group.finish();
    }
}

criterion_group!(benches, chain);
criterion_main!(benches);
