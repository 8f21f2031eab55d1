//! [`LmModel`]: the Moshi-family language model.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use super::depformer::Depformer;
use super::embeddings::TokenEmbedding;
use super::norm::Norm;
use super::transformer::{check_batch, check_hidden, StreamingState, TransformerWeights};
use super::weights::{check_float_tensors, linear, WeightSource};
use crate::config::LmConfig;
use crate::error::check_tokens;
use crate::{Error, Result};

/// The weights of a model, shared by its clones.
#[derive(Debug)]
pub(crate) struct LmWeights {
    config: LmConfig,
    text_emb: TokenEmbedding,
    audio_embs: Vec<TokenEmbedding>,
    transformer: TransformerWeights,
    out_norm: Norm,
    text_linear: Linear,
    extra_heads: Vec<Linear>,
    depformer: Option<Depformer>,
    dtype: DType,
    device: Device,
}

impl LmWeights {
    /// Validates `config` and reads every tensor it implies from `src` (the checkpoint root).
    pub(crate) fn load(config: &LmConfig, src: &WeightSource) -> Result<Self> {
        config.validate()?;
        let d = config.transformer.d_model;
        let depformer = Depformer::load(config, &src.pp("depformer"))?;
        let text_emb =
            TokenEmbedding::load(&src.pp("text_emb"), config.text_in_vocab_size, d, None)?;
        let out_norm = Norm::load(d, config.transformer.norm, &src.pp("out_norm"))?;
        let text_linear = linear(&src.pp("text_linear"), d, config.text_out_vocab_size, false)?;
        let transformer = TransformerWeights::load(&config.transformer, &src.pp("transformer"))?;
        let audio_embs = (0..config.audio_codebooks)
            .map(|i| TokenEmbedding::load(&src.pp("emb").pp(i), config.audio_vocab_size, d, None))
            .collect::<Result<Vec<_>>>()?;
        let extra_heads = match config.extra_heads {
            Some(heads) => (0..heads.num_heads)
                .map(|i| linear(&src.pp("extra_heads").pp(i), d, heads.dim, false))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            config: config.clone(),
            text_emb,
            audio_embs,
            transformer,
            out_norm,
            text_linear,
            extra_heads,
            depformer,
            dtype: src.dtype(),
            device: src.device(),
        })
    }
}

/// The output of [`LmModel::forward_asr`].
#[derive(Debug, Clone)]
pub struct AsrOutput {
    /// Text logits, `[batch, steps, text_out_vocab_size]`.
    pub text_logits: Tensor,
    /// The temporal transformer's output after `out_norm`, `[batch, steps, d_model]`.
    pub hidden: Tensor,
    /// Each extra head's raw output, `[batch, steps, dim]` (logits; see
    /// [`extra_head_probs`](Self::extra_head_probs)).
    pub extra_heads: Vec<Tensor>,
}

impl AsrOutput {
    /// Each extra head's output as probabilities: a softmax over its last dimension, in f32,
    /// as moshi's ASR state reports them.
    ///
    /// # Errors
    ///
    /// Candle errors only.
    pub fn extra_head_probs(&self) -> Result<Vec<Tensor>> {
        self.extra_heads
            .iter()
            .map(|h| Ok(candle_nn::ops::softmax_last_dim(&h.to_dtype(DType::F32)?)?))
            .collect()
    }
}

