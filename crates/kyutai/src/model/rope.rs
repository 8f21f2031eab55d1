//! Interleaved rotary position embeddings, as in moshi: the frequencies are computed in f32
//! from the absolute positions of the steps, and the rotation runs in f32 whatever the model's
//! dtype (`candle_nn::rotary_emb::rope_i`, which rotates the pairs `(x[2i], x[2i + 1])`).

use candle_core::{DType, Device, Tensor};

use crate::Result;

/// The inverse frequencies `1 / theta^(2i / head_dim)` of one attention head.
#[derive(Debug, Clone)]
pub(crate) struct RotaryEmbedding {
    /// `[1, head_dim / 2]`, f32.
    inv_freq: Tensor,
}

impl RotaryEmbedding {
    pub(crate) fn new(head_dim: usize, theta: f32, device: &Device) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1f32 / theta.powf(i as f32 / head_dim as f32))
            .collect();
        let len = inv_freq.len();
        Ok(Self {
            inv_freq: Tensor::from_vec(inv_freq, (1, len), device)?,
        })
    }

    /// The cosine and sine tables, each `[t, head_dim / 2]` f32, for positions
    /// `start..start + t`.
    pub(crate) fn tables(&self, start: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let device = self.inv_freq.device();
        let positions = Tensor::arange(start as u32, (start + t) as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        let freqs = positions.matmul(&self.inv_freq)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }
}

/// Rotates `x` (`[batch, heads, t, head_dim]`, any float dtype) with the tables of
/// [`RotaryEmbedding::tables`]; the result has `x`'s dtype.
pub(crate) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    Ok(candle_nn::rotary_emb::rope_i(&x, cos, sin)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, salt: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ salt) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn rotates_interleaved_pairs_by_position_times_frequency() {
        let (heads, t, head_dim, start) = (2, 3, 8, 5);
        let theta = 10_000f32;
        let data = pseudo_random(heads * t * head_dim, 17);
        let x = Tensor::from_vec(data.clone(), (1, heads, t, head_dim), &Device::Cpu).unwrap();
        let rope = RotaryEmbedding::new(head_dim, theta, &Device::Cpu).unwrap();
        let (cos, sin) = rope.tables(start, t).unwrap();
        let y = apply_rope(&x, &cos, &sin)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for h in 0..heads {
            for s in 0..t {
                for i in 0..head_dim / 2 {
                    let freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
                    let angle = (start + s) as f32 * freq;
                    let base = (h * t + s) * head_dim + 2 * i;
                    let (x0, x1) = (data[base], data[base + 1]);
                    let want0 = x0 * angle.cos() - x1 * angle.sin();
                    let want1 = x0 * angle.sin() + x1 * angle.cos();
                    assert!((y[base] - want0).abs() < 1e-5, "{} vs {want0}", y[base]);
                    assert!(
                        (y[base + 1] - want1).abs() < 1e-5,
                        "{} vs {want1}",
                        y[base + 1]
                    );
                }
            }
        }
    }

    #[test]
    fn attention_scores_depend_only_on_relative_position() {
        let head_dim = 16;
        let rope = RotaryEmbedding::new(head_dim, 10_000.0, &Device::Cpu).unwrap();
        let q = Tensor::from_vec(
            pseudo_random(head_dim, 1),
            (1, 1, 1, head_dim),
            &Device::Cpu,
        )
        .unwrap();
        let k = Tensor::from_vec(
            pseudo_random(head_dim, 2),
            (1, 1, 1, head_dim),
            &Device::Cpu,
        )
        .unwrap();
        let score = |qp: usize, kp: usize| {
            let (cq, sq) = rope.tables(qp, 1).unwrap();
            let (ck, sk) = rope.tables(kp, 1).unwrap();
            let q = apply_rope(&q, &cq, &sq).unwrap();
            let k = apply_rope(&k, &ck, &sk).unwrap();
            (q * k)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!((score(7, 3) - score(104, 100)).abs() < 1e-4);
        assert!(
            (score(7, 3) - score(7, 4)).abs() > 1e-3,
            "rotation must change the score"
        );
    }

    #[test]
    fn keeps_the_input_dtype() {
        let rope = RotaryEmbedding::new(4, 10_000.0, &Device::Cpu).unwrap();
        let (cos, sin) = rope.tables(0, 2).unwrap();
        let x = Tensor::ones((1, 1, 2, 4), DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(apply_rope(&x, &cos, &sin).unwrap().dtype(), DType::BF16);
    }
}
