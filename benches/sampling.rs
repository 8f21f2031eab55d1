//! Per-token sampling cost, grouped by vocabulary size.
//!
//! Contenders, measured side by side in one run on the same logits:
//! * `candle`: candle-transformers' `LogitsProcessor::sample`, the baseline;
//! * `adapter`: `LogitsProcessorSampler` through a `Box<dyn Sampler>`;
//! * `adapter+penalty`: the same wrapped in `RepetitionPenalty` over 64 tokens of history;
//! * `native`: `NativeSampler` through a `Box<dyn Sampler>`;
//! * `native+penalty`: the same wrapped in `RepetitionPenalty` over 64 tokens of history;
//! * `read_pass/max`: one scalar read of the logits (`fold(f32::max)`, which the compiler cannot
//!   vectorise);
//! * `read_pass/vectorised`: one vectorised read, the crate's validating maximum pass with the
//!   engine's runtime dispatch: the floor any sampler pays, which the README's ratios are to.
//!
//! Logits are Zipf-shaped (probability of the r-th most likely token proportional to r^-1.1, in
//! a shuffled order), which is what language-model logits look like, in the `sampling/{vocab}`
//! groups; the `sampling-flat/{vocab}` groups use nearly flat logits (uniform in [0, 0.01)),
//! where the top-p nucleus holds 90% of the vocabulary: top-p's worst case. Run with
//! `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456` for stable candle timings
//! (it allocates vocabulary-sized buffers on every call).

mod support;

use std::hint::black_box;
use std::time::Duration;
use support::zipf_logits;

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kyutai_sampling::{BoxSampler, LogitsProcessorSampler, NativeSampler, SamplerExt, Sampling};
use rand::{Rng, SeedableRng};

/// Vocabulary sizes: Mimi codebooks, Moshi text, and three modern LLM vocabularies.
const VOCABS: [usize; 4] = [2048, 32000, 128256, 262144];
/// Vocabulary sizes measured on flat logits.
const FLAT_VOCABS: [usize; 3] = [32000, 128256, 262144];
const PENALTY_CONTEXT: usize = 64;

fn variants() -> Vec<(&'static str, Sampling)> {
    vec![
        ("argmax", Sampling::ArgMax),
        ("all", Sampling::All { temperature: 1.0 }),
        (
            "top_k_50",
            Sampling::TopK {
                k: 50,
                temperature: 1.0,
            },
        ),
        (
            "top_p_0.9",
            Sampling::TopP {
                p: 0.9,
                temperature: 1.0,
            },
        ),
        (
            "top_k_50_top_p_0.9",
            Sampling::TopKThenTopP {
                k: 50,
                p: 0.9,
                temperature: 1.0,
            },
        ),
        ("gumbel", Sampling::GumbelSoftmax { temperature: 1.0 }),
    ]
}

/// Nearly flat logits, uniform in [0, 0.01), from a seeded generator.
fn flat_logits(vocab: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..vocab).map(|_| 0.01 * rng.random::<f32>()).collect()
}

/// The reference: one read pass over the logits, their maximum.
fn read_pass(logits: &[f32]) -> f32 {
    logits.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// One way of turning logits into a token.
type Draw = Box<dyn FnMut(&Tensor, &[u32]) -> u32>;

/// Builds a contender for a sampling strategy.
type Build = fn(&Sampling) -> Draw;

/// The contenders, in the order they are measured for each variant.
fn contenders() -> Vec<(&'static str, Build)> {
    vec![
        ("candle", |sampling| {
            let mut p = LogitsProcessor::from_sampling(1, sampling.clone());
            Box::new(move |logits, _| p.sample(logits).expect("candle sample"))
        }),
        ("adapter", |sampling| {
            let mut s: BoxSampler = LogitsProcessorSampler::from_sampling(1, sampling.clone())
                .expect("valid sampling")
                .boxed();
            Box::new(move |logits, history| s.sample(logits, history).expect("adapter sample"))
        }),
        ("adapter+penalty", |sampling| {
            let mut s: BoxSampler = LogitsProcessorSampler::from_sampling(1, sampling.clone())
                .expect("valid sampling")
                .with_repetition_penalty(1.1, PENALTY_CONTEXT)
                .expect("valid penalty")
                .boxed();
            Box::new(move |logits, history| s.sample(logits, history).expect("penalty sample"))
        }),
        ("native", |sampling| {
            let mut s: BoxSampler = NativeSampler::from_sampling(1, sampling.clone())
                .expect("valid sampling")
                .boxed();
            Box::new(move |logits, history| s.sample(logits, history).expect("native sample"))
        }),
        ("native+penalty", |sampling| {
            let mut s: BoxSampler = NativeSampler::from_sampling(1, sampling.clone())
                .expect("valid sampling")
                .with_repetition_penalty(1.1, PENALTY_CONTEXT)
                .expect("valid penalty")
                .boxed();
            Box::new(move |logits, history| s.sample(logits, history).expect("penalty sample"))
        }),
    ]
}

fn sampling(c: &mut Criterion) {
    let zipf = VOCABS.map(|vocab| ("sampling", vocab, zipf_logits(vocab, 7)));
    let flat = FLAT_VOCABS.map(|vocab| ("sampling-flat", vocab, flat_logits(vocab, 7)));
    for (name, vocab, values) in zipf.into_iter().chain(flat) {
        let mut group = c.benchmark_group(format!("{name}/{vocab}"));
        group.throughput(Throughput::Elements(vocab as u64));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(30);
        let logits = Tensor::new(values.as_slice(), &Device::Cpu).expect("tensor");
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let history: Vec<u32> = (0..PENALTY_CONTEXT)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        group.bench_function(BenchmarkId::new("read_pass", "max"), |b| {
            b.iter(|| read_pass(black_box(&values)))
        });
        group.bench_function(BenchmarkId::new("read_pass", "vectorised"), |b| {
            b.iter(|| kyutai_sampling::validate_logits(black_box(&values)))
        });
        for (variant, sampling) in variants() {
            for (name, build) in contenders() {
                let mut draw = build(&sampling);
                group.bench_function(BenchmarkId::new(variant, name), |b| {
                    b.iter(|| draw(black_box(&logits), black_box(&history)))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, sampling);
criterion_main!(benches);
