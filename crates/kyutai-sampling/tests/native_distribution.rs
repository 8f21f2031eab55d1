//! `NativeSampler` draws from exactly the distributions of candle's `LogitsProcessor`.
//!
//! Each test compares the engine's draws with an independent reference (a full sort, a softmax
//! and cumulative sums in f64, in `native_support`) by a chi-square goodness-of-fit test at
//! alpha = 1e-6 with fixed seeds, and checks that no token of filtered probability 0 is ever
//! drawn. The engine's crate is compiled without optimisation in tests, so large vocabularies get
//! fewer draws and distributions with few categories.

mod native_support;

use kyutai_sampling::{NativeSampler, Sampler, Sampling, SamplingError};
use native_support::{assert_fits, counts, reference, spread_logits, variants, with_temperature};

const DRAWS: usize = 100_000;

/// Draws `draws` tokens from `logits` with a fresh sampler and tests them against the reference.
fn check(seed: u64, sampling: Sampling, logits: &[f32], draws: usize) {
    let mut sampler = NativeSampler::from_sampling(seed, sampling.clone()).unwrap();
    let observed = counts(&mut sampler, logits, draws);
    let what = format!("{sampling:?}, vocab {}, seed {seed}", logits.len());
    assert_fits(&observed, &reference(logits, &sampling), &what);
}

/// Probability mass of the `k` most likely tokens (no ties in `logits`).
fn top_mass(logits: &[f32], k: usize, temperature: f64) -> f64 {
    let all = reference(logits, &Sampling::All { temperature });
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
    sorted[..k].iter().sum()
}

#[test]
fn the_native_support_critical_values_are_right() {
    // df = 2 has a closed form: -2 ln(alpha). df = 1 is the square of the normal quantile
    // z(1 - alpha/2) = 4.891638...
    let two = native_support::chi_square_critical(2, 1e-6);
    assert!((two - (-2.0 * 1e-6f64.ln())).abs() < 1e-6, "{two}");
    let one = native_support::chi_square_critical(1, 1e-6);
    assert!((one - 4.891_638_475_7f64.powi(2)).abs() < 1e-4, "{one}");
    // Monotone in df and above the mean.
    let ten = native_support::chi_square_critical(10, 1e-6);
    assert!(ten > two && ten > 10.0 && ten < 60.0, "{ten}");
}

#[test]
fn all_draws_the_softmax() {
    check(
        1,
        Sampling::All { temperature: 0.9 },
        &spread_logits(10, 120, 8.0),
        DRAWS,
    );
}

#[test]
fn gumbel_softmax_draws_the_softmax() {
    check(
        2,
        Sampling::GumbelSoftmax { temperature: 1.0 },
        &spread_logits(11, 120, 8.0),
        DRAWS,
    );
    // Two levels of Gumbel variates: a vocabulary of several blocks of 256 tokens.
    check(
        3,
        Sampling::GumbelSoftmax { temperature: 0.5 },
        &spread_logits(12, 700, 6.0),
        10_000,
    );
}

#[test]
fn top_k_draws_the_renormalised_top_k() {
    check(
        4,
        Sampling::TopK {
            k: 20,
            temperature: 1.1,
        },
        &spread_logits(13, 120, 8.0),
        DRAWS,
    );
}

#[test]
fn top_p_draws_the_renormalised_nucleus() {
    let logits = spread_logits(14, 120, 8.0);
    check(
        5,
        Sampling::TopP {
            p: 0.8,
            temperature: 0.7,
        },
        &logits,
        DRAWS,
    );
    check(
        6,
        Sampling::TopP {
            p: 0.3,
            temperature: 1.0,
        },
        &logits,
        DRAWS,
    );
}

#[test]
fn top_p_with_a_small_nucleus_in_a_flat_vocabulary() {
    // Nearly flat logits and a small p: most draws from the full distribution fall outside the
    // nucleus, which exercises the exact (non-rejection) path.
    let logits = spread_logits(15, 300, 0.5);
    let sampling = Sampling::TopP {
        p: 0.04,
        temperature: 1.0,
    };
    let kept = reference(&logits, &sampling)
        .iter()
        .filter(|&&p| p > 0.0)
        .count();
    assert!((8..=20).contains(&kept), "nucleus of {kept} tokens");
    check(7, sampling, &logits, 50_000);
}

