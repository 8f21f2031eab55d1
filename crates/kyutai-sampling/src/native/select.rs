//! Finding things without sorting the vocabulary: the maximum (one pass, fused with validation),
//! the top k (a pass that also records the maximum of every group of tokens, then a search with a
//! rising threshold through the groups that can hold a top-k logit), and the nucleus (rejection
//! against the full distribution, with an exact weighted quickselect as fallback).
//!
//! Rank order, used everywhere: a larger value ranks first, and among equal values the lower
//! index ranks first.

use std::cmp::Ordering;

use super::draw;
use super::view::{View, Visit, LANES};
use super::weights::BLOCK;
use crate::SamplingError;

/// `(value, token)`: a candidate token with its logit or weight.
pub(crate) type Candidate = (f32, u32);

/// Rank order on candidates (values are never NaN here).
pub(crate) fn by_rank(a: &Candidate, b: &Candidate) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// Whether `(value, index)` `a` ranks strictly before `b`.
fn ranks_before(a: (f32, usize), b: (f32, usize)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// The error for a view in which the scan found a NaN or `+inf`.
fn invalid(view: &View<'_>) -> SamplingError {
    match view.first_invalid() {
        Some((index, value)) => SamplingError::NonFiniteLogit { index, value },
        // Unreachable: the scan only reports values this finds.
        None => SamplingError::NonFiniteLogit {
            index: 0,
            value: f32::NAN,
        },
    }
}

/// Validation and maximum in one pass.
///
/// NaN is tracked per lane; `+inf` shows up as the maximum. Both are errors. Two chunks are
/// read per step into two sets of lanes, so that 256-bit vectors have enough independent maxima
/// in flight; the maximum does not depend on the order in which it is taken (a zero maximum is
/// reported as `+0.0`).
pub(crate) struct Scan {
    nan: [u32; 2 * LANES],
    max: [f32; 2 * LANES],
}

impl Scan {
    pub(crate) fn new() -> Self {
        Self {
            nan: [0; 2 * LANES],
            max: [f32::NEG_INFINITY; 2 * LANES],
        }
    }

    /// The largest logit, or the view's error.
    pub(crate) fn finish(self, view: &View<'_>) -> Result<f32, SamplingError> {
        let max = self.max.iter().copied().fold(f32::NEG_INFINITY, f32::max) + 0.0;
        if max == f32::INFINITY || self.nan.iter().any(|&n| n != 0) {
            return Err(invalid(view));
        }
        if max == f32::NEG_INFINITY {
            return Err(SamplingError::AllMasked);
        }
        Ok(max)
    }
}

/// Folds `values` (a multiple of `nan.len()` long) into per-lane NaN flags and maxima.
#[inline(always)]
fn fold_lanes<const L: usize>(nan: &mut [u32; L], max: &mut [f32; L], values: &[f32]) {
    for chunk in values.chunks_exact(L) {
        for ((n, m), &x) in nan.iter_mut().zip(max.iter_mut()).zip(chunk) {
            *n |= u32::from(x.is_nan()).wrapping_neg();
            // Never NaN: a NaN `x` loses the comparison.
            *m = if x > *m { x } else { *m };
        }
    }
}

impl Visit for Scan {
    #[inline(always)]
    fn run(&mut self, _start: usize, values: &[f32]) {
        let (mut nan, mut max) = (self.nan, self.max);
        let pairs = values.len() / (2 * LANES) * (2 * LANES);
        let (body, rest) = values.split_at(pairs);
        fold_lanes(&mut nan, &mut max, body);
        if let (Some(n), Some(m)) = (
            nan.first_chunk_mut::<LANES>(),
            max.first_chunk_mut::<LANES>(),
        ) {
            fold_lanes(n, m, rest);
        }
        (self.nan, self.max) = (nan, max);
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        for ((n, m), &x) in self.nan.iter_mut().zip(self.max.iter_mut()).zip(values) {
            *n |= u32::from(x.is_nan()).wrapping_neg();
            *m = if x > *m { x } else { *m };
        }
    }
}

/// Tokens per group of the group maxima that [`GroupScan`] records.
pub(crate) const GROUP: usize = 64;
const _: () = assert!(GROUP.is_multiple_of(LANES));

/// The larger of `a` and `b` (never NaN here).
#[inline(always)]
fn max2(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// The largest of `lanes`, by halving (the two halves' maxima lane by lane, and so on), which the
/// compiler turns into a few vector maxima and shuffles. A zero maximum is reported as `+0.0`,
/// whichever zeros the lanes hold.
#[inline(always)]
fn lane_max(lanes: &[f32; LANES]) -> f32 {
    const _: () = assert!(LANES == 16);
    let eight: [f32; 8] = std::array::from_fn(|j| max2(lanes[j], lanes[j + 8]));
    let four: [f32; 4] = std::array::from_fn(|j| max2(eight[j], eight[j + 4]));
    let two: [f32; 2] = std::array::from_fn(|j| max2(four[j], four[j + 2]));
    max2(two[0], two[1]) + 0.0
}

/// Validation, the maximum, and the maximum of every [`GROUP`] of tokens, in one pass.
///
/// The group maxima bound the top-k search: see [`top_k_floor`].
pub(crate) struct GroupScan<'a> {
    nan: [u32; LANES],
    group: [f32; LANES],
    /// One slot per group (`len.div_ceil(GROUP)`).
    out: &'a mut [f32],
}

impl<'a> GroupScan<'a> {
    pub(crate) fn new(out: &'a mut [f32]) -> Self {
        Self {
            nan: [0; LANES],
            group: [f32::NEG_INFINITY; LANES],
            out,
        }
    }

    /// The largest logit, or the view's error; the group maxima are in the slice given to
    /// [`new`](Self::new).
    pub(crate) fn finish(self, view: &View<'_>) -> Result<f32, SamplingError> {
        if !view.len().is_multiple_of(GROUP) {
            if let Some(last) = self.out.last_mut() {
                *last = lane_max(&self.group);
            }
        }
        let max = self
            .out
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        if max == f32::INFINITY || self.nan.iter().any(|&n| n != 0) {
            return Err(invalid(view));
        }
        if max == f32::NEG_INFINITY {
            return Err(SamplingError::AllMasked);
        }
        Ok(max)
    }
}

impl GroupScan<'_> {
    /// Folds whole chunks into the open group's lanes, recording each group as it completes.
    #[inline(always)]
    fn chunks(&mut self, start: usize, values: &[f32]) {
        let (mut nan, mut group) = (self.nan, self.group);
        for (i, chunk) in values.chunks_exact(LANES).enumerate() {
            for ((n, m), &x) in nan.iter_mut().zip(group.iter_mut()).zip(chunk) {
                *n |= u32::from(x.is_nan()).wrapping_neg();
                *m = if x > *m { x } else { *m };
            }
            let end = start + (i + 1) * LANES;
            if end.is_multiple_of(GROUP) {
                if let Some(slot) = self.out.get_mut(end / GROUP - 1) {
                    *slot = lane_max(&group);
                }
                group = [f32::NEG_INFINITY; LANES];
            }
        }
        (self.nan, self.group) = (nan, group);
    }
}

impl Visit for GroupScan<'_> {
    /// Chunks up to the first group boundary and after the last one go through the open group's
    /// lanes; the whole groups between are taken one at a time, each as straight-line code (the
    /// maxima of its four chunks lane by lane, then [`lane_max`]). An empty `black_box` in that
    /// loop keeps the compiler from vectorising across groups (strided loads, several times
    /// slower). Every group maximum is the same value either way: a maximum does not depend on
    /// the order it is taken in, and [`lane_max`] makes a zero `+0.0`.
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        let lead = (GROUP - start % GROUP) % GROUP;
        if lead >= values.len() {
            self.chunks(start, values);
            return;
        }
        let (head, body) = values.split_at(lead);
        self.chunks(start, head);
        let first = (start + lead) / GROUP;
        let (groups, rest) = body.as_chunks::<GROUP>();
        let out = self.out.get_mut(first..).unwrap_or_default();
        let mut nan = self.nan;
        for (slot, g) in out.iter_mut().zip(groups) {
            const _: () = assert!(GROUP == 4 * LANES);
            let mut lanes = [0.0f32; LANES];
            for j in 0..LANES {
                let (a, b) = (g[j], g[j + LANES]);
                let (c, d) = (g[j + 2 * LANES], g[j + 3 * LANES]);
                lanes[j] = max2(max2(a, b), max2(c, d));
                nan[j] |=
                    u32::from((a.is_nan() | b.is_nan()) | (c.is_nan() | d.is_nan())).wrapping_neg();
            }
            *slot = lane_max(&lanes);
            std::hint::black_box(());
        }
        self.nan = nan;
        self.chunks(start + lead + groups.len() * GROUP, rest);
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        for ((n, m), &x) in self.nan.iter_mut().zip(self.group.iter_mut()).zip(values) {
            *n |= u32::from(x.is_nan()).wrapping_neg();
            *m = if x > *m { x } else { *m };
        }
    }
}

