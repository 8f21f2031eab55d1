//! Build a sampler from a configuration and draw a few tokens.
//!
//! Run with `cargo run --release --example quickstart`.

use candle_core::{Device, Tensor};
use kyutai_sampling::{BoxSampler, Sampling, SamplingConfig, SamplingError};

fn main() -> Result<(), SamplingError> {
    // A toy vocabulary of 8 tokens; token 7 is masked with -inf and can never be drawn.
    let logits = Tensor::new(
        &[2.0f32, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, f32::NEG_INFINITY],
        &Device::Cpu,
    )?;

    let configs = [
        ("default", SamplingConfig::default()),
        ("greedy", SamplingConfig::greedy()),
        (
            "top-k 3",
            SamplingConfig {
                sampling: Sampling::TopK {
                    k: 3,
                    temperature: 0.8,
                },
                repetition_penalty: None,
                ..SamplingConfig::default()
            },
        ),
    ];
    for (name, config) in configs {
        let mut sampler: BoxSampler = config.build()?;
        let mut history = Vec::new();
        for _ in 0..12 {
            let token = sampler.sample(&logits, &history)?;
            history.push(token);
        }
        println!("{name:>8}: {:?}  ({config:?})", history);
    }

    // Bad parameters are caught when the sampler is built, not in the middle of generation.
    let bad = SamplingConfig {
        sampling: Sampling::TopP {
            p: 1.5,
            temperature: 1.0,
        },
        ..SamplingConfig::default()
    };
    match bad.build() {
        Err(err) => println!("rejected: {err}"),
        Ok(_) => unreachable!("top_p = 1.5 is invalid"),
    }
    Ok(())
}
