//! Unnormalised softmax weights, `exp((x - max) / T)`, computed as `2^((x - max) * scale)` with
//! `scale = log2(e) / T` and a polynomial `exp2` that the compiler vectorises.
//!
//! The polynomial is a degree-5 near-minimax fit of `2^f` on `[-1/2, 1/2]` (constant term exactly
//! 1), evaluated in f32 with Horner's rule: its relative error, rounding included, is below
//! `2e-7`, about one and a half units in the last place. The integer part of the exponent is added
//! to the float's exponent bits. Rounding `scale` and `y = (x - max) * scale` to f32 adds a
//! relative error of up to `ln 2 * |y| * 2^-23` (2e-6 for a weight of `e^-16`); candle's f32 softmax, which rounds
//! `x / T` before subtracting the maximum, has errors of the same order.
//!
//! Weights are relative to the largest logit, whose weight is exactly 1. A `-inf` logit, or one
//! more than `127 ln 2 ≈ 88.0` temperatures below the maximum, weighs exactly 0, so it is never
//! drawn. Weights below `2^-125` (logits more than 86.6 temperatures below the maximum) are not
//! accurate, but they stay below `2^-125`: such a token's probability is below 1e-37 either way.
//!
//! Every function here uses only IEEE-754 additions, multiplications and bit operations in a
//! fixed order (Rust never fuses them into FMAs), so a weight is the same bits on every platform.

use super::view::{Visit, LANES};

/// Tokens per block of the block sums that the inverse-CDF draw walks first.
pub(crate) const BLOCK: usize = 256;
const _: () = assert!(BLOCK.is_multiple_of(LANES));

/// `1.5 * 2^23`: adding it rounds an f32 in `[-2^22, 2^22]` to an integer, which then sits in the
/// low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;
const _: () = assert!(ROUNDER.to_bits() & 0x1ff == 0);
// The fitted coefficients, as exact f32 bit patterns (C1 is close to, but not, ln 2).
/// 0.693147 (the f32 nearest ln 2 is 0.6931472).
const C1: f32 = f32::from_bits(0x3f31_7215);
/// 0.24022242
const C2: f32 = f32::from_bits(0x3e75_fcde);
/// 0.05550734
const C3: f32 = f32::from_bits(0x3d63_5baa);
/// 0.009671518
const C4: f32 = f32::from_bits(0x3c1e_7549);
/// 0.0013264735
const C5: f32 = f32::from_bits(0x3aad_dd11);

/// `log2(e) / temperature`, rounded to f32 and kept positive and finite. The samplers only pass
/// temperatures within [`limits`](crate::limits); outside them, temperatures below about `4e-39`
/// would act as that bound and temperatures above about `1e45` as if infinite.
pub(crate) fn scale(temperature: f64) -> f32 {
    let scale = (std::f64::consts::LOG2_E / temperature) as f32;
    scale.clamp(f32::from_bits(1), f32::MAX)
}

/// The weight of logit `x` when the largest logit is `max` (so `x <= max`): at most 1, and exactly
/// 1 at `x = max` (the integer part of `y <= 0` is 0 only when `f = y <= 0`, which the polynomial
/// keeps at or below 1; below, `p(f) < 2` is halved at least once).
#[inline(always)]
pub(crate) fn weight(x: f32, max: f32, scale: f32) -> f32 {
    let y = (x - max) * scale;
    // Clamping at -127 (NaN and -inf included) makes the bit arithmetic below give exactly +0.0
    // there, and keeps it in range for every other input.
    let y = if y > -127.0 { y } else { -127.0 };
    let rounded = y + ROUNDER;
    let whole = rounded - ROUNDER;
    let f = y - whole;
    let p = 1.0 + f * (C1 + f * (C2 + f * (C3 + f * (C4 + f * C5))));
    // `rounded`'s bits are ROUNDER's plus the integer part; ROUNDER's low 9 bits are zero, so
    // shifting by 23 leaves exactly the integer part in the exponent field.
    let exponent = rounded.to_bits() << 23;
    f32::from_bits(p.to_bits().wrapping_add(exponent))
}

