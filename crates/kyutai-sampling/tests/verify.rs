//! `verify_draft` is lossless: the tokens it emits are distributed as sequential sampling from
//! the chain would draw them.
//!
//! A toy target model gives logits at each position that depend on the tokens before it, and a
//! toy drafter proposes K = 2 tokens from its own distributions (which also depend on the
//! prefix). Each trial verifies one draft; when fewer than two tokens come back, the second is
//! drawn by a verification of an empty draft (a plain chain draw) on the target's logits after
//! the first, as the next round of generation would. The joint distribution of the first two
//! emitted tokens is then tested (chi-square, alpha 1e-6, fixed seeds) against
//! `p1(t1) · p2(t2 | t1)`, with `p` the chain's own `probabilities`, and the mean accepted
//! count against its exact value within 4.89 standard errors (two-sided alpha 1e-6).

mod native_support;

use candle_core::{Device, Tensor};
use kyutai_sampling::{verify_draft, Chain, ChainConfig, Convention, SamplingError};
use native_support::{assert_fits, spread_logits};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const V: usize = 6;
const TRIALS: usize = 60_000;
/// Two-sided normal quantile for alpha = 1e-6.
const Z: f64 = 4.89;

/// The target's logits after `prefix` (the tokens emitted since the prompt).
fn target(prefix: &[u32]) -> Vec<f32> {
    let mut x = spread_logits(11 + prefix.len() as u64, V, 4.0);
    for (i, &t) in prefix.iter().enumerate() {
        x[t as usize] += 0.7 + 0.3 * i as f32;
        x[(t as usize + 1) % V] -= 0.5;
    }
    x
}

/// How the drafter's distribution after a prefix is built.
#[derive(Clone, Copy, Debug)]
enum Drafter {
    /// q = the chain's own p (every token accepted).
    SameAsTarget,
    /// Mass only on tokens the chain masks (nothing accepted).
    Disjoint,
    /// A distribution of its own, overlapping the target's.
    Other,
    /// Deterministic: the most likely target token after the prefix shifted by one
    /// (`draft_probs` is None).
    Deterministic,
}

fn draft_dist(drafter: Drafter, chain: &mut Chain, history: &[u32], prefix: &[u32]) -> Vec<f32> {
    let full: Vec<u32> = history.iter().chain(prefix).copied().collect();
    match drafter {
        Drafter::SameAsTarget => chain.probabilities(&target(prefix), &full).unwrap(),
        Drafter::Disjoint => {
            let p = chain.probabilities(&target(prefix), &full).unwrap();
            let zeros: Vec<usize> = (0..V).filter(|&i| p[i] == 0.0).collect();
            assert!(!zeros.is_empty(), "the chain must mask a token");
            let mut q = vec![0.0f32; V];
            for &i in &zeros {
                q[i] = 1.0 / zeros.len() as f32;
            }
            q
        }
        Drafter::Other | Drafter::Deterministic => {
            let seed = 99 + prefix.iter().map(|&t| t as u64 + 1).sum::<u64>();
            let w: Vec<f32> = spread_logits(seed, V, 3.0)
                .iter()
                .map(|x| x.exp())
                .collect();
            let s: f32 = w.iter().sum();
            w.iter().map(|x| x / s).collect()
        }
    }
}

fn pick(q: &[f32], rng: &mut ChaCha8Rng) -> u32 {
    let u: f32 = rng.random::<f32>() * q.iter().sum::<f32>();
    let mut acc = 0.0;
    for (i, &p) in q.iter().enumerate() {
        acc += p;
        if p > 0.0 && acc > u {
            return i as u32;
        }
    }
    q.iter().rposition(|&p| p > 0.0).unwrap() as u32
}

fn argmax(q: &[f32]) -> u32 {
    let mut best = 0;
    for i in 1..q.len() {
        if q[i] > q[best] {
            best = i;
        }
    }
    best as u32
}

fn rows(prefixes: &[&[u32]]) -> Tensor {
    let flat: Vec<f32> = prefixes.iter().flat_map(|p| target(p)).collect();
    Tensor::from_vec(flat, (prefixes.len(), V), &Device::Cpu).unwrap()
}