/// A lower bound on the `keep` best logits from the group maxima (`max` being the largest): the
/// group maxima are logits of distinct tokens, so the `keep`-th largest of them is reached by the
/// `keep` best logits. The [`Spread`] histogram of the maxima bounds it, then the maxima that reach
/// that bound (collected into `scratch`) give it exactly; `-inf` when there are fewer groups than
/// `keep`. Groups whose maximum is below it hold no top-k logit and need not be searched.
pub(crate) fn top_k_floor(
    groups: &[f32],
    keep: usize,
    max: f32,
    scratch: &mut Vec<Candidate>,
) -> f32 {
    if keep == 0 || groups.len() < keep {
        return f32::NEG_INFINITY;
    }
    let mut spread = Spread::new(max);
    View::plain(groups).visit(&mut spread);
    let (bound, _) = spread.floor(keep);
    scratch.clear();
    // Room for every group, so that later calls never allocate.
    scratch.reserve(groups.len());
    View::plain(groups).visit(&mut Collect::new(bound, scratch));
    if scratch.len() < keep {
        return bound;
    }
    let (_, kth, _) = scratch.select_nth_unstable_by(keep - 1, |a, b| b.0.total_cmp(&a.0));
    kth.0.max(bound)
}

/// Buckets of the [`Spread`] histogram.
pub(crate) const SPREAD_BUCKETS: usize = 160;
/// `bits(d) >> 20` of the smallest distance with a bucket of its own (`2^-10`): distances below it
/// share bucket 0, and distances from `2^10` on (and `-inf` logits) share the last bucket.
const SPREAD_BASE: u32 = 117 << 3;

/// The bucket of logit `x` when the largest logit is `max`: the top bits (exponent and three
/// mantissa bits) of the distance `max - x`, so eight buckets per octave of distance. Rounding is
/// monotone and so are a non-negative float's bits, so a larger logit never lands in a later
/// bucket: the logits of buckets `0..=b` are exactly the logits at least some value.
#[inline(always)]
fn spread_bucket(x: f32, max: f32) -> u32 {
    let bits = (max - x).to_bits() >> 20;
    bits.saturating_sub(SPREAD_BASE)
        .min(SPREAD_BUCKETS as u32 - 1)
}

/// A histogram of the distances of the logits below the maximum (run after a scan, which found
/// the maximum and validated the view): the floor it gives bounds the top-k search when there
/// are too few groups for [`top_k_floor`] to bound it (a `k` that is a large fraction of a small
/// vocabulary, such as Moshi's `k = 250` over a 2048-code codebook).
pub(crate) struct Spread {
    max: f32,
    /// Four histograms, one per lane modulo 4, so that consecutive increments of one bucket do
    /// not wait on each other; summed by [`floor`](Self::floor).
    counts: [[u32; SPREAD_BUCKETS]; 4],
}

impl Spread {
    pub(crate) fn new(max: f32) -> Self {
        Self {
            max,
            counts: [[0; SPREAD_BUCKETS]; 4],
        }
    }

    /// A lower bound on the `keep` best logits (`-inf` when the histogram cannot give one): the
    /// smallest value that every logit of the first buckets holding `keep` logits reaches; and
    /// how many logits those buckets hold (about as many reach the bound).
    pub(crate) fn floor(&self, keep: usize) -> (f32, usize) {
        let mut total = 0usize;
        for b in 0..SPREAD_BUCKETS {
            let count: usize = self.counts.iter().map(|c| c[b] as usize).sum();
            total = total.saturating_add(count);
            if total >= keep {
                return (bucket_floor(self.max, b), total);
            }
        }
        (f32::NEG_INFINITY, total)
    }
}

impl Visit for Spread {
    #[inline(always)]
    fn run(&mut self, _start: usize, values: &[f32]) {
        let max = self.max;
        let [c0, c1, c2, c3] = &mut self.counts;
        for chunk in values.chunks_exact(LANES) {
            let mut buckets = [0u32; LANES];
            for (b, &x) in buckets.iter_mut().zip(chunk) {
                *b = spread_bucket(x, max);
            }
            for quad in buckets.chunks_exact(4) {
                if let [a, b, c, d] = *quad {
                    // In range: `spread_bucket` is below SPREAD_BUCKETS.
                    if let Some(n) = c0.get_mut(a as usize) {
                        *n += 1;
                    }
                    if let Some(n) = c1.get_mut(b as usize) {
                        *n += 1;
                    }
                    if let Some(n) = c2.get_mut(c as usize) {
                        *n += 1;
                    }
                    if let Some(n) = c3.get_mut(d as usize) {
                        *n += 1;
                    }
                }
            }
        }
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        for &x in values {
            if let Some(count) = self.counts[0].get_mut(spread_bucket(x, self.max) as usize) {
                *count += 1;
            }
        }
    }
}

/// A value that every logit of the [`Spread`] buckets `0..=b` reaches when the largest logit is
/// `max` (`-inf` for the last, open-ended bucket, which also holds the masked logits).
fn bucket_floor(max: f32, b: usize) -> f32 {
    if b + 1 >= SPREAD_BUCKETS {
        return f32::NEG_INFINITY;
    }
    // A logit `x` of bucket `b` or below has `fl(max - x) < hi`; rounding to nearest (exact for
    // subnormal differences) then gives `max - x < hi * (1 + 2^-23)`, so `x > max - hi * (1 +
    // 2^-22) = t`, exactly in reals. f64 holds `hi * (1 + 2^-22)` exactly, and rounding `t` to
    // f64 then down to f32 is monotone, so `x`, being an f32 above `t`, is at least the result.
    let hi = f32::from_bits((b as u32 + 1 + SPREAD_BASE) << 20);
    let t = f64::from(max) - f64::from(hi) * (1.0 + f64::powi(2.0, -22));
    let floor = t as f32;
    if f64::from(floor) > t {
        floor.next_down()
    } else {
        floor
    }
}

/// The [`Spread`] histogram of one logit in eight (lanes 0 and `LANES / 2` of every whole
/// chunk), which estimates the floor of the top `k` for an eighth of the histogram's cost; an
/// [`AtLeast`] count then checks it (see [`sampled_floor`]).
struct SampledSpread {
    max: f32,
    counts: [[u32; SPREAD_BUCKETS]; 2],
}

impl Visit for SampledSpread {
    #[inline(always)]
    fn run(&mut self, _start: usize, values: &[f32]) {
        let max = self.max;
        let [c0, c1] = &mut self.counts;
        for chunk in values.chunks_exact(LANES) {
            if let (Some(&a), Some(&b)) = (chunk.first(), chunk.get(LANES / 2)) {
                if let Some(n) = c0.get_mut(spread_bucket(a, max) as usize) {
                    *n += 1;
                }
                if let Some(n) = c1.get_mut(spread_bucket(b, max) as usize) {
                    *n += 1;
                }
            }
        }
    }

    fn tail(&mut self, _start: usize, _values: &[f32]) {}
}

/// Counts the logits at least `floor` (in a view that a [`Scan`] validated), in f32 lanes: the
/// compiler keeps float lanes as they are written (integer ones it rearranges across chunks, far
/// more slowly). A lane's count is exact below 2^24 and never too high past it, and the counts
/// are only used as a lower bound.
struct AtLeast {
    floor: f32,
    counts: [f32; LANES],
}

impl Visit for AtLeast {
    #[inline(always)]
    fn run(&mut self, _start: usize, values: &[f32]) {
        let floor = self.floor;
        let mut counts = self.counts;
        for chunk in values.as_chunks::<LANES>().0 {
            for (n, &x) in counts.iter_mut().zip(chunk) {
                *n += if x >= floor { 1.0 } else { 0.0 };
            }
        }
        self.counts = counts;
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        for (n, &x) in self.counts.iter_mut().zip(values) {
            *n += if x >= self.floor { 1.0 } else { 0.0 };
        }
    }
}

/// Counts the logits of a validated view that reach `floor`.
fn count_at_least(view: &View<'_>, floor: f32) -> usize {
    let mut count = AtLeast {
        floor,
        counts: [0.0; LANES],
    };
    view.visit(&mut count);
    count.counts.iter().map(|&n| n as usize).sum()
}

/// Views shorter than this take the whole [`Spread`] histogram: a sample would be too small.
const SAMPLED_SPREAD_MIN: usize = 64 * LANES;

/// Halvings of the interval between the sampled estimates in [`sampled_floor`].
const FLOOR_HALVINGS: usize = 4;