/// Accumulator lanes of the weight kernels: the weights of a chunk are computed into a local
/// array (which the compiler vectorises), then its two halves are added to the accumulators
/// (eight lanes keep the polynomial's temporaries in registers).
const HALF: usize = LANES / 2;

/// Sum of the lanes, in f64, in lane order.
#[inline(always)]
fn reduce(acc: &[f32; HALF]) -> f64 {
    acc.iter().map(|&x| f64::from(x)).sum()
}

/// The weights of `N` logits (a multiple of [`HALF`]), computed [`HALF`] lanes at a time, which
/// the compiler vectorises while keeping the polynomial's temporaries in registers.
#[inline(always)]
pub(crate) fn lane_weights<const N: usize>(values: &[f32; N], max: f32, scale: f32) -> [f32; N] {
    let mut w = [0.0f32; N];
    for (w, values) in w.chunks_exact_mut(HALF).zip(values.chunks_exact(HALF)) {
        for (w, &x) in w.iter_mut().zip(values) {
            *w = weight(x, max, scale);
        }
    }
    w
}

/// Hands `f` the weights of each whole chunk of `values` (whose length is a multiple of
/// [`LANES`]), in order, with the index one past the chunk's end (`values` starts at index
/// `start`): the loop that every weight kernel below folds its chunks with.
#[inline(always)]
fn each_chunk(
    start: usize,
    values: &[f32],
    max: f32,
    scale: f32,
    mut f: impl FnMut(usize, &[f32; LANES]),
) {
    let mut end = start;
    for chunk in values.as_chunks::<LANES>().0 {
        end += LANES;
        f(end, &lane_weights(chunk, max, scale));
    }
}

/// Adds a chunk of weights to the accumulators: lane `j` gets `w[j]`, then `w[j + HALF]`.
#[inline(always)]
fn accumulate(acc: &mut [f32; HALF], w: &[f32; LANES]) {
    let (low, high) = w.split_at(HALF);
    for (a, (&p, &q)) in acc.iter_mut().zip(low.iter().zip(high)) {
        *a += p;
        *a += q;
    }
}

/// The weights of a partial chunk, as a full chunk padded with zero weights.
#[inline(always)]
fn tail_weights(values: &[f32], max: f32, scale: f32) -> [f32; LANES] {
    let mut w = [0.0f32; LANES];
    for (w, &x) in w.iter_mut().zip(values) {
        *w = weight(x, max, scale);
    }
    w
}

/// Writes the weight of every visited logit to `out` and the sum of each [`BLOCK`] to `sums`.
pub(crate) struct StoreWeights<'a> {
    max: f32,
    scale: f32,
    out: &'a mut [f32],
    sums: &'a mut [f64],
    acc: [f32; HALF],
}

impl<'a> StoreWeights<'a> {
    /// `out` holds one slot per logit, `sums` one per block (`len.div_ceil(BLOCK)`).
    pub(crate) fn new(max: f32, scale: f32, out: &'a mut [f32], sums: &'a mut [f64]) -> Self {
        debug_assert_eq!(sums.len(), out.len().div_ceil(BLOCK));
        Self {
            max,
            scale,
            out,
            sums,
            acc: [0.0; HALF],
        }
    }

    /// Stores the sum of the last, partial block (call once the view has been visited).
    pub(crate) fn finish(self) {
        if !self.out.len().is_multiple_of(BLOCK) {
            if let Some(last) = self.sums.last_mut() {
                *last = reduce(&self.acc);
            }
        }
    }
}

impl Visit for StoreWeights<'_> {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        let (max, scale) = (self.max, self.scale);
        let Some(out) = self.out.get_mut(start..start + values.len()) else {
            return;
        };
        let mut acc = self.acc;
        // A loop of its own rather than `each_chunk`: the portable build keeps it faster.
        let chunks = out
            .chunks_exact_mut(LANES)
            .zip(values.as_chunks::<LANES>().0);
        for (i, (out, values)) in chunks.enumerate() {
            let w = lane_weights(values, max, scale);
            out.copy_from_slice(&w);
            accumulate(&mut acc, &w);
            let end = start + (i + 1) * LANES;
            if end.is_multiple_of(BLOCK) {
                if let Some(sum) = self.sums.get_mut(end / BLOCK - 1) {
                    *sum = reduce(&acc);
                }
                acc = [0.0; HALF];
            }
        }
        self.acc = acc;
    }

    fn tail(&mut self, start: usize, values: &[f32]) {
        let w = tail_weights(values, self.max, self.scale);
        let out = self.out.get_mut(start..).unwrap_or_default();
        for (o, &w) in out.iter_mut().zip(&w) {
            *o = w;
        }
        accumulate(&mut self.acc, &w);
    }
}

