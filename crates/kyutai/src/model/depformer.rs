//! The depformer: per time step, one small transformer per generated audio codebook ("slice",
//! each with its own weights), run one after the other as one causal sequence.
//!
//! Slice `k` reads the temporal transformer's output through its own `linear_in`, adds the
//! embedding of the previous token (the text token for slice 0, codebook `k - 1`'s token
//! otherwise), continues the KV state the previous slices left, and maps its output to the
//! `audio_vocab - 1` logits of codebook `k` (the pad token cannot be generated). This is moshi's
//! Rust layout: the state of slice `k` is a copy of slice `k - 1`'s, which here is one state the
//! slices share.

use candle_core::{DType, IndexOp, Tensor};
use candle_nn::{Linear, Module};

use super::embeddings::TokenEmbedding;
use super::guidance::guided_logits;
use super::transformer::{StreamingState, TransformerWeights};
use super::weights::{linear, WeightSource};
use crate::config::LmConfig;
use crate::error::check_tokens;
use crate::Result;

#[derive(Debug)]
struct Slice {
    transformer: TransformerWeights,
    emb: TokenEmbedding,
    linear_in: Linear,
    linear_out: Linear,
}

#[derive(Debug)]
pub(crate) struct Depformer {
    slices: Vec<Slice>,
    /// Logits per codebook: `audio_vocab_size - 1`.
    out_vocab: usize,
}

impl Depformer {
    /// Reads `{k}.transformer.*`, `{k}.emb.*`, `{k}.linear_in.*` and `{k}.linear_out.*` under
    /// `src` (the `depformer` prefix). `None` when the configuration has no depformer.
    pub(crate) fn load(cfg: &LmConfig, src: &WeightSource) -> Result<Option<Self>> {
        let Some(dep) = &cfg.depformer else {
            return Ok(None);
        };
        let dd = dep.transformer.d_model;
        let out_vocab = cfg.audio_vocab_size - 1;
        let slices = (0..dep.num_slices)
            .map(|k| {
                let src = src.pp(k);
                let in_vocab = if k == 0 {
                    cfg.text_in_vocab_size
                } else {
                    cfg.audio_vocab_size
                };
                Ok(Slice {
                    transformer: TransformerWeights::load(
                        &dep.transformer,
                        &src.pp("transformer"),
                    )?,
                    emb: TokenEmbedding::load(
                        &src.pp("emb"),
                        in_vocab,
                        dd,
                        dep.low_rank_embeddings,
                    )?,
                    linear_in: linear(&src.pp("linear_in"), cfg.transformer.d_model, dd, false)?,
                    linear_out: linear(&src.pp("linear_out"), dd, out_vocab, false)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Self { slices, out_vocab }))
    }

    pub(crate) fn num_slices(&self) -> usize {
        self.slices.len()
    }

    pub(crate) fn new_state(&self) -> Option<StreamingState> {
        self.slices.first().map(|s| s.transformer.new_state())
    }

    /// Vocabulary of the embedding that slice `k` reads its input token with.
    pub(crate) fn input_vocab(&self, k: usize) -> usize {
        self.slices.get(k).map_or(0, |s| s.emb.vocab())
    }

    /// One depformer pass over `hidden` (`[rows, 1, d_model]`; 2 rows with `cfg_alpha`, the
    /// conditioned one first; 1 row otherwise). `pick(k, logits)` chooses codebook `k`'s token
    /// from its 1-D f32 logits; `forced[k]`, when set, replaces that token as the input of slice
    /// `k + 1`. Tokens and lengths are checked by the caller.
    pub(crate) fn step(
        &self,
        state: &mut StreamingState,
        hidden: &Tensor,
        text_token: Option<u32>,
        forced: &[Option<u32>],
        cfg_alpha: Option<f64>,
        pick: &mut dyn FnMut(usize, &Tensor) -> Result<u32>,
    ) -> Result<Vec<u32>> {
        state.reset();
        let device = hidden.device();
        let mut tokens = Vec::with_capacity(self.slices.len());
        let mut previous = text_token;
        for (k, slice) in self.slices.iter().enumerate() {
            let mut xs = slice.linear_in.forward(hidden)?;
            if let Some(token) = previous {
                let ids = Tensor::from_vec(vec![token], (1, 1), device)?;
                xs = xs.broadcast_add(&slice.emb.forward(&ids)?)?;
            }
            let ys = slice.transformer.forward(&xs, state)?;
            let logits = slice.linear_out.forward(&ys)?;
            let logits = match cfg_alpha {
                Some(alpha) => guided_logits(&logits, alpha)?,
                None => logits.i((0, 0))?.to_dtype(DType::F32)?,
            };
            let token = pick(k, &logits)?;
            if token as usize >= self.out_vocab {
                // Formatted only on failure: the check runs for every codebook of every step.
                let input = format!("the token picked for audio codebook {k}");
                check_tokens(&[token], &input, self.out_vocab)?;
            }
            tokens.push(token);
            previous = Some(forced.get(k).copied().flatten().unwrap_or(token));
        }
        Ok(tokens)
    }
}
