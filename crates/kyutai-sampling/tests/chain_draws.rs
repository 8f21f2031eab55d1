//! `Chain::sample_slice` draws from the distribution `Chain::probabilities` reports, which is
//! the independent reference's (`chain_support::reference`), for several chains per convention,
//! both the ones the engine runs as a native strategy and the general candidate path.
//!
//! Each test is a chi-square goodness-of-fit test at alpha = 1e-6 with a fixed seed (the chance
//! that a correct engine fails one is 1e-6 per test; with fixed seeds a pass is reproducible),
//! and checks that no token of probability 0 is ever drawn. Mirostat's distribution changes
//! after every draw: its draws are grouped by the distribution in force at the step (which is
//! known before the draw), each group tested against its own distribution, and the statistics
//! summed (a sum of independent chi-squares, df summed). XTC's coin is drawn from the same
//! stream: with probability 1 its distribution is deterministic, with 0.5 the draws follow the
//! analytic mixture.

mod chain_support;
mod native_support;

use std::collections::BTreeMap;

use chain_support::{assert_close, candle_reference, reference, State};
use kyutai_sampling::{ChainConfig, Convention, NativeSampler, Sampler, Sampling, SamplingConfig};
use native_support::{assert_fits, chi_square_critical, spread_logits, ALPHA};

const DRAWS: usize = 100_000;

fn counts(chain: &mut dyn Sampler, logits: &[f32], history: &[u32], n: usize) -> Vec<u64> {
    let mut c = vec![0u64; logits.len()];
    for _ in 0..n {
        c[chain.sample_slice(logits, history).unwrap() as usize] += 1;
    }
    c
}

/// Draws from a fresh chain and tests them against the reference, then checks that
/// `probabilities` agrees with the reference too.
fn check(name: &str, config: &ChainConfig, logits: &[f32], history: &[u32], draws: usize) {
    let want = reference(config, logits, history, State::fires())
        .unwrap_or_else(|_| panic!("{name}: inputs too close to a threshold, choose others"));
    let mut chain = config.build().unwrap();
    let observed = counts(&mut chain, logits, history, draws);
    assert_fits(&observed, &want, &format!("{name}: draws"));
    let mut fresh = config.build().unwrap();
    let got = fresh.probabilities(logits, history).unwrap();
    assert_close(&got, &want, &format!("{name}: probabilities"));
}

fn kept(p: &[f64]) -> usize {
    p.iter().filter(|&&x| x > 0.0).count()
}

/// `spread_logits` (distinct values) with a few entries masked.
fn masked_logits(seed: u64, len: usize, spread: f32) -> Vec<f32> {
    let mut x = spread_logits(seed, len, spread);
    for i in (3..len).step_by(7) {
        x[i] = f32::NEG_INFINITY;
    }
    x
}

/// Half-integer logits with many exact ties.
fn tied_logits(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7) % 9) as f32 / 2.0 - 2.0).collect()
}

fn history(len: usize) -> Vec<u32> {
    (0..24).map(|i| ((i * 5 + 3) % len) as u32).collect()
}

// --- hf ------------------------------------------------------------------------------------

#[test]
fn hf_temperature_alone() {
    // The native engine's `All`.
    for (i, t) in [1.0f32, 0.7].into_iter().enumerate() {
        let c = ChainConfig {
            temperature: t,
            seed: 11 + i as u64,
            ..ChainConfig::default()
        };
        check(
            &format!("hf T {t}"),
            &c,
            &masked_logits(1, 40, 6.0),
            &[],
            DRAWS,
        );
    }
}

#[test]
fn hf_temperature_top_p() {
    // The native engine's `TopP`.
    let c = ChainConfig {
        temperature: 0.8,
        top_p: 0.8,
        seed: 12,
        ..ChainConfig::default()
    };
    let logits = spread_logits(2, 48, 6.0);
    check("hf T 0.8 top_p 0.8", &c, &logits, &[], DRAWS);
}

#[test]
fn hf_top_k_with_ties() {
    // The three largest logits tie and k = 2 falls inside the tie: transformers keeps it whole
    // (not a native strategy).
    let logits = tied_logits(30);
    let c = ChainConfig {
        temperature: 1.3,
        top_k: 2,
        seed: 13,
        ..ChainConfig::default()
    };
    let want = reference(&c, &logits, &[], State::holds()).unwrap();
    assert_eq!(kept(&want), 3, "the tie is kept");
    check("hf T 1.3 top_k 2 (ties)", &c, &logits, &[], DRAWS);
}