#[test]
fn top_p_on_flat_logits_keeps_ninety_percent_of_the_vocabulary() {
    let logits = spread_logits(16, 400, 0.05);
    let sampling = Sampling::TopP {
        p: 0.9,
        temperature: 1.0,
    };
    let kept = reference(&logits, &sampling)
        .iter()
        .filter(|&&p| p > 0.0)
        .count();
    assert!((355..=365).contains(&kept), "nucleus of {kept} tokens");
    check(8, sampling, &logits, 30_000);
}

#[test]
fn top_k_then_top_p_cuts_inside_the_top_k() {
    let logits = spread_logits(17, 120, 8.0);
    let (k, p, temperature) = (30, 0.6, 1.3);
    // Precondition: the top k hold more than p, so the nucleus cuts inside them.
    assert!(top_mass(&logits, k, temperature) > p);
    check(
        9,
        Sampling::TopKThenTopP { k, p, temperature },
        &logits,
        DRAWS,
    );
}

#[test]
fn top_k_then_top_p_keeps_all_k_when_they_hold_less_than_p() {
    // candle's rule: p is compared with the top k's share of the whole vocabulary, so when that
    // share is below p every one of the k is kept (renormalising over the k would cut some).
    let logits = spread_logits(18, 120, 8.0);
    let (k, p, temperature) = (10, 0.95, 1.3);
    let mass = top_mass(&logits, k, temperature);
    assert!(mass < p, "precondition: top-k mass {mass}");
    let probs = reference(&logits, &Sampling::TopKThenTopP { k, p, temperature });
    assert_eq!(probs.iter().filter(|&&q| q > 0.0).count(), k);
    check(
        10,
        Sampling::TopKThenTopP { k, p, temperature },
        &logits,
        DRAWS,
    );
}

#[test]
fn degenerate_parameters_fall_back_like_candle() {
    let logits = spread_logits(19, 60, 6.0);
    // p = 1 is plain sampling; k at or above the vocabulary keeps every token; TopKThenTopP with
    // k above the vocabulary is TopP.
    for (seed, sampling) in [
        (
            20,
            Sampling::TopP {
                p: 1.0,
                temperature: 1.0,
            },
        ),
        (
            21,
            Sampling::TopK {
                k: 60,
                temperature: 1.0,
            },
        ),
        (
            22,
            Sampling::TopKThenTopP {
                k: 1000,
                p: 0.5,
                temperature: 1.0,
            },
        ),
        (
            23,
            Sampling::TopKThenTopP {
                k: 1000,
                p: 1.0,
                temperature: 1.0,
            },
        ),
    ] {
        check(seed, sampling, &logits, 30_000);
    }
}

#[test]
fn argmax_returns_the_lowest_index_of_the_maximum() {
    let mut sampler = NativeSampler::from_sampling(0, Sampling::ArgMax).unwrap();
    for seed in 0..200u64 {
        let len = 1 + (seed as usize * 37) % 300;
        let mut logits = spread_logits(seed, len, 10.0);
        // Make ties at the maximum in some vectors.
        if seed % 3 == 0 && len > 4 {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            logits[len / 2] = max;
            logits[len - 1] = max;
        }
        if seed % 5 == 0 && len > 1 {
            logits[0] = f32::NEG_INFINITY;
        }
        let expected = reference(&logits, &Sampling::ArgMax)
            .iter()
            .position(|&p| p == 1.0)
            .unwrap();
        assert_eq!(
            sampler.sample_slice(&logits, &[]).unwrap() as usize,
            expected,
            "seed {seed}"
        );
    }
    // Ties everywhere.
    assert_eq!(sampler.sample_slice(&[2.0; 50], &[]).unwrap(), 0);
    let mut logits = vec![1.0f32; 1000];
    logits[517] = 3.0;
    logits[900] = 3.0;
    assert_eq!(sampler.sample_slice(&logits, &[]).unwrap(), 517);
}

