//! `Chain::probabilities` against an independent reference (`chain_support::reference`), for
//! every stage under every convention, alone and combined, on random seeded logits: ties, `-inf`
//! entries, vocabularies of 1 and 2, and a few of several thousand tokens (the engine's fused
//! group passes).
//!
//! Every probability is compared to 1e-5, and the support (which tokens have a probability above
//! 0) must match exactly. Cases where the reference finds a decision within rounding distance of
//! its threshold are skipped; `check_random` fails if more than a quarter are.

mod chain_support;

use std::collections::BTreeMap;

use chain_support::{assert_close, check_random, edited, random_ids, reference, State};
use kyutai_sampling::{ChainConfig, Convention};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const CASES: usize = 300;

fn base(convention: Convention) -> ChainConfig {
    ChainConfig {
        convention,
        seed: 7,
        ..ChainConfig::default()
    }
}

/// A sampling temperature valid for the convention (llama.cpp also reads 0 as greedy).
fn temperature(rng: &mut ChaCha8Rng, convention: Convention) -> f32 {
    match rng.random_range(0..6) {
        0 => 1.0,
        1 if convention == Convention::LlamaCpp => 0.0,
        _ => rng.random_range(0.25f32..2.5),
    }
}

fn min_keep(rng: &mut ChaCha8Rng) -> usize {
    if rng.random_bool(0.7) {
        0
    } else {
        rng.random_range(1..=5)
    }
}

/// A nucleus mass: sometimes 0 (not for candle, whose `p` must be positive) or 1.
fn mass(rng: &mut ChaCha8Rng, convention: Convention) -> f32 {
    match rng.random_range(0..10) {
        0 if convention != Convention::Candle => 0.0,
        1 => 1.0,
        _ => rng.random_range(0.02f32..0.99),
    }
}

type Make = fn(&mut ChaCha8Rng, Convention, &[f32], &[u32]) -> Option<ChainConfig>;

/// One test per convention for a stage.
macro_rules! per_convention {
    ($name:ident, $seed:expr, $make:expr) => {
        mod $name {
            use super::*;
            fn go(convention: Convention) {
                let make: Make = $make;
                check_random(
                    &format!("{} {:?}", stringify!($name), convention),
                    $seed + convention as u64,
                    CASES,
                    |rng, logits, history| make(rng, convention, logits, history),
                );
            }
            #[test]
            fn hf() {
                go(Convention::HuggingFace)
            }
            #[test]
            fn llama_cpp() {
                go(Convention::LlamaCpp)
            }
            #[test]
            fn candle() {
                go(Convention::Candle)
            }
        }
    };
}

per_convention!(temperature_alone, 100, |rng, conv, _, _| Some(
    ChainConfig {
        temperature: temperature(rng, conv),
        ..base(conv)
    }
));

per_convention!(top_k, 200, |rng, conv, logits, _| Some(ChainConfig {
    temperature: temperature(rng, conv),
    top_k: rng.random_range(1..=logits.len() + 2),
    min_keep: min_keep(rng),
    ..base(conv)
}));

per_convention!(top_p, 300, |rng, conv, _, _| Some(ChainConfig {
    temperature: temperature(rng, conv),
    top_p: mass(rng, conv),
    min_keep: min_keep(rng),
    ..base(conv)
}));

// Both set: sequential (renormalised) in hf and llama.cpp, candle's un-renormalised rule in
// candle, including k at or above the vocabulary (candle then applies top-p alone).
per_convention!(top_k_and_top_p, 400, |rng, conv, logits, _| Some(
    ChainConfig {
        temperature: temperature(rng, conv),
        top_k: rng.random_range(1..=logits.len() + 2),
        top_p: mass(rng, conv),
        ..base(conv)
    }
));

per_convention!(min_p, 500, |rng, conv, _, _| Some(ChainConfig {
    temperature: temperature(rng, conv),
    min_p: match rng.random_range(0..8) {
        0 => 1.0,
        _ => rng.random_range(0.001f32..0.9),
    },
    min_keep: min_keep(rng),
    ..base(conv)
}));

per_convention!(typical, 600, |rng, conv, _, _| Some(ChainConfig {
    temperature: temperature(rng, conv),
    typical_p: match rng.random_range(0..10) {
        0 if conv == Convention::LlamaCpp => 0.0,
        1 => 1.0,
        _ => rng.random_range(0.05f32..0.99),
    },
    min_keep: min_keep(rng),
    ..base(conv)
}));

per_convention!(epsilon, 700, |rng, conv, _, _| Some(ChainConfig {
    temperature: temperature(rng, conv),
    epsilon_cutoff: rng.random_range(0.0005f32..0.3),
    min_keep: min_keep(rng),
    ..base(conv)
}));

per_convention!(eta, 800, |rng, conv, _, _| Some(ChainConfig {
    temperature: temperature(rng, conv),
    eta_cutoff: rng.random_range(0.0005f32..0.9),
    min_keep: min_keep(rng),
    ..base(conv)
}));

per_convention!(top_n_sigma, 900, |rng, conv, _, _| Some(ChainConfig {
    temperature: temperature(rng, conv),
    top_n_sigma: rng.random_range(0.05f32..3.0),
    ..base(conv)
}));

