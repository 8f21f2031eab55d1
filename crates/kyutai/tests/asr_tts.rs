//! Behaviour of the speech-to-text ([`kyutai::asr`]) and text-to-speech ([`kyutai::tts`])
//! states beyond parity with moshi: user-defined samplers drive them, samplers and seeds change
//! what they produce, batch items are independent, and bad input is a typed error.

mod common;

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use kyutai::asr::{AsrConfig, AsrMessage, AsrState};
use kyutai::mimi::Mimi;
use kyutai::tts::{AllowedTokens, TtsConfig, TtsEvent, TtsState, TtsStream};
use kyutai::{Error, LmModel, Samplers};
use kyutai_sampling::{BoxSampler, Sampler, SamplingConfig, SamplingError};

use common::{random_model, stt_like, tts_like};

/// What a [`Scripted`] sampler was given at one call.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    logits: Vec<f32>,
    history: Vec<u32>,
}

/// A user-defined sampler: returns the tokens of its script in order (cycling), ignoring the
/// logits, and records every call.
struct Scripted {
    script: Vec<u32>,
    next: usize,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Scripted {
    fn boxed(script: &[u32]) -> (BoxSampler, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sampler = Self {
            script: script.to_vec(),
            next: 0,
            calls: calls.clone(),
        };
        (Box::new(sampler), calls)
    }
}

impl Sampler for Scripted {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        self.calls.lock().unwrap().push(Call {
            logits: logits.to_vec1::<f32>()?,
            history: history.to_vec(),
        });
        let token = self.script[self.next % self.script.len()];
        self.next += 1;
        Ok(token)
    }

    fn reset(&mut self) {
        self.next = 0;
    }
}

fn greedy() -> BoxSampler {
    SamplingConfig::greedy().build().unwrap()
}

/// `[batch, codebooks, frames]` codes below `vocab`, different for every salt.
fn codes(batch: usize, codebooks: usize, frames: usize, vocab: u32, salt: u32) -> Tensor {
    let values = common::tokens(batch * codebooks * frames, vocab, salt);
    Tensor::from_vec(values, (batch, codebooks, frames), &Device::Cpu).unwrap()
}

fn words(messages: &[AsrMessage]) -> Vec<AsrMessage> {
    messages
        .iter()
        .filter(|m| !matches!(m, AsrMessage::Step { .. }))
        .cloned()
        .collect()
}

fn word(tokens: &[u32], start_time: f64, batch_idx: usize) -> AsrMessage {
    AsrMessage::Word {
        tokens: tokens.to_vec(),
        start_time,
        batch_idx,
    }
}

fn end_word(stop_time: f64, batch_idx: usize) -> AsrMessage {
    AsrMessage::EndWord {
        stop_time,
        batch_idx,
    }
}

// ---------------------------------------------------------------------------------------------
// ASR

/// A scripted sampler decides every text token: the model reads them back, and the words, word
/// ends and timestamps follow moshi's rules (delay 2, pad 3, end-of-padding 0, 12.5 Hz).
#[test]
fn a_user_defined_sampler_drives_asr() {
    let model = random_model(&stt_like(), 1);
    let heads = model.extra_heads_count();
    let (text_out, codebooks) = (model.text_out_vocab_size(), model.in_audio_codebooks());
    let script = [5, 6, 7, 3, 8, 0, 9, 0, 0, 4, 3, 0];
    let (sampler, calls) = Scripted::boxed(&script);
    let mut asr = AsrState::new(model, AsrConfig::new(2), vec![sampler]).unwrap();
    let messages = asr
        .step_tokens(&codes(1, codebooks, script.len(), 8, 1))
        .unwrap();

    // Worked out by hand from moshi's rules: token 5 falls in the delay; pad closes [6, 7];
    // end-of-padding closes [8] and ends it at (6 - 2) / 12.5 s; ...
    assert_eq!(
        words(&messages),
        vec![
            word(&[6, 7], 0.0, 0),
            word(&[8], 0.0, 0),
            end_word(0.32, 0),
            word(&[9], 0.32, 0),
            end_word(0.48, 0),
            word(&[4], 0.56, 0),
            end_word(0.8, 0),
        ]
    );
    // One Step message per model step, with one probability per head and item.
    let steps: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            AsrMessage::Step { step_idx, prs } => Some((*step_idx, prs.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=script.len()).collect::<Vec<_>>()
    );
    for (_, prs) in &steps {
        assert_eq!(prs.len(), heads);
        assert!(prs.iter().all(|p| p.len() == 1 && p[0] > 0.0 && p[0] < 1.0));
    }
    // The sampler saw the full text logits and the item's history.
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), script.len());
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call.logits.len(), text_out);
        assert_eq!(call.history, script[..i].to_vec());
    }
    // The model read the start token, then each scripted token one step later.
    assert_eq!(
        asr.last_inputs().unwrap().text,
        vec![script[script.len() - 2]]
    );
    assert_eq!(asr.text_tokens(0).unwrap(), &script);
}

