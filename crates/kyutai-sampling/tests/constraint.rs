//! A constrained chain samples exactly `chain(mask(logits))`: its `probabilities` equal those of
//! the unconstrained chain on logits whose disallowed tokens are `-inf`, for every convention and
//! kind of plan, and its draws follow them (chi-square, alpha 1e-6, fixed seeds).

mod native_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kyutai_sampling::{ChainConfig, Constraint, Convention, Sampler, SamplingError, TokenSet};
use native_support::assert_fits;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn logits(seed: u64, vocab: usize, ties: bool) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..vocab)
        .map(|i| {
            if i % 11 == 5 {
                f32::NEG_INFINITY
            } else if ties {
                (rng.random_range(-8i32..8) as f32) * 0.5
            } else {
                rng.random_range(-6.0f32..6.0)
            }
        })
        .collect()
}

fn subset(seed: u64, vocab: usize, share: f64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabc);
    (0..vocab as u32)
        .filter(|_| rng.random_bool(share))
        .collect()
}

fn masked(logits: &[f32], allowed: &[u32]) -> Vec<f32> {
    let mut out = vec![f32::NEG_INFINITY; logits.len()];
    for &t in allowed {
        out[t as usize] = logits[t as usize];
    }
    out
}

fn configs() -> Vec<(&'static str, ChainConfig)> {
    let hf = ChainConfig::default();
    vec![
        ("hf default", hf.clone()),
        (
            "hf top-k 50 top-p 0.9 repetition",
            ChainConfig {
                top_k: 50,
                top_p: 0.9,
                repetition_penalty: 1.3,
                ..hf.clone()
            },
        ),
        (
            "hf typical 0.7",
            ChainConfig {
                top_k: 0,
                typical_p: 0.7,
                ..hf.clone()
            },
        ),
        (
            "hf min-p 0.1 temperature 0.7",
            ChainConfig {
                top_k: 0,
                min_p: 0.1,
                temperature: 0.7,
                ..hf.clone()
            },
        ),
        (
            "hf greedy",
            ChainConfig {
                do_sample: false,
                ..hf.clone()
            },
        ),
        ("llama.cpp default", ChainConfig::llama_cpp()),
        (
            "llama.cpp top-k 5 penalties",
            ChainConfig {
                top_k: 5,
                frequency_penalty: 0.3,
                presence_penalty: 0.2,
                ..ChainConfig::llama_cpp()
            },
        ),
        (
            "llama.cpp mirostat v2",
            ChainConfig {
                mirostat: 2,
                ..ChainConfig::llama_cpp()
            },
        ),
        (
            "candle top-k 8 temperature 0.8",
            ChainConfig {
                convention: Convention::Candle,
                top_k: 8,
                temperature: 0.8,
                ..ChainConfig::default()
            },
        ),
        (
            "candle top-k then top-p",
            ChainConfig {
                convention: Convention::Candle,
                top_k: 20,
                top_p: 0.8,
                ..ChainConfig::default()
            },
        ),
        (
            "hf top-k 3 with allowed_token_ids",
            ChainConfig {
                top_k: 3,
                allowed_token_ids: Some((0..40).step_by(3).collect()),
                ..hf
            },
        ),
    ]
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6, "{what}: token {i}: {g} vs {w}");
    }
}

#[test]
fn probabilities_are_those_of_the_masked_logits() {
    let history = [3u32, 7, 7, 12, 40];
    for (name, config) in configs() {
        for (seed, vocab, ties, share) in [
            (1u64, 64usize, false, 0.3),
            (2, 200, true, 0.5),
            (3, 50_000, false, 0.1),
            (4, 50_000, true, 0.1),
            (5, 40, false, 0.9),
        ] {
            let x = logits(seed, vocab, ties);
            let allowed = subset(seed, vocab, share);
            let what = format!("{name}, vocab {vocab}, ties {ties}");
            let mut plain = config.build().unwrap();
            let want = match plain.probabilities(&masked(&x, &allowed), &history) {
                Ok(p) => p,
                Err(SamplingError::AllMasked) => continue,
                Err(e) => panic!("{what}: {e}"),
            };
            let mut constrained = config
                .build()
                .unwrap()
                .with_constraint(TokenSet::new(allowed.clone()));
            let got = constrained.probabilities(&x, &history).unwrap();
            assert_same(&got, &want, &what);
            for (t, &p) in got.iter().enumerate() {
                assert!(
                    p == 0.0 || allowed.contains(&(t as u32)),
                    "{what}: {t} not allowed"
                );
            }
        }
    }
}

#[test]
fn draws_follow_the_masked_distribution() {
    const DRAWS: usize = 60_000;
    for (name, config) in configs() {
        if !config.do_sample || config.mirostat != 0 {
            // Greedy is covered above; mirostat's distribution moves with every draw.
            continue;
        }
        let x = logits(9, 48, false);
        let allowed = subset(9, 48, 0.4);
        let mut plain = ChainConfig {
            seed: 77,
            ..config.clone()
        }
        .build()
        .unwrap();
        let want: Vec<f64> = match plain.probabilities(&masked(&x, &allowed), &[]) {
            Ok(p) => p.iter().map(|&p| f64::from(p)).collect(),
            Err(SamplingError::AllMasked) => continue,
            Err(e) => panic!("{name}: {e}"),
        };
        let mut chain = ChainConfig {
            seed: 77,
            ..config.clone()
        }
        .build()
        .unwrap()
        .with_constraint(TokenSet::new(allowed));
        let mut counts = vec![0u64; x.len()];
        for _ in 0..DRAWS {
            counts[chain.sample_slice(&x, &[]).unwrap() as usize] += 1;
        }
        assert_fits(&counts, &want, name);
    }
}

