//! Small models shared by the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use kyutai::{LmConfig, LmModel};

/// The layout of Moshi (16 input codebooks, 8 generated) with tiny sizes: text vocabulary 20
/// (+ start), audio 8 (+ pad), d 32, 2 layers, context 4; depformer d 16, 1 layer.
pub fn moshi_like() -> LmConfig {
    let mut config = LmConfig::moshi_7b_v0_1();
    let t = &mut config.transformer;
    (
        t.d_model,
        t.num_heads,
        t.num_layers,
        t.dim_feedforward,
        t.context,
    ) = (32, 2, 2, 128, 4);
    let dep = config.depformer.as_mut().unwrap();
    let t = &mut dep.transformer;
    (t.d_model, t.num_heads, t.num_layers, t.dim_feedforward) = (16, 2, 1, 64);
    (
        config.text_in_vocab_size,
        config.text_out_vocab_size,
        config.audio_vocab_size,
    ) = (21, 20, 9);
    config
}

/// The layout of STT 1B (32 input codebooks, no depformer, 4 extra heads) with tiny sizes.
pub fn stt_like() -> LmConfig {
    let mut config = LmConfig::stt_1b_en_fr();
    let t = &mut config.transformer;
    (
        t.d_model,
        t.num_heads,
        t.num_layers,
        t.dim_feedforward,
        t.context,
    ) = (32, 2, 2, 128, 4);
    (
        config.text_in_vocab_size,
        config.text_out_vocab_size,
        config.audio_vocab_size,
    ) = (21, 20, 9);
    config
}

pub fn random_model(config: &LmConfig, seed: u64) -> LmModel {
    LmModel::random(config, seed, DType::F32, &Device::Cpu).unwrap()
}

/// Deterministic pseudo-random tokens below `vocab`.
pub fn tokens(n: usize, vocab: u32, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) % vocab)
        .collect()
}

/// One step's inputs for `rows` rows: `[rows, 1]` text and one `[rows, 1]` tensor per codebook.
pub fn step_inputs(model: &LmModel, rows: &[u32]) -> (Tensor, Vec<Option<Tensor>>) {
    let n = rows.len();
    let text: Vec<u32> = rows
        .iter()
        .map(|s| tokens(1, model.text_in_vocab_size() as u32, *s)[0])
        .collect();
    let text = Tensor::from_vec(text, (n, 1), &Device::Cpu).unwrap();
    let audio = (0..model.in_audio_codebooks())
        .map(|c| {
            let column: Vec<u32> = rows
                .iter()
                .map(|s| tokens(c + 1, model.audio_vocab_size() as u32, s + 1)[c])
                .collect();
            Some(Tensor::from_vec(column, (n, 1), &Device::Cpu).unwrap())
        })
        .collect();
    (text, audio)
}

pub fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