/// A Moshi-family speech-text language model, as in Kyutai's `moshi` 0.6.4.
///
/// At every step (80 ms of audio, 12.5 Hz) the model reads one text token and one token per
/// input audio codebook, sums their embeddings, runs the temporal transformer (with its KV
/// cache) and predicts the next text token's logits. Models that generate audio (Moshi, TTS)
/// then run the depformer, which samples the step's audio tokens codebook by codebook.
///
/// * **State.** The model holds the streaming state (KV caches) of its transformers. Every
///   [`forward`](Self::forward) appends its steps; [`reset_state`](Self::reset_state) starts
///   over.
/// * **Clones** are cheap: the weights are shared (`Arc`), the state is copied on write, so a
///   clone continues independently of the original.
/// * **Batches.** Inputs have shape `[batch, steps]`; rows are independent streams (classifier-
///   free guidance runs the conditioned and unconditioned streams as two rows).
/// * **Tokens** are never chosen here: the model computes logits and hidden states, and the
///   depformer asks a token-picking callback for each codebook
///   ([`depformer_step_with`](Self::depformer_step_with)). The generation layer
///   (`kyutai::generate`) turns logits into tokens through injected samplers, with
///   [`sample_from_logits`](Self::sample_from_logits) and
///   [`depformer_sample`](Self::depformer_sample).
///
/// ```
/// use candle_core::{DType, Device};
/// use kyutai::{LmConfig, LmModel};
///
/// // A small model with the layout of Moshi (random weights: its output is noise).
/// let mut config = LmConfig::moshi_7b_v0_1();
/// (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
/// let depformer = config.depformer.as_mut().unwrap();
/// (depformer.transformer.d_model, depformer.transformer.num_heads, depformer.transformer.num_layers) = (16, 2, 1);
/// (config.text_in_vocab_size, config.text_out_vocab_size, config.audio_vocab_size) = (101, 100, 33);
/// let mut model = LmModel::random(&config, 42, DType::F32, &Device::Cpu)?;
///
/// let pads = [model.audio_pad_token()];
/// let audio = vec![Some(&pads[..]); model.in_audio_codebooks()];
/// let (logits, hidden) = model.forward_tokens(Some(&[model.text_start_token()]), &audio)?;
/// assert_eq!(logits.dims(), &[1, 1, 100]);
/// // The depformer asks the callback for each codebook's token (here: always token 5).
/// let audio_tokens = model.depformer_step_with(&hidden, Some(7), &[], None, |_, logits| {
///     assert_eq!(logits.dims(), &[32]);
///     Ok(5)
/// })?;
/// assert_eq!(audio_tokens, vec![5; 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LmModel {
    weights: Arc<LmWeights>,
    temporal: StreamingState,
    depformer: Option<StreamingState>,
}

impl LmModel {
    /// Builds a model of configuration `config` from `vb`, which must hold Kyutai's candle
    /// layout at its root: `text_emb.weight`, `emb.{i}.weight`, `transformer.layers.{l}.*`,
    /// `out_norm.alpha`, `text_linear.weight`, `extra_heads.{j}.weight` and
    /// `depformer.{k}.{emb,linear_in,linear_out,transformer}.*`. The model runs in `vb`'s dtype
    /// and on its device. Tensors the configuration does not use are ignored.
    ///
    /// For a large checkpoint, a memory-mapped `VarBuilder` avoids reading the file into memory:
    /// `unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, &device)? }` (the file must
    /// not change while the model is alive).
    ///
    /// # Errors
    ///
    /// The configuration errors of [`LmConfig::validate`]; [`Error::MissingTensor`] and
    /// [`Error::TensorShape`], which name the tensor and both shapes, when the checkpoint does
    /// not match the configuration.
    pub fn new(config: &LmConfig, vb: VarBuilder) -> Result<Self> {
        let weights = LmWeights::load(config, &WeightSource::new(vb))?;
        Ok(Self::from_weights(weights))
    }

