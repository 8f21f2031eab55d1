//! Turning random bits into tokens: uniform numbers, the two-level inverse-CDF walk over block
//! sums, and Gumbel noise.

use rand::RngCore;

use super::weights::BLOCK;

/// A uniform number in `[0, 1)` from the top 53 bits of one `u64` of the stream.
pub(crate) fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard Gumbel variate, `-ln(-ln u)` with `u` uniform in the open interval `(0, 1)` (the
/// 53-bit grid shifted by half a step), from one `u64` of the stream. Unlike candle, the uniform
/// is not clipped, so the noise has its full range. (The draws use [`exponential`], whose
/// `-ln` this is.)
#[cfg(test)]
pub(crate) fn gumbel(rng: &mut impl RngCore) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -(-u.ln()).ln()
}

/// Draws index `i` with probability `weights[i] / total`, where `sums` holds the sums of the
/// [`BLOCK`]s of `weights` and `total` their sum; `u` is uniform in `[0, 1)`.
///
/// The walk finds the block first, then the token in it, accumulating in f64. A token of weight
/// 0 is never returned: should rounding carry the target past the last token of a block, the
/// block's last positive-weight token is returned. `None` only when every weight is 0.
pub(crate) fn from_blocks(weights: &[f32], sums: &[f64], total: f64, u: f64) -> Option<usize> {
    let (b, target) = pick_block(sums, total, u)?;
    let start = b * BLOCK;
    let block = weights.get(start..(start + BLOCK).min(weights.len()))?;
    within(block, start, target)
}

/// The first step of [`from_blocks`]: the block the target `u * total` falls in and the target
/// within it (`+inf` when rounding carried it past the end: the last block with any weight).
pub(crate) fn pick_block(sums: &[f64], total: f64, u: f64) -> Option<(usize, f64)> {
    let mut target = u * total;
    let mut last = None;
    for (b, &sum) in sums.iter().enumerate() {
        if sum > 0.0 {
            last = Some(b);
            if target < sum {
                return Some((b, target));
            }
            target -= sum;
        }
    }
    // Rounding carried the target past the end: take the last block with any weight.
    last.map(|b| (b, f64::INFINITY))
}

/// The second step of [`from_blocks`]: the token of `block` (whose first token is `start`) at
/// which the running sum of its weights first exceeds `target`, or the block's last
/// positive-weight token when it never does.
pub(crate) fn within(block: &[f32], start: usize, target: f64) -> Option<usize> {
    let mut acc = 0.0f64;
    let mut last = None;
    for (i, &w) in block.iter().enumerate() {
        if w > 0.0 {
            acc += f64::from(w);
            last = Some(start + i);
            if acc > target {
                return last;
            }
        }
    }
    last
}

/// Gumbel-max over the weights, drawn in two levels: a Gumbel variate per block offset by the
/// log of the block's sum picks the block, then a Gumbel variate per token offset by the log of
/// its weight picks the token in it.
///
/// By the max-stability of the Gumbel law, the maximum of `ln w_i + g_i` over a block is itself
/// `ln(sum of the block) + g` for a fresh Gumbel `g`, and which token attains it is independent
/// of its value; so this is the argmax of `ln w_i + g_i` over the whole vocabulary, in law, with
/// `V / BLOCK + BLOCK` variates instead of `V`. Tokens of weight 0 never win. `None` only when
/// every weight is 0.
///
/// This is the first level: the winning block; [`gumbel_within`] is the second. `scratch` holds
/// one exponential variate per block (its capacity is kept for the next call).
///
/// Computing `ln(sum) + g` takes three logarithms per block; the key is `ln(sum / E)` with
/// `E = -ln u` the exponential variate behind `g = -ln E`, so the ratio `sum / E` ranks the
/// blocks as the key does, up to rounding. The ratios (one logarithm per block) rule out every
/// block more than a relative `1e-9` below the best ratio, far beyond the `1e-12` that rounding
/// can move a key, and the exact keys of the few that remain decide, in block order as before:
/// the same variates and the same winner as computing every key, at a third of the logarithms.
pub(crate) fn gumbel_block(
    sums: &[f64],
    rng: &mut impl RngCore,
    scratch: &mut Vec<f64>,
) -> Option<usize> {
    scratch.clear();
    for &sum in sums {
        // One variate per positive block, in block order (the stream `gumbel` would consume).
        scratch.push(if sum > 0.0 { exponential(rng) } else { 1.0 });
    }
    pruned_argmax(sums, scratch)
}

/// The second level of the Gumbel-max draw ([`gumbel_block`]): the winning token of `block`,
/// whose first token is `start`, pruned the same way.
pub(crate) fn gumbel_within(block: &[f32], start: usize, rng: &mut impl RngCore) -> Option<usize> {
    let mut weights = [0.0f64; BLOCK];
    let mut variates = [1.0f64; BLOCK];
    for ((w, e), &x) in weights.iter_mut().zip(variates.iter_mut()).zip(block) {
        *w = f64::from(x);
        if x > 0.0 {
            *e = exponential(rng);
        }
    }
    let n = block.len().min(BLOCK);
    pruned_argmax(&weights[..n], &variates[..n]).map(|i| start + i)
}