/// A floor of the `keep` best logits reached by not many more logits than `keep`, found from a
/// sample of one logit in eight and checked by exact counts.
///
/// The sample's [`Spread`] histogram brackets the floor: the first buckets holding 2.5 standard
/// deviations more than an eighth of `keep` sampled logits give a floor that a view in random
/// order misses about one time in a hundred (the count checks it), those holding 2.5 fewer a value
/// that is almost surely above it. A few halvings of that interval, each checked by a count, then
/// bring the floor within a small fraction of the bucket's width of the k-th logit. Returns the
/// floor and how many logits reach it (at least `keep`), or `None` when the view is too short or
/// the check fails, for the whole histogram to decide. A valid view with maximum `max` (checked by
/// a [`Scan`]) and `keep >= 1`.
///
/// The third value is a ceiling: a value that fewer than `keep` logits are expected to reach
/// (counted so when a halving set it; otherwise the bound of the sample), for [`CollectKeys`] to
/// set the logits reaching it apart.
pub(crate) fn sampled_floor(view: &View<'_>, max: f32, keep: usize) -> Option<(f32, usize, f32)> {
    let len = view.len();
    if len < SAMPLED_SPREAD_MIN {
        return None;
    }
    let samples = len / LANES * 2;
    let expected = keep as f64 * samples as f64 / len as f64;
    let margin = 2.5 * expected.sqrt();
    let wanted = (expected + margin).ceil() as usize + 1;
    if wanted >= samples / 2 {
        return None;
    }
    let mut sample = SampledSpread {
        max,
        counts: [[0; SPREAD_BUCKETS]; 2],
    };
    view.visit(&mut sample);
    let few = (expected - margin).floor().max(0.0) as usize;
    let (mut total, mut above) = (0usize, None);
    let bucket = (0..SPREAD_BUCKETS).find(|&b| {
        total += sample.counts.iter().map(|c| c[b] as usize).sum::<usize>();
        if total <= few {
            above = Some(b);
        }
        total >= wanted
    })?;
    let mut floor = bucket_floor(max, bucket);
    if floor == f32::NEG_INFINITY {
        return None;
    }
    let mut reached = count_at_least(view, floor);
    if reached < keep {
        return None;
    }
    // A value that fewer than `keep` logits are expected to reach: the bound of the last bucket
    // holding too few samples, or the maximum.
    let mut ceiling = above.map_or(max, |b| bucket_floor(max, b));
    for _ in 0..FLOOR_HALVINGS {
        if reached <= keep + keep / 16 + 8 {
            break;
        }
        let mid = floor + (ceiling - floor) * 0.5;
        if !(mid > floor && mid < ceiling) {
            break;
        }
        let count = count_at_least(view, mid);
        if count >= keep {
            (floor, reached) = (mid, count);
        } else {
            ceiling = mid;
        }
    }
    Some((floor, reached, ceiling))
}

/// The largest f32 below `x` (`-inf` stays `-inf`).
fn just_below(x: f32) -> f32 {
    if x == f32::NEG_INFINITY || x.is_nan() {
        f32::NEG_INFINITY
    } else if x == 0.0 {
        -f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        f32::from_bits(x.to_bits() + 1)
    }
}

/// Whether some value of `chunk` is above `threshold` (neither the values nor `threshold` being
/// NaN): one comparison per lane folded with `|`, which the compiler turns into two vector
/// comparisons and a test, the cheap common case of a chunk with nothing to collect.
#[inline(always)]
fn any_above(chunk: &[f32; LANES], threshold: f32) -> bool {
    chunk.iter().fold(false, |any, &x| any | (x > threshold))
}

/// The lanes of `chunk` above `threshold` (with `STRICT`) or at least `threshold`, as the bits of
/// a mask (bit `j` for lane `j`).
///
/// On x86-64 the comparisons are SSE2's (part of the baseline, so every compiled form has them;
/// the wider forms merge them), each read back with one `movmskps`: the compiler builds such a
/// mask from scalar code with shifts and a horizontal OR, several times slower. Elsewhere, the
/// same comparisons in scalar form.
#[inline(always)]
fn lanes_above<const STRICT: bool>(chunk: &[f32; LANES], threshold: f32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpge_ps, _mm_cmpgt_ps, _mm_loadu_ps, _mm_movemask_ps, _mm_set1_ps,
        };
        // SAFETY: these intrinsics need SSE and SSE2, which every x86-64 CPU has (they are part
        // of the target's baseline), and the load reads the four f32s of `quad`.
        unsafe {
            let t = _mm_set1_ps(threshold);
            let mut mask = 0u32;
            for (quad, shift) in chunk.as_chunks::<4>().0.iter().zip((0u32..).step_by(4)) {
                let v = _mm_loadu_ps(quad.as_ptr());
                let above = if STRICT {
                    _mm_cmpgt_ps(v, t)
                } else {
                    _mm_cmpge_ps(v, t)
                };
                mask |= (_mm_movemask_ps(above) as u32) << shift;
            }
            mask
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut mask = 0u32;
        for (&x, bit) in chunk.iter().zip(0u32..) {
            let above = if STRICT {
                x > threshold
            } else {
                x >= threshold
            };
            mask |= u32::from(above) << bit;
        }
        mask
    }
}

/// Searches `view` for its `keep` best-ranked logits with `gather`, reading only the groups
/// (consecutive ones merged) whose maximum reaches `floor`.
pub(crate) fn gather_groups(view: &View<'_>, groups: &[f32], floor: f32, gather: &mut Gather<'_>) {
    view.visit_groups(groups, GROUP, floor, gather);
}

/// Hands `f` each value of the whole chunks of `values` (starting at index `start`) that is at
/// least `floor`, with its index, in order ([`lanes_above`] finds them). `floor` is neither NaN nor
/// `-inf`. With `SPARSE` (few values expected to reach the floor), a chunk is first tested whole
/// with [`any_above`], which skips a chunk with none for less than its mask costs.
#[inline(always)]
fn each_at_least<const SPARSE: bool>(
    start: usize,
    values: &[f32],
    floor: f32,
    mut f: impl FnMut(f32, u32),
) {
    for (c, chunk) in values.as_chunks::<LANES>().0.iter().enumerate() {
        if SPARSE && !any_above(chunk, just_below(floor)) {
            continue;
        }
        let mut hits = lanes_above::<false>(chunk, floor);
        while hits != 0 {
            let lane = hits.trailing_zeros() as usize;
            hits &= hits - 1;
            if let Some(&x) = chunk.get(lane) {
                f(x, (start + c * LANES + lane) as u32);
            }
        }
    }
}

/// Collects the unmasked values `>= floor` with their indices (no validation: run after a scan).
pub(crate) struct Collect<'a> {
    /// `floor`, or `-f32::MAX` for `-inf` (the unmasked values reach both) and `+inf` for NaN
    /// (none reaches either), so that `x - floor` is NaN for no `x` a scan lets through.
    floor: f32,
    out: &'a mut Vec<Candidate>,
}

impl<'a> Collect<'a> {
    pub(crate) fn new(floor: f32, out: &'a mut Vec<Candidate>) -> Self {
        let floor = if floor.is_nan() {
            f32::INFINITY
        } else {
            floor.max(-f32::MAX)
        };
        Self { floor, out }
    }
}

impl Visit for Collect<'_> {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        let (floor, out) = (self.floor, &mut *self.out);
        each_at_least::<true>(start, values, floor, |x, index| out.push((x, index)));
    }

    fn tail(&mut self, start: usize, values: &[f32]) {
        for (i, &x) in values.iter().enumerate() {
            if x >= self.floor {
                self.out.push((x, (start + i) as u32));
            }
        }
    }
}

/// Collects the [`key`]s of the unmasked values `>= floor` (no validation: run after a scan),
/// then keeps the `keep` best-ranked of them, best first: the search of a top `k` whose floor is
/// known to be reached by about as many logits as are wanted (see [`sampled_floor`]), so that the
/// buffer never needs compacting while the view is read.
///
/// With a [`ceiling`](Self::ceiling) that fewer than `keep` values reach, the keys of the values
/// reaching it are written from the front of the buffer and the others from the back, so that
/// the selection only ranks the others: every key of the front ranks above every key of the back
/// (keys order by value first). The result never depends on the ceiling or on the expected
/// count, only the work does.
pub(crate) struct CollectKeys<'a> {
    /// `floor`, or `-f32::MAX` for a `-inf` floor (the same unmasked values reach both), so that
    /// `x - floor` is never NaN.
    floor: f32,
    /// Values at least this go to the front (`+inf`: none does).
    ceiling: f32,
    /// Holds `expected` slots, then the keys that did not fit.
    keys: &'a mut Vec<u64>,
    expected: usize,
    /// Keys written from the front (values reaching the ceiling), and from the back.
    front: usize,
    back: usize,
}

impl<'a> CollectKeys<'a> {
    /// `expected`: how many values are known to reach `floor` (room for them is made).
    pub(crate) fn new(floor: f32, expected: usize, keys: &'a mut Vec<u64>) -> Self {
        // Slots kept from the last call are overwritten, not cleared.
        keys.truncate(expected);
        keys.resize(expected, 0);
        Self {
            floor: floor.max(-f32::MAX),
            ceiling: f32::INFINITY,
            keys,
            expected,
            front: 0,
            back: 0,
        }
    }

    /// Sets the values reaching `ceiling` apart (see the type's docs); a NaN sets none apart.
    pub(crate) fn ceiling(mut self, ceiling: f32) -> Self {
        self.ceiling = if ceiling.is_nan() {
            f32::INFINITY
        } else {
            ceiling
        };
        self
    }

    /// Writes `key` from the front (`high`) or from the back, or after the slots when they are
    /// all taken; `front` and `back` count the keys of each kind.
    #[inline(always)]
    fn put(
        keys: &mut Vec<u64>,
        expected: usize,
        counts: (&mut usize, &mut usize),
        key: u64,
        high: bool,
    ) {
        let (front, back) = counts;
        if *front + *back < expected {
            let at = if high { *front } else { expected - 1 - *back };
            if let Some(slot) = keys.get_mut(at) {
                *slot = key;
            }
        } else {
            keys.push(key);
        }
        *front += usize::from(high);
        *back += usize::from(!high);
    }

    /// The [`key`]s of the `keep` best-ranked values collected (all when fewer), in no
    /// particular order; [`SamplingError::AllMasked`] when none was.
    pub(crate) fn finish(self, keep: usize) -> Result<&'a mut Vec<u64>, SamplingError> {
        let Self {
            keys,
            expected,
            front,
            back,
            ..
        } = self;
        // Fewer keys than slots: close the gap between the front and the back.
        if front + back < expected {
            keys.drain(front..expected - back);
        }
        if keep == 0 || keys.is_empty() {
            return Err(SamplingError::AllMasked);
        }
        if keys.len() > keep {
            let worst = keys.len() - keep;
            // Keys pushed past the slots mix both kinds, so everything is ranked then; so it is
            // when the front holds more than `keep`.
            let ranked = if front + back <= expected && front <= keep {
                front
            } else {
                0
            };
            if let Some(rest) = keys.get_mut(ranked..) {
                move_worst_first(rest, worst);
            }
            keys.drain(ranked..ranked + worst);
        }
        Ok(keys)
    }
}