per_convention!(dynamic_temperature, 1000, |rng, conv, _, _| Some(
    ChainConfig {
        temperature: rng.random_range(0.0f32..2.0),
        dynatemp_range: rng.random_range(0.05f32..1.5),
        dynatemp_exponent: rng.random_range(0.0f32..3.0),
        ..base(conv)
    }
));

// XTC with probability 1 (its coin always fires, so the distribution is deterministic), alone
// or after a truncation; a threshold above 0.5 sometimes (a no-op).
per_convention!(xtc_certain, 1100, |rng, conv, logits, _| Some(
    ChainConfig {
        temperature: temperature(rng, conv),
        xtc_probability: 1.0,
        xtc_threshold: if rng.random_bool(0.1) {
            rng.random_range(0.51f32..1.0)
        } else {
            rng.random_range(0.0f32..0.5)
        },
        top_k: if rng.random_bool(0.3) {
            rng.random_range(1..=logits.len() + 1)
        } else {
            0
        },
        min_keep: min_keep(rng),
        ..base(conv)
    }
));

per_convention!(mirostat_v2, 1200, |rng, conv, _, _| Some(ChainConfig {
    temperature: if conv == Convention::LlamaCpp {
        temperature(rng, conv)
    } else {
        rng.random_range(0.3f32..2.0)
    },
    mirostat: 2,
    mirostat_tau: rng.random_range(0.1f32..6.0),
    // Truncations are replaced by mirostat: they must be ignored.
    top_k: 1,
    top_p: 0.1,
    ..base(conv)
}));

per_convention!(mirostat_v1, 1300, |rng, conv, _, _| Some(ChainConfig {
    temperature: rng.random_range(0.3f32..2.0),
    mirostat: 1,
    mirostat_tau: rng.random_range(0.5f32..6.0),
    ..base(conv)
}));

per_convention!(repetition_penalty, 1400, |rng, conv, _, _| Some(
    ChainConfig {
        temperature: temperature(rng, conv),
        repetition_penalty: rng.random_range(0.3f32..3.0),
        repeat_last_n: window(rng),
        ..base(conv)
    }
));

fn window(rng: &mut ChaCha8Rng) -> Option<usize> {
    if rng.random_bool(0.5) {
        None
    } else {
        Some(rng.random_range(0..20))
    }
}

per_convention!(frequency_presence, 1500, |rng, conv, _, _| Some(
    ChainConfig {
        temperature: temperature(rng, conv),
        frequency_penalty: rng.random_range(-1.5f32..1.5),
        presence_penalty: rng.random_range(-1.5f32..1.5),
        repeat_last_n: window(rng),
        ..base(conv)
    }
));

// All three penalties: the order (repetition, then frequency and presence) matters.
per_convention!(penalties_together, 1600, |rng, conv, _, _| Some(
    ChainConfig {
        temperature: temperature(rng, conv),
        repetition_penalty: rng.random_range(0.3f32..3.0),
        frequency_penalty: rng.random_range(-1.5f32..1.5),
        presence_penalty: rng.random_range(-1.5f32..1.5),
        repeat_last_n: window(rng),
        ..base(conv)
    }
));

fn biases(rng: &mut ChaCha8Rng, len: usize) -> BTreeMap<u32, f32> {
    let mut out = BTreeMap::new();
    for t in random_ids(rng, len, 6) {
        let b = match rng.random_range(0..6) {
            0 => -1e30,
            1 => -3e34,
            2 => f32::NEG_INFINITY,
            _ => rng.random_range(-6.0f32..6.0),
        };
        out.insert(t, b);
    }
    out
}

/// Never every token masked.
fn some_left(c: &ChainConfig, logits: &[f32], history: &[u32]) -> bool {
    edited(c, logits, history)
        .iter()
        .any(|&x| x > f32::NEG_INFINITY)
}

per_convention!(logit_bias, 1700, |rng, conv, logits, history| {
    let c = ChainConfig {
        temperature: temperature(rng, conv),
        logit_bias: biases(rng, logits.len()),
        ..base(conv)
    };
    some_left(&c, logits, history).then_some(c)
});

// Bias and repetition on the same tokens: their order is the convention's.
per_convention!(
    logit_bias_with_penalties,
    1800,
    |rng, conv, logits, history| {
        let mut bias = biases(rng, logits.len());
        for &t in history
            .iter()
            .filter(|&&t| (t as usize) < logits.len())
            .take(4)
        {
            bias.insert(t, rng.random_range(-3.0f32..3.0));
        }
        let c = ChainConfig {
            temperature: temperature(rng, conv),
            logit_bias: bias,
            repetition_penalty: rng.random_range(0.3f32..3.0),
            frequency_penalty: rng.random_range(-1.0f32..1.0),
            presence_penalty: rng.random_range(-1.0f32..1.0),
            ..base(conv)
        };
        some_left(&c, logits, history).then_some(c)
    }
);

per_convention!(suppress_tokens, 1900, |rng, conv, logits, history| {
    let c = ChainConfig {
        temperature: temperature(rng, conv),
        suppress_tokens: random_ids(rng, logits.len(), 5),
        top_k: rng.random_range(0..4),
        ..base(conv)
    };
    some_left(&c, logits, history).then_some(c)
});

