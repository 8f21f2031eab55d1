//! The streaming transformer of Kyutai's models: pre-norm layers of self-attention and a
//! feed-forward block, a rotating KV cache per layer, and a causal, context-bounded mask.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use super::attention::SelfAttention;
use super::kv_cache::KvCache;
use super::mask::attention_mask;
use super::mlp::Mlp;
use super::norm::Norm;
use super::rope::RotaryEmbedding;
use super::weights::{TensorKind, WeightSource};
use crate::config::{PositionalEmbedding, TransformerConfig};
use crate::limits::check_forward;
use crate::{Error, Result};

#[derive(Debug, Clone)]
struct Layer {
    norm1: Norm,
    self_attn: SelfAttention,
    norm2: Norm,
    mlp: Mlp,
    layer_scale_1: Option<Tensor>,
    layer_scale_2: Option<Tensor>,
}

impl Layer {
    fn load(cfg: &TransformerConfig, src: &WeightSource) -> Result<Self> {
        let d = cfg.d_model;
        let layer_scale = |name: &str| -> Result<Option<Tensor>> {
            match cfg.layer_scale {
                Some(_) => Ok(Some(src.pp(name).get(&[d], "scale", TensorKind::Weight)?)),
                None => Ok(None),
            }
        };
        Ok(Self {
            self_attn: SelfAttention::load(cfg, &src.pp("self_attn"))?,
            mlp: Mlp::load(cfg, src)?,
            norm1: Norm::load(d, cfg.norm, &src.pp("norm1"))?,
            norm2: Norm::load(d, cfg.norm, &src.pp("norm2"))?,
            layer_scale_1: layer_scale("layer_scale_1")?,
            layer_scale_2: layer_scale("layer_scale_2")?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.norm1.forward(xs)?, rope, mask, cache)?;
        let attn = scale(attn, self.layer_scale_1.as_ref())?;
        let xs = (xs + attn)?;
        let ff = scale(
            self.mlp.forward(&self.norm2.forward(&xs)?)?,
            self.layer_scale_2.as_ref(),
        )?;
        Ok((xs + ff)?)
    }
}

fn scale(xs: Tensor, scale: Option<&Tensor>) -> Result<Tensor> {
    match scale {
        Some(s) => Ok(xs.broadcast_mul(s)?),
        None => Ok(xs),
    }
}

/// The weights of a transformer; the streaming state lives apart, in [`StreamingState`].
#[derive(Debug)]
pub(crate) struct TransformerWeights {
    layers: Vec<Layer>,
    rope: Option<RotaryEmbedding>,
    positional_embedding: PositionalEmbedding,
    max_period: usize,
    context: usize,
    d_model: usize,
    num_heads: usize,
}

/// The per-layer KV caches and per-row reset positions of one transformer.
#[derive(Debug, Clone)]
pub(crate) struct StreamingState {
    caches: Vec<KvCache>,
    /// Per batch row, the step at which the row was last reset; empty before the first call.
    last_reset_pos: Vec<usize>,
}

impl StreamingState {
    pub(crate) fn reset(&mut self) {
        self.caches.iter_mut().for_each(KvCache::reset);
        self.last_reset_pos.clear();
    }

    pub(crate) fn current_seq_len(&self) -> usize {
        self.caches.first().map_or(0, KvCache::current_seq_len)
    }

    pub(crate) fn batch_size(&self) -> Option<usize> {
        if self.current_seq_len() == 0 {
            None
        } else {
            Some(self.last_reset_pos.len())
        }
    }

    /// Makes row `index` forget every step so far (the other rows are unaffected).
    pub(crate) fn reset_batch_item(&mut self, index: usize) -> Result<()> {
        let seq_len = self.current_seq_len();
        match self.last_reset_pos.get_mut(index) {
            Some(pos) => {
                *pos = seq_len;
                Ok(())
            }
            // Nothing processed yet: there is nothing to forget.
            None if seq_len == 0 => Ok(()),
            None => Err(Error::input(
                "index",
                format!(
                    "batch row {index} does not exist (batch of {})",
                    self.last_reset_pos.len()
                ),
            )),
        }
    }
}

impl TransformerWeights {
    /// Reads `layers.{l}.*` under `src`.
    pub(crate) fn load(cfg: &TransformerConfig, src: &WeightSource) -> Result<Self> {
        let layers_src = src.pp("layers");
        let layers = (0..cfg.num_layers)
            .map(|l| Layer::load(cfg, &layers_src.pp(l)))
            .collect::<Result<Vec<_>>>()?;
        let rope = match cfg.positional_embedding {
            PositionalEmbedding::Rope => Some(RotaryEmbedding::new(
                cfg.head_dim(),
                cfg.max_period as f32,
                &src.device(),
            )?),
            PositionalEmbedding::Sin | PositionalEmbedding::None => None,
        };
        Ok(Self {
            layers,
            rope,
            positional_embedding: cfg.positional_embedding,
            max_period: cfg.max_period,
            context: cfg.context,
            d_model: cfg.d_model,
            num_heads: cfg.num_heads,
        })
    }

