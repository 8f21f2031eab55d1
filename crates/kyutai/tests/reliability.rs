//! Regression tests of issue 11: hostile configurations, sizes and inputs get typed errors,
//! never a panic, an overflow, an abort or a hang. None of these tests allocates what the bad
//! input asks for: each asserts the error that now comes first.

mod common;

use candle_core::{DType, Device, Tensor};
use kyutai::asr::{AsrConfig, AsrMessage, AsrState};
use kyutai::lm_generate::MultistreamConfig;
use kyutai::mimi::Mimi;
use kyutai::tts::{TtsConfig, TtsState, TtsStream};
use kyutai::{
    generate_audio, Error, GenPrompt, KvCache, LmConfig, LmGenerate, LmGenerateConfig, LmModel,
    Multistream, Samplers, MAX_CONSECUTIVE_PADS, MAX_CONTEXT, MAX_DELAY, MAX_FORWARD_STEPS,
    MAX_GENERATE_STEPS, MAX_VOCAB_SIZE,
};
use kyutai_sampling::{BoxSampler, Sampler, SamplingError};

/// A change to a configuration.
type Edit<T> = Box<dyn Fn(&mut T)>;

/// The JSON of `config` with `edit` applied to its value.
fn json_with(config: &LmConfig, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value =
        serde_json::from_str(&config.to_json_string().unwrap()).unwrap();
    edit(&mut value);
    value.to_string()
}

/// The field an [`Error::InvalidConfig`] names (panics on any other result).
fn invalid_field<T: std::fmt::Debug>(result: kyutai::Result<T>) -> String {
    match result {
        Err(Error::InvalidConfig { field, .. }) => field,
        other => panic!("expected an InvalidConfig error, got {other:?}"),
    }
}

#[test]
fn overflowing_widths_in_a_config_json_are_config_errors_in_every_build() {
    let base = common::stt_like();
    // d_model >= 2^62: 4 * d_model overflowed in gating_hidden_dim.
    let json = json_with(&base, |v| v["transformer"]["d_model"] = (1u64 << 62).into());
    assert_eq!(
        invalid_field(LmConfig::from_json_str(&json)),
        "transformer.d_model"
    );
    // dim_feedforward = 2^63 + 3: 2 * dim_feedforward wrapped to a hidden width of 2.
    let json = json_with(&base, |v| {
        v["transformer"]["dim_feedforward"] = ((1u64 << 63) + 3).into()
    });
    assert_eq!(
        invalid_field(LmConfig::from_json_str(&json)),
        "transformer.dim_feedforward"
    );
    // The derived sizes are total on any value of the fields.
    let mut config = base.clone();
    config.transformer.d_model = usize::MAX;
    config.transformer.dim_feedforward = usize::MAX;
    assert_eq!(config.transformer.gating_hidden_dim(), usize::MAX / 3 * 2);
    // 2^63 + 3 gives its true hidden width, not the wrapped 2.
    config.transformer.dim_feedforward = (1 << 63) + 3;
    assert_eq!(
        config.transformer.gating_hidden_dim(),
        6_148_914_691_236_517_207
    );
    config.transformer.d_model = usize::MAX / 4;
    config.transformer.dim_feedforward = 4 * (usize::MAX / 4);
    assert_eq!(
        config.transformer.gating_hidden_dim(),
        ((usize::MAX / 4) as u128 * 11 / 4) as usize
    );
    assert!(config.sizes().is_err() && config.validate().is_err());
    config.transformer.num_heads = 0;
    assert_eq!(config.transformer.head_dim(), 0);
    assert!(config.sizes().is_err());
}

