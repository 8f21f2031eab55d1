//! `NativeSampler` allocates nothing per call in steady state on CPU f32 logits.
//!
//! A counting global allocator wraps the system one; it lives in this test binary alone so that
//! it cannot affect other tests, and it only counts on threads that ask for it.

mod native_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use candle_core::{Device, Tensor};
use kyutai_sampling::{BoxSampler, NativeSampler, Sampler, SamplerExt, Sampling};
use native_support::{spread_logits, variants};

struct Counting;

thread_local! {
    /// Allocations made by this thread while counting, or `None` when not counting.
    static COUNT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note() {
    // `try_with`: the allocator may run while thread-locals are torn down.
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

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.replace(None)).unwrap_or(0)
}

fn all_variants() -> Vec<Sampling> {
    let mut v = variants();
    v.push(Sampling::ArgMax);
    // A small nucleus in flat logits: the exact (non-rejection) top-p path.
    v.push(Sampling::TopP {
        p: 0.02,
        temperature: 1.0,
    });
    // Moshi's audio sampler: more candidates than groups (the distance-histogram bound).
    v.push(Sampling::TopK {
        k: 250,
        temperature: 0.8,
    });
    v
}

#[test]
fn the_counter_counts() {
    assert_eq!(allocations(|| drop(Vec::<u8>::with_capacity(10))), 1);
    assert_eq!(allocations(|| ()), 0);
}

/// Runs `call` a few times to warm up, then checks that 10 more calls allocate nothing.
fn assert_steady(what: &str, mut call: impl FnMut()) {
    for _ in 0..3 {
        call();
    }
    let per_call: Vec<usize> = (0..10).map(|_| allocations(&mut call)).collect();
    let n: usize = per_call.iter().sum();
    assert_eq!(n, 0, "{what}: {n} allocations in 10 calls: {per_call:?}");
}

#[test]
fn no_allocation_per_call_in_steady_state() {
    let device = Device::Cpu;
    for len in [2048usize, 32_000] {
        // Nearly flat logits, so that every path (including the exact top-p one) is taken.
        let values = spread_logits(len as u64, len, 0.5);
        let vector = Tensor::new(values.as_slice(), &device).unwrap();
        let row = vector.reshape((1, len)).unwrap();
        let history: Vec<u32> = (0..64).map(|i| (i * 97) as u32 % len as u32).collect();
        let mut edits: Vec<(u32, f32)> = history.iter().map(|&t| (t, -1.0)).collect();
        edits.sort_by_key(|&(t, _)| t);
        edits.dedup_by_key(|&mut (t, _)| t);
        for sampling in all_variants() {
            let what = format!("{sampling:?} vocab {len}");
            let mut s = NativeSampler::from_sampling(1, sampling.clone()).unwrap();
            assert_steady(&format!("{what} [V] tensor"), || {
                s.sample(&vector, &[]).unwrap();
            });
            assert_steady(&format!("{what} [1, V] tensor"), || {
                s.sample(&row, &[]).unwrap();
            });
            assert_steady(&format!("{what} slice"), || {
                s.sample_slice(&values, &[]).unwrap();
            });
            assert_steady(&format!("{what} edited"), || {
                s.sample_edited(&values, &edits, &[]).unwrap();
            });
            let mut boxed: BoxSampler = NativeSampler::from_sampling(1, sampling.clone())
                .unwrap()
                .with_repetition_penalty(1.1, 64)
                .unwrap()
                .boxed();
            assert_steady(&format!("{what} penalty"), || {
                boxed.sample(&vector, &history).unwrap();
            });
            let mut stacked: BoxSampler = NativeSampler::from_sampling(1, sampling.clone())
                .unwrap()
                .with_repetition_penalty(1.1, 64)
                .unwrap()
                .with_repetition_penalty(1.2, 16)
                .unwrap()
                .boxed();
            assert_steady(&format!("{what} two stacked penalties"), || {
                stacked.sample(&vector, &history).unwrap();
            });
        }
    }
}

#[test]
fn no_allocation_per_call_at_128256_tokens() {
    let len = 128_256;
    let values = spread_logits(5, len, 30.0);
    let vector = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
    let history: Vec<u32> = (0..64).map(|i| i * 1999).collect();
    for sampling in [
        Sampling::TopKThenTopP {
            k: 50,
            p: 0.9,
            temperature: 1.0,
        },
        Sampling::TopP {
            p: 0.9,
            temperature: 1.0,
        },
    ] {
        let mut penalised = NativeSampler::from_sampling(1, sampling.clone())
            .unwrap()
            .with_repetition_penalty(1.1, 64)
            .unwrap();
        for _ in 0..2 {
            penalised.sample(&vector, &history).unwrap();
        }
        let n = allocations(|| {
            for _ in 0..3 {
                penalised.sample(&vector, &history).unwrap();
            }
        });
        assert_eq!(n, 0, "{sampling:?}: {n} allocations");
    }
}