#[test]
fn ties_at_the_top_k_boundary_keep_the_lowest_indices() {
    // Four tokens tie for the second place; k = 3 keeps the best and the first two of the tie.
    let mut logits = vec![-3.0f32; 20];
    logits[11] = 2.0;
    for i in [4, 7, 9, 15] {
        logits[i] = 1.0;
    }
    let sampling = Sampling::TopK {
        k: 3,
        temperature: 1.0,
    };
    let probs = reference(&logits, &sampling);
    let kept: Vec<usize> = (0..20).filter(|&i| probs[i] > 0.0).collect();
    assert_eq!(kept, vec![4, 7, 11]);
    check(30, sampling, &logits, DRAWS);
    // The same within TopKThenTopP (p large enough to keep all three).
    check(
        31,
        Sampling::TopKThenTopP {
            k: 3,
            p: 0.99,
            temperature: 1.0,
        },
        &logits,
        DRAWS,
    );
}

#[test]
fn ties_at_the_top_p_boundary_keep_the_lowest_indices() {
    // Eight equal logits (probability 1/8 each): p = 0.5 is reached exactly after four tokens,
    // so tokens 0..4 are kept; p = 0.51 needs a fifth. Masked tokens in between change nothing.
    let mut logits = vec![0.25f32; 10];
    logits[3] = f32::NEG_INFINITY;
    logits[6] = f32::NEG_INFINITY;
    for (p, expected) in [(0.5, vec![0, 1, 2, 4]), (0.51, vec![0, 1, 2, 4, 5])] {
        let sampling = Sampling::TopP {
            p,
            temperature: 1.0,
        };
        let probs = reference(&logits, &sampling);
        let kept: Vec<usize> = (0..10).filter(|&i| probs[i] > 0.0).collect();
        assert_eq!(kept, expected, "p = {p}");
        check(32, sampling, &logits, DRAWS);
    }
    // Ties that straddle the boundary below a distinct maximum, in TopKThenTopP: probabilities
    // 0.5 and five of 0.1. k = 5 keeps the first four of the tie, then p = 0.75 keeps the
    // maximum and the first three of the tie (preceding masses 0, 0.5, 0.6, 0.7, then 0.8).
    let ln = |x: f64| x.ln() as f32;
    let mut logits = vec![ln(0.1); 5];
    logits.insert(3, ln(0.5));
    let sampling = Sampling::TopKThenTopP {
        k: 5,
        p: 0.75,
        temperature: 1.0,
    };
    let probs = reference(&logits, &sampling);
    let kept: Vec<usize> = (0..6).filter(|&i| probs[i] > 0.0).collect();
    assert_eq!(kept, vec![0, 1, 2, 3]);
    check(33, sampling, &logits, DRAWS);
}

#[test]
fn tiny_temperatures_draw_among_the_maxima_only() {
    let mut logits = spread_logits(40, 100, 1.0);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let second = logits.iter().position(|&x| x < max).unwrap();
    logits[second] = max; // two maxima
    logits[second + 1] = max - 1e-5; // and a close third
    for temperature in [1e-6, 1e-7] {
        for (seed, sampling) in variants().into_iter().enumerate() {
            let sampling = with_temperature(&sampling, temperature);
            let probs = reference(&logits, &sampling);
            // The two maxima, and under T = 1e-6 the close third (e^-10 of a maximum; under
            // T = 1e-7, e^-100 is below the engine's 2^-127 and exactly 0).
            let support = probs.iter().filter(|&&p| p > 0.0).count();
            assert!((2..=3).contains(&support), "support {support}");
            check(seed as u64, sampling, &logits, 8_000);
        }
    }
}

#[test]
fn huge_temperatures_are_uniform_over_the_unmasked_tokens() {
    let mut logits = spread_logits(41, 50, 30.0);
    logits[7] = f32::NEG_INFINITY;
    logits[30] = f32::NEG_INFINITY;
    for temperature in [1e5, 1e6] {
        for (seed, sampling) in variants().into_iter().enumerate() {
            let sampling = with_temperature(&sampling, temperature);
            check(100 + seed as u64, sampling, &logits, 8_000);
        }
    }
}