#[test]
fn hf_min_p_typical_epsilon_eta_sigma() {
    let logits = masked_logits(3, 50, 7.0);
    let chains = [
        ChainConfig {
            temperature: 0.9,
            min_p: 0.05,
            ..ChainConfig::default()
        },
        ChainConfig {
            typical_p: 0.6,
            ..ChainConfig::default()
        },
        ChainConfig {
            epsilon_cutoff: 0.01,
            eta_cutoff: 0.02,
            ..ChainConfig::default()
        },
        ChainConfig {
            top_n_sigma: 1.0,
            temperature: 1.5,
            ..ChainConfig::default()
        },
        ChainConfig {
            top_p: 0.6,
            min_keep: 6,
            ..ChainConfig::default()
        },
    ];
    for (i, c) in chains.into_iter().enumerate() {
        let c = ChainConfig {
            seed: 20 + i as u64,
            ..c
        };
        check(&format!("hf chain {i}"), &c, &logits, &[], DRAWS / 2);
    }
}

#[test]
fn hf_generation_chain_with_history() {
    let len = 64;
    let logits = spread_logits(4, len, 9.0);
    let c = ChainConfig {
        temperature: 0.7,
        top_k: 50,
        top_p: 0.9,
        repetition_penalty: 1.1,
        seed: 30,
        ..ChainConfig::default()
    };
    check("hf 0.7/50/0.9/1.1", &c, &logits, &history(len), DRAWS);
}

#[test]
fn hf_allowed_set_and_bans() {
    let len = 40;
    let logits = spread_logits(5, len, 5.0);
    let c = ChainConfig {
        temperature: 0.9,
        allowed_token_ids: Some(vec![1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 2]),
        suppress_tokens: vec![3],
        logit_bias: [(5, 2.0), (7, -1e30)].into_iter().collect(),
        min_length: 100,
        eos_token_id: vec![9],
        seed: 31,
        ..ChainConfig::default()
    };
    check("hf allowed + bans", &c, &logits, &history(len), DRAWS);
}

#[test]
fn hf_xtc_certain() {
    let logits = spread_logits(6, 24, 3.0);
    let c = ChainConfig {
        xtc_probability: 1.0,
        xtc_threshold: 0.05,
        seed: 32,
        ..ChainConfig::default()
    };
    let all = reference(&ChainConfig::default(), &logits, &[], State::holds()).unwrap();
    let want = reference(&c, &logits, &[], State::fires()).unwrap();
    assert!(kept(&want) < kept(&all), "XTC removes something");
    check("hf xtc 1.0", &c, &logits, &[], DRAWS);
}

#[test]
fn greedy_chains_always_draw_the_maximum() {
    let logits = [0.5f32, 2.0, 2.0, -1.0, 1.9];
    for c in [
        ChainConfig {
            do_sample: false,
            ..ChainConfig::default()
        },
        ChainConfig {
            temperature: 0.0,
            ..ChainConfig::llama_cpp()
        },
        ChainConfig {
            do_sample: false,
            allowed_token_ids: Some(vec![0, 2, 4]),
            convention: Convention::Candle,
            ..ChainConfig::default()
        },
    ] {
        let want = reference(&c, &logits, &[], State::holds()).unwrap();
        let mut chain = c.build().unwrap();
        let observed = counts(&mut chain, &logits, &[], 2_000);
        assert_fits(&observed, &want, &format!("{c:?}"));
        assert_eq!(observed.iter().filter(|&&n| n > 0).count(), 1);
    }
}

// --- llama.cpp -----------------------------------------------------------------------------

#[test]
fn llama_cpp_default_chain_with_penalties() {
    let len = 64;
    let logits = masked_logits(7, len, 6.0);
    let c = ChainConfig {
        repetition_penalty: 1.2,
        frequency_penalty: 0.1,
        presence_penalty: 0.2,
        seed: 40,
        ..ChainConfig::llama_cpp()
    };
    let want = reference(&c, &logits, &history(len), State::holds()).unwrap();
    assert!(kept(&want) > 5 && kept(&want) < 40, "{}", kept(&want));
    check("llama_cpp() + penalties", &c, &logits, &history(len), DRAWS);
}

#[test]
fn llama_cpp_top_k_then_temperature() {
    // The native engine's `TopK`.
    let c = ChainConfig {
        convention: Convention::LlamaCpp,
        top_k: 12,
        temperature: 0.8,
        seed: 41,
        ..ChainConfig::default()
    };
    check("llama top_k 12 T 0.8", &c, &tied_logits(40), &[], DRAWS);
}

