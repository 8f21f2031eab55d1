//! [`Mimi`]: Kyutai's neural audio codec, the tokenizer of the Moshi-family models.
//!
//! Mimi turns 24 kHz mono PCM into frames of discrete codes at 12.5 Hz (one frame per
//! [`frame_size`](Mimi::frame_size) = 1920 samples, one code per codebook) and back. The
//! language models of this crate read and write those codes. This module wraps
//! `candle_transformers::models::mimi` with checked inputs: a wrong shape, dtype or an
//! out-of-range code is an [`Error`], never a panic inside candle.
//!
//! # Weights
//!
//! * [`Mimi::load`] reads Kyutai's published Hugging Face file: `model.safetensors` of the
//!   [`kyutai/mimi`](https://huggingface.co/kyutai/mimi) repository, whose tensor names are
//!   the layout candle's Mimi reads (`encoder.layers.*`, `quantizer.semantic_residual_vector_quantizer.*`,
//!   ...). It holds 32 codebooks; Moshi uses the first 8, the STT models all 32.
//! * The Mimi file shipped next to the Moshi checkpoints
//!   (`tokenizer-e351c8d8-checkpoint125.safetensors` in `kyutai/moshiko-candle-bf16`, or
//!   `mimi-pytorch-e351c8d8@125.safetensors` in the STT repositories) holds the same weights in
//!   Kyutai's native PyTorch layout (`encoder.model.*`, `quantizer.rvq_first.*`, ...), which
//!   this loader does not read: load `kyutai/mimi`'s `model.safetensors` instead, or convert
//!   the native file to that layout first (the tensors are the same; only names differ).
//! * [`Mimi::random`] builds a model of any [`MimiConfig`] with seeded random weights, and
//!   [`Mimi::small_config`] is a configuration small enough for tests and demos: the real
//!   sample rate, frame rate and frame size, a tiny network. Its output is noise.
//!
//! ```
//! use candle_core::Device;
//! use kyutai::mimi::Mimi;
//!
//! let mut mimi = Mimi::random(Mimi::small_config(4), 7, &Device::Cpu)?;
//! assert_eq!((mimi.sample_rate(), mimi.frame_size(), mimi.num_codebooks()), (24_000, 1920, 4));
//! // Two frames of codes (one row per codebook) decode to two frames of PCM.
//! let frames = vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]];
//! let pcm = mimi.decode_frames(&frames)?;
//! assert_eq!(pcm.len(), 2 * 1920);
//! // ... and encode back to one code per codebook and frame.
//! mimi.reset_state();
//! let codes = mimi.encode_pcm(&pcm)?;
//! assert_eq!((codes.len(), codes[0].len()), (2, 4));
//! # Ok::<(), kyutai::Error>(())
//! ```

use std::path::Path;

