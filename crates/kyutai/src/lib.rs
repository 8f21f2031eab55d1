//! Kyutai's Moshi-family speech-text language models on [candle](https://github.com/huggingface/candle),
//! computing what Kyutai's own Rust implementation (`moshi` 0.6.4) computes, with every token
//! chosen by an injected [`Sampler`](kyutai_sampling::Sampler).
//!
//! # The model
//!
//! Kyutai's models (Moshi, the STT models, the TTS models) work on 12.5 Hz frames. At each
//! frame an [`LmModel`] reads one text token and one token per audio codebook (Mimi codes),
//! sums their embeddings and runs a large causal **temporal transformer** with a KV cache
//! bounded by its `context`; after `out_norm`, `text_linear` gives the logits of the next text
//! token. Models that speak (Moshi, TTS) then run the **depformer**: one small transformer per
//! generated audio codebook, run one after the other within the frame, each reading the
//! previous codebook's token, which samples the frame's audio tokens. STT models have no
//! depformer but may have *extra heads* (voice-activity detection) on the hidden states.
//!
//! Token choice is never hard-coded: [`LmModel::sample_from_logits`] and
//! [`LmModel::depformer_sample`] hand 1-D f32 logits to a sampler (greedy, top-k, ... from
//! `kyutai-sampling`, or your own type) together with the stream's history.
//!
//! # Layout
//!
//! Two layers, one folder each, with one rule between them:
//!
//! * `model/` computes: [`LmModel`] and its transformer, attention, embeddings, depformer,
//!   checkpoint reading ([`tensor_inventory`]) and seeded initialisation ([`random_weights`]).
//!   It produces logits and hidden states and **never chooses a token**: where a step needs
//!   tokens it takes a callback ([`LmModel::depformer_step_with`]). It does not depend on the
//!   sampling crate (the `layering` test enforces it).
//! * [`generate`] chooses: [`Samplers`], [`sample_logits`], and the state machines
//!   ([`Multistream`], [`LmGenerate`], [`TtsState`], [`AsrState`]) and [`generate_audio`], each
//!   taking its samplers as one injected value.
//!
//! [`LmConfig`] and its presets, [`Error`], the size bounds of [`limits`] and [`Mimi`] sit
//! beside both. Every public item is
//! re-exported at the crate root.
//!
//! Parity with moshi 0.6.4 is checked by the `moshi_parity_model` test against outputs recorded
//! with Kyutai's crate (logits within 1e-4, token streams exactly).
//!
//! # Quick start
//!
//! ```
//! use candle_core::{DType, Device};
//! use kyutai::{LmConfig, LmModel};
//! use kyutai_sampling::SamplingConfig;
//!
//! // The layout of Kyutai STT 1B, shrunk: random weights, so the output is noise.
//! let mut config = LmConfig::stt_1b_en_fr();
//! (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (64, 4, 2);
//! let mut model = LmModel::random(&config, 0, DType::F32, &Device::Cpu)?;
//!
//! let mut sampler = SamplingConfig::greedy().build()?;
//! let codes = vec![Some(&[17u32][..]); model.in_audio_codebooks()]; // one frame of Mimi codes
//! let mut text = vec![model.text_start_token()];
//! for _ in 0..3 {
//!     let last = *text.last().unwrap();
//!     let (logits, _hidden) = model.forward_tokens(Some(&[last]), &codes)?;
//!     text.push(model.sample_from_logits(&logits, sampler.as_mut(), &text)?);
//! }
//! assert_eq!(model.current_seq_len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Loading a checkpoint
//!
//! Kyutai publishes its Rust-ready checkpoints as safetensors in its candle tensor layout
//! (`text_emb.weight`, `emb.{i}.weight`, `transformer.layers.{l}.self_attn.in_proj_weight`,
//! `out_norm.alpha`, `text_linear.weight`, `depformer.{k}.*`, `extra_heads.{j}.weight`). Pick
//! the matching preset (or parse the model's configuration with [`LmConfig::from_json_file`])
//! and load:
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use kyutai::{LmConfig, LmModel};
//!
//! let device = Device::cuda_if_available(0)?;
//! let config = LmConfig::moshi_7b_v0_1();
//! let model = LmModel::load(&config, "moshiko-candle-bf16/model.safetensors", DType::BF16, &device)?;
//! println!("{} codebooks in, {} generated", model.in_audio_codebooks(), model.generated_audio_codebooks());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`LmModel::load`] reads the file into memory; [`LmModel::new`] takes any `VarBuilder`, such as
//! a memory-mapped one. A checkpoint that does not fit its configuration is an error naming the
//! tensor and both shapes. Saving and loading round-trips:
//!
//! ```
//! use candle_core::{DType, Device};
//! use kyutai::{random_weights, LmConfig, LmModel};
//!
//! let mut config = LmConfig::stt_2_6b_en();
//! (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
//! let path = std::env::temp_dir().join(format!("kyutai-doc-{}.safetensors", std::process::id()));
//! candle_core::safetensors::save(&random_weights(&config, 1, DType::F32, &Device::Cpu)?, &path)?;
//! let model = LmModel::load(&config, &path, DType::F16, &Device::Cpu)?;
//! assert_eq!(model.dtype(), DType::F16);
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Files Kyutai publishes
//!
//! | model | Hugging Face repository | files | preset |
//! | --- | --- | --- | --- |
//! | Moshi 7B (male / female voice) | `kyutai/moshiko-candle-bf16`, `kyutai/moshika-candle-bf16` | `model.safetensors` (LM, bf16), `tokenizer-e351c8d8-checkpoint125.safetensors` (Mimi), `tokenizer_spm_32k_3.model` (text) | [`LmConfig::moshi_7b_v0_1`] |
//! | STT 1B en/fr | `kyutai/stt-1b-en_fr-candle` | `model.safetensors`, `config.json`, `mimi-pytorch-e351c8d8@125.safetensors`, `tokenizer_en_fr_audio_8000.model` | [`LmConfig::stt_1b_en_fr`] |
//! | STT 2.6B en | `kyutai/stt-2.6b-en-candle` | `model.safetensors`, `config.json`, `mimi-pytorch-e351c8d8@125.safetensors`, `tokenizer_en_audio_4000.model` | [`LmConfig::stt_2_6b_en`] |
//! | TTS 1.6B en/fr | `kyutai/tts-1.6b-en_fr` | `dsm_tts_1e68beda@240.safetensors` (PyTorch layout), `config.json`, Mimi, `tokenizer_spm_8k_en_fr_audio.model` | [`LmConfig::tts_1_6b_en_fr`] (shape only: not loadable) |
//!
//! The `-q8` repositories (`model.q8.gguf`) hold quantized weights, which this crate does not
//! read. For models with a depformer, the repositories without `-candle` hold the PyTorch
//! layout (`depformer.layers.*`, `depformer_in.*`, `linears.*`), which needs Kyutai's
//! `scripts/import_rust.py` conversion first; loading one directly fails with
//! [`Error::MissingTensor`] for `depformer.0.*`.
//! The Mimi and text tokenizer files are used by the generation code, not by this model.
//!
//! # Differences from moshi 0.6.4
//!
//! Where moshi computes something well defined, this crate computes the same. It differs in:
//! errors instead of panics for bad input; a KV cache that is safe to clone mid-stream (moshi's
//! clones share a buffer written in place); the keys' positions of a call of exactly `context`
//! steps on a cache whose write offset is not 0 (candle's rotating cache reports positions that
//! do not match the keys it returns); and no quantized weights, cross-attention, conditioners or
//! batched (per-row masked) transformer.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod config;
mod error;
pub mod generate;
pub mod limits;
pub mod mimi;
mod model;
mod presets;

