//! Write your own `Sampler`, box it, decorate it and swap it into a generation loop.
//!
//! Run with `cargo run --release --example custom_sampler`.

use candle_core::{Device, Tensor};
use kyutai_sampling::{
    BoxSampler, LogitsProcessorSampler, Sampler, SamplerExt, Sampling, SamplingConfig,
    SamplingError,
};

/// Picks the most likely token that has not been produced in the last `window` steps, falling
/// back to the most likely token when every candidate has been used.
struct AvoidRecent {
    window: usize,
}

impl Sampler for AvoidRecent {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        let values = logits
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        // Reuse the crate's checks: NaN, +inf, empty or all-masked logits are errors.
        kyutai_sampling::validate_logits(&values)?;
        let recent = &history[history.len().saturating_sub(self.window)..];
        let best = |allow: &dyn Fn(usize) -> bool| {
            values
                .iter()
                .enumerate()
                .filter(|&(i, v)| *v > f32::NEG_INFINITY && allow(i))
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
        };
        best(&|i| !recent.contains(&(i as u32)))
            .or_else(|| best(&|_| true))
            .ok_or(SamplingError::AllMasked)
    }
}

/// A stand-in for a model that likes to repeat itself: the previous token scores 1.0, the one
/// after it 0.5, the rest less the further away they are.
fn toy_model(previous: Option<u32>, device: &Device) -> candle_core::Result<Tensor> {
    let previous = previous.unwrap_or(0) as i64;
    let values: Vec<f32> = (0..10i64)
        .map(|i| match i - previous {
            0 => 1.0,
            1 => 0.5,
            d => -(d.abs() as f32) / 4.0,
        })
        .collect();
    Tensor::new(values, device)
}

/// The generation loop only knows about `dyn Sampler`.
fn generate(sampler: &mut dyn Sampler, steps: usize) -> Result<Vec<u32>, SamplingError> {
    let device = Device::Cpu;
    let mut tokens = Vec::new();
    for _ in 0..steps {
        let logits = toy_model(tokens.last().copied(), &device)?;
        tokens.push(sampler.sample(&logits, &tokens)?);
    }
    Ok(tokens)
}

fn main() -> Result<(), SamplingError> {
    let mut samplers: Vec<(&str, BoxSampler)> = vec![
        ("greedy", SamplingConfig::greedy().build()?),
        (
            "greedy + penalty",
            LogitsProcessorSampler::from_sampling(0, Sampling::ArgMax)?
                .with_repetition_penalty(2.5, 4)?
                .boxed(),
        ),
        ("avoid-recent", AvoidRecent { window: 3 }.boxed()),
        (
            "avoid-recent + penalty",
            AvoidRecent { window: 3 }
                .with_repetition_penalty(1.5, 16)?
                .boxed(),
        ),
        ("default config", SamplingConfig::default().build()?),
    ];
    for (name, sampler) in &mut samplers {
        println!("{name:>24}: {:?}", generate(sampler.as_mut(), 12)?);
    }
    Ok(())
}
