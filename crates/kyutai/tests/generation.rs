//! Regression tests of the generation paths: `Multistream`, `LmGenerate`, `generate_audio` and
//! `BasicGenerator` take every token from the injected samplers, with the documented histories,
//! and agree with one another.

mod common;

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use kyutai::generate::audio::{generate_audio, BasicGenerator, GenOutput, GenPrompt};
use kyutai::lm_generate::{LmGenerate, LmGenerateConfig, Multistream, MultistreamConfig, Token};
use kyutai::{greedy_sampler, Error, LmModel, Mimi, Samplers};
use kyutai_sampling::{BoxSampler, Sampler, SamplingConfig, SamplingError};

/// Moshi's layout, tiny: 8 generated + 8 user codebooks of 8 codes (+ pad), text 20 (+ start),
/// delays 0/1 (acoustic delay 1).
fn model() -> LmModel {
    common::random_model(&common::moshi_like(), 11)
}

/// A Mimi that fits [`model`]: 8 codebooks of 8 codes.
fn mimi() -> Mimi {
    let mut config = Mimi::small_config(8);
    config.quantizer_bins = 8;
    Mimi::random(config, 3, &Device::Cpu).unwrap()
}

/// One call a sampler received.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    vocab: usize,
    history: Vec<u32>,
    token: u32,
}

type Log = Arc<Mutex<Vec<Call>>>;

/// A user-defined sampler: ignores the logits' values and returns `(a * n + b) % vocab` at its
/// `n`-th call, recording every call.
struct Scripted {
    a: u32,
    b: u32,
    calls: u32,
    log: Log,
}

impl Scripted {
    fn boxed(a: u32, b: u32) -> (BoxSampler, Log) {
        let log = Log::default();
        let sampler = Self {
            a,
            b,
            calls: 0,
            log: log.clone(),
        };
        (Box::new(sampler), log)
    }
}

impl Sampler for Scripted {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        let vocab = logits.dims1()?;
        let token = (self.a.wrapping_mul(self.calls).wrapping_add(self.b)) % vocab as u32;
        self.calls += 1;
        self.log.lock().unwrap().push(Call {
            vocab,
            history: history.to_vec(),
            token,
        });
        Ok(token)
    }

    fn reset(&mut self) {
        self.calls = 0;
    }
}

fn tokens_of(log: &Log) -> Vec<u32> {
    log.lock().unwrap().iter().map(|c| c.token).collect()
}

#[test]
fn generate_audio_and_basic_generator_agree() {
    let prompt = GenPrompt {
        text: vec![4, 5, 6],
        user_pcm: Some((0..5000).map(|i| (i as f32 * 0.003).sin() * 0.2).collect()),
    };
    let mut samplers = Samplers::moshi(1234).unwrap();
    let expected = generate_audio(&model(), &mut mimi(), &prompt, 12, &mut samplers).unwrap();

    let mut generator = BasicGenerator::new(
        model(),
        mimi(),
        &Device::Cpu,
        Samplers::moshi(1234).unwrap(),
    )
    .unwrap();
    let first = generator.generate(&prompt, 12).unwrap();
    assert_eq!(first, expected);
    assert_eq!(first.text_tokens.len(), 12);
    assert_eq!(&first.text_tokens[..3], &[4, 5, 6]);
    assert_eq!(
        first.audio_codes.len(),
        11,
        "frames lag by the acoustic delay"
    );
    assert_eq!(first.pcm.len(), 11 * 1920);
    assert_eq!(first.sample_rate, 24_000);

    // The samplers carry on: a second call continues their streams, like a second
    // `generate_audio` with the same samplers.
    let second = generator.generate(&prompt, 12).unwrap();
    let again = generate_audio(&model(), &mut mimi(), &prompt, 12, &mut samplers).unwrap();
    assert_eq!(second, again);
    assert_ne!(second, first, "the random streams moved on");
    // After a reset the generator replays the first call.
    generator.reset();
    assert_eq!(generator.generate(&prompt, 12).unwrap(), first);
}

fn run(samplers: Samplers, prompt: &GenPrompt) -> GenOutput {
    let mut samplers = samplers;
    generate_audio(&model(), &mut mimi(), prompt, 10, &mut samplers).unwrap()
}

