//! Edits fused into the first truncation give the distribution of the same chain on a copy of
//! the logits with the edits written in (no edit stage).

use std::collections::BTreeMap;

use kyutai_sampling::{ChainConfig, Convention, Sampler};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6)
}

#[test]
fn top_k_with_edits_equals_top_k_on_the_edited_copy() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for case in 0..400 {
        let vocab = rng.random_range(2..3000usize);
        // Small integer logits: many ties at the k-th value.
        let logits: Vec<f32> = (0..vocab)
            .map(|_| {
                if rng.random_bool(0.05) {
                    f32::NEG_INFINITY
                } else {
                    rng.random_range(-4..4) as f32
                }
            })
            .collect();
        let mut bias = BTreeMap::new();
        for _ in 0..rng.random_range(1..200usize) {
            let t = rng.random_range(0..vocab as u32);
            let b = match rng.random_range(0..3) {
                0 => -1e30,
                1 => rng.random_range(-3..4) as f32,
                _ => 0.5,
            };
            bias.insert(t, b);
        }
        let mut edited = logits.clone();
        for (&t, &b) in &bias {
            let x = &mut edited[t as usize];
            *x = if b <= -1e30 {
                f32::NEG_INFINITY
            } else {
                *x + b
            };
        }
        if edited.iter().all(|&x| x == f32::NEG_INFINITY) {
            continue;
        }
        let convention = if case % 2 == 0 {
            Convention::HuggingFace
        } else {
            Convention::LlamaCpp
        };
        let k = rng.random_range(1..vocab.max(2));
        let base = ChainConfig {
            convention,
            top_k: k,
            top_p: 0.9,
            ..ChainConfig::default()
        };
        let with_edits = ChainConfig {
            logit_bias: bias.clone(),
            ..base.clone()
        };
        let fused = with_edits
            .build()
            .unwrap()
            .probabilities(&logits, &[])
            .unwrap();
        let copy = base.build().unwrap().probabilities(&edited, &[]).unwrap();
        assert!(
            close(&fused, &copy),
            "case {case} {convention:?} vocab {vocab} k {k}: fused {fused:?} copy {copy:?}"
        );
    }
}

#[test]
fn a_grouped_top_k_over_many_edits_equals_top_k_on_the_edited_copy() {
    // A top-k small next to the vocabulary's 64-token groups reads the edited logits in place
    // (not from a patched copy), however many chunks the edits touch.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..60 {
        let vocab = rng.random_range(4096..40_000usize);
        let logits: Vec<f32> = (0..vocab)
            .map(|_| {
                if rng.random_bool(0.02) {
                    f32::NEG_INFINITY
                } else {
                    (rng.random_range(-40..40) as f32) * 0.25
                }
            })
            .collect();
        let history: Vec<u32> = (0..rng.random_range(1..600))
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        let mut bias = BTreeMap::new();
        for _ in 0..rng.random_range(0..300usize) {
            bias.insert(
                rng.random_range(0..vocab as u32),
                rng.random_range(-3..6) as f32,
            );
        }
        let penalty = 1.3f32;
        let mut edited = logits.clone();
        let mut seen = std::collections::BTreeSet::new();
        for &t in &history {
            if seen.insert(t) {
                let x = &mut edited[t as usize];
                if *x > f32::NEG_INFINITY {
                    *x = if *x > 0.0 { *x / penalty } else { *x * penalty };
                }
            }
        }
        // The bias on tokens outside the window, so that the order of the two edits is moot.
        bias.retain(|t, _| !seen.contains(t));
        for (&t, &b) in &bias {
            let x = &mut edited[t as usize];
            if *x > f32::NEG_INFINITY {
                *x += b;
            }
        }
        let convention = [Convention::HuggingFace, Convention::LlamaCpp][case % 2];
        let k = rng.random_range(1..=vocab / 64);
        let base = ChainConfig {
            convention,
            temperature: 0.8,
            top_k: k,
            top_p: 0.95,
            ..ChainConfig::default()
        };
        let with_edits = ChainConfig {
            logit_bias: bias.clone(),
            repetition_penalty: penalty,
            repeat_last_n: None,
            ..base.clone()
        };
        let (mut fused, mut copy) = (with_edits.build().unwrap(), base.build().unwrap());
        let p_fused = fused.probabilities(&logits, &history).unwrap();
        let p_copy = copy.probabilities(&edited, &history).unwrap();
        assert!(
            close(&p_fused, &p_copy),
            "case {case} {convention:?} vocab {vocab} k {k}"
        );
        let seed = rng.random::<u64>();
        let (mut fused, mut copy) = (
            ChainConfig {
                seed,
                ..with_edits.clone()
            }
            .build()
            .unwrap(),
            ChainConfig {
                seed,
                ..base.clone()
            }
            .build()
            .unwrap(),
        );
        for _ in 0..5 {
            assert_eq!(
                fused.sample_slice(&logits, &history).unwrap(),
                copy.sample_slice(&edited, &history).unwrap(),
                "case {case} {convention:?} vocab {vocab} k {k}"
            );
        }
    }
}