impl Visit for CollectKeys<'_> {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        // The counts in locals, so that they stay in registers across the stores of keys.
        let (floor, ceiling, expected) = (self.floor, self.ceiling, self.expected);
        let (mut front, mut back) = (self.front, self.back);
        let keys = &mut *self.keys;
        each_at_least::<false>(start, values, floor, |x, index| {
            let counts = (&mut front, &mut back);
            Self::put(keys, expected, counts, key(x, index), x >= ceiling)
        });
        (self.front, self.back) = (front, back);
    }

    fn tail(&mut self, start: usize, values: &[f32]) {
        for (i, &x) in values.iter().enumerate() {
            if x >= self.floor {
                let counts = (&mut self.front, &mut self.back);
                let key = key(x, (start + i) as u32);
                Self::put(self.keys, self.expected, counts, key, x >= self.ceiling);
            }
        }
    }
}

/// Count, sum and sum of squares of the unmasked values, taken about `center` (the maximum) for
/// accuracy; run after a scan, so every value is finite or `-inf`.
pub(crate) struct Moments {
    center: f32,
    count: [f32; LANES],
    sum: [f32; LANES],
    sum_sq: [f32; LANES],
    total: (f64, f64, f64),
}

impl Moments {
    pub(crate) fn new(center: f32) -> Self {
        Self {
            center,
            count: [0.0; LANES],
            sum: [0.0; LANES],
            sum_sq: [0.0; LANES],
            total: (0.0, 0.0, 0.0),
        }
    }

    /// `(count, Σ(x − center), Σ(x − center)²)`.
    pub(crate) fn finish(mut self) -> (f64, f64, f64) {
        self.flush();
        self.total
    }

    fn flush(&mut self) {
        self.total.0 += self.count.iter().map(|&c| f64::from(c)).sum::<f64>();
        self.total.1 += self.sum.iter().map(|&c| f64::from(c)).sum::<f64>();
        self.total.2 += self.sum_sq.iter().map(|&c| f64::from(c)).sum::<f64>();
        self.count = [0.0; LANES];
        self.sum = [0.0; LANES];
        self.sum_sq = [0.0; LANES];
    }
}

impl Visit for Moments {
    fn run(&mut self, _start: usize, values: &[f32]) {
        // Flush the f32 lanes every few thousand values so that they stay accurate.
        for block in values.chunks(LANES * 256) {
            for chunk in block.chunks_exact(LANES) {
                for (i, &x) in chunk.iter().enumerate() {
                    let live = x > f32::NEG_INFINITY;
                    let d = if live { x - self.center } else { 0.0 };
                    self.count[i] += if live { 1.0 } else { 0.0 };
                    self.sum[i] += d;
                    self.sum_sq[i] += d * d;
                }
            }
            let overflowed = self.sum.iter().chain(&self.sum_sq).any(|s| !s.is_finite());
            if overflowed {
                // Logits spread over more than f32's range (`x - center` or its square past
                // f32::MAX): this block again, in f64.
                self.count = [0.0; LANES];
                self.sum = [0.0; LANES];
                self.sum_sq = [0.0; LANES];
                self.tail(0, block);
            }
            self.flush();
        }
    }

    fn tail(&mut self, _start: usize, values: &[f32]) {
        for &x in values {
            if x > f32::NEG_INFINITY {
                let d = f64::from(x) - f64::from(self.center);
                self.total.0 += 1.0;
                self.total.1 += d;
                self.total.2 += d * d;
            }
        }
    }
}

/// `ArgMax`: the lowest index of the largest logit (a scan, then a search that stops at the
/// first hit), or the view's error.
pub(crate) fn argmax(view: &View<'_>) -> Result<u32, SamplingError> {
    let mut scan = Scan::new();
    view.visit(&mut scan);
    let max = scan.finish(view)?;
    // The maximum is in the view, so the search finds it.
    Ok(view.position(max).unwrap_or(0) as u32)
}

/// A sort key whose descending order is rank order: the logit's bits mapped to an
/// order-preserving `u32` (`-0.0` counted as `+0.0`), then the complement of the index (so a
/// lower index sorts first among equal logits). Integer keys make selection and sorting cheap.
#[inline(always)]
pub(crate) fn key(x: f32, index: u32) -> u64 {
    let bits = (x + 0.0).to_bits(); // -0.0 + 0.0 = +0.0
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    (u64::from(ordered) << 32) | u64::from(!index)
}

/// The candidate a [`key`] was made from.
pub(crate) fn unkey(key: u64) -> Candidate {
    let ordered = (key >> 32) as u32;
    let bits = if ordered >> 31 == 1 {
        ordered & 0x7fff_ffff
    } else {
        !ordered
    };
    (f32::from_bits(bits), !(key as u32))
}

/// Moves the `count` smallest of `keys` to its front, in no particular order: a bounded heap of
/// the worst so far when they are few (most keys are then one comparison with the heap's
/// largest), else a selection.
pub(crate) fn move_worst_first(keys: &mut [u64], count: usize) {
    if count == 0 || count >= keys.len() {
        return;
    }
    if count > HEAP_SELECT_MAX {
        keys.select_nth_unstable(count - 1);
        return;
    }
    let (heap, rest) = keys.split_at_mut(count);
    // A max-heap: `heap[0]` is the largest of the worst so far.
    for i in (0..count / 2).rev() {
        sift_down(heap, i);
    }
    for key in rest.iter_mut() {
        if let Some(top) = heap.first_mut() {
            if *key < *top {
                std::mem::swap(key, top);
                sift_down(heap, 0);
            }
        }
    }
}

/// Bound of the heap of [`move_worst_first`].
const HEAP_SELECT_MAX: usize = 64;

/// Restores the max-heap property of `heap` below `at`.
fn sift_down(heap: &mut [u64], mut at: usize) {
    loop {
        let left = 2 * at + 1;
        let Some(&l) = heap.get(left) else { return };
        let (child, c) = match heap.get(left + 1) {
            Some(&r) if r > l => (left + 1, r),
            _ => (left, l),
        };
        match heap.get(at) {
            Some(&v) if c > v => heap.swap(at, child),
            _ => return,
        }
        at = child;
    }
}

/// Sorts `keys` into rank order (best first) and writes their candidates to `out`.
pub(crate) fn ranked_candidates<'o>(
    keys: &mut [u64],
    out: &'o mut Vec<Candidate>,
) -> &'o mut Vec<Candidate> {
    // Keys are distinct, so the unstable sort is deterministic.
    keys.sort_unstable_by(|a, b| b.cmp(a));
    out.clear();
    out.extend(keys.iter().map(|&k| unkey(k)));
    out
}

/// The `keep` best-ranked logits of a view that a scan has validated (NaN is not looked for; it
/// never passes a comparison, so it is never gathered).
///
/// Values above a threshold are appended (as [`key`]s) to a buffer; when it holds `cap` of them, a
/// selection keeps the `keep` best and the threshold rises to the worst of those. A value equal
/// to the threshold is skipped, which is exact for the rank order: it comes later than (so ranks
/// after) `keep` values at least as large. A chunk with no value above the threshold, the common
/// case after the first few thousand tokens, costs a few vector comparisons.
pub(crate) struct Gather<'a> {
    keep: usize,
    cap: usize,
    threshold: f32,
    /// Whether every logit equal to the `keep`-th is kept too (see [`keep_ties`](Self::keep_ties)).
    ties: bool,
    keys: &'a mut Vec<u64>,
}

impl<'a> Gather<'a> {
    /// How many candidates the buffer holds before it is compacted to `keep`. A small slack keeps
    /// the threshold close to the true k-th value (fewer pushes), at the cost of more frequent
    /// (but small) selections.
    pub(crate) fn capacity_for(keep: usize) -> usize {
        keep.saturating_add(32 + keep / 4)
    }

    /// `keep >= 1`; every one of the `keep` best logits is known to be at least `floor`; `keys`
    /// is the selection buffer, which receives the result (and keeps its capacity from call to
    /// call).
    pub(crate) fn new(keep: usize, floor: f32, keys: &'a mut Vec<u64>) -> Self {
        let cap = Self::capacity_for(keep).max(keep.saturating_add(1));
        keys.clear();
        keys.reserve(cap);
        Self {
            keep: keep.max(1),
            cap,
            // Values equal to the floor may belong to the top k: start just below it.
            threshold: just_below(floor),
            ties: false,
            keys,
        }
    }

    /// Keeps, besides the `keep` best-ranked logits, every other logit equal to the `keep`-th
    /// (what transformers' top-k keeps), as long as they fit in the buffer with room to spare;
    /// [`finish`](Self::finish) tells whether they did. Values equal to the
    /// `keep`-th so far then pass the threshold (it sits just below that value), and a
    /// compaction keeps the ties of the `keep`-th with the best.
    pub(crate) fn keep_ties(&mut self) {
        self.ties = true;
    }