/// The audio codes reach the model one step late, the first step reading pads.
#[test]
fn asr_audio_is_read_one_step_late() {
    let model = random_model(&stt_like(), 2);
    let (codebooks, pad, start) = (
        model.in_audio_codebooks(),
        model.audio_pad_token(),
        model.text_start_token(),
    );
    let mut asr = AsrState::greedy(model, AsrConfig::new(1), 1).unwrap();
    let input = codes(1, codebooks, 3, 8, 5);
    let frames = input.to_vec3::<u32>().unwrap();
    let mut seen = Vec::new();
    for t in 0..3 {
        asr.step_tokens(&input.narrow(2, t, 1).unwrap()).unwrap();
        seen.push(asr.last_inputs().unwrap().clone());
    }
    assert_eq!(seen[0].text, vec![start]);
    assert!(seen[0].audio.iter().all(|column| column == &[pad]));
    for t in 1..3 {
        let audio: Vec<u32> = seen[t].audio.iter().map(|c| c[0]).collect();
        let previous: Vec<u32> = frames[0].iter().map(|row| row[t - 1]).collect();
        assert_eq!(audio, previous, "step {t}");
        assert_eq!(seen[t].text, vec![asr.text_tokens(0).unwrap()[t - 1]]);
    }
}

/// Each batch item has its own sampler and its own stream: an item's logits in a batch equal
/// the logits of the same audio alone, whatever the other item does.
#[test]
fn asr_batch_items_are_independent_and_have_their_own_samplers() {
    let model = random_model(&stt_like(), 3);
    let codebooks = model.in_audio_codebooks();
    let frames = 6;
    let a = codes(1, codebooks, frames, 8, 11);
    let b = codes(1, codebooks, frames, 8, 12);
    let (script_a, script_b) = ([1, 2, 4, 0, 5, 3], [7, 0, 7, 0, 7, 0]);

    let (sa, calls_a) = Scripted::boxed(&script_a);
    let (sb, calls_b) = Scripted::boxed(&script_b);
    let mut batch = AsrState::new(model.clone(), AsrConfig::new(1), vec![sa, sb]).unwrap();
    let messages = batch
        .step_tokens(&Tensor::cat(&[&a, &b], 0).unwrap())
        .unwrap();
    assert_eq!(batch.text_tokens(0).unwrap(), &script_a);
    assert_eq!(batch.text_tokens(1).unwrap(), &script_b);
    assert!(batch.text_tokens(2).is_none());
    // Item 1's words carry its index.
    assert!(words(&messages).contains(&word(&[7], 0.0, 1)));
    assert!(words(&messages).contains(&word(&[1, 2, 4], 0.0, 0)));

    for (alone_codes, script, calls) in [(&a, &script_a, &calls_a), (&b, &script_b, &calls_b)] {
        let (s, alone_calls) = Scripted::boxed(script);
        let mut alone = AsrState::new(model.clone(), AsrConfig::new(1), vec![s]).unwrap();
        alone.step_tokens(alone_codes).unwrap();
        let (batched, alone) = (calls.lock().unwrap(), alone_calls.lock().unwrap());
        assert_eq!(batched.len(), frames);
        for (x, y) in batched.iter().zip(alone.iter()) {
            let diff = x
                .logits
                .iter()
                .zip(&y.logits)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "batched and single logits differ by {diff}");
        }
    }
}

