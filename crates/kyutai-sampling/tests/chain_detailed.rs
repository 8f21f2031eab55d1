//! `Chain::sample_detailed` (the same token as `sample`, its log-probability in the distribution
//! it was drawn from, its raw log-probability, the raw top tokens), the tensor and slice entry
//! points drawing the same stream, `reset` replaying it (mirostat's μ included), and masked
//! tokens never drawn.

mod chain_support;

use candle_core::{Device, Tensor};
use chain_support::log_softmax;
use kyutai_sampling::{ChainConfig, Convention, Sampler, Sampling, SamplingConfig};

/// Chains covering every kind of plan: native strategies (temperature, top-p, top-k, candle's
/// top-k-then-top-p, greedy), the candidate path, mirostat, XTC's random coin, an allowed set.
fn configs() -> Vec<(&'static str, ChainConfig)> {
    let hf = ChainConfig::default;
    let llama = |c: ChainConfig| ChainConfig {
        convention: Convention::LlamaCpp,
        ..c
    };
    vec![
        ("hf all", hf()),
        (
            "hf T 0.7 top_p 0.9",
            ChainConfig {
                temperature: 0.7,
                top_p: 0.9,
                ..hf()
            },
        ),
        (
            "hf 0.7/50/0.9/1.1",
            ChainConfig {
                temperature: 0.7,
                top_k: 50,
                top_p: 0.9,
                repetition_penalty: 1.1,
                ..hf()
            },
        ),
        (
            "hf typical",
            ChainConfig {
                typical_p: 0.7,
                min_p: 0.01,
                ..hf()
            },
        ),
        (
            "hf greedy + bias",
            ChainConfig {
                do_sample: false,
                logit_bias: [(3, 1.5), (4, -1e30)].into_iter().collect(),
                repetition_penalty: 1.5,
                ..hf()
            },
        ),
        (
            "hf allowed",
            ChainConfig {
                allowed_token_ids: Some((0..40).step_by(3).collect()),
                temperature: 1.2,
                ..hf()
            },
        ),
        ("llama_cpp()", ChainConfig::llama_cpp()),
        (
            "llama top_k 5 T 0.8",
            llama(ChainConfig {
                top_k: 5,
                temperature: 0.8,
                ..hf()
            }),
        ),
        (
            "llama T 0",
            llama(ChainConfig {
                temperature: 0.0,
                ..hf()
            }),
        ),
        (
            "llama mirostat v2",
            llama(ChainConfig {
                mirostat: 2,
                mirostat_tau: 3.0,
                mirostat_eta: 0.2,
                ..hf()
            }),
        ),
        (
            "llama mirostat v1",
            llama(ChainConfig {
                mirostat: 1,
                mirostat_tau: 3.0,
                ..hf()
            }),
        ),
        (
            "llama xtc 0.5",
            llama(ChainConfig {
                xtc_probability: 0.5,
                xtc_threshold: 0.05,
                top_n_sigma: 2.0,
                frequency_penalty: 0.3,
                presence_penalty: 0.2,
                ..hf()
            }),
        ),
        (
            "candle top-k-top-p",
            ChainConfig::from(&SamplingConfig::default()),
        ),
        (
            "candle argmax",
            ChainConfig::from(&SamplingConfig {
                sampling: Sampling::ArgMax,
                repetition_penalty: Some(1.3),
                ..SamplingConfig::default()
            }),
        ),
    ]
}

/// Distinct logits over 60 tokens, spread over ~12 nats.
fn logits(seed: u64) -> Vec<f32> {
    (0..60u64)
        .map(|i| {
            let h = (i * 2654435761 + seed * 97) % 1000;
            (h as f32) / 1000.0 * 12.0 - 6.0 + i as f32 * 1e-4
        })
        .collect()
}

/// The raw ranking: every token by decreasing logit, lowest id first among equals.
fn ranking(x: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..x.len() as u32).collect();
    order.sort_by(|&a, &b| {
        x[b as usize]
            .partial_cmp(&x[a as usize])
            .unwrap()
            .then(a.cmp(&b))
    });
    order
}