    pub(crate) fn new_state(&self) -> StreamingState {
        StreamingState {
            caches: self
                .layers
                .iter()
                .map(|_| KvCache::new(self.context))
                .collect(),
            last_reset_pos: Vec::new(),
        }
    }

    /// `xs`: `[batch, t, d_model]`, checked by the caller (the batch too).
    pub(crate) fn forward(&self, xs: &Tensor, state: &mut StreamingState) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let Some(first_cache) = state.caches.first() else {
            return Ok(xs.clone());
        };
        let seq_len = first_cache.current_seq_len();
        let keys = first_cache.positions(t)?;
        // Bounds the batch and the prefill length before anything is allocated for them (the
        // caches, the mask, the attention scores).
        let kv_per_row = 2 * self.layers.len() as u64 * self.context as u64 * self.d_model as u64;
        check_forward("xs", b, t, self.num_heads, keys.len(), kv_per_row)?;
        if state.last_reset_pos.is_empty() {
            state.last_reset_pos = vec![0; b];
        }
        let mask = attention_mask(
            &keys,
            seq_len,
            t,
            self.context,
            &state.last_reset_pos,
            xs.dtype(),
            xs.device(),
        )?;
        let rope = match &self.rope {
            Some(rope) => Some(rope.tables(seq_len, t)?),
            None => None,
        };
        let mut xs = match self.positional_embedding {
            PositionalEmbedding::Sin => xs.broadcast_add(&self.sin_embedding(seq_len, t, xs)?)?,
            PositionalEmbedding::Rope | PositionalEmbedding::None => xs.clone(),
        };
        for (layer, cache) in self.layers.iter().zip(state.caches.iter_mut()) {
            xs = layer.forward(&xs, rope.as_ref(), mask.as_ref(), cache)?;
        }
        Ok(xs)
    }

    /// moshi's sinusoidal embedding `[cos(p f_i), sin(p f_i)]` with
    /// `f_i = max_period^(-i / (d / 2 - 1))`, `[t, d]` in `like`'s dtype.
    fn sin_embedding(&self, start: usize, t: usize, like: &Tensor) -> Result<Tensor> {
        let half = self.d_model / 2;
        let theta = self.max_period as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1f32 / theta.powf(i as f32 / (half - 1) as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), like.device())?;
        let positions = Tensor::arange(start as u32, (start + t) as u32, like.device())?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        let freqs = positions.broadcast_mul(&inv_freq)?;
        Ok(Tensor::cat(&[freqs.cos()?, freqs.sin()?], D::Minus1)?.to_dtype(like.dtype())?)
    }
}

/// A streaming transformer with its own state: the building block of Kyutai's models, usable
/// on its own.
///
/// Each call to [`forward`](Self::forward) appends its steps to the per-layer KV caches; the
/// attention of a step covers the `context` previous steps and itself (fewer after a reset).
/// Calls may carry several steps (a prefill): they are masked causally. Cloning is cheap (the
/// weights are shared) and the clone's state evolves independently.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use kyutai::{LmConfig, Transformer};
///
/// let mut config = LmConfig::stt_2_6b_en().transformer;
/// (config.d_model, config.num_heads, config.num_layers, config.context) = (32, 2, 1, 4);
/// let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
/// let mut transformer = Transformer::new(&config, vb)?;
/// let xs = Tensor::ones((1, 3, 32), DType::F32, &Device::Cpu)?;
/// let ys = transformer.forward(&xs)?;
/// assert_eq!(ys.dims(), &[1, 3, 32]);
/// assert_eq!(transformer.current_seq_len(), 3);
/// # Ok::<(), kyutai::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Transformer {
    weights: Arc<TransformerWeights>,
    state: StreamingState,
}

