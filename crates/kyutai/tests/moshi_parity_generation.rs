//! Parity of the generation state machines ([`kyutai::lm_generate`]) with Kyutai's `moshi`
//! 0.6.4, and of the speech-to-text ([`kyutai::asr`]) and streaming text-to-speech
//! ([`kyutai::tts`]) paths, on outputs recorded with moshi itself (`multistream_greedy`,
//! `multistream_greedy_reppen`, `multistream_greedy_cfg`, `lm_generate_greedy`, `asr_greedy`
//! and `tts_streaming_greedy` in `tiny_outputs.json`; see
//! `tests/fixtures/moshi-0.6.4/README.md`).
//!
//! The fixtures are read from the directory named by `KYUTAI_PARITY_DIR` when it is set, else
//! from the bundled copy. The model configurations come from that directory's
//! `tiny_config.json`; the state configurations (codebooks, delays, special tokens, penalty,
//! guidance), the inputs and every expected token from its `tiny_outputs.json`. Tokens must
//! agree exactly, the ASR extra heads' probabilities within 1e-4. Every token is chosen by the sampling crate's greedy sampler, behind the
//! `Sampler` trait: one for the text stream, one for the audio codebooks.

use candle_core::{Device, Tensor};
use kyutai::asr::{AsrConfig, AsrMessage, AsrState};
use kyutai::lm_generate::{
    LmGenerate, LmGenerateConfig, Multistream, MultistreamConfig, UNGENERATED,
};
use kyutai::tts::{TtsConfig, TtsEvent, TtsState, TtsStream};
use kyutai::{greedy_sampler, Samplers};
use kyutai_sampling::BoxSampler;
use serde_json::Value;

mod common;
use common::fixtures::{u32_of, usize_of, Fixtures};

fn tokens(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(u32_of)
        .collect()
}

fn table(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(tokens)
        .collect()
}

/// `null` or an array of tokens, per step.
fn optional_rows(value: &Value) -> Vec<Option<Vec<u32>>> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| (!row.is_null()).then(|| tokens(row)))
        .collect()
}

/// Greedy text and greedy audio, as two samplers.
fn greedy() -> Samplers {
    Samplers::new(greedy_sampler(), greedy_sampler())
}

fn multistream_config(case: &Value) -> MultistreamConfig {
    let c = &case["config"];
    MultistreamConfig {
        generated_audio_codebooks: usize_of(&c["generated_audio_codebooks"]),
        input_audio_codebooks: usize_of(&c["input_audio_codebooks"]),
        audio_vocab_size: usize_of(&c["audio_vocab_size"]),
        acoustic_delay: usize_of(&c["acoustic_delay"]),
        text_pad_token: u32_of(&c["text_pad_token"]),
        text_eop_token: u32_of(&c["text_eop_token"]),
        text_start_token: u32_of(&c["text_start_token"]),
    }
}

/// Runs moshi's multistream case `name` and compares every recorded token.
fn check_multistream(name: &str) {
    let fixtures = Fixtures::load();
    let case = fixtures.out(&format!("/{name}"));
    let model = fixtures.model("multistream_lm", "tiny.safetensors");
    let config = multistream_config(case);
    assert_eq!(
        config.text_start_token,
        model.text_start_token(),
        "the fixture's start token is the model's"
    );
    let mut state = Multistream::new(model, greedy(), config).unwrap();
    if let Some(penalty) = case["repetition_penalty"].as_array() {
        let context = usize_of(&penalty[0]);
        let factor = penalty[1].as_f64().expect("a penalty") as f32;
        state = state.with_repetition_penalty(context, factor).unwrap();
    }
    if let Some(alpha) = case["cfg_alpha"].as_f64() {
        state = state.with_cfg(alpha).unwrap();
    }

    let user_audio = table(&case["user_audio_tokens"]);
    let expected_text = tokens(&case["text_tokens"]);
    let expected_last = optional_rows(&case["last_audio_tokens_per_step"]);
    assert_eq!(user_audio.len(), expected_text.len());
    let mut last_per_step = Vec::new();
    for (step, user) in user_audio.iter().enumerate() {
        // `step` feeds the previous text token back, the start token at step 0, as recorded.
        let text = state.step(user).unwrap();
        assert_eq!(
            text, expected_text[step],
            "{name}: text token of step {step}"
        );
        last_per_step.push(state.last_audio_tokens());
    }
    assert_eq!(
        state.text_tokens(),
        &expected_text[..],
        "{name}: text tokens"
    );
    assert_eq!(
        last_per_step, expected_last,
        "{name}: last_audio_tokens after each step"
    );
    let expected_table = table(&case["audio_tokens_table"]);
    assert!(
        expected_table.iter().flatten().any(|&t| t == UNGENERATED),
        "{name}: the recorded table marks ungenerated positions with u32::MAX"
    );
    assert_eq!(
        state.audio_tokens(),
        &expected_table[..],
        "{name}: audio table"
    );
}

