//! Behaviour of the text-to-speech states ([`kyutai::tts`]) beyond parity with moshi:
//! user-defined samplers drive them, samplers and seeds change what they produce, and bad input
//! is a typed error.

mod common;

use kyutai::tts::{AllowedTokens, TtsConfig, TtsEvent, TtsState, TtsStream};
use kyutai::{Error, LmModel, Samplers};
use kyutai_sampling::{BoxSampler, SamplingConfig};

use common::scripted::Scripted;
use common::{random_model, stt_like, tts_like};

fn greedy() -> BoxSampler {
    SamplingConfig::greedy().build().unwrap()
}

// ---------------------------------------------------------------------------------------------
// TTS

/// Delays small enough for short tests: text-audio delay 3, acoustic delay 2, at most 4 pads
/// in a row, 2 extra steps; tokens of the tiny vocabulary.
fn tts_config(model: &LmModel) -> TtsConfig {
    TtsConfig {
        text_start_token: model.text_start_token(),
        text_audio_delay_in_tokens: 3,
        max_consecutive_pads: 4,
        extra_steps: 2,
        ..TtsConfig::v202501()
    }
}

/// Pushes `words`, ends the text and steps until the stream finishes (at most 200 steps, so
/// that a stream that never ends fails instead of hanging); what `generate` returns.
fn run_stream(stream: &mut TtsStream, words: &[&[u32]]) -> kyutai::tts::TtsOutput {
    for w in words {
        stream.push_word(w.to_vec()).unwrap();
    }
    stream.finish();
    let mut output = kyutai::tts::TtsOutput {
        text_tokens: Vec::new(),
        audio_frames: Vec::new(),
    };
    for _ in 0..200 {
        match stream.step().unwrap() {
            TtsEvent::Step {
                text_token,
                audio_tokens,
            } => {
                output.text_tokens.push(text_token);
                output.audio_frames.extend(audio_tokens);
            }
            TtsEvent::NeedsText => panic!("the text has ended, the stream must not wait"),
            TtsEvent::Finished => return output,
        }
    }
    panic!("the stream did not finish in 200 steps");
}

/// User-defined samplers: a text sampler that always asks for a pad (so the state ends the
/// padding itself after `max_consecutive_pads`), and one audio sampler per codebook returning
/// a fixed token, which lands in the audio table at the delayed positions.
#[test]
fn user_defined_samplers_drive_tts() {
    let model = random_model(&tts_like(), 11);
    let config = tts_config(&model);
    let (pad, eop, audio_pad) = (
        config.text_pad_token,
        config.text_eop_token,
        model.audio_pad_token(),
    );
    let (text_out, audio_vocab) = (model.text_out_vocab_size(), model.audio_vocab_size());
    let (text, text_calls) = Scripted::boxed(&[pad]);
    let mut audio_calls = Vec::new();
    let audio = (0..4u32)
        .map(|k| {
            let (s, calls) = Scripted::boxed(&[10 + k]);
            audio_calls.push(calls);
            s
        })
        .collect();
    let state = TtsState::new(model, config.clone(), Samplers::per_codebook(text, audio)).unwrap();
    let mut stream = TtsStream::new(state);
    let output = run_stream(&mut stream, &[&[1, 20]]);

    // Worked out by hand: 5 pads (the sampler's), then the forced end-of-padding; the word;
    // 5 pads and the forced end-of-padding again, which ends the text (and is overwritten with
    // a pad in the table); then delay 3 + 2 extra pad steps.
    let want: Vec<u32> = [
        vec![pad; 5],
        vec![eop, 1, 20],
        vec![pad; 5],
        vec![eop],
        vec![pad; 5],
    ]
    .concat();
    assert_eq!(output.text_tokens, want);
    let mut table = want.clone();
    table[13] = pad;
    assert_eq!(stream.state().text_tokens(), table);
    // The text sampler was asked 10 times (never on the forced steps), with the text so far.
    let text_calls = text_calls.lock().unwrap();
    assert_eq!(text_calls.len(), 10);
    assert!(text_calls.iter().all(|c| c.logits.len() == text_out));
    assert_eq!(text_calls[6].history, want[..9].to_vec());

    // Audio: codebook 0 of position s is sampled at step s >= 3; codebook k > 0 of position s
    // at step s + 2 >= 3; earlier positions hold pads; the last two rows of k > 0 are pending.
    let steps = want.len();
    let table = stream.state().audio_tokens();
    assert_eq!(table.len(), steps);
    for (s, row) in table.iter().enumerate() {
        for (k, token) in row.iter().enumerate() {
            let expected = if k == 0 {
                Some(if s >= 3 { 10 } else { audio_pad })
            } else if s + 2 >= steps {
                None
            } else {
                Some(if s + 2 >= 3 { 10 + k as u32 } else { audio_pad })
            };
            assert_eq!(*token, expected, "position {s}, codebook {k}");
        }
    }
    // Complete frames are those of positions 3..steps-2.
    assert_eq!(
        output.audio_frames,
        vec![vec![10, 11, 12, 13]; steps - 2 - 3]
    );
    for (k, calls) in audio_calls.iter().enumerate() {
        let calls = calls.lock().unwrap();
        assert_eq!(
            calls.len(),
            steps - 3,
            "codebook {k}: one call per step after the delay"
        );
        assert!(calls.iter().all(|c| c.logits.len() == audio_vocab - 1));
        assert_eq!(calls[4].history, vec![10 + k as u32; 4]);
    }
}