fn check(name: &str, config: &ChainConfig, history: &[u32], drafter: Drafter, seed: u64) {
    let mut chain = config.build().unwrap();
    // A separate chain for the reference distributions and the drafter (no shared stream).
    let mut probe = config.build().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // Exact reference: p1, p2(. | t1), and the expected accepted count.
    let p1 = probe.probabilities(&target(&[]), history).unwrap();
    let mut joint = vec![0.0f64; V * V];
    let mut expected_accepted = 0.0f64;
    let q1 = draft_dist(drafter, &mut probe, history, &[]);
    let overlap = |p: &[f32], q: &[f32]| -> f64 {
        p.iter()
            .zip(q)
            .map(|(&a, &b)| f64::from(a).min(f64::from(b)))
            .sum()
    };
    for t1 in 0..V as u32 {
        let h: Vec<u32> = history.iter().copied().chain([t1]).collect();
        let p2 = probe.probabilities(&target(&[t1]), &h).unwrap();
        for t2 in 0..V {
            joint[t1 as usize * V + t2] = f64::from(p1[t1 as usize]) * f64::from(p2[t2]);
        }
    }
    match drafter {
        Drafter::Deterministic => {
            let x1 = argmax(&q1);
            let h: Vec<u32> = history.iter().copied().chain([x1]).collect();
            let x2 = argmax(&draft_dist(drafter, &mut probe, history, &[x1]));
            let p2 = probe.probabilities(&target(&[x1]), &h).unwrap();
            let a1 = f64::from(p1[x1 as usize]);
            expected_accepted = a1 * (1.0 + f64::from(p2[x2 as usize]));
        }
        _ => {
            let beta1 = overlap(&p1, &q1);
            expected_accepted += beta1;
            for x1 in 0..V as u32 {
                let both = f64::from(p1[x1 as usize]).min(f64::from(q1[x1 as usize]));
                if both == 0.0 {
                    continue;
                }
                let h: Vec<u32> = history.iter().copied().chain([x1]).collect();
                let p2 = probe.probabilities(&target(&[x1]), &h).unwrap();
                let q2 = draft_dist(drafter, &mut probe, history, &[x1]);
                expected_accepted += both * overlap(&p2, &q2);
            }
        }
    }

    let mut counts = vec![0u64; V * V];
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    for _ in 0..TRIALS {
        let q1 = draft_dist(drafter, &mut probe, history, &[]);
        let x1 = match drafter {
            Drafter::Deterministic => argmax(&q1),
            _ => pick(&q1, &mut rng),
        };
        let q2 = draft_dist(drafter, &mut probe, history, &[x1]);
        let x2 = match drafter {
            Drafter::Deterministic => argmax(&q2),
            _ => pick(&q2, &mut rng),
        };
        let logits = rows(&[&[], &[x1], &[x1, x2]]);
        let qs = [q1, q2];
        let probs = match drafter {
            Drafter::Deterministic => None,
            _ => Some(&qs[..]),
        };
        let v = verify_draft(&mut chain, &logits, history, &[x1, x2], probs).unwrap();
        assert_eq!(v.tokens.len(), v.accepted + 1, "{name}");
        assert!(v.tokens[..v.accepted] == [x1, x2][..v.accepted], "{name}");
        let t1 = v.tokens[0];
        let t2 = match v.tokens.get(1) {
            Some(&t) => t,
            None => {
                let h: Vec<u32> = history.iter().copied().chain([t1]).collect();
                let next = verify_draft(&mut chain, &rows(&[&[t1]]), &h, &[], None).unwrap();
                assert_eq!((next.accepted, next.tokens.len()), (0, 1));
                next.tokens[0]
            }
        };
        counts[t1 as usize * V + t2 as usize] += 1;
        let a = v.accepted as f64;
        sum += a;
        sum_sq += a * a;
    }
    assert_fits(
        &counts,
        &joint,
        &format!("{name}: joint of the first two tokens"),
    );
    let n = TRIALS as f64;
    let mean = sum / n;
    let se = ((sum_sq / n - mean * mean).max(0.0) / n).sqrt();
    assert!(
        (mean - expected_accepted).abs() <= Z * se + 1e-6,
        "{name}: mean accepted {mean} vs expected {expected_accepted} (se {se})"
    );
    match drafter {
        Drafter::SameAsTarget => assert!(mean > 1.99, "{name}: q = p accepts all, got {mean}"),
        Drafter::Disjoint => assert_eq!(mean, 0.0, "{name}: disjoint supports accept nothing"),
        _ => {}
    }
}