/// `-ln u` for the `u` of [`gumbel`]: the exponential variate whose `-ln` is the Gumbel one.
fn exponential(rng: &mut impl RngCore) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -u.ln()
}

/// The index maximising `ln(w) + (-ln e)` over the positive `w` (the first on ties), computing
/// that key only where `w / e` is within a relative `1e-9` of its maximum (see [`gumbel_block`]).
fn pruned_argmax(weights: &[f64], variates: &[f64]) -> Option<usize> {
    let best = weights
        .iter()
        .zip(variates)
        .filter(|(&w, _)| w > 0.0)
        .map(|(&w, &e)| w / e)
        .fold(0.0f64, f64::max);
    let cut = best * (1.0 - 1e-9);
    let mut winner: Option<(f64, usize)> = None;
    for (i, (&w, &e)) in weights.iter().zip(variates).enumerate() {
        if w > 0.0 && w / e >= cut {
            let key = w.ln() + -(e.ln());
            if winner.is_none_or(|(k, _)| key > k) {
                winner = Some((key, i));
            }
        }
    }
    winner.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn sums_of(weights: &[f32]) -> Vec<f64> {
        weights
            .chunks(BLOCK)
            .map(|b| b.iter().map(|&w| f64::from(w)).sum())
            .collect()
    }

    #[test]
    fn the_walk_inverts_the_cdf() {
        let weights: Vec<f32> = (0..600).map(|i| (i % 3) as f32).collect();
        let sums = sums_of(&weights);
        let total: f64 = sums.iter().sum();
        // Each token i of weight w covers [cum_before, cum_before + w) of [0, total).
        let mut cum = 0.0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                for frac in [0.25, 0.5, 0.75] {
                    let u = (cum + frac * f64::from(w)) / total;
                    assert_eq!(from_blocks(&weights, &sums, total, u), Some(i));
                }
            }
            cum += f64::from(w);
        }
        // Past the end: the last positive-weight token, never a zero-weight one.
        assert_eq!(from_blocks(&weights, &sums, total, 1.0), Some(599));
        assert_eq!(from_blocks(&[0.0; 10], &[0.0], 0.0, 0.3), None);
    }

    /// The unpruned two-level Gumbel-max: every key computed.
    fn naive_gumbel(weights: &[f32], sums: &[f64], rng: &mut ChaCha8Rng) -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        for (b, &sum) in sums.iter().enumerate() {
            if sum > 0.0 {
                let key = sum.ln() + gumbel(rng);
                if best.is_none_or(|(k, _)| key > k) {
                    best = Some((key, b));
                }
            }
        }
        let (_, b) = best?;
        let start = b * BLOCK;
        let mut winner: Option<(f64, usize)> = None;
        for (i, &w) in weights[start..(start + BLOCK).min(weights.len())]
            .iter()
            .enumerate()
        {
            if w > 0.0 {
                let key = f64::from(w).ln() + gumbel(rng);
                if winner.is_none_or(|(k, _)| key > k) {
                    winner = Some((key, start + i));
                }
            }
        }
        winner.map(|(_, i)| i)
    }

    #[test]
    fn pruned_gumbel_draws_the_same_tokens_from_the_same_stream() {
        let mut gen = ChaCha8Rng::seed_from_u64(5);
        let mut scratch = Vec::new();
        for case in 0..300 {
            let len = 1 + (gen.next_u32() % 3000) as usize;
            // Equal weights (exact ties), zeros, and a wide range of magnitudes.
            let weights: Vec<f32> = (0..len)
                .map(|_| match gen.next_u32() % 8 {
                    0 => 0.0,
                    1 => 1.0,
                    2 => f32::from_bits(1),
                    _ => (gen.next_u32() >> 8) as f32 / (1u32 << 24) as f32,
                })
                .collect();
            let sums = sums_of(&weights);
            let seed = gen.next_u64();
            let (mut a, mut b) = (
                ChaCha8Rng::seed_from_u64(seed),
                ChaCha8Rng::seed_from_u64(seed),
            );
            let expected = naive_gumbel(&weights, &sums, &mut a);
            let got = gumbel_block(&sums, &mut b, &mut scratch).and_then(|blk| {
                let start = blk * BLOCK;
                gumbel_within(&weights[start..(start + BLOCK).min(len)], start, &mut b)
            });
            assert_eq!(got, expected, "case {case}");
            assert_eq!(
                a.next_u64(),
                b.next_u64(),
                "case {case}: same variates consumed"
            );
        }
    }

    #[test]
    fn uniforms_cover_their_ranges() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..1000 {
            let u = unit(&mut rng);
            assert!((0.0..1.0).contains(&u));
            assert!(gumbel(&mut rng).is_finite());
        }
    }
}