impl Transformer {
    /// Reads a transformer of configuration `config` from `vb`, whose prefix is the
    /// transformer's (e.g. `vb.pp("transformer")` for a Kyutai LM checkpoint): it reads
    /// `layers.{l}.norm1.alpha`, `layers.{l}.self_attn.in_proj_weight`, ...
    ///
    /// # Errors
    ///
    /// The configuration errors of [`LmConfig::validate`](crate::LmConfig::validate), and
    /// [`Error::MissingTensor`] / [`Error::TensorShape`] for a checkpoint that does not match.
    pub fn new(config: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        config.validate("transformer")?;
        let weights = TransformerWeights::load(config, &WeightSource::new(vb))?;
        let state = weights.new_state();
        Ok(Self {
            weights: Arc::new(weights),
            state,
        })
    }

    /// Runs `xs` (`[batch, t, d_model]`) through the transformer, appending its `t` steps to the
    /// state.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `xs` is not `[batch, t, d_model]` with `t >= 1`, when the
    /// batch size differs from the one of the steps in the state (reset first), or when the
    /// call is above the size bounds of [`limits`](crate::limits) (`t` above
    /// [`MAX_FORWARD_STEPS`](crate::MAX_FORWARD_STEPS), attention scores above
    /// [`MAX_ATTENTION_SCORES`](crate::MAX_ATTENTION_SCORES), KV caches above
    /// [`MAX_KV_CACHE_ELEMENTS`](crate::MAX_KV_CACHE_ELEMENTS)).
    pub fn forward(&mut self, xs: &Tensor) -> Result<Tensor> {
        check_hidden(xs, "xs", self.weights.d_model, None)?;
        check_batch(&self.state, xs.dim(0)?)?;
        self.weights.forward(xs, &mut self.state)
    }

    /// Forgets every step.
    pub fn reset_state(&mut self) {
        self.state.reset();
    }

    /// Makes batch row `index` forget every step so far; the other rows keep theirs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when there is no such row.
    pub fn reset_batch_item(&mut self, index: usize) -> Result<()> {
        self.state.reset_batch_item(index)
    }

    /// Replaces this transformer's state by a copy of `from`'s (the depformer's trick: a later
    /// transformer continues an earlier one's sequence).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the two transformers do not have the same number of layers
    /// and context.
    pub fn copy_state(&mut self, from: &Self) -> Result<()> {
        if from.weights.layers.len() != self.weights.layers.len()
            || from.weights.context != self.weights.context
        {
            return Err(Error::input(
                "from",
                format!(
                    "has {} layers and context {}, this transformer {} and {}",
                    from.weights.layers.len(),
                    from.weights.context,
                    self.weights.layers.len(),
                    self.weights.context
                ),
            ));
        }
        self.state = from.state.clone();
        Ok(())
    }

    /// Steps processed since the last reset.
    pub fn current_seq_len(&self) -> usize {
        self.state.current_seq_len()
    }
}

/// Checks that `xs` is `[batch, t, d]` with `batch, t >= 1` (and `t == 1` when `single_step`
/// names the requirement).
pub(crate) fn check_hidden(
    xs: &Tensor,
    name: &str,
    d: usize,
    single_step: Option<&str>,
) -> Result<()> {
    let dims = xs.dims();
    let ok = matches!(dims, [b, t, dd] if *b >= 1 && *t >= 1 && *dd == d);
    if !ok {
        return Err(Error::input(
            name,
            format!("must have shape [batch, steps, {d}], got {dims:?}"),
        ));
    }
    if !xs.dtype().is_float() {
        return Err(Error::input(
            name,
            format!("must be a float tensor, got {:?}", xs.dtype()),
        ));
    }
    if let Some(why) = single_step {
        if dims.get(1) != Some(&1) {
            return Err(Error::input(
                name,
                format!("must hold a single step ({why}), got {dims:?}"),
            ));
        }
    }
    Ok(())
}

/// Checks that a call with `batch` rows may continue `state`.
pub(crate) fn check_batch(state: &StreamingState, batch: usize) -> Result<()> {
    match state.batch_size() {
        Some(b) if b != batch => Err(Error::input(
            "batch",
            format!(
                "the state holds steps for {b} rows, this call has {batch}: reset the state to \
                 change the batch size"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "transformer_tests.rs"]
mod tests;