fn configs() -> Vec<(&'static str, ChainConfig)> {
    vec![
        (
            "temperature 0.9",
            ChainConfig {
                temperature: 0.9,
                seed: 1,
                ..ChainConfig::default()
            },
        ),
        (
            "llama.cpp top-k 4, min-p, penalties",
            ChainConfig {
                top_k: 4,
                min_p: 0.02,
                repetition_penalty: 1.3,
                repeat_last_n: Some(8),
                seed: 2,
                ..ChainConfig::llama_cpp()
            },
        ),
        (
            "hf top-p 0.8, repetition 1.5",
            ChainConfig {
                convention: Convention::HuggingFace,
                top_p: 0.8,
                repetition_penalty: 1.5,
                seed: 3,
                ..ChainConfig::default()
            },
        ),
    ]
}

#[test]
fn draft_equal_to_target_is_always_accepted() {
    for (name, config) in configs() {
        check(name, &config, &[1, 4], Drafter::SameAsTarget, 10);
    }
}

#[test]
fn disjoint_draft_is_never_accepted() {
    for (name, config) in configs().into_iter().skip(1) {
        check(name, &config, &[2], Drafter::Disjoint, 20);
    }
}

#[test]
fn overlapping_draft_keeps_the_target_distribution() {
    for (name, config) in configs() {
        check(name, &config, &[0, 3, 3], Drafter::Other, 30);
    }
}

#[test]
fn deterministic_draft_is_exact_match() {
    for (name, config) in configs() {
        check(name, &config, &[5], Drafter::Deterministic, 40);
    }
}

#[test]
fn greedy_chain_accepts_exactly_its_choices() {
    let mut chain = ChainConfig {
        do_sample: false,
        ..ChainConfig::default()
    }
    .build()
    .unwrap();
    let g0 = argmax(&target(&[]));
    let g1 = argmax(&target(&[g0]));
    let g2 = argmax(&target(&[g0, g1]));
    let wrong = (g1 + 1) % V as u32;
    let q = vec![vec![1.0 / V as f32; V]; 2];
    let all = verify_draft(
        &mut chain,
        &rows(&[&[], &[g0], &[g0, g1]]),
        &[],
        &[g0, g1],
        None,
    );
    assert_eq!(all.unwrap().tokens, [g0, g1, g2]);
    let v = verify_draft(
        &mut chain,
        &rows(&[&[], &[g0], &[g0, wrong]]),
        &[],
        &[g0, wrong],
        Some(&q),
    );
    let v = v.unwrap();
    assert_eq!((v.tokens, v.accepted), (vec![g0, g1], 1));
}

