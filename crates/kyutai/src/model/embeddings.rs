//! Token embeddings, optionally factorised ("low-rank": a `[vocab, r]` table followed by a
//! `r -> d` linear map, as in the depformers of Kyutai's TTS models).

use candle_core::Tensor;
use candle_nn::{Linear, Module};

use super::weights::{linear, TensorKind, WeightSource};
use crate::Result;

#[derive(Debug, Clone)]
pub(crate) struct TokenEmbedding {
    /// `[vocab, d]`, or `[vocab, r]` when low-rank.
    table: Tensor,
    low_rank: Option<Linear>,
    vocab: usize,
}

impl TokenEmbedding {
    /// Reads `weight` (and `low_rank.weight` `[d, r]` when `low_rank` is `Some(r)`) under `src`.
    pub(crate) fn load(
        src: &WeightSource,
        vocab: usize,
        d: usize,
        low_rank: Option<usize>,
    ) -> Result<Self> {
        match low_rank {
            None => Ok(Self {
                table: src.get(&[vocab, d], "weight", TensorKind::Embedding)?,
                low_rank: None,
                vocab,
            }),
            Some(r) => Ok(Self {
                table: src.get(&[vocab, r], "weight", TensorKind::Embedding)?,
                low_rank: Some(linear(&src.pp("low_rank"), r, d, false)?),
                vocab,
            }),
        }
    }

    pub(crate) fn vocab(&self) -> usize {
        self.vocab
    }

    /// Embeds `ids` (u32, any shape, every id `< vocab`, checked by the caller): the result has
    /// `ids`' shape plus a last dimension of width `d`.
    pub(crate) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        dims.push(self.table.dim(1)?);
        let rows = self
            .table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape(dims)?;
        match &self.low_rank {
            Some(projection) => Ok(projection.forward(&rows)?),
            None => Ok(rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    #[test]
    fn low_rank_embedding_is_the_table_row_times_the_projection() {
        let dev = Device::Cpu;
        // vocab 3, rank 2, d 3.
        let table = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0], [2.0, -1.0]], &dev).unwrap();
        let projection = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0], [-1.0, 0.5]], &dev).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(
            HashMap::from([
                ("weight".to_string(), table),
                ("low_rank.weight".to_string(), projection),
            ]),
            DType::F32,
            &dev,
        );
        let emb = TokenEmbedding::load(&WeightSource::new(vb), 3, 3, Some(2)).unwrap();
        let ids = Tensor::new(&[[2u32, 0]], &dev).unwrap();
        let out = emb.forward(&ids).unwrap();
        assert_eq!(out.dims(), &[1, 2, 3]);
        let out = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Row 2 = (2, -1): (2 - 2, 6 - 4, -2 - 0.5); row 0 = (1, 0): (1, 3, -1).
        assert_eq!(out, vec![0.0, 2.0, -2.5, 1.0, 3.0, -1.0]);
    }

    #[test]
    fn plain_embedding_looks_up_rows_and_keeps_the_id_shape() {
        let dev = Device::Cpu;
        let table = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &dev).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(
            HashMap::from([("weight".to_string(), table)]),
            DType::F32,
            &dev,
        );
        let emb = TokenEmbedding::load(&WeightSource::new(vb), 2, 2, None).unwrap();
        let out = emb
            .forward(&Tensor::new(&[[1u32], [0]], &dev).unwrap())
            .unwrap();
        assert_eq!(out.dims(), &[2, 1, 2]);
        assert_eq!(
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 4.0, 1.0, 2.0]
        );
    }

    #[test]
    fn a_low_rank_checkpoint_with_the_wrong_rank_names_the_tensor() {
        let dev = Device::Cpu;
        let vb = candle_nn::VarBuilder::from_tensors(
            HashMap::from([
                (
                    "emb.weight".to_string(),
                    Tensor::zeros((3, 4), DType::F32, &dev).unwrap(),
                ),
                (
                    "emb.low_rank.weight".to_string(),
                    Tensor::zeros((3, 4), DType::F32, &dev).unwrap(),
                ),
            ]),
            DType::F32,
            &dev,
        );
        let err =
            TokenEmbedding::load(&WeightSource::new(vb).pp("emb"), 3, 3, Some(2)).unwrap_err();
        match err {
            crate::Error::TensorShape {
                name,
                expected,
                found,
            } => {
                assert_eq!(name, "emb.weight");
                assert_eq!(expected, vec![3, 2]);
                assert_eq!(found, vec![3, 4]);
            }
            other => panic!("unexpected {other}"),
        }
    }
}