per_convention!(allowed_token_ids, 2000, |rng, conv, logits, history| {
    let c = ChainConfig {
        temperature: temperature(rng, conv),
        allowed_token_ids: Some(random_ids(rng, logits.len(), 12)),
        ..base(conv)
    };
    some_left(&c, logits, history).then_some(c)
});

// The allowed set with every truncation after it (the engine's non-fused path).
per_convention!(
    allowed_with_truncations,
    2100,
    |rng, conv, logits, history| {
        let c = ChainConfig {
            temperature: temperature(rng, conv),
            allowed_token_ids: Some(random_ids(rng, logits.len(), 20)),
            top_k: rng.random_range(0..=8),
            top_p: mass(rng, conv),
            min_p: if rng.random_bool(0.5) {
                rng.random_range(0.01f32..0.5)
            } else {
                0.0
            },
            ..base(conv)
        };
        some_left(&c, logits, history).then_some(c)
    }
);

per_convention!(min_length, 2200, |rng, conv, logits, history| {
    let c = ChainConfig {
        temperature: temperature(rng, conv),
        eos_token_id: random_ids(rng, logits.len(), 3),
        min_length: rng.random_range(1..=history.len() + 3),
        ..base(conv)
    };
    some_left(&c, logits, history).then_some(c)
});

// `do_sample: false` is greedy over the edited logits, whatever the filters say.
per_convention!(greedy, 2300, |rng, conv, logits, history| {
    let c = ChainConfig {
        do_sample: false,
        temperature: rng.random_range(0.3f32..2.0),
        top_k: rng.random_range(0..4),
        top_p: 0.5,
        repetition_penalty: rng.random_range(0.5f32..2.0),
        logit_bias: biases(rng, logits.len()),
        ..base(conv)
    };
    some_left(&c, logits, history).then_some(c)
});

/// Every stage at once with random parameters (each on with probability 1/2).
fn everything(
    rng: &mut ChaCha8Rng,
    conv: Convention,
    logits: &[f32],
    history: &[u32],
) -> Option<ChainConfig> {
    let len = logits.len();
    let mut c = base(conv);
    c.temperature = temperature(rng, conv);
    if rng.random_bool(0.5) {
        c.top_k = rng.random_range(1..=len + 2);
    }
    if rng.random_bool(0.5) {
        c.top_p = mass(rng, conv);
    }
    if rng.random_bool(0.5) {
        c.min_p = rng.random_range(0.001f32..0.5);
    }
    if rng.random_bool(0.5) {
        c.typical_p = rng.random_range(0.2f32..0.99);
    }
    if rng.random_bool(0.5) {
        c.epsilon_cutoff = rng.random_range(0.0005f32..0.1);
    }
    if rng.random_bool(0.5) {
        c.eta_cutoff = rng.random_range(0.0005f32..0.1);
    }
    if rng.random_bool(0.5) {
        c.top_n_sigma = rng.random_range(0.5f32..3.0);
    }
    if rng.random_bool(0.5) {
        c.xtc_probability = 1.0;
        c.xtc_threshold = rng.random_range(0.0f32..0.5);
    }
    if rng.random_bool(0.5) {
        c.repetition_penalty = rng.random_range(0.5f32..2.0);
        c.frequency_penalty = rng.random_range(-0.5f32..0.5);
        c.presence_penalty = rng.random_range(-0.5f32..0.5);
        c.repeat_last_n = window(rng);
    }
    if rng.random_bool(0.5) {
        c.logit_bias = biases(rng, len);
    }
    if rng.random_bool(0.5) {
        c.suppress_tokens = random_ids(rng, len, 3);
    }
    if rng.random_bool(0.5) {
        c.eos_token_id = random_ids(rng, len, 2);
        c.min_length = history.len() + 1;
    }
    if rng.random_bool(0.5) {
        c.min_keep = rng.random_range(1..=4);
    }
    some_left(&c, logits, history).then_some(c)
}

per_convention!(every_stage_combined, 2400, everything);

#[test]
fn llama_cpp_default_chain() {
    check_random("llama_cpp()", 2500, 600, |rng, logits, history| {
        let mut c = ChainConfig::llama_cpp();
        // The default penalties are off: also try them on, over the 64-token window.
        if rng.random_bool(0.5) {
            c.repetition_penalty = 1.1;
            c.frequency_penalty = 0.2;
            c.presence_penalty = 0.3;
        }
        if rng.random_bool(0.3) {
            c.logit_bias = biases(rng, logits.len());
        }
        some_left(&c, logits, history).then_some(c)
    });
}

#[test]
fn llama_cpp_default_chain_with_a_long_history() {
    // A history longer than the 64-token window: only its tail is penalised.
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2600);
    let mut compared = 0;
    for case in 0..200 {
        let len = rng.random_range(8..200);
        let logits = chain_support::random_logits(&mut rng, len);
        let history: Vec<u32> = (0..150).map(|_| rng.random_range(0..len as u32)).collect();
        let c = ChainConfig {
            repetition_penalty: 1.3,
            frequency_penalty: 0.4,
            presence_penalty: 0.2,
            ..ChainConfig::llama_cpp()
        };
        let got = c.build().unwrap().probabilities(&logits, &history).unwrap();
        if let Ok(want) = reference(&c, &logits, &history, State::holds()) {
            assert_close(&got, &want, &format!("case {case}: {logits:?} {history:?}"));
            compared += 1;
        }
    }
    assert!(compared > 150, "{compared}");
}