#[test]
fn verification_reproduces_with_the_seed() {
    let config = ChainConfig {
        seed: 5,
        ..ChainConfig::default()
    };
    let run = || {
        let mut chain = config.build().unwrap();
        let q = vec![vec![1.0 / V as f32; V]; 2];
        (0..50)
            .map(|i| {
                let d = [(i % V) as u32, ((i * 7) % V) as u32];
                verify_draft(&mut chain, &rows(&[&[], &[d[0]], &d]), &[], &d, Some(&q)).unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn bad_shapes_and_probabilities_are_typed_errors() {
    let mut chain = ChainConfig::default().build().unwrap();
    let three = rows(&[&[], &[0], &[0, 1]]);
    let q = vec![vec![1.0 / V as f32; V]; 2];
    // Rows must be K + 1.
    let e = verify_draft(&mut chain, &three, &[], &[0], None).unwrap_err();
    assert!(
        matches!(
            e,
            SamplingError::DraftMismatch {
                what: "target_logits",
                expected: 2,
                got: 3
            }
        ),
        "{e}"
    );
    // draft_probs rows and widths.
    let e = verify_draft(&mut chain, &three, &[], &[0, 1], Some(&q[..1])).unwrap_err();
    assert!(
        matches!(
            e,
            SamplingError::DraftMismatch {
                what: "draft_probs",
                expected: 2,
                got: 1
            }
        ),
        "{e}"
    );
    let narrow = vec![vec![0.5f32; V - 1]; 2];
    let e = verify_draft(&mut chain, &three, &[], &[0, 1], Some(&narrow)).unwrap_err();
    assert!(
        matches!(
            e,
            SamplingError::DraftMismatch {
                what: "draft_probs row",
                ..
            }
        ),
        "{e}"
    );
    // A draft token the drafter gave probability 0, NaN or infinity.
    for bad in [0.0f32, f32::NAN, f32::INFINITY, -0.5] {
        let mut q0 = q.clone();
        q0[1][1] = bad;
        let e = verify_draft(&mut chain, &three, &[], &[0, 1], Some(&q0)).unwrap_err();
        assert!(
            matches!(e, SamplingError::DraftProbability { token: 1, .. }),
            "{bad}: {e}"
        );
    }
    // Out of vocabulary.
    let e = verify_draft(&mut chain, &three, &[], &[0, V as u32], None).unwrap_err();
    assert!(
        matches!(e, SamplingError::TokenOutOfVocab { list: "draft", .. }),
        "{e}"
    );
    // Wrong rank, empty vocabulary, integer dtype.
    let flat = Tensor::new(&[0.0f32; V], &Device::Cpu).unwrap();
    assert!(matches!(
        verify_draft(&mut chain, &flat, &[], &[], None),
        Err(SamplingError::InvalidShape { .. })
    ));
    let empty = Tensor::zeros((1, 0), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        verify_draft(&mut chain, &empty, &[], &[], None),
        Err(SamplingError::EmptyLogits)
    ));
    let ints = Tensor::zeros((1, V), candle_core::DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        verify_draft(&mut chain, &ints, &[], &[], None),
        Err(SamplingError::UnsupportedDType(_))
    ));
    // Bad logits in a row.
    let mut values: Vec<f32> = (0..2 * V).map(|i| i as f32 * 0.1).collect();
    values[V + 2] = f32::NAN;
    let nan = Tensor::from_vec(values, (2, V), &Device::Cpu).unwrap();
    let e = verify_draft(&mut chain, &nan, &[], &[0], Some(&q[..1])).unwrap_err();
    assert!(matches!(e, SamplingError::NonFiniteLogit { .. }), "{e}");
    // Mirostat's distributions depend on its draws.
    let mut mirostat = ChainConfig {
        mirostat: 2,
        ..ChainConfig::default()
    }
    .build()
    .unwrap();
    let e = verify_draft(&mut mirostat, &three, &[], &[0, 1], None).unwrap_err();
    assert!(
        matches!(e, SamplingError::InvalidConfig { ref field, .. } if field == "mirostat"),
        "{e}"
    );
}

#[test]
fn dtypes_and_rank_three_give_the_same_tokens() {
    let config = ChainConfig {
        seed: 8,
        ..ChainConfig::default()
    };
    let logits = rows(&[&[], &[2], &[2, 3]]);
    let q = vec![vec![1.0 / V as f32; V]; 2];
    let base = verify_draft(
        &mut config.build().unwrap(),
        &logits,
        &[],
        &[2, 3],
        Some(&q),
    )
    .unwrap();
    let as_f64 = logits.to_dtype(candle_core::DType::F64).unwrap();
    let got = verify_draft(
        &mut config.build().unwrap(),
        &as_f64,
        &[],
        &[2, 3],
        Some(&q),
    )
    .unwrap();
    assert_eq!(got, base);
    let rank3 = logits.unsqueeze(1).unwrap();
    let got = verify_draft(&mut config.build().unwrap(), &rank3, &[], &[2, 3], Some(&q)).unwrap();
    assert_eq!(got, base);
}