#[test]
fn extreme_logits_at_the_largest_temperature() {
    // `x - max` overflows f32 for the two smaller extremes, but at T <= 1e6 their exact
    // probabilities are 0 anyway (gaps of more than 1e32 temperatures): only the tied maxima.
    let logits = [
        3e38f32,
        -3e38,
        0.0,
        1e38,
        3e38,
        f32::NEG_INFINITY,
        -f32::MAX,
    ];
    for (seed, sampling) in variants().into_iter().enumerate() {
        let sampling = with_temperature(&sampling, 1e6);
        let probs = reference(&logits, &sampling);
        let kept: Vec<usize> = (0..logits.len()).filter(|&i| probs[i] > 0.0).collect();
        assert!(kept == [0, 4] || kept == [0], "{sampling:?}: {kept:?}");
        check(300 + seed as u64, sampling, &logits, 4_000);
    }
    // The tester's case: T = 3e38 is now out of bounds (it drew a token of probability 0.067
    // never, because `x - max` had overflowed before scaling).
    for sampling in variants() {
        let sampling = with_temperature(&sampling, 3e38);
        assert!(matches!(
            NativeSampler::from_sampling(0, sampling),
            Err(SamplingError::InvalidParameter {
                name: "temperature",
                ..
            })
        ));
    }
}

#[test]
fn masked_and_negligible_tokens_are_never_drawn() {
    // Half the vocabulary is -inf, a quarter lies 200 below the maximum (weight e^-200: zero in
    // f32); none may ever come out.
    let mut logits = spread_logits(42, 200, 4.0);
    for i in (0..200).step_by(2) {
        logits[i] = f32::NEG_INFINITY;
    }
    for i in (1..200).step_by(4) {
        logits[i] = -200.0;
    }
    for (seed, sampling) in variants().into_iter().enumerate() {
        let mut sampler = NativeSampler::from_sampling(seed as u64, sampling.clone()).unwrap();
        let observed = counts(&mut sampler, &logits, 10_000);
        for (i, &c) in observed.iter().enumerate() {
            assert!(
                i % 4 == 3 || c == 0,
                "{sampling:?}: token {i} drawn {c} times"
            );
        }
        assert_fits(&observed, &reference(&logits, &sampling), "masked");
    }
}

#[test]
fn a_vocabulary_of_one() {
    for sampling in variants().into_iter().chain([Sampling::ArgMax]) {
        let mut sampler = NativeSampler::from_sampling(0, sampling).unwrap();
        for x in [0.0f32, -1e30, 3.5, f32::MAX, f32::MIN] {
            assert_eq!(sampler.sample_slice(&[x], &[]).unwrap(), 0);
        }
    }
}

#[test]
fn a_vocabulary_of_2048() {
    // Mimi's codebook size; every variant, fewer draws (the crate is unoptimised in tests).
    let logits = spread_logits(43, 2048, 40.0);
    for (seed, sampling) in variants().into_iter().enumerate() {
        check(200 + seed as u64, sampling, &logits, 4_000);
    }
    check(
        210,
        Sampling::TopK {
            k: 250,
            temperature: 0.8,
        },
        &logits,
        4_000,
    );
}

#[test]
fn a_vocabulary_of_128256() {
    // Llama 3's vocabulary. A few draws per variant (a draw costs milliseconds unoptimised): the
    // mass sits on five tokens, spread over several blocks, and everything else is far below
    // or masked.
    let mut logits = vec![-40.0f32; 128_256];
    for i in (0..128_256).step_by(3) {
        logits[i] = f32::NEG_INFINITY;
    }
    for (i, x) in [
        (1u32, 1.0f32),
        (40_000, 1.5),
        (77_777, 0.5),
        (128_255, 1.2),
        (65_537, 0.8),
    ] {
        logits[i as usize] = x;
    }
    for (seed, sampling) in variants().into_iter().enumerate() {
        let sampling = match sampling {
            Sampling::TopK { .. } => Sampling::TopK {
                k: 3,
                temperature: 1.0,
            },
            Sampling::TopP { .. } => Sampling::TopP {
                p: 0.7,
                temperature: 1.0,
            },
            Sampling::TopKThenTopP { .. } => Sampling::TopKThenTopP {
                k: 4,
                p: 0.8,
                temperature: 1.0,
            },
            other => other,
        };
        check(300 + seed as u64, sampling, &logits, 60);
    }
    let mut argmax = NativeSampler::from_sampling(0, Sampling::ArgMax).unwrap();
    assert_eq!(argmax.sample_slice(&logits, &[]).unwrap(), 40_000);
}
