//! A user-defined sampler that plays a script and records its calls.

use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use kyutai_sampling::{BoxSampler, Sampler, SamplingError};

/// What a [`Scripted`] sampler was given at one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub logits: Vec<f32>,
    pub history: Vec<u32>,
}

/// A user-defined sampler: returns the tokens of its script in order (cycling), ignoring the
/// logits, and records every call.
pub struct Scripted {
    script: Vec<u32>,
    next: usize,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Scripted {
    pub fn boxed(script: &[u32]) -> (BoxSampler, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sampler = Self {
            script: script.to_vec(),
            next: 0,
            calls: calls.clone(),
        };
        (Box::new(sampler), calls)
    }
}

impl Sampler for Scripted {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        self.calls.lock().unwrap().push(Call {
            logits: logits.to_vec1::<f32>()?,
            history: history.to_vec(),
        });
        let token = self.script[self.next % self.script.len()];
        self.next += 1;
        Ok(token)
    }

    fn reset(&mut self) {
        self.next = 0;
    }
}