    #[inline(always)]
    fn push(&mut self, x: f32, index: usize) {
        if x > self.threshold {
            self.keys.push(key(x, index as u32));
            if self.keys.len() >= self.cap {
                self.compact();
            }
        }
    }

    #[cold]
    fn compact(&mut self) {
        let keep = self.keep;
        if self.keys.len() > keep {
            self.keys.select_nth_unstable_by(keep - 1, |a, b| b.cmp(a));
            if self.ties {
                if let Some(kth) = self.keys.get(keep - 1).map(|&k| unkey(k).0) {
                    // The ties of the k-th (after it, in no order) move up behind it.
                    let mut end = keep;
                    for i in keep..self.keys.len() {
                        if self.keys.get(i).is_some_and(|&k| unkey(k).0 == kth) {
                            self.keys.swap(end, i);
                            end += 1;
                        }
                    }
                    // Half the slack at most, so that compactions stay rare.
                    if end <= keep + (self.cap - keep) / 2 {
                        self.keys.truncate(end);
                        self.threshold = just_below(kth);
                        return;
                    }
                }
                self.ties = false;
            }
            self.keys.truncate(keep);
        }
        if let Some(&worst) = self.keys.get(keep - 1) {
            let kth = unkey(worst).0;
            self.threshold = if self.ties { just_below(kth) } else { kth };
        }
    }

    /// The [`key`]s of the `keep` best-ranked logits (fewer when fewer are above `-inf`; more
    /// with [`keep_ties`](Self::keep_ties)), in no particular order, and whether they hold every
    /// tie of the `keep`-th (after [`keep_ties`](Self::keep_ties)); or the view's error.
    pub(crate) fn finish(
        mut self,
        view: &View<'_>,
    ) -> Result<(&'a mut Vec<u64>, bool), SamplingError> {
        if self.keys.len() > self.keep {
            self.compact();
        }
        // A `+inf` is above any threshold below it, so it is among the candidates if present.
        if self.keys.iter().any(|&k| unkey(k).0 == f32::INFINITY) {
            return Err(invalid(view));
        }
        if self.keys.is_empty() {
            return Err(SamplingError::AllMasked);
        }
        Ok((self.keys, self.ties))
    }
}

impl Visit for Gather<'_> {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        for (c, chunk) in values.as_chunks::<LANES>().0.iter().enumerate() {
            let threshold = self.threshold;
            if !any_above(chunk, threshold) {
                continue;
            }
            let mut hits = lanes_above::<true>(chunk, threshold);
            // Only the lanes above the threshold (it may rise while they are pushed).
            while hits != 0 {
                let lane = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                if let Some(&x) = chunk.get(lane) {
                    self.push(x, start + c * LANES + lane);
                }
            }
        }
    }

    fn tail(&mut self, start: usize, values: &[f32]) {
        for (lane, &x) in values.iter().enumerate() {
            self.push(x, start + lane);
        }
    }
}

/// Sum of the weights in `block` that are `>= w` (with `INCLUSIVE`) or `> w`, in f32 lanes then
/// f64.
#[inline(always)]
fn sum_ranked_ahead<const INCLUSIVE: bool>(block: &[f32], w: f32) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = block.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            let ahead = if INCLUSIVE { x >= w } else { x > w };
            *a += if ahead { x } else { 0.0 };
        }
    }
    let mut sum: f64 = acc.iter().map(|&x| f64::from(x)).sum();
    for &x in chunks.remainder() {
        let ahead = if INCLUSIVE { x >= w } else { x > w };
        if ahead {
            sum += f64::from(x);
        }
    }
    sum
}

/// Whether `token` is in the nucleus: whether the weight of the tokens ranked before it is below
/// `limit` (`p * total`).
///
/// One pass over the weights at most, block by block. It stops early once the mass ranked ahead
/// reaches `limit` (out), or once that mass plus everything not yet read stays below `limit`
/// (in): for a token drawn from the full distribution this usually reads a fraction of the
/// vocabulary.
pub(crate) fn in_nucleus(
    weights: &[f32],
    sums: &[f64],
    total: f64,
    token: usize,
    limit: f64,
) -> bool {
    super::dispatch::run(InNucleus {
        weights,
        sums,
        total,
        token,
        limit,
    })
}

/// [`in_nucleus`] as a [`Kernel`](super::dispatch::Kernel): the same code in every form, so the
/// same answer.
struct InNucleus<'a> {
    weights: &'a [f32],
    sums: &'a [f64],
    total: f64,
    token: usize,
    limit: f64,
}

impl super::dispatch::Kernel for InNucleus<'_> {
    type Output = bool;

    #[inline(always)]
    fn run(self) -> bool {
        in_nucleus_portable(self.weights, self.sums, self.total, self.token, self.limit)
    }
}

/// [`in_nucleus`] compiled for the baseline target.
#[inline(always)]
fn in_nucleus_portable(
    weights: &[f32],
    sums: &[f64],
    total: f64,
    token: usize,
    limit: f64,
) -> bool {
    let Some(&w) = weights.get(token) else {
        return false;
    };
    let mut ahead = 0.0f64;
    // Weight not read yet, apart from the token's own.
    let mut unread = total - f64::from(w);
    if unread < limit {
        return true;
    }
    for (b, (block, &sum)) in weights.chunks(BLOCK).zip(sums).enumerate() {
        let start = b * BLOCK;
        let end = start + block.len();
        if end <= token {
            ahead += sum_ranked_ahead::<true>(block, w);
            unread -= sum;
        } else if start > token {
            ahead += sum_ranked_ahead::<false>(block, w);
            unread -= sum;
        } else {
            let (before, after) = block.split_at(token - start);
            ahead += sum_ranked_ahead::<true>(before, w);
            ahead += sum_ranked_ahead::<false>(after.get(1..).unwrap_or_default(), w);
            unread -= sum - f64::from(w);
        }
        if ahead >= limit {
            return false;
        }
        if ahead + unread.max(0.0) < limit {
            return true;
        }
    }
    ahead < limit
}

/// Draws from the nucleus without rejection (the fallback when rejection is slow, i.e. small
/// nuclei): gathers the positive-weight tokens ranked before `bound` (a token known to be outside
/// the nucleus, or none), finds the last token of the nucleus with a weighted quickselect
/// (expected linear time), then walks the weights in index order, counting only nucleus tokens.
pub(crate) fn exact_nucleus(
    weights: &[f32],
    bound: Option<(f32, usize)>,
    limit: f64,
    u: f64,
    scratch: &mut Vec<Candidate>,
) -> Option<usize> {
    scratch.clear();
    scratch.extend(
        weights
            .iter()
            .enumerate()
            .filter(|&(i, &w)| w > 0.0 && bound.is_none_or(|b| ranks_before((w, i), b)))
            .map(|(i, &w)| (w, i as u32)),
    );
    // Invariant: scratch[..lo] are in the nucleus and rank before scratch[lo..hi], scratch[hi..]
    // are out and rank after; `before` is the weight of scratch[..lo]; `last_in` the
    // worst-ranked token known to be in.
    let (mut lo, mut hi) = (0, scratch.len());
    let mut before = 0.0f64;
    let mut last_in: Option<Candidate> = None;
    while hi - lo > 32 {
        let mid = lo + (hi - lo) / 2;
        let part = scratch.get_mut(lo..hi)?;
        part.select_nth_unstable_by(mid - lo, by_rank);
        let left = before
            + part[..mid - lo]
                .iter()
                .map(|&(w, _)| f64::from(w))
                .sum::<f64>();
        let pivot = part[mid - lo];
        if left >= limit {
            hi = mid;
        } else {
            before = left + f64::from(pivot.0);
            last_in = Some(pivot);
            lo = mid + 1;
        }
    }
    let rest = scratch.get_mut(lo..hi)?;
    rest.sort_unstable_by(by_rank);
    for &candidate in rest.iter() {
        if before >= limit {
            break;
        }
        before += f64::from(candidate.0);
        last_in = Some(candidate);
    }
    let (w_last, i_last) = last_in?;
    let last = (w_last, i_last as usize);
    // Draw in index order among the tokens ranked no later than `last`.
    let target = u * before;
    let mut acc = 0.0f64;
    let mut chosen = None;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 && (i == last.1 || ranks_before((w, i), last)) {
            acc += f64::from(w);
            chosen = Some(i);
            if acc > target {
                break;
            }
        }
    }
    chosen
}