/// The sums of the [`BLOCK`]s of weights, as [`StoreWeights`] computes them (the same bits),
/// without storing the weights: the draws that read one block's weights recompute it with
/// [`BlockWeights`].
pub(crate) struct BlockSums<'a> {
    max: f32,
    scale: f32,
    len: usize,
    sums: &'a mut [f64],
    acc: [f32; HALF],
}

impl<'a> BlockSums<'a> {
    /// `sums` holds one slot per block of a `len`-token view (`len.div_ceil(BLOCK)`).
    pub(crate) fn new(max: f32, scale: f32, len: usize, sums: &'a mut [f64]) -> Self {
        debug_assert_eq!(sums.len(), len.div_ceil(BLOCK));
        Self {
            max,
            scale,
            len,
            sums,
            acc: [0.0; HALF],
        }
    }

    /// Stores the sum of the last, partial block (call once the view has been visited).
    pub(crate) fn finish(self) {
        if !self.len.is_multiple_of(BLOCK) {
            if let Some(last) = self.sums.last_mut() {
                *last = reduce(&self.acc);
            }
        }
    }
}

impl Visit for BlockSums<'_> {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        let (max, scale) = (self.max, self.scale);
        let sums = &mut *self.sums;
        let mut acc = self.acc;
        each_chunk(start, values, max, scale, |end, w| {
            accumulate(&mut acc, w);
            if end.is_multiple_of(BLOCK) {
                if let Some(sum) = sums.get_mut(end / BLOCK - 1) {
                    *sum = reduce(&acc);
                }
                acc = [0.0; HALF];
            }
        });
        self.acc = acc;
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        let w = tail_weights(values, self.max, self.scale);
        accumulate(&mut self.acc, &w);
    }
}

/// The weights of one [`BLOCK`] (visit its range only): slot `i` gets the weight of token
/// `start + i`, the same bits as [`StoreWeights`] stores.
pub(crate) struct BlockWeights<'a> {
    max: f32,
    scale: f32,
    start: usize,
    out: &'a mut [f32; BLOCK],
}

impl<'a> BlockWeights<'a> {
    pub(crate) fn new(max: f32, scale: f32, start: usize, out: &'a mut [f32; BLOCK]) -> Self {
        Self {
            max,
            scale,
            start,
            out,
        }
    }
}

impl Visit for BlockWeights<'_> {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        let (max, scale) = (self.max, self.scale);
        let Some(out) = start
            .checked_sub(self.start)
            .and_then(|at| self.out.get_mut(at..at + values.len()))
        else {
            return;
        };
        let mut outs = out.chunks_exact_mut(LANES);
        each_chunk(start, values, max, scale, |_, w| {
            if let Some(out) = outs.next() {
                out.copy_from_slice(w);
            }
        });
    }

    fn tail(&mut self, start: usize, values: &[f32]) {
        let w = tail_weights(values, self.max, self.scale);
        let at = start.saturating_sub(self.start);
        let out = self.out.get_mut(at..).unwrap_or_default();
        for (o, &w) in out.iter_mut().zip(&w) {
            *o = w;
        }
    }
}

/// Sums the weights of the visited logits (block by block, like [`StoreWeights`], in f64).
pub(crate) struct SumWeights {
    max: f32,
    scale: f32,
    acc: [f32; HALF],
    total: f64,
}

impl SumWeights {
    pub(crate) fn new(max: f32, scale: f32) -> Self {
        Self {
            max,
            scale,
            acc: [0.0; HALF],
            total: 0.0,
        }
    }

    /// The sum of every weight.
    pub(crate) fn finish(self) -> f64 {
        self.total + reduce(&self.acc)
    }
}

