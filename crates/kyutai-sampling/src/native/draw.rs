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
/// This is the first level: the winning block; [`gumbel_within`] is the second. Both are a
/// [`race`]. `known` and `uniforms` are scratch (their capacity is kept for the next call).
pub(crate) fn gumbel_block(
    sums: &[f64],
    rng: &mut impl RngCore,
    known: &mut Vec<f64>,
    uniforms: &mut Vec<f64>,
) -> Option<usize> {
    known.clear();
    known.extend_from_slice(sums);
    race(sums, known, |w| w, |_| 0.0, rng, uniforms)
}

/// The second level of the Gumbel-max draw ([`gumbel_block`]): the winning token of `block`,
/// whose first token is `start`.
pub(crate) fn gumbel_within(
    block: &[f32],
    start: usize,
    rng: &mut impl RngCore,
    uniforms: &mut Vec<f64>,
) -> Option<usize> {
    let mut weights = [0.0f64; BLOCK];
    let n = block.len().min(BLOCK);
    for (w, &x) in weights.iter_mut().zip(block) {
        *w = f64::from(x);
    }
    let mut known = weights;
    race(
        &weights[..n],
        &mut known[..n],
        |w| w,
        |_| 0.0,
        rng,
        uniforms,
    )
    .map(|i| start + i)
}

/// The uniform behind an exponential variate: `u` in the open interval `(0, 1)` (the 53-bit grid
/// shifted by half a step, which can round to 1), from one `u64` of the stream.
fn open_unit(rng: &mut impl RngCore) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// Relative slack of [`race`]'s bounds on a ratio: far beyond the rounding of the ratios and of
/// the logarithm (a few units in the last place of an f64).
const RATIO_SLACK: f64 = 1e-6;

/// The Gumbel-max race over items of weight `w_i`: the index maximising `ln(w_i) - ln(E_i)` over
/// the items of positive weight (the first on ties), where `E_i = -ln(u_i)` is the exponential
/// variate behind the Gumbel one, one `u64` of `rng` per positive item, in order.
///
/// Item `i`'s weight is `known[i]` when that is `>= 0`; otherwise it lies in
/// `[low[i], high(low[i])]` with `low[i] > 0`, and `exact(i)` computes it (stored in `known`).
/// Only the logarithms and weights that can matter are computed:
///
/// * `E` lies in `[1 - u, (1 - u) / u]` (from `ln x <= x - 1`), so each ratio `w / E` is bounded
///   without a logarithm, and `best`, the largest lower bound, is at most the largest ratio;
/// * an item whose upper bound is below `best * (1 - 1e-9)` is below the cut that the exact
///   ratios give, so it cannot win, nor set the largest ratio;
/// * for the others, the exact weight and `E` give the ratios; every key within a relative `1e-9`
///   of the largest ratio (far beyond the `1e-12` that rounding can move a key) is computed, and
///   the largest key wins, in index order.
///
/// So the winner and the random words consumed are those of computing every key. (A `u` that
/// rounds to 1 gives `E = -0`, whose ratio is `-inf`: such an item never wins, as before.)
pub(crate) fn race(
    low: &[f64],
    known: &mut [f64],
    high: impl Fn(f64) -> f64,
    mut exact: impl FnMut(usize) -> f64,
    rng: &mut impl RngCore,
    uniforms: &mut Vec<f64>,
) -> Option<usize> {
    uniforms.clear();
    let mut best = 0.0f64;
    for (&l, &k) in low.iter().zip(known.iter()) {
        let positive = if k >= 0.0 { k > 0.0 } else { l > 0.0 };
        // 0 marks an item without a variate (it never wins).
        let u = if positive { open_unit(rng) } else { 0.0 };
        uniforms.push(u);
        if positive && u < 1.0 {
            let w = if k >= 0.0 { k } else { l };
            best = best.max(w * u / (1.0 - u) * (1.0 - RATIO_SLACK));
        }
    }
    let cut = best * (1.0 - 1e-9);
    // The survivors' exact weights and variates (`uniforms[i]` becomes `E_i`, or 0 if ruled out).
    let mut top = 0.0f64;
    for (i, ((&l, k), u)) in low
        .iter()
        .zip(known.iter_mut())
        .zip(uniforms.iter_mut())
        .enumerate()
    {
        if *u == 0.0 {
            continue;
        }
        if *u >= 1.0 {
            *u = 0.0;
            continue;
        }
        let w_high = if *k >= 0.0 { *k } else { high(l) };
        if w_high / (1.0 - *u) * (1.0 + RATIO_SLACK) < cut {
            *u = 0.0;
            continue;
        }
        if *k < 0.0 {
            *k = exact(i);
        }
        *u = -u.ln();
        if *k > 0.0 {
            top = top.max(*k / *u);
        }
    }
    let cut = top * (1.0 - 1e-9);
    let mut winner: Option<(f64, usize)> = None;
    for (i, (&w, &e)) in known.iter().zip(uniforms.iter()).enumerate() {
        if e > 0.0 && w > 0.0 && w / e >= cut {
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
        let (mut known, mut uniforms) = (Vec::new(), Vec::new());
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
            let got = gumbel_block(&sums, &mut b, &mut known, &mut uniforms).and_then(|blk| {
                let start = blk * BLOCK;
                let block = &weights[start..(start + BLOCK).min(len)];
                gumbel_within(block, start, &mut b, &mut uniforms)
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
    fn bounded_sums_give_the_same_winner_and_stream() {
        let mut gen = ChaCha8Rng::seed_from_u64(9);
        let (mut known, mut uniforms, mut plain_known) = (Vec::new(), Vec::new(), Vec::new());
        let mut computed = 0usize;
        let mut blocks = 0usize;
        for case in 0..300 {
            let n = 1 + (gen.next_u32() % 600) as usize;
            let sums: Vec<f64> = (0..n)
                .map(|_| match gen.next_u32() % 6 {
                    0 => 0.0,
                    1 => 1.0,
                    _ => (gen.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 50.0,
                })
                .collect();
            // Valid bounds: `low` at most the sum, `high(low)` at least it, within a factor 64.
            let spread = 64.0;
            let low: Vec<f64> = sums
                .iter()
                .map(|&s| s / (1.0 + (spread - 1.0) * unit(&mut gen)))
                .collect();
            known.clear();
            known.extend(sums.iter().map(|&s| if s > 0.0 { -1.0 } else { 0.0 }));
            let seed = gen.next_u64();
            let (mut a, mut b) = (
                ChaCha8Rng::seed_from_u64(seed),
                ChaCha8Rng::seed_from_u64(seed),
            );
            let expected = gumbel_block(&sums, &mut a, &mut plain_known, &mut uniforms);
            let mut calls = 0;
            let got = race(
                &low,
                &mut known,
                |l| l * spread,
                |i| {
                    calls += 1;
                    sums[i]
                },
                &mut b,
                &mut uniforms,
            );
            assert_eq!(got, expected, "case {case}");
            assert_eq!(a.next_u64(), b.next_u64(), "case {case}: same words");
            computed += calls;
            blocks += n;
        }
        // The bounds spare most of the exact sums.
        assert!(computed * 2 < blocks, "{computed} of {blocks}");
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