#[test]
fn hf_temperature_top_k_top_p_repetition_chain() {
    check_random("hf 0.7/50/0.9/1.1", 2700, 600, |_, _, _| {
        Some(ChainConfig {
            temperature: 0.7,
            top_k: 50,
            top_p: 0.9,
            repetition_penalty: 1.1,
            ..ChainConfig::default()
        })
    });
}

#[test]
fn hf_generation_config_chain() {
    // The same chain read from a generation_config.json, with transformers' defaults.
    let c = ChainConfig::from_generation_config(
        r#"{ "do_sample": true, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1,
             "eos_token_id": [2, 3], "min_length": 5, "transformers_version": "4.45.0" }"#,
    )
    .unwrap();
    assert_eq!(c.top_k, 50);
    check_random("hf generation config", 2800, 400, |_, logits, _| {
        (logits.len() > 3).then(|| c.clone())
    });
}

// ---------------------------------------------------------------------------------------------
// Hand-made cases: each pins one rule where the libraries differ, with values small enough to
// check by hand.

fn probs(c: &ChainConfig, logits: &[f32], history: &[u32]) -> Vec<f32> {
    c.build().unwrap().probabilities(logits, history).unwrap()
}

fn support(p: &[f32]) -> Vec<usize> {
    (0..p.len()).filter(|&i| p[i] > 0.0).collect()
}

#[test]
fn top_k_ties_hf_keeps_them_llama_cpp_and_candle_keep_exactly_k() {
    let logits = [1.0f32, 3.0, 2.0, 2.0, 2.0, 0.0];
    for (conv, want) in [
        (Convention::HuggingFace, vec![1, 2, 3, 4]),
        (Convention::LlamaCpp, vec![1, 2]),
        (Convention::Candle, vec![1, 2]),
    ] {
        let c = ChainConfig {
            top_k: 2,
            ..base(conv)
        };
        assert_eq!(support(&probs(&c, &logits, &[])), want, "{conv:?}");
    }
}

#[test]
fn temperature_placement_first_in_hf_and_candle_last_in_llama_cpp() {
    // p at T = 1: [0.6652, 0.2447, 0.0900]; at T = 0.5: [0.8668, 0.1173, 0.0159]. top_p = 0.8:
    // at T = 1 two tokens are kept, at T = 0.5 one.
    let logits = [2.0f32, 1.0, 0.0];
    for (conv, kept) in [
        (Convention::HuggingFace, 1),
        (Convention::Candle, 1),
        (Convention::LlamaCpp, 2),
    ] {
        let c = ChainConfig {
            temperature: 0.5,
            top_p: 0.8,
            ..base(conv)
        };
        assert_eq!(support(&probs(&c, &logits, &[])).len(), kept, "{conv:?}");
    }
}

#[test]
fn llama_cpp_temperature_zero_keeps_the_lowest_id_maximum() {
    let c = ChainConfig {
        temperature: 0.0,
        ..ChainConfig::llama_cpp()
    };
    assert_eq!(
        probs(&c, &[0.0, 2.0, 2.0, 1.0], &[]),
        vec![0.0, 1.0, 0.0, 0.0]
    );
}

#[test]
fn typical_stops_at_the_first_mass_reaching_p_in_hf_and_passing_it_in_llama_cpp() {
    // Two equal logits and a third far below: H ≈ ln 2, the two top tokens have the same score
    // (≈ 0) and carry ≈ 0.5 each. With typical_p = 0.4 the first in score order already
    // reaches the mass: transformers keeps every token tied in score with it (both),
    // llama.cpp exactly the prefix (the lower id).
    let logits = [0.0f32, 0.0, -30.0];
    for conv in [Convention::HuggingFace, Convention::LlamaCpp] {
        let c = ChainConfig {
            typical_p: 0.4,
            ..base(conv)
        };
        let p = probs(&c, &logits, &[]);
        let want = if conv == Convention::HuggingFace {
            vec![0, 1]
        } else {
            vec![0]
        };
        assert_eq!(support(&p), want, "{conv:?}: {p:?}");
    }
}

#[test]
fn typical_hf_min_keep_keeps_ties_with_the_mass_cut_not_with_the_min_keep_th() {
    // p ∝ [e^2, 1, 1, 1, 1] = [0.649, 0.088 ×4], H = 1.135: token 0 scores 0.70, the others
    // tie at 1.30. typical_p = 0.05 is reached by token 0 alone, so transformers removes every
    // score above 0.70, then restores the first `min_keep` = 2 sorted tokens: {0, 1}. It never
    // adds the tokens tied with the `min_keep`-th (2, 3, 4).
    let logits = [2.0f32, 0.0, 0.0, 0.0, 0.0];
    let c = ChainConfig {
        typical_p: 0.05,
        min_keep: 2,
        ..base(Convention::HuggingFace)
    };
    let want = reference(&c, &logits, &[], State::holds()).unwrap();
    let got = probs(&c, &logits, &[]);
    assert_close(&got, &want, "typical hf min_keep 2");
    assert_eq!(support(&got).len(), 2, "{got:?}");
}