use candle_core::{DType, Device, Shape, StreamTensor, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use candle_transformers::models::mimi as candle_mimi;

use crate::{Error, Result};

/// The configuration of a Mimi model: candle's `mimi::Config`.
pub type MimiConfig = candle_mimi::Config;

/// Kyutai's Mimi codec (encoder, residual vector quantizer, decoder), streaming or not.
///
/// Shapes follow candle's Mimi: PCM is `[batch, channels, samples]` f32 (channels is 1 for
/// Kyutai's models) and codes are `[batch, num_codebooks, frames]` u32. The streaming methods
/// ([`encode_step`](Self::encode_step), [`decode_step`](Self::decode_step)) keep state between
/// calls until [`reset_state`](Self::reset_state); [`encode`](Self::encode) and
/// [`decode`](Self::decode) process a whole signal at once.
#[derive(Debug, Clone)]
pub struct Mimi {
    /// The model as built, never run: what [`reset_state`](Self::reset_state) restores.
    pristine: candle_mimi::Model,
    /// The model that holds the streaming state.
    model: candle_mimi::Model,
    device: Device,
}

impl Mimi {
    /// Loads Kyutai's Hugging Face Mimi file (`kyutai/mimi`, `model.safetensors`) onto
    /// `device` in f32, keeping the first `num_codebooks` codebooks (8 for Moshi, 32 for the
    /// STT models; at most 32). The file is read into memory. See the [module
    /// documentation](self) for the native-layout files of the LM repositories, which need a
    /// conversion first.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read, [`Error::InvalidConfig`] for
    /// `num_codebooks` 0, and candle errors for a file that lacks a tensor (a native-layout
    /// file, or more codebooks than it holds).
    pub fn load(path: impl AsRef<Path>, num_codebooks: usize, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let config = MimiConfig::v0_1(Some(num_codebooks));
        validate(&config)?;
        if let Err(source) = std::fs::metadata(path) {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        let tensors = candle_core::safetensors::load(path, device)?;
        Self::new(
            config,
            VarBuilder::from_tensors(tensors, DType::F32, device),
        )
    }

    /// Builds a model of configuration `config` from `vb` (candle's Mimi tensor layout, the
    /// layout of `kyutai/mimi`'s `model.safetensors`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a configuration this wrapper cannot run (see
    /// [`random`](Self::random)); candle errors for missing or misshapen tensors.
    pub fn new(config: MimiConfig, vb: VarBuilder) -> Result<Self> {
        validate(&config)?;
        let device = vb.device().clone();
        let model = candle_mimi::Model::new(config, vb)?;
        Ok(Self {
            pristine: model.clone(),
            model,
            device,
        })
    }

    /// A model of configuration `config` with seeded random weights, on `device` in f32: for
    /// tests and demos; its output is noise. The same seed gives the same weights. Each
    /// weight tensor is drawn from a splitmix64 stream seeded by `seed` and the tensor's name
    /// (normal deviates scaled by `1 / sqrt(fan_in)`; codebooks `N(0, 1)`, biases 0,
    /// normalisation scales 1, weight-norm gains 1, layer scales 0.01).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `config` has no codebook, an empty codebook, no or zero
    /// SEANet ratios, a frame rate that is not a whole fraction of the encoder's rate, or a
    /// transformer whose heads do not divide its width.
    pub fn random(config: MimiConfig, seed: u64, device: &Device) -> Result<Self> {
        let vb =
            VarBuilder::from_backend(Box::new(SeededWeights { seed }), DType::F32, device.clone());
        Self::new(config, vb)
    }

    /// Kyutai's Mimi layout (24 kHz, 12.5 Hz, 1920 samples per frame, 2048 codes per codebook)
    /// with a tiny network: SEANet with 4 filters and dimension 32, one transformer layer of
    /// width 32 (2 heads), quantizer dimension 8. Decoding a frame takes well under a
    /// millisecond on a CPU core; with random weights, the output is noise.
    pub fn small_config(num_codebooks: usize) -> MimiConfig {
        let mut config = MimiConfig::v0_1(Some(num_codebooks));
        config.seanet.n_filters = 4;
        config.seanet.dimension = 32;
        let t = &mut config.transformer;
        (t.d_model, t.num_heads, t.num_layers, t.dim_feedforward) = (32, 2, 1, 64);
        config.quantizer_dim = 8;
        config
    }

    /// The configuration.
    pub fn config(&self) -> &MimiConfig {
        self.model.config()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Codebooks per frame.
    pub fn num_codebooks(&self) -> usize {
        self.config().quantizer_n_q
    }

    /// Codes per codebook (valid codes are `0..cardinality`): 2048 for Kyutai's Mimi. A
    /// language model's audio vocabulary is this plus one pad token.
    pub fn cardinality(&self) -> usize {
        self.config().quantizer_bins
    }

    /// Samples per second of the PCM (24000 for Kyutai's Mimi).
    pub fn sample_rate(&self) -> u32 {
        self.config().sample_rate.round() as u32
    }

    /// Frames per second (12.5 for Kyutai's Mimi).
    pub fn frame_rate(&self) -> f64 {
        self.config().frame_rate
    }

    /// Samples per frame (1920 for Kyutai's Mimi).
    pub fn frame_size(&self) -> usize {
        frame_size(self.config())
    }

    /// PCM channels (1 for Kyutai's Mimi).
    pub fn channels(&self) -> usize {
        self.config().channels
    }

    /// Forgets the streaming state of both directions: the model is as freshly built, and
    /// gives bit for bit what a new one gives.
    ///
    /// (candle's own `reset_state` keeps its transformers' rotary-embedding positions, which
    /// shifts later results by rounding errors and fails once the positions of all calls
    /// together pass the transformer's `max_seq_len`; this wrapper restores a copy of the
    /// unused model instead. The weights are shared, so this is cheap.)
    pub fn reset_state(&mut self) {
        self.model = self.pristine.clone();
    }

    /// Encodes a whole signal: `pcm` `[batch, channels, samples]` f32 (any float dtype is
    /// converted) to codes `[batch, num_codebooks, frames]` u32, one frame per
    /// [`frame_size`](Self::frame_size) samples (a last partial frame is padded). Independent
    /// of, and leaving alone, the streaming state.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a tensor that is not `[batch, channels, samples]` with at
    /// least one frame of samples, or not a float tensor.
    pub fn encode(&mut self, pcm: &Tensor) -> Result<Tensor> {
        let pcm = self.check_pcm(pcm, "pcm", self.frame_size())?;
        Ok(self.pristine.clone().encode(&pcm)?)
    }

    /// Encodes the next chunk of a stream: `pcm` `[batch, channels, samples]`. Returns the
    /// codes of the frames completed so far (`[batch, num_codebooks, frames]`), or `None`
    /// while less than a frame has accumulated. Feeding [`frame_size`](Self::frame_size)
    /// samples per call yields one frame per call.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode), except that any non-empty chunk is accepted; the batch size
    /// must not change within a stream.
    pub fn encode_step(&mut self, pcm: &Tensor) -> Result<Option<Tensor>> {
        let pcm = self.check_pcm(pcm, "pcm", 1)?;
        let codes = self.model.encode_step(&StreamTensor::from_tensor(pcm))?;
        Ok(codes.as_option().cloned())
    }

    /// Decodes codes `[batch, num_codebooks, frames]` (u32, every code `< cardinality`) to PCM
    /// `[batch, channels, frames * frame_size]`. Independent of, and leaving alone, the
    /// streaming state.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a tensor of another rank, dtype or number of codebooks, or
    /// with no frame; [`Error::TokenOutOfRange`] for a code `>= cardinality` (the LM's pad
    /// token, for instance).
    pub fn decode(&mut self, codes: &Tensor) -> Result<Tensor> {
        let codes = self.check_codes(codes)?;
        Ok(self.pristine.clone().decode(&codes)?)
    }

    /// Decodes the next frames of a stream: codes `[batch, num_codebooks, frames]`. Returns the
    /// PCM produced so far, `[batch, channels, samples]`, or `None` when the decoder needs more
    /// frames (it does not with Kyutai's configuration: every frame gives `frame_size`
    /// samples).
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    pub fn decode_step(&mut self, codes: &Tensor) -> Result<Option<Tensor>> {
        let codes = self.check_codes(codes)?;
        let pcm = self.model.decode_step(&StreamTensor::from_tensor(codes))?;
        Ok(pcm.as_option().cloned())
    }

    /// [`encode`](Self::encode) for one mono signal in host memory: returns one entry per
    /// frame, each holding one code per codebook.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a multi-channel model or fewer samples than one frame.
    pub fn encode_pcm(&mut self, pcm: &[f32]) -> Result<Vec<Vec<u32>>> {
        self.check_mono()?;
        let tensor = Tensor::from_slice(pcm, (1, 1, pcm.len()), &self.device)?;
        let codes = self.encode(&tensor)?;
        frames_of(&codes)
    }

    /// [`decode`](Self::decode) for one stream of frames in host memory (`frames[f][k]` is the
    /// code of codebook `k` at frame `f`): returns the mono PCM.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for no frame, a frame without exactly
    /// [`num_codebooks`](Self::num_codebooks) codes or a multi-channel model;
    /// [`Error::TokenOutOfRange`] for a code `>= cardinality`.
    pub fn decode_frames(&mut self, frames: &[Vec<u32>]) -> Result<Vec<f32>> {
        self.check_mono()?;
        let tensor = self.frames_to_tensor(frames)?;
        let pcm = self.decode(&tensor)?;
        Ok(pcm.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Frames in host memory (`frames[f][k]`) as a `[1, num_codebooks, frames]` u32 tensor on
    /// the model's device, checked.
    ///
    /// # Errors
    ///
    /// As [`decode_frames`](Self::decode_frames).
    pub fn frames_to_tensor(&self, frames: &[Vec<u32>]) -> Result<Tensor> {
        let n_q = self.num_codebooks();
        if frames.is_empty() {
            return Err(Error::input("frames", "must hold at least one frame"));
        }
        let mut flat = vec![0u32; n_q * frames.len()];
        for (f, frame) in frames.iter().enumerate() {
            if frame.len() != n_q {
                return Err(Error::input(
                    format!("frames[{f}]"),
                    format!(
                        "must hold one code per codebook ({n_q}), got {}",
                        frame.len()
                    ),
                ));
            }
            for (k, &code) in frame.iter().enumerate() {
                flat[k * frames.len() + f] = code;
            }
        }
        self.check_code_values(&flat, "frames")?;
        Ok(Tensor::from_vec(
            flat,
            (1, n_q, frames.len()),
            &self.device,
        )?)
    }

    fn check_mono(&self) -> Result<()> {
        if self.channels() != 1 {
            return Err(Error::input(
                "pcm",
                format!(
                    "host-memory PCM is mono, the model has {} channels",
                    self.channels()
                ),
            ));
        }
        Ok(())
    }

    fn check_pcm(&self, pcm: &Tensor, input: &str, min_samples: usize) -> Result<Tensor> {
        let channels = self.channels();
        match pcm.dims() {
            &[b, c, t] if b > 0 && c == channels && t >= min_samples => {}
            dims => {
                return Err(Error::input(
                    input,
                    format!(
                        "must have shape [batch, {channels}, samples] with batch >= 1 and at \
                         least {min_samples} samples, got {dims:?}"
                    ),
                ))
            }
        }
        if !pcm.dtype().is_float() {
            return Err(Error::input(
                input,
                format!("must be a float tensor, got {:?}", pcm.dtype()),
            ));
        }
        Ok(pcm.to_dtype(DType::F32)?.to_device(&self.device)?)
    }

    fn check_codes(&self, codes: &Tensor) -> Result<Tensor> {
        let n_q = self.num_codebooks();
        match codes.dims() {
            &[b, k, t] if b > 0 && k == n_q && t > 0 => {}
            dims => {
                return Err(Error::input(
                    "codes",
                    format!(
                        "must have shape [batch, {n_q}, frames] with batch and frames >= 1, got {dims:?}"
                    ),
                ))
            }
        }
        if codes.dtype() != DType::U32 {
            return Err(Error::input(
                "codes",
                format!("must hold u32 codes, got {:?}", codes.dtype()),
            ));
        }
        self.check_code_values(&codes.flatten_all()?.to_vec1::<u32>()?, "codes")?;
        Ok(codes.to_device(&self.device)?)
    }

    fn check_code_values(&self, codes: &[u32], input: &str) -> Result<()> {
        let cardinality = self.cardinality();
        match codes.iter().find(|&&c| c as usize >= cardinality) {
            Some(&token) => Err(Error::TokenOutOfRange {
                input: input.to_string(),
                token,
                vocab_size: cardinality,
            }),
            None => Ok(()),
        }
    }
}

/// `codes` `[1, num_codebooks, frames]` as one `Vec` of codes per frame.
fn frames_of(codes: &Tensor) -> Result<Vec<Vec<u32>>> {
    let (_, n_q, frames) = codes.dims3()?;
    let flat = codes.flatten_all()?.to_vec1::<u32>()?;
    Ok((0..frames)
        .map(|f| (0..n_q).map(|k| flat[k * frames + f]).collect())
        .collect())
}

fn frame_size(config: &MimiConfig) -> usize {
    (config.sample_rate / config.frame_rate).round() as usize
}

/// Checks what candle's Mimi assumes without checking (it would panic or divide by zero).
fn validate(config: &MimiConfig) -> Result<()> {
    if config.quantizer_n_q == 0 {
        return Err(Error::config("quantizer_n_q", "must be at least 1"));
    }
    if config.quantizer_bins == 0 || config.quantizer_bins > u32::MAX as usize {
        return Err(Error::config(
            "quantizer_bins",
            format!("must be in 1..=u32::MAX (got {})", config.quantizer_bins),
        ));
    }
    if config.quantizer_dim == 0 {
        return Err(Error::config("quantizer_dim", "must be at least 1"));
    }
    if config.channels == 0 {
        return Err(Error::config("channels", "must be at least 1"));
    }
    let ratios = &config.seanet.ratios;
    if ratios.is_empty() || ratios.contains(&0) {
        return Err(Error::config(
            "seanet.ratios",
            format!("must be non-empty and positive (got {ratios:?})"),
        ));
    }
    let rates_ok = config.sample_rate.is_finite()
        && config.frame_rate.is_finite()
        && config.sample_rate > 0.0
        && config.frame_rate > 0.0;
    let hop: usize = ratios.iter().product();
    let stride = config.sample_rate / hop as f64 / config.frame_rate;
    if !rates_ok || stride < 1.0 || stride.fract() != 0.0 {
        return Err(Error::config(
            "frame_rate",
            format!(
                "must divide the encoder's rate sample_rate / prod(ratios) = {} / {hop} a whole \
                 number of times (got frame_rate {})",
                config.sample_rate, config.frame_rate
            ),
        ));
    }
    if config.seanet.dimension == 0 || config.seanet.n_filters == 0 {
        return Err(Error::config(
            "seanet",
            "dimension and n_filters must be at least 1",
        ));
    }
    let t = &config.transformer;
    if t.d_model == 0 || t.num_heads == 0 || t.d_model % t.num_heads != 0 {
        return Err(Error::config(
            "transformer",
            format!(
                "num_heads ({}) must divide d_model ({})",
                t.num_heads, t.d_model
            ),
        ));
    }
    Ok(())
}

/// A `VarBuilder` backend that makes up every tensor it is asked for, from a seed and the
/// tensor's name (so the order of requests does not matter).
struct SeededWeights {
    seed: u64,
}

impl SimpleBackend for SeededWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let constant = match leaf {
            "cluster_usage" | "initialized" | "weight_g" => Some(1.0),
            "bias" => Some(0.0),
            "scale" => Some(0.01),
            _ if shape.rank() == 1 && name.contains("norm") => Some(1.0),
            _ => None,
        };
        if let Some(value) = constant {
            return Tensor::full(value, shape, device)?.to_dtype(dtype);
        }
        let count = shape.elem_count();
        let std = if leaf == "embed_sum" {
            1.0
        } else {
            let fan_in = match shape.dims().first() {
                Some(&rows) if shape.rank() >= 2 && rows > 0 => (count / rows).max(1),
                _ => 1,
            };
            1.0 / (fan_in as f64).sqrt()
        };
        let mut state = self.seed ^ fnv1a(name);
        let values: Vec<f32> = (0..count)
            .map(|_| (normal(&mut state) * std) as f32)
            .collect();
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random Mimi weights need a shape for `{name}`")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal deviate (Box–Muller, cosine branch).
fn normal(state: &mut u64) -> f64 {
    let uniform = |state: &mut u64| (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64;
    let u1 = uniform(state).max(f64::MIN_POSITIVE);
    let u2 = uniform(state);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let path =
            std::env::temp_dir().join(format!("kyutai-mimi-{}.safetensors", std::process::id()));
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
}