#[test]
fn seeds_samplers_and_user_audio_change_the_output() {
    let prompt = GenPrompt::default();
    let base = run(Samplers::moshi(1).unwrap(), &prompt);
    assert_eq!(base, run(Samplers::moshi(1).unwrap(), &prompt));
    let other_seed = run(Samplers::moshi(2).unwrap(), &prompt);
    assert_ne!(base.text_tokens, other_seed.text_tokens);
    assert_ne!(base.audio_codes, other_seed.audio_codes);
    let greedy = run(Samplers::greedy(), &prompt);
    assert_ne!(base.audio_codes, greedy.audio_codes);
    // Only the audio sampler changes: same text seed, other audio seed.
    let text = SamplingConfig::default().with_seed(5);
    let a = run(
        Samplers::from_configs(&text, &SamplingConfig::default().with_seed(6)).unwrap(),
        &prompt,
    );
    let b = run(
        Samplers::from_configs(&text, &SamplingConfig::default().with_seed(7)).unwrap(),
        &prompt,
    );
    assert_ne!(a.audio_codes, b.audio_codes);
    // The user's stream is read: other user audio, other output under greedy decoding.
    let loud = GenPrompt {
        text: vec![],
        user_pcm: Some(
            (0..10 * 1920)
                .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
                .collect(),
        ),
    };
    let greedy_loud = run(Samplers::greedy(), &loud);
    assert_ne!(greedy.text_tokens, greedy_loud.text_tokens);
}

#[test]
fn a_user_defined_sampler_drives_generate_audio_and_basic_generator() {
    for use_generator in [false, true] {
        let (text, text_log) = Scripted::boxed(7, 3);
        let (audio, audio_log) = Scripted::boxed(5, 1);
        let samplers = Samplers::new(text, audio);
        let prompt = GenPrompt {
            text: vec![9],
            user_pcm: None,
        };
        let out = if use_generator {
            let mut generator =
                BasicGenerator::new(model(), mimi(), &Device::Cpu, samplers).unwrap();
            generator.generate(&prompt, 6).unwrap()
        } else {
            let mut samplers = samplers;
            generate_audio(&model(), &mut mimi(), &prompt, 6, &mut samplers).unwrap()
        };
        // Step 0 is forced; steps 1..6 come from the text sampler, in order.
        let text_calls = tokens_of(&text_log);
        assert_eq!(text_calls.len(), 5);
        assert_eq!(out.text_tokens[0], 9);
        assert_eq!(&out.text_tokens[1..], &text_calls[..]);
        assert_eq!(text_calls, vec![3, 10, 17, 24 - 20, 31 - 20]);
        // Every audio token is the audio sampler's: 8 calls per step, codebook order;
        // codebook 0 of frame f comes from step f, the others from step f + 1.
        let audio_calls = tokens_of(&audio_log);
        assert_eq!(audio_calls.len(), 6 * 8);
        for (f, frame) in out.audio_codes.iter().enumerate() {
            assert_eq!(frame[0], audio_calls[f * 8]);
            for k in 1..8 {
                assert_eq!(
                    frame[k],
                    audio_calls[(f + 1) * 8 + k],
                    "frame {f} codebook {k}"
                );
            }
        }
        assert!(audio_log.lock().unwrap().iter().all(|c| c.vocab == 8));
        assert!(text_log.lock().unwrap().iter().all(|c| c.vocab == 20));
    }
}

