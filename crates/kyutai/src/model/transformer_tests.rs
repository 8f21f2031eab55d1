//! Unit tests of the transformer.

use super::*;
use crate::LmConfig;
use candle_core::Device;

fn small_config(context: usize) -> TransformerConfig {
    let mut cfg = LmConfig::stt_2_6b_en().transformer;
    cfg.d_model = 16;
    cfg.num_heads = 2;
    cfg.num_layers = 2;
    cfg.dim_feedforward = 64;
    cfg.context = context;
    cfg
}

fn random_transformer(cfg: &TransformerConfig, seed: u64) -> Transformer {
    let mut lm = LmConfig::stt_2_6b_en();
    lm.transformer = cfg.clone();
    lm.audio_codebooks = 1;
    lm.audio_delays = None;
    lm.text_in_vocab_size = 3;
    lm.text_out_vocab_size = 2;
    let tensors = crate::random_weights(&lm, seed, DType::F32, &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Transformer::new(cfg, vb.pp("transformer")).unwrap()
}

fn input(t: usize, salt: u32) -> Tensor {
    let values: Vec<f32> = (0..t * 16)
        .map(|i| ((i as u32 * 37 + salt * 11) % 17) as f32 / 8.0 - 1.0)
        .collect();
    Tensor::from_vec(values, (1, t, 16), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn prefill_matches_step_by_step() {
    let cfg = small_config(8);
    let mut stepwise = random_transformer(&cfg, 1);
    let mut prefill = stepwise.clone();
    let xs = input(6, 3);
    let all = prefill.forward(&xs).unwrap();
    for s in 0..6 {
        let y = stepwise.forward(&xs.narrow(1, s, 1).unwrap()).unwrap();
        let diff = max_diff(&y, &all.narrow(1, s, 1).unwrap());
        assert!(diff < 1e-5, "step {s}: {diff}");
    }
}

#[test]
fn outputs_only_depend_on_the_last_context_steps() {
    // Context 3, 2 layers, one step per call: the cache holds the last 3 steps, so the
    // output at step 10 sees layer-1 outputs of steps 8..=10, which see inputs 6..=10.
    // Two streams that agree from step 6 on agree at step 10; agreeing from step 7 on is
    // not enough.
    let cfg = small_config(3);
    let base = random_transformer(&cfg, 2);
    let (xa, xb) = (input(11, 5), input(11, 9));
    let last_output_gap = |shared_from: usize| {
        let (mut a, mut b) = (base.clone(), base.clone());
        let (mut ya, mut yb) = (None, None);
        for s in 0..11 {
            let sa = xa.narrow(1, s, 1).unwrap();
            let sb = if s >= shared_from {
                sa.clone()
            } else {
                xb.narrow(1, s, 1).unwrap()
            };
            ya = Some(a.forward(&sa).unwrap());
            yb = Some(b.forward(&sb).unwrap());
        }
        max_diff(&ya.unwrap(), &yb.unwrap())
    };
    assert!(last_output_gap(6) < 1e-5);
    assert!(last_output_gap(7) > 1e-4);
}

#[test]
fn clones_and_copied_states_continue_independently() {
    let cfg = small_config(4);
    let mut a = random_transformer(&cfg, 3);
    a.forward(&input(3, 1)).unwrap();
    let mut b = random_transformer(&cfg, 3);
    b.copy_state(&a).unwrap();
    let mut c = a.clone();
    let next = input(1, 2);
    let ya = a.forward(&next).unwrap();
    let yb = b.forward(&next).unwrap();
    let yc = c.forward(&next).unwrap();
    assert!(max_diff(&ya, &yb) < 1e-6);
    assert!(max_diff(&ya, &yc) < 1e-6);
    // a diverges by two steps; c, one step behind, must not see a's new steps.
    a.forward(&input(1, 7)).unwrap();
    a.forward(&input(1, 9)).unwrap();
    let yc2 = c.forward(&input(1, 8)).unwrap();
    let mut d = random_transformer(&cfg, 3);
    d.forward(&input(3, 1)).unwrap();
    d.forward(&next).unwrap();
    let yd2 = d.forward(&input(1, 8)).unwrap();
    assert!(max_diff(&yc2, &yd2) < 1e-6);
}

#[test]
fn reset_state_restarts_the_sequence() {
    let cfg = small_config(4);
    let mut a = random_transformer(&cfg, 4);
    let first = a.forward(&input(2, 1)).unwrap();
    a.forward(&input(3, 2)).unwrap();
    a.reset_state();
    assert_eq!(a.current_seq_len(), 0);
    let again = a.forward(&input(2, 1)).unwrap();
    assert!(max_diff(&first, &again) < 1e-6);
}

#[test]
fn a_reset_batch_row_matches_a_fresh_stream() {
    let cfg = small_config(8);
    let mut batched = random_transformer(&cfg, 5);
    let two = Tensor::cat(&[input(3, 1), input(3, 2)], 0).unwrap();
    batched.forward(&two).unwrap();
    batched.reset_batch_item(1).unwrap();
    let next = Tensor::cat(&[input(1, 3), input(1, 4)], 0).unwrap();
    let y = batched.forward(&next).unwrap();
    let mut fresh = random_transformer(&cfg, 5);
    let y_fresh = fresh.forward(&input(1, 4)).unwrap();
    assert!(max_diff(&y.narrow(0, 1, 1).unwrap(), &y_fresh) < 1e-5);
    assert!(batched.reset_batch_item(2).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = small_config(4);
    let mut t = random_transformer(&cfg, 6);
    let wrong_width = Tensor::zeros((1, 1, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        t.forward(&wrong_width),
        Err(Error::InvalidInput { .. })
    ));
    let rank2 = Tensor::zeros((1, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(t.forward(&rank2), Err(Error::InvalidInput { .. })));
    let ints = Tensor::zeros((1, 1, 16), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(t.forward(&ints), Err(Error::InvalidInput { .. })));
    t.forward(&input(1, 0)).unwrap();
    let two_rows = Tensor::zeros((2, 1, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        t.forward(&two_rows),
        Err(Error::InvalidInput { .. })
    ));
    let other = random_transformer(&small_config(5), 6);
    assert!(t.copy_state(&other).is_err());
}

#[test]
fn layer_scale_of_zero_makes_the_layer_an_identity() {
    let mut cfg = small_config(4);
    cfg.layer_scale = Some(0.01);
    cfg.num_layers = 1;
    let mut lm = LmConfig::stt_2_6b_en();
    lm.transformer = cfg.clone();
    lm.audio_codebooks = 1;
    lm.audio_delays = None;
    let mut tensors = crate::random_weights(&lm, 7, DType::F32, &Device::Cpu).unwrap();
    for name in ["layer_scale_1", "layer_scale_2"] {
        let key = format!("transformer.layers.0.{name}.scale");
        assert!(tensors.contains_key(&key), "{key} must be in the inventory");
        tensors.insert(key, Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap());
    }
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let mut t = Transformer::new(&cfg, vb.pp("transformer")).unwrap();
    let x = input(2, 3);
    assert!(max_diff(&t.forward(&x).unwrap(), &x) < 1e-7);
    // And with a non-zero scale the layer does something.
    tensors.insert(
        "transformer.layers.0.layer_scale_2.scale".into(),
        Tensor::ones(16, DType::F32, &Device::Cpu).unwrap(),
    );
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let mut t = Transformer::new(&cfg, vb.pp("transformer")).unwrap();
    assert!(max_diff(&t.forward(&x).unwrap(), &x) > 1e-3);
}

#[test]
fn checkpoint_errors_name_the_full_tensor() {
    let cfg = small_config(4);
    let vb = VarBuilder::from_tensors(Default::default(), DType::F32, &Device::Cpu);
    match Transformer::new(&cfg, vb.pp("depformer").pp(3).pp("transformer")) {
        Err(Error::MissingTensor { name, expected }) => {
            assert!(
                name.starts_with("depformer.3.transformer.layers.0."),
                "{name}"
            );
            assert!(!expected.is_empty());
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn sinusoidal_embedding_follows_moshi_formula() {
    let mut cfg = small_config(4);
    cfg.positional_embedding = PositionalEmbedding::Sin;
    cfg.max_period = 10_000;
    let weights = random_transformer(&cfg, 8).weights;
    let like = Tensor::zeros((1, 1, 16), DType::F32, &Device::Cpu).unwrap();
    let emb = weights
        .sin_embedding(3, 2, &like)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let half = 8;
    for (row, p) in emb.iter().zip([3f32, 4.0]) {
        for i in 0..half {
            let f = 1.0 / 10_000f32.powf(i as f32 / (half - 1) as f32);
            assert!((row[i] - (p * f).cos()).abs() < 1e-6);
            assert!((row[half + i] - (p * f).sin()).abs() < 1e-6);
        }
    }
}
