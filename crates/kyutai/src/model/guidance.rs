//! Classifier-free guidance: the combination of a conditioned and an unconditioned row of
//! logits that moshi applies before a token is chosen. Pure arithmetic on logits; choosing the
//! token is the generation layer's business.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// Classifier-free guidance: from `logits` holding a conditioned row and an unconditioned row
/// (shape `[2, V]`, `[2, 1, V]`, ...), the 1-D f32 logits `alpha * cond - (alpha - 1) * uncond`,
/// the combination moshi applies before sampling.
///
/// Masked tokens (`-inf` logits) follow one rule, so that the result is never NaN where the
/// plain formula would be (`0 * -inf` at `alpha = 1`, `-inf + inf`): **a token masked in the
/// conditioned row is masked (`-inf`) in the result, whatever the unconditioned row holds; a
/// token masked in the unconditioned row only takes its conditioned logit** (the unconditioned
/// row says nothing about it). Every other token gets the formula.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let inf = f32::INFINITY;
/// let logits = Tensor::new(&[[1.0f32, -inf, 2.0], [0.5, 0.0, -inf]], &Device::Cpu)?;
/// let guided = kyutai::guided_logits(&logits, 1.0)?.to_vec1::<f32>()?;
/// assert_eq!(guided, vec![1.0, -inf, 2.0]);
/// # Ok::<(), kyutai::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidInput`] when `logits` do not hold exactly two rows, are not floats, or
/// `alpha` is not finite.
pub fn guided_logits(logits: &Tensor, alpha: f64) -> Result<Tensor> {
    check_alpha(alpha)?;
    let dims = logits.dims();
    let rows_ok = matches!(dims, [2, middle @ .., _] if middle.iter().all(|&d| d == 1));
    if !rows_ok {
        return Err(Error::input(
            "logits",
            format!("classifier-free guidance needs a conditioned and an unconditioned row ([2, ..., V]), got {dims:?}"),
        ));
    }
    check_float(logits)?;
    let vocab = logits.dim(candle_core::D::Minus1)?;
    let rows = logits.reshape((2, vocab))?.to_dtype(DType::F32)?;
    let cond = rows.get(0)?;
    let uncond = rows.get(1)?;
    let guided = ((&cond * alpha)? - (&uncond * (alpha - 1.0))?)?;
    // Where either row is masked, the conditioned logit: -inf when it is the one masked.
    let neg_inf = Tensor::new(f32::NEG_INFINITY, cond.device())?;
    let masked = cond
        .broadcast_eq(&neg_inf)?
        .maximum(&uncond.broadcast_eq(&neg_inf)?)?;
    Ok(masked.where_cond(&cond, &guided)?)
}

/// Checks a guidance coefficient: it must be finite.
pub(crate) fn check_alpha(alpha: f64) -> Result<()> {
    if alpha.is_finite() {
        Ok(())
    } else {
        Err(Error::input(
            "cfg_alpha",
            format!("must be finite, got {alpha}"),
        ))
    }
}

/// Checks that `logits` hold floats.
pub(crate) fn check_float(logits: &Tensor) -> Result<()> {
    if logits.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::input(
            "logits",
            format!("must be a float tensor, got {:?}", logits.dtype()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn guidance_combines_the_two_rows() {
        let logits =
            Tensor::new(&[[[1.0f32, 2.0, -1.0]], [[0.5, 3.0, -1.0]]], &Device::Cpu).unwrap();
        let guided = guided_logits(&logits, 1.5).unwrap();
        assert_eq!(guided.dims(), &[3]);
        // 1.5 * cond - 0.5 * uncond
        assert_eq!(guided.to_vec1::<f32>().unwrap(), vec![1.25, 1.5, -1.0]);
        let one_row = Tensor::zeros((1, 1, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(guided_logits(&one_row, 1.5).is_err());
        assert!(guided_logits(&logits, f64::NAN).is_err());
        let ints = Tensor::zeros((2, 3), DType::U32, &Device::Cpu).unwrap();
        assert!(guided_logits(&ints, 1.5).is_err());
    }

    #[test]
    fn masked_tokens_stay_masked_and_never_become_nan() {
        let inf = f32::INFINITY;
        // Token 0 masked in cond only, 1 in uncond only, 2 in both, 3 in neither.
        let logits = Tensor::new(
            &[[-inf, 1.0f32, -inf, 2.0], [0.5, -inf, -inf, 1.0]],
            &Device::Cpu,
        )
        .unwrap();
        for alpha in [0.0, 0.5, 1.0, 1.5, 3.0, -2.0] {
            let guided = guided_logits(&logits, alpha)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(
                guided.iter().all(|x| !x.is_nan()),
                "alpha {alpha}: {guided:?}"
            );
            assert_eq!(guided[0], -inf, "alpha {alpha}");
            assert_eq!(guided[1], 1.0, "alpha {alpha}");
            assert_eq!(guided[2], -inf, "alpha {alpha}");
            let want = (alpha * 2.0 - (alpha - 1.0) * 1.0) as f32;
            assert!((guided[3] - want).abs() < 1e-6, "alpha {alpha}");
        }
    }
}