#[test]
fn a_user_defined_sampler_drives_the_multistream_state_with_per_stream_histories() {
    let (text, text_log) = Scripted::boxed(3, 2);
    let mut per_codebook = Vec::new();
    let mut logs = Vec::new();
    for k in 0..8 {
        let (sampler, log) = Scripted::boxed(0, k); // codebook k always gets k
        per_codebook.push(sampler);
        logs.push(log);
    }
    let model = model();
    let config = MultistreamConfig::from_model(&model);
    assert_eq!(config.acoustic_delay, 1, "from the model's delays");
    let mut state =
        Multistream::new(model, Samplers::per_codebook(text, per_codebook), config).unwrap();
    let user = [1u32, 2, 3, 4, 5, 6, 7, 0];
    let steps = 6;
    for _ in 0..steps {
        state.step(&user).unwrap();
    }
    // Text: the sampler's tokens, and its history is the text so far.
    let text_calls = text_log.lock().unwrap().clone();
    assert_eq!(state.text_tokens(), &tokens_of(&text_log)[..]);
    for (s, call) in text_calls.iter().enumerate() {
        assert_eq!(call.history, state.text_tokens()[..s].to_vec());
    }
    // Audio: codebook k's sampler alone chooses codebook k, and sees codebook k's history:
    // every earlier token for codebook 0, the tokens kept after the delay for the others.
    for (k, log) in logs.iter().enumerate() {
        let calls = log.lock().unwrap().clone();
        assert_eq!(calls.len(), steps);
        let k_token = k as u32;
        for (s, call) in calls.iter().enumerate() {
            let kept = if k == 0 { s } else { s.saturating_sub(1) };
            assert_eq!(call.history, vec![k_token; kept], "codebook {k} step {s}");
        }
        assert_eq!(
            state.audio_histories()[k],
            vec![k_token; calls.len() - usize::from(k > 0)]
        );
    }
    let frame = state.last_audio_tokens().unwrap();
    assert_eq!(&frame[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(&frame[8..], &user);
    assert_eq!(
        state.last_generated_audio_tokens().unwrap(),
        frame[..8].to_vec()
    );
}

#[test]
fn a_user_defined_sampler_drives_the_generic_state_with_teacher_forcing() {
    let (text, text_log) = Scripted::boxed(1, 0);
    let (audio, audio_log) = Scripted::boxed(3, 1);
    let model = model();
    let config = LmGenerateConfig::from_model(&model).unwrap();
    assert_eq!(config.audio_delays[..3], [0, 1, 1]);
    let mut state = LmGenerate::new(model, Samplers::new(text, audio), config).unwrap();
    let user: Vec<Option<Token>> = std::iter::repeat_n(None, 8)
        .chain((0..8).map(|k| Some(Token::Set(k))))
        .collect();
    // Step 0: free. Step 1: text forced to 17, codebook 0 forced to 6.
    state.set_audio_tokens(&user).unwrap();
    assert_eq!(state.step().unwrap(), Some(0));
    state.set_audio_tokens(&user).unwrap();
    state.set_text_token(Token::Set(17)).unwrap();
    let mut forced = user.clone();
    forced[0] = Some(Token::Set(6));
    state.set_audio_tokens(&forced).unwrap();
    assert_eq!(state.step().unwrap(), Some(17));
    // Step 2: literal-zero text.
    state.set_audio_tokens(&user).unwrap();
    state.set_text_token(Token::LiteralZero).unwrap();
    assert_eq!(state.step().unwrap(), None);
    state.set_audio_tokens(&user).unwrap();
    let free = state.step().unwrap();

    // The text sampler ran for steps 0 and 3 only, seeing the kept text history.
    let calls = text_log.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].history, vec![0, 17]);
    assert_eq!(free, Some(calls[1].token));
    assert_eq!(state.text_history(), &[0, 17, calls[1].token]);
    // Every generated audio position is the sampler's, except the forced one.
    let audio = tokens_of(&audio_log);
    assert_eq!(audio.len(), 4 * 8);
    let table = state.audio_tokens();
    assert_eq!(table[0][0], Token::Set(audio[0]));
    assert_eq!(table[1][0], Token::Set(6), "teacher forcing wins");
    assert_eq!(table[2][0], Token::Set(audio[16]));
    // Codebook 1 (delay 1): the token sampled at step s fills position s - 1.
    assert_eq!(table[0][1], Token::Set(audio[8 + 1]));
    assert_eq!(table[1][1], Token::Set(audio[16 + 1]));
    assert_eq!(
        state.audio_histories()[0],
        vec![audio[0], 6, audio[16], audio[24]]
    );
    assert_eq!(
        state.last_audio_tokens().unwrap().unwrap()[..2],
        [audio[16], audio[24 + 1]]
    );
}

#[test]
fn the_generic_state_needs_the_user_codebooks() {
    let model = model();
    let config = LmGenerateConfig::from_model(&model).unwrap();
    let mut state = LmGenerate::new(model, Samplers::greedy(), config).unwrap();
    state.step().unwrap(); // step 0 reads pads only
    assert!(matches!(state.step(), Err(Error::InvalidInput { .. })));
}

/// Records the logits it is given; greedy.
struct Spy {
    logits: Arc<Mutex<Vec<Vec<f32>>>>,
}

impl Sampler for Spy {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        self.logits.lock().unwrap().push(logits.to_vec1::<f32>()?);
        greedy_sampler().sample(logits, history)
    }
}

fn spied_multistream(
    configure: impl FnOnce(Multistream) -> Multistream,
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let spy = Box::new(Spy {
        logits: seen.clone(),
    });
    let model = model();
    let config = MultistreamConfig::from_model(&model);
    let mut state =
        configure(Multistream::new(model, Samplers::new(spy, greedy_sampler()), config).unwrap());
    for _ in 0..steps {
        state.step(&[0; 8]).unwrap();
    }
    let logits = seen.lock().unwrap().clone();
    (state.text_tokens().to_vec(), logits)
}