#[test]
fn detailed_draws_the_same_token_with_its_logprobs() {
    let device = Device::Cpu;
    for (name, config) in configs() {
        let mut a = config.build().unwrap();
        let mut b = config.build().unwrap();
        let mut c = config.build().unwrap();
        let mut history: Vec<u32> = vec![3, 3, 7];
        let x = logits(1);
        let tensor = Tensor::new(x.as_slice(), &device).unwrap();
        let raw = log_softmax(&x);
        let order = ranking(&x);
        let greedy = !config.do_sample
            || (config.convention == Convention::LlamaCpp && config.temperature == 0.0);
        for (step, top_n) in [0usize, 1, 3, 10, 59, 60, 70]
            .iter()
            .cycle()
            .take(80)
            .enumerate()
        {
            let what = format!("{name} step {step}");
            let token = a.sample(&tensor, &history).unwrap();
            // A clone sees the distribution `b` is about to draw from (XTC's coin included).
            let probs = b.clone().probabilities(&x, &history).unwrap();
            let d = b.sample_detailed(&tensor, &history, *top_n).unwrap();
            assert_eq!(d.token, token, "{what}: sample_detailed and sample differ");
            assert_eq!(
                c.sample_slice(&x, &history).unwrap(),
                token,
                "{what}: sample_slice and sample differ"
            );
            let p = probs[token as usize];
            assert!(p > 0.0, "{what}: drew a token of probability 0");
            let want = f64::from(p).ln();
            assert!(
                (f64::from(d.logprob) - want).abs() < 1e-5,
                "{what}: logprob {} vs ln p = {want}",
                d.logprob
            );
            if greedy {
                assert_eq!(d.logprob, 0.0, "{what}: greedy logprob");
            }
            assert!(
                (f64::from(d.raw_logprob) - raw[token as usize]).abs() < 1e-5,
                "{what}: raw logprob {} vs {}",
                d.raw_logprob,
                raw[token as usize]
            );
            let n = (*top_n).min(x.len());
            let ids: Vec<u32> = d.top.iter().map(|&(t, _)| t).collect();
            assert_eq!(ids, order[..n].to_vec(), "{what}: top {top_n}");
            for &(t, lp) in &d.top {
                assert!(
                    (f64::from(lp) - raw[t as usize]).abs() < 1e-5,
                    "{what}: top logprob of {t}"
                );
            }
            history.push(token);
        }
    }
}

#[test]
fn top_ranks_ties_by_lowest_id() {
    let x = [1.0f32, 3.0, 3.0, 2.0, 3.0, 0.0];
    let mut chain = ChainConfig::default().build().unwrap();
    let tensor = Tensor::new(&x, &Device::Cpu).unwrap();
    for top_n in [2, 4, 6] {
        let d = chain.sample_detailed(&tensor, &[], top_n).unwrap();
        let ids: Vec<u32> = d.top.iter().map(|&(t, _)| t).collect();
        assert_eq!(ids, [1, 2, 4, 3, 0, 5][..top_n].to_vec(), "top {top_n}");
        assert!(d.top.windows(2).all(|w| w[0].1 >= w[1].1));
        if top_n >= 3 {
            assert_eq!(d.top[0].1, d.top[2].1, "tied logits, tied logprobs");
        }
    }
}

