//! Reading logits tensors into host memory, and the checks every sampler runs on them.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::SamplingError;

/// Checks the shape (`[V]` or `[1, V]`, `V >= 1`) and dtype (a float type) of `logits`, and
/// returns the vocabulary size.
pub(crate) fn check_tensor(logits: &Tensor) -> Result<usize, SamplingError> {
    let dims = logits.dims();
    let vocab = match dims {
        [v] => *v,
        [1, v] => *v,
        _ => {
            return Err(SamplingError::InvalidShape {
                shape: dims.to_vec(),
            })
        }
    };
    if vocab == 0 {
        return Err(SamplingError::EmptyLogits);
    }
    match logits.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(vocab),
        other => Err(SamplingError::UnsupportedDType(other)),
    }
}

/// Returns `logits` as a rank-1 f32 tensor after checking its shape and dtype. A `[1, V]` input is
/// squeezed, other float dtypes are converted (f32 input is shared, not copied).
pub(crate) fn to_f32_vector(logits: &Tensor) -> Result<Tensor, SamplingError> {
    let vocab = check_tensor(logits)?;
    let logits = if logits.rank() == 2 {
        logits.reshape(vocab)?
    } else {
        logits.clone()
    };
    Ok(logits.to_dtype(DType::F32)?)
}

/// Calls `f` on the values of a rank-1 f32 tensor. Contiguous CPU tensors are read in place; any
/// other tensor is copied into `scratch` first (which keeps its capacity for the next call).
pub(crate) fn with_f32_slice<R>(
    logits: &Tensor,
    scratch: &mut Vec<f32>,
    f: impl FnOnce(&[f32]) -> Result<R, SamplingError>,
) -> Result<R, SamplingError> {
    debug_assert_eq!(logits.dtype(), DType::F32);
    if matches!(logits.device(), Device::Cpu) {
        let (storage, layout) = logits.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            if let Some(values) = data.get(start..end) {
                return f(values);
            }
        }
    }
    scratch.clear();
    scratch.extend(logits.flatten_all()?.to_vec1::<f32>()?);
    f(scratch)
}

/// Checks the shape and dtype of `logits` (as [`check_tensor`]) and calls `f` on its values as
/// f32. A contiguous CPU f32 tensor, `[V]` or `[1, V]`, is read in place without creating any
/// tensor (so without allocating); other dtypes are converted first and other layouts or devices
/// copied into `scratch`, as in [`with_f32_slice`].
pub(crate) fn with_logits<R>(
    logits: &Tensor,
    scratch: &mut Vec<f32>,
    f: impl FnOnce(&[f32]) -> Result<R, SamplingError>,
) -> Result<R, SamplingError> {
    check_tensor(logits)?;
    if logits.dtype() == DType::F32 {
        with_f32_slice(logits, scratch, f)
    } else {
        with_f32_slice(&logits.to_dtype(DType::F32)?, scratch, f)
    }
}

/// Copies the values of `logits` (any accepted shape and float dtype) into `out` as f32.
#[cfg(test)]
fn copy_to_host(logits: &Tensor, out: &mut Vec<f32>) -> Result<(), SamplingError> {
    let logits = to_f32_vector(logits)?;
    let mut scratch = Vec::new();
    with_f32_slice(&logits, &mut scratch, |values| {
        out.clear();
        out.extend_from_slice(values);
        Ok(())
    })
}

/// Checks that no logit is NaN or `+inf` and that at least one is not `-inf`.
///
/// Samplers run this on every call; custom [`Sampler`](crate::Sampler)s can use it to get the
/// same errors. It costs about one vectorised read of the logits.
pub fn validate_logits(logits: &[f32]) -> Result<(), SamplingError> {
    max_logit(logits).map(|_| ())
}

/// Validates `logits` (see [`validate_logits`]) and returns the largest value, which is finite.
///
/// The common case is one branch-free pass over independent lanes that the compiler turns into
/// SIMD max and compare instructions; the offending index is searched for only on failure.
pub(crate) fn max_logit(logits: &[f32]) -> Result<f32, SamplingError> {
    match crate::native::dispatch::level() {
        #[cfg(target_arch = "x86_64")]
        crate::native::dispatch::Level::Avx2 => {
            // SAFETY: `level` returns `Avx2` only when the CPU has AVX2 and FMA (detected at run
            // time), which is all `max_logit_avx2` requires.
            unsafe { max_logit_avx2(logits) }
        }
        #[cfg(target_arch = "x86_64")]
        crate::native::dispatch::Level::Avx512 => {
            // SAFETY: `level` returns `Avx512` only when the CPU has AVX-512 F, BW and VL, AVX2
            // and FMA (detected at run time), which is all `max_logit_avx512` requires.
            unsafe { max_logit_avx512(logits) }
        }
        crate::native::dispatch::Level::Portable => max_logit_portable(logits),
    }
}