#[test]
fn typical_min_keep_reaches_tokens_outside_the_typical_interval() {
    // p = [0.211, 0.211, 0.271, 0.307], H = 1.373, scores [0.183, 0.183, 0.067, 0.192]: by
    // score 2, 0, 1, 3. typical_p 0.1 is reached by token 2 alone; min_keep 2 adds the next by
    // score, token 0 (lowest id of the tie), not token 3.
    let logits = [-1.75f32, -1.75, -1.5, -1.375];
    let c = ChainConfig {
        typical_p: 0.1,
        min_keep: 2,
        ..base(Convention::LlamaCpp)
    };
    assert_eq!(support(&probs(&c, &logits, &[])), vec![0, 2]);
    let want = reference(&c, &logits, &[], State::holds()).unwrap();
    assert_close(&probs(&c, &logits, &[]), &want, "llama typical min_keep 2");
}

#[test]
fn typical_exact_mass_hf_reaches_p_llama_cpp_passes_it() {
    // Four equal logits: p = 0.25 each exactly, every score 0 (ties). typical_p = 0.5: the
    // cumulative mass is exactly 0.5 after two tokens. transformers stops there (>= p) and
    // keeps every token tied in score (all four); llama.cpp needs > p: three tokens.
    let logits = [0.0f32; 4];
    for (conv, want) in [
        (Convention::HuggingFace, vec![0, 1, 2, 3]),
        (Convention::LlamaCpp, vec![0, 1, 2]),
    ] {
        let c = ChainConfig {
            typical_p: 0.5,
            ..base(conv)
        };
        assert_eq!(support(&probs(&c, &logits, &[])), want, "{conv:?}");
    }
}

#[test]
fn thresholds_hit_exactly() {
    // Four equal logits (p = 0.25 exactly) put each rule's comparison exactly on its threshold.
    let logits = [0.0f32; 4];
    for conv in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        let kept = |c: ChainConfig| support(&probs(&c, &logits, &[]));
        // top-p 0.5: the third token has exactly 0.5 before it, which is not < 0.5.
        assert_eq!(
            kept(ChainConfig {
                top_p: 0.5,
                ..base(conv)
            }),
            vec![0, 1],
            "{conv:?} top_p"
        );
        // min-p 1: p_i >= 1 · p_max holds for every tied maximum.
        assert_eq!(
            kept(ChainConfig {
                min_p: 1.0,
                ..base(conv)
            }),
            vec![0, 1, 2, 3],
            "{conv:?} min_p"
        );
        // epsilon 0.25: p >= ε keeps all.
        assert_eq!(
            kept(ChainConfig {
                epsilon_cutoff: 0.25,
                ..base(conv)
            }),
            vec![0, 1, 2, 3],
            "{conv:?} epsilon"
        );
        // XTC threshold 0.25: all four pass it; all but the least likely (the last in rank
        // order, the highest id) are removed.
        assert_eq!(
            kept(ChainConfig {
                xtc_probability: 1.0,
                xtc_threshold: 0.25,
                ..base(conv)
            }),
            vec![3],
            "{conv:?} xtc"
        );
        // Mirostat v2, τ = 1: μ₀ = 2 bits = the surprise of each token, which is kept (<= μ).
        assert_eq!(
            kept(ChainConfig {
                mirostat: 2,
                mirostat_tau: 1.0,
                ..base(conv)
            }),
            vec![0, 1, 2, 3],
            "{conv:?} mirostat"
        );
    }
    // top-nσ: logits [0, 0, 2, 2] have mean 1 and σ 1 exactly; n = 2 puts the floor at 0,
    // which the two lower logits reach (>=).
    for conv in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        let c = ChainConfig {
            top_n_sigma: 2.0,
            ..base(conv)
        };
        assert_eq!(
            support(&probs(&c, &[0.0, 0.0, 2.0, 2.0], &[])),
            vec![0, 1, 2, 3],
            "{conv:?}"
        );
    }
}

#[test]
fn top_p_zero_keeps_one_token_and_min_keep_tokens() {
    let logits = [0.3f32, 2.0, 1.0, -1.0];
    for conv in [Convention::HuggingFace, Convention::LlamaCpp] {
        let mut c = ChainConfig {
            top_p: 0.0,
            ..base(conv)
        };
        assert_eq!(support(&probs(&c, &logits, &[])), vec![1], "{conv:?}");
        c.min_keep = 3;
        assert_eq!(support(&probs(&c, &logits, &[])), vec![0, 1, 2], "{conv:?}");
    }
}

#[test]
fn candle_top_k_then_top_p_measures_p_against_the_whole_vocabulary() {
    // p ∝ e^[3, 2, 1, 0, 0, 0] = [0.605, 0.223, 0.082, 0.030 ×3]. top_k 3, top_p 0.85:
    // renormalised over the top 3 the two first carry 0.910 >= 0.85, so hf and llama.cpp keep
    // 2; measured against the whole vocabulary they carry 0.828 < 0.85, so candle keeps all 3.
    let logits = [3.0f32, 2.0, 1.0, 0.0, 0.0, 0.0];
    for (conv, kept) in [
        (Convention::HuggingFace, 2),
        (Convention::LlamaCpp, 2),
        (Convention::Candle, 3),
    ] {
        let c = ChainConfig {
            top_k: 3,
            top_p: 0.85,
            ..base(conv)
        };
        assert_eq!(support(&probs(&c, &logits, &[])).len(), kept, "{conv:?}");
    }
}

