//! A rotating key/value cache bounded by the attention context, safe to clone mid-stream.
//!
//! The semantics are those of `candle_nn::kv_cache::RotatingKvCache`, which moshi 0.6.4 uses:
//! a ring buffer of `context` slots along the sequence dimension; an append of `t < context`
//! steps writes them after the previous ones (wrapping around) and returns every filled slot, in
//! slot order; an append of `t >= context` steps keeps the last `context` of them and returns all
//! `t` (the steps before the call are not returned). [`KvCache::positions`] gives the absolute
//! position of every returned step, which the attention mask needs.
//!
//! Two things differ from candle's cache, on purpose:
//!
//! * **Cloning is safe.** candle's cache writes into its buffer in place (`slice_set`), and a
//!   cloned `Tensor` shares its storage, so a cloned model would write into the original's
//!   cache. This cache copies its buffer before the first write after a clone (copy on write),
//!   so clones are cheap and independent.
//! * **Positions always match the returned keys.** For an append of exactly `context` steps into
//!   a cache whose write offset is not 0, candle's `positions` describes the buffer while
//!   `append` returns the new steps in order; here both describe the returned steps.

use std::sync::Arc;

use candle_core::Tensor;

use crate::limits::MAX_FORWARD_STEPS;
use crate::{Error, Result};

/// Keys and values of one attention layer, `[batch, heads, steps, head_dim]`, for at most
/// `context` steps.
#[derive(Debug, Clone)]
pub struct KvCache {
    context: usize,
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Absolute position held by each filled slot.
    slot_positions: Vec<usize>,
    /// Next slot to write.
    offset: usize,
    /// Steps appended since the last reset.
    seq_len: usize,
    /// Shared by clones; a write with other owners alive copies the buffers first.
    owner: Arc<()>,
}

impl KvCache {
    /// An empty cache of `context` slots (the dimension of the steps is 2).
    pub fn new(context: usize) -> Self {
        Self {
            context,
            k: None,
            v: None,
            slot_positions: Vec::new(),
            offset: 0,
            seq_len: 0,
            owner: Arc::new(()),
        }
    }

    /// The number of slots.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Steps appended since the last reset.
    pub fn current_seq_len(&self) -> usize {
        self.seq_len
    }

    /// Batch size of the cached keys, `None` when nothing is cached.
    pub fn batch_size(&self) -> Option<usize> {
        if self.seq_len == 0 {
            return None;
        }
        self.k.as_ref().and_then(|k| k.dims().first().copied())
    }

    /// Forgets every step. The buffers are kept for reuse.
    pub fn reset(&mut self) {
        self.slot_positions.clear();
        self.offset = 0;
        self.seq_len = 0;
    }

    /// Absolute positions of the steps that [`append`](Self::append) will return for an input
    /// of `t` steps, in the order it returns them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `t` is above [`MAX_FORWARD_STEPS`](crate::MAX_FORWARD_STEPS)
    /// (no call can append that many steps) or the positions would overflow a `usize`.
    pub fn positions(&self, t: usize) -> Result<Vec<usize>> {
        let end = match self.seq_len.checked_add(t) {
            Some(end) if t <= MAX_FORWARD_STEPS => end,
            _ => {
                return Err(Error::input(
                    "t",
                    format!(
                        "{t} steps after {} is more than one call can append (at most \
                         MAX_FORWARD_STEPS = {MAX_FORWARD_STEPS})",
                        self.seq_len
                    ),
                ))
            }
        };
        if t >= self.context {
            return Ok((self.seq_len..end).collect());
        }
        let mut positions = self.slot_positions.clone();
        for i in 0..t {
            let slot = (self.offset + i) % self.context;
            let position = self.seq_len + i;
            match positions.get_mut(slot) {
                Some(p) => *p = position,
                None => positions.push(position),
            }
        }
        Ok(positions)
    }