#[test]
fn llama_cpp_filters() {
    let logits = masked_logits(8, 48, 7.0);
    let chains = [
        ChainConfig {
            top_p: 0.8,
            temperature: 0.7,
            ..ChainConfig::default()
        },
        ChainConfig {
            top_n_sigma: 1.5,
            temperature: 1.2,
            ..ChainConfig::default()
        },
        ChainConfig {
            dynatemp_range: 0.5,
            dynatemp_exponent: 1.5,
            temperature: 0.9,
            top_k: 20,
            ..ChainConfig::default()
        },
        ChainConfig {
            typical_p: 0.5,
            ..ChainConfig::default()
        },
        ChainConfig {
            xtc_probability: 1.0,
            xtc_threshold: 0.1,
            min_p: 0.02,
            ..ChainConfig::default()
        },
    ];
    for (i, c) in chains.into_iter().enumerate() {
        let c = ChainConfig {
            convention: Convention::LlamaCpp,
            seed: 50 + i as u64,
            ..c
        };
        check(&format!("llama chain {i}"), &c, &logits, &[], DRAWS / 2);
    }
}

#[test]
fn xtc_half_draws_the_mixture() {
    for conv in [Convention::LlamaCpp, Convention::HuggingFace] {
        let logits = spread_logits(9, 16, 3.0);
        let c = ChainConfig {
            convention: conv,
            xtc_probability: 0.5,
            xtc_threshold: 0.08,
            seed: 60,
            ..ChainConfig::default()
        };
        let fired = reference(&c, &logits, &[], State::fires()).unwrap();
        let held = reference(&c, &logits, &[], State::holds()).unwrap();
        assert!(kept(&fired) < kept(&held));
        let want: Vec<f64> = fired
            .iter()
            .zip(&held)
            .map(|(a, b)| 0.5 * a + 0.5 * b)
            .collect();
        let mut chain = c.build().unwrap();
        let observed = counts(&mut chain, &logits, &[], DRAWS);
        assert_fits(&observed, &want, &format!("{conv:?} xtc 0.5 mixture"));
        // And the same law when each draw is preceded by a `probabilities` call on a clone
        // (which draws the clone's coin, not the chain's).
        let mut chain = c.build().unwrap();
        let mut observed = vec![0u64; logits.len()];
        for _ in 0..DRAWS / 4 {
            let _ = chain.clone().probabilities(&logits, &[]).unwrap();
            observed[chain.sample_slice(&logits, &[]).unwrap() as usize] += 1;
        }
        assert_fits(&observed, &want, &format!("{conv:?} xtc 0.5 after clones"));
    }
}

/// Pearson's statistic of `counts` against `probs` with `assert_fits`'s pooling of small
/// expectations; `(statistic, degrees of freedom)`, `None` when fewer than two bins remain.
fn pearson(counts: &[u64], probs: &[f64]) -> Option<(f64, usize)> {
    let n: f64 = counts.iter().sum::<u64>() as f64;
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut pool = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        assert!(p > 0.0 || c == 0, "a token of probability 0 was drawn");
        if p == 0.0 {
            continue;
        }
        if p * n >= 5.0 {
            bins.push((c as f64, p * n));
        } else {
            pool.0 += c as f64;
            pool.1 += p * n;
        }
    }
    if pool.1 >= 5.0 {
        bins.push(pool);
    } else if pool.1 > 0.0 {
        let smallest = bins
            .iter_mut()
            .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap())?;
        smallest.0 += pool.0;
        smallest.1 += pool.1;
    }
    (bins.len() >= 2).then(|| {
        let stat = bins.iter().map(|&(o, e)| (o - e) * (o - e) / e).sum();
        (stat, bins.len() - 1)
    })
}