/// The same seeds give the same speech; other seeds or other samplers give other speech.
#[test]
fn tts_samplers_and_seeds_change_the_output() {
    let model = random_model(&tts_like(), 12);
    let config = tts_config(&model);
    let run = |samplers: Samplers| {
        let state = TtsState::new(model.clone(), config.clone(), samplers).unwrap();
        run_stream(
            &mut TtsStream::new(state),
            &[&[1, 10, 11], &[12], &[13, 14]],
        )
    };
    let seed_1 = run(Samplers::moshi(1).unwrap());
    assert!(seed_1.audio_frames.len() >= 8);
    assert_eq!(run(Samplers::moshi(1).unwrap()), seed_1);
    let seed_2 = run(Samplers::moshi(2).unwrap());
    assert_ne!(seed_2.audio_frames, seed_1.audio_frames);
    let greedy_out = run(Samplers::greedy());
    assert_ne!(greedy_out.audio_frames, seed_1.audio_frames);
    assert_eq!(run(Samplers::greedy()), greedy_out);
    // Only the audio sampler changed: the text stays greedy's when the text sampler is greedy.
    let mixed = run(Samplers::new(greedy(), moshi_audio(5)));
    assert_eq!(mixed.text_tokens, greedy_out.text_tokens);
    assert_ne!(mixed.audio_frames, greedy_out.audio_frames);
}

fn moshi_audio(seed: u64) -> BoxSampler {
    kyutai::moshi_audio_config(seed).build().unwrap()
}

/// Pushing words one at a time while streaming gives what pushing them all at once gives; the
/// stream waits for text after each end-of-padding.
#[test]
fn tts_stream_waits_for_words() {
    let model = random_model(&tts_like(), 13);
    let config = tts_config(&model);
    let words: [&[u32]; 3] = [&[1, 10, 11], &[12], &[13, 14]];
    let state = TtsState::new(model.clone(), config.clone(), Samplers::greedy()).unwrap();
    let all_at_once = run_stream(&mut TtsStream::new(state), &words);
    // `generate` does the same.
    let state = TtsState::new(model.clone(), config.clone(), Samplers::greedy()).unwrap();
    let mut stream = TtsStream::new(state);
    for w in words {
        stream.push_word(w.to_vec()).unwrap();
    }
    assert_eq!(stream.generate().unwrap(), all_at_once);

    let state = TtsState::new(model, config, Samplers::greedy()).unwrap();
    let mut stream = TtsStream::new(state);
    let mut text = Vec::new();
    let mut frames = Vec::new();
    let mut waits = 0;
    let mut pending = words.iter();
    loop {
        match stream.step().unwrap() {
            TtsEvent::Step {
                text_token,
                audio_tokens,
            } => {
                text.push(text_token);
                frames.extend(audio_tokens);
            }
            TtsEvent::NeedsText => {
                waits += 1;
                assert_eq!(stream.step().unwrap(), TtsEvent::NeedsText);
                match pending.next() {
                    Some(w) => stream.push_word(w.to_vec()).unwrap(),
                    None => stream.finish(),
                }
            }
            TtsEvent::Finished => break,
        }
    }
    assert_eq!(waits, 4, "once before each word and once at the end");
    assert!(stream.is_finished());
    assert_eq!(stream.step().unwrap(), TtsEvent::Finished);
    assert_eq!(text, all_at_once.text_tokens);
    assert_eq!(frames, all_at_once.audio_frames);
}