impl Visit for SumWeights {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        let (max, scale) = (self.max, self.scale);
        let mut acc = self.acc;
        let mut total = self.total;
        each_chunk(start, values, max, scale, |end, w| {
            accumulate(&mut acc, w);
            if end.is_multiple_of(BLOCK) {
                total += reduce(&acc);
                acc = [0.0; HALF];
            }
        });
        self.acc = acc;
        self.total = total;
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        let w = tail_weights(values, self.max, self.scale);
        accumulate(&mut self.acc, &w);
    }
}

/// `2^-125`: weights below it are not accurate (but stay below it), so bounds on sums of weights
/// allow this much per token.
pub(crate) const TINY: f64 = 2.350_988_701_644_575e-38;

/// The sum of one block's weights (`w`, zero past the end of a partial block) exactly as
/// [`BlockSums`] computes it: the same bits.
pub(crate) fn block_total(w: &[f32; BLOCK]) -> f64 {
    let mut acc = [0.0f32; HALF];
    for chunk in w.as_chunks::<LANES>().0 {
        accumulate(&mut acc, chunk);
    }
    reduce(&acc)
}

/// Groups of [`GROUP`](super::GROUP) tokens per [`BLOCK`].
const GROUPS_PER_BLOCK: usize = BLOCK / super::GROUP;
const _: () = assert!(BLOCK.is_multiple_of(super::GROUP));
const _: () = assert!(LANES.is_multiple_of(GROUPS_PER_BLOCK));

/// For each block, the sum in f64 of the weights of its groups' maxima (`maxima` holds one per
/// [`GROUP`](super::GROUP) tokens), into `out` (one slot per block).
pub(crate) fn block_maxima_weights(maxima: &[f32], max: f32, scale: f32, out: &mut [f64]) {
    let mut out = out.iter_mut();
    let (chunks, rest) = maxima.as_chunks::<LANES>();
    for chunk in chunks {
        let w = lane_weights(chunk, max, scale);
        for group in w.as_chunks::<GROUPS_PER_BLOCK>().0 {
            if let Some(o) = out.next() {
                *o = group.iter().map(|&w| f64::from(w)).sum();
            }
        }
    }
    for group in rest.chunks(GROUPS_PER_BLOCK) {
        if let Some(o) = out.next() {
            *o = group
                .iter()
                .map(|&m| f64::from(weight(m, max, scale)))
                .sum();
        }
    }
}

/// For values `m` (group maxima): the sum, in f64, of the weights of those below `below`, and
/// the number of the others.
pub(crate) fn group_split(values: &[f32], below: f32, max: f32, scale: f32) -> (f64, usize) {
    let mut sum = [0.0f64; LANES];
    let mut above = 0;
    let (chunks, rest) = values.as_chunks::<LANES>();
    for chunk in chunks {
        let w = lane_weights(chunk, max, scale);
        for ((s, &w), &m) in sum.iter_mut().zip(&w).zip(chunk) {
            *s += if m < below { f64::from(w) } else { 0.0 };
            above += usize::from(m >= below);
        }
    }
    let mut total: f64 = sum.iter().sum();
    for &m in rest {
        if m < below {
            total += f64::from(weight(m, max, scale));
        } else {
            above += 1;
        }
    }
    (total, above)
}

/// The sum of the weights `w = exp(y)` with `y = (x − max) / T`, and the sums of `w·y` and
/// `w·y²` (the mean and spread of `y` under the softmax, which give its entropy), in f32 lanes
/// flushed to f64 every block.
pub(crate) struct WeightedMoments<'a> {
    max: f32,
    scale: f32,
    inv_t: f32,
    acc: [[f32; LANES]; 3],
    total: [f64; 3],
    /// Weight per bin of `-y`, each bin [`HIST_WIDTH`] wide (the last one open-ended).
    bins: &'a mut [f64],
}

/// Width of a bin of [`WeightedMoments`]' histogram of `-y`, in nats.
pub(crate) const HIST_WIDTH: f32 = 0.125;

