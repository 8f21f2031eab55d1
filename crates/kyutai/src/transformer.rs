//! The streaming transformer of Kyutai's models: pre-norm layers of self-attention and a
//! feed-forward block, a rotating KV cache per layer, and a causal, context-bounded mask.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use crate::attention::SelfAttention;
use crate::config::{PositionalEmbedding, TransformerConfig};
use crate::kv_cache::KvCache;
use crate::mask::attention_mask;
use crate::mlp::Mlp;
use crate::norm::Norm;
use crate::rope::RotaryEmbedding;
use crate::weights::{TensorKind, WeightSource};
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
        if state.last_reset_pos.is_empty() {
            state.last_reset_pos = vec![0; b];
        }
        let Some(first_cache) = state.caches.first() else {
            return Ok(xs.clone());
        };
        let seq_len = first_cache.current_seq_len();
        let keys = first_cache.positions(t);
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
    /// [`Error::InvalidInput`] when `xs` is not `[batch, t, d_model]` with `t >= 1`, or when the
    /// batch size differs from the one of the steps in the state (reset first).
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
mod tests {
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
}
