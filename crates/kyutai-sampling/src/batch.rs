//! Sampling a batch of rows, each with its own sampler and history: [`sample_batch`] and the
//! buffer-reusing [`Batch`].

use std::sync::Mutex;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::logits::with_f32_slice;
use crate::{Sampler, SamplingError};

/// Below this many logits in the whole batch, rows run on the calling thread: handing work to
/// the pool costs more than it saves. The result is the same either way.
const PARALLEL_MIN_LOGITS: usize = 1 << 15;

/// Samples every row of `logits` (`[B, V]` or `[B, 1, V]`, any float dtype, any device) with its
/// own sampler and history. One device-to-host copy for the whole batch; rows run in parallel.
///
/// # Batch = single
///
/// Row `i` gets exactly the token that `samplers[i].sample(row i, histories[i])` would return
/// on its own: each sampler owns its random stream, so neither the other rows, their order, the
/// batch size nor the number of threads changes a row's token. Rows are read from one host copy
/// of the batch (none at all for a contiguous f32 tensor on the CPU) and handed to their samplers
/// as slices, on rayon's global pool (or the pool the call is `install`ed in) once the batch
/// holds at least 32768 logits, on the calling thread below that. [`Batch`] does the same and
/// keeps its buffers from call to call.
///
/// Every row is sampled even when one fails, so the other rows' samplers advance exactly as they
/// would alone.
///
/// # Errors
///
/// [`SamplingError::BatchMismatch`] when `samplers` or `histories` do not hold one entry per row;
/// [`SamplingError::InvalidShape`], [`EmptyLogits`](SamplingError::EmptyLogits) or
/// [`UnsupportedDType`](SamplingError::UnsupportedDType) for the tensor; otherwise
/// [`SamplingError::BatchRow`] naming the lowest row whose sampler failed, with its error.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{sample_batch, ChainConfig};
///
/// let logits = Tensor::new(&[[0.0f32, 5.0, 1.0], [3.0, 0.0, f32::NEG_INFINITY]], &Device::Cpu)?;
/// let greedy = ChainConfig { do_sample: false, ..ChainConfig::default() }.build()?;
/// let mut samplers = vec![greedy.clone(), greedy];
/// let tokens = sample_batch(&logits, &mut samplers, &[&[], &[]])?;
/// assert_eq!(tokens, [1, 0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sample_batch<S: Sampler>(
    logits: &Tensor,
    samplers: &mut [S],
    histories: &[&[u32]],
) -> Result<Vec<u32>, SamplingError> {
    let mut batch = Batch::new();
    batch.sample(logits, samplers, histories)?;
    Ok(batch.tokens)
}

/// [`sample_batch`] with its buffers (the host copy of the logits, the tokens) kept from call to
/// call: no allocation per call once they are sized.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{Batch, ChainConfig};
///
/// let mut batch = Batch::new();
/// let mut samplers = vec![ChainConfig { do_sample: false, ..ChainConfig::default() }.build()?; 3];
/// let logits = Tensor::new(&[[0.0f32, 1.0], [1.0, 0.0], [2.0, 3.0]], &Device::Cpu)?;
/// assert_eq!(batch.sample(&logits, &mut samplers, &[&[], &[], &[]])?, [1, 0, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Batch {
    host: Vec<f32>,
    tokens: Vec<u32>,
}

impl Batch {
    /// Empty buffers; the first call sizes them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Samples every row, as [`sample_batch`], and returns the tokens (one per row).
    ///
    /// # Errors
    ///
    /// As [`sample_batch`].
    pub fn sample<S: Sampler>(
        &mut self,
        logits: &Tensor,
        samplers: &mut [S],
        histories: &[&[u32]],
    ) -> Result<&[u32], SamplingError> {
        let (rows, vocab) = batch_shape(logits)?;
        if samplers.len() != rows || histories.len() != rows {
            return Err(SamplingError::BatchMismatch {
                rows,
                samplers: samplers.len(),
                histories: histories.len(),
            });
        }
        self.tokens.clear();
        self.tokens.resize(rows, 0);
        if rows == 0 {
            return Ok(&self.tokens);
        }
        let tokens = &mut self.tokens;
        let run = |values: &[f32]| sample_rows(values, vocab, samplers, histories, tokens);
        if logits.dtype() == DType::F32 {
            with_f32_slice(logits, &mut self.host, run)?;
        } else {
            with_f32_slice(&logits.to_dtype(DType::F32)?, &mut self.host, run)?;
        }
        Ok(&self.tokens)
    }
}

/// `(rows, vocab)` of a `[B, V]` or `[B, 1, V]` float tensor.
fn batch_shape(logits: &Tensor) -> Result<(usize, usize), SamplingError> {
    let (rows, vocab) = match *logits.dims() {
        [b, v] | [b, 1, v] => (b, v),
        _ => {
            return Err(SamplingError::InvalidShape {
                shape: logits.dims().to_vec(),
            })
        }
    };
    if vocab == 0 {
        return Err(SamplingError::EmptyLogits);
    }
    match logits.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok((rows, vocab)),
        other => Err(SamplingError::UnsupportedDType(other)),
    }
}

/// Samples row `i` of `values` with `samplers[i]` into `tokens[i]`, every row, in parallel when
/// the batch is large enough.
fn sample_rows<S: Sampler>(
    values: &[f32],
    vocab: usize,
    samplers: &mut [S],
    histories: &[&[u32]],
    tokens: &mut [u32],
) -> Result<(), SamplingError> {
    let one = |row: usize, (sampler, (history, (logits, token))): RowArgs<'_, S>| {
        sampler
            .sample_slice(logits, history)
            .map(|t| *token = t)
            .map_err(|e| (row, e))
    };
    let rows = samplers.len();
    if rows == 1 || values.len() < PARALLEL_MIN_LOGITS || rayon::current_num_threads() == 1 {
        // Sequentially, still sampling every row after a failure.
        let mut first: Option<(usize, SamplingError)> = None;
        let args = samplers
            .iter_mut()
            .zip(histories.iter().zip(values.chunks_exact(vocab).zip(tokens)));
        for (row, arg) in args.enumerate() {
            if let Err(e) = one(row, arg) {
                first.get_or_insert(e);
            }
        }
        return first.map_or(Ok(()), |(row, e)| Err(row_error(row, e)));
    }
    let first: Mutex<Option<(usize, SamplingError)>> = Mutex::new(None);
    samplers
        .par_iter_mut()
        .zip(
            histories
                .par_iter()
                .zip(values.par_chunks_exact(vocab).zip(tokens.par_iter_mut())),
        )
        .enumerate()
        .for_each(|(row, arg)| {
            if let Err((row, e)) = one(row, arg) {
                // A poisoned lock only means another row's thread panicked; keep its value.
                let mut slot = first.lock().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref().is_none_or(|(r, _)| row < *r) {
                    *slot = Some((row, e));
                }
            }
        });
    let first = first.into_inner().unwrap_or_else(|p| p.into_inner());
    first.map_or(Ok(()), |(row, e)| Err(row_error(row, e)))
}

type RowArgs<'a, S> = (&'a mut S, (&'a &'a [u32], (&'a [f32], &'a mut u32)));

fn row_error(row: usize, source: SamplingError) -> SamplingError {
    SamplingError::BatchRow {
        row,
        source: Box::new(source),
    }
}
