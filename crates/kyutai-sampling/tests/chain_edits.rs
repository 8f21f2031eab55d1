//! Edits fused into the first truncation give the distribution of the same chain on a copy of
//! the logits with the edits written in (no edit stage).

use std::collections::BTreeMap;

use kyutai_sampling::{ChainConfig, Convention};
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
