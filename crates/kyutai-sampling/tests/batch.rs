//! `sample_batch` is single-row sampling, row by row: P20 of the reliability catalogue as a
//! property test (random B, per-row configurations and seeds, rows permuted and re-batched,
//! several thread counts), plus the shapes, dtypes and errors.

use candle_core::{DType, Device, Tensor};
use kyutai_sampling::{
    sample_batch, Batch, BoxSampler, ChainConfig, Convention, NativeSampler, Sampler, SamplerExt,
    Sampling, SamplingConfig, SamplingError,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The sampler of row kind `kind` with `seed`: chains of every convention, the native engine,
/// the candle adapter, and a decorated sampler.
fn sampler(kind: u8, seed: u64) -> BoxSampler {
    let chain = |c: ChainConfig| c.build().unwrap().boxed();
    match kind % 7 {
        0 => chain(ChainConfig {
            seed,
            ..ChainConfig::llama_cpp()
        }),
        1 => chain(ChainConfig {
            top_p: 0.9,
            top_k: 20,
            repetition_penalty: 1.2,
            seed,
            ..ChainConfig::default()
        }),
        2 => chain(ChainConfig {
            convention: Convention::Candle,
            temperature: 0.7,
            top_k: 5,
            seed,
            ..ChainConfig::default()
        }),
        3 => NativeSampler::from_sampling(
            seed,
            Sampling::TopK {
                k: 10,
                temperature: 0.9,
            },
        )
        .unwrap()
        .boxed(),
        4 => SamplingConfig {
            sampling: Sampling::All { temperature: 1.1 },
            seed,
            repetition_penalty: Some(1.3),
            repetition_context_size: 8,
        }
        .build()
        .unwrap(),
        5 => chain(ChainConfig {
            mirostat: 2,
            seed,
            ..ChainConfig::default()
        }),
        _ => chain(ChainConfig {
            do_sample: false,
            ..ChainConfig::default()
        }),
    }
}

#[derive(Debug, Clone)]
struct Case {
    vocab: usize,
    kinds: Vec<(u8, u64)>,
    /// `steps x rows x vocab` logits.
    logits: Vec<Vec<Vec<f32>>>,
    histories: Vec<Vec<u32>>,
    /// A permutation of the rows and a split point for re-batching.
    order: Vec<usize>,
    split: usize,
    threads: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![1usize..40, Just(2048usize), 3000usize..5000],
        1usize..12,
        1usize..4,
    )
        .prop_flat_map(|(vocab, rows, steps)| {
            let logit = prop_oneof![
                8 => -20.0f32..20.0,
                1 => Just(f32::NEG_INFINITY),
                1 => Just(0.5f32),
            ];
            (
                Just(vocab),
                prop::collection::vec((any::<u8>(), any::<u64>()), rows),
                prop::collection::vec(
                    prop::collection::vec(
                        prop::collection::vec(logit, vocab).prop_map(|mut v| {
                            // Keep one token unmasked so every row can be sampled.
                            v[0] = v[0].max(0.0);
                            v
                        }),
                        rows,
                    ),
                    steps,
                ),
                prop::collection::vec(prop::collection::vec(0u32..vocab as u32, 0..20), rows),
                Just((0..rows).collect::<Vec<_>>()).prop_shuffle(),
                0..=rows,
                prop_oneof![Just(1usize), Just(2), Just(5)],
            )
                .prop_map(
                    |(vocab, kinds, logits, histories, order, split, threads)| Case {
                        vocab,
                        kinds,
                        logits,
                        histories,
                        order,
                        split,
                        threads,
                    },
                )
        })
}

fn batch_tensor(rows: &[&Vec<f32>], vocab: usize) -> Tensor {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), vocab), &Device::Cpu).unwrap()
}

#[test]
fn p20_batch_equals_single_rows() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 96,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[20; 32]),
    );
    runner
        .run(&case(), |c| {
            let rows = c.kinds.len();
            // Alone: each row with a fresh sampler, step after step, its history growing.
            let mut want = vec![Vec::new(); rows];
            for (row, &(kind, seed)) in c.kinds.iter().enumerate() {
                let mut s = sampler(kind, seed);
                let mut history = c.histories[row].clone();
                for step in &c.logits {
                    let t = Tensor::new(step[row].as_slice(), &Device::Cpu).unwrap();
                    let token = s.sample(&t, &history).unwrap();
                    want[row].push(token);
                    history.push(token);
                }
            }
            // Batched: rows permuted and split into two batches, on a pool of `threads`.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(c.threads)
                .build()
                .unwrap();
            let (first, second) = c.order.split_at(c.split);
            let mut got = vec![Vec::new(); rows];
            for part in [first, second] {
                if part.is_empty() {
                    continue;
                }
                let mut samplers: Vec<BoxSampler> = part
                    .iter()
                    .map(|&r| sampler(c.kinds[r].0, c.kinds[r].1))
                    .collect();
                let mut histories: Vec<Vec<u32>> =
                    part.iter().map(|&r| c.histories[r].clone()).collect();
                let mut batch = Batch::new();
                for step in &c.logits {
                    let rows_here: Vec<&Vec<f32>> = part.iter().map(|&r| &step[r]).collect();
                    let tensor = batch_tensor(&rows_here, c.vocab);
                    let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
                    let tokens = pool
                        .install(|| {
                            batch
                                .sample(&tensor, &mut samplers, &refs)
                                .map(<[u32]>::to_vec)
                        })
                        .unwrap();
                    for (i, &r) in part.iter().enumerate() {
                        got[r].push(tokens[i]);
                        histories[i].push(tokens[i]);
                    }
                }
            }
            prop_assert_eq!(got, want);
            Ok(())
        })
        .unwrap();
}