/// `top` for `top_n` is the first `top_n` entries of the full ranking, whatever `top_n` (masked
/// tokens rank last, with a raw log-probability of `-inf`).
#[test]
fn top_is_a_prefix_of_the_full_ranking_with_masked_tokens() {
    let x = [1.0f32, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
    let mut chain = ChainConfig::default().build().unwrap();
    let tensor = Tensor::new(&x, &Device::Cpu).unwrap();
    let full = chain.sample_detailed(&tensor, &[], 4).unwrap().top;
    assert_eq!(
        full.iter().map(|&(t, _)| t).collect::<Vec<_>>(),
        vec![0, 2, 1, 3]
    );
    for top_n in 0..=4 {
        let top = chain.sample_detailed(&tensor, &[], top_n).unwrap().top;
        assert_eq!(top, full[..top_n].to_vec(), "top_n {top_n}");
    }
}

#[test]
fn greedy_logprob_is_zero_and_raw_logprob_is_the_softmax() {
    let x = [0.0f32, 2.0, 1.0];
    for config in [
        ChainConfig {
            do_sample: false,
            ..ChainConfig::default()
        },
        ChainConfig {
            do_sample: false,
            allowed_token_ids: Some(vec![0, 2]),
            ..ChainConfig::default()
        },
    ] {
        let mut chain = config.build().unwrap();
        let d = chain
            .sample_detailed(&Tensor::new(&x, &Device::Cpu).unwrap(), &[], 0)
            .unwrap();
        let raw = log_softmax(&x);
        assert_eq!(d.logprob, 0.0, "{config:?}");
        assert!((f64::from(d.raw_logprob) - raw[d.token as usize]).abs() < 1e-6);
        assert!(d.top.is_empty());
    }
}

#[test]
fn reset_replays_the_stream() {
    let x = logits(2);
    for (name, config) in configs() {
        let mut chain = config.build().unwrap();
        let run = |chain: &mut kyutai_sampling::Chain| {
            let mut history = vec![1u32, 2];
            for _ in 0..60 {
                let t = chain.sample_slice(&x, &history).unwrap();
                history.push(t);
            }
            history
        };
        let first = run(&mut chain);
        chain.reset();
        let again = run(&mut chain);
        assert_eq!(first, again, "{name}: replay after reset");
        let fresh = run(&mut config.build().unwrap());
        assert_eq!(first, fresh, "{name}: a fresh chain draws the same stream");
        // sample_detailed draws the same stream as well.
        chain.reset();
        let tensor = Tensor::new(x.as_slice(), &Device::Cpu).unwrap();
        let mut history = vec![1u32, 2];
        for _ in 0..60 {
            let t = chain.sample_detailed(&tensor, &history, 2).unwrap().token;
            history.push(t);
        }
        assert_eq!(first, history, "{name}: sample_detailed after reset");
    }
}

#[test]
fn seeds_change_the_stream() {
    let x = logits(3);
    for (name, config) in configs() {
        if !config.do_sample
            || (config.convention == Convention::LlamaCpp && config.temperature == 0.0)
        {
            continue;
        }
        let draw = |seed: u64| {
            let mut chain = ChainConfig {
                seed,
                ..config.clone()
            }
            .build()
            .unwrap();
            (0..40)
                .map(|_| chain.sample_slice(&x, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_ne!(draw(1), draw(2), "{name}");
    }
}

#[test]
fn reset_restores_mirostat_mu() {
    let x = logits(4);
    for version in [1u8, 2] {
        let config = ChainConfig {
            convention: Convention::LlamaCpp,
            mirostat: version,
            mirostat_tau: 1.0,
            mirostat_eta: 0.5,
            ..ChainConfig::default()
        };
        let mut chain = config.build().unwrap();
        let start = chain.probabilities(&x, &[]).unwrap();
        let kept = |p: &[f32]| p.iter().filter(|&&v| v > 0.0).count();
        // μ₀ = 2τ = 2 bits; draws move μ, which changes the truncation.
        let mut moved = false;
        for _ in 0..50 {
            chain.sample_slice(&x, &[]).unwrap();
            moved |= chain.probabilities(&x, &[]).unwrap() != start;
        }
        assert!(moved, "v{version}: μ never moved the truncation");
        chain.reset();
        assert_eq!(
            chain.probabilities(&x, &[]).unwrap(),
            start,
            "v{version}: μ restored to 2τ"
        );
        assert!(kept(&start) >= 1);
        // probabilities changes no state: calling it twice gives the same distribution and
        // leaves the stream where it was.
        let mut a = config.build().unwrap();
        let mut b = config.build().unwrap();
        for _ in 0..20 {
            let _ = a.probabilities(&x, &[]).unwrap();
            let _ = a.probabilities(&x, &[]).unwrap();
            assert_eq!(
                a.sample_slice(&x, &[]).unwrap(),
                b.sample_slice(&x, &[]).unwrap()
            );
        }
    }
}

#[test]
fn masked_tokens_are_never_drawn() {
    // Most of the vocabulary masked, and the survivors' logits spread out.
    let mut x = vec![f32::NEG_INFINITY; 300];
    for i in (0..300).step_by(17) {
        x[i] = (i % 5) as f32 - 2.0;
    }
    x[299] = 1e-3;
    for (name, mut config) in configs() {
        if let Some(allowed) = &mut config.allowed_token_ids {
            // Keep a few allowed tokens unmasked.
            allowed.extend([0, 17, 34, 51]);
        }
        let mut chain = config.build().unwrap();
        let mut history = Vec::new();
        for _ in 0..2_000 {
            let t = chain.sample_slice(&x, &history).unwrap();
            assert!(x[t as usize] > f32::NEG_INFINITY, "{name}: drew masked {t}");
            history.push(t);
            if history.len() > 40 {
                history.remove(0);
            }
        }
    }
}
