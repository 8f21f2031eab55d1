//! Unit tests of the Mimi wrapper.

use super::*;
use candle_core::Shape;
use candle_nn::var_builder::SimpleBackend;

fn small(n_q: usize) -> Mimi {
    let mut config = Mimi::small_config(n_q);
    config.quantizer_bins = 16;
    Mimi::random(config, 1, &Device::Cpu).unwrap()
}

fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * 0.01).sin() * 0.3).collect()
}

#[test]
fn layout_numbers() {
    let mimi = small(3);
    assert_eq!(mimi.num_codebooks(), 3);
    assert_eq!(mimi.cardinality(), 16);
    assert_eq!(mimi.sample_rate(), 24_000);
    assert_eq!(mimi.frame_rate(), 12.5);
    assert_eq!(mimi.frame_size(), 1920);
    assert_eq!(Mimi::small_config(8).quantizer_bins, 2048);
}

#[test]
fn decode_gives_a_frame_of_finite_samples_per_frame() {
    let mut mimi = small(4);
    let frames: Vec<Vec<u32>> = (0..5).map(|f| vec![f, 15 - f, 3, 9]).collect();
    let pcm = mimi.decode_frames(&frames).unwrap();
    assert_eq!(pcm.len(), 5 * 1920);
    assert!(pcm.iter().all(|x| x.is_finite()));
    assert!(pcm.iter().any(|&x| x != 0.0), "the decoder is not silent");
}

