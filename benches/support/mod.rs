//! Inputs shared by the benches.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Logits whose softmax is a Zipf law with exponent 1.1, in a seeded random order.
pub fn zipf_logits(vocab: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut logits: Vec<f32> = (1..=vocab)
        .map(|rank| -1.1 * (rank as f32).ln() + 0.01 * rng.random::<f32>())
        .collect();
    logits.shuffle(&mut rng);
    logits
}
