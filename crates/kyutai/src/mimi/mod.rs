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

use candle_core::{DType, Device, StreamTensor, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::mimi as candle_mimi;

use crate::{Error, Result};

mod checkpoint;
mod random;
mod validate;
use checkpoint::FloatTensors;
use random::SeededWeights;
use validate::validate;

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
        Self::from_tensors(config, tensors, device)
    }

    /// Builds a model of configuration `config` from a checkpoint's tensors (candle's Mimi
    /// layout), in f32 on `device`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and [`Error::TensorDType`] naming the first tensor the model
    /// reads that is not a float tensor (candle would convert it without a word).
    pub fn from_tensors(
        config: MimiConfig,
        tensors: std::collections::HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let backend = FloatTensors::new(tensors);
        let vb = VarBuilder::from_backend(Box::new(backend.clone()), DType::F32, device.clone());
        Self::new(config, vb).map_err(|e| match backend.integer_tensor() {
            Some((name, found)) => Error::TensorDType { name, found },
            None => e,
        })
    }

    /// Builds a model of configuration `config` from `vb` (candle's Mimi tensor layout, the
    /// layout of `kyutai/mimi`'s `model.safetensors`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a configuration this wrapper cannot run (see
    /// [`random`](Self::random)); candle errors for missing or misshapen tensors.
    ///
    /// Every size is bounded, with checked arithmetic, before anything is built:
    ///
    /// | bound | value | bounds |
    /// | --- | --- | --- |
    /// | codebooks | 1..=1024 | `quantizer_n_q` |
    /// | codes per codebook | 1..=2^24 | `quantizer_bins` |
    /// | widths | 1..=4096 | `quantizer_dim`, `seanet.dimension`, `transformer.d_model`, `seanet.n_filters * 2^ratios.len()` |
    /// | codebook elements | 2^28 | `quantizer_n_q * quantizer_bins * quantizer_dim` |
    /// | channels | 1..=16 | `channels` |
    /// | SEANet ratios | 1 to 8, each 1..=1024, product at most 65 536 | `seanet.ratios` |
    /// | kernels | 1..=1024 | `seanet.*kernel_size` |
    /// | residual layers | 0..=16, `dilation_base^(layers - 1)` at most 65 536 | `seanet.n_residual_layers`, `dilation_base` |
    /// | compression | 1..=`n_filters` | `seanet.compress` |
    /// | frame size | 1..=65 536 samples, sample rate at most 1 MHz | `sample_rate / frame_rate` |
    /// | transformer | 1..=64 layers, feed-forward 1..=16 384, context and `max_seq_len` 1..=65 536, `kv_repeat` 1 | `transformer.*` |
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
    /// SEANet ratios, a frame rate that is not a whole fraction of the encoder's rate, a
    /// transformer whose heads do not divide its width, or any size above the bounds of the
    /// table in [`new`](Self::new); [`Error::Unsupported`] for transformer features candle's
    /// Mimi does not run.
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
    /// least one frame of samples, not a float tensor, or holding a NaN or infinite sample.
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
    /// [`Error::InvalidInput`] for a multi-channel model, fewer samples than one frame or a
    /// sample that is not finite.
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
        let pcm = pcm.to_dtype(DType::F32)?.to_device(&self.device)?;
        // `x - x` is 0 for a finite sample and NaN for NaN and infinities: one reduction on the
        // device, the samples are read back only to name the first bad one.
        let probe = pcm.sub(&pcm)?.sum_all()?.to_scalar::<f32>()?;
        if !probe.is_finite() {
            let flat = pcm.flatten_all()?.to_vec1::<f32>()?;
            let bad = flat.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(Error::input(
                input,
                format!(
                    "sample {bad} (flattened) is {}: PCM must be finite",
                    flat.get(bad).copied().unwrap_or(f32::NAN)
                ),
            ));
        }
        Ok(pcm)
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
        crate::error::check_tokens(codes, input, self.cardinality())
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

#[cfg(test)]
mod tests;