/// Allows tokens above the last one in the history (all of them at the start), and counts its
/// calls in a counter shared with the test.
#[derive(Clone)]
struct Rising(Arc<AtomicUsize>);

impl Constraint for Rising {
    fn allowed(&mut self, history: &[u32], mask: &mut [u32]) -> Result<(), SamplingError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let from = history.last().map_or(0, |&t| t + 1);
        for t in from..(mask.len() * 32) as u32 {
            mask[(t / 32) as usize] |= 1 << (t % 32);
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
    fn boxed_clone(&self) -> Box<dyn Constraint> {
        Box::new(Rising(Arc::new(AtomicUsize::new(
            self.0.load(Ordering::Relaxed),
        ))))
    }
}

#[test]
fn the_mask_follows_the_history() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut chain = ChainConfig {
        seed: 3,
        ..ChainConfig::default()
    }
    .build()
    .unwrap()
    .with_constraint(Rising(calls.clone()));
    let x = vec![0.0f32; 70];
    let mut history = Vec::new();
    for _ in 0..10 {
        match chain.sample_slice(&x, &history) {
            Ok(t) => {
                assert!(
                    history.last().is_none_or(|&l| t > l),
                    "{t} after {history:?}"
                );
                history.push(t);
            }
            Err(SamplingError::AllMasked) => {
                assert_eq!(history.last(), Some(&69));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(calls.load(Ordering::Relaxed) > 0);
    // Reset reaches the constraint; a clone owns its own.
    let clone = chain.clone();
    chain.reset();
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    drop(clone);
    // The constraint's last token: nothing allowed after 69.
    assert!(matches!(
        chain.sample_slice(&x, &[69]),
        Err(SamplingError::AllMasked)
    ));
}

#[test]
fn empty_or_fully_masked_allowed_sets_are_all_masked() {
    let x = [1.0f32, f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY];
    for config in [
        ChainConfig::default(),
        ChainConfig::llama_cpp(),
        ChainConfig {
            do_sample: false,
            ..ChainConfig::default()
        },
    ] {
        let mut empty = config.build().unwrap().with_constraint(TokenSet::new([]));
        assert!(matches!(
            empty.sample_slice(&x, &[]),
            Err(SamplingError::AllMasked)
        ));
        let mut only_masked = config
            .build()
            .unwrap()
            .with_constraint(TokenSet::new([1, 3, 99]));
        assert!(matches!(
            only_masked.sample_slice(&x, &[]),
            Err(SamplingError::AllMasked)
        ));
        assert!(matches!(
            only_masked.probabilities(&x, &[]),
            Err(SamplingError::AllMasked)
        ));
    }
}

#[test]
fn disallowed_inputs_are_still_validated() {
    let mut chain = ChainConfig::llama_cpp()
        .build()
        .unwrap()
        .with_constraint(TokenSet::new([0]));
    for bad in [f32::NAN, f32::INFINITY] {
        let x = [1.0f32, 2.0, bad];
        assert!(matches!(
            chain.sample_slice(&x, &[]),
            Err(SamplingError::NonFiniteLogit { index: 2, .. })
        ));
    }
    // With edits in the plan, through the edited view.
    let mut penalised = ChainConfig {
        repetition_penalty: 1.5,
        ..ChainConfig::default()
    }
    .build()
    .unwrap()
    .with_constraint(TokenSet::new([0]));
    assert!(matches!(
        penalised.sample_slice(&[1.0, 2.0, f32::NAN], &[1]),
        Err(SamplingError::NonFiniteLogit { index: 2, .. })
    ));
}

#[test]
fn constraint_errors_reach_the_caller() {
    #[derive(Clone)]
    struct Broken;
    impl Constraint for Broken {
        fn allowed(&mut self, _: &[u32], _: &mut [u32]) -> Result<(), SamplingError> {
            Err(SamplingError::Constraint("grammar violated".into()))
        }
        fn boxed_clone(&self) -> Box<dyn Constraint> {
            Box::new(Broken)
        }
    }
    let mut chain = ChainConfig::default()
        .build()
        .unwrap()
        .with_constraint(Broken);
    let e = chain.sample_slice(&[0.0, 1.0], &[]).unwrap_err();
    assert!(
        matches!(e, SamplingError::Constraint(ref m) if m == "grammar violated"),
        "{e}"
    );
}

#[test]
fn bits_past_the_vocabulary_are_ignored() {
    #[derive(Clone)]
    struct All;
    impl Constraint for All {
        fn allowed(&mut self, _: &[u32], mask: &mut [u32]) -> Result<(), SamplingError> {
            mask.fill(u32::MAX);
            Ok(())
        }
        fn boxed_clone(&self) -> Box<dyn Constraint> {
            Box::new(All)
        }
    }
    for vocab in [1usize, 31, 32, 33, 100] {
        let x = logits(vocab as u64, vocab, false);
        let x: Vec<f32> = x.iter().map(|v| v.max(-3.0)).collect();
        let want = ChainConfig::llama_cpp()
            .build()
            .unwrap()
            .probabilities(&x, &[])
            .unwrap();
        let mut chain = ChainConfig::llama_cpp()
            .build()
            .unwrap()
            .with_constraint(All);
        assert_same(&chain.probabilities(&x, &[]).unwrap(), &want, "all allowed");
        for _ in 0..50 {
            assert!((chain.sample_slice(&x, &[]).unwrap() as usize) < vocab);
        }
    }
}