/// Resetting one item starts its stream over (same logits as a fresh state) and leaves the
/// other item's stream going.
#[test]
fn asr_reset_batch_item() {
    let model = random_model(&stt_like(), 4);
    let codebooks = model.in_audio_codebooks();
    let script = [1, 2, 0, 3];
    let (s0, calls0) = Scripted::boxed(&script);
    let (s1, calls1) = Scripted::boxed(&script);
    let mut asr = AsrState::new(model.clone(), AsrConfig::new(1), vec![s0, s1]).unwrap();
    asr.step_tokens(&codes(2, codebooks, 3, 8, 21)).unwrap();
    asr.reset_batch_item(1).unwrap();
    assert_eq!(asr.text_tokens(1).unwrap(), &[] as &[u32]);
    assert_eq!(asr.text_tokens(0).unwrap().len(), 3);
    let after = codes(2, codebooks, 2, 8, 22);
    asr.step_tokens(&after.narrow(2, 0, 1).unwrap()).unwrap();
    // Item 1 read the start token and pads again; item 0 its last token and previous codes.
    let inputs = asr.last_inputs().unwrap();
    assert_eq!(inputs.text, vec![script[2], asr.model().text_start_token()]);
    let pad = asr.model().audio_pad_token();
    assert!(inputs.audio.iter().all(|column| column[1] == pad));
    assert!(inputs.audio.iter().any(|column| column[0] != pad));
    asr.step_tokens(&after.narrow(2, 1, 1).unwrap()).unwrap();
    assert_eq!(asr.text_tokens(1).unwrap(), &script[..2]);

    let (s, fresh_calls) = Scripted::boxed(&script);
    let mut fresh = AsrState::new(model, AsrConfig::new(1), vec![s]).unwrap();
    fresh.step_tokens(&after.narrow(0, 1, 1).unwrap()).unwrap();
    let (reset, fresh) = (calls1.lock().unwrap(), fresh_calls.lock().unwrap());
    for (x, y) in reset[3..].iter().zip(fresh.iter()) {
        assert_eq!(x.history, y.history);
        let diff = x
            .logits
            .iter()
            .zip(&y.logits)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "reset item and fresh state differ by {diff}");
    }
    assert_eq!(calls0.lock().unwrap().len(), 5);
    assert!(matches!(
        asr.reset_batch_item(2),
        Err(Error::InvalidInput { .. })
    ));
}

/// A full reset replays the same stream (samplers included).
#[test]
fn asr_reset_replays() {
    let model = random_model(&stt_like(), 5);
    let input = codes(1, model.in_audio_codebooks(), 8, 8, 31);
    let sampler = SamplingConfig::default().with_seed(3).build().unwrap();
    let mut asr = AsrState::new(model, AsrConfig::new(2), vec![sampler]).unwrap();
    let first = asr.step_tokens(&input).unwrap();
    let tokens = asr.text_tokens(0).unwrap().to_vec();
    asr.reset();
    assert_eq!(asr.model_step_idx(), 0);
    assert_eq!(asr.step_tokens(&input).unwrap(), first);
    assert_eq!(asr.text_tokens(0).unwrap(), tokens);
}

