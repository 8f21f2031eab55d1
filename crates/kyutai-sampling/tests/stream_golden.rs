//! Golden streams for the configurations that issue 12's faster passes touch: Moshi's own
//! samplers (text `TopK { 25, 0.8 }` over 32000 tokens and audio `TopK { 250, 0.8 }` over a
//! 2048-code codebook, bare and under a repetition penalty over 64 tokens) and chains of every
//! convention, with and without edits.
//!
//! The expected tokens were recorded with the code before those passes changed (commit 896e0f4)
//! and must not change: a failure means a seed now gives other tokens, which is a breaking change
//! for users who pin outputs (note it in the changelog, then re-record). CI also runs this file
//! with `KYUTAI_SAMPLING_SIMD=portable`.

mod native_support;

use kyutai_sampling::{ChainConfig, Convention, NativeSampler, Sampler, SamplerExt, Sampling};
use native_support::spread_logits;

/// The tokens of `sampler` over 12 steps of `len`-token logits, each step's history being the
/// tokens drawn so far plus a fixed prefix (so penalties see repeats).
fn stream(sampler: &mut dyn Sampler, len: usize) -> Vec<u32> {
    let mut history: Vec<u32> = (0..64).map(|i| (i * 37 % len) as u32).collect();
    let mut out = Vec::new();
    for step in 0..12u64 {
        let logits = spread_logits(500 + step, len, 12.0);
        let token = sampler.sample_slice(&logits, &history).unwrap();
        history.push(token);
        out.push(token);
    }
    out
}

fn samplers() -> Vec<(&'static str, usize, Box<dyn Sampler>)> {
    let text = Sampling::TopK {
        k: 25,
        temperature: 0.8,
    };
    let audio = Sampling::TopK {
        k: 250,
        temperature: 0.8,
    };
    let native = |s: &Sampling| NativeSampler::from_sampling(7, s.clone()).unwrap();
    let chain = |c: ChainConfig| -> Box<dyn Sampler> { Box::new(c.build().unwrap()) };
    let hf = ChainConfig {
        seed: 7,
        ..ChainConfig::default()
    };
    vec![
        ("text", 32000, native(&text).boxed()),
        (
            "text+penalty",
            32000,
            native(&text)
                .with_repetition_penalty(1.2, 64)
                .unwrap()
                .boxed(),
        ),
        ("audio", 2048, native(&audio).boxed()),
        (
            "audio+penalty",
            2048,
            native(&audio)
                .with_repetition_penalty(1.2, 64)
                .unwrap()
                .boxed(),
        ),
        (
            "all+penalty",
            2048,
            native(&Sampling::All { temperature: 0.9 })
                .with_repetition_penalty(1.5, 64)
                .unwrap()
                .boxed(),
        ),
        (
            "top-p+penalty",
            2048,
            native(&Sampling::TopP {
                p: 0.9,
                temperature: 1.0,
            })
            .with_repetition_penalty(1.5, 64)
            .unwrap()
            .boxed(),
        ),
        (
            "llama.cpp default",
            32000,
            chain(ChainConfig {
                seed: 7,
                ..ChainConfig::llama_cpp()
            }),
        ),
        (
            "hf top-k 250 + penalty",
            2048,
            chain(ChainConfig {
                top_k: 250,
                temperature: 0.8,
                repetition_penalty: 1.2,
                ..hf.clone()
            }),
        ),
        (
            "hf top-p + min-p",
            32000,
            chain(ChainConfig {
                top_p: 0.9,
                min_p: 0.02,
                temperature: 0.7,
                ..hf.clone()
            }),
        ),
        (
            "llama.cpp penalties + dry",
            2048,
            chain(ChainConfig {
                convention: Convention::LlamaCpp,
                frequency_penalty: 0.3,
                presence_penalty: 0.2,
                dry_multiplier: 0.8,
                top_k: 300,
                ..hf.clone()
            }),
        ),
        (
            "candle top-k then top-p",
            2048,
            chain(ChainConfig {
                convention: Convention::Candle,
                top_k: 250,
                top_p: 0.8,
                ..hf
            }),
        ),
    ]
}

#[test]
fn moshi_and_chain_streams_are_unchanged() {
    let golden: &[(&str, [u32; 12])] = &[
        (
            "text",
            [
                18032, 19486, 9235, 31246, 30691, 8287, 5053, 21348, 13505, 22217, 11987, 31071,
            ],
        ),
        (
            "text+penalty",
            [
                18032, 19486, 9235, 31246, 30691, 8287, 5053, 1406, 13505, 22217, 11987, 31071,
            ],
        ),
        (
            "audio",
            [
                1569, 318, 1997, 1363, 1811, 838, 268, 1835, 1340, 1748, 1082, 1588,
            ],
        ),
        (
            "audio+penalty",
            [
                1569, 318, 1997, 1363, 1811, 127, 268, 1835, 1340, 1748, 1082, 1588,
            ],
        ),
        (
            "all+penalty",
            [
                351, 322, 1501, 1338, 1293, 792, 164, 1703, 852, 2025, 472, 842,
            ],
        ),
        (
            "top-p+penalty",
            [
                351, 322, 1497, 1341, 1288, 791, 164, 1703, 845, 2025, 464, 1103,
            ],
        ),
        (
            "llama.cpp default",
            [
                12050, 27250, 26860, 28165, 18431, 1381, 28490, 28771, 30526, 3699, 13714, 28086,
            ],
        ),
        (
            "hf top-k 250 + penalty",
            [
                351, 322, 1504, 1294, 1317, 827, 178, 1661, 880, 2024, 505, 876,
            ],
        ),
        (
            "hf top-p + min-p",
            [
                19183, 31186, 25327, 18884, 12113, 19493, 14949, 15000, 11236, 9042, 14210, 28535,
            ],
        ),
        (
            "llama.cpp penalties + dry",
            [
                1503, 403, 415, 407, 1214, 988, 468, 1069, 1977, 854, 400, 1358,
            ],
        ),
        (
            "candle top-k then top-p",
            [
                194, 1958, 283, 545, 973, 1873, 333, 704, 1828, 215, 307, 1595,
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, len, mut sampler) in samplers() {
        let got = stream(sampler.as_mut(), len);
        let expected = golden.iter().find(|(n, _)| *n == name).map(|(_, t)| t);
        if expected != Some(&got.clone().try_into().unwrap()) {
            failures.push(format!("(\"{name}\", {got:?}),"));
        }
    }
    assert!(
        failures.is_empty(),
        "streams changed:\n{}",
        failures.join("\n")
    );
}