impl<'a> WeightedMoments<'a> {
    /// `scale` is `log2(e) / T` and `inv_t` is `1 / T`; `bins` (zeroed here) receives the
    /// histogram of the weights by `-y`.
    pub(crate) fn new(max: f32, scale: f32, inv_t: f32, bins: &'a mut [f64]) -> Self {
        bins.iter_mut().for_each(|b| *b = 0.0);
        Self {
            max,
            scale,
            inv_t,
            acc: [[0.0; LANES]; 3],
            total: [0.0; 3],
            bins,
        }
    }

    /// `(Σw, Σw·y, Σw·y²)`.
    pub(crate) fn finish(mut self) -> (f64, f64, f64) {
        self.flush();
        (self.total[0], self.total[1], self.total[2])
    }

    fn flush(&mut self) {
        for (total, acc) in self.total.iter_mut().zip(&mut self.acc) {
            *total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
            *acc = [0.0; LANES];
        }
    }

    #[inline(always)]
    fn add(&mut self, values: &[f32], w: &[f32; LANES]) {
        let [a0, a1, a2] = &mut self.acc;
        for (i, (&x, &w)) in values.iter().zip(w).enumerate().take(LANES) {
            // A weight of 0 (masked or negligible) adds nothing, whatever its y.
            let y = if w > 0.0 {
                (x - self.max) * self.inv_t
            } else {
                0.0
            };
            a0[i] += w;
            a1[i] += w * y;
            a2[i] += w * y * y;
            if w > 0.0 {
                let bin = ((-y) * (1.0 / HIST_WIDTH)) as usize;
                let last = self.bins.len().saturating_sub(1);
                if let Some(b) = self.bins.get_mut(bin.min(last)) {
                    *b += f64::from(w);
                }
            }
        }
    }
}

