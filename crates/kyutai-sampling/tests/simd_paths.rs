//! Every compiled form of the dense passes gives bit-identical results: the same tokens from
//! the same seeds and the same `probabilities`, for every `Sampling` strategy and random chains
//! of every convention, on random logits (ties, masked tokens, edits included). One test, so
//! that switching the process-wide form never races another test.

use kyutai_sampling::{ChainConfig, Convention, NativeSampler, Sampler, SamplerExt, Sampling};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn logits(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match rng.random_range(0..20) {
            0 => f32::NEG_INFINITY,
            1 => 2.5,
            _ => rng.random_range(-12.0f32..12.0),
        })
        .collect()
}

/// Chains of every convention whose first stage runs a dense pass: plain, top-k, top-p, min-p,
/// typical, top-nσ, mirostat, and edits (penalties, DRY, biases).
fn chains() -> Vec<ChainConfig> {
    let hf = ChainConfig::default();
    vec![
        ChainConfig::llama_cpp(),
        ChainConfig {
            temperature: 0.7,
            ..hf.clone()
        },
        ChainConfig {
            top_k: 50,
            top_p: 0.9,
            temperature: 0.7,
            ..hf.clone()
        },
        ChainConfig {
            typical_p: 0.9,
            ..hf.clone()
        },
        ChainConfig {
            min_p: 0.05,
            repetition_penalty: 1.3,
            ..hf.clone()
        },
        ChainConfig {
            convention: Convention::Candle,
            top_k: 40,
            top_p: 0.6,
            ..hf.clone()
        },
        ChainConfig {
            convention: Convention::LlamaCpp,
            top_n_sigma: 1.0,
            ..hf.clone()
        },
        ChainConfig {
            convention: Convention::LlamaCpp,
            mirostat: 2,
            ..hf.clone()
        },
        ChainConfig {
            convention: Convention::LlamaCpp,
            dry_multiplier: 0.8,
            frequency_penalty: 0.2,
            logit_bias: [(3, 2.0), (5, -1e30)].into_iter().collect(),
            min_p: 0.02,
            ..hf.clone()
        },
        ChainConfig {
            epsilon_cutoff: 3e-4,
            eta_cutoff: 1e-3,
            ..hf
        },
    ]
}

/// Tokens and probabilities of every sampler on `cases`, under the form in use.
fn run(cases: &[(Vec<f32>, Vec<u32>)]) -> Vec<String> {
    let mut out = Vec::new();
    let strategies = [
        Sampling::ArgMax,
        Sampling::All { temperature: 0.8 },
        Sampling::TopK {
            k: 50,
            temperature: 0.8,
        },
        Sampling::TopK {
            k: 250,
            temperature: 0.8,
        },
        Sampling::TopP {
            p: 0.9,
            temperature: 1.1,
        },
        Sampling::TopKThenTopP {
            k: 40,
            p: 0.95,
            temperature: 0.7,
        },
        Sampling::GumbelSoftmax { temperature: 1.0 },
    ];
    for (i, (l, history)) in cases.iter().enumerate() {
        for (j, sampling) in strategies.iter().enumerate() {
            let mut s = NativeSampler::from_sampling((i * 7 + j) as u64, sampling.clone()).unwrap();
            let mut p = NativeSampler::from_sampling(j as u64, sampling.clone())
                .unwrap()
                .with_repetition_penalty(1.3, 64)
                .unwrap();
            let tokens: Vec<_> = (0..8)
                .map(|_| (s.sample_slice(l, history), p.sample_slice(l, history)))
                .collect();
            out.push(format!("{sampling:?} {tokens:?}"));
        }
        for (k, c) in chains().into_iter().enumerate() {
            let c = ChainConfig {
                seed: (i * 11 + k) as u64,
                ..c
            };
            let Ok(mut chain) = c.build() else { continue };
            let probs = chain
                .probabilities(l, history)
                .map(|p| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            let tokens: Vec<_> = (0..6).map(|_| chain.sample_slice(l, history)).collect();
            out.push(format!("{c:?} {probs:?} {tokens:?}"));
        }
    }
    out
}

#[test]
fn every_form_matches_the_portable_one_bit_for_bit() {
    // Under `KYUTAI_SAMPLING_SIMD=portable` (a CI step) the form chosen at start-up is the
    // portable one.
    if std::env::var("KYUTAI_SAMPLING_SIMD").is_ok_and(|v| v == "portable") {
        assert_eq!(kyutai_sampling::__simd::level(), "portable");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut cases: Vec<(Vec<f32>, Vec<u32>)> = [1usize, 7, 16, 33, 2048, 3001, 32000, 128256]
        .iter()
        .map(|&len| {
            let l = logits(&mut rng, len);
            let h = (0..40)
                .map(|_| rng.random_range(0..len as u32 + 3))
                .collect();
            (l, h)
        })
        .collect();
    // Signed zeros as the maximum, and the errors (a NaN, a `+inf`, everything masked).
    let mut zeros = vec![-1.0f32; 300];
    zeros[17] = -0.0;
    zeros[200] = 0.0;
    cases.push((zeros, vec![3]));
    for bad in [f32::NAN, f32::INFINITY] {
        let mut l = logits(&mut rng, 1000);
        l[613] = bad;
        cases.push((l, vec![]));
    }
    cases.push((vec![f32::NEG_INFINITY; 100], vec![]));

    let available = kyutai_sampling::__simd::available();
    assert_eq!(available.first(), Some(&"portable"));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(available.contains(&"avx2"), "{available:?}");
    }
    let results: Vec<(&str, Vec<String>)> = available
        .iter()
        .map(|&form| {
            assert!(kyutai_sampling::__simd::force(form));
            assert_eq!(kyutai_sampling::__simd::level(), form);
            let mut out = run(&cases);
            for (l, _) in &cases {
                out.push(format!("{:?}", kyutai_sampling::validate_logits(l)));
            }
            (form, out)
        })
        .collect();
    assert!(!kyutai_sampling::__simd::force("no-such-form"));
    kyutai_sampling::__simd::force_portable(false);
    let (_, portable) = &results[0];
    for (form, out) in &results[1..] {
        assert_eq!(portable.len(), out.len());
        for (a, b) in portable.iter().zip(out) {
            assert_eq!(a, b, "{form} differs from portable");
        }
    }
}
