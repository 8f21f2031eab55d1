//! The streaming attention mask.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The additive mask `[batch, 1, t, keys]` for queries at positions
/// `first_query..first_query + t` over keys at `key_positions`: `0` where
/// `last_reset[b] <= key <= query <= key + context`, `-inf` elsewhere. (moshi's rule: causal,
/// bounded by the context, and blind to anything before a per-row reset.)
///
/// Returns `None` when no entry would be masked for sure: a single query and no row reset after
/// the oldest key (the cache then only holds keys in the window).
pub(crate) fn attention_mask(
    key_positions: &[usize],
    first_query: usize,
    t: usize,
    context: usize,
    last_reset: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Option<Tensor>> {
    let oldest = key_positions.iter().min().copied().unwrap_or(0);
    if t == 1 && last_reset.iter().all(|&r| r <= oldest) {
        return Ok(None);
    }
    let keys = key_positions.len();
    let end = first_query.checked_add(t);
    let len = last_reset
        .len()
        .checked_mul(t)
        .and_then(|n| n.checked_mul(keys));
    let (Some(end), Some(len)) = (end, len) else {
        return Err(Error::input(
            "xs",
            format!("{t} steps from position {first_query} overflow the attention mask"),
        ));
    };
    let mut mask = Vec::new();
    mask.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            what: "the attention mask".into(),
            bytes: len as u128 * 4,
        })?;
    for &reset in last_reset {
        for q in first_query..end {
            for &k in key_positions {
                // `k + context` saturates: a window reaching past usize::MAX covers every query.
                let visible = reset <= k && k <= q && q <= k.saturating_add(context);
                mask.push(if visible { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    let mask = Tensor::from_vec(mask, (last_reset.len(), 1, t, keys), device)?.to_dtype(dtype)?;
    Ok(Some(mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    fn visible(mask: &Tensor, b: usize) -> Vec<Vec<bool>> {
        mask.i((b, 0))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|v| v == 0.0).collect())
            .collect()
    }

    #[test]
    fn prefill_is_causal() {
        let mask = attention_mask(&[0, 1, 2], 0, 3, 8, &[0], DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(
            visible(&mask, 0),
            vec![
                vec![true, false, false],
                vec![true, true, false],
                vec![true, true, true]
            ]
        );
    }

    #[test]
    fn keys_older_than_the_context_are_masked() {
        // Context 2: a query sees keys at distance 0, 1 and 2 (moshi's `q <= k + context`).
        let mask = attention_mask(&[0, 1, 2, 3, 4], 0, 5, 2, &[0], DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v = visible(&mask, 0);
        assert_eq!(v[4], vec![false, false, true, true, true]);
        assert_eq!(v[3], vec![false, true, true, true, false]);
    }

    #[test]
    fn rotated_key_order_is_followed() {
        // A wrapped cache returns keys out of order: slots hold positions 4, 5, 2, 3.
        let mask = attention_mask(&[4, 5, 2, 3], 4, 2, 8, &[0], DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v = visible(&mask, 0);
        assert_eq!(v[0], vec![true, false, true, true]);
        assert_eq!(v[1], vec![true, true, true, true]);
    }

    #[test]
    fn a_reset_row_does_not_see_keys_before_its_reset() {
        let mask = attention_mask(&[0, 1, 2, 3], 3, 1, 8, &[0, 2], DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(visible(&mask, 0), vec![vec![true, true, true, true]]);
        assert_eq!(visible(&mask, 1), vec![vec![false, false, true, true]]);
    }

    #[test]
    fn a_single_step_without_resets_needs_no_mask() {
        let mask =
            attention_mask(&[5, 6, 7, 8], 8, 1, 4, &[0, 0], DType::F32, &Device::Cpu).unwrap();
        assert!(mask.is_none());
    }

    #[test]
    fn the_mask_has_the_requested_dtype() {
        let mask = attention_mask(&[0, 1], 0, 2, 4, &[0], DType::BF16, &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(mask.dtype(), DType::BF16);
        assert_eq!(mask.dims(), &[1, 1, 2, 2]);
    }
}
