//! A `VarBuilder` backend over a checkpoint's tensors that refuses integer tensors: candle's
//! own backend would convert them to floats without a word.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

/// The tensors of a checkpoint, served by name with candle's checks (presence, shape), plus
/// one: the stored dtype must be a float. The first integer tensor asked for is remembered, so
/// that the caller can report it as [`Error::TensorDType`](crate::Error::TensorDType) rather
/// than as candle's message. Clones share the tensors and that record, so the caller keeps one
/// and hands the `VarBuilder` another.
#[derive(Clone)]
pub(super) struct FloatTensors {
    tensors: Arc<HashMap<String, Tensor>>,
    integer: Arc<Mutex<Option<(String, DType)>>>,
}

impl FloatTensors {
    pub(super) fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            tensors: Arc::new(tensors),
            integer: Arc::default(),
        }
    }

    /// The name and dtype of the first integer tensor a build asked for.
    pub(super) fn integer_tensor(&self) -> Option<(String, DType)> {
        self.integer.lock().ok().and_then(|found| found.clone())
    }

    fn fetch(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let Some(tensor) = self.tensors.get(name) else {
            candle_core::bail!("cannot find tensor {name}")
        };
        if !tensor.dtype().is_float() {
            if let Ok(mut found) = self.integer.lock() {
                found.get_or_insert_with(|| (name.to_string(), tensor.dtype()));
            }
            candle_core::bail!("checkpoint tensor {name} is {:?}", tensor.dtype())
        }
        tensor.to_dtype(dtype)?.to_device(device)
    }
}

impl SimpleBackend for FloatTensors {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.fetch(name, dtype, device)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "shape mismatch for {name}, got {:?}, expected {:?}",
                tensor.shape(),
                shape
            )
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
