//! What a server pays per forward pass beyond one chain call: batched rows, a constraint mask,
//! and speculative-draft verification, each next to the alternative a user would write.
//!
//! On Zipf-shaped logits (see `benches/chain.rs`), with [`ChainConfig::llama_cpp`] throughout:
//! * `batch/{vocab}`: `B = 64` rows; `batch/sample_batch` (a fresh call, allocating its output)
//!   and `batch/reused` ([`Batch`], buffers kept) against `batch/sequential_loop`, the same
//!   samplers called one row after the other on one thread, and candle's `LogitsProcessor` in
//!   the same loop;
//! * `constraint/{vocab}`: the chain alone, the chain with a [`TokenSet`] constraint allowing 10%
//!   of the vocabulary, and the chain on a copy of the logits with the disallowed tokens set to
//!   `-inf` by hand (what a caller without constraints writes);
//! * `verify/{vocab}`: [`verify_draft`] with `K = 4` draft tokens that are all accepted (the
//!   draft distributions equal the target's, so every row is processed: the worst case),
//!   against `K + 1 = 5` plain chain calls on the same rows.
//!
//! Run with `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456` for stable
//! timings of the contenders that allocate vocabulary-sized buffers on every call.

mod support;

use std::hint::black_box;
use std::time::Duration;
use support::zipf_logits;

use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kyutai_sampling::{
    sample_batch, verify_draft, Batch, Chain, ChainConfig, Sampler, Sampling, TokenSet,
};
use rand::{Rng, SeedableRng};

const ROWS: usize = 64;
const DRAFT: usize = 4;

fn llama(seed: u64) -> Chain {
    ChainConfig {
        seed,
        ..ChainConfig::llama_cpp()
    }
    .build()
    .expect("llama.cpp chain")
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    elements: usize,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(elements as u64));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(20);
    group
}

fn batch(c: &mut Criterion) {
    let vocab = 32000;
    let flat: Vec<f32> = (0..ROWS as u64)
        .flat_map(|r| zipf_logits(vocab, r))
        .collect();
    let tensor = Tensor::from_vec(flat.clone(), (ROWS, vocab), &Device::Cpu).expect("tensor");
    let histories: Vec<Vec<u32>> = (0..ROWS)
        .map(|r| {
            (0..64)
                .map(|i| ((r * 131 + i * 17) % vocab) as u32)
                .collect()
        })
        .collect();
    let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
    let mut samplers: Vec<Chain> = (0..ROWS as u64).map(llama).collect();
    let mut group = group(c, &format!("batch/{vocab}"), ROWS * vocab);

    group.bench_function("batch/sample_batch", |b| {
        b.iter(|| sample_batch(black_box(&tensor), &mut samplers, &refs).expect("batch"))
    });
    let mut reused = Batch::new();
    group.bench_function("batch/reused", |b| {
        b.iter(|| {
            reused
                .sample(black_box(&tensor), &mut samplers, &refs)
                .expect("batch")[0]
        })
    });
    group.bench_function("batch/sequential_loop", |b| {
        b.iter(|| {
            let mut last = 0;
            for ((s, h), row) in samplers.iter_mut().zip(&refs).zip(flat.chunks_exact(vocab)) {
                last = s.sample_slice(black_box(row), h).expect("row");
            }
            last
        })
    });
    let rows: Vec<Tensor> = (0..ROWS).map(|r| tensor.get(r).expect("row")).collect();
    let mut candle: Vec<LogitsProcessor> = (0..ROWS as u64)
        .map(|seed| {
            LogitsProcessor::from_sampling(
                seed,
                Sampling::TopKThenTopP {
                    k: 40,
                    p: 0.95,
                    temperature: 0.8,
                },
            )
        })
        .collect();
    group.bench_function("candle/sequential_loop", |b| {
        b.iter(|| {
            let mut last = 0;
            for (p, row) in candle.iter_mut().zip(&rows) {
                last = p.sample(black_box(row)).expect("candle");
            }
            last
        })
    });
    group.finish();
}

fn constraint(c: &mut Criterion) {
    for vocab in [32000usize, 128256] {
        let values = zipf_logits(vocab, 7);
        let allowed: Vec<u32> = {
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            (0..vocab as u32).filter(|_| rng.random_bool(0.1)).collect()
        };
        let history: Vec<u32> = (0..64).map(|i| (i * 389 % vocab) as u32).collect();
        let mut group = group(c, &format!("constraint/{vocab}"), vocab);

        let mut plain = llama(1);
        group.bench_function("chain/llama_cpp", |b| {
            b.iter(|| {
                plain
                    .sample_slice(black_box(&values), &history)
                    .expect("chain")
            })
        });
        let mut masked = llama(1).with_constraint(TokenSet::new(allowed.clone()));
        group.bench_function("chain/llama_cpp+mask_10%", |b| {
            b.iter(|| {
                masked
                    .sample_slice(black_box(&values), &history)
                    .expect("masked")
            })
        });
        let mut by_hand = llama(1);
        let mut is_allowed = vec![false; vocab];
        for &t in &allowed {
            is_allowed[t as usize] = true;
        }
        let mut copy = values.clone();
        group.bench_function("chain/llama_cpp+copy_and_mask", |b| {
            b.iter(|| {
                for ((out, &x), &ok) in copy.iter_mut().zip(black_box(&values)).zip(&is_allowed) {
                    *out = if ok { x } else { f32::NEG_INFINITY };
                }
                by_hand.sample_slice(&copy, &history).expect("copy")
            })
        });
        group.finish();
    }
}

fn verify(c: &mut Criterion) {
    let vocab = 32000;
    let rows: Vec<Vec<f32>> = (0..=DRAFT as u64)
        .map(|r| zipf_logits(vocab, 40 + r))
        .collect();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let tensor = Tensor::from_vec(flat, (DRAFT + 1, vocab), &Device::Cpu).expect("tensor");
    let mut probe = llama(9);
    // The draft: each row's most likely token, with the target's own distributions (so every
    // draft token is accepted with probability 1).
    let q: Vec<Vec<f32>> = rows[..DRAFT]
        .iter()
        .map(|r| probe.probabilities(r, &[]).expect("probabilities"))
        .collect();
    let draft: Vec<u32> = q
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .fold(
                    (0, 0.0f32),
                    |best, (i, &x)| if x > best.1 { (i, x) } else { best },
                )
                .0 as u32
        })
        .collect();
    let mut group = group(c, &format!("verify/{vocab}"), (DRAFT + 1) * vocab);
    let mut chain = llama(2);
    let v = verify_draft(&mut chain, &tensor, &[], &draft, Some(&q)).expect("verify");
    assert_eq!(v.accepted, DRAFT, "the bench's draft must be accepted");
    group.bench_function("verify_draft/k_4", |b| {
        b.iter(|| {
            verify_draft(&mut chain, black_box(&tensor), &[], &draft, Some(&q)).expect("verify")
        })
    });
    let mut plain = llama(2);
    group.bench_function("chain/5_calls", |b| {
        b.iter(|| {
            let mut last = 0;
            for row in &rows {
                last = plain.sample_slice(black_box(row), &[]).expect("chain");
            }
            last
        })
    });
    group.finish();
}

criterion_group!(benches, batch, constraint, verify);
criterion_main!(benches);