#[test]
fn the_pad_bias_reaches_every_sampler_and_the_penalty_edits_the_logits() {
    let (plain_tokens, plain) = spied_multistream(|s| s, 5);
    // Bias: the pad logit (token 3) is raised by exactly the bias, at every step, and greedy
    // decoding then picks it.
    let (biased_tokens, biased) = spied_multistream(|s| s.with_text_pad_bias(100.0).unwrap(), 5);
    assert_eq!(biased_tokens, vec![3; 5]);
    assert_eq!(biased[0][3], plain[0][3] + 100.0);
    assert_eq!(biased[0][..3], plain[0][..3]);
    assert_ne!(plain_tokens, biased_tokens);
    // Penalty 1 is an identity; another penalty changes the logits of earlier tokens.
    let (same_tokens, same) = spied_multistream(|s| s.with_repetition_penalty(8, 1.0).unwrap(), 5);
    assert_eq!((same_tokens, same), (plain_tokens.clone(), plain.clone()));
    let (_, penalised) = spied_multistream(|s| s.with_repetition_penalty(8, 3.0).unwrap(), 2);
    let first = plain_tokens[0] as usize;
    assert_eq!(penalised[0], plain[0], "nothing to penalise at step 0");
    let raw = plain[1][first];
    let expected = if raw >= 0.0 { raw / 3.0 } else { raw * 3.0 };
    assert_eq!(penalised[1][first], expected);
}

#[test]
fn guidance_runs_two_rows_and_alpha_one_is_the_plain_run() {
    let (plain_tokens, plain) = spied_multistream(|s| s, 4);
    let (cfg_tokens, cfg) = spied_multistream(|s| s.with_cfg(1.0).unwrap(), 4);
    assert_eq!(plain_tokens, cfg_tokens);
    for (a, b) in plain.iter().zip(&cfg) {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }
}

#[test]
fn bad_inputs_and_settings_are_typed_errors() {
    let m = model();
    let config = MultistreamConfig::from_model(&m);
    let mut state = Multistream::new(m.clone(), Samplers::greedy(), config.clone()).unwrap();
    assert!(matches!(
        state.step(&[0; 7]),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        state.step(&[9; 8]),
        Err(Error::TokenOutOfRange { token: 9, .. })
    ));
    assert!(matches!(
        state.step_with(Some(0), &[0; 8], Some(21)),
        Err(Error::TokenOutOfRange { token: 21, .. })
    ));
    let fresh = || Multistream::new(m.clone(), Samplers::greedy(), config.clone()).unwrap();
    assert!(fresh().with_repetition_penalty(8, 0.0).is_err());
    assert!(fresh().with_repetition_penalty(8, f32::NAN).is_err());
    // A tiny penalty (1e-40) used to be accepted and turned finite logits into +inf.
    assert!(fresh().with_repetition_penalty(8, 1e-40).is_err());
    assert!(fresh().with_repetition_penalty(8, 2e6).is_err());
    assert!(fresh().with_repetition_penalty(8, 1e-6).is_ok());
    assert!(fresh().with_cfg(f64::INFINITY).is_err());
    assert!(fresh().with_text_pad_bias(f32::NAN).is_err());
    let mut started = fresh();
    started.step(&[0; 8]).unwrap();
    assert!(started.with_cfg(1.5).is_err());
    let mut wrong = config.clone();
    wrong.input_audio_codebooks = 7;
    assert!(matches!(
        Multistream::new(m.clone(), Samplers::greedy(), wrong),
        Err(Error::InvalidConfig { .. })
    ));
    let two = Samplers::per_codebook(greedy_sampler(), vec![greedy_sampler(), greedy_sampler()]);
    assert!(matches!(
        Multistream::new(m.clone(), two, config),
        Err(Error::InvalidInput { .. })
    ));

    // generate_audio / BasicGenerator: zero steps, a Mimi that does not fit.
    let mut samplers = Samplers::greedy();
    assert!(generate_audio(&m, &mut mimi(), &GenPrompt::default(), 0, &mut samplers).is_err());
    let mut four = Mimi::small_config(4);
    four.quantizer_bins = 8;
    let four = Mimi::random(four, 0, &Device::Cpu).unwrap();
    assert!(matches!(
        BasicGenerator::new(m.clone(), four, &Device::Cpu, Samplers::greedy()),
        Err(Error::InvalidInput { .. })
    ));
    let big = Mimi::random(Mimi::small_config(8), 0, &Device::Cpu).unwrap(); // 2048 codes
    assert!(matches!(
        generate_audio(
            &m,
            &mut big.clone(),
            &GenPrompt::default(),
            3,
            &mut samplers
        ),
        Err(Error::InvalidInput { .. })
    ));
    let nan = GenPrompt {
        text: vec![],
        user_pcm: Some(vec![f32::NAN]),
    };
    assert!(matches!(
        generate_audio(&m, &mut mimi(), &nan, 3, &mut samplers),
        Err(Error::InvalidInput { .. })
    ));
    let bad_text = GenPrompt {
        text: vec![50],
        user_pcm: None,
    };
    assert!(matches!(
        generate_audio(&m, &mut mimi(), &bad_text, 3, &mut samplers),
        Err(Error::TokenOutOfRange { token: 50, .. })
    ));
    // The samplers survive a failed generation.
    assert!(generate_audio(&m, &mut mimi(), &GenPrompt::default(), 2, &mut samplers).is_ok());
}