#[test]
fn candle_top_k_at_or_above_the_vocabulary_still_applies_top_p() {
    // candle's `sample_topk_topp` with k >= vocab is `sample_topp`: top-p on its own.
    let logits = [3.0f32, 2.0, 1.0, 0.0];
    for k in [4, 5, 100] {
        let c = ChainConfig {
            top_k: k,
            top_p: 0.5,
            ..base(Convention::Candle)
        };
        assert_eq!(support(&probs(&c, &logits, &[])), vec![0], "top_k {k}");
    }
}

#[test]
fn candle_top_k_then_top_p_applies_under_an_allowed_set() {
    // The allowed set restricts the tokens first; candle's top-k then top-p must still run.
    let logits = [3.0f32, 2.0, 1.0, 0.0, -1.0];
    let c = ChainConfig {
        top_k: 2,
        top_p: 0.5,
        allowed_token_ids: Some(vec![1, 2, 3, 4]),
        ..base(Convention::Candle)
    };
    let want = reference(&c, &logits, &[], State::holds()).unwrap();
    assert_eq!(
        support(&want.iter().map(|&p| p as f32).collect::<Vec<_>>()),
        vec![1]
    );
    assert_close(
        &probs(&c, &logits, &[]),
        &want,
        "candle top-k/top-p under allowed",
    );
}

#[test]
fn penalty_orders_differ_by_convention() {
    // Token 0, logit 1.0, bias +1.0, repetition 2.0: bias first gives (1 + 1) / 2 = 1.0
    // (hf, llama.cpp); repetition first gives 1 / 2 + 1 = 1.5 (candle). Then presence 0.5.
    let logits = [1.0f32, 0.0];
    for (conv, want) in [
        (Convention::HuggingFace, 0.5f64),
        (Convention::LlamaCpp, 0.5),
        (Convention::Candle, 1.0),
    ] {
        let c = ChainConfig {
            logit_bias: [(0, 1.0)].into_iter().collect(),
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            ..base(conv)
        };
        let p = probs(&c, &logits, &[0, 0]);
        let odds = (f64::from(p[0]) / f64::from(p[1])).ln();
        assert!(
            (odds - want).abs() < 1e-5,
            "{conv:?}: log-odds {odds}, want {want}"
        );
    }
}

#[test]
fn repetition_penalises_each_distinct_token_once_within_the_window() {
    // History [0, 0, 0, 1]: token 0 is divided once (2 / 2 = 1), not three times. With window 1
    // only token 1 is penalised (-1 * 2 = -2).
    let logits = [2.0f32, -1.0, 0.0];
    let c = ChainConfig {
        repetition_penalty: 2.0,
        ..base(Convention::LlamaCpp)
    };
    let p = probs(&c, &logits, &[0, 0, 0, 1]);
    let l = [1.0f64, -2.0, 0.0];
    let z: f64 = l.iter().map(|x| x.exp()).sum();
    for i in 0..3 {
        assert!((f64::from(p[i]) - l[i].exp() / z).abs() < 1e-6, "{p:?}");
    }
    let c = ChainConfig {
        repeat_last_n: Some(1),
        ..c
    };
    let p = probs(&c, &logits, &[0, 0, 0, 1]);
    let l = [2.0f64, -2.0, 0.0];
    let z: f64 = l.iter().map(|x| x.exp()).sum();
    for i in 0..3 {
        assert!((f64::from(p[i]) - l[i].exp() / z).abs() < 1e-6, "{p:?}");
    }
}

#[test]
fn frequency_counts_every_occurrence_presence_once() {
    // Token 0 three times: 2 − 3·0.5 − 0.25 = 0.25.
    let c = ChainConfig {
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        ..base(Convention::LlamaCpp)
    };
    let p = probs(&c, &[2.0, 0.0], &[0, 0, 0]);
    let want = 1.0 / (1.0 + (-0.25f64).exp());
    assert!((f64::from(p[0]) - want).abs() < 1e-6, "{p:?}");
}

#[test]
fn logit_bias_bans_at_minus_1e30_and_not_above() {
    let logits = [0.0f32, 0.0, 0.0];
    let c = ChainConfig {
        logit_bias: [(0, -1e30), (1, -1e29)].into_iter().collect(),
        ..base(Convention::LlamaCpp)
    };
    let p = probs(&c, &logits, &[]);
    assert_eq!(p, vec![0.0, 0.0, 1.0]);
    // -1e29 is a (huge) finite bias: token 1 is not banned, so with token 2 suppressed it is
    // the only one left.
    let c = ChainConfig {
        suppress_tokens: vec![2],
        ..c
    };
    assert_eq!(probs(&c, &logits, &[]), vec![0.0, 1.0, 0.0]);
}

#[test]
fn min_length_masks_eos_until_the_history_is_long_enough() {
    let c = ChainConfig {
        min_length: 3,
        eos_token_id: vec![1],
        ..base(Convention::HuggingFace)
    };
    let logits = [0.0f32, 5.0, 0.0];
    assert_eq!(probs(&c, &logits, &[7, 7])[1], 0.0);
    assert!(probs(&c, &logits, &[7, 7, 7])[1] > 0.9);
}

