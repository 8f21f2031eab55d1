//! `Batch` allocates nothing per call in steady state, on any thread (the rows run on rayon's
//! pool, so the counter counts every thread's allocations), and a constrained chain or a draft
//! verification allocates only what it returns.
//!
//! The counting global allocator lives in this test binary alone, whose tests take a lock so
//! that no other test allocates while one counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::{Device, Tensor};
use kyutai_sampling::{verify_draft, Batch, ChainConfig, Sampler, TokenSet};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

fn note() {
    if COUNTING.load(Ordering::Relaxed) {
        COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` unchanged; counting touches two atomics only.
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

/// Allocations on every thread while `f` runs.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    COUNT.load(Ordering::SeqCst)
}

fn logits(rows: usize, vocab: usize) -> Vec<f32> {
    (0..rows * vocab)
        .map(|i| ((i * 7919 + i / 13) % 2003) as f32 / 200.0 - 5.0)
        .collect()
}

#[test]
fn the_counter_counts_other_threads() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let n = allocations(|| {
        std::thread::scope(|s| {
            s.spawn(|| drop(Vec::<u8>::with_capacity(10)));
        })
    });
    assert!(n >= 1);
    assert_eq!(allocations(|| ()), 0);
}

#[test]
fn batch_allocates_nothing_per_call() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for (rows, vocab) in [(64usize, 32000usize), (8, 2048), (1, 128256)] {
        let tensor = Tensor::from_vec(logits(rows, vocab), (rows, vocab), &Device::Cpu).unwrap();
        let mut samplers: Vec<_> = (0..rows)
            .map(|i| {
                ChainConfig {
                    seed: i as u64,
                    repetition_penalty: 1.1,
                    ..ChainConfig::llama_cpp()
                }
                .build()
                .unwrap()
            })
            .collect();
        let histories: Vec<Vec<u32>> = (0..rows)
            .map(|i| {
                (0..64)
                    .map(|j| ((i * 31 + j * 17) % vocab) as u32)
                    .collect()
            })
            .collect();
        let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        let mut batch = Batch::new();
        for _ in 0..3 {
            batch.sample(&tensor, &mut samplers, &refs).unwrap();
        }
        let per_call: Vec<usize> = (0..5)
            .map(|_| {
                allocations(|| {
                    batch.sample(&tensor, &mut samplers, &refs).unwrap();
                })
            })
            .collect();
        assert_eq!(per_call, [0; 5], "B = {rows}, V = {vocab}");
    }
}

#[test]
fn a_constrained_chain_allocates_nothing_per_call() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let vocab = 128256;
    let x = logits(1, vocab);
    let allowed: Vec<u32> = (0..vocab as u32).step_by(10).collect();
    for config in [
        ChainConfig::llama_cpp(),
        ChainConfig::default(),
        ChainConfig {
            top_k: 0,
            min_p: 0.05,
            ..ChainConfig::default()
        },
    ] {
        let mut chain = config
            .build()
            .unwrap()
            .with_constraint(TokenSet::new(allowed.clone()));
        for _ in 0..3 {
            chain.sample_slice(&x, &[1, 2, 3]).unwrap();
        }
        let n = allocations(|| {
            for _ in 0..5 {
                chain.sample_slice(&x, &[1, 2, 3]).unwrap();
            }
        });
        assert_eq!(n, 0, "{config:?}");
    }
}

#[test]
fn verification_allocates_only_its_result() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (k, vocab) = (4usize, 32000usize);
    let tensor = Tensor::from_vec(logits(k + 1, vocab), (k + 1, vocab), &Device::Cpu).unwrap();
    let q = vec![vec![1.0 / vocab as f32; vocab]; k];
    let mut chain = ChainConfig::llama_cpp().build().unwrap();
    let draft = [3u32, 9, 27, 81];
    for _ in 0..3 {
        verify_draft(&mut chain, &tensor, &[5, 6], &draft, Some(&q)).unwrap();
    }
    for _ in 0..5 {
        let n = allocations(|| {
            verify_draft(&mut chain, &tensor, &[5, 6], &draft, Some(&q)).unwrap();
        });
        // The returned `Verified`'s token vector.
        assert!(n <= 1, "{n} allocations");
    }
}