#[test]
fn asr_rejects_bad_codes_without_changing_state() {
    let model = random_model(&stt_like(), 6);
    let (codebooks, vocab) = (model.in_audio_codebooks(), model.audio_vocab_size() as u32);
    let mut asr = AsrState::greedy(model.clone(), AsrConfig::new(2), 1).unwrap();
    let good = codes(1, codebooks, 4, 8, 41);

    let rank2 = Tensor::zeros((1, codebooks), DType::U32, &Device::Cpu).unwrap();
    let fewer = Tensor::zeros((1, codebooks - 1, 2), DType::U32, &Device::Cpu).unwrap();
    let batch2 = Tensor::zeros((2, codebooks, 2), DType::U32, &Device::Cpu).unwrap();
    let floats = Tensor::zeros((1, codebooks, 2), DType::F32, &Device::Cpu).unwrap();
    let mut values = vec![0u32; codebooks * 2];
    values[2 * 3 + 1] = vocab; // codebook 3, frame 1
    let out_of_range = Tensor::from_vec(values, (1, codebooks, 2), &Device::Cpu).unwrap();

    for bad in [&rank2, &fewer, &batch2, &floats] {
        assert!(
            matches!(asr.step_tokens(bad), Err(Error::InvalidInput { .. })),
            "{:?} {:?}",
            bad.dims(),
            bad.dtype()
        );
    }
    match asr.step_tokens(&out_of_range) {
        Err(Error::TokenOutOfRange {
            input,
            token,
            vocab_size,
        }) => {
            assert_eq!((input.as_str(), token), ("codes[0][3]", vocab));
            assert_eq!(vocab_size, vocab as usize);
        }
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }
    assert_eq!(asr.model_step_idx(), 0);
    assert!(asr.last_inputs().is_none());
    // Nothing changed: the same output as a fresh state.
    let mut fresh = AsrState::greedy(model, AsrConfig::new(2), 1).unwrap();
    assert_eq!(
        asr.step_tokens(&good).unwrap(),
        fresh.step_tokens(&good).unwrap()
    );
    // No frames is no step.
    let empty = Tensor::zeros((1, codebooks, 0), DType::U32, &Device::Cpu).unwrap();
    assert_eq!(asr.step_tokens(&empty).unwrap(), vec![]);
    assert_eq!(asr.model_step_idx(), 4);
}

#[test]
fn asr_rejects_bad_construction() {
    let model = random_model(&stt_like(), 7);
    assert!(matches!(
        AsrState::new(model.clone(), AsrConfig::new(2), Vec::<BoxSampler>::new()),
        Err(Error::InvalidInput { .. })
    ));
    let mut config = AsrConfig::new(2);
    config.text_eop_token = model.text_out_vocab_size() as u32;
    assert!(matches!(
        AsrState::greedy(model.clone(), config, 1),
        Err(Error::TokenOutOfRange { .. })
    ));
    for rate in [0.0, f64::NAN, -12.5] {
        let mut config = AsrConfig::new(2);
        config.frame_rate = rate;
        assert!(matches!(
            AsrState::greedy(model.clone(), config, 1),
            Err(Error::InvalidInput { .. })
        ));
    }
    // A sampler returning a token outside the text logits is an error, not a silent token.
    let (sampler, _) = Scripted::boxed(&[model.text_out_vocab_size() as u32]);
    let mut asr = AsrState::new(model.clone(), AsrConfig::new(2), vec![sampler]).unwrap();
    let input = codes(1, model.in_audio_codebooks(), 1, 8, 1);
    assert!(matches!(
        asr.step_tokens(&input),
        Err(Error::TokenOutOfRange { .. })
    ));
}

/// A Mimi codec whose codes fit the small STT model (8 codes per codebook, 32 codebooks).
fn small_mimi(model: &LmModel) -> Mimi {
    let mut config = Mimi::small_config(model.in_audio_codebooks());
    config.quantizer_bins = model.audio_vocab_size() - 1;
    Mimi::random(config, 9, &Device::Cpu).unwrap()
}

