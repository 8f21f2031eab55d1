//! Multi-head self-attention with a fused `in_proj_weight`, interleaved rotary embeddings and a
//! rotating KV cache, as in moshi.

use candle_core::{IndexOp, Tensor};
use candle_nn::{Linear, Module};

use super::kv_cache::KvCache;
use super::rope::apply_rope;
use super::weights::{linear, TensorKind, WeightSource};
use crate::config::TransformerConfig;
use crate::Result;

#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    /// `[3 d, d]`: queries, keys and values, each `[heads, head_dim]` row-major.
    in_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    /// Reads `in_proj_weight` (`in_proj_bias`) and `out_proj.*` under `src`.
    pub(crate) fn load(cfg: &TransformerConfig, src: &WeightSource) -> Result<Self> {
        let d = cfg.d_model;
        // With kv_repeat = 1 (checked by the config), keys and values have d columns each.
        let out_dim = 3 * d;
        let weight = src.get(&[out_dim, d], "in_proj_weight", TensorKind::Weight)?;
        let bias = if cfg.bias_attn {
            Some(src.get(&[out_dim], "in_proj_bias", TensorKind::Weight)?)
        } else {
            None
        };
        Ok(Self {
            in_proj: Linear::new(weight, bias),
            out_proj: linear(&src.pp("out_proj"), d, d, cfg.bias_attn)?,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `xs`: `[batch, t, d]`; `rope`: the cosine and sine tables of the `t` positions; `mask`:
    /// `[batch, 1, t, keys]` where `keys` are the steps `cache` returns after this append.
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let qkv = xs
            .apply(&self.in_proj)?
            .reshape((b, t, 3, self.num_heads, self.head_dim))?;
        let mut q = qkv.i((.., .., 0))?.transpose(1, 2)?.contiguous()?;
        let mut k = qkv.i((.., .., 1))?.transpose(1, 2)?.contiguous()?;
        let v = qkv.i((.., .., 2))?.transpose(1, 2)?.contiguous()?;
        if let Some((cos, sin)) = rope {
            q = apply_rope(&q, cos, sin)?;
            k = apply_rope(&k, cos, sin)?;
        }
        let (k, v) = cache.append(&k, &v)?;
        let scores = (q.matmul(&k.t()?)? * (self.head_dim as f64).powf(-0.5))?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        Ok(self.out_proj.forward(&out)?)
    }
}
