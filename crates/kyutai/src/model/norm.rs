//! Layer normalisations: RmsNorm (epsilon `1e-8`, scale `alpha` of shape `[1, 1, d]`) and
//! LayerNorm (epsilon `1e-5`), as in moshi.

use candle_core::Tensor;
use candle_nn::Module;

use super::weights::{TensorKind, WeightSource};
use crate::config::NormType;
use crate::Result;

const RMS_NORM_EPS: f32 = 1e-8;
const LAYER_NORM_EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
pub(crate) enum Norm {
    Rms { alpha: Tensor },
    Layer(candle_nn::LayerNorm),
}

impl Norm {
    pub(crate) fn load(d: usize, kind: NormType, src: &WeightSource) -> Result<Self> {
        match kind {
            NormType::RmsNorm => {
                let alpha = src
                    .get(&[1, 1, d], "alpha", TensorKind::NormScale)?
                    .reshape(d)?;
                Ok(Self::Rms { alpha })
            }
            NormType::LayerNorm => {
                // Kyutai's checkpoints store the scale as `alpha` `[1, 1, d]`, others as
                // `weight` `[d]`; moshi accepts both.
                let weight = if src.contains("alpha") {
                    src.get(&[1, 1, d], "alpha", TensorKind::NormScale)?
                        .reshape(d)?
                } else {
                    src.get(&[d], "weight", TensorKind::NormScale)?
                };
                let bias = src.get(&[d], "bias", TensorKind::Weight)?;
                Ok(Self::Layer(candle_nn::LayerNorm::new(
                    weight,
                    bias,
                    LAYER_NORM_EPS,
                )))
            }
        }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Rms { alpha } => Ok(candle_nn::ops::rms_norm(
                &xs.contiguous()?,
                alpha,
                RMS_NORM_EPS,
            )?),
            Self::Layer(norm) => Ok(norm.forward(xs)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn source(tensors: HashMap<String, Tensor>) -> candle_nn::VarBuilder<'static> {
        candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
    }

    #[test]
    fn rms_norm_divides_by_the_root_mean_square_and_scales() {
        let alpha = Tensor::new(&[[[1.0f32, 2.0, 0.5, 1.0]]], &Device::Cpu).unwrap();
        let vb = source(HashMap::from([("alpha".to_string(), alpha)]));
        let norm = Norm::load(4, NormType::RmsNorm, &WeightSource::new(vb)).unwrap();
        let x = Tensor::new(&[[[1.0f32, -2.0, 3.0, 4.0]]], &Device::Cpu).unwrap();
        let y = norm
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let rms = ((1.0f32 + 4.0 + 9.0 + 16.0) / 4.0 + 1e-8).sqrt();
        let want = [1.0 / rms, -4.0 / rms, 1.5 / rms, 4.0 / rms];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn layer_norm_reads_alpha_or_weight() {
        let x = Tensor::new(&[[[1.0f32, 2.0, 3.0, 6.0]]], &Device::Cpu).unwrap();
        let bias = Tensor::new(&[0.5f32, 0.5, 0.5, 0.5], &Device::Cpu).unwrap();
        let weight = Tensor::new(&[2.0f32, 2.0, 2.0, 2.0], &Device::Cpu).unwrap();
        let with_weight = source(HashMap::from([
            ("weight".to_string(), weight.clone()),
            ("bias".to_string(), bias.clone()),
        ]));
        let with_alpha = source(HashMap::from([
            ("alpha".to_string(), weight.reshape((1, 1, 4)).unwrap()),
            ("bias".to_string(), bias),
        ]));
        let a = Norm::load(4, NormType::LayerNorm, &WeightSource::new(with_weight)).unwrap();
        let b = Norm::load(4, NormType::LayerNorm, &WeightSource::new(with_alpha)).unwrap();
        let ya = a
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let yb = b
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mean = 3.0f32;
        let var = (4.0 + 1.0 + 0.0 + 9.0) / 4.0;
        let want: Vec<f32> = [1.0f32, 2.0, 3.0, 6.0]
            .iter()
            .map(|v| (v - mean) / (var + 1e-5f32).sqrt() * 2.0 + 0.5)
            .collect();
        for ((a, b), w) in ya.iter().zip(&yb).zip(want) {
            assert!(
                (a - w).abs() < 1e-5 && (b - w).abs() < 1e-5,
                "{a} {b} vs {w}"
            );
        }
    }
}