#[test]
fn multistream_greedy() {
    check_multistream("multistream_greedy");
}

#[test]
fn multistream_greedy_reppen() {
    check_multistream("multistream_greedy_reppen");
}

#[test]
fn multistream_greedy_cfg() {
    check_multistream("multistream_greedy_cfg");
}

#[test]
fn lm_generate_greedy() {
    let fixtures = Fixtures::load();
    let case = fixtures.out("/lm_generate_greedy");
    let c = &case["config"];
    let config = LmGenerateConfig {
        audio_delays: c["audio_delays"]
            .as_array()
            .expect("delays")
            .iter()
            .map(usize_of)
            .collect(),
        audio_vocab_size: usize_of(&c["audio_vocab_size"]),
        text_pad_token: u32_of(&c["text_pad_token"]),
        text_eop_token: u32_of(&c["text_eop_token"]),
        text_start_token: u32_of(&c["text_start_token"]),
    };
    let model = fixtures.model("tts_lm", "tiny_tts.safetensors");
    let mut state = LmGenerate::new(model, greedy(), config).unwrap();
    let expected_text = tokens(&case["last_text_token_per_step"]);
    let expected_audio = optional_rows(&case["last_audio_tokens_per_step"]);
    assert_eq!(expected_text.len(), expected_audio.len());
    let mut text = Vec::new();
    let mut audio = Vec::new();
    for _ in 0..expected_text.len() {
        let token = state.step().unwrap();
        assert_eq!(token, state.last_text_token());
        text.push(token.expect("free steps sample a text token"));
        audio.push(state.last_audio_tokens().unwrap());
    }
    assert_eq!(text, expected_text, "lm_generate: text tokens");
    assert_eq!(audio, expected_audio, "lm_generate: last_audio_tokens");
}

const TOLERANCE: f32 = 1e-4;

fn greedy_box() -> BoxSampler {
    greedy_sampler()
}

/// Compares two message streams: kinds, tokens, indices and times exactly (times within
/// 1e-9 s), probabilities within [`TOLERANCE`].
fn assert_messages_match(got: &[AsrMessage], want: &[AsrMessage]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{} messages, moshi {}:\n got {got:?}\nwant {want:?}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match (g, w) {
            (
                AsrMessage::Step { step_idx, prs },
                AsrMessage::Step {
                    step_idx: want_idx,
                    prs: want_prs,
                },
            ) => {
                assert_eq!(step_idx, want_idx, "message {i}: step index");
                assert_eq!(prs.len(), want_prs.len(), "message {i}: number of heads");
                for (head, (p, q)) in prs.iter().zip(want_prs).enumerate() {
                    assert_eq!(p.len(), q.len(), "message {i}, head {head}: batch size");
                    for (x, y) in p.iter().zip(q) {
                        assert!(
                            (x - y).abs() <= TOLERANCE,
                            "message {i} (step {step_idx}), head {head}: probability {x}, moshi {y}"
                        );
                    }
                }
            }
            (
                AsrMessage::Word {
                    tokens,
                    start_time,
                    batch_idx,
                },
                AsrMessage::Word {
                    tokens: want_tokens,
                    start_time: want_start,
                    batch_idx: want_batch,
                },
            ) => {
                assert_eq!(tokens, want_tokens, "message {i}: word tokens");
                assert_eq!(batch_idx, want_batch, "message {i}: batch index");
                assert!(
                    (start_time - want_start).abs() < 1e-9,
                    "message {i}: start time {start_time}, moshi {want_start}"
                );
            }
            (
                AsrMessage::EndWord {
                    stop_time,
                    batch_idx,
                },
                AsrMessage::EndWord {
                    stop_time: want_stop,
                    batch_idx: want_batch,
                },
            ) => {
                assert_eq!(batch_idx, want_batch, "message {i}: batch index");
                assert!(
                    (stop_time - want_stop).abs() < 1e-9,
                    "message {i}: stop time {stop_time}, moshi {want_stop}"
                );
            }
            _ => panic!("message {i}: got {g:?}, moshi {w:?}"),
        }
    }
}

