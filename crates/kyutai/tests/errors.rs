//! Bad configurations, checkpoints and inputs are typed errors that say what is wrong, and
//! leave the model usable.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{moshi_like, random_model, step_inputs, stt_like};
use kyutai::{CrossAttentionGating, Error, LmConfig, LmModel, NormType};
use kyutai_sampling::SamplingConfig;

fn invalid_field(result: kyutai::Result<()>) -> String {
    match result {
        Err(Error::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn invalid_configs_name_the_field() {
    let mut c = moshi_like();
    c.transformer.num_heads = 3;
    assert_eq!(invalid_field(c.validate()), "transformer.num_heads");

    let mut c = moshi_like();
    c.transformer.num_layers = 0;
    assert_eq!(invalid_field(c.validate()), "transformer.num_layers");

    let mut c = moshi_like();
    c.transformer.context = 0;
    assert_eq!(invalid_field(c.validate()), "transformer.context");

    let mut c = moshi_like();
    c.depformer.as_mut().unwrap().transformer.d_model = 0;
    assert_eq!(invalid_field(c.validate()), "depformer.transformer.d_model");

    let mut c = moshi_like();
    c.depformer.as_mut().unwrap().num_slices = c.audio_codebooks + 1;
    assert_eq!(invalid_field(c.validate()), "depformer.num_slices");

    let mut c = moshi_like();
    c.depformer.as_mut().unwrap().low_rank_embeddings = Some(0);
    assert_eq!(invalid_field(c.validate()), "depformer.low_rank_embeddings");

    let mut c = moshi_like();
    c.audio_vocab_size = 1;
    assert_eq!(invalid_field(c.validate()), "audio_vocab_size");

    let mut c = moshi_like();
    c.text_out_vocab_size = 0;
    assert_eq!(invalid_field(c.validate()), "text_out_vocab_size");

    let mut c = moshi_like();
    c.audio_delays = Some(vec![0; 3]);
    assert_eq!(invalid_field(c.validate()), "audio_delays");

    let mut c = moshi_like();
    c.transformer.gating = Some(candle_nn::Activation::Swiglu);
    assert_eq!(invalid_field(c.validate()), "transformer.gating");

    let mut c = moshi_like();
    c.transformer.dim_feedforward = 1;
    assert_eq!(invalid_field(c.validate()), "transformer.dim_feedforward");

    let mut c = moshi_like();
    c.transformer.num_heads = 32; // head width 1: rotary embeddings need pairs
    assert_eq!(invalid_field(c.validate()), "transformer.num_heads");
}

#[test]
fn unsupported_features_are_named() {
    let unsupported = |c: LmConfig| match c.validate() {
        Err(Error::Unsupported { feature }) => feature,
        other => panic!("expected Unsupported, got {other:?}"),
    };
    let mut c = moshi_like();
    c.transformer.cross_attention = Some((CrossAttentionGating::Normal, NormType::LayerNorm, None));
    assert!(unsupported(c).contains("cross-attention"));
    let mut c = moshi_like();
    c.transformer.kv_repeat = 2;
    assert!(unsupported(c).contains("kv_repeat"));
    let mut c = moshi_like();
    c.transformer.norm_first = false;
    assert!(unsupported(c).contains("norm_first"));
    let mut c = moshi_like();
    c.depformer.as_mut().unwrap().transformer.causal = false;
    assert!(unsupported(c).contains("depformer.transformer.causal"));
    let mut c = moshi_like();
    c.transformer.use_conv_block = true;
    assert!(unsupported(c).contains("convolution"));
    let json = moshi_like().to_json_string().unwrap().replace(
        "\"conditioners\": null",
        r#""conditioners": {"description": {"type": "Lut", "n_bins": 5, "dim": 16, "possible_values": ["a"]}}"#,
    );
    match LmConfig::from_json_str(&json) {
        Err(Error::Unsupported { feature }) => assert!(feature.contains("conditioners")),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // An invalid configuration does not build a model either.
    let mut c = moshi_like();
    c.transformer.kv_repeat = 2;
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    assert!(matches!(
        LmModel::new(&c, vb),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn unreadable_configs_are_errors() {
    assert!(matches!(
        LmConfig::from_json_str("{"),
        Err(Error::ConfigParse(_))
    ));
    let missing_field = moshi_like()
        .to_json_string()
        .unwrap()
        .replace("\"audio_codebooks\"", "\"codebooks\"");
    assert!(matches!(
        LmConfig::from_json_str(&missing_field),
        Err(Error::ConfigParse(_))
    ));
    let err = LmConfig::from_json_file("/nonexistent/kyutai/config.json").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/kyutai/config.json"));
}

#[test]
fn a_missing_tensor_is_named_with_its_expected_shape() {
    let config = moshi_like();
    let mut tensors = kyutai::random_weights(&config, 1, DType::F32, &Device::Cpu).unwrap();
    tensors.remove("transformer.layers.1.self_attn.in_proj_weight");
    let err = LmModel::new(
        &config,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )
    .unwrap_err();
    match &err {
        Error::MissingTensor { name, expected } => {
            assert_eq!(name, "transformer.layers.1.self_attn.in_proj_weight");
            assert_eq!(expected, &[96, 32]);
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("transformer.layers.1.self_attn.in_proj_weight")
            && message.contains("[96, 32]"),
        "{message}"
    );
}

#[test]
fn a_wrong_shape_names_the_tensor_and_both_shapes() {
    let config = moshi_like();
    let mut tensors = kyutai::random_weights(&config, 1, DType::F32, &Device::Cpu).unwrap();
    // A depformer that could emit the pad token: one logit too many.
    tensors.insert(
        "depformer.2.linear_out.weight".into(),
        Tensor::zeros((9, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = LmModel::new(
        &config,
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
    )
    .unwrap_err();
    match &err {
        Error::TensorShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "depformer.2.linear_out.weight");
            assert_eq!(expected, &[8, 16]);
            assert_eq!(found, &[9, 16]);
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("[8, 16]") && message.contains("[9, 16]"),
        "{message}"
    );

    // The same through a file on disk and `LmModel::load`.
    let mut config = stt_like();
    let tensors = kyutai::random_weights(&config, 2, DType::F32, &Device::Cpu).unwrap();
    let path =
        std::env::temp_dir().join(format!("kyutai-errors-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    config.text_out_vocab_size += 1;
    let err = LmModel::load(&config, &path, DType::F32, &Device::Cpu).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    match err {
        Error::TensorShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "text_linear.weight");
            assert_eq!((expected, found), (vec![21, 32], vec![20, 32]));
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
}

#[test]
fn a_missing_checkpoint_file_is_an_io_error() {
    let err = LmModel::load(
        &stt_like(),
        "/nonexistent/model.safetensors",
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[test]
fn bad_forward_inputs_are_errors_and_leave_the_state_alone() {
    let mut model = random_model(&moshi_like(), 3);
    let (text, audio) = step_inputs(&model, &[0]);
    model.forward(Some(&text), &audio).unwrap();
    let dev = Device::Cpu;

    let input_error = |r: kyutai::Result<(Tensor, Tensor)>| match r {
        Err(Error::InvalidInput { input, .. }) => input,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    // Wrong number of audio entries.
    assert_eq!(
        input_error(model.forward(Some(&text), &audio[..3])),
        "audio"
    );
    // Wrong dtype, rank, and disagreeing shapes.
    let float_text = Tensor::zeros((1, 1), DType::F32, &dev).unwrap();
    assert_eq!(
        input_error(model.forward(Some(&float_text), &audio)),
        "text"
    );
    let rank1 = Tensor::new(&[1u32], &dev).unwrap();
    assert_eq!(input_error(model.forward(Some(&rank1), &audio)), "text");
    let two_steps = Tensor::new(&[[1u32, 2]], &dev).unwrap();
    assert_eq!(
        input_error(model.forward(Some(&two_steps), &audio)),
        "audio[0]"
    );
    let empty = Tensor::zeros((1, 0), DType::U32, &dev).unwrap();
    assert_eq!(input_error(model.forward(Some(&empty), &audio)), "text");
    // A new batch size mid-stream.
    let (text2, audio2) = step_inputs(&model, &[0, 1]);
    assert_eq!(input_error(model.forward(Some(&text2), &audio2)), "batch");

    // Tokens outside the embedding tables.
    let start = model.text_start_token();
    let too_big = Tensor::new(&[[start + 1]], &dev).unwrap();
    match model.forward(Some(&too_big), &audio) {
        Err(Error::TokenOutOfRange {
            input,
            token,
            vocab_size,
        }) => {
            assert_eq!((input.as_str(), token, vocab_size), ("text", 21, 21));
        }
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }
    let mut bad_audio = audio.clone();
    bad_audio[5] = Some(Tensor::new(&[[9u32]], &dev).unwrap());
    match model.forward(Some(&text), &bad_audio) {
        Err(Error::TokenOutOfRange {
            input,
            token,
            vocab_size,
        }) => {
            assert_eq!((input.as_str(), token, vocab_size), ("audio[5]", 9, 9));
        }
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }

    // The same through forward_tokens.
    let pads = [8u32];
    let audio_tokens = vec![Some(&pads[..]); 16];
    assert!(matches!(
        model.forward_tokens(Some(&[21]), &audio_tokens),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert_eq!(
        input_error(model.forward_tokens(Some(&[]), &audio_tokens)),
        "text"
    );
    let two = [1u32, 2];
    let mut mixed = audio_tokens.clone();
    mixed[1] = Some(&two[..]);
    assert_eq!(
        input_error(model.forward_tokens(Some(&[1]), &mixed)),
        "audio[1]"
    );
    assert_eq!(
        input_error(model.forward_tokens(Some(&[1]), &audio_tokens[..2])),
        "audio"
    );

    // None of this advanced the state, and the model still works.
    assert_eq!(model.current_seq_len(), 1);
    model.forward(Some(&text), &audio).unwrap();
    assert_eq!(model.current_seq_len(), 2);
    // After a reset any batch size is fine.
    model.reset_state();
    model.forward(Some(&text2), &audio2).unwrap();
}

#[test]
fn bad_depformer_calls_are_errors() {
    let mut model = random_model(&moshi_like(), 4);
    let (text, audio) = step_inputs(&model, &[0]);
    let (_, hidden) = model.forward(Some(&text), &audio).unwrap();
    let mut sampler = SamplingConfig::greedy().build().unwrap();
    let mut histories = vec![Vec::new(); 8];
    let input_error = |r: kyutai::Result<Vec<u32>>| match r {
        Err(Error::InvalidInput { input, .. }) => input,
        other => panic!("expected InvalidInput, got {other:?}"),
    };

    assert_eq!(
        input_error(model.depformer_sample(
            &hidden,
            Some(1),
            &[],
            sampler.as_mut(),
            &mut histories[..7]
        )),
        "histories"
    );
    let two_steps = Tensor::cat(&[&hidden, &hidden], 1).unwrap();
    assert_eq!(
        input_error(model.depformer_sample(
            &two_steps,
            Some(1),
            &[],
            sampler.as_mut(),
            &mut histories
        )),
        "hidden"
    );
    let two_rows = Tensor::cat(&[&hidden, &hidden], 0).unwrap();
    assert_eq!(
        input_error(model.depformer_sample(
            &two_rows,
            Some(1),
            &[],
            sampler.as_mut(),
            &mut histories
        )),
        "hidden"
    );
    assert_eq!(
        input_error(model.depformer_sample_cfg(
            &hidden,
            1.5,
            Some(1),
            &[],
            sampler.as_mut(),
            &mut histories
        )),
        "hidden"
    );
    assert_eq!(
        input_error(model.depformer_sample_cfg(
            &two_rows,
            f64::NAN,
            Some(1),
            &[],
            sampler.as_mut(),
            &mut histories
        )),
        "cfg_alpha"
    );
    let narrow = hidden.narrow(2, 0, 16).unwrap();
    assert_eq!(
        input_error(model.depformer_sample(
            &narrow,
            Some(1),
            &[],
            sampler.as_mut(),
            &mut histories
        )),
        "hidden"
    );
    assert_eq!(
        input_error(model.depformer_sample(
            &hidden,
            Some(1),
            &[None; 9],
            sampler.as_mut(),
            &mut histories
        )),
        "forced_audio_tokens"
    );
    match model.depformer_sample(&hidden, Some(21), &[], sampler.as_mut(), &mut histories) {
        Err(Error::TokenOutOfRange {
            input,
            token: 21,
            vocab_size: 21,
        }) => assert_eq!(input, "text_token"),
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }
    match model.depformer_sample(
        &hidden,
        Some(1),
        &[None, Some(9)],
        sampler.as_mut(),
        &mut histories,
    ) {
        Err(Error::TokenOutOfRange {
            input,
            token: 9,
            vocab_size: 9,
        }) => assert_eq!(input, "forced_audio_tokens[1]"),
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }
    // A picker that returns the pad token (or worse) is caught.
    let err = model
        .depformer_step_with(&hidden, Some(1), &[], None, |_, _| Ok(8))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TokenOutOfRange {
                token: 8,
                vocab_size: 8,
                ..
            }
        ),
        "{err:?}"
    );
    // Nothing was recorded in the histories by the failed calls.
    assert!(histories.iter().all(Vec::is_empty));
    // Logits with several rows cannot be sampled.
    let rows = Tensor::zeros((2, 20), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.sample_from_logits(&rows, sampler.as_mut(), &[]),
        Err(Error::InvalidInput { .. })
    ));

    // A model without a depformer.
    let mut stt = random_model(&stt_like(), 5);
    let (text, audio) = step_inputs(&stt, &[0]);
    let (_, hidden) = stt.forward(Some(&text), &audio).unwrap();
    assert!(matches!(
        stt.depformer_sample(&hidden, Some(1), &[], sampler.as_mut(), &mut []),
        Err(Error::NoDepformer)
    ));
    assert!(matches!(
        stt.depformer_step_with(&hidden, None, &[], None, |_, _| Ok(0)),
        Err(Error::NoDepformer)
    ));
    let wrong_width = Tensor::zeros((1, 1, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        stt.extra_heads(&wrong_width),
        Err(Error::InvalidInput { .. })
    ));
}
