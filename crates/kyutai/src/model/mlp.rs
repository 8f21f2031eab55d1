//! The feed-forward block: gated (`linear_in` to twice the hidden width, `act(x0) * x1`,
//! `linear_out`) for Kyutai's models, or plain (`linear1`, exact GELU, `linear2`).

use candle_core::{IndexOp, Tensor};
use candle_nn::{Linear, Module};

use super::weights::{linear, WeightSource};
use crate::config::TransformerConfig;
use crate::Result;

#[derive(Debug, Clone)]
pub(crate) enum Mlp {
    Gated {
        linear_in: Linear,
        linear_out: Linear,
        activation: candle_nn::Activation,
    },
    Plain {
        linear1: Linear,
        linear2: Linear,
    },
}

impl Mlp {
    /// Reads `gating.linear_{in,out}` or `linear{1,2}` under `src` (a layer).
    pub(crate) fn load(cfg: &TransformerConfig, src: &WeightSource) -> Result<Self> {
        let d = cfg.d_model;
        match cfg.gating {
            Some(activation) => {
                let hidden = cfg.gating_hidden_dim();
                let src = src.pp("gating");
                Ok(Self::Gated {
                    linear_in: linear(&src.pp("linear_in"), d, 2 * hidden, cfg.bias_ff)?,
                    linear_out: linear(&src.pp("linear_out"), hidden, d, cfg.bias_ff)?,
                    activation,
                })
            }
            None => Ok(Self::Plain {
                linear1: linear(&src.pp("linear1"), d, cfg.dim_feedforward, cfg.bias_ff)?,
                linear2: linear(&src.pp("linear2"), cfg.dim_feedforward, d, cfg.bias_ff)?,
            }),
        }
    }

    /// `xs`: `[batch, t, d]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gated {
                linear_in,
                linear_out,
                activation,
            } => {
                let xs = xs.apply(linear_in)?;
                let (b, t, _) = xs.dims3()?;
                let xs = xs.reshape((b, t, 2, ()))?;
                let gated = (xs.i((.., .., 0))?.apply(activation)? * xs.i((.., .., 1))?)?;
                Ok(gated.apply(linear_out)?)
            }
            Self::Plain { linear1, linear2 } => {
                Ok(linear2.forward(&linear1.forward(xs)?.gelu_erf()?)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    #[test]
    fn gated_block_multiplies_the_activated_first_half_by_the_second() {
        // d = 1, hidden = 2 (dim_feedforward 3 != 4 d, so 2 * 3 / 3 = 2).
        let mut cfg = crate::LmConfig::stt_2_6b_en().transformer;
        cfg.d_model = 1;
        cfg.num_heads = 1;
        cfg.dim_feedforward = 3;
        assert_eq!(cfg.gating_hidden_dim(), 2);
        let dev = Device::Cpu;
        let tensors = HashMap::from([
            // linear_in: [2 * hidden, d] = rows (a0, a1 | b0, b1)
            (
                "gating.linear_in.weight".to_string(),
                Tensor::new(&[[1.0f32], [-2.0], [3.0], [0.5]], &dev).unwrap(),
            ),
            (
                "gating.linear_out.weight".to_string(),
                Tensor::new(&[[1.0f32, 10.0]], &dev).unwrap(),
            ),
        ]);
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let mlp = Mlp::load(&cfg, &WeightSource::new(vb)).unwrap();
        let x = 0.7f32;
        let y = mlp
            .forward(&Tensor::new(&[[[x]]], &dev).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let silu = |v: f32| v / (1.0 + (-v).exp());
        let want = silu(x) * (3.0 * x) + 10.0 * silu(-2.0 * x) * (0.5 * x);
        assert!((y[0] - want).abs() < 1e-6, "{} vs {want}", y[0]);
    }
}
