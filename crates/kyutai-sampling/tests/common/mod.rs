//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use kyutai_sampling::Sampling;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every seeded variant (everything but GumbelSoftmax, whose noise candle does not seed).
pub fn seeded_variants() -> Vec<Sampling> {
    vec![
        Sampling::ArgMax,
        Sampling::All { temperature: 0.9 },
        Sampling::TopK {
            k: 20,
            temperature: 1.1,
        },
        Sampling::TopP {
            p: 0.8,
            temperature: 0.7,
        },
        Sampling::TopKThenTopP {
            k: 30,
            p: 0.6,
            temperature: 1.3,
        },
    ]
}

/// Every variant, GumbelSoftmax included.
pub fn all_variants() -> Vec<Sampling> {
    let mut v = seeded_variants();
    v.push(Sampling::GumbelSoftmax { temperature: 1.0 });
    v
}

/// `vocab` logits drawn from N(0, scale^2)-ish noise (sum of uniforms), reproducible from `seed`.
pub fn random_logits(seed: u64, vocab: usize, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..vocab)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
            (s - 2.0) * scale
        })
        .collect()
}

pub fn tensor(values: &[f32]) -> Tensor {
    Tensor::new(values, &Device::Cpu).unwrap()
}
