//! Reading tensors from a checkpoint, the list of tensors a configuration needs, and seeded
//! random weights.
//!
//! Every tensor the model reads goes through one function, which checks the name and shape and
//! reports [`Error::MissingTensor`] or [`Error::TensorShape`] with the full tensor name. The same
//! code path, run in "record" mode, lists the tensors a configuration needs
//! ([`tensor_inventory`]), so the inventory cannot drift from the loader.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, LmConfig, Result};

/// What a tensor is, which decides how [`random_weights`] initialises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// An embedding table: `N(0, 1)`.
    Embedding,
    /// A normalisation scale (`alpha`, or a LayerNorm `weight`): `1 + 0.1 N(0, 1)`.
    NormScale,
    /// Any other weight (linear weights, biases, layer scales): `N(0, 1) / sqrt(last dim)`.
    Weight,
}

/// One tensor of a checkpoint: its full name in Kyutai's candle layout, shape and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Full name, e.g. `transformer.layers.0.self_attn.in_proj_weight`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Kind.
    pub kind: TensorKind,
}

#[derive(Clone)]
enum Backend<'a> {
    Load(VarBuilder<'a>),
    Record {
        specs: Rc<RefCell<Vec<TensorSpec>>>,
        dtype: DType,
        device: Device,
    },
}

/// A view of a checkpoint at a name prefix (like `VarBuilder::pp`), with precise errors.
#[derive(Clone)]
pub(crate) struct WeightSource<'a> {
    backend: Backend<'a>,
    path: Vec<String>,
    /// The `VarBuilder`'s own prefix, for error messages.
    root: String,
}

impl<'a> WeightSource<'a> {
    pub(crate) fn new(vb: VarBuilder<'a>) -> Self {
        Self {
            root: vb.prefix(),
            backend: Backend::Load(vb),
            path: Vec::new(),
        }
    }

    fn recorder(dtype: DType, device: &Device) -> (Self, Rc<RefCell<Vec<TensorSpec>>>) {
        let specs = Rc::new(RefCell::new(Vec::new()));
        let source = Self {
            backend: Backend::Record {
                specs: specs.clone(),
                dtype,
                device: device.clone(),
            },
            path: Vec::new(),
            root: String::new(),
        };
        (source, specs)
    }

    /// The source one level down: `pp("layers").pp(0)` reads `layers.0.*`.
    pub(crate) fn pp(&self, name: impl ToString) -> Self {
        let mut path = self.path.clone();
        path.push(name.to_string());
        Self {
            backend: self.backend.clone(),
            path,
            root: self.root.clone(),
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match &self.backend {
            Backend::Load(vb) => vb.dtype(),
            Backend::Record { dtype, .. } => *dtype,
        }
    }

    pub(crate) fn device(&self) -> Device {
        match &self.backend {
            Backend::Load(vb) => vb.device().clone(),
            Backend::Record { device, .. } => device.clone(),
        }
    }

    fn full_name(&self, name: &str) -> String {
        let mut parts = self.path.clone();
        parts.push(name.to_string());
        parts.join(".")
    }

    /// The name as the checkpoint knows it: with the `VarBuilder`'s prefix.
    fn checkpoint_name(&self, full: &str) -> String {
        if self.root.is_empty() {
            full.to_string()
        } else {
            format!("{}.{full}", self.root)
        }
    }

    /// Whether the checkpoint holds `name` (always `false` when recording).
    pub(crate) fn contains(&self, name: &str) -> bool {
        match &self.backend {
            Backend::Load(vb) => vb.contains_tensor(&self.full_name(name)),
            Backend::Record { .. } => false,
        }
    }

    /// The tensor `name`, which must have shape `shape`, in the source's dtype and device.
    pub(crate) fn get(&self, shape: &[usize], name: &str, kind: TensorKind) -> Result<Tensor> {
        let full = self.full_name(name);
        match &self.backend {
            Backend::Record {
                specs,
                dtype,
                device,
            } => {
                specs.borrow_mut().push(TensorSpec {
                    name: full,
                    shape: shape.to_vec(),
                    kind,
                });
                // A zero-stride view: no memory is allocated for the recorded shape.
                Ok(Tensor::zeros((), *dtype, device)?.broadcast_as(shape)?)
            }
            Backend::Load(vb) => {
                let tensor = if vb.contains_tensor(&full) {
                    match vb.get_unchecked(&full) {
                        Ok(tensor) => tensor,
                        // Backends without unchecked access (a `VarMap`) check the shape themselves.
                        Err(_) => vb.get(shape, &full)?,
                    }
                } else {
                    // Backends that create tensors on demand (a `VarMap`) succeed here.
                    vb.get(shape, &full).map_err(|_| Error::MissingTensor {
                        name: self.checkpoint_name(&full),
                        expected: shape.to_vec(),
                    })?
                };
                if tensor.dims() != shape {
                    return Err(Error::TensorShape {
                        name: self.checkpoint_name(&full),
                        expected: shape.to_vec(),
                        found: tensor.dims().to_vec(),
                    });
                }
                Ok(tensor)
            }
        }
    }
}

/// A linear layer `in_dim -> out_dim` read from `weight` `[out_dim, in_dim]` (and `bias`
/// `[out_dim]`) under `src`.
pub(crate) fn linear(
    src: &WeightSource,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
) -> Result<candle_nn::Linear> {
    let weight = src.get(&[out_dim, in_dim], "weight", TensorKind::Weight)?;
    let bias = if bias {
        Some(src.get(&[out_dim], "bias", TensorKind::Weight)?)
    } else {
        None
    };
    Ok(candle_nn::Linear::new(weight, bias))
}

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
    crate::lm::LmWeights::load(config, &source)?;
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
/// The errors of [`LmConfig::validate`], and candle errors creating the tensors.
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
        let count: usize = spec.shape.iter().product();
        let last = spec.shape.last().copied().unwrap_or(1).max(1) as f64;
        let scale = last.sqrt();
        let values: Vec<f32> = (0..count)
            .map(|_| {
                let z = rng.normal();
                match spec.kind {
                    TensorKind::Embedding => z as f32,
                    TensorKind::NormScale => (1.0 + 0.1 * z) as f32,
                    TensorKind::Weight => (z / scale) as f32,
                }
            })
            .collect();
        let tensor = Tensor::from_vec(values, spec.shape.as_slice(), device)?.to_dtype(dtype)?;
        tensors.insert(spec.name, tensor);
    }
    Ok(tensors)
}

/// splitmix64 (Steele, Lea and Flood), the generator of the fixtures' weight recipe.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform in `[0, 1)` with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal deviate (Box–Muller, cosine branch).
    fn normal(&mut self) -> f64 {
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
