//! `Chain` allocates nothing per call in steady state, through `sample` (a contiguous CPU f32
//! tensor, `[V]` and `[1, V]`) and `sample_slice`, for every kind of plan.
//!
//! A counting global allocator wraps the system one; it lives in this test binary alone (a test
//! binary can hold one global allocator) and counts only on threads that ask for it.

mod native_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use kyutai_sampling::{ChainConfig, Convention, Sampler, SamplingConfig};
use native_support::spread_logits;

struct Counting;

thread_local! {
    /// Allocations made by this thread while counting, or `None` when not counting.
    static COUNT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note() {
    let _ = COUNT.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: every method forwards to `System` unchanged; counting touches only a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.replace(None)).unwrap_or(0)
}

#[test]
fn the_counter_counts() {
    assert_eq!(allocations(|| drop(Vec::<u8>::with_capacity(10))), 1);
    assert_eq!(allocations(|| ()), 0);
    // A stable sort of a few thousand elements allocates its scratch: the counter sees it.
    let mut v: Vec<(f64, u32)> = (0..5000).map(|i| ((i * 7919 % 5000) as f64, i)).collect();
    assert!(allocations(|| v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap())) > 0);
}

/// Warms up with 3 calls, then checks that 10 more allocate nothing; returns a failure line.
fn steady(what: &str, mut call: impl FnMut()) -> Option<String> {
    for _ in 0..3 {
        call();
    }
    let per_call: Vec<usize> = (0..10).map(|_| allocations(&mut call)).collect();
    let n: usize = per_call.iter().sum();
    (n > 0).then(|| format!("{what}: {n} allocations in 10 calls: {per_call:?}"))
}

/// A history of `n` tokens spread over the vocabulary, with repeats.
fn history(n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 97 + (i / 3) * 13) % vocab) as u32)
        .collect()
}

fn chains(vocab: usize) -> Vec<(&'static str, ChainConfig, Vec<u32>)> {
    let hf = ChainConfig::default;
    let llama = |c: ChainConfig| ChainConfig {
        convention: Convention::LlamaCpp,
        ..c
    };
    let bias: BTreeMap<u32, f32> = (0..100)
        .map(|i| {
            (
                (i * 311 % vocab) as u32,
                if i % 10 == 0 {
                    -1e30
                } else {
                    0.5 - (i % 3) as f32
                },
            )
        })
        .collect();
    vec![
        ("llama_cpp()", ChainConfig::llama_cpp(), history(64, vocab)),
        (
            "llama_cpp() + penalties",
            ChainConfig {
                repetition_penalty: 1.1,
                frequency_penalty: 0.1,
                presence_penalty: 0.1,
                ..ChainConfig::llama_cpp()
            },
            history(100, vocab),
        ),
        (
            "hf typical + repetition, 256 history",
            ChainConfig {
                temperature: 0.8,
                typical_p: 0.9,
                repetition_penalty: 1.1,
                ..hf()
            },
            history(256, vocab),
        ),
        (
            "min-p alone",
            ChainConfig {
                min_p: 0.05,
                ..hf()
            },
            Vec::new(),
        ),
        (
            "top-p alone",
            ChainConfig { top_p: 0.9, ..hf() },
            Vec::new(),
        ),
        (
            "top-p alone, min_keep 5",
            ChainConfig {
                top_p: 0.9,
                min_keep: 5,
                ..hf()
            },
            Vec::new(),
        ),
        (
            "typical alone",
            ChainConfig {
                typical_p: 0.9,
                ..hf()
            },
            Vec::new(),
        ),
        (
            "llama typical alone",
            llama(ChainConfig {
                typical_p: 0.9,
                ..hf()
            }),
            Vec::new(),
        ),
        (
            "mirostat v2",
            llama(ChainConfig {
                mirostat: 2,
                ..hf()
            }),
            history(64, vocab),
        ),
        (
            "mirostat v1",
            llama(ChainConfig {
                mirostat: 1,
                ..hf()
            }),
            Vec::new(),
        ),
        (
            "five edits stacked",
            ChainConfig {
                repetition_penalty: 1.2,
                frequency_penalty: 0.3,
                presence_penalty: 0.2,
                logit_bias: bias,
                suppress_tokens: vec![1, 2, 3],
                ..hf()
            },
            history(128, vocab),
        ),
        (
            "hf top-k ties",
            ChainConfig {
                temperature: 0.7,
                top_k: 50,
                top_p: 0.9,
                repetition_penalty: 1.1,
                ..hf()
            },
            history(64, vocab),
        ),
        (
            "top-n-sigma, xtc, epsilon, eta",
            llama(ChainConfig {
                top_n_sigma: 2.0,
                xtc_probability: 0.5,
                xtc_threshold: 0.01,
                epsilon_cutoff: 1e-4,
                eta_cutoff: 1e-4,
                ..hf()
            }),
            Vec::new(),
        ),
        (
            "dynatemp",
            llama(ChainConfig {
                dynatemp_range: 0.5,
                top_k: 100,
                ..hf()
            }),
            Vec::new(),
        ),
        (
            "allowed set",
            ChainConfig {
                allowed_token_ids: Some((0..vocab as u32).step_by(5).collect()),
                top_k: 20,
                ..hf()
            },
            Vec::new(),
        ),
        (
            "greedy + min_length",
            ChainConfig {
                do_sample: false,
                min_length: 1000,
                eos_token_id: vec![0, 1],
                ..hf()
            },
            history(10, vocab),
        ),
        (
            "candle default",
            ChainConfig::from(&SamplingConfig::default()),
            history(64, vocab),
        ),
    ]
}

#[test]
fn no_allocation_per_call_in_steady_state() {
    let device = Device::Cpu;
    let mut failures = Vec::new();
    for vocab in [2048usize, 32_000] {
        let values = spread_logits(vocab as u64, vocab, 12.0);
        let vector = Tensor::new(values.as_slice(), &device).unwrap();
        let row = vector.reshape((1, vocab)).unwrap();
        for (name, config, history) in chains(vocab) {
            let what = format!("{name}, vocab {vocab}");
            let mut chain = config.build().unwrap();
            // Warm up: buffers are sized by the first calls, and mirostat's μ (which sets how
            // many candidates it keeps) needs a few dozen draws to settle.
            for _ in 0..100 {
                chain.sample_slice(&values, &history).unwrap();
            }
            failures.extend(steady(&format!("{what}, [V] tensor"), || {
                chain.sample(&vector, &history).unwrap();
            }));
            failures.extend(steady(&format!("{what}, [1, V] tensor"), || {
                chain.sample(&row, &history).unwrap();
            }));
            failures.extend(steady(&format!("{what}, slice"), || {
                chain.sample_slice(&values, &history).unwrap();
            }));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