/// Runs `steps` draws of a mirostat chain, checking before each that `probabilities` is the
/// reference at the `μ` the test tracks itself (`μ ← μ − η (−log₂ p_sel − τ)` from `2τ`), then
/// tests the draws grouped by the distribution in force.
fn check_mirostat(name: &str, c: &ChainConfig, logits: &[f32], steps: usize) {
    let mut chain = c.build().unwrap();
    let mut mu = 2.0 * c.mirostat_tau;
    let mut groups: BTreeMap<Vec<usize>, (Vec<f64>, Vec<u64>)> = BTreeMap::new();
    let mut compared = 0;
    for step in 0..steps {
        let got = chain.probabilities(logits, &[]).unwrap();
        if let Ok(want) = reference(
            c,
            logits,
            &[],
            State {
                xtc_fires: false,
                mu: Some(f64::from(mu)),
            },
        ) {
            assert_close(&got, &want, &format!("{name} step {step}, mu {mu}"));
            compared += 1;
        }
        let support: Vec<usize> = (0..got.len()).filter(|&i| got[i] > 0.0).collect();
        let token = chain.sample_slice(logits, &[]).unwrap() as usize;
        assert!(
            got[token] > 0.0,
            "{name} step {step}: drew {token} of probability 0"
        );
        let entry = groups.entry(support).or_insert_with(|| {
            (
                got.iter().map(|&p| f64::from(p)).collect(),
                vec![0; got.len()],
            )
        });
        entry.1[token] += 1;
        let p = f64::from(got[token]);
        mu = (f64::from(mu) - f64::from(c.mirostat_eta) * (-p.log2() - f64::from(c.mirostat_tau)))
            as f32;
    }
    assert!(
        compared * 10 >= steps * 9,
        "{name}: {compared} of {steps} steps compared"
    );
    let (mut stat, mut df, mut used) = (0.0, 0, 0);
    for (probs, counts) in groups.values() {
        // Groups seen too rarely for the chi-square approximation are left out (their draws were
        // still checked to have positive probability).
        let n: u64 = counts.iter().sum();
        if n < 200 {
            continue;
        }
        if let Some((s, d)) = pearson(counts, probs) {
            stat += s;
            df += d;
            used += n;
        }
    }
    assert!(
        used as usize * 2 >= steps,
        "{name}: only {used} of {steps} draws in testable groups ({} groups)",
        groups.len()
    );
    assert!(df > 0, "{name}: the truncation never left two tokens");
    let critical = chi_square_critical(df, ALPHA);
    assert!(
        stat < critical,
        "{name}: chi-square {stat:.2} >= {critical:.2} (df {df}, {} groups)",
        groups.len()
    );
}

#[test]
fn mirostat_v2_draws_the_truncation_of_the_current_mu() {
    let logits = spread_logits(10, 32, 8.0);
    for (i, conv) in [Convention::LlamaCpp, Convention::HuggingFace]
        .into_iter()
        .enumerate()
    {
        let c = ChainConfig {
            convention: conv,
            mirostat: 2,
            mirostat_tau: 3.0,
            mirostat_eta: 0.1,
            temperature: 0.9,
            seed: 70 + i as u64,
            ..ChainConfig::default()
        };
        check_mirostat(&format!("{conv:?} mirostat v2"), &c, &logits, DRAWS);
    }
}

#[test]
fn mirostat_v1_draws_the_truncation_of_the_current_mu() {
    let logits = spread_logits(11, 48, 10.0);
    let c = ChainConfig {
        convention: Convention::LlamaCpp,
        mirostat: 1,
        mirostat_tau: 3.0,
        mirostat_eta: 0.1,
        seed: 72,
        ..ChainConfig::default()
    };
    check_mirostat("llama mirostat v1", &c, &logits, DRAWS / 2);
}

#[test]
fn mirostat_v2_first_step_over_many_seeds() {
    // One draw per fresh chain: every draw is at μ₀ = 2τ, so they share one distribution.
    let logits = spread_logits(12, 24, 8.0);
    let base = ChainConfig {
        convention: Convention::LlamaCpp,
        mirostat: 2,
        mirostat_tau: 2.5,
        ..ChainConfig::default()
    };
    let want = reference(&base, &logits, &[], State::holds()).unwrap();
    assert!(kept(&want) > 2 && kept(&want) < 20, "{}", kept(&want));
    let mut observed = vec![0u64; logits.len()];
    for seed in 0..20_000 {
        let mut chain = ChainConfig {
            seed,
            ..base.clone()
        }
        .build()
        .unwrap();
        observed[chain.sample_slice(&logits, &[]).unwrap() as usize] += 1;
    }
    assert_fits(&observed, &want, "mirostat v2 first step");
}

// --- candle: `From<&SamplingConfig>` -------------------------------------------------------

/// candle's repetition penalty, as `RepetitionPenalty` applies it (the native engine's reference
/// then applies the strategy).
fn candle_penalised(logits: &[f32], history: &[u32], penalty: f32, context: usize) -> Vec<f32> {
    let mut x = logits.to_vec();
    let mut seen = std::collections::BTreeSet::new();
    for &t in &history[history.len().saturating_sub(context)..] {
        if seen.insert(t) && (t as usize) < x.len() {
            let v = &mut x[t as usize];
            *v = if *v >= 0.0 {
                *v / penalty
            } else {
                *v * penalty
            };
        }
    }
    x
}

