//! `NativeSampler::sample_edited` (the entry point of `RepetitionPenalty`) reads the logits in
//! place and patches the edited entries as it goes; it must draw exactly what the trait's
//! default, which copies the vocabulary and applies the edits, draws: the same tokens from the
//! same stream, the same errors, and the distribution of the patched logits.

mod native_support;

use kyutai_sampling::{NativeSampler, Sampler, SamplerExt, Sampling, SamplingError};
use native_support::{assert_fits, reference, spread_logits, variants};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `(token, new logit)` replacements.
type Edits = Vec<(u32, f32)>;

/// A `NativeSampler` that keeps the trait's default `sample_edited` (copy, patch, `sample_slice`).
struct CopyPath(NativeSampler);

impl Sampler for CopyPath {
    fn sample(
        &mut self,
        logits: &candle_core::Tensor,
        history: &[u32],
    ) -> Result<u32, SamplingError> {
        self.0.sample(logits, history)
    }
    fn sample_slice(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplingError> {
        self.0.sample_slice(logits, history)
    }
    fn reset(&mut self) {
        self.0.reset()
    }
}

fn all_variants() -> Vec<Sampling> {
    let mut v = variants();
    v.push(Sampling::ArgMax);
    v.push(Sampling::TopP {
        p: 0.05,
        temperature: 1.0,
    });
    v
}

fn pair(seed: u64, sampling: &Sampling) -> (NativeSampler, CopyPath) {
    (
        NativeSampler::from_sampling(seed, sampling.clone()).unwrap(),
        CopyPath(NativeSampler::from_sampling(seed, sampling.clone()).unwrap()),
    )
}

/// Result as a comparable string (errors included; `SamplingError` is not `PartialEq`).
fn show(result: Result<u32, SamplingError>) -> String {
    format!("{result:?}")
}

/// Random edits: some sorted and distinct (like the decorator's), some unsorted, with duplicates
/// or out-of-range tokens.
fn random_edits(rng: &mut ChaCha8Rng, len: usize, max_count: usize) -> Vec<(u32, f32)> {
    let count = rng.random_range(0..=max_count);
    let mut edits: Vec<(u32, f32)> = (0..count)
        .map(|_| {
            let token = rng.random_range(0..len as u32 + 3); // a few past the end
            let value = match rng.random_range(0..10) {
                0 => f32::NEG_INFINITY,
                1 => 5.0, // above every logit: the new maximum
                _ => rng.random_range(-12.0..1.0f32),
            };
            (token, value)
        })
        .collect();
    if rng.random_bool(0.5) {
        edits.retain(|&(t, _)| (t as usize) < len);
        edits.sort_by_key(|&(t, _)| t);
        edits.dedup_by_key(|&mut (t, _)| t);
    }
    edits
}

#[test]
fn edited_draws_equal_the_copy_based_default_token_for_token() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for sampling in all_variants() {
        let (mut native, mut copy) = pair(11, &sampling);
        for step in 0..150u64 {
            let len = [1usize, 7, 16, 33, 300, 1000][step as usize % 6];
            let logits = spread_logits(step, len, 10.0);
            let edits = random_edits(&mut rng, len, 70);
            assert_eq!(
                show(native.sample_edited(&logits, &edits, &[])),
                show(copy.sample_edited(&logits, &edits, &[])),
                "{sampling:?} step {step} len {len} edits {edits:?}"
            );
        }
    }
}

#[test]
fn edits_are_validated_like_any_logit() {
    for sampling in all_variants() {
        let (mut native, mut copy) = pair(12, &sampling);
        let mut base = spread_logits(5, 40, 5.0);
        let cases: Vec<(Vec<f32>, Edits)> = vec![
            // An edited value that is NaN or +inf (a penalty below 1 can overflow a logit).
            (base.clone(), vec![(3, f32::NAN)]),
            (base.clone(), vec![(2, 0.5), (39, f32::INFINITY)]),
            // A bad base value that an edit replaces is fine; one it does not is reported.
            (
                {
                    base[17] = f32::NAN;
                    base.clone()
                },
                vec![(17, 0.0)],
            ),
            (base.clone(), vec![(16, 0.0)]),
            // Edits that mask every remaining live token.
            (
                {
                    let mut b = vec![f32::NEG_INFINITY; 40];
                    b[5] = 1.0;
                    b[30] = 2.0;
                    b
                },
                vec![(5, f32::NEG_INFINITY), (30, f32::NEG_INFINITY)],
            ),
            // Edits that unmask the only live token.
            (vec![f32::NEG_INFINITY; 40], vec![(33, -1.0)]),
            // Empty logits.
            (vec![], vec![(0, 1.0)]),
        ];
        for (logits, edits) in cases {
            let a = native.sample_edited(&logits, &edits, &[]);
            let b = copy.sample_edited(&logits, &edits, &[]);
            assert_eq!(show(a), show(b), "{sampling:?} edits {edits:?}");
        }
        let bad = native.sample_edited(&spread_logits(5, 40, 5.0), &[(9, f32::INFINITY)], &[]);
        assert!(matches!(
            bad,
            Err(SamplingError::NonFiniteLogit { index: 9, .. })
        ));
        let masked =
            native.sample_edited(&[f32::NEG_INFINITY, 1.0], &[(1, f32::NEG_INFINITY)], &[]);
        assert!(matches!(masked, Err(SamplingError::AllMasked)));
    }
}