#[test]
fn every_size_of_a_config_has_a_documented_bound() {
    let base = common::moshi_like();
    let cases: Vec<(&str, Edit<LmConfig>)> = vec![
        (
            "transformer.context",
            Box::new(|c| c.transformer.context = 1_000_000_000_000),
        ),
        (
            "transformer.context",
            Box::new(|c| c.transformer.context = usize::MAX),
        ),
        (
            "transformer.num_layers",
            Box::new(|c| c.transformer.num_layers = 1 << 40),
        ),
        (
            "text_in_vocab_size",
            Box::new(|c| c.text_in_vocab_size = u32::MAX as usize),
        ),
        (
            "audio_vocab_size",
            Box::new(|c| c.audio_vocab_size = MAX_VOCAB_SIZE + 1),
        ),
        (
            "audio_codebooks",
            Box::new(|c| c.audio_codebooks = usize::MAX),
        ),
        (
            "depformer.transformer.d_model",
            Box::new(|c| c.depformer.as_mut().unwrap().transformer.d_model = 1 << 20),
        ),
        (
            "depformer.low_rank_embeddings",
            Box::new(|c| c.depformer.as_mut().unwrap().low_rank_embeddings = Some(usize::MAX)),
        ),
        (
            "extra_heads.dim",
            Box::new(|c| {
                c.extra_heads = Some(kyutai::ExtraHeadsConfig {
                    num_heads: 2,
                    dim: usize::MAX,
                })
            }),
        ),
        (
            "audio_delays[3]",
            Box::new(|c| c.audio_delays.as_mut().unwrap()[3] = usize::MAX),
        ),
        // Each size within its bound, the whole model not: 2^24 * 2^16 text embedding rows.
        (
            "config",
            Box::new(|c| {
                (c.transformer.d_model, c.transformer.num_heads) = (1 << 16, 1 << 8);
                (c.text_in_vocab_size, c.text_out_vocab_size) = (MAX_VOCAB_SIZE, MAX_VOCAB_SIZE);
            }),
        ),
        // KV caches of 2^36 elements per row for a model of 3.2 G parameters.
        (
            "transformer.context",
            Box::new(|c| {
                let t = &mut c.transformer;
                (t.d_model, t.num_heads, t.dim_feedforward) = (512, 8, 2048);
                (t.num_layers, t.context) = (1024, MAX_CONTEXT);
            }),
        ),
    ];
    for (field, edit) in cases {
        let mut config = base.clone();
        edit(&mut config);
        assert_eq!(invalid_field(config.validate()), field);
        // The allocating entry points fail the same way, before allocating.
        assert_eq!(invalid_field(kyutai::tensor_inventory(&config)), field);
        assert_eq!(
            invalid_field(LmModel::random(&config, 0, DType::F32, &Device::Cpu)),
            field
        );
    }
    // The bounds themselves are accepted.
    let mut config = base.clone();
    config.transformer.context = MAX_CONTEXT;
    config.audio_delays = Some(vec![MAX_DELAY; config.audio_codebooks]);
    let sizes = config.sizes().unwrap();
    assert_eq!(sizes.head_dim, 16);
    let dep = &config.depformer.as_ref().unwrap().transformer;
    let dep_kv = 2 * dep.num_layers * dep.context * dep.d_model;
    assert_eq!(
        sizes.kv_cache_elements_per_row,
        2 * 2 * MAX_CONTEXT as u64 * 32 + dep_kv as u64
    );
    assert!(sizes.parameters > sizes.largest_tensor);
}

#[test]
fn a_text_output_vocabulary_larger_than_the_input_one_is_rejected() {
    let mut config = common::stt_like();
    (config.text_in_vocab_size, config.text_out_vocab_size) = (20, 21);
    assert_eq!(invalid_field(config.validate()), "text_out_vocab_size");
    config.text_out_vocab_size = 20;
    assert!(config.validate().is_ok());
}

