//! Reading tensors from a checkpoint: a `VarBuilder` view with precise errors.
//!
//! Every tensor the model reads goes through one function, which checks the name and shape and
//! reports [`Error::MissingTensor`] or [`Error::TensorShape`] with the full tensor name. The same
//! code path, run in "record" mode, lists the tensors a configuration needs
//! ([`tensor_inventory`](crate::tensor_inventory), in the `init` module above the model), so the
//! inventory cannot drift from the loader. This module knows nothing of the model that reads it.

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// What a tensor is, which decides how [`random_weights`](crate::random_weights) initialises it.
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

    /// A source that records the tensors asked of it (as zero-stride views) instead of reading
    /// them.
    pub(crate) fn recorder(dtype: DType, device: &Device) -> (Self, Rc<RefCell<Vec<TensorSpec>>>) {
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

/// Checks that every tensor of `specs` that `tensors` holds is a float tensor: a checkpoint's
/// integer tensor would otherwise be converted to the model's dtype without a word.
pub(crate) fn check_float_tensors(
    specs: &[TensorSpec],
    tensors: &std::collections::HashMap<String, Tensor>,
) -> Result<()> {
    for spec in specs {
        if let Some(tensor) = tensors.get(&spec.name) {
            if !tensor.dtype().is_float() {
                return Err(Error::TensorDType {
                    name: spec.name.clone(),
                    found: tensor.dtype(),
                });
            }
        }
    }
    Ok(())
}