fn candle_samplings(len: usize) -> Vec<Sampling> {
    vec![
        Sampling::ArgMax,
        Sampling::All { temperature: 0.9 },
        Sampling::TopK {
            k: 10,
            temperature: 1.1,
        },
        Sampling::TopP {
            p: 0.8,
            temperature: 0.7,
        },
        // The cut falls inside the top k: the un-renormalised rule decides.
        Sampling::TopKThenTopP {
            k: 12,
            p: 0.6,
            temperature: 1.3,
        },
        // The top k hold less than p: all k are kept.
        Sampling::TopKThenTopP {
            k: 5,
            p: 0.95,
            temperature: 1.0,
        },
        Sampling::GumbelSoftmax { temperature: 1.0 },
        // k covers the vocabulary: top-p alone.
        Sampling::TopKThenTopP {
            k: len,
            p: 0.7,
            temperature: 1.0,
        },
    ]
}

/// The candle reference written here agrees with the one the native engine is tested against.
#[test]
fn the_candle_references_agree() {
    let len = 40;
    let logits = spread_logits(13, len, 8.0);
    let hist = history(len);
    for sampling in candle_samplings(len) {
        for penalty in [None, Some((1.3f32, 8usize))] {
            let mine = candle_reference(&sampling, penalty, &logits, &hist);
            let input = match penalty {
                Some((p, ctx)) => candle_penalised(&logits, &hist, p, ctx),
                None => logits.clone(),
            };
            let theirs = native_support::reference(&input, &sampling);
            for i in 0..len {
                assert!(
                    (mine[i] - theirs[i]).abs() < 1e-9,
                    "{sampling:?} {penalty:?} token {i}: {} vs {}",
                    mine[i],
                    theirs[i]
                );
            }
        }
    }
}

#[test]
fn from_sampling_config_draws_candles_distributions() {
    let len = 40;
    let logits = spread_logits(14, len, 8.0);
    let hist = history(len);
    for sampling in candle_samplings(len) {
        for penalty in [None, Some((1.3f32, 8usize))] {
            let config = SamplingConfig {
                sampling: sampling.clone(),
                repetition_penalty: penalty.map(|p| p.0),
                repetition_context_size: penalty.map_or(64, |p| p.1),
                seed: 80,
            };
            let chain_config = ChainConfig::from(&config);
            assert_eq!(chain_config.convention, Convention::Candle);
            let want = candle_reference(&sampling, penalty, &logits, &hist);
            let what = format!("{sampling:?} {penalty:?}");
            let mut chain = chain_config.build().unwrap();
            let draws = if matches!(sampling, Sampling::ArgMax) {
                2_000
            } else {
                DRAWS / 2
            };
            let observed = counts(&mut chain, &logits, &hist, draws);
            assert_fits(&observed, &want, &format!("{what}: chain draws"));
            // The native sampler built from the same configuration draws the same law.
            let mut native = config.build_native().unwrap();
            let observed = counts(&mut *native, &logits, &hist, draws);
            assert_fits(&observed, &want, &format!("{what}: native draws"));
            let got = chain_config
                .build()
                .unwrap()
                .probabilities(&logits, &hist)
                .unwrap();
            assert_close(&got, &want, &format!("{what}: chain probabilities"));
        }
    }
}

#[test]
fn from_sampling_config_maps_each_field() {
    let config = SamplingConfig {
        sampling: Sampling::TopKThenTopP {
            k: 7,
            p: 0.25,
            temperature: 0.5,
        },
        repetition_penalty: Some(1.3),
        repetition_context_size: 9,
        seed: 1234,
    };
    let c = ChainConfig::from(&config);
    assert_eq!(
        (c.top_k, c.top_p, c.temperature, c.seed),
        (7, 0.25, 0.5, 1234)
    );
    assert_eq!((c.repetition_penalty, c.repeat_last_n), (1.3, Some(9)));
    let greedy = ChainConfig::from(&SamplingConfig::greedy());
    assert!(!greedy.do_sample);
    assert_eq!(greedy.repetition_penalty, 1.0);
    // The native sampler for the same `Sampling` exists and is valid for every mapped config.
    for sampling in candle_samplings(20) {
        NativeSampler::from_sampling(0, sampling.clone()).unwrap();
        ChainConfig::from(&SamplingConfig {
            sampling,
            ..SamplingConfig::default()
        })
        .build()
        .unwrap();
    }
}
