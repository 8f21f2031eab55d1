//! The public paths of the crate's earlier layout keep working: the compatibility modules
//! (`lm_generate`, `asr`, `tts`) and the deprecated ones (`gen`, `generator`) name the same items
//! as the new `generate` layer and the crate root.
#![allow(deprecated)]

use std::any::TypeId;

fn same<A: 'static, B: 'static>() -> bool {
    TypeId::of::<A>() == TypeId::of::<B>()
}

#[test]
fn old_module_paths_name_the_new_items() {
    assert!(same::<
        kyutai::gen::GenPrompt,
        kyutai::generate::audio::GenPrompt,
    >());
    assert!(same::<kyutai::gen::GenOutput, kyutai::GenOutput>());
    assert!(same::<
        kyutai::generator::BasicGenerator,
        kyutai::BasicGenerator,
    >());
    assert!(same::<
        kyutai::lm_generate::Multistream,
        kyutai::generate::multistream::Multistream,
    >());
    assert!(same::<
        kyutai::lm_generate::LmGenerate,
        kyutai::generate::delayed::LmGenerate,
    >());
    assert!(same::<kyutai::lm_generate::Token, kyutai::Token>());
    assert!(same::<kyutai::asr::AsrState, kyutai::generate::asr::AsrState>());
    assert!(same::<
        kyutai::tts::TtsStream,
        kyutai::generate::tts::TtsStream,
    >());
    assert_eq!(kyutai::lm_generate::UNGENERATED, u32::MAX);
}

#[test]
fn the_deprecated_gen_functions_forward_to_the_new_ones() {
    use candle_core::{DType, Device};
    let mut config = kyutai::LmConfig::moshi_7b_v0_1();
    (
        config.transformer.d_model,
        config.transformer.num_heads,
        config.transformer.num_layers,
    ) = (32, 2, 1);
    let dep = config.depformer.as_mut().unwrap();
    (
        dep.transformer.d_model,
        dep.transformer.num_heads,
        dep.transformer.num_layers,
    ) = (16, 2, 1);
    dep.num_slices = 2;
    (config.audio_codebooks, config.audio_delays) = (4, Some(vec![0, 1, 0, 1]));
    (
        config.text_in_vocab_size,
        config.text_out_vocab_size,
        config.audio_vocab_size,
    ) = (101, 100, 17);
    let model = kyutai::LmModel::random(&config, 1, DType::F32, &Device::Cpu).unwrap();
    let mut mimi_config = kyutai::Mimi::small_config(2);
    mimi_config.quantizer_bins = 16;
    let mut mimi = kyutai::Mimi::random(mimi_config, 2, &Device::Cpu).unwrap();
    let prompt = kyutai::gen::GenPrompt {
        text: vec![7],
        user_pcm: None,
    };
    let samplers = || kyutai::Samplers::moshi(5).unwrap();
    let new = kyutai::generate_audio(&model, &mut mimi, &prompt, 3, &mut samplers()).unwrap();
    let old = kyutai::gen::generate_audio(&model, &mut mimi, &prompt, 3, &mut samplers()).unwrap();
    let mut steps = Vec::new();
    let progress = kyutai::gen::generate_audio_with_progress(
        &model,
        &mut mimi,
        &prompt,
        3,
        &mut samplers(),
        &mut |done, _| steps.push(done),
    )
    .unwrap();
    assert_eq!(old, new);
    assert_eq!(progress, new);
    assert_eq!(steps, [1, 2, 3]);
}

#[test]
fn the_special_tokens_have_one_definition() {
    assert_eq!(kyutai::TEXT_PAD_TOKEN, 3);
    assert_eq!(kyutai::TEXT_EOP_TOKEN, 0);
    assert_eq!(kyutai::asr::TEXT_PAD_TOKEN, kyutai::TEXT_PAD_TOKEN);
    assert_eq!(kyutai::asr::TEXT_EOP_TOKEN, kyutai::TEXT_EOP_TOKEN);
    assert_eq!(
        kyutai::lm_generate::MOSHI_TEXT_PAD_TOKEN,
        kyutai::TEXT_PAD_TOKEN
    );
    assert_eq!(
        kyutai::lm_generate::MOSHI_TEXT_EOP_TOKEN,
        kyutai::TEXT_EOP_TOKEN
    );
    let tts = kyutai::TtsConfig::v202501();
    assert_eq!(
        (tts.text_pad_token, tts.text_eop_token),
        (kyutai::TEXT_PAD_TOKEN, kyutai::TEXT_EOP_TOKEN)
    );
}
