//! Per-token sampling cost, grouped by vocabulary size.
//!
//! Contenders, measured side by side in one run on the same logits:
//! * `candle`: candle-transformers' `LogitsProcessor::sample`, the baseline;
//! * `adapter`: `LogitsProcessorSampler` through a `Box<dyn Sampler>`;
//! * `adapter+penalty`: the same wrapped in `RepetitionPenalty` over 64 tokens of history.
//!
//! Logits are Zipf-shaped (probability of the r-th most likely token proportional to r^-1.1, in
//! a shuffled order), which is what language-model logits look like. Run with
//! `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456` for stable candle timings
//! (it allocates vocabulary-sized buffers on every call).

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kyutai_sampling::{BoxSampler, LogitsProcessorSampler, SamplerExt, Sampling};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Vocabulary sizes: Mimi codebooks, Moshi text, and two modern LLM vocabularies.
const VOCABS: [usize; 3] = [2048, 32000, 128256];
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

/// Logits whose softmax is a Zipf law with exponent 1.1, in a seeded random order.
fn zipf_logits(vocab: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut logits: Vec<f32> = (1..=vocab)
        .map(|rank| -1.1 * (rank as f32).ln() + 0.01 * rng.random::<f32>())
        .collect();
    logits.shuffle(&mut rng);
    logits
}

/// One way of turning logits into a token.
type Draw = Box<dyn FnMut(&Tensor, &[u32]) -> u32>;

/// The contenders, in the order they are measured for each variant.
fn contenders() -> Vec<(&'static str, fn(&Sampling) -> Draw)> {
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
    ]
}

fn sampling(c: &mut Criterion) {
    for vocab in VOCABS {
        let mut group = c.benchmark_group(format!("sampling/{vocab}"));
        group.throughput(Throughput::Elements(vocab as u64));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(30);
        let logits = Tensor::new(zipf_logits(vocab, 7), &Device::Cpu).expect("tensor");
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let history: Vec<u32> = (0..PENALTY_CONTEXT)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
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