/// Draws from the top-p nucleus of the full distribution given by `weights` (and its block
/// `sums` and `total`): the tokens whose preceding mass in rank order is below `limit`.
///
/// Rejection sampling: draw from the full distribution, keep the token if it is in the nucleus
/// (which makes the result exactly the nucleus distribution, renormalised), otherwise draw again.
/// A rejected token bounds the nucleus, so later draws ranked after it are rejected without a
/// pass. After a few rejections (small nuclei) it switches to [`exact_nucleus`]; the mixture is
/// still exact, because the switch depends only on rejected draws.
pub(crate) fn nucleus(
    weights: &[f32],
    sums: &[f64],
    total: f64,
    limit: f64,
    rng: &mut impl rand::RngCore,
    scratch: &mut Vec<Candidate>,
) -> Option<usize> {
    const MAX_DRAWS: usize = 32;
    const MAX_PASSES: usize = 4;
    let mut outside: Option<(f32, usize)> = None;
    let mut passes = 0;
    for _ in 0..MAX_DRAWS {
        let token = draw::from_blocks(weights, sums, total, draw::unit(rng))?;
        let key = (*weights.get(token)?, token);
        if outside.is_some_and(|o| !ranks_before(key, o)) {
            continue;
        }
        if in_nucleus(weights, sums, total, token, limit) {
            return Some(token);
        }
        outside = Some(key);
        passes += 1;
        if passes >= MAX_PASSES {
            break;
        }
    }
    exact_nucleus(weights, outside, limit, draw::unit(rng), scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Mass ranked before each token, by brute force.
    fn ahead(weights: &[f32], token: usize) -> f64 {
        let key = (weights[token], token);
        weights
            .iter()
            .enumerate()
            .filter(|&(i, &w)| ranks_before((w, i), key))
            .map(|(_, &w)| f64::from(w))
            .sum()
    }

    fn sums_of(weights: &[f32]) -> Vec<f64> {
        weights
            .chunks(BLOCK)
            .map(|b| b.iter().map(|&w| f64::from(w)).sum())
            .collect()
    }

    fn test_weights(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len)
            .map(|_| {
                // Many ties: weights on a coarse grid, some zero.
                let r = rng.next_u32() % 8;
                r as f32 * 0.125
            })
            .collect()
    }

    #[test]
    fn membership_matches_brute_force() {
        for (len, seed) in [(1usize, 0u64), (7, 1), (300, 2), (1000, 3)] {
            let weights = test_weights(len, seed);
            let sums = sums_of(&weights);
            let total: f64 = sums.iter().sum();
            for p in [0.05, 0.3, 0.5, 0.9, 0.999] {
                let limit = p * total;
                for token in 0..len {
                    if weights[token] > 0.0 {
                        assert_eq!(
                            in_nucleus(&weights, &sums, total, token, limit),
                            ahead(&weights, token) < limit,
                            "len {len} p {p} token {token}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn exact_nucleus_keeps_exactly_the_nucleus() {
        let mut scratch = Vec::new();
        for (len, seed) in [(5usize, 4u64), (100, 5), (2000, 6)] {
            let weights = test_weights(len, seed);
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for p in [0.01, 0.2, 0.5, 0.95] {
                let limit = p * total;
                let members: Vec<usize> = (0..len)
                    .filter(|&i| weights[i] > 0.0 && ahead(&weights, i) < limit)
                    .collect();
                let mass: f64 = members.iter().map(|&i| f64::from(weights[i])).sum();
                // u sweeps [0, 1): the draw must walk the members in index order.
                let mut cum = 0.0;
                for &i in &members {
                    let u = (cum + 0.5 * f64::from(weights[i])) / mass;
                    let got = exact_nucleus(&weights, None, limit, u, &mut scratch);
                    assert_eq!(got, Some(i), "len {len} p {p}");
                    cum += f64::from(weights[i]);
                }
                // With an outside bound, the same.
                if let Some(out) = (0..len).find(|&i| weights[i] > 0.0 && !members.contains(&i)) {
                    let u = 0.5;
                    assert_eq!(
                        exact_nucleus(&weights, Some((weights[out], out)), limit, u, &mut scratch),
                        exact_nucleus(&weights, None, limit, u, &mut scratch)
                    );
                }
            }
        }
    }

    #[test]
    fn rejection_only_returns_members() {
        let weights = test_weights(3000, 7);
        let sums = sums_of(&weights);
        let total: f64 = sums.iter().sum();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut scratch = Vec::new();
        for p in [0.001, 0.1, 0.6, 0.9] {
            let limit = p * total;
            for _ in 0..50 {
                let t = nucleus(&weights, &sums, total, limit, &mut rng, &mut scratch).unwrap();
                assert!(
                    weights[t] > 0.0 && ahead(&weights, t) < limit,
                    "p {p} token {t}"
                );
            }
        }
    }

    #[test]
    fn gather_keeps_the_best_ranked_with_lowest_indices_on_ties() {
        let (mut keys, mut out) = (Vec::new(), Vec::new());
        let mut logits: Vec<f32> = (0..2000).map(|i| ((i * 7919) % 50) as f32 - 25.0).collect();
        logits[77] = -0.0; // ties with the +0.0 values
        logits[1999] = f32::NEG_INFINITY;
        for keep in [1usize, 3, 40, 300, 1999, 2000, 5000] {
            let view = View::plain(&logits);
            let mut gather = Gather::new(keep, f32::NEG_INFINITY, &mut keys);
            view.visit(&mut gather);
            let got = ranked_candidates(gather.finish(&view).unwrap().0, &mut out).clone();
            let mut expected: Vec<Candidate> = logits
                .iter()
                .enumerate()
                .filter(|(_, &x)| x > f32::NEG_INFINITY)
                .map(|(i, &x)| (x, i as u32))
                .collect();
            expected.sort_by(by_rank);
            expected.truncate(keep);
            let got: Vec<(f32, u32)> = got.iter().map(|&(x, i)| (x + 0.0, i)).collect();
            assert_eq!(got, expected, "keep {keep}");
        }
    }

    #[test]
    fn group_scan_records_every_group_maximum_through_edits_and_reports_bad_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        for case in 0..240 {
            let len = [
                1usize, 15, 63, 64, 65, 127, 128, 200, 1000, 4096, 5000, 9001,
            ][case % 12];
            // Coarse values with zeros of both signs and masked stretches (whole masked groups
            // among them).
            let mut base: Vec<f32> = (0..len)
                .map(|_| match rng.random_range(0..10) {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f32::NEG_INFINITY,
                    _ => (rng.random_range(0..40) as f32) - 30.0,
                })
                .collect();
            if case % 5 == 0 && len > 130 {
                base[64..128].fill(f32::NEG_INFINITY);
            }
            if case % 7 == 0 {
                // Every value a zero: the maxima must come out `+0.0`.
                for (i, x) in base.iter_mut().enumerate() {
                    *x = if i % 3 == 0 { 0.0 } else { -0.0 };
                }
            }
            let count = [0usize, 1, 3, len / 5 + 1, len][case % 5];
            let mut edits: Vec<(u32, f32)> = (0..count)
                .map(|_| {
                    let value = (rng.random_range(0..40) as f32) - 30.0;
                    (rng.random_range(0..len as u32), value)
                })
                .collect();
            edits.sort_by_key(|&(t, _)| t);
            edits.dedup_by_key(|&mut (t, _)| t);
            // Now and then a bad value, in the base (possibly hidden under an edit) or as an edit.
            match case % 6 {
                1 => base[rng.random_range(0..len)] = f32::NAN,
                2 => base[rng.random_range(0..len)] = f32::INFINITY,
                3 if !edits.is_empty() => {
                    let at = rng.random_range(0..edits.len());
                    edits[at].1 = f32::NAN;
                }
                _ => {}
            }
            let mut patched = base.clone();
            for &(t, v) in &edits {
                patched[t as usize] = v;
            }
            let view = View::edited(&base, &edits);
            let mut groups = vec![f32::NAN; len.div_ceil(GROUP)];
            let mut scan = GroupScan::new(&mut groups);
            view.visit(&mut scan);
            let got = scan.finish(&view);
            let bad = patched
                .iter()
                .position(|x| x.is_nan() || *x == f32::INFINITY);
            if let Some(at) = bad {
                match got {
                    Err(SamplingError::NonFiniteLogit { index, .. }) => {
                        assert_eq!(index, at, "case {case}")
                    }
                    other => panic!("case {case}: {other:?}, expected the value at {at}"),
                }
                continue;
            }
            let max = patched.iter().copied().fold(f32::NEG_INFINITY, f32::max) + 0.0;
            if max == f32::NEG_INFINITY {
                assert!(matches!(got, Err(SamplingError::AllMasked)), "case {case}");
                continue;
            }
            assert_eq!(got.unwrap().to_bits(), max.to_bits(), "case {case}");
            for (g, &m) in groups.iter().enumerate() {
                let group = &patched[g * GROUP..((g + 1) * GROUP).min(len)];
                let want = group.iter().copied().fold(f32::NEG_INFINITY, f32::max) + 0.0;
                assert_eq!(m.to_bits(), want.to_bits(), "case {case} group {g}");
            }
        }
    }

    #[test]
    fn gather_with_ties_keeps_every_tie_of_the_kth_or_says_it_could_not() {
        let (mut keys, mut out) = (Vec::new(), Vec::new());
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let (mut kept, mut gave_up) = (0, 0);
        for case in 0..400 {
            let len = [100usize, 1000, 5000, 20_000][case % 4];
            // From a few distinct values (many ties) to many (few ties).
            let levels = [3u32, 20, 400, 1 << 20][case / 4 % 4];
            let mut logits: Vec<f32> = (0..len)
                .map(|_| (rng.next_u32() % levels) as f32 * 0.25)
                .collect();
            if case % 3 == 0 {
                logits[rng.random_range(0..len)] = -0.0;
                logits[rng.random_range(0..len)] = f32::NEG_INFINITY;
            }
            let keep = [1usize, 5, 50, 90][case % 4].min(len);
            let view = View::plain(&logits);
            let mut groups = vec![0.0; len.div_ceil(GROUP)];
            let mut scan = GroupScan::new(&mut groups);
            view.visit(&mut scan);
            let max = scan.finish(&view).unwrap();
            let floor = top_k_floor(&groups, keep, max, &mut out);
            let mut gather = Gather::new(keep, floor, &mut keys);
            gather.keep_ties();
            gather_groups(&view, &groups, floor, &mut gather);
            let (got, tied) = gather.finish(&view).unwrap();
            let got = ranked_candidates(got, &mut out).clone();
            let got: Vec<(f32, u32)> = got.iter().map(|&(x, i)| (x + 0.0, i)).collect();
            let mut ranked: Vec<Candidate> = logits
                .iter()
                .enumerate()
                .filter(|(_, &x)| x > f32::NEG_INFINITY)
                .map(|(i, &x)| (x + 0.0, i as u32))
                .collect();
            ranked.sort_by(by_rank);
            let kth = ranked[keep - 1].0;
            let expected: Vec<Candidate> = if tied {
                kept += 1;
                ranked.iter().copied().filter(|c| c.0 >= kth).collect()
            } else {
                gave_up += 1;
                // Only where ties abound (a k-th so far with too many to hold).
                assert!(levels <= 400, "case {case}: gave up over distinct values");
                ranked[..keep].to_vec()
            };
            assert_eq!(got, expected, "case {case} tied {tied}");
        }
        assert!(kept > 100 && gave_up > 10, "kept {kept} gave up {gave_up}");
    }

    #[test]
    fn group_maxima_bound_the_search_exactly() {
        let (mut keys, mut out) = (Vec::new(), Vec::new());
        for (len, seed) in [(100usize, 1u64), (64, 2), (1000, 3), (5000, 4)] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // Coarse values: many ties, also across groups.
            let logits: Vec<f32> = (0..len).map(|_| (rng.next_u32() % 40) as f32).collect();
            let mut groups = vec![0.0; len.div_ceil(GROUP)];
            let view = View::plain(&logits);
            let mut scan = GroupScan::new(&mut groups);
            view.visit(&mut scan);
            let max = scan.finish(&view).unwrap();
            assert_eq!(
                max,
                logits.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            );
            for (g, &m) in groups.iter().enumerate() {
                let group = &logits[g * GROUP..((g + 1) * GROUP).min(len)];
                assert_eq!(m, group.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            }
            for keep in [1usize, 2, 10, 50, 200] {
                let floor = top_k_floor(&groups, keep, max, &mut out);
                let mut ranked = groups.clone();
                ranked.sort_by(|a, b| b.partial_cmp(a).unwrap());
                match ranked.get(keep - 1) {
                    // The floor is the `keep`-th largest group maximum itself.
                    Some(&kth) => assert_eq!(floor, kth, "len {len} keep {keep}"),
                    None => assert_eq!(floor, f32::NEG_INFINITY, "len {len} keep {keep}"),
                }
                let mut gather = Gather::new(keep, floor, &mut keys);
                gather_groups(&view, &groups, floor, &mut gather);
                let got = ranked_candidates(gather.finish(&view).unwrap().0, &mut out).clone();
                let mut expected: Vec<Candidate> = logits
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x, i as u32))
                    .collect();
                expected.sort_by(by_rank);
                expected.truncate(keep);
                assert_eq!(got, expected, "len {len} keep {keep}");
            }
        }
        assert_eq!(just_below(1.0), f32::from_bits(1.0f32.to_bits() - 1));
        assert_eq!(just_below(-1.0), f32::from_bits((-1.0f32).to_bits() + 1));
        assert!(just_below(0.0) < 0.0 && just_below(-0.0) < 0.0);
        assert_eq!(just_below(f32::NEG_INFINITY), f32::NEG_INFINITY);
    }

    #[test]
    fn lane_max_is_the_largest_lane_and_a_zero_maximum_is_positive() {
        let mut gen = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..2000 {
            let lanes: [f32; LANES] = std::array::from_fn(|_| match gen.random_range(0..4) {
                0 => f32::NEG_INFINITY,
                1 => -0.0,
                2 => 0.0,
                _ => gen.random_range(-5.0..5.0),
            });
            let expected = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let got = lane_max(&lanes);
            assert_eq!(got, expected, "{lanes:?}");
            if got == 0.0 {
                assert_eq!(got.to_bits(), 0, "{lanes:?}");
            }
        }
        assert_eq!(lane_max(&[-0.0; LANES]).to_bits(), 0);
        assert_eq!(lane_max(&[f32::NEG_INFINITY; LANES]), f32::NEG_INFINITY);
    }

    #[test]
    fn collect_takes_exactly_the_unmasked_logits_at_or_above_the_floor() {
        let mut gen = ChaCha8Rng::seed_from_u64(6);
        let mut logits: Vec<f32> = (0..1000).map(|_| gen.random_range(-3.0f32..3.0)).collect();
        logits[3] = f32::NEG_INFINITY;
        logits[500] = -f32::MAX;
        logits[999] = 1.5;
        logits[17] = 1.5;
        for floor in [
            f32::NEG_INFINITY,
            -f32::MAX,
            -1.0,
            0.0,
            1.5,
            2.999,
            3.0,
            f32::NAN,
        ] {
            let mut out = Vec::new();
            View::plain(&logits).visit(&mut Collect::new(floor, &mut out));
            let expected: Vec<Candidate> = logits
                .iter()
                .zip(0u32..)
                .filter(|(&x, _)| x >= floor && x > f32::NEG_INFINITY)
                .map(|(&x, i)| (x, i))
                .collect();
            assert_eq!(out, expected, "floor {floor}");
        }
    }

    #[test]
    fn collect_keys_keeps_the_best_ranked_whatever_the_ceiling_and_expected_count() {
        let mut gen = ChaCha8Rng::seed_from_u64(23);
        let mut keys = Vec::new();
        let (mut spilled, mut gapped, mut front_only) = (0, 0, 0);
        for case in 0..600 {
            let len = [7usize, 64, 100, 2048, 3001][case % 5];
            // Coarse values (ties across the floor and the ceiling), zeros of both signs and
            // masked values.
            let logits: Vec<f32> = (0..len)
                .map(|_| match gen.random_range(0..12) {
                    0 => f32::NEG_INFINITY,
                    1 => -0.0,
                    2 => 0.0,
                    _ => gen.random_range(-20i32..20) as f32 * 0.5,
                })
                .collect();
            let mut ranked: Vec<Candidate> = logits
                .iter()
                .zip(0u32..)
                .filter(|(&x, _)| x > f32::NEG_INFINITY)
                .map(|(&x, i)| (x + 0.0, i))
                .collect();
            ranked.sort_by(by_rank);
            let floor = [f32::NEG_INFINITY, -5.0, -0.0, 0.0, 3.0, 9.5][case % 6];
            let reaching = ranked.iter().filter(|c| c.0 >= floor).count();
            // The expected count exact, under- and over-estimated, or nothing.
            let expected = [reaching, reaching / 2, reaching + 17, 0][case / 6 % 4];
            let keep = [1usize, 5, 50, 250, 5000][case / 24 % 5];
            // No ceiling, one reached by fewer than `keep` values, exactly `keep` or more.
            let ceiling = match case / 120 % 5 {
                0 => f32::INFINITY,
                1 => f32::NAN,
                2 => ranked.get(keep / 2).map_or(f32::INFINITY, |c| c.0),
                3 => ranked.get(keep - 1).map_or(f32::INFINITY, |c| c.0),
                _ => ranked.get(keep + 3).map_or(-f32::MAX, |c| c.0),
            };
            let mut collect = CollectKeys::new(floor, expected, &mut keys).ceiling(ceiling);
            View::plain(&logits).visit(&mut collect);
            let (front, back) = (collect.front, collect.back);
            let result = collect.finish(keep);
            let mut want: Vec<Candidate> =
                ranked.iter().copied().filter(|c| c.0 >= floor).collect();
            want.truncate(keep);
            if want.is_empty() {
                assert!(
                    matches!(result, Err(SamplingError::AllMasked)),
                    "case {case}"
                );
                continue;
            }
            let mut got: Vec<Candidate> = result.unwrap().iter().map(|&k| unkey(k)).collect();
            got.sort_by(by_rank);
            assert_eq!(got, want, "case {case} floor {floor} ceiling {ceiling}");
            spilled += usize::from(front + back > expected);
            gapped += usize::from(front + back < expected && front > 0 && back > 0);
            front_only += usize::from(front > keep);
        }
        // The cases cover keys past the slots, gaps between front and back, and a front holding
        // more than `keep`.
        assert!(
            spilled > 50 && gapped > 20 && front_only > 20,
            "{spilled} {gapped} {front_only}"
        );
        assert!(matches!(
            CollectKeys::new(0.0, 4, &mut keys).finish(0),
            Err(SamplingError::AllMasked)
        ));
    }

    #[test]
    fn lane_masks_compare_zeros_of_both_signs_as_equal() {
        let mut chunk = [0.0f32; LANES];
        for (j, x) in chunk.iter_mut().enumerate() {
            *x = [0.0, -0.0, 1.0, -1.0, f32::NEG_INFINITY, f32::MIN_POSITIVE][j % 6];
        }
        for threshold in [0.0f32, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, -f32::MAX] {
            let reference = |strict: bool| {
                chunk.iter().zip(0u32..).fold(0u32, |mask, (&x, j)| {
                    let above = if strict {
                        x > threshold
                    } else {
                        x >= threshold
                    };
                    mask | (u32::from(above) << j)
                })
            };
            assert_eq!(lanes_above::<false>(&chunk, threshold), reference(false));
            assert_eq!(lanes_above::<true>(&chunk, threshold), reference(true));
            let mut seen = Vec::new();
            each_at_least::<true>(10, &chunk, threshold, |x, i| seen.push((x, i)));
            let want: Vec<(f32, u32)> = chunk
                .iter()
                .zip(10u32..)
                .filter(|(&x, _)| x >= threshold)
                .map(|(&x, i)| (x, i))
                .collect();
            assert_eq!(seen, want, "threshold {threshold}");
        }
        // A zero threshold of either sign takes the zeros of both signs.
        assert_eq!(
            lanes_above::<false>(&chunk, -0.0),
            lanes_above::<false>(&chunk, 0.0)
        );
    }

    #[test]
    fn move_worst_first_moves_the_smallest_keys() {
        let mut gen = ChaCha8Rng::seed_from_u64(3);
        for case in 0..300 {
            let len: usize = gen.random_range(0..400);
            let keys: Vec<u64> = (0..len).map(|_| gen.random_range(0..1000u64)).collect();
            let count = [
                0,
                1,
                5,
                63,
                64,
                65,
                200,
                len / 2,
                len.saturating_sub(1),
                len,
            ][case % 10];
            let mut moved = keys.clone();
            move_worst_first(&mut moved, count);
            let mut sorted = keys.clone();
            sorted.sort();
            let count = count.min(len);
            let (mut front, mut back) = (moved[..count].to_vec(), moved[count..].to_vec());
            front.sort();
            back.sort();
            assert_eq!(front, sorted[..count], "case {case}");
            assert_eq!(back, sorted[count..], "case {case}");
        }
    }

    #[test]
    fn a_sampled_floor_is_reached_by_the_top_k_and_counted_exactly() {
        let mut gen = ChaCha8Rng::seed_from_u64(12);
        let (mut tried, mut taken, mut spread_out, mut slack) = (0, 0, 0, 0.0f64);
        for case in 0..400 {
            let len = gen.random_range(SAMPLED_SPREAD_MIN / 2..20_000);
            let spread = [0.001f32, 1.0, 8.0, 60.0][case % 4];
            let mut logits: Vec<f32> = (0..len).map(|_| -spread * gen.random::<f32>()).collect();
            match case % 5 {
                // Sorted either way, the worst orders for a sample of fixed lanes.
                1 => logits.sort_by(|a, b| a.partial_cmp(b).unwrap()),
                2 => logits.sort_by(|a, b| b.partial_cmp(a).unwrap()),
                3 => logits
                    .iter_mut()
                    .step_by(3)
                    .for_each(|x| *x = f32::NEG_INFINITY),
                4 => logits.iter_mut().for_each(|x| *x = (*x * 2.0).round()),
                _ => {}
            }
            let view = View::plain(&logits);
            let mut scan = Scan::new();
            view.visit(&mut scan);
            let max = scan.finish(&view).unwrap();
            let keep = [1usize, 10, 250, len / 20, len / 3][case / 5 % 5].max(1);
            let mut ranked = logits.clone();
            ranked.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let random = case % 5 == 0 && len >= SAMPLED_SPREAD_MIN && keep * 16 < len;
            tried += usize::from(random);
            if let Some((floor, reached, _)) = sampled_floor(&view, max, keep) {
                taken += usize::from(random);
                let count = logits.iter().filter(|&&x| x >= floor).count();
                assert_eq!(reached, count, "case {case}");
                assert!(reached >= keep, "case {case}");
                assert!(floor <= ranked[keep - 1], "case {case}");
                assert!(floor > f32::NEG_INFINITY, "case {case}");
                if random && spread >= 1.0 {
                    spread_out += 1;
                    // Beyond the fewest a floor can have: the logits reaching the k-th.
                    let fewest = logits.iter().filter(|&&x| x >= ranked[keep - 1]).count();
                    slack += (reached - fewest) as f64 / (keep + 16) as f64;
                }
            }
        }
        // Random orders almost always take the sample, and its floor is close.
        assert!(
            tried > 30 && taken >= tried * 9 / 10,
            "{taken} sampled of {tried}"
        );
        // (Distances below 2^-10 share a bucket, so logits that close are all collected.)
        let slack = slack / spread_out as f64;
        assert!(
            slack < 0.5,
            "{slack} of k + 16 more logits than needed, on average"
        );
    }

    #[test]
    fn spread_floor_bounds_the_top_k_exactly() {
        let (mut keys, mut out) = (Vec::new(), Vec::new());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Scales from tiny to near f32::MAX, with ties, masks and huge offsets.
        for case in 0..400u32 {
            let len = 1 + (rng.next_u32() % 3000) as usize;
            let scale = [1e-6f32, 0.05, 1.0, 30.0, 1e6, 1e30, 3e38][(case % 7) as usize];
            let offset = [0.0f32, 1e7, -1e30, 3e38][(case / 7 % 4) as usize];
            let logits: Vec<f32> = (0..len)
                .map(|_| match rng.next_u32() % 20 {
                    0 => f32::NEG_INFINITY,
                    1 => offset,
                    _ => {
                        let u = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                        (offset - u * scale).max(f32::MIN)
                    }
                })
                .collect();
            let view = View::plain(&logits);
            let mut scan = Scan::new();
            view.visit(&mut scan);
            let Ok(max) = scan.finish(&view) else {
                continue;
            };
            let mut spread = Spread::new(max);
            view.visit(&mut spread);
            let mut ranked: Vec<Candidate> = logits
                .iter()
                .enumerate()
                .filter(|(_, &x)| x > f32::NEG_INFINITY)
                .map(|(i, &x)| (x, i as u32))
                .collect();
            ranked.sort_by(by_rank);
            for keep in [1usize, 2, 7, 50, 250, 1000, 5000] {
                let (floor, count) = spread.floor(keep);
                let reached = logits.iter().filter(|&&x| x >= floor).count();
                assert!(
                    floor == f32::NEG_INFINITY || (count >= keep.min(reached) && count <= reached),
                    "case {case} keep {keep}: {count} counted, {reached} reach {floor}"
                );
                if let Some(&(kth, _)) = ranked.get(keep - 1) {
                    assert!(floor <= kth, "case {case} keep {keep}: {floor} > {kth}");
                }
                let mut gather = Gather::new(keep, floor, &mut keys);
                view.visit(&mut gather);
                let got: Vec<Candidate> =
                    ranked_candidates(gather.finish(&view).unwrap().0, &mut out).clone();
                let got: Vec<Candidate> = got.iter().map(|&(x, i)| (x + 0.0, i)).collect();
                let expected: Vec<Candidate> = ranked
                    .iter()
                    .take(keep)
                    .map(|&(x, i)| (x + 0.0, i))
                    .collect();
                assert_eq!(got, expected, "case {case} keep {keep}");
            }
        }
    }

    #[test]
    fn spread_floor_is_tight_for_a_large_k_over_a_small_vocabulary() {
        // Moshi's audio sampler: k = 250 of 2048 codes, logits spread over a few tens.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let logits: Vec<f32> = (0..2048)
            .map(|_| (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * -20.0)
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut spread = Spread::new(max);
        View::plain(&logits).visit(&mut spread);
        let (floor, _) = spread.floor(250);
        let above = logits.iter().filter(|&&x| x >= floor).count();
        assert!(
            (250..=400).contains(&above),
            "{above} logits reach the floor {floor}"
        );
    }

    #[test]
    fn keys_order_like_the_rank_order() {
        let values = [
            f32::NEG_INFINITY,
            f32::MIN,
            -1.0,
            -f32::MIN_POSITIVE,
            -0.0,
            0.0,
            f32::from_bits(1),
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for (a, &x) in values.iter().enumerate() {
            for &i in &[0u32, 7, u32::MAX] {
                let (back, j) = unkey(key(x, i));
                assert_eq!((back + 0.0).to_bits(), (x + 0.0).to_bits());
                assert_eq!(i, j);
                for (b, &y) in values.iter().enumerate() {
                    for &j in &[0u32, 7, u32::MAX] {
                        let expected = by_rank(&(x, i), &(y, j)).reverse();
                        let same_value = (a == b) || (x == y);
                        let got = key(x, i).cmp(&key(y, j));
                        if same_value {
                            assert_eq!(got, j.cmp(&i), "{x} {i} vs {y} {j}");
                        } else {
                            assert_eq!(got, expected, "{x} vs {y}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn argmax_finds_the_first_maximum() {
        let mut logits = vec![0.0f32; 100];
        logits[40] = 3.0;
        logits[70] = 3.0;
        logits[99] = 3.0;
        assert_eq!(argmax(&View::plain(&logits)).unwrap(), 40);
        // An edit hides the first one, another creates an earlier one.
        let hide = [(40, 1.0)];
        assert_eq!(argmax(&View::edited(&logits, &hide)).unwrap(), 70);
        let create = [(5, 3.0), (40, 1.0)];
        assert_eq!(argmax(&View::edited(&logits, &create)).unwrap(), 5);
        let masked = [f32::NEG_INFINITY; 20];
        assert!(matches!(
            argmax(&View::plain(&masked)),
            Err(SamplingError::AllMasked)
        ));
        let mut bad = vec![0.0f32; 40];
        bad[33] = f32::INFINITY;
        assert!(matches!(
            argmax(&View::plain(&bad)),
            Err(SamplingError::NonFiniteLogit { index: 33, .. })
        ));
        bad[21] = f32::NAN;
        assert!(matches!(
            argmax(&View::plain(&bad)),
            Err(SamplingError::NonFiniteLogit { index: 21, .. })
        ));
    }
}