fn chains(n: usize) -> Vec<kyutai_sampling::Chain> {
    (0..n)
        .map(|i| {
            ChainConfig {
                seed: i as u64,
                ..ChainConfig::llama_cpp()
            }
            .build()
            .unwrap()
        })
        .collect()
}

#[test]
fn dtypes_rank_three_and_large_batches_match_single_rows() {
    let (rows, vocab) = (16, 4096);
    let values: Vec<f32> = (0..rows * vocab)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect();
    let base = Tensor::from_vec(values, (rows, vocab), &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        for rank3 in [false, true] {
            let mut t = base.to_dtype(dtype).unwrap();
            if rank3 {
                t = t.unsqueeze(1).unwrap();
            }
            let histories: Vec<Vec<u32>> = (0..rows).map(|i| vec![i as u32; i % 3]).collect();
            let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
            let got = sample_batch(&t, &mut chains(rows), &refs).unwrap();
            let mut singles = chains(rows);
            for (i, s) in singles.iter_mut().enumerate() {
                let row = t.get(i).unwrap();
                assert_eq!(
                    got[i],
                    s.sample(&row, refs[i]).unwrap(),
                    "{dtype:?} row {i}"
                );
            }
        }
    }
}

#[test]
fn mismatched_sizes_and_bad_tensors_are_typed_errors() {
    let t = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
    let e = sample_batch(&t, &mut chains(2), &[&[], &[], &[]]).unwrap_err();
    assert!(
        matches!(
            e,
            SamplingError::BatchMismatch {
                rows: 3,
                samplers: 2,
                histories: 3
            }
        ),
        "{e}"
    );
    let e = sample_batch(&t, &mut chains(3), &[&[], &[]]).unwrap_err();
    assert!(
        matches!(
            e,
            SamplingError::BatchMismatch {
                rows: 3,
                samplers: 3,
                histories: 2
            }
        ),
        "{e}"
    );
    let flat = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        sample_batch(&flat, &mut chains(1), &[&[]]),
        Err(SamplingError::InvalidShape { .. })
    ));
    let wide = Tensor::zeros((2, 2, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        sample_batch(&wide, &mut chains(2), &[&[], &[]]),
        Err(SamplingError::InvalidShape { .. })
    ));
    let empty = Tensor::zeros((2, 0), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        sample_batch(&empty, &mut chains(2), &[&[], &[]]),
        Err(SamplingError::EmptyLogits)
    ));
    let ints = Tensor::zeros((2, 5), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        sample_batch(&ints, &mut chains(2), &[&[], &[]]),
        Err(SamplingError::UnsupportedDType(DType::U32))
    ));
    let none = Tensor::zeros((0, 5), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(
        sample_batch(&none, &mut chains(0), &[]).unwrap(),
        Vec::<u32>::new()
    );
}

#[test]
fn a_failing_row_is_named_and_the_others_still_advance() {
    for vocab in [8usize, 8192] {
        let rows = 6;
        let mut values: Vec<f32> = (0..rows * vocab).map(|i| (i % 13) as f32 * 0.3).collect();
        // Rows 4 and 2 are bad; the lowest is reported.
        values[4 * vocab + 1] = f32::NAN;
        for v in &mut values[2 * vocab..3 * vocab] {
            *v = f32::NEG_INFINITY;
        }
        let t = Tensor::from_vec(values.clone(), (rows, vocab), &Device::Cpu).unwrap();
        let histories = vec![&[][..]; rows];
        let mut samplers = chains(rows);
        let e = sample_batch(&t, &mut samplers, &histories).unwrap_err();
        match e {
            SamplingError::BatchRow { row: 2, source } => {
                assert!(matches!(*source, SamplingError::AllMasked), "{source}")
            }
            other => panic!("expected row 2's AllMasked, got {other}"),
        }
        // The good rows drew: their next token matches a fresh sampler's second one.
        let mut fresh = chains(rows);
        for r in [0usize, 1, 3, 5] {
            let row = &values[r * vocab..(r + 1) * vocab];
            fresh[r].sample_slice(row, &[]).unwrap();
            assert_eq!(
                samplers[r].sample_slice(row, &[]).unwrap(),
                fresh[r].sample_slice(row, &[]).unwrap(),
                "row {r} (vocab {vocab})"
            );
        }
    }
}

#[test]
fn rows_run_through_user_samplers_too() {
    /// Returns the row's length minus one, and counts its calls.
    struct Last(usize);
    impl Sampler for Last {
        fn sample(&mut self, logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
            self.0 += 1;
            Ok(logits.dims()[0] as u32 - 1)
        }
    }
    let t = Tensor::zeros((64, 1024), DType::F32, &Device::Cpu).unwrap();
    let mut samplers: Vec<Last> = (0..64).map(|_| Last(0)).collect();
    let tokens = sample_batch(&t, &mut samplers, &[&[][..]; 64]).unwrap();
    assert!(tokens.iter().all(|&t| t == 1023));
    assert!(samplers.iter().all(|s| s.0 == 1));
}