pub use config::{
    ConditionerConfig, ContinuousAttributeConditionerConfig, CrossAttentionGating, DepFormerConfig,
    ExtraHeadsConfig, LmConfig, LutConditionerConfig, NormType, PositionalEmbedding,
    TransformerConfig, TEXT_EOP_TOKEN, TEXT_PAD_TOKEN,
};
pub use error::{Error, Result};
pub use generate::audio::generate_audio_with_progress;
pub use generate::audio::MAX_GENERATE_STEPS;
pub use generate::samplers::{
    greedy_sampler, moshi_audio_config, moshi_text_config, MOSHI_AUDIO_TEMPERATURE,
    MOSHI_AUDIO_TOP_K, MOSHI_TEXT_TEMPERATURE, MOSHI_TEXT_TOP_K,
};
pub use generate::tts::MAX_CONSECUTIVE_PADS;
pub use generate::{asr, tts};
pub use generate::{
    generate_audio, sample_logits, AllowedTokens, AsrConfig, AsrMessage, AsrState, AudioSamplers,
    BasicGenerator, GenOutput, GenPrompt, LmGenerate, LmGenerateConfig, Multistream,
    MultistreamConfig, Samplers, Token, TtsConfig, TtsEvent, TtsOutput, TtsState, TtsStream,
};
pub use limits::{
    ModelSizes, MAX_ATTENTION_SCORES, MAX_AUDIO_CODEBOOKS, MAX_CONTEXT, MAX_DELAY, MAX_D_MODEL,
    MAX_EXTRA_HEADS, MAX_FORWARD_STEPS, MAX_HIDDEN_DIM, MAX_KV_CACHE_ELEMENTS, MAX_NUM_LAYERS,
    MAX_PARAMETERS, MAX_VOCAB_SIZE,
};
pub use mimi::{Mimi, MimiConfig};
pub use model::{
    guided_logits, random_weights, tensor_inventory, AsrOutput, KvCache, LmModel, TensorKind,
    TensorSpec, Transformer,
};