#[test]
fn min_p_keeps_exactly_the_ratio_and_min_keep() {
    // p_i / p_max = [1, 0.368, 0.135, 0.050]: min_p 0.14 keeps two, 0.13 three; min_p 1 keeps
    // the maximum only, raised to `min_keep`.
    let logits = [0.0f32, -1.0, -2.0, -3.0];
    for conv in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        let mut c = ChainConfig {
            min_p: 0.14,
            ..base(conv)
        };
        assert_eq!(support(&probs(&c, &logits, &[])), vec![0, 1], "{conv:?}");
        c.min_p = 0.13;
        assert_eq!(support(&probs(&c, &logits, &[])), vec![0, 1, 2], "{conv:?}");
        c.min_p = 1.0;
        c.min_keep = 3;
        assert_eq!(support(&probs(&c, &logits, &[])), vec![0, 1, 2], "{conv:?}");
    }
}

#[test]
fn top_n_sigma_uses_the_population_deviation_of_unmasked_logits() {
    // Unmasked [0, 1, 2, 3]: mean 1.5, population σ = √1.25 = 1.118, sample σ 1.291. n = 1.7:
    // the floor is 3 − 1.901 = 1.099 with the population σ (keeps logits 2 and 3), 0.805 with
    // the sample σ (would keep 1 too); counting the masked entry as a logit would break it.
    let logits = [0.0f32, f32::NEG_INFINITY, 1.0, 2.0, 3.0];
    for conv in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        let c = ChainConfig {
            top_n_sigma: 1.7,
            ..base(conv)
        };
        assert_eq!(support(&probs(&c, &logits, &[])), vec![3, 4], "{conv:?}");
    }
}

#[test]
fn xtc_removes_all_but_the_least_likely_above_the_threshold() {
    // p ∝ e^[2, 1.9, 1.8, -3, -3]: the three first are above 0.2; XTC keeps the third and the
    // tail.
    let logits = [2.0f32, 1.9, 1.8, -3.0, -3.0];
    let c = ChainConfig {
        xtc_probability: 1.0,
        xtc_threshold: 0.2,
        ..base(Convention::LlamaCpp)
    };
    assert_eq!(support(&probs(&c, &logits, &[])), vec![2, 3, 4]);
    // min_keep larger than what would be left: nothing removed.
    let c = ChainConfig { min_keep: 4, ..c };
    assert_eq!(support(&probs(&c, &logits, &[])), vec![0, 1, 2, 3, 4]);
}

#[test]
fn xtc_with_probability_one_half_gives_one_of_the_two_distributions() {
    let logits = [2.0f32, 1.9, 1.8, -3.0, -3.0, 0.0];
    let c = ChainConfig {
        xtc_probability: 0.5,
        xtc_threshold: 0.15,
        ..base(Convention::HuggingFace)
    };
    let fired = reference(&c, &logits, &[], State::fires()).unwrap();
    let held = reference(&c, &logits, &[], State::holds()).unwrap();
    assert_ne!(support(&to32(&fired)), support(&to32(&held)));
    let mut chain = c.build().unwrap();
    let (mut n_fired, mut n_held) = (0, 0);
    for _ in 0..400 {
        let p = chain.probabilities(&logits, &[]).unwrap();
        if support(&p) == support(&to32(&fired)) {
            assert_close(&p, &fired, "xtc fired");
            n_fired += 1;
        } else {
            assert_close(&p, &held, "xtc held");
            n_held += 1;
        }
    }
    // Binomial(400, 1/2): both well inside [140, 260] at any sane level.
    assert!(
        (140..=260).contains(&n_fired),
        "{n_fired} fired, {n_held} held"
    );
}

fn to32(p: &[f64]) -> Vec<f32> {
    p.iter().map(|&x| x as f32).collect()
}

#[test]
fn vocabularies_of_one_and_two() {
    for conv in [
        Convention::HuggingFace,
        Convention::LlamaCpp,
        Convention::Candle,
    ] {
        let everything = ChainConfig {
            temperature: 0.7,
            top_k: 1,
            top_p: 0.5,
            min_p: 0.5,
            typical_p: 0.5,
            epsilon_cutoff: 0.4,
            eta_cutoff: 0.4,
            top_n_sigma: 1.0,
            xtc_probability: 1.0,
            xtc_threshold: 0.0,
            repetition_penalty: 1.5,
            ..base(conv)
        };
        assert_eq!(probs(&everything, &[0.3], &[0]), vec![1.0], "{conv:?}");
        assert_eq!(probs(&everything, &[-1e30], &[0]), vec![1.0], "{conv:?}");
        let mirostat = ChainConfig {
            mirostat: 2,
            mirostat_tau: 0.01,
            ..base(conv)
        };
        assert_eq!(probs(&mirostat, &[0.3], &[]), vec![1.0], "{conv:?}");
        // Two tokens, tied: top-k 1 keeps both in hf, the lower id elsewhere.
        let c = ChainConfig {
            top_k: 1,
            ..base(conv)
        };
        let want = if conv == Convention::HuggingFace {
            vec![0.5, 0.5]
        } else {
            vec![1.0, 0.0]
        };
        assert_eq!(probs(&c, &[1.0, 1.0], &[]), want, "{conv:?}");
        // One masked: the other is certain, whatever the stages.
        assert_eq!(
            probs(&everything, &[f32::NEG_INFINITY, 0.0], &[]),
            vec![0.0, 1.0],
            "{conv:?}"
        );
    }
}

