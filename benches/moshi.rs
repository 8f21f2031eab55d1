//! Moshi's own sampling configurations: the text sampler
//! (`TopK { k: 25, temperature: 0.8 }` over 32000 tokens), the audio sampler
//! (`TopK { k: 250, temperature: 0.8 }` over a 2048-code Mimi codebook) and one depformer step's
//! worth of audio sampling (8 codebooks of 2048, each with its own history), for candle's
//! `LogitsProcessor` (through the adapter) and the native engine, bare and with a repetition
//! penalty over 64 tokens. `read_pass/scalar` is a `fold(f32::max)`; `read_pass/vectorised` is the
//! crate's validation scan (the dense passes' floor, with the same runtime dispatch).

mod support;

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kyutai_sampling::{BoxSampler, LogitsProcessorSampler, NativeSampler, SamplerExt, Sampling};
use rand::{Rng, SeedableRng};
use support::zipf_logits;

const CONTEXT: usize = 64;

fn contenders(sampling: &Sampling) -> Vec<(&'static str, BoxSampler)> {
    let adapter = || LogitsProcessorSampler::from_sampling(1, sampling.clone()).expect("valid");
    let native = || NativeSampler::from_sampling(1, sampling.clone()).expect("valid");
    vec![
        ("candle", adapter().boxed()),
        ("native", native().boxed()),
        (
            "native+penalty",
            native()
                .with_repetition_penalty(1.1, CONTEXT)
                .expect("valid")
                .boxed(),
        ),
    ]
}

fn history(vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..CONTEXT)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect()
}

fn moshi(c: &mut Criterion) {
    for (name, vocab, k) in [("text", 32000usize, 25usize), ("audio", 2048, 250)] {
        let mut group = c.benchmark_group(format!("moshi-{name}/{vocab}"));
        group.throughput(Throughput::Elements(vocab as u64));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        let values = zipf_logits(vocab, 7);
        let logits = Tensor::new(values.as_slice(), &Device::Cpu).expect("tensor");
        let history = history(vocab, 11);
        group.bench_function(BenchmarkId::new("read_pass", "scalar"), |b| {
            b.iter(|| {
                black_box(&values)
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max)
            })
        });
        group.bench_function(BenchmarkId::new("read_pass", "vectorised"), |b| {
            b.iter(|| kyutai_sampling::validate_logits(black_box(&values)))
        });
        let sampling = Sampling::TopK {
            k,
            temperature: 0.8,
        };
        for (contender, mut sampler) in contenders(&sampling) {
            group.bench_function(BenchmarkId::new(format!("top_k_{k}"), contender), |b| {
                b.iter(|| sampler.sample(black_box(&logits), black_box(&history)))
            });
        }
        group.finish();
    }
    // One depformer step: 8 codebooks, each its own logits and history, one sampler.
    let mut group = c.benchmark_group("moshi-depformer-step/8x2048");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let rows: Vec<Tensor> = (0..8)
        .map(|i| Tensor::new(zipf_logits(2048, 20 + i).as_slice(), &Device::Cpu).expect("tensor"))
        .collect();
    let histories: Vec<Vec<u32>> = (0..8).map(|i| history(2048, 30 + i)).collect();
    let sampling = Sampling::TopK {
        k: 250,
        temperature: 0.8,
    };
    for (contender, mut sampler) in contenders(&sampling) {
        group.bench_function(BenchmarkId::new("top_k_250", contender), |b| {
            b.iter(|| {
                for (row, history) in rows.iter().zip(&histories) {
                    black_box(sampler.sample(row, history).expect("sample"));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, moshi);
criterion_main!(benches);