/// [`max_logit`] compiled with AVX-512 enabled, with 64 lanes (four 512-bit vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn max_logit_avx512(logits: &[f32]) -> Result<f32, SamplingError> {
    max_logit_lanes::<64>(logits)
}

/// [`max_logit`] compiled with AVX2 and FMA enabled, with 32 lanes (four 256-bit vectors of
/// maxima in flight). The maximum does not depend on the lanes, so the result is the same.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_logit_avx2(logits: &[f32]) -> Result<f32, SamplingError> {
    max_logit_lanes::<32>(logits)
}

/// [`max_logit`] compiled for the baseline target.
fn max_logit_portable(logits: &[f32]) -> Result<f32, SamplingError> {
    max_logit_lanes::<16>(logits)
}

/// [`max_logit`] over `LANES` independent lanes.
#[inline(always)]
fn max_logit_lanes<const LANES: usize>(logits: &[f32]) -> Result<f32, SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut nan = [0u32; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for chunk in &mut chunks {
        for ((m, n), &x) in max.iter_mut().zip(nan.iter_mut()).zip(chunk) {
            // `x > m` is false for NaN, so NaN never becomes the maximum; it is counted instead.
            *m = if x > *m { x } else { *m };
            *n |= u32::from(x.is_nan());
        }
    }
    for &x in chunks.remainder() {
        max[0] = if x > max[0] { x } else { max[0] };
        nan[0] |= u32::from(x.is_nan());
    }
    // `+ 0.0` reports a zero maximum as `+0.0`, whichever lane saw which zero first.
    let max = max
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
        + 0.0;
    if nan.iter().any(|&n| n != 0) || max == f32::INFINITY {
        if let Some((index, &value)) = logits
            .iter()
            .enumerate()
            .find(|(_, x)| x.is_nan() || **x == f32::INFINITY)
        {
            return Err(SamplingError::NonFiniteLogit { index, value });
        }
    }
    if max == f32::NEG_INFINITY {
        return Err(SamplingError::AllMasked);
    }
    Ok(max)
}

/// Validates `logits` and returns the index of the largest one; the lowest index wins ties.
pub(crate) fn argmax(logits: &[f32]) -> Result<u32, SamplingError> {
    let max = max_logit(logits)?;
    // Find the first block holding `max` with a vectorisable test, then the index inside it.
    // `max` is one of the values, so the search always succeeds.
    const BLOCK: usize = 64;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if block.iter().fold(false, |found, &x| found | (x == max)) {
            let offset = block.iter().position(|&x| x == max).unwrap_or(0);
            return Ok((b * BLOCK + offset) as u32);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_the_first_bad_index() {
        let mut v = vec![0.0f32; 100];
        v[37] = f32::NAN;
        v[80] = f32::INFINITY;
        match validate_logits(&v) {
            Err(SamplingError::NonFiniteLogit { index, value }) => {
                assert_eq!(index, 37);
                assert!(value.is_nan());
            }
            other => panic!("unexpected {other:?}"),
        }
        v[37] = 0.0;
        assert!(matches!(
            validate_logits(&v),
            Err(SamplingError::NonFiniteLogit { index: 80, .. })
        ));
    }

    #[test]
    fn validation_in_the_remainder() {
        // 17 elements: index 16 sits in the remainder of the 16-lane loop.
        let mut v = vec![f32::NEG_INFINITY; 17];
        assert!(matches!(validate_logits(&v), Err(SamplingError::AllMasked)));
        v[16] = 1.0;
        assert!(validate_logits(&v).is_ok());
        v[16] = f32::NAN;
        assert!(matches!(
            validate_logits(&v),
            Err(SamplingError::NonFiniteLogit { index: 16, .. })
        ));
    }

    #[test]
    fn argmax_takes_the_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]).unwrap(), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0]).unwrap(), 1);
        assert_eq!(argmax(&[f32::MAX, f32::MAX]).unwrap(), 0);
        let mut long = vec![0.0f32; 1000];
        long[700] = 2.0;
        long[333] = 2.0;
        long[999] = 1.0;
        assert_eq!(argmax(&long).unwrap(), 333);
        assert!(matches!(
            argmax(&[f32::NEG_INFINITY; 40]),
            Err(SamplingError::AllMasked)
        ));
    }

    #[test]
    fn non_contiguous_and_2d_tensors_are_read_correctly() {
        let t = Tensor::arange(0f32, 12., &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let col = t.narrow(1, 1, 1).unwrap().flatten_all().unwrap(); // 1, 5, 9 (strided)
        let mut out = Vec::new();
        copy_to_host(&col, &mut out).unwrap();
        assert_eq!(out, [1.0, 5.0, 9.0]);
        let row = t.narrow(0, 2, 1).unwrap(); // [1, 4]
        copy_to_host(&row, &mut out).unwrap();
        assert_eq!(out, [8.0, 9.0, 10.0, 11.0]);
    }
}