/// PCM goes through the attached Mimi's streaming encoder: the messages are those of the
/// codes that encoder produces, frames complete only after 1920 samples, and a reset replays.
#[test]
fn asr_from_pcm() {
    let model = random_model(&stt_like(), 8);
    let mimi = small_mimi(&model);
    let frame = mimi.frame_size();
    let samples: Vec<f32> = (0..3 * frame)
        .map(|i| (i as f32 * 0.05).sin() * 0.3 + ((i * 7919) % 13) as f32 * 0.01)
        .collect();
    let pcm = Tensor::from_vec(samples, (1, 1, 3 * frame), &Device::Cpu).unwrap();

    let mut reference = mimi.clone();
    let mut by_codes = AsrState::greedy(model.clone(), AsrConfig::new(1), 1).unwrap();
    let mut expected = Vec::new();
    let mut frames = 0;
    for t in 0..3 {
        let chunk = pcm.narrow(2, t * frame, frame).unwrap();
        let codes = reference.encode_step(&chunk).unwrap().expect("a frame");
        frames += codes.dim(2).unwrap();
        expected.extend(by_codes.step_tokens(&codes).unwrap());
    }
    assert_eq!(frames, 3);

    let mut asr = AsrState::greedy(model, AsrConfig::new(1), 1)
        .unwrap()
        .with_mimi(mimi)
        .unwrap();
    let mut got = Vec::new();
    for t in 0..3 {
        // Half a frame, then the rest: nothing happens until the frame is complete.
        let first = pcm.narrow(2, t * frame, frame / 2).unwrap();
        let second = pcm
            .narrow(2, t * frame + frame / 2, frame - frame / 2)
            .unwrap();
        assert_eq!(asr.step_pcm(&first).unwrap(), vec![]);
        assert_eq!(asr.model_step_idx(), t);
        got.extend(asr.step_pcm(&second).unwrap());
    }
    assert_eq!(asr.model_step_idx(), 3);
    assert_eq!(got, expected);

    asr.reset();
    let mut again = Vec::new();
    for t in 0..3 {
        again.extend(
            asr.step_pcm(&pcm.narrow(2, t * frame, frame).unwrap())
                .unwrap(),
        );
    }
    assert_eq!(again, expected);

    let stereo = Tensor::zeros((1, 2, frame), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        asr.step_pcm(&stereo),
        Err(Error::InvalidInput { .. })
    ));
    let batch2 = Tensor::zeros((2, 1, frame), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        asr.step_pcm(&batch2),
        Err(Error::InvalidInput { .. })
    ));
}

#[test]
fn asr_pcm_needs_a_matching_mimi() {
    let model = random_model(&stt_like(), 9);
    let frame = Tensor::zeros((1, 1, 1920), DType::F32, &Device::Cpu).unwrap();
    let mut asr = AsrState::greedy(model.clone(), AsrConfig::new(1), 1).unwrap();
    assert!(matches!(
        asr.step_pcm(&frame),
        Err(Error::InvalidInput { .. })
    ));
    let too_few = Mimi::random(Mimi::small_config(4), 1, &Device::Cpu).unwrap();
    assert!(matches!(
        AsrState::greedy(model.clone(), AsrConfig::new(1), 1)
            .unwrap()
            .with_mimi(too_few),
        Err(Error::InvalidInput { .. })
    ));
    // 2048 codes per codebook cannot be read by a model with 8 audio tokens.
    let too_many_codes = Mimi::random(
        Mimi::small_config(model.in_audio_codebooks()),
        1,
        &Device::Cpu,
    )
    .unwrap();
    assert!(matches!(
        AsrState::greedy(model.clone(), AsrConfig::new(1), 1)
            .unwrap()
            .with_mimi(too_many_codes),
        Err(Error::InvalidInput { .. })
    ));
    // One item of a batch cannot be reset when a codec is attached.
    let mut batch = AsrState::greedy(model.clone(), AsrConfig::new(1), 2)
        .unwrap()
        .with_mimi(small_mimi(&model))
        .unwrap();
    assert!(matches!(
        batch.reset_batch_item(0),
        Err(Error::Unsupported { .. })
    ));
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