/// moshi's streaming ASR (`asr::State::step_tokens`, temperature 0) on 16 frames of codes:
/// the model's inputs at every step, then the messages (extra-head probabilities, words,
/// word ends), frame by frame and all frames in one call.
#[test]
fn asr_greedy() {
    let fx = Fixtures::load();
    let recorded = fx.out("/asr_greedy");
    assert_eq!(
        recorded["temperature"].as_f64(),
        Some(0.0),
        "the fixture must record greedy decoding"
    );
    let delay = recorded["asr_delay_in_tokens"]
        .as_u64()
        .expect("asr_delay_in_tokens") as usize;
    let frames: Vec<Vec<u32>> = recorded["audio_codes_per_step"]
        .as_array()
        .expect("audio_codes_per_step")
        .iter()
        .map(tokens)
        .collect();
    let inputs = recorded["model_inputs_per_step"]
        .as_array()
        .expect("model_inputs_per_step");
    assert_eq!(inputs.len(), frames.len());
    let want: Vec<AsrMessage> = serde_json::from_value(recorded["messages"].clone())
        .expect("moshi's AsrMsg list deserialises into AsrMessage");
    assert!(
        want.iter().any(|m| matches!(m, AsrMessage::Word { .. })),
        "the fixture should record at least one word"
    );

    let model = fx.model("asr_lm", "tiny_asr.safetensors");
    let codebooks = model.in_audio_codebooks();
    let mut asr = AsrState::new(model.clone(), AsrConfig::new(delay), vec![greedy_box()]).unwrap();
    let mut got = Vec::new();
    for (step, (frame, input)) in frames.iter().zip(inputs).enumerate() {
        assert_eq!(frame.len(), codebooks);
        let codes = Tensor::from_slice(frame, (1, codebooks, 1), &Device::Cpu).unwrap();
        got.extend(asr.step_tokens(&codes).unwrap());
        let seen = asr.last_inputs().expect("a step ran");
        assert_eq!(
            seen.text,
            tokens(&input["text_in"]),
            "text input, step {step}"
        );
        let audio: Vec<u32> = seen.audio.iter().map(|column| column[0]).collect();
        assert_eq!(
            audio,
            tokens(&input["audio_in"]),
            "audio input, step {step}"
        );
    }
    assert_eq!(asr.model_step_idx(), frames.len());
    assert_messages_match(&got, &want);

    // All frames in one call: the same messages.
    let mut asr = AsrState::greedy(model, AsrConfig::new(delay), 1).unwrap();
    let flat: Vec<u32> = (0..codebooks)
        .flat_map(|k| frames.iter().map(move |frame| frame[k]))
        .collect();
    let codes = Tensor::from_vec(flat, (1, codebooks, frames.len()), &Device::Cpu).unwrap();
    assert_messages_match(&asr.step_tokens(&codes).unwrap(), &want);
}

/// moshi's streaming TTS state (`tts_streaming::State`, greedy text and audio, no
/// cross-attention) driven word by word as Kyutai's streaming server drives it: the text token
/// of every step, the text and audio tables and the audio frame after every step.
#[test]
fn tts_streaming_greedy() {
    let fx = Fixtures::load();
    let recorded = fx.out("/tts_streaming_greedy");
    let config: TtsConfig =
        serde_json::from_value(recorded["config"].clone()).expect("moshi's tts_streaming config");
    let words: Vec<Vec<u32>> = recorded["words"]
        .as_array()
        .expect("words")
        .iter()
        .map(tokens)
        .collect();
    let want_text = tokens(&recorded["text_tokens"]);
    let want_text_table = tokens(&recorded["text_tokens_table"]);
    let want_audio_table: Vec<Vec<u32>> = recorded["audio_tokens_table"]
        .as_array()
        .expect("audio_tokens_table")
        .iter()
        .map(tokens)
        .collect();
    let want_last: Vec<Option<Vec<u32>>> = recorded["last_audio_tokens_per_step"]
        .as_array()
        .expect("last_audio_tokens_per_step")
        .iter()
        .map(|v| (!v.is_null()).then(|| tokens(v)))
        .collect();

    let model = fx.model("tts_lm", "tiny_tts.safetensors");
    let state = TtsState::new(model, config, Samplers::greedy()).unwrap();
    let mut stream = TtsStream::new(state);
    for word in words {
        stream.push_word(word).unwrap();
    }
    stream.finish();
    let (mut text, mut last) = (Vec::new(), Vec::new());
    loop {
        match stream.step().unwrap() {
            TtsEvent::Step {
                text_token,
                audio_tokens,
            } => {
                text.push(text_token);
                last.push(audio_tokens);
            }
            TtsEvent::Finished => break,
            TtsEvent::NeedsText => panic!("the text has ended, the stream must not wait"),
        }
    }
    assert_eq!(text, want_text, "text token of each step");
    assert_eq!(last, want_last, "audio frame after each step");
    let state = stream.state();
    assert_eq!(state.text_tokens(), want_text_table, "text table");
    // moshi marks positions not generated yet with u32::MAX.
    let audio_table: Vec<Vec<u32>> = state
        .audio_tokens()
        .iter()
        .map(|row| row.iter().map(|t| t.unwrap_or(u32::MAX)).collect())
        .collect();
    assert_eq!(audio_table, want_audio_table, "audio table");
}
