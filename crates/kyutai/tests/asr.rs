//! Behaviour of the speech-to-text state ([`kyutai::asr`]) beyond parity with moshi:
//! user-defined samplers drive it, batch items are independent, and bad input is a typed error.

mod common;

use candle_core::{DType, Device, Tensor};
use kyutai::asr::{AsrConfig, AsrMessage, AsrState};
use kyutai::mimi::Mimi;
use kyutai::{Error, LmModel};
use kyutai_sampling::{BoxSampler, SamplingConfig};

use common::scripted::Scripted;
use common::{random_model, stt_like};

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
