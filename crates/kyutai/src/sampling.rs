//! Turning logits into tokens: the only place where this crate asks a [`Sampler`] for a token.

use candle_core::{DType, Tensor};
use kyutai_sampling::Sampler;

use crate::{Error, Result};

/// Samples one token from `logits` through `sampler`.
///
/// `logits` hold one row: shape `[V]`, `[1, V]`, `[1, 1, V]`, ... (every dimension but the last
/// of size 1), any float dtype and device. The sampler receives them as a 1-D f32 tensor of
/// length `V`, with `history`; the token it returns is checked to be `< V`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for logits with several rows or an integer dtype,
/// [`Error::Sampling`] for what the sampler reports (NaN logits, ...), and
/// [`Error::TokenOutOfRange`] when the sampler returns a token outside the logits.
pub fn sample_logits(logits: &Tensor, sampler: &mut dyn Sampler, history: &[u32]) -> Result<u32> {
    let logits = single_row(logits)?;
    let vocab = logits.dim(0)?;
    let token = sampler.sample(&logits, history)?;
    if token as usize >= vocab {
        return Err(Error::TokenOutOfRange {
            input: "the sampler's output".into(),
            token,
            vocab_size: vocab,
        });
    }
    Ok(token)
}

/// Classifier-free guidance: from `logits` holding a conditioned row and an unconditioned row
/// (shape `[2, V]`, `[2, 1, V]`, ...), the 1-D f32 logits `alpha * cond - (alpha - 1) * uncond`,
/// the combination moshi applies before sampling.
///
/// # Errors
///
/// [`Error::InvalidInput`] when `logits` do not hold exactly two rows or `alpha` is not finite.
pub fn guided_logits(logits: &Tensor, alpha: f64) -> Result<Tensor> {
    if !alpha.is_finite() {
        return Err(Error::input(
            "cfg_alpha",
            format!("must be finite, got {alpha}"),
        ));
    }
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
    Ok(((cond * alpha)? - (uncond * (alpha - 1.0))?)?)
}

/// `logits` as a 1-D f32 tensor, when they hold a single row.
pub(crate) fn single_row(logits: &Tensor) -> Result<Tensor> {
    let dims = logits.dims();
    let Some((&vocab, leading)) = dims.split_last() else {
        return Err(Error::input("logits", "must have at least one dimension"));
    };
    if leading.iter().any(|&d| d != 1) {
        return Err(Error::input(
            "logits",
            format!("must hold a single row of logits (every dimension but the last of size 1), got {dims:?}"),
        ));
    }
    check_float(logits)?;
    Ok(logits.reshape(vocab)?.to_dtype(DType::F32)?)
}

fn check_float(logits: &Tensor) -> Result<()> {
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
    use kyutai_sampling::{SamplingConfig, SamplingError};

    /// What a sampler was given.
    #[derive(Debug, PartialEq)]
    struct Call {
        dims: Vec<usize>,
        dtype: DType,
        values: Vec<f32>,
        history: Vec<u32>,
    }

    /// Records what it is given and returns a fixed token.
    struct Recorder {
        token: u32,
        seen: Vec<Call>,
    }

    impl Sampler for Recorder {
        fn sample(
            &mut self,
            logits: &Tensor,
            history: &[u32],
        ) -> std::result::Result<u32, SamplingError> {
            self.seen.push(Call {
                dims: logits.dims().to_vec(),
                dtype: logits.dtype(),
                values: logits.to_vec1::<f32>()?,
                history: history.to_vec(),
            });
            Ok(self.token)
        }
    }

    #[test]
    fn the_sampler_gets_one_dimensional_f32_logits_and_the_history() {
        let logits = Tensor::new(&[[[1.0f32, 3.0, 2.0]]], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let mut recorder = Recorder {
            token: 2,
            seen: vec![],
        };
        assert_eq!(sample_logits(&logits, &mut recorder, &[7, 8]).unwrap(), 2);
        assert_eq!(
            recorder.seen,
            vec![Call {
                dims: vec![3],
                dtype: DType::F32,
                values: vec![1.0, 3.0, 2.0],
                history: vec![7, 8]
            }]
        );
    }

    #[test]
    fn greedy_sampling_through_the_trait_takes_the_largest_logit() {
        let mut greedy = SamplingConfig::greedy().build().unwrap();
        let logits = Tensor::new(&[[0.5f32, -1.0, 4.0, 3.9]], &Device::Cpu).unwrap();
        assert_eq!(sample_logits(&logits, greedy.as_mut(), &[]).unwrap(), 2);
    }

    #[test]
    fn a_sampler_returning_a_token_outside_the_logits_is_an_error() {
        let logits = Tensor::new(&[0.0f32, 1.0], &Device::Cpu).unwrap();
        let mut recorder = Recorder {
            token: 2,
            seen: vec![],
        };
        assert!(matches!(
            sample_logits(&logits, &mut recorder, &[]),
            Err(Error::TokenOutOfRange {
                token: 2,
                vocab_size: 2,
                ..
            })
        ));
    }

    #[test]
    fn several_rows_or_integer_logits_are_errors() {
        let mut recorder = Recorder {
            token: 0,
            seen: vec![],
        };
        let rows = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&rows, &mut recorder, &[]),
            Err(Error::InvalidInput { .. })
        ));
        let ints = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&ints, &mut recorder, &[]),
            Err(Error::InvalidInput { .. })
        ));
        let scalar = Tensor::new(1.0f32, &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&scalar, &mut recorder, &[]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(recorder.seen.is_empty());
    }

    #[test]
    fn sampler_errors_are_reported() {
        let mut greedy = SamplingConfig::greedy().build().unwrap();
        let nan = Tensor::new(&[0.0f32, f32::NAN], &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&nan, greedy.as_mut(), &[]),
            Err(Error::Sampling(_))
        ));
    }

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
    }
}