#[test]
fn masked_entries_get_probability_zero_in_every_chain() {
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2900);
    for case in 0..300 {
        let conv = [
            Convention::HuggingFace,
            Convention::LlamaCpp,
            Convention::Candle,
        ][case % 3];
        let len = rng.random_range(2..100);
        let mut logits = chain_support::random_logits(&mut rng, len);
        logits[rng.random_range(0..len)] = f32::NEG_INFINITY;
        if logits.iter().all(|&x| x == f32::NEG_INFINITY) {
            logits[0] = 0.0;
        }
        let history = chain_support::random_history(&mut rng, len);
        let Some(c) = everything(&mut rng, conv, &logits, &history) else {
            continue;
        };
        let masked = edited(&c, &logits, &history);
        let p = probs(&c, &logits, &history);
        for i in 0..len {
            if masked[i] == f32::NEG_INFINITY {
                assert_eq!(p[i], 0.0, "case {case}: token {i} {c:?}");
            }
        }
    }
}

/// Logits in a few clusters (random levels and sizes, with noise: no exact ties) over a
/// large vocabulary: the shapes where a fused first truncation only collects part of the
/// vocabulary and `min_keep` must reach past it.
fn clustered(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    let levels: Vec<f32> = (0..rng.random_range(2..5))
        .map(|_| rng.random_range(-12.0f32..0.0))
        .collect();
    let mut x: Vec<f32> = (0..len)
        .map(|_| levels[rng.random_range(0..levels.len())] + rng.random_range(-0.5f32..0.5))
        .collect();
    for _ in 0..rng.random_range(0..4) {
        let i = rng.random_range(0..len);
        x[i] = rng.random_range(0.0f32..3.0);
    }
    x
}

#[test]
fn first_truncations_with_min_keep_on_large_clustered_vocabularies() {
    let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3000);
    let (mut compared, mut skipped) = (0, 0);
    for case in 0..400 {
        let conv = [
            Convention::HuggingFace,
            Convention::LlamaCpp,
            Convention::Candle,
        ][case % 3];
        let len = rng.random_range(200..1500);
        let logits = clustered(&mut rng, len);
        let mut c = ChainConfig {
            min_keep: rng.random_range(1..40),
            temperature: rng.random_range(0.5f32..1.5),
            ..base(conv)
        };
        match rng.random_range(0..4) {
            0 => c.typical_p = rng.random_range(0.05f32..0.95),
            1 => c.min_p = rng.random_range(0.05f32..0.9),
            2 => c.top_p = rng.random_range(0.05f32..0.9),
            _ => {
                c.mirostat = 2;
                c.mirostat_tau = rng.random_range(0.2f32..4.0);
            }
        }
        let got = probs(&c, &logits, &[]);
        match reference(&c, &logits, &[], State::holds()) {
            Ok(want) => {
                assert_close(&got, &want, &format!("case {case}: {c:?}"));
                compared += 1;
            }
            Err(_) => skipped += 1,
        }
    }
    assert!(
        skipped * 4 <= compared,
        "{skipped} skipped, {compared} compared"
    );
}

#[test]
fn hf_top_k_keeps_every_tie_of_the_kth_over_a_large_vocabulary() {
    // Coarse logits over tens of thousands of tokens: the grouped top-k search keeps the ties
    // of the k-th itself when they are few and hands over to a second pass when they are many;
    // both must give transformers' set (every logit at or above the k-th) and its softmax.
    let mut rng = rand::SeedableRng::seed_from_u64(41);
    for case in 0..24 {
        let rng: &mut ChaCha8Rng = &mut rng;
        let vocab = [20_000usize, 32_000, 50_000][case % 3];
        let levels = [3u32, 40, 1000, 1 << 20][case / 3 % 4];
        let logits: Vec<f32> = (0..vocab)
            .map(|_| rng.random_range(0..levels) as f32 * (8.0 / levels as f32))
            .collect();
        let k = [5usize, 50][case % 2];
        let t = 0.7f32;
        let c = ChainConfig {
            temperature: t,
            top_k: k,
            ..base(Convention::HuggingFace)
        };
        let got = probs(&c, &logits, &[]);
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        let max = sorted[0];
        let weights: Vec<f64> = logits
            .iter()
            .map(|&x| {
                if x >= kth {
                    ((f64::from(x) - f64::from(max)) / f64::from(t)).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let kept = weights.iter().filter(|&&w| w > 0.0).count();
        assert!(kept >= k, "case {case}");
        for (i, (&p, &w)) in got.iter().zip(&weights).enumerate() {
            let want = w / total;
            assert!(
                (f64::from(p) - want).abs() <= 1e-6 + 1e-5 * want,
                "case {case} token {i}: {p} vs {want} ({kept} kept)"
            );
            assert_eq!(p > 0.0, w > 0.0, "case {case} token {i}");
        }
    }
}