#[test]
fn step_counts_and_positions_are_bounded_before_allocating() {
    let cache = KvCache::new(4);
    assert!(matches!(
        cache.positions(usize::MAX),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        cache.positions(MAX_FORWARD_STEPS + 1),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(cache.positions(6).unwrap(), (0..6).collect::<Vec<_>>());

    let mut model = common::random_model(&common::stt_like(), 1);
    let codebooks = model.in_audio_codebooks();
    // A prefill longer than MAX_FORWARD_STEPS, and one whose attention scores
    // (heads * steps * keys = 2 * 50 000^2) exceed MAX_ATTENTION_SCORES.
    for steps in [MAX_FORWARD_STEPS + 1, 50_000] {
        let text = Tensor::zeros((1, steps), DType::U32, &Device::Cpu).unwrap();
        let audio = vec![None; codebooks];
        assert!(
            matches!(
                model.forward(Some(&text), &audio),
                Err(Error::InvalidInput { .. })
            ),
            "{steps} steps"
        );
        assert_eq!(model.current_seq_len(), 0, "nothing was appended");
    }
}

fn moshi_model() -> LmModel {
    common::random_model(&common::moshi_like(), 11)
}

fn moshi_mimi() -> Mimi {
    let mut config = Mimi::small_config(8);
    config.quantizer_bins = 8;
    Mimi::random(config, 3, &Device::Cpu).unwrap()
}

#[test]
fn generate_audio_rejects_step_counts_above_its_cap() {
    let (model, mut mimi) = (moshi_model(), moshi_mimi());
    let mut samplers = Samplers::greedy();
    let prompt = GenPrompt::default();
    for steps in [
        usize::MAX,
        1_000_000_000,
        10_000_000_000,
        MAX_GENERATE_STEPS + 1,
    ] {
        assert!(
            matches!(
                generate_audio(&model, &mut mimi, &prompt, steps, &mut samplers),
                Err(Error::InvalidInput { .. })
            ),
            "{steps} steps"
        );
    }
    assert!(generate_audio(&model, &mut mimi, &prompt, 2, &mut samplers).is_ok());
}

#[test]
fn delays_and_counts_of_the_state_machines_are_checked() {
    let model = moshi_model();
    let mut config = MultistreamConfig::from_model(&model);
    config.acoustic_delay = usize::MAX;
    assert_eq!(
        invalid_field(Multistream::new(model.clone(), Samplers::greedy(), config)),
        "multistream.acoustic_delay"
    );
    let mut config = MultistreamConfig::from_model(&model);
    (
        config.generated_audio_codebooks,
        config.input_audio_codebooks,
    ) = (usize::MAX, 2);
    assert_eq!(config.total_audio_codebooks(), usize::MAX);
    assert!(Multistream::new(model.clone(), Samplers::greedy(), config).is_err());
    // MAX_DELAY itself runs (the frames never complete within a few steps).
    let mut config = MultistreamConfig::from_model(&model);
    config.acoustic_delay = MAX_DELAY;
    let mut state = Multistream::new(model.clone(), Samplers::greedy(), config).unwrap();
    state.step(&[1; 8]).unwrap();
    assert_eq!(state.last_audio_tokens(), None);

    let mut config = LmGenerateConfig::from_model(&model).unwrap();
    config.audio_delays[5] = usize::MAX;
    assert_eq!(
        invalid_field(LmGenerate::new(model.clone(), Samplers::greedy(), config)),
        "audio_delays[5]"
    );

    let tts_model = common::random_model(&common::tts_like(), 2);
    let base = TtsConfig {
        text_start_token: 32,
        text_audio_delay_in_tokens: 2,
        ..TtsConfig::v202501()
    };
    let edits: [fn(&mut TtsConfig); 4] = [
        |c| c.acoustic_delay = usize::MAX,
        |c| c.text_audio_delay_in_tokens = usize::MAX,
        |c| c.extra_steps = usize::MAX,
        |c| c.max_consecutive_pads = MAX_CONSECUTIVE_PADS + 1,
    ];
    for edit in edits {
        let mut config = base.clone();
        edit(&mut config);
        let result = TtsState::new(tts_model.clone(), config.clone(), Samplers::greedy());
        assert!(
            matches!(result, Err(Error::InvalidInput { .. })),
            "{config:?}"
        );
    }
}

/// A text sampler that always picks the pad token (3).
struct AlwaysPad;

impl Sampler for AlwaysPad {
    fn sample(&mut self, _logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
        Ok(3)
    }

    fn reset(&mut self) {}
}

#[test]
fn a_tts_stream_ends_even_when_the_sampler_always_pads() {
    let model = common::random_model(&common::tts_like(), 2);
    let config = TtsConfig {
        text_start_token: 32,
        text_audio_delay_in_tokens: 2,
        max_consecutive_pads: usize::MAX,
        ..TtsConfig::v202501()
    };
    let samplers = || Samplers::new(Box::new(AlwaysPad), kyutai::greedy_sampler());
    // The setting that hung `generate` is refused...
    assert!(TtsState::new(model.clone(), config.clone(), samplers()).is_err());
    // ... and within the bound every word ends after max_consecutive_pads + 1 pads.
    let config = TtsConfig {
        max_consecutive_pads: 3,
        ..config
    };
    let mut stream = TtsStream::new(TtsState::new(model, config, samplers()).unwrap());
    stream.push_word(vec![10, 11]).unwrap();
    let output = stream.generate().unwrap();
    // Empty first word: 5 steps; the word: 2 tokens + 5; trailing: 2 + 5 extra steps.
    assert_eq!(output.text_tokens.len(), 5 + 7 + 7);
    assert!(stream.is_finished());
}

#[test]
fn non_finite_pcm_is_an_error_not_code_zero() {
    let mut mimi = Mimi::random(Mimi::small_config(4), 1, &Device::Cpu).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut pcm = vec![0.1f32; 1920];
        pcm[700] = bad;
        assert!(matches!(
            mimi.encode_pcm(&pcm),
            Err(Error::InvalidInput { .. })
        ));
        let tensor = Tensor::from_vec(pcm, (1, 1, 1920), &Device::Cpu).unwrap();
        assert!(matches!(
            mimi.encode(&tensor),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            mimi.encode_step(&tensor),
            Err(Error::InvalidInput { .. })
        ));
    }

    let model = common::random_model(&common::stt_like(), 3);
    let mut mimi_config = Mimi::small_config(model.in_audio_codebooks());
    mimi_config.quantizer_bins = 8;
    let mimi = Mimi::random(mimi_config, 4, &Device::Cpu).unwrap();
    let mut asr = AsrState::greedy(model, AsrConfig::new(0), 1)
        .unwrap()
        .with_mimi(mimi)
        .unwrap();
    let mut pcm = vec![0.0f32; 2 * 1920];
    pcm[2000] = f32::NAN;
    let pcm = Tensor::from_vec(pcm, (1, 1, 2 * 1920), &Device::Cpu).unwrap();
    assert!(matches!(
        asr.step_pcm(&pcm),
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(asr.model_step_idx(), 0, "nothing was encoded or stepped");
}

#[test]
fn integer_checkpoint_tensors_are_rejected_by_name() {
    let config = common::stt_like();
    let mut tensors = kyutai::random_weights(&config, 5, DType::F32, &Device::Cpu).unwrap();
    let name = "transformer.layers.1.self_attn.in_proj_weight".to_string();
    let ints = tensors[&name].to_dtype(DType::I64).unwrap();
    tensors.insert(name.clone(), ints);
    let path = std::env::temp_dir().join(format!("kyutai-int-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let result = LmModel::load(&config, &path, DType::F32, &Device::Cpu);
    std::fs::remove_file(&path).unwrap();
    match result {
        Err(Error::TensorDType {
            name: found,
            found: dtype,
        }) => {
            assert_eq!(found, name);
            assert_eq!(dtype, DType::I64);
        }
        other => panic!("expected TensorDType, got {other:?}"),
    }
}

/// A text sampler that plays a script and fails (a token outside the vocabulary) at one call.
struct FailsAt {
    script: Vec<u32>,
    call: usize,
    fail_at: usize,
}

impl Sampler for FailsAt {
    fn sample(&mut self, _logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
        let call = self.call;
        self.call += 1;
        if call == self.fail_at {
            return Ok(10_000);
        }
        Ok(self.script[call % self.script.len()])
    }

    fn reset(&mut self) {
        self.call = 0;
    }
}

fn words(messages: &[AsrMessage]) -> Vec<AsrMessage> {
    messages
        .iter()
        .filter(|m| !matches!(m, AsrMessage::Step { .. }))
        .cloned()
        .collect()
}

#[test]
fn asr_keeps_the_words_of_a_call_that_fails_later() {
    let model = common::random_model(&common::stt_like(), 6);
    let codebooks = model.in_audio_codebooks();
    let sampler: BoxSampler = Box::new(FailsAt {
        // word [5], end of padding, word [7] (closed by the pad of the next call).
        script: vec![5, 0, 7, 3, 3, 3],
        call: 0,
        fail_at: 3,
    });
    let mut asr = AsrState::new(model, AsrConfig::new(0), vec![sampler]).unwrap();
    let frames = |n: usize| Tensor::zeros((1, codebooks, n), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        asr.step_tokens(&frames(5)),
        Err(Error::TokenOutOfRange { token: 10_000, .. })
    ));
    assert_eq!(asr.model_step_idx(), 4, "the failing frame was read");
    let word5 = AsrMessage::Word {
        tokens: vec![5],
        start_time: 0.0,
        batch_idx: 0,
    };
    let end5 = AsrMessage::EndWord {
        stop_time: 2.0 / 12.5,
        batch_idx: 0,
    };
    let word7 = AsrMessage::Word {
        tokens: vec![7],
        start_time: 2.0 / 12.5,
        batch_idx: 0,
    };
    // The next call returns the kept words first, then its own.
    let next = asr.step_tokens(&frames(1)).unwrap();
    assert_eq!(words(&next), vec![word5.clone(), end5.clone(), word7]);
    assert!(next
        .iter()
        .any(|m| matches!(m, AsrMessage::Step { step_idx: 1, .. })));
    assert!(asr.take_pending_messages().is_empty());

    // take_pending_messages hands them over at once; reset drops them.
    let failing_state = || {
        let sampler: BoxSampler = Box::new(FailsAt {
            script: vec![5, 0, 7, 3],
            call: 0,
            fail_at: 2,
        });
        let model = common::random_model(&common::stt_like(), 6);
        let mut asr = AsrState::new(model, AsrConfig::new(0), vec![sampler]).unwrap();
        assert!(asr.step_tokens(&frames(4)).is_err());
        asr
    };
    assert_eq!(
        words(&failing_state().take_pending_messages()),
        vec![word5, end5]
    );
    let mut asr = failing_state();
    asr.reset();
    assert!(asr.take_pending_messages().is_empty());
}

#[test]
fn mimi_configs_with_overflowing_or_zero_sizes_are_config_errors() {
    let edits: Vec<(&str, Edit<kyutai::MimiConfig>)> = vec![
        (
            "seanet.ratios[0]",
            Box::new(|c| c.seanet.ratios = vec![usize::MAX, 2]),
        ),
        (
            "seanet.ratios",
            Box::new(|c| c.seanet.ratios = vec![1024; 4]),
        ),
        ("seanet.ratios", Box::new(|c| c.seanet.ratios = vec![])),
        (
            "seanet.n_filters",
            Box::new(|c| c.seanet.n_filters = usize::MAX / 2),
        ),
        ("seanet.compress", Box::new(|c| c.seanet.compress = 0)),
        (
            "seanet.dilation_base",
            Box::new(|c| (c.seanet.n_residual_layers, c.seanet.dilation_base) = (16, usize::MAX)),
        ),
        ("seanet.kernel_size", Box::new(|c| c.seanet.kernel_size = 0)),
        (
            "quantizer_bins",
            Box::new(|c| c.quantizer_bins = u32::MAX as usize),
        ),
        (
            "quantizer_bins",
            Box::new(|c| (c.quantizer_bins, c.quantizer_dim) = (1 << 20, 4096)),
        ),
        ("quantizer_n_q", Box::new(|c| c.quantizer_n_q = usize::MAX)),
        ("frame_rate", Box::new(|c| c.frame_rate = 1e-300)),
        ("frame_rate", Box::new(|c| c.sample_rate = 1e300)),
        (
            "transformer.num_layers",
            Box::new(|c| c.transformer.num_layers = 0),
        ),
        (
            "transformer.kv_repeat",
            Box::new(|c| c.transformer.kv_repeat = 0),
        ),
        (
            "transformer.max_seq_len",
            Box::new(|c| c.transformer.max_seq_len = usize::MAX),
        ),
        (
            "transformer.context",
            Box::new(|c| c.transformer.context = 1 << 40),
        ),
    ];
    for (field, edit) in edits {
        let mut config = Mimi::small_config(4);
        edit(&mut config);
        assert_eq!(
            invalid_field(Mimi::random(config.clone(), 0, &Device::Cpu)),
            field,
            "{config:?}"
        );
    }
}