#[test]
fn encode_gives_one_frame_per_1920_samples_within_the_cardinality() {
    let mut mimi = small(4);
    let codes = mimi.encode_pcm(&ramp(3 * 1920)).unwrap();
    assert_eq!(codes.len(), 3);
    assert!(codes
        .iter()
        .all(|f| f.len() == 4 && f.iter().all(|&c| c < 16)));
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let frames = vec![vec![1, 2], vec![3, 4]];
    let config = || {
        let mut c = Mimi::small_config(2);
        c.quantizer_bins = 16;
        c
    };
    let a = Mimi::random(config(), 5, &Device::Cpu)
        .unwrap()
        .decode_frames(&frames)
        .unwrap();
    let b = Mimi::random(config(), 5, &Device::Cpu)
        .unwrap()
        .decode_frames(&frames)
        .unwrap();
    let c = Mimi::random(config(), 6, &Device::Cpu)
        .unwrap()
        .decode_frames(&frames)
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn streaming_decode_matches_batch_decode() {
    let mut mimi = small(2);
    let frames: Vec<Vec<u32>> = (0..4).map(|f| vec![f * 3 % 16, f * 5 % 16]).collect();
    let whole = mimi.decode_frames(&frames).unwrap();
    mimi.reset_state();
    let mut streamed = Vec::new();
    for frame in &frames {
        let codes = mimi.frames_to_tensor(std::slice::from_ref(frame)).unwrap();
        if let Some(pcm) = mimi.decode_step(&codes).unwrap() {
            assert_eq!(pcm.dims(), &[1, 1, 1920]);
            streamed.extend(pcm.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
    assert_eq!(streamed.len(), whole.len());
    let diff = streamed
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "streamed and whole decoding differ by {diff}");
}

#[test]
fn streaming_encode_yields_one_frame_per_frame_of_samples() {
    let mut mimi = small(3);
    let pcm = ramp(4 * 1920);
    let whole = mimi.encode_pcm(&pcm).unwrap();
    mimi.reset_state();
    let mut streamed = Vec::new();
    for chunk in pcm.chunks(1920) {
        let t = Tensor::from_slice(chunk, (1, 1, chunk.len()), &Device::Cpu).unwrap();
        let codes = mimi.encode_step(&t).unwrap().expect("one frame per call");
        assert_eq!(codes.dims(), &[1, 3, 1]);
        streamed.extend(frames_of(&codes).unwrap());
    }
    assert_eq!(streamed, whole);
    // Half a frame is not enough for a frame.
    mimi.reset_state();
    let half = Tensor::from_slice(&pcm[..960], (1, 1, 960), &Device::Cpu).unwrap();
    assert!(mimi.encode_step(&half).unwrap().is_none());
}

#[test]
fn reset_and_whole_signal_calls_are_exact() {
    let mut mimi = small(4);
    let frames: Vec<Vec<u32>> = (0..6).map(|f| vec![f, 2 * f % 16, 3, 15 - f]).collect();
    let stream = |mimi: &mut Mimi| -> Vec<f32> {
        mimi.reset_state();
        let mut pcm = Vec::new();
        for frame in &frames {
            let codes = mimi.frames_to_tensor(std::slice::from_ref(frame)).unwrap();
            let out = mimi.decode_step(&codes).unwrap().unwrap();
            pcm.extend(out.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        pcm
    };
    // Streaming after a reset is bit for bit the first stream, and a whole-signal call in
    // the middle of a stream neither depends on nor disturbs it.
    let first = stream(&mut mimi);
    let whole = mimi.decode_frames(&frames).unwrap();
    assert_eq!(stream(&mut mimi), first);
    assert_eq!(mimi.decode_frames(&frames).unwrap(), whole);
    let codes = mimi.encode_pcm(&whole).unwrap();
    assert_eq!(mimi.encode_pcm(&whole).unwrap(), codes);
    mimi.reset_state();
    let half = mimi.frames_to_tensor(&frames[..3]).unwrap();
    let a = mimi.decode_step(&half).unwrap().unwrap();
    assert_eq!(mimi.decode_frames(&frames).unwrap(), whole);
    mimi.reset_state();
    let b = mimi.decode_step(&half).unwrap().unwrap();
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut mimi = small(2);
    let dev = Device::Cpu;
    // Wrong ranks, channel counts, dtypes, too short.
    for pcm in [
        Tensor::zeros(1920, DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 2, 1920), DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 1, 1920), DType::U32, &dev).unwrap(),
        Tensor::zeros((1, 1, 100), DType::F32, &dev).unwrap(),
        Tensor::zeros((0, 1, 1920), DType::F32, &dev).unwrap(),
    ] {
        assert!(
            matches!(mimi.encode(&pcm), Err(Error::InvalidInput { .. })),
            "{:?}",
            pcm.shape()
        );
    }
    assert!(matches!(
        mimi.encode_step(&Tensor::zeros((1, 1, 0), DType::F32, &dev).unwrap()),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        mimi.encode_pcm(&[0.0; 10]),
        Err(Error::InvalidInput { .. })
    ));
    // Codes: wrong codebook count, dtype, no frame, out of range.
    for codes in [
        Tensor::zeros((1, 3, 2), DType::U32, &dev).unwrap(),
        Tensor::zeros((1, 2, 2), DType::F32, &dev).unwrap(),
        Tensor::zeros((1, 2, 0), DType::U32, &dev).unwrap(),
        Tensor::zeros((2, 2), DType::U32, &dev).unwrap(),
    ] {
        assert!(matches!(
            mimi.decode(&codes),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            mimi.decode_step(&codes),
            Err(Error::InvalidInput { .. })
        ));
    }
    let pad = Tensor::full(16u32, (1, 2, 1), &dev).unwrap();
    assert!(matches!(
        mimi.decode(&pad),
        Err(Error::TokenOutOfRange {
            token: 16,
            vocab_size: 16,
            ..
        })
    ));
    assert!(matches!(
        mimi.decode_frames(&[vec![1, 16]]),
        Err(Error::TokenOutOfRange { token: 16, .. })
    ));
    assert!(matches!(
        mimi.decode_frames(&[vec![1]]),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        mimi.decode_frames(&[]),
        Err(Error::InvalidInput { .. })
    ));
}

#[test]
fn bad_configs_are_typed_errors() {
    let dev = Device::Cpu;
    let mut no_codebook = Mimi::small_config(1);
    no_codebook.quantizer_n_q = 0;
    let mut bad_rate = Mimi::small_config(1);
    bad_rate.frame_rate = 7.0;
    let mut bad_heads = Mimi::small_config(1);
    bad_heads.transformer.num_heads = 3;
    let mut no_ratio = Mimi::small_config(1);
    no_ratio.seanet.ratios = vec![];
    for config in [no_codebook, bad_rate, bad_heads, no_ratio] {
        assert!(matches!(
            Mimi::random(config, 0, &dev),
            Err(Error::InvalidConfig { .. })
        ));
    }
    assert!(matches!(
        Mimi::load("/nonexistent/mimi.safetensors", 8, &dev),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        Mimi::load("/nonexistent/mimi.safetensors", 0, &dev),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn load_reads_a_file_in_candles_layout() {
    // Save the seeded weights of a tiny model under candle's names, then load them with a
    // VarBuilder over the file's tensors: same PCM.
    let mut config = Mimi::small_config(2);
    config.quantizer_bins = 16;
    let mut random = Mimi::random(config.clone(), 3, &Device::Cpu).unwrap();
    let frames = vec![vec![1, 2], vec![3, 4]];
    let expected = random.decode_frames(&frames).unwrap();
    // Collect the tensors the model asked for by building it against a recording backend.
    let recorder = Recording::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    Mimi::new(config.clone(), vb).unwrap();
    let tensors = recorder.tensors.lock().unwrap().clone();
    assert!(tensors
        .keys()
        .any(|k| k.starts_with("quantizer.semantic_residual_vector_quantizer.")));
    let path = std::env::temp_dir().join(format!("kyutai-mimi-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let loaded = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut mimi = Mimi::new(
        config,
        VarBuilder::from_tensors(loaded, DType::F32, &Device::Cpu),
    )
    .unwrap();
    assert_eq!(mimi.decode_frames(&frames).unwrap(), expected);
}

#[test]
fn integer_checkpoint_tensors_are_rejected_by_name() {
    // candle's own backend converts an integer tensor to f32 without a word.
    let mut config = Mimi::small_config(2);
    config.quantizer_bins = 16;
    let recorder = Recording::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
    Mimi::new(config.clone(), vb).unwrap();
    let mut tensors = recorder.tensors.lock().unwrap().clone();
    let mut frames_ok = Mimi::from_tensors(config.clone(), tensors.clone(), &Device::Cpu).unwrap();
    assert_eq!(frames_ok.decode_frames(&[vec![1, 2]]).unwrap().len(), 1920);
    let name = tensors
        .keys()
        .find(|k| k.starts_with("decoder."))
        .unwrap()
        .clone();
    let as_int = tensors[&name].to_dtype(DType::I64).unwrap();
    tensors.insert(name.clone(), as_int);
    match Mimi::from_tensors(config.clone(), tensors.clone(), &Device::Cpu) {
        Err(Error::TensorDType { name: n, found }) => {
            assert_eq!((n, found), (name.clone(), DType::I64));
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A missing tensor is still candle's error, not a dtype one.
    tensors.remove(&name);
    assert!(matches!(
        Mimi::from_tensors(config, tensors, &Device::Cpu),
        Err(Error::Candle(_))
    ));
}

/// Draws tensors like `SeededWeights` (seed 3) and remembers them.
#[derive(Clone, Default)]
struct Recording {
    tensors: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Tensor>>>,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = SeededWeights { seed: 3 }.get(shape, name, hints, dtype, device)?;
        self.tensors
            .lock()
            .unwrap()
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}