impl Visit for WeightedMoments<'_> {
    fn run(&mut self, start: usize, values: &[f32]) {
        for (i, chunk) in values.as_chunks::<LANES>().0.iter().enumerate() {
            let w = lane_weights(chunk, self.max, self.scale);
            self.add(chunk, &w);
            if (start + (i + 1) * LANES).is_multiple_of(BLOCK) {
                self.flush();
            }
        }
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        let w = tail_weights(values, self.max, self.scale);
        self.add(values, &w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::view::View;

    #[test]
    fn weight_is_exp_to_f32_accuracy() {
        // Error sources: the polynomial (below 2e-7, relative), and the roundings of `scale`
        // (log2(e) in f32) and of `y = (x - max) * scale`, each up to `|y| * 2^-24` on `y`,
        // which moves `2^y` by up to `ln 2 * |y| * 2^-23`.
        let scale = scale(1.0);
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -(i as f32) * 4e-4; // 0 down to -80
            let w = weight(x, 0.0, scale);
            let exact = f64::from(x).exp();
            let y = f64::from(x) * std::f64::consts::LOG2_E;
            let allowed = 2e-7 + y.abs() * std::f64::consts::LN_2 * 2f64.powi(-23);
            worst = worst.max((f64::from(w) / exact - 1.0).abs() / allowed);
        }
        assert!(worst <= 1.0, "worst error {worst} times the bound");
    }

    #[test]
    fn weights_never_exceed_one() {
        // `y = x` (max 0, scale 1): every f32 in [-2^-20, 0] and around each half-integer and
        // integer of [-3, 0] (where the integer part changes), and a grid over the rest.
        let s = 1.0;
        let mut ys: Vec<f32> = (0..=(1u32 << 16))
            .map(|i| -(i as f32) * 2f32.powi(-36))
            .collect();
        for edge in [-0.5f32, -1.0, -1.5, -2.0, -2.5, -3.0] {
            let mut y = edge;
            for _ in 0..20_000 {
                ys.extend([y, -y.abs()]);
                y = y.next_up();
            }
            let mut y = edge;
            for _ in 0..20_000 {
                ys.push(y);
                y = y.next_down();
            }
        }
        ys.extend((0..200_000).map(|i| -(i as f32) * 6.3e-4));
        for y in ys {
            let w = weight(y, 0.0, s);
            assert!(w <= 1.0, "weight({y:e}) = {w}");
        }
        assert_eq!(weight(0.0, 0.0, s), 1.0);
    }

    #[test]
    fn weight_edges() {
        let s = scale(1.0);
        assert_eq!(weight(3.5, 3.5, s), 1.0, "the maximum weighs exactly 1");
        assert_eq!(weight(f32::NEG_INFINITY, 0.0, s), 0.0);
        assert_eq!(weight(-88.1, 0.0, s), 0.0, "zero beyond 127 ln 2");
        assert!(weight(-86.0, 0.0, s) > 0.0);
        for i in 0..2000 {
            // Where the exact weight is below 2^-125, the computed one may be inaccurate, but it
            // stays in [0, 2^-125].
            let w = weight(-86.7 - i as f32 * 1e-3, 0.0, s);
            assert!((0.0..=2f32.powi(-125)).contains(&w), "{w:e}");
        }
        assert_eq!(weight(f32::NAN, 0.0, s), 0.0);
        // Temperatures at and beyond the ends of the f32 range.
        let cold = scale(1e-300);
        assert_eq!(cold, f32::MAX);
        assert_eq!(weight(1.0 - 1e-7, 1.0, cold), 0.0);
        assert_eq!(weight(1.0, 1.0, cold), 1.0);
        let hot = scale(1e300);
        assert!(hot > 0.0);
        assert_eq!(weight(-1e30, 1e30, hot), 1.0);
        assert_eq!(weight(f32::NEG_INFINITY, 0.0, hot), 0.0);
    }

    #[test]
    fn one_block_recomputed_is_the_same_bits_as_the_block_sums() {
        for len in [16usize, 200, 256, 1000, 2064, 5000] {
            let logits: Vec<f32> = (0..len).map(|i| ((i * 53) % 97) as f32 * -0.37).collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s = scale(0.9);
            let mut sums = vec![0.0; len.div_ceil(BLOCK)];
            let mut block_sums = BlockSums::new(max, s, len, &mut sums);
            View::plain(&logits).visit(&mut block_sums);
            block_sums.finish();
            for (b, &sum) in sums.iter().enumerate() {
                let mut out = [0.0f32; BLOCK];
                let end = ((b + 1) * BLOCK).min(len);
                View::plain(&logits).visit_range(
                    b * BLOCK,
                    end,
                    &mut BlockWeights::new(max, s, b * BLOCK, &mut out),
                );
                assert_eq!(
                    block_total(&out).to_bits(),
                    sum.to_bits(),
                    "len {len} block {b}"
                );
            }
            // The group maxima's weights, per block.
            let maxima: Vec<f32> = logits
                .chunks(crate::native::GROUP)
                .map(|g| g.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                .collect();
            let mut out = vec![0.0; len.div_ceil(BLOCK)];
            block_maxima_weights(&maxima, max, s, &mut out);
            for (b, &o) in out.iter().enumerate() {
                let per = BLOCK / crate::native::GROUP;
                let want: f64 = maxima
                    .iter()
                    .skip(b * per)
                    .take(per)
                    .map(|&m| f64::from(weight(m, max, s)))
                    .sum();
                assert_eq!(o, want, "len {len} block {b}");
            }
        }
    }

    #[test]
    fn store_and_sum_agree_with_a_plain_loop() {
        for len in [1usize, 15, 16, 255, 256, 257, 1000] {
            let logits: Vec<f32> = (0..len).map(|i| ((i * 37) % 101) as f32 * 0.1).collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s = scale(0.7);
            let mut out = vec![0.0; len];
            let mut sums = vec![0.0; len.div_ceil(BLOCK)];
            let mut store = StoreWeights::new(max, s, &mut out, &mut sums);
            View::plain(&logits).visit(&mut store);
            store.finish();
            let mut sum = SumWeights::new(max, s);
            View::plain(&logits).visit(&mut sum);
            let total = sum.finish();
            for (i, (&w, &x)) in out.iter().zip(&logits).enumerate() {
                assert_eq!(w, weight(x, max, s), "index {i}");
            }
            for (b, &block) in sums.iter().enumerate() {
                let plain: f64 = out[b * BLOCK..((b + 1) * BLOCK).min(len)]
                    .iter()
                    .map(|&w| f64::from(w))
                    .sum();
                assert!((block - plain).abs() <= 1e-5 * plain, "block {b}");
            }
            let blocks: f64 = sums.iter().sum();
            assert!((total - blocks).abs() <= 1e-9 * blocks);
        }
    }
}