/// The state on its own: forced text, forced pads, and a reset that replays.
#[test]
fn tts_state_steps_and_resets() {
    let model = random_model(&tts_like(), 14);
    let config = tts_config(&model);
    let start = config.text_start_token;
    let mut state = TtsState::new(model, config.clone(), Samplers::moshi(3).unwrap()).unwrap();
    assert!(matches!(
        state.overwrite_last_text_token(3),
        Err(Error::InvalidInput { .. })
    ));
    let run = |state: &mut TtsState| {
        let mut prev = start;
        let mut out = Vec::new();
        for allowed in [
            AllowedTokens::PadOrEpad,
            AllowedTokens::Text(7),
            AllowedTokens::Pad,
            AllowedTokens::Text(8),
            AllowedTokens::PadOrEpad,
            AllowedTokens::Pad,
            AllowedTokens::Pad,
        ] {
            prev = state.step(prev, allowed).unwrap();
            out.push(prev);
        }
        (out, state.audio_tokens().to_vec())
    };
    let (text, audio) = run(&mut state);
    assert_eq!(&text[1..4], &[7, config.text_pad_token, 8]);
    assert_eq!(&text[5..], &[config.text_pad_token; 2]);
    assert!([config.text_pad_token, config.text_eop_token].contains(&text[0]));
    assert_eq!(state.step_idx(), 7);
    assert!(state.last_audio_tokens().is_some());
    state.reset();
    assert_eq!((state.step_idx(), state.text_tokens().len()), (0, 0));
    assert_eq!(run(&mut state), (text, audio));
}

#[test]
fn tts_rejects_bad_input() {
    let model = random_model(&tts_like(), 15);
    let config = tts_config(&model);
    let vocab = model.text_in_vocab_size() as u32;

    // No depformer: nothing to speak with.
    let stt = random_model(&stt_like(), 1);
    let stt_config = TtsConfig {
        text_start_token: stt.text_start_token(),
        ..config.clone()
    };
    assert!(matches!(
        TtsState::new(stt, stt_config, Samplers::greedy()),
        Err(Error::NoDepformer)
    ));
    // Per-codebook samplers must number the generated codebooks.
    let three = Samplers::per_codebook(greedy(), vec![greedy(), greedy(), greedy()]);
    assert!(matches!(
        TtsState::new(model.clone(), config.clone(), three),
        Err(Error::InvalidInput { .. })
    ));
    // Special tokens must be in the vocabulary (TtsConfig::v202501's start token is not).
    assert!(matches!(
        TtsState::new(model.clone(), TtsConfig::v202501(), Samplers::greedy()),
        Err(Error::TokenOutOfRange { token: 8000, .. })
    ));
    let same = TtsConfig {
        text_eop_token: config.text_pad_token,
        ..config.clone()
    };
    assert!(matches!(
        TtsState::new(model.clone(), same, Samplers::greedy()),
        Err(Error::InvalidInput { .. })
    ));

    let mut state = TtsState::new(model.clone(), config.clone(), Samplers::greedy()).unwrap();
    assert!(matches!(
        state.step(vocab, AllowedTokens::Pad),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        state.step(config.text_start_token, AllowedTokens::Text(vocab)),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert_eq!(state.step_idx(), 0, "a rejected step changes nothing");
    state
        .step(config.text_start_token, AllowedTokens::Pad)
        .unwrap();
    assert!(matches!(
        state.overwrite_last_text_token(vocab),
        Err(Error::TokenOutOfRange { .. })
    ));

    let mut stream = TtsStream::new(state);
    for bad in [
        vec![5, config.text_pad_token],
        vec![config.text_eop_token],
        vec![vocab],
    ] {
        assert!(stream.push_word(bad).is_err());
    }
    stream.push_word(vec![5]).unwrap();
    stream.finish();
    assert!(matches!(
        stream.push_word(vec![6]),
        Err(Error::InvalidInput { .. })
    ));
    // A sampler returning a token outside the audio logits is an error.
    let (bad_audio, _) = Scripted::boxed(&[model.audio_pad_token()]);
    let state = TtsState::new(model, config, Samplers::new(greedy(), bad_audio)).unwrap();
    let mut stream = TtsStream::new(state);
    stream.finish();
    let result = (0..10).try_for_each(|_| stream.step().map(|_| ()));
    assert!(matches!(result, Err(Error::TokenOutOfRange { .. })));
}