    /// Appends `t` steps of keys and values (`[batch, heads, t, head_dim]`) and returns the keys
    /// and values attention must look at (see the module docs).
    ///
    /// # Errors
    ///
    /// A candle error when `k` and `v` do not have the same shape as each other or as the cached
    /// steps (other than along the step dimension); the errors of
    /// [`positions`](Self::positions).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        if v.dims() != k.dims() {
            return Err(candle_core::Error::ShapeMismatchBinaryOp {
                lhs: k.shape().clone(),
                rhs: v.shape().clone(),
                op: "kv-cache append",
            }
            .into());
        }
        self.prepare_buffers(k)?;
        let (Some(kb), Some(vb)) = (self.k.as_ref(), self.v.as_ref()) else {
            // prepare_buffers always allocates.
            return Err(candle_core::Error::Msg("kv-cache buffers missing".into()).into());
        };
        let positions = self.positions(t)?;
        if t >= self.context {
            let start = t - self.context;
            kb.slice_set(&k.narrow(2, start, self.context)?.contiguous()?, 2, 0)?;
            vb.slice_set(&v.narrow(2, start, self.context)?.contiguous()?, 2, 0)?;
            self.slot_positions = positions[start..].to_vec();
            self.offset = 0;
            self.seq_len += t;
            return Ok((k.clone(), v.clone()));
        }
        let first = t.min(self.context - self.offset);
        kb.slice_set(&k.narrow(2, 0, first)?.contiguous()?, 2, self.offset)?;
        vb.slice_set(&v.narrow(2, 0, first)?.contiguous()?, 2, self.offset)?;
        if first < t {
            kb.slice_set(&k.narrow(2, first, t - first)?.contiguous()?, 2, 0)?;
            vb.slice_set(&v.narrow(2, first, t - first)?.contiguous()?, 2, 0)?;
        }
        self.offset = (self.offset + t) % self.context;
        self.seq_len += t;
        let filled = positions.len();
        self.slot_positions = positions;
        if filled == self.context {
            Ok((kb.clone(), vb.clone()))
        } else {
            Ok((kb.narrow(2, 0, filled)?, vb.narrow(2, 0, filled)?))
        }
    }

    /// Makes sure the buffers exist, fit `like` and are owned by this cache alone.
    fn prepare_buffers(&mut self, like: &Tensor) -> Result<()> {
        let mut shape = like.dims().to_vec();
        if let Some(steps) = shape.get_mut(2) {
            *steps = self.context;
        }
        let fits = self.k.as_ref().is_some_and(|k| {
            k.dims() == shape.as_slice()
                && k.dtype() == like.dtype()
                && k.device().same_device(like.device())
        });
        if !fits {
            if self.seq_len > 0 {
                let cached = self
                    .k
                    .as_ref()
                    .map(|k| k.dims().to_vec())
                    .unwrap_or_default();
                return Err(candle_core::Error::Msg(format!(
                    "kv-cache append of shape {:?} does not match the cached steps {cached:?}",
                    like.dims()
                ))
                .into());
            }
            self.k = Some(Tensor::zeros(
                shape.as_slice(),
                like.dtype(),
                like.device(),
            )?);
            self.v = Some(Tensor::zeros(
                shape.as_slice(),
                like.dtype(),
                like.device(),
            )?);
            self.owner = Arc::new(());
            return Ok(());
        }
        if Arc::strong_count(&self.owner) > 1 {
            self.k = self.k.as_ref().map(Tensor::copy).transpose()?;
            self.v = self.v.as_ref().map(Tensor::copy).transpose()?;
            self.owner = Arc::new(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, IndexOp};

    /// `[1, 1, t, 1]` keys whose values are their absolute positions.
    fn steps_from(start: usize, t: usize) -> Tensor {
        let values: Vec<f32> = (start..start + t).map(|p| p as f32).collect();
        Tensor::from_vec(values, (1, 1, t, 1), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<usize> {
        t.i((0, 0, .., 0))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|x| x as usize)
            .collect()
    }

    #[test]
    fn wraps_around_and_positions_describe_the_returned_keys() {
        for context in [1, 3, 4, 8] {
            for chunks in [
                vec![1; 12],
                vec![2, 1, 3, 1, 1, 2, 5],
                vec![5, 1, 1],
                vec![3, 3, 3, 1],
                vec![1, 1, 4, 4, 1],
            ] {
                let mut cache = KvCache::new(context);
                let mut seen = 0;
                for t in chunks {
                    let positions = cache.positions(t).unwrap();
                    let (k, v) = cache
                        .append(&steps_from(seen, t), &steps_from(seen, t))
                        .unwrap();
                    seen += t;
                    assert_eq!(values(&k), positions, "context {context}");
                    assert_eq!(values(&v), positions);
                    // The newest step is always present, and only the last `context` before the
                    // call can be (or all of the call's steps when t >= context).
                    assert!(positions.contains(&(seen - 1)));
                    let oldest = if t >= context {
                        seen - t
                    } else {
                        seen.saturating_sub(context)
                    };
                    let mut sorted = positions.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (oldest..seen).collect::<Vec<_>>());
                    assert_eq!(cache.current_seq_len(), seen);
                }
            }
        }
    }

    #[test]
    fn matches_candle_rotating_cache_where_candle_is_consistent() {
        // candle-nn's RotatingKvCache is the cache moshi uses: same returned keys, same
        // positions, except for the append of exactly `context` steps at a non-zero offset
        // (module docs).
        let context = 4;
        let mut ours = KvCache::new(context);
        let mut theirs = candle_nn::kv_cache::RotatingKvCache::new(2, context);
        let mut seen = 0;
        for t in [1, 2, 3, 1, 1, 5, 1, 2, 1, 1, 3] {
            let is_candle_edge_case = t == context && theirs.offset() != 0;
            let their_positions = theirs.positions(t);
            let (their_k, _) = theirs
                .append(&steps_from(seen, t), &steps_from(seen, t))
                .unwrap();
            let our_positions = ours.positions(t).unwrap();
            let (our_k, _) = ours
                .append(&steps_from(seen, t), &steps_from(seen, t))
                .unwrap();
            seen += t;
            assert_eq!(values(&our_k), values(&their_k), "after {seen} steps");
            if !is_candle_edge_case {
                assert_eq!(our_positions, their_positions, "after {seen} steps");
            }
        }
    }

    #[test]
    fn clones_do_not_share_writes() {
        let mut original = KvCache::new(3);
        for p in 0..4 {
            original
                .append(&steps_from(p, 1), &steps_from(p, 1))
                .unwrap();
        }
        let mut copy = original.clone();
        // Diverge: the copy sees 100.., the original 4...
        let (copy_k, _) = copy
            .append(&steps_from(100, 1), &steps_from(100, 1))
            .unwrap();
        let (orig_k, _) = original
            .append(&steps_from(4, 1), &steps_from(4, 1))
            .unwrap();
        let mut c = values(&copy_k);
        let mut o = values(&orig_k);
        c.sort_unstable();
        o.sort_unstable();
        assert_eq!(c, vec![2, 3, 100]);
        assert_eq!(o, vec![2, 3, 4]);
        // And again, now that each owns its buffer.
        let (copy_k, _) = copy
            .append(&steps_from(101, 1), &steps_from(101, 1))
            .unwrap();
        let (orig_k, _) = original
            .append(&steps_from(5, 1), &steps_from(5, 1))
            .unwrap();
        let mut c = values(&copy_k);
        let mut o = values(&orig_k);
        c.sort_unstable();
        o.sort_unstable();
        assert_eq!(c, vec![3, 100, 101]);
        assert_eq!(o, vec![3, 4, 5]);
    }

    #[test]
    fn reset_forgets_and_a_new_batch_size_is_accepted_after_it() {
        let mut cache = KvCache::new(4);
        cache.append(&steps_from(0, 2), &steps_from(0, 2)).unwrap();
        assert_eq!(cache.batch_size(), Some(1));
        let two_rows = Tensor::zeros((2, 1, 1, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(cache.append(&two_rows, &two_rows).is_err());
        cache.reset();
        assert_eq!(cache.batch_size(), None);
        assert_eq!(cache.positions(1).unwrap(), vec![0]);
        let (k, _) = cache.append(&two_rows, &two_rows).unwrap();
        assert_eq!(k.dims(), &[2, 1, 1, 1]);
    }

    #[test]
    fn mismatched_keys_and_values_are_an_error() {
        let mut cache = KvCache::new(4);
        let k = Tensor::zeros((1, 1, 2, 1), DType::F32, &Device::Cpu).unwrap();
        let v = Tensor::zeros((1, 1, 3, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(cache.append(&k, &v).is_err());
    }
}