/// The former home of [`Multistream`] and [`LmGenerate`], now
/// [`generate::multistream`] and [`generate::delayed`]; kept so that existing paths
/// (`kyutai::lm_generate::Multistream`, ...) keep working.
pub mod lm_generate {
    pub use crate::generate::delayed::{LmGenerate, LmGenerateConfig, Token};
    pub use crate::generate::multistream::{
        Multistream, MultistreamConfig, MOSHI_RUST_ACOUSTIC_DELAY, MOSHI_TEXT_EOP_TOKEN,
        MOSHI_TEXT_PAD_TOKEN, UNGENERATED,
    };
}

/// Deprecated: [`generate::audio`] (`gen` is a reserved word from edition 2024 on). Its items
/// are deprecated aliases of the new ones.
#[deprecated(
    since = "0.1.0",
    note = "use `kyutai::generate::audio` (or the root re-exports)"
)]
pub mod gen {
    use crate::{GenOutput as Output, GenPrompt as Prompt, LmModel, Mimi, Result, Samplers};

    /// Deprecated alias of [`GenPrompt`](crate::GenPrompt).
    #[deprecated(since = "0.1.0", note = "use `kyutai::GenPrompt`")]
    pub type GenPrompt = Prompt;

    /// Deprecated alias of [`GenOutput`](crate::GenOutput).
    #[deprecated(since = "0.1.0", note = "use `kyutai::GenOutput`")]
    pub type GenOutput = Output;

    /// Deprecated: [`generate_audio`](crate::generate_audio).
    ///
    /// # Errors
    ///
    /// As [`generate_audio`](crate::generate_audio).
    #[deprecated(since = "0.1.0", note = "use `kyutai::generate_audio`")]
    pub fn generate_audio(
        model: &LmModel,
        mimi: &mut Mimi,
        prompt: &Prompt,
        steps: usize,
        samplers: &mut Samplers,
    ) -> Result<Output> {
        crate::generate_audio(model, mimi, prompt, steps, samplers)
    }

    /// Deprecated: [`generate_audio_with_progress`](crate::generate_audio_with_progress).
    ///
    /// # Errors
    ///
    /// As [`generate_audio`](crate::generate_audio).
    #[deprecated(since = "0.1.0", note = "use `kyutai::generate_audio_with_progress`")]
    pub fn generate_audio_with_progress(
        model: &LmModel,
        mimi: &mut Mimi,
        prompt: &Prompt,
        steps: usize,
        samplers: &mut Samplers,
        on_step: &mut dyn FnMut(usize, u32),
    ) -> Result<Output> {
        crate::generate_audio_with_progress(model, mimi, prompt, steps, samplers, on_step)
    }
}

/// Deprecated: [`BasicGenerator`] now lives in [`generate::audio`].
#[deprecated(
    since = "0.1.0",
    note = "use `kyutai::BasicGenerator` (`kyutai::generate::audio`)"
)]
pub mod generator {
    /// Deprecated alias of [`BasicGenerator`](crate::BasicGenerator).
    #[deprecated(since = "0.1.0", note = "use `kyutai::BasicGenerator`")]
    pub type BasicGenerator = crate::BasicGenerator;
}