    /// Reads a safetensors checkpoint into memory and builds the model on `device`, converting
    /// the weights to `dtype` (f32, f16 or bf16); see [`new`](Self::new).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read, candle errors for a malformed file,
    /// [`Error::TensorDType`] naming the first tensor the model reads that does not hold
    /// floats (integer tensors are not converted), then as [`new`](Self::new).
    pub fn load(
        config: &LmConfig,
        path: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let path = path.as_ref();
        if let Err(source) = std::fs::metadata(path) {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        // The names the configuration reads (recorded without allocating), checked first.
        let (recorder, specs) = WeightSource::recorder(DType::F32, &Device::Cpu);
        LmWeights::load(config, &recorder)?;
        let tensors = candle_core::safetensors::load(path, device)?;
        check_float_tensors(&specs.borrow(), &tensors)?;
        Self::new(config, VarBuilder::from_tensors(tensors, dtype, device))
    }

    fn from_weights(weights: LmWeights) -> Self {
        let temporal = weights.transformer.new_state();
        let depformer = weights.depformer.as_ref().and_then(Depformer::new_state);
        Self {
            weights: Arc::new(weights),
            temporal,
            depformer,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LmConfig {
        &self.weights.config
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.weights.device
    }

    /// The dtype the model runs in.
    pub fn dtype(&self) -> DType {
        self.weights.dtype
    }

    /// The text start token, fed at the first step: `text_in_vocab_size - 1`.
    pub fn text_start_token(&self) -> u32 {
        self.config().text_start_token()
    }

    /// The audio pad (and initial) token: `audio_vocab_size - 1`. The depformer never
    /// generates it.
    pub fn audio_pad_token(&self) -> u32 {
        self.config().audio_pad_token()
    }

    /// Rows of the text embedding (valid text input tokens are `0..text_in_vocab_size`).
    pub fn text_in_vocab_size(&self) -> usize {
        self.config().text_in_vocab_size
    }

    /// Length of the text logits.
    pub fn text_out_vocab_size(&self) -> usize {
        self.config().text_out_vocab_size
    }

    /// Rows of each audio embedding (valid audio input tokens are `0..audio_vocab_size`).
    pub fn audio_vocab_size(&self) -> usize {
        self.config().audio_vocab_size
    }

    /// Input audio codebooks: the length of `audio` in [`forward`](Self::forward).
    pub fn in_audio_codebooks(&self) -> usize {
        self.weights.audio_embs.len()
    }

    /// Audio codebooks the depformer generates per step (0 without a depformer).
    pub fn generated_audio_codebooks(&self) -> usize {
        self.weights
            .depformer
            .as_ref()
            .map_or(0, Depformer::num_slices)
    }

    /// Per-codebook delays of the input audio codebooks, when the configuration has them.
    pub fn audio_delays(&self) -> Option<&[usize]> {
        self.config().audio_delays.as_deref()
    }

    /// Number of extra heads (see [`forward_asr`](Self::forward_asr)).
    pub fn extra_heads_count(&self) -> usize {
        self.weights.extra_heads.len()
    }

    /// Steps processed since the last reset.
    pub fn current_seq_len(&self) -> usize {
        self.temporal.current_seq_len()
    }

    /// Forgets every step: the next [`forward`](Self::forward) starts a new sequence (with any
    /// batch size).
    pub fn reset_state(&mut self) {
        self.temporal.reset();
        if let Some(state) = &mut self.depformer {
            state.reset();
        }
    }

    /// Makes batch row `index` start a new sequence at the next step; the other rows keep
    /// theirs (for batched streaming, as moshi's `reset_batch_idx`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when there is no such row.
    pub fn reset_batch_item(&mut self, index: usize) -> Result<()> {
        self.temporal.reset_batch_item(index)
    }

    /// Replaces this model's streaming state by a copy of `other`'s (cheap: copied on write).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the two models do not have the same configuration.
    pub fn copy_state_from(&mut self, other: &Self) -> Result<()> {
        if !Arc::ptr_eq(&self.weights, &other.weights) && self.config() != other.config() {
            return Err(Error::input("other", "has a different configuration"));
        }
        self.temporal = other.temporal.clone();
        Ok(())
    }

    /// One call of the temporal transformer: `text` (`[batch, steps]` u32, or `None`) and one
    /// entry per input audio codebook (`[batch, steps]` u32, or `None`) are embedded and summed
    /// (an absent input adds nothing; with no input at all the sum is zero, `[1, 1, d]`), run
    /// through the transformer (the steps are appended to the state; several steps are masked
    /// causally) and `out_norm`. Returns `(text_logits, hidden)`: `[batch, steps,
    /// text_out_vocab_size]` and `[batch, steps, d_model]`, in the model's dtype.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `audio` does not have [`in_audio_codebooks`](Self::in_audio_codebooks)
    /// entries, an input is not a `[batch, steps]` u32 tensor, the inputs disagree on their
    /// shape, or the batch size differs from the state's; [`Error::TokenOutOfRange`] for a
    /// token outside its embedding table.
    pub fn forward(
        &mut self,
        text: Option<&Tensor>,
        audio: &[Option<Tensor>],
    ) -> Result<(Tensor, Tensor)> {
        self.check_audio_len(audio.len())?;
        let mut shape = None;
        let text = match text {
            Some(ids) => {
                Some(self.check_ids(ids, "text", self.text_in_vocab_size(), &mut shape)?)
            }
            None => None,
        };
        let audio = audio
            .iter()
            .enumerate()
            .map(|(i, ids)| match ids {
                Some(ids) => Ok(Some(self.check_ids(
                    ids,
                    &format!("audio[{i}]"),
                    self.audio_vocab_size(),
                    &mut shape,
                )?)),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let (b, t) = shape.map_or((1, 1), |(b, t, _)| (b, t));
        self.forward_checked(text.as_ref(), &audio, b, t)
    }

    /// [`forward`](Self::forward) for one step given as token slices: `text[row]` and
    /// `audio[codebook][row]`, every present slice holding one token per batch row.
    ///
    /// # Errors
    ///
    /// As `forward`; the slices must all have the same, non-zero length.
    pub fn forward_tokens(
        &mut self,
        text: Option<&[u32]>,
        audio: &[Option<&[u32]>],
    ) -> Result<(Tensor, Tensor)> {
        self.check_audio_len(audio.len())?;
        let mut rows: Option<(usize, String)> = None;
        let mut to_tensor = |tokens: &[u32], input: String, vocab: usize| -> Result<Tensor> {
            if tokens.is_empty() {
                return Err(Error::input(
                    input,
                    "must hold one token per batch row, got none",
                ));
            }
            match &rows {
                Some((n, first)) if *n != tokens.len() => {
                    return Err(Error::input(
                        input,
                        format!("has {} rows, `{first}` has {n}", tokens.len()),
                    ))
                }
                Some(_) => {}
                None => rows = Some((tokens.len(), input.clone())),
            }
            check_tokens(tokens, &input, vocab)?;
            Ok(Tensor::from_slice(
                tokens,
                (tokens.len(), 1),
                self.device(),
            )?)
        };
        let text = match text {
            Some(tokens) => Some(to_tensor(tokens, "text".into(), self.text_in_vocab_size())?),
            None => None,
        };
        let audio = audio
            .iter()
            .enumerate()
            .map(|(i, tokens)| match tokens {
                Some(tokens) => Ok(Some(to_tensor(
                    tokens,
                    format!("audio[{i}]"),
                    self.audio_vocab_size(),
                )?)),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let b = rows.map_or(1, |(n, _)| n);
        self.forward_checked(text.as_ref(), &audio, b, 1)
    }

    /// [`forward`](Self::forward) plus the extra heads (the voice-activity heads of the STT
    /// models) on the hidden states: moshi's ASR step.
    ///
    /// # Errors
    ///
    /// As `forward`.
    pub fn forward_asr(
        &mut self,
        text: Option<&Tensor>,
        audio: &[Option<Tensor>],
    ) -> Result<AsrOutput> {
        let (text_logits, hidden) = self.forward(text, audio)?;
        let extra_heads = self.extra_heads(&hidden)?;
        Ok(AsrOutput {
            text_logits,
            hidden,
            extra_heads,
        })
    }

    /// The extra heads' raw outputs on `hidden` (`[batch, steps, d_model]`), one
    /// `[batch, steps, dim]` tensor per head.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `hidden` does not have the model's width.
    pub fn extra_heads(&self, hidden: &Tensor) -> Result<Vec<Tensor>> {
        check_hidden(hidden, "hidden", self.config().transformer.d_model, None)?;
        self.weights
            .extra_heads
            .iter()
            .map(|head| Ok(head.forward(hidden)?))
            .collect()
    }

    /// The depformer with any token picker: `pick(k, logits)` returns codebook `k`'s token from
    /// its 1-D f32 logits (`audio_vocab_size - 1` entries, guidance already applied when
    /// `cfg_alpha` is set). For per-codebook samplers, teacher forcing or reading the logits;
    /// [`depformer_sample`](Self::depformer_sample) is this with one sampler.
    ///
    /// # Errors
    ///
    /// As [`depformer_sample`](Self::depformer_sample); [`Error::TokenOutOfRange`] when `pick`
    /// returns a token outside the logits, and `pick`'s own errors.
    pub fn depformer_step_with(
        &mut self,
        hidden: &Tensor,
        text_token: Option<u32>,
        forced_audio_tokens: &[Option<u32>],
        cfg_alpha: Option<f64>,
        mut pick: impl FnMut(usize, &Tensor) -> Result<u32>,
    ) -> Result<Vec<u32>> {
        let (Some(depformer), Some(state)) =
            (self.weights.depformer.as_ref(), self.depformer.as_mut())
        else {
            return Err(Error::NoDepformer);
        };
        check_hidden(
            hidden,
            "hidden",
            self.weights.config.transformer.d_model,
            Some("the depformer runs once per step"),
        )?;
        let rows = hidden.dim(0)?;
        let want_rows = if cfg_alpha.is_some() { 2 } else { 1 };
        if rows != want_rows {
            let why = if cfg_alpha.is_some() {
                "classifier-free guidance needs the conditioned and the unconditioned row"
            } else {
                "one row without guidance"
            };
            return Err(Error::input(
                "hidden",
                format!("must hold {want_rows} rows ({why}), got {rows}"),
            ));
        }
        if let Some(alpha) = cfg_alpha {
            if !alpha.is_finite() {
                return Err(Error::input(
                    "cfg_alpha",
                    format!("must be finite, got {alpha}"),
                ));
            }
        }
        if let Some(token) = text_token {
            check_tokens(&[token], "text_token", depformer.input_vocab(0))?;
        }
        let slices = depformer.num_slices();
        if forced_audio_tokens.len() > slices {
            return Err(Error::input(
                "forced_audio_tokens",
                format!(
                    "has {} entries for {slices} generated codebooks",
                    forced_audio_tokens.len()
                ),
            ));
        }
        for (k, forced) in forced_audio_tokens.iter().enumerate() {
            if let Some(token) = forced {
                check_tokens(
                    &[*token],
                    &format!("forced_audio_tokens[{k}]"),
                    self.weights.config.audio_vocab_size,
                )?;
            }
        }
        depformer.step(
            state,
            hidden,
            text_token,
            forced_audio_tokens,
            cfg_alpha,
            &mut pick,
        )
    }

    fn check_audio_len(&self, len: usize) -> Result<()> {
        let want = self.in_audio_codebooks();
        if len != want {
            return Err(Error::input(
                "audio",
                format!(
                    "must hold one entry (or None) per input audio codebook ({want}), got {len}"
                ),
            ));
        }
        Ok(())
    }

    /// Checks a `[batch, steps]` u32 id tensor against `vocab` and the shape of the other
    /// inputs, and moves it to the model's device.
    fn check_ids(
        &self,
        ids: &Tensor,
        input: &str,
        vocab: usize,
        shape: &mut Option<(usize, usize, String)>,
    ) -> Result<Tensor> {
        if ids.dtype() != DType::U32 {
            return Err(Error::input(
                input,
                format!("must hold u32 token ids, got {:?}", ids.dtype()),
            ));
        }
        let (b, t) = match ids.dims() {
            &[b, t] if b > 0 && t > 0 => (b, t),
            dims => {
                return Err(Error::input(
                    input,
                    format!("must have shape [batch, steps] with both at least 1, got {dims:?}"),
                ))
            }
        };
        match shape {
            Some((b0, t0, first)) if (*b0, *t0) != (b, t) => {
                return Err(Error::input(
                    input,
                    format!("has shape [{b}, {t}] but `{first}` has [{b0}, {t0}]"),
                ))
            }
            Some(_) => {}
            None => *shape = Some((b, t, input.to_string())),
        }
        check_tokens(&ids.flatten_all()?.to_vec1::<u32>()?, input, vocab)?;
        Ok(ids.to_device(self.device())?)
    }

    fn forward_checked(
        &mut self,
        text: Option<&Tensor>,
        audio: &[Option<Tensor>],
        b: usize,
        t: usize,
    ) -> Result<(Tensor, Tensor)> {
        check_batch(&self.temporal, b)?;
        let weights = &self.weights;
        let d = weights.config.transformer.d_model;
        let mut emb = match text {
            Some(ids) => weights.text_emb.forward(ids)?,
            None => Tensor::zeros((b, t, d), weights.dtype, &weights.device)?,
        };
        for (table, ids) in weights.audio_embs.iter().zip(audio) {
            if let Some(ids) = ids {
                emb = (emb + table.forward(ids)?)?;
            }
        }
        let ys = weights.transformer.forward(&emb, &mut self.temporal)?;
        let ys = weights.out_norm.forward(&ys)?;
        let logits = weights.text_linear.forward(&ys)?;
        Ok((logits, ys))
    }
}
