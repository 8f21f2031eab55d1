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
    let _ = kyutai::gen::generate_audio;
    let _ = kyutai::gen::generate_audio_with_progress;
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