#[test]
fn the_penalty_decorator_over_the_engine_matches_the_copy_path() {
    // RepetitionPenalty hands sorted, distinct edits to `sample_edited`: the streams must agree.
    for (len, steps) in [(2048usize, 60u64), (32_000, 6)] {
        for sampling in all_variants() {
            let mut native = NativeSampler::from_sampling(13, sampling.clone())
                .unwrap()
                .with_repetition_penalty(1.4, 64)
                .unwrap();
            let mut copy = CopyPath(NativeSampler::from_sampling(13, sampling.clone()).unwrap())
                .with_repetition_penalty(1.4, 64)
                .unwrap();
            let mut history: Vec<u32> = (0..50).map(|i| (i * 641) % len as u32).collect();
            for step in 0..steps {
                let logits = spread_logits(500 + step, len, 12.0);
                let a = native.sample_slice(&logits, &history).unwrap();
                let b = copy.sample_slice(&logits, &history).unwrap();
                assert_eq!(a, b, "{sampling:?} len {len} step {step}");
                history.push(a);
            }
        }
    }
}

#[test]
fn stacked_penalty_decorators_match_the_copy_path() {
    // Two decorators stacked: the outer one hands its edits to the inner one's `sample_edited`,
    // which must penalise the already-penalised values (as two copies would) and merge.
    for sampling in all_variants() {
        let mut native = NativeSampler::from_sampling(21, sampling.clone())
            .unwrap()
            .with_repetition_penalty(1.3, 64)
            .unwrap()
            .with_repetition_penalty(2.0, 8)
            .unwrap();
        let mut copy = CopyPath(NativeSampler::from_sampling(21, sampling.clone()).unwrap())
            .with_repetition_penalty(1.3, 64)
            .unwrap()
            .with_repetition_penalty(2.0, 8)
            .unwrap();
        let len = 2048;
        let mut history: Vec<u32> = (0..40).map(|i| (i * 97) % 60).collect();
        for step in 0..40 {
            let logits = spread_logits(900 + step, len, 12.0);
            let a = native.sample_slice(&logits, &history).unwrap();
            let b = copy.sample_slice(&logits, &history).unwrap();
            assert_eq!(a, b, "{sampling:?} step {step}");
            history.push(a);
        }
    }
}

#[test]
fn penalised_argmax_at_128256_tokens() {
    let len = 128_256;
    let mut logits = spread_logits(77, len, 20.0);
    // The maximum in the middle, a runner-up at the very end; penalised, 5.0 / 1.5 < 4.9.
    let top = 70_001u32;
    logits[top as usize] = 5.0;
    logits[len - 1] = 4.9;
    let mut native = NativeSampler::from_sampling(0, Sampling::ArgMax)
        .unwrap()
        .with_repetition_penalty(1.5, 64)
        .unwrap();
    let mut copy = CopyPath(NativeSampler::from_sampling(0, Sampling::ArgMax).unwrap())
        .with_repetition_penalty(1.5, 64)
        .unwrap();
    let mut history: Vec<u32> = (0..63).map(|i| i * 2000).collect();
    assert_eq!(native.sample_slice(&logits, &history).unwrap(), top);
    history.push(top);
    let runner_up = native.sample_slice(&logits, &history).unwrap();
    assert_eq!(runner_up, copy.sample_slice(&logits, &history).unwrap());
    assert_eq!(runner_up, len as u32 - 1);
}

#[test]
fn edited_draws_follow_the_patched_distribution() {
    // Independent of the copy path: the edited engine against the reference distribution of the
    // patched logits. The edits move the maximum, mask tokens and revive a masked one.
    let mut logits = spread_logits(21, 150, 8.0);
    logits[100] = f32::NEG_INFINITY;
    let top = (0..150)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap() as u32;
    let mut edits = vec![
        (top, -9.0f32),
        (3, 0.9),
        (100, -0.2),
        (149, f32::NEG_INFINITY),
    ];
    edits.sort_by_key(|&(t, _)| t);
    let mut patched = logits.clone();
    for &(t, v) in &edits {
        patched[t as usize] = v;
    }
    for (seed, sampling) in variants().into_iter().enumerate() {
        let mut sampler = NativeSampler::from_sampling(seed as u64, sampling.clone()).unwrap();
        let mut counts = vec![0u64; 150];
        for _ in 0..40_000 {
            counts[sampler.sample_edited(&logits, &edits, &[]).unwrap() as usize] += 1;
        }
        assert_fits(
            &counts,
            &reference(&patched, &sampling),
            &format!("edited {sampling:?}"),
        );
    }
}
