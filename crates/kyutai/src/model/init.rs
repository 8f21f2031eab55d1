//! Seeded random weights: the list of tensors a configuration needs ([`tensor_inventory`]),
//! [`random_weights`] built on it, and the splitmix64 + Box–Muller generator that both this
//! recipe and the random Mimi use.
//!
//! This module sits above [`lm`](super::lm): it runs the model's loader in record mode, so the
//! loader itself (`weights`) never depends on the model.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::lm::{LmModel, LmWeights};
use super::weights::{TensorKind, TensorSpec, WeightSource};
use crate::{Error, LmConfig, Result};

/// The tensors a model of configuration `config` reads, in the order it reads them.
///
/// ```
/// let config = kyutai::LmConfig::stt_2_6b_en();
/// let tensors = kyutai::tensor_inventory(&config)?;
/// // 48 layers of 6 tensors, 32 audio embeddings, text_emb, out_norm and text_linear.
/// assert_eq!(tensors.len(), 48 * 6 + 32 + 3);
/// assert!(tensors.iter().any(|t| t.name == "transformer.layers.47.self_attn.in_proj_weight"
///     && t.shape == [3 * 2048, 2048]));
/// # Ok::<(), kyutai::Error>(())
/// ```
///
/// # Errors
///
/// The errors of [`LmConfig::validate`].
pub fn tensor_inventory(config: &LmConfig) -> Result<Vec<TensorSpec>> {
    let (source, specs) = WeightSource::recorder(DType::F32, &Device::Cpu);
    LmWeights::load(config, &source)?;
    let specs = specs.borrow().clone();
    Ok(specs)
}

/// Seeded random weights for a model of configuration `config`, keyed by tensor name.
///
/// The recipe is the one Kyutai's parity fixtures were recorded with, so `seed` 42 and the
/// fixtures' `multistream_lm` configuration give exactly the tensors of `tiny.safetensors`:
/// a splitmix64 stream seeded with `seed`; for each tensor in sorted-name order and each element
/// in row-major order, a normal deviate by Box–Muller (cosine branch, in f64, from two uniforms
/// `(x >> 11) / 2^53`); embeddings take it as is, normalisation scales `1 + 0.1 z`, every other
/// weight `z / sqrt(last dim)`; then a cast to f32 and to `dtype`.
///
/// The result feeds `VarBuilder::from_tensors`, or `candle_core::safetensors::save` to write a
/// checkpoint. [`LmModel::random`](crate::LmModel::random) builds a model from it directly.
///
/// # Errors
///
/// The errors of [`LmConfig::validate`], [`Error::OutOfMemory`] when the allocator refuses a
/// tensor's buffer, and candle errors creating the tensors.
pub fn random_weights(
    config: &LmConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut specs = tensor_inventory(config)?;
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rng = SplitMix64::new(seed);
    let mut tensors = HashMap::with_capacity(specs.len());
    for spec in specs {
        // The configuration bounds every shape (`LmConfig::validate`); the product is still
        // checked, and the buffer reserved fallibly, so that no shape aborts the process.
        let count = spec
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::input(spec.name.as_str(), "has a shape that overflows"))?;
        let last = spec.shape.last().copied().unwrap_or(1).max(1) as f64;
        let scale = last.sqrt();
        let mut values: Vec<f32> = Vec::new();
        values
            .try_reserve_exact(count)
            .map_err(|_| Error::OutOfMemory {
                what: format!("the random weights of `{}`", spec.name),
                bytes: count as u128 * 4,
            })?;
        values.extend((0..count).map(|_| {
            let z = rng.normal();
            match spec.kind {
                TensorKind::Embedding => z as f32,
                TensorKind::NormScale => (1.0 + 0.1 * z) as f32,
                TensorKind::Weight => (z / scale) as f32,
            }
        }));
        let tensor = Tensor::from_vec(values, spec.shape.as_slice(), device)?.to_dtype(dtype)?;
        tensors.insert(spec.name, tensor);
    }
    Ok(tensors)
}

impl LmModel {
    /// A model of configuration `config` with seeded random weights (see
    /// [`random_weights`](crate::random_weights)): for tests, demos and benchmarks. Its output
    /// is noise.
    ///
    /// # Errors
    ///
    /// The configuration errors of [`LmConfig::validate`].
    pub fn random(config: &LmConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let tensors = random_weights(config, seed, dtype, device)?;
        Self::new(config, VarBuilder::from_tensors(tensors, dtype, device))
    }
}

/// splitmix64 (Steele, Lea and Flood), the generator of the fixtures' weight recipe.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform in `[0, 1)` with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal deviate (Box–Muller, cosine branch).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // First outputs of splitmix64 seeded with 0 (the reference values of the algorithm).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn normal_deviates_have_unit_moments() {
        let mut rng = SplitMix64::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance.
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
    }
}
