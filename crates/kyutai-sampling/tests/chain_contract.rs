//! The chain's public contract, spelled out as outside code uses it: names, field types, serde
//! names and trait bounds. A change that breaks a caller breaks this file.

use std::collections::BTreeMap;
use std::fmt::Debug;

use candle_core::{Device, Tensor};
use kyutai_sampling::{
    BoxSampler, Chain, ChainConfig, Convention, Sampled, Sampler, SamplerExt, SamplingConfig,
    SamplingError,
};

fn bounds<T: Sampler + Clone + Debug + Send + 'static>() {}

/// `Chain::probabilities`'s signature.
type Probabilities = fn(&mut Chain, &[f32], &[u32]) -> Result<Vec<f32>, SamplingError>;
/// `Chain::sample_detailed`'s signature.
type Detailed = fn(&mut Chain, &Tensor, &[u32], usize) -> Result<Sampled, SamplingError>;

#[test]
fn signatures_compile_as_specified() {
    bounds::<Chain>();
    let _: fn(&str) -> Result<ChainConfig, SamplingError> = ChainConfig::from_generation_config;
    let _: fn() -> ChainConfig = ChainConfig::llama_cpp;
    let _: fn(&ChainConfig) -> Result<Chain, SamplingError> = ChainConfig::build;
    let _: Probabilities = Chain::probabilities;
    let _: Detailed = Chain::sample_detailed;
    let from: ChainConfig = (&SamplingConfig::default()).into();
    assert_eq!(from.convention, Convention::Candle);
    let boxed: BoxSampler = from.build().unwrap().boxed();
    drop(boxed);
}

#[test]
fn every_field_has_its_specified_name_type_and_default() {
    let config = ChainConfig {
        convention: Convention::HuggingFace,
        seed: 0u64,
        do_sample: true,
        temperature: 1.0f32,
        top_k: 0usize,
        top_p: 1.0f32,
        min_p: 0.0f32,
        typical_p: 1.0f32,
        epsilon_cutoff: 0.0f32,
        eta_cutoff: 0.0f32,
        top_n_sigma: -1.0f32,
        xtc_probability: 0.0f32,
        xtc_threshold: 0.1f32,
        dynatemp_range: 0.0f32,
        dynatemp_exponent: 1.0f32,
        mirostat: 0u8,
        mirostat_tau: 5.0f32,
        mirostat_eta: 0.1f32,
        repetition_penalty: 1.0f32,
        frequency_penalty: 0.0f32,
        presence_penalty: 0.0f32,
        repeat_last_n: None::<usize>,
        dry_multiplier: 0.0f32,
        dry_base: 1.75f32,
        dry_allowed_length: 2usize,
        dry_penalty_last_n: None::<usize>,
        dry_sequence_breakers: Vec::<Vec<u32>>::new(),
        no_repeat_ngram_size: 0usize,
        bad_words_ids: Vec::<Vec<u32>>::new(),
        sequence_bias: Vec::<(Vec<u32>, f32)>::new(),
        suppress_tokens: Vec::<u32>::new(),
        logit_bias: BTreeMap::<u32, f32>::new(),
        allowed_token_ids: None::<Vec<u32>>,
        min_length: 0usize,
        eos_token_id: Vec::<u32>::new(),
        min_keep: 0usize,
    };
    assert_eq!(config, ChainConfig::default());
}

#[test]
fn serde_names_are_the_specified_ones() {
    for (convention, name) in [
        (Convention::HuggingFace, "\"hf\""),
        (Convention::LlamaCpp, "\"llama.cpp\""),
        (Convention::Candle, "\"candle\""),
    ] {
        assert_eq!(serde_json::to_string(&convention).unwrap(), name);
    }
    assert_eq!(Convention::default(), Convention::HuggingFace);
    let config: ChainConfig = serde_json::from_str(
        r#"{"sequence_bias": [[[1, 2], -0.5]], "logit_bias": {"3": 1.5}, "eos_token_id": 2}"#,
    )
    .unwrap();
    assert_eq!(config.sequence_bias, vec![(vec![1, 2], -0.5)]);
    assert_eq!(config.logit_bias.get(&3), Some(&1.5));
    assert_eq!(config.eos_token_id, vec![2]);
    let list: ChainConfig = serde_json::from_str(r#"{"eos_token_id": [2, 7]}"#).unwrap();
    assert_eq!(list.eos_token_id, vec![2, 7]);
    let round: ChainConfig =
        serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(round, config);
}

#[test]
fn sampled_exposes_its_fields() {
    let mut chain = ChainConfig::default().build().unwrap();
    let logits = Tensor::new(&[0.0f32, 1.0, 2.0], &Device::Cpu).unwrap();
    let sampled = chain.sample_detailed(&logits, &[], 2).unwrap();
    let Sampled {
        token,
        logprob,
        raw_logprob,
        top,
        ..
    } = sampled.clone();
    let _: (u32, f32, f32, Vec<(u32, f32)>) = (token, logprob, raw_logprob, top);
    assert_eq!(sampled.top.len(), 2);
}
