//! Seeded random Mimi weights: a `VarBuilder` backend that makes up each tensor from a seed and
//! its name, with the crate's one splitmix64 + Box–Muller generator.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use crate::model::init::SplitMix64;

/// A `VarBuilder` backend that makes up every tensor it is asked for, from a seed and the
/// tensor's name (so the order of requests does not matter).
pub(super) struct SeededWeights {
    pub(super) seed: u64,
}

impl SimpleBackend for SeededWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let constant = match leaf {
            "cluster_usage" | "initialized" | "weight_g" => Some(1.0),
            "bias" => Some(0.0),
            "scale" => Some(0.01),
            _ if shape.rank() == 1 && name.contains("norm") => Some(1.0),
            _ => None,
        };
        if let Some(value) = constant {
            return Tensor::full(value, shape, device)?.to_dtype(dtype);
        }
        let count = shape.elem_count();
        let std = if leaf == "embed_sum" {
            1.0
        } else {
            let fan_in = match shape.dims().first() {
                Some(&rows) if shape.rank() >= 2 && rows > 0 => (count / rows).max(1),
                _ => 1,
            };
            1.0 / (fan_in as f64).sqrt()
        };
        let mut rng = SplitMix64::new(self.seed ^ fnv1a(name));
        let values: Vec<f32> = (0..count).map(|_| (rng.normal() * std) as f32).collect();
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random Mimi weights need a shape for `{name}`")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
