//! [`NativeSampler`]: candle's sampling distributions, drawn in O(vocab) without sorting,
//! without allocating and from a portable, seeded random stream.

pub(crate) mod dispatch;
mod draw;
mod mass;
mod select;
mod view;
mod weights;

pub(crate) use draw::unit;
pub(crate) use select::{Candidate, Moments};
pub(crate) use view::{copies, copy_into, patch_into, View};
pub(crate) use weights::{scale, weight, WeightedMoments, HIST_WIDTH};

use candle_core::Tensor;
use candle_transformers::generation::Sampling;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::logits::with_logits;
use crate::params::{check_sampling, sampling_from_options};
use crate::{Sampler, SamplingError};
pub(crate) use select::GROUP;
use select::{
    by_rank, gather_groups, ranked_candidates, sampled_floor, top_k_floor, unkey, Collect,
    CollectKeys, Gather, GroupScan, Scan, Spread,
};
use view::{normalise_edits, EditBuffer};
use weights::{BlockSums, BlockWeights, StoreWeights, SumWeights, BLOCK};

/// A sampler that draws from exactly the distributions of candle's `LogitsProcessor`, for every
/// [`Sampling`] variant, at a fraction of the cost, from its own seeded random stream.
///
/// # Distributions
///
/// With `w_i = exp((x_i - max) / T)` the unnormalised softmax weight of logit `x_i` at
/// temperature `T`, and *rank order* meaning decreasing probability:
///
/// * `ArgMax`: the largest logit; **ties go to the lowest index** (as candle).
/// * `All { T }`: token `i` with probability `w_i / Σw`.
/// * `TopK { k, T }`: the `k` largest logits, then `All` over them. **Ties at the k-th value go
///   to the lowest indices** (candle keeps an unspecified subset of the tied tokens; each tied
///   token has the same probability either way). `k >= vocab` is `All`.
/// * `TopP { p, T }`: the nucleus, i.e. the tokens whose preceding mass in rank order is below
///   `p`: the smallest prefix in rank order whose mass reaches `p`, the token that crosses `p`
///   included. Then `All` over it. **Equal probabilities rank by lowest index first**, so a tie
///   that straddles the boundary keeps its lowest indices (this is candle's rule too: its sort is
///   stable). As in candle, `p` is rounded to f32 and `p >= 1` is `All`.
/// * `TopKThenTopP { k, p, T }`: candle's rule, which measures `p` against the probabilities of
///   the whole vocabulary, not renormalised over the top `k`: among the top `k` (ties as in
///   `TopK`), keep those whose preceding mass (in rank order, ties by lowest index) is below `p`;
///   when the top `k` hold less than `p` of the mass, all `k` are kept. `k >= vocab` is `TopP`.
///   (candle orders tied top-k tokens in an unspecified way; here the lowest index ranks first.)
/// * `GumbelSoftmax { T }`: exact Gumbel-max, the argmax of `ln w_i + g_i` with standard Gumbel
///   noise `g_i`, whose law is `All`. The noise comes from this sampler's seeded stream, so the
///   variant is reproducible (candle's is not, and clips its noise to `[-2.8, 6.9]`, which
///   slightly distorts the distribution). It is drawn in two levels (one variate per block of
///   256 tokens, then one per token of the winning block), which max-stability makes equal in
///   law to one variate per token.
///
/// Tokens of probability 0 are never drawn: `-inf` logits, and logits more than
/// `127 ln 2 ≈ 88.0` temperatures below the maximum, whose weight (below `2^-127` of the
/// maximum's) is computed as exactly 0. Probabilities are computed in f32 with a polynomial
/// exponential as accurate as candle's f32 softmax (relative error about 2e-7 for the likely
/// tokens, and weights below `2^-125` of the maximum's are only bounded, not accurate), and the
/// cumulative masses that decide the nucleus are summed in f64, so a nucleus boundary may differ
/// from candle's only when a cumulative mass lies within f32 rounding of `p`. Temperatures are
/// bounded to `[1e-7, 1e6]` ([`limits`](crate::limits)): within them, two finite logits whose
/// difference overflows `f32` (up to `6.8e38`) are at least `3.4e32` temperatures apart, so the
/// smaller one's weight is exactly 0 whether or not its difference overflowed.
///
/// # Cost
///
/// Every variant is O(vocab) with no sort of the vocabulary, validation fused into the first
/// pass:
///
/// * `ArgMax`: a pass for the maximum, then a search that stops at its first occurrence;
/// * `TopK`: a pass that also records the maximum of every group of 64 tokens, then a threshold
///   search through only the groups whose maximum reaches the `k`-th largest group maximum
///   (about `k` groups); when `k` exceeds the number of groups (Moshi's `k = 250` over 2048
///   codes), a histogram of the distances to the maximum (of one logit in eight, checked by
///   exact counts) gives the threshold instead.
///   The draw sorts only the candidates of the octave of weight in which it ends when every
///   partial sum of their weights is exact in f64, else all `k`;
/// * `All` and `GumbelSoftmax`: a pass for the maximum, then one that sums the weights per block
///   of 256 tokens; the draw walks the block sums, then recomputes one block's weights;
/// * `TopP`: a pass for the maximum, one that writes the weights and their block sums, then
///   rejection sampling against the full distribution, which is exact and needs a (usually
///   partial) pass over the weights to test a drawn token's membership;
/// * `TopKThenTopP`: `TopK`'s passes; then candle's cut, whose `p` is measured against the whole
///   vocabulary's weight, is decided from bounds on that weight (the top `k` and the group
///   maxima) when they suffice, and otherwise by a pass that sums the weights.
///
/// Loops are written to be vectorised by the compiler in portable code. Contiguous CPU f32
/// tensors (`[V]` or `[1, V]`) are read in place, and buffers are kept from call to call, so after
/// the first call a sampler allocates nothing on that input. Other dtypes and devices are first
/// converted, as the adapter does.
///
/// [`Sampler::sample_edited`] is implemented natively: [`RepetitionPenalty`](crate::RepetitionPenalty)
/// over a `NativeSampler` costs O(context) on top of the bare engine, and draws the very token the
/// engine would draw from a patched copy of the logits.
///
/// # Reproducibility
///
/// The random stream is [`rand_chacha::ChaCha8Rng`] seeded with `seed_from_u64(seed)`, whose
/// output rand_chacha documents as portable. Draws take 64-bit words from it (none for `ArgMax`,
/// one for `All`, `TopK` and `TopKThenTopP`, one per try for `TopP`, one per block and per token of
/// the winning block for `GumbelSoftmax`), and all the arithmetic that turns logits and random
/// words into a token is IEEE f32/f64 in a fixed order. So:
///
/// * the same seed, sampling and sequence of logits give the same tokens on every platform and
///   build (`GumbelSoftmax` aside, which takes logarithms from the platform's math library and
///   could differ in rare cases between platforms);
/// * [`reset`](Sampler::reset) restarts the stream: the same calls then replay the same tokens;
/// * the stream is pinned by this crate's tests: a change to it is a breaking change, noted in
///   the changelog.
///
/// Streams differ from candle's for the same seed (candle uses `StdRng` and draws differently);
/// distributions do not.
///
/// # Errors
///
/// The same as [`LogitsProcessorSampler`](crate::LogitsProcessorSampler): invalid parameters at
/// construction, and empty logits, wrong ranks, integer dtypes, NaN or `+inf` logits (with the
/// first offending index) and all-`-inf` logits at every call. Edited values are checked like
/// any other logit.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{NativeSampler, Sampler, SamplerExt, Sampling};
///
/// let logits = Tensor::new(&[1.0f32, 3.0, 0.5, 2.0, f32::NEG_INFINITY], &Device::Cpu)?;
/// let mut sampler = NativeSampler::from_sampling(42, Sampling::TopK { k: 2, temperature: 1.0 })?;
/// let first: Vec<u32> = (0..8).map(|_| sampler.sample(&logits, &[])).collect::<Result<_, _>>()?;
/// assert!(first.iter().all(|&t| t == 1 || t == 3));
///
/// // Same seed, same stream.
/// sampler.reset();
/// let again: Vec<u32> = (0..8).map(|_| sampler.sample(&logits, &[])).collect::<Result<_, _>>()?;
/// assert_eq!(first, again);
///
/// // Decorators compose without copying the vocabulary.
/// let mut penalised = NativeSampler::from_sampling(42, Sampling::ArgMax)?
///     .with_repetition_penalty(4.0, 64)?;
/// assert_eq!(penalised.sample(&logits, &[1])?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct NativeSampler {
    seed: u64,
    sampling: Sampling,
    mode: Mode,
    rng: ChaCha8Rng,
    work: Workspace,
    /// Host copy of logits that cannot be read in place.
    host: Vec<f32>,
}

/// The parameters of a [`Sampling`], checked and preprocessed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    ArgMax,
    All { scale: f32 },
    TopK { k: usize, scale: f32 },
    TopP { p: f64, scale: f32 },
    TopKThenTopP { k: usize, p: f64, scale: f32 },
    Gumbel { scale: f32 },
}

impl Mode {
    pub(crate) fn new(sampling: &Sampling) -> Self {
        match *sampling {
            Sampling::ArgMax => Self::ArgMax,
            Sampling::All { temperature } => Self::All {
                scale: scale(temperature),
            },
            Sampling::TopK { k, temperature } => Self::TopK {
                k,
                scale: scale(temperature),
            },
            Sampling::TopP { p, temperature } => Self::TopP {
                p,
                scale: scale(temperature),
            },
            Sampling::TopKThenTopP { k, p, temperature } => Self::TopKThenTopP {
                k,
                p,
                scale: scale(temperature),
            },
            Sampling::GumbelSoftmax { temperature } => Self::Gumbel {
                scale: scale(temperature),
            },
        }
    }
}

/// Buffers kept from call to call.
#[derive(Clone, Default)]
pub(crate) struct Workspace {
    /// One weight per token (`All`, `TopP`, `GumbelSoftmax`).
    weights: Vec<f32>,
    /// The sums of the [`BLOCK`]s of `weights`.
    sums: Vec<f64>,
    /// Top-k candidates, or the nucleus fallback's.
    candidates: Vec<Candidate>,
    /// The top-k selection buffer.
    keys: Vec<u64>,
    /// The maximum of each group of tokens (top-k).
    groups: Vec<f32>,
    /// One exponential variate per block (`GumbelSoftmax`).
    variates: Vec<f64>,
    /// The block sums known exactly, or -1 (`GumbelSoftmax` over many blocks).
    exact: Vec<f64>,
    /// Edits that needed sorting.
    edits: EditBuffer,
}

impl NativeSampler {
    /// A sampler for `sampling`, seeded with `seed`.
    ///
    /// # Errors
    ///
    /// [`SamplingError::InvalidParameter`] when a temperature is outside `[1e-7, 1e6]`, `k` is 0,
    /// or `p` is outside `[1.1754944e-38, 1]` ([`limits`](crate::limits)), exactly as
    /// [`LogitsProcessorSampler::from_sampling`].
    ///
    /// [`LogitsProcessorSampler::from_sampling`]: crate::LogitsProcessorSampler::from_sampling
    pub fn from_sampling(seed: u64, sampling: Sampling) -> Result<Self, SamplingError> {
        check_sampling(&sampling)?;
        Ok(Self {
            seed,
            mode: Mode::new(&sampling),
            sampling,
            rng: ChaCha8Rng::seed_from_u64(seed),
            work: Workspace::default(),
            host: Vec::new(),
        })
    }

    /// candle's `LogitsProcessor::new` mapping, as
    /// [`LogitsProcessorSampler::new`](crate::LogitsProcessorSampler::new): no temperature, or one
    /// below `1e-7`, means `ArgMax`; otherwise `TopP` when `top_p` is given and `All` when not.
    ///
    /// # Errors
    ///
    /// A NaN temperature or one above `1e6`, or a `top_p` outside `[1.1754944e-38, 1]`.
    pub fn new(
        seed: u64,
        temperature: Option<f64>,
        top_p: Option<f64>,
    ) -> Result<Self, SamplingError> {
        Self::from_sampling(seed, sampling_from_options(temperature, top_p)?)
    }

    /// The strategy this sampler draws with.
    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// The seed it was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The token for `view`.
    fn draw(&mut self, view: View<'_>) -> Result<u32, SamplingError> {
        draw_mode(&mut self.work, self.mode, &view, &mut self.rng)
    }
}

/// The token that `mode` draws for `view`, with `work`'s buffers and `rng`'s stream: the one
/// implementation of every strategy, shared by [`NativeSampler`] and the chain's plans that
/// reduce to one of them.
pub(crate) fn draw_mode(
    work: &mut Workspace,
    mode: Mode,
    view: &View<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<u32, SamplingError> {
    let len = view.len();
    if len == 0 {
        return Err(SamplingError::EmptyLogits);
    }
    if len - 1 > u32::MAX as usize {
        // Token ids are u32: such a vocabulary cannot be sampled.
        return Err(SamplingError::InvalidShape { shape: vec![len] });
    }
    let token = match mode {
        Mode::ArgMax => return select::argmax(view),
        Mode::All { scale } => all(work, view, scale, rng)?,
        Mode::TopK { k, scale } if k >= len => all(work, view, scale, rng)?,
        Mode::TopK { k, scale } => top_k(work, view, k, scale, rng)?,
        Mode::TopP { p, scale } => top_p(work, view, p, scale, rng)?,
        Mode::TopKThenTopP { k, p, scale } if k >= len => top_p(work, view, p, scale, rng)?,
        Mode::TopKThenTopP { k, p, scale } => top_k_top_p(work, view, k, p, scale, rng)?,
        Mode::Gumbel { scale } => {
            let (picked, max) = gumbel_pick_block(work, view, scale, rng)?;
            match picked {
                Some(b) => {
                    let mut block = [0.0f32; BLOCK];
                    let block = block_weights(view, b, max, scale, &mut block);
                    draw::gumbel_within(block, b * BLOCK, rng, &mut work.variates)
                }
                None => None,
            }
        }
    };
    // `None` would mean that no token has a positive weight, which validation rules out
    // (the maximum weighs 1).
    token.map(|t| t as u32).ok_or(SamplingError::AllMasked)
}

/// Validates `view`, then fills the workspace with its weights and block sums; returns them and
/// their total.
fn dense<'w>(
    work: &'w mut Workspace,
    view: &View<'_>,
    scale: f32,
) -> Result<(&'w [f32], &'w [f64], f64), SamplingError> {
    let mut scan = Scan::new();
    view.visit(&mut scan);
    let max = scan.finish(view)?;
    let len = view.len();
    let blocks = len.div_ceil(BLOCK);
    if work.weights.len() < len {
        work.weights.resize(len, 0.0);
    }
    if work.sums.len() < blocks {
        work.sums.resize(blocks, 0.0);
    }
    let weights = &mut work.weights[..len];
    let sums = &mut work.sums[..blocks];
    let mut store = StoreWeights::new(max, scale, weights, sums);
    view.visit(&mut store);
    store.finish();
    let total = sums.iter().sum();
    Ok((weights, sums, total))
}

/// Validates `view`, then fills the workspace with the sums of its blocks of weights (without
/// storing the weights); returns them, their total and the largest logit.
fn block_sums<'w>(
    work: &'w mut Workspace,
    view: &View<'_>,
    scale: f32,
) -> Result<(&'w [f64], f64, f32), SamplingError> {
    let mut scan = Scan::new();
    view.visit(&mut scan);
    let max = scan.finish(view)?;
    let len = view.len();
    let blocks = len.div_ceil(BLOCK);
    if work.sums.len() < blocks {
        work.sums.resize(blocks, 0.0);
    }
    let sums = &mut work.sums[..blocks];
    let mut block = BlockSums::new(max, scale, len, sums);
    view.visit(&mut block);
    block.finish();
    let total = sums.iter().sum();
    Ok((sums, total, max))
}

/// From this many blocks, `GumbelSoftmax` bounds the block sums by the group maxima and computes
/// only the sums that can win (below, the bounds rule out too few blocks to pay for themselves).
const BOUNDED_GUMBEL_BLOCKS: usize = 32;

/// Relative slack of the Gumbel bounds: far more than the rounding of a block's f32 sum (below
/// `2^-19`) and the weights' departures from monotonicity (below `2^-21`).
const GUMBEL_MARGIN: f64 = 1.0 / 4096.0;

/// The first level of the Gumbel-max draw: validates `view`, then returns the winning block
/// ([`draw::gumbel_block`]'s on the exact sums, with the same variates) and the largest logit.
///
/// Over many blocks, the sums come from bounds first: a pass records the maximum of every group
/// of [`GROUP`] tokens; a block's sum is at least the weights of its groups' maxima (they are
/// some of its tokens) and at most [`GROUP`] times that (no token of a group is above its
/// maximum), both widened by [`GUMBEL_MARGIN`]. [`draw::race`] then computes only the
/// sums of the blocks those bounds cannot rule out (about a tenth at 128256 Zipf-shaped logits).
fn gumbel_pick_block(
    work: &mut Workspace,
    view: &View<'_>,
    scale: f32,
    rng: &mut ChaCha8Rng,
) -> Result<(Option<usize>, f32), SamplingError> {
    let len = view.len();
    let blocks = len.div_ceil(BLOCK);
    if blocks < BOUNDED_GUMBEL_BLOCKS {
        let (mut known, mut variates) = (
            std::mem::take(&mut work.exact),
            std::mem::take(&mut work.variates),
        );
        let picked = block_sums(work, view, scale).map(|(sums, _, max)| {
            (
                draw::gumbel_block(sums, rng, &mut known, &mut variates),
                max,
            )
        });
        (work.variates, work.exact) = (variates, known);
        return picked;
    }
    let max = scan_groups(work, view)?;
    let Workspace {
        groups,
        sums: lower,
        exact,
        variates,
        ..
    } = &mut *work;
    let groups = groups.get(..len.div_ceil(GROUP)).unwrap_or_default();
    lower.resize(blocks.max(lower.len()), 0.0);
    exact.resize(blocks.max(exact.len()), 0.0);
    let (lower, exact) = (&mut lower[..blocks], &mut exact[..blocks]);
    weights::block_maxima_weights(groups, max, scale, lower);
    let mut block = [0.0f32; BLOCK];
    let mut sum = |b: usize| {
        block.fill(0.0);
        block_weights(view, b, max, scale, &mut block);
        weights::block_total(&block)
    };
    let per_block = BLOCK / GROUP;
    for (b, (low, known)) in lower.iter_mut().zip(exact.iter_mut()).enumerate() {
        *known = -1.0;
        if *low > 0.0 {
            *low *= 1.0 - GUMBEL_MARGIN;
        } else {
            // No group maximum weighs anything: the sum is 0 when the block's maximum is past
            // the weights' clamp (every token of the block is then exactly 0), else computed.
            let top = groups
                .iter()
                .skip(b * per_block)
                .take(per_block)
                .fold(f32::NEG_INFINITY, |a, &m| if m > a { m } else { a });
            let y = (top - max) * scale;
            *known = if y > -127.0 { sum(b) } else { 0.0 };
        }
    }
    let upper =
        |low: f64| GROUP as f64 * low * (1.0 + 4.0 * GUMBEL_MARGIN) + BLOCK as f64 * weights::TINY;
    Ok((draw::race(lower, exact, upper, sum, rng, variates), max))
}

/// The weights of block `b` of `view` (the same bits [`dense`] stores), in `out`; the last block
/// may be partial.
fn block_weights<'o>(
    view: &View<'_>,
    b: usize,
    max: f32,
    scale: f32,
    out: &'o mut [f32; BLOCK],
) -> &'o [f32] {
    let start = b * BLOCK;
    let end = (start + BLOCK).min(view.len());
    let mut weights = BlockWeights::new(max, scale, start, out);
    view.visit_range(start, end, &mut weights);
    out.get(..end.saturating_sub(start)).unwrap_or_default()
}

/// Validates `view` and records the maximum of every group of [`GROUP`] tokens in the
/// workspace; returns the largest logit. The groups let [`collect_groups`] skip most of the
/// vocabulary.
pub(crate) fn scan_groups(work: &mut Workspace, view: &View<'_>) -> Result<f32, SamplingError> {
    let count = view.len().div_ceil(GROUP);
    if work.groups.len() < count {
        work.groups.resize(count, 0.0);
    }
    let groups = &mut work.groups[..count];
    let mut scan = GroupScan::new(groups);
    view.visit(&mut scan);
    scan.finish(view)
}

/// The group maxima the last [`scan_groups`] of a `len`-token view recorded, one per [`GROUP`]
/// tokens (the last group may be partial).
pub(crate) fn group_maxima(work: &Workspace, len: usize) -> &[f32] {
    work.groups.get(..len.div_ceil(GROUP)).unwrap_or_default()
}

/// Appends to `out` every token of `view` whose logit is `>= floor` and unmasked, in index
/// order, reading only the groups (recorded by the last [`scan_groups`]) that can hold one.
pub(crate) fn collect_groups(
    work: &Workspace,
    view: &View<'_>,
    floor: f32,
    out: &mut Vec<Candidate>,
) {
    let count = view.len().div_ceil(GROUP);
    let groups = work.groups.get(..count).unwrap_or_default();
    let mut collect = Collect::new(floor, out);
    view.visit_groups(groups, GROUP, floor, &mut collect);
}

/// The sum of the weights of `view` at `scale` (`log2(e) / T`) relative to `max`, in f64.
pub(crate) fn total_weight(view: &View<'_>, max: f32, scale: f32) -> f64 {
    let mut sum = SumWeights::new(max, scale);
    view.visit(&mut sum);
    sum.finish()
}

/// `All`: one inverse-CDF draw over the block sums.
fn all(
    work: &mut Workspace,
    view: &View<'_>,
    scale: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Option<usize>, SamplingError> {
    // Only the drawn block's weights are needed: they are recomputed rather than stored.
    let (sums, total, max) = block_sums(work, view, scale)?;
    match draw::pick_block(sums, total, draw::unit(rng)) {
        Some((b, target)) => {
            let mut block = [0.0f32; BLOCK];
            let block = block_weights(view, b, max, scale, &mut block);
            Ok(draw::within(block, b * BLOCK, target))
        }
        None => Ok(None),
    }
}

/// `TopP` with `p < 1` (rejection against the full distribution), or `All` for `p >= 1`.
fn top_p(
    work: &mut Workspace,
    view: &View<'_>,
    p: f64,
    scale: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Option<usize>, SamplingError> {
    if p >= 1.0 {
        return all(work, view, scale, rng);
    }
    let mut candidates = std::mem::take(&mut work.candidates);
    // The exact fallback may need one slot per token: reserve them on the first call rather than
    // on the first fallback, so that later calls never allocate.
    candidates.clear();
    candidates.reserve(view.len());
    let result = dense(work, view, scale).map(|(weights, sums, total)| {
        // candle compares f32 cumulative probabilities with `p as f32`.
        let limit = f64::from(p as f32) * total;
        select::nucleus(weights, sums, total, limit, rng, &mut candidates)
    });
    work.candidates = candidates;
    result
}

/// Validates `view` and finds its `k` best-ranked logits (best first) into the workspace: see
/// [`top_keys`]. Returns them and the largest logit.
pub(crate) fn top_candidates<'w>(
    work: &'w mut Workspace,
    view: &View<'_>,
    k: usize,
) -> Result<(&'w mut Vec<Candidate>, f32), SamplingError> {
    top_candidates_ties(work, view, k, false).map(|(top, max, _)| (top, max))
}

/// [`top_candidates`], and with `ties` every other logit equal to the `k`-th when the search can
/// keep them (when the third value is `true`; otherwise the `k` best alone).
pub(crate) fn top_candidates_ties<'w>(
    work: &'w mut Workspace,
    view: &View<'_>,
    k: usize,
    ties: bool,
) -> Result<(&'w mut Vec<Candidate>, f32, bool), SamplingError> {
    let (max, tied) = top_keys_ties(work, view, k, ties)?;
    let Workspace {
        candidates, keys, ..
    } = work;
    Ok((ranked_candidates(keys, candidates), max, tied))
}

/// Whether [`top_keys`] over `len` logits searches the top `k` through the group maxima (they
/// bound it when there are at least `k` groups); otherwise it scans every logit from a floor.
pub(crate) fn searches_groups(len: usize, k: usize) -> bool {
    len.div_ceil(GROUP) >= k
}

/// Validates `view` and finds the [`key`](select::key)s of its `k` best-ranked logits, in no
/// particular order, into the workspace's `keys`: a scan that also records the maximum of every
/// group of tokens, then a threshold search through the groups whose maximum can be in the top
/// `k`; or, when there are fewer groups than `k`, a scan for the maximum, a floor from a sample
/// of the distances to it (or from all of them, see [`sampled_floor`]), and a search from that
/// floor. Returns the largest logit. Afterwards the workspace's group slots hold an upper bound
/// of each group's maximum (for [`collect_groups`]).
pub(crate) fn top_keys(
    work: &mut Workspace,
    view: &View<'_>,
    k: usize,
) -> Result<f32, SamplingError> {
    top_keys_ties(work, view, k, false).map(|(max, _)| max)
}

/// [`top_keys`], and with `ties` also the keys of every other logit equal to the `k`-th when
/// the grouped search can keep them ([`Gather::keep_ties`]); the second value tells whether the
/// keys hold every such tie.
pub(crate) fn top_keys_ties(
    work: &mut Workspace,
    view: &View<'_>,
    k: usize,
    ties: bool,
) -> Result<(f32, bool), SamplingError> {
    // A `k` past the vocabulary (a `min_keep` of `usize::MAX`, say) keeps every token: never
    // reserve room for more.
    let k = k.min(view.len());
    let Workspace {
        keys,
        groups,
        candidates,
        ..
    } = work;
    let count = view.len().div_ceil(GROUP);
    if groups.len() < count {
        groups.resize(count, 0.0);
    }
    let groups = &mut groups[..count];
    if !searches_groups(view.len(), k) {
        // Fewer groups than candidates, so their maxima cannot bound the search: the distances
        // to the maximum bound it instead, and tell how many logits reach the bound, so that the
        // search selects once. The group slots get an upper bound of every group, for
        // `collect_groups`.
        let mut scan = Scan::new();
        view.visit(&mut scan);
        let max = scan.finish(view)?;
        groups.fill(max);
        let (floor, reached, ceiling) = sampled_floor(view, max, k).unwrap_or_else(|| {
            let mut spread = Spread::new(max);
            view.visit(&mut spread);
            let (floor, reached) = spread.floor(k);
            (floor, reached, f32::INFINITY)
        });
        // Room for every token, so that later calls never allocate (the keys left from the last
        // call are overwritten, not cleared).
        keys.reserve(view.len().saturating_sub(keys.len()));
        let mut collect = CollectKeys::new(floor, reached.min(view.len()), keys).ceiling(ceiling);
        view.visit(&mut collect);
        collect.finish(k)?;
        return Ok((max, false));
    }
    let mut scan = GroupScan::new(groups);
    view.visit(&mut scan);
    let max = scan.finish(view)?;
    let floor = top_k_floor(groups, k, max, candidates);
    let mut gather = Gather::new(k, floor, keys);
    if ties {
        gather.keep_ties();
    }
    gather_groups(view, groups, floor, &mut gather);
    let (_, tied) = gather.finish(view)?;
    Ok((max, tied))
}

/// `TopK` with `k` below the vocabulary: the top `k`, then a draw among them.
///
/// The draw walks the candidates in rank order, summing their weights in f64 until the sum
/// passes a uniform fraction of their total. When every partial sum of the weights is exact in
/// f64 ([`exact_sums`]), sums do not depend on their order, so the total is taken before the
/// candidates are ordered and [`octave_walk`] orders only the few the walk ends among; otherwise
/// they are sorted and summed in rank order. Both give the same bits.
fn top_k(
    work: &mut Workspace,
    view: &View<'_>,
    k: usize,
    scale: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Option<usize>, SamplingError> {
    let max = top_keys(work, view, k)?;
    let Workspace {
        keys, candidates, ..
    } = work;
    let (total, lightest) = key_weights(keys, candidates, max, scale);
    if !exact_sums(lightest, keys.len()) {
        let top = ranked_candidates(keys, candidates);
        for candidate in top.iter_mut() {
            candidate.0 = weight(candidate.0, max, scale);
        }
        let total: f64 = top.iter().map(|&(w, _)| f64::from(w)).sum();
        let target = draw::unit(rng) * total;
        return Ok(walk(top.iter().copied(), target));
    }
    let target = draw::unit(rng) * total;
    Ok(octave_walk(keys, candidates, max, scale, target))
}

/// The weights of the candidates of `keys` and their [`octave_walk`] octaves (written to
/// `scratch`, in the keys' order): their total (summed in f64 lanes, exact when [`exact_sums`]
/// holds) and the smallest. Chunks of [`weights::lane_weights`] so that the compiler vectorises
/// the exponentials, in the form the CPU runs ([`dispatch::run`]; the lanes fix the order of every
/// sum, so every form gives the same bits).
fn key_weights(keys: &[u64], scratch: &mut Vec<Candidate>, max: f32, scale: f32) -> (f64, f32) {
    scratch.clear();
    scratch.resize(keys.len(), (0.0, 0));
    dispatch::run(KeyWeights {
        keys,
        out: scratch,
        max,
        scale,
    })
}

/// [`key_weights`]' pass over the keys.
struct KeyWeights<'a> {
    keys: &'a [u64],
    /// As long as `keys`.
    out: &'a mut [Candidate],
    max: f32,
    scale: f32,
}

impl dispatch::Kernel for KeyWeights<'_> {
    type Output = (f64, f32);

    #[inline(always)]
    fn run(self) -> (f64, f32) {
        const N: usize = 8;
        let Self {
            keys,
            out,
            max,
            scale,
        } = self;
        let mut sums = [0.0f64; N];
        let mut lightest = [f32::INFINITY; N];
        let (chunks, rest) = keys.as_chunks::<N>();
        let (out, out_rest) = out.as_chunks_mut::<N>();
        for (chunk, out) in chunks.iter().zip(out) {
            let x: [f32; N] = std::array::from_fn(|j| unkey(chunk[j]).0);
            let w = weights::lane_weights(&x, max, scale);
            for (s, &w) in sums.iter_mut().zip(&w) {
                *s += f64::from(w);
            }
            for (m, &w) in lightest.iter_mut().zip(&w) {
                *m = m.min(w);
            }
            let octaves: [u32; N] = std::array::from_fn(|j| octave(x[j], max, scale));
            for ((o, &w), &octave) in out.iter_mut().zip(&w).zip(&octaves) {
                *o = (w, octave);
            }
        }
        for ((&key, o), (s, m)) in rest
            .iter()
            .zip(out_rest)
            .zip(sums.iter_mut().zip(lightest.iter_mut()))
        {
            let x = unkey(key).0;
            let w = weight(x, max, scale);
            *s += f64::from(w);
            *m = m.min(w);
            *o = (w, octave(x, max, scale));
        }
        let total = sums.iter().sum();
        (total, lightest.iter().fold(f32::INFINITY, |a, &b| a.min(b)))
    }
}

/// The octave of logit `x` below the largest, `max`: the integer part of `(max - x) * scale`
/// (at most `OCTAVES - 1`). A larger logit never has a larger octave.
///
/// For a finite `x <= max` and a positive `scale` (a candidate's), `v = (max - x) * scale` is
/// neither negative nor NaN, and its integer part is found without a float-to-integer
/// conversion, in a form the compiler vectorises: `v` is capped at `OCTAVES - 1`, rounded to the
/// nearest integer by adding and removing 2^23, lowered by one when that rounded up, and read
/// from the bits of its sum with 2^23 (an integer `n < 2^23` plus 2^23 has the bits of 2^23 plus
/// `n`).
#[inline(always)]
fn octave(x: f32, max: f32, scale: f32) -> u32 {
    const SHIFT: f32 = 8_388_608.0; // 2^23
    let v = ((max - x) * scale).min((OCTAVES - 1) as f32);
    let nearest = (v + SHIFT) - SHIFT;
    let floor = if nearest > v { nearest - 1.0 } else { nearest };
    (floor + SHIFT).to_bits().wrapping_sub(SHIFT.to_bits())
}

/// Octaves of [`octave_walk`]: weights below 2^-31 of the largest share the last.
const OCTAVES: usize = 32;

/// The walk of [`walk`] over the candidates of `keys` in rank order, when every partial sum of
/// their weights is exact ([`exact_sums`]), without sorting them (`weighed`: each candidate's weight
/// and octave, in the keys' order, from [`key_weights`]):
/// the candidates are grouped by the octave of their weight below the largest (the integer part
/// of `(max - x) * scale`, which a larger logit never makes larger, so each octave is a run of
/// the rank order), the octave in which the running sum passes `target` is found from the
/// octaves' sums, and only its candidates are sorted and walked. Exact sums make every running
/// sum the same bits as the walk's.
fn octave_walk(
    keys: &mut [u64],
    weighed: &[Candidate],
    max: f32,
    scale: f32,
    target: f64,
) -> Option<usize> {
    // Two interleaved tables, so that consecutive additions to one octave do not wait on each
    // other.
    let mut mass = [[0.0f64; OCTAVES]; 2];
    let [even, odd] = &mut mass;
    let (pairs, rest) = weighed.as_chunks::<2>();
    for [(a, i), (b, j)] in pairs {
        if let (Some(m), Some(n)) = (even.get_mut(*i as usize), odd.get_mut(*j as usize)) {
            *m += f64::from(*a);
            *n += f64::from(*b);
        }
    }
    for &(w, o) in rest {
        if let Some(m) = even.get_mut(o as usize) {
            *m += f64::from(w);
        }
    }
    let mut before = 0.0f64;
    let mut found = None;
    for (o, (&a, &b)) in even.iter().zip(odd.iter()).enumerate() {
        let with = before + (a + b);
        if with > target {
            found = Some(o as u32);
            break;
        }
        before = with;
    }
    let Some(found) = found else {
        // Rounding carried the target past the total: the walk ends on the last candidate.
        return keys.iter().min().map(|&key| unkey(key).1 as usize);
    };
    // The octave's candidates to the front, in rank order.
    let mut count = 0;
    for (i, &(_, o)) in weighed.iter().enumerate() {
        if o == found {
            keys.swap(count, i);
            count += 1;
        }
    }
    let run = &mut keys[..count];
    run.sort_unstable_by(|a, b| b.cmp(a));
    let mut acc = before;
    let mut last = None;
    for &key in run.iter() {
        let (x, token) = unkey(key);
        acc += f64::from(weight(x, max, scale));
        last = Some(token as usize);
        if acc > target {
            break;
        }
    }
    last
}

/// Whether every sum of `count` weights of at least `lightest` is exact in f64, whatever its
/// order. A weight is at most 1 (the largest logit's, see [`weight`]), and each weight is a whole
/// multiple of `q`, the unit in the last place of a 24-bit significand at `lightest`'s binary
/// exponent; so every partial sum is a multiple of `q` of at most `count`, which f64's 53-bit
/// significand holds when `count <= 2^53 q`.
fn exact_sums(lightest: f32, count: usize) -> bool {
    // (NaN fails this too.)
    if lightest
        .partial_cmp(&f32::MIN_POSITIVE)
        .is_none_or(|o| o.is_lt())
    {
        return false;
    }
    // `lightest` with its significand cleared: 2^e, exactly, and `2^53 q = 2^(e + 30)`.
    let power = f64::from(f32::from_bits(lightest.to_bits() & 0x7f80_0000));
    count as f64 <= power * f64::powi(2.0, 53 - 23)
}

/// `TopKThenTopP` with `k` below the vocabulary: the top `k`, candle's rule on them (decided by
/// bounds on the vocabulary's total weight when they suffice, see [`mass`], else by a pass that
/// sums every weight), then a draw among the kept.
fn top_k_top_p(
    work: &mut Workspace,
    view: &View<'_>,
    k: usize,
    p: f64,
    scale: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Option<usize>, SamplingError> {
    let (top, max) = top_candidates(work, view, k)?;
    let kth = top.last().map_or(f32::NEG_INFINITY, |c| c.0);
    // From logits to weights; rank order by probability (distinct logits may round to equal
    // weights, which then rank by index).
    for candidate in top.iter_mut() {
        candidate.0 = weight(candidate.0, max, scale);
    }
    top.sort_unstable_by(by_rank);
    let Workspace {
        candidates: top,
        groups,
        ..
    } = work;
    let weights = || top.iter().map(|&(w, _)| w);
    // candle compares f32 cumulative probabilities with `p as f32`.
    let p = f64::from(p as f32);
    let kept = candle_kept(groups, view, kth, max, scale, p, weights);
    let kept_mass = weights().take(kept).fold(0.0f64, |m, w| m + f64::from(w));
    let target = draw::unit(rng) * kept_mass;
    Ok(walk(top.iter().take(kept).copied(), target))
}

/// candle's top-`k`-then-top-`p` cut as the chain applies it: the kept prefix of the top `k`
/// logits (in rank order by logit), with `p` measured against the whole vocabulary at `scale`
/// (decided by bounds when they suffice, see [`mass`]).
pub(crate) fn candle_cut<'w>(
    work: &'w mut Workspace,
    view: &View<'_>,
    k: usize,
    p: f64,
    scale: f32,
) -> Result<&'w [Candidate], SamplingError> {
    let (top, max) = top_candidates(work, view, k)?;
    let kth = top.last().map_or(f32::NEG_INFINITY, |c| c.0);
    let Workspace {
        candidates: top,
        groups,
        ..
    } = work;
    let weights = || top.iter().map(|&(x, _)| weight(x, max, scale));
    let kept = candle_kept(groups, view, kth, max, scale, p, weights);
    Ok(top.get(..kept).unwrap_or(top))
}

/// How many of the top candidates (`weights()`: their weights in rank order; `kth` the k-th
/// logit) candle's rule keeps for `p` against the whole vocabulary: decided by [`mass`]'s bounds
/// from the group maxima that [`top_candidates`] left in `groups` when they suffice, else by a
/// pass that sums every weight.
fn candle_kept<I: Iterator<Item = f32>>(
    groups: &[f32],
    view: &View<'_>,
    kth: f32,
    max: f32,
    scale: f32,
    p: f64,
    weights: impl Fn() -> I,
) -> usize {
    let len = view.len();
    let groups = groups.get(..len.div_ceil(GROUP)).unwrap_or_default();
    let top_mass: f64 = weights().map(f64::from).sum();
    let (low, high) = mass::limits(top_mass, groups, kth, max, scale, len, p);
    mass::decide(weights(), low, high)
        .unwrap_or_else(|| mass::cut(weights(), p * total_weight(view, max, scale)))
}

/// The first candidate at which the running sum of weights exceeds `target`, or the last
/// positive-weight candidate if rounding carries the target past the end.
fn walk(candidates: impl Iterator<Item = (f32, u32)>, target: f64) -> Option<usize> {
    let mut acc = 0.0f64;
    let mut last = None;
    for (w, token) in candidates {
        if w > 0.0 {
            acc += f64::from(w);
            last = Some(token as usize);
            if acc > target {
                break;
            }
        }
    }
    last
}

impl Sampler for NativeSampler {
    fn sample(&mut self, logits: &Tensor, _history: &[u32]) -> Result<u32, SamplingError> {
        let mut host = std::mem::take(&mut self.host);
        let token = with_logits(logits, &mut host, |values| self.draw(View::plain(values)));
        self.host = host;
        token
    }

    fn sample_slice(&mut self, logits: &[f32], _history: &[u32]) -> Result<u32, SamplingError> {
        self.draw(View::plain(logits))
    }

    /// Draws the token [`sample_slice`](Sampler::sample_slice) would draw from a copy of `logits`
    /// with `edits` applied (bit for bit: same stream, same token), without making that copy:
    /// only the 16-value chunks that hold an edit are patched, on the stack, as they are read.
    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        _history: &[u32],
    ) -> Result<u32, SamplingError> {
        let mut buffer = std::mem::take(&mut self.work.edits);
        let mut copy = std::mem::take(&mut buffer.copy);
        let token = {
            let edits = normalise_edits(edits, logits.len(), &mut buffer);
            self.draw(View::edited_in(logits, edits, &mut copy))
        };
        buffer.copy = copy;
        self.work.edits = buffer;
        token
    }

    fn reset(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(self.seed);
    }
}

impl std::fmt::Debug for NativeSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeSampler")
            .field("seed", &self.seed)
            .field("sampling", &self.sampling)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore};

    /// The Gumbel draw with every block sum computed (the path for few blocks), for any size.
    fn every_sum(view: &View<'_>, scale: f32, rng: &mut ChaCha8Rng) -> Option<usize> {
        let mut work = Workspace::default();
        let (mut known, mut uniforms) = (Vec::new(), Vec::new());
        let (sums, _, max) = block_sums(&mut work, view, scale).ok()?;
        let b = draw::gumbel_block(sums, rng, &mut known, &mut uniforms)?;
        let mut block = [0.0f32; BLOCK];
        let block = block_weights(view, b, max, scale, &mut block);
        draw::gumbel_within(block, b * BLOCK, rng, &mut uniforms)
    }

    #[test]
    fn gumbel_over_many_blocks_draws_what_every_sum_draws() {
        let mut gen = ChaCha8Rng::seed_from_u64(21);
        let mut work = Workspace::default();
        for case in 0..120u64 {
            let len = gen.random_range(BOUNDED_GUMBEL_BLOCKS * BLOCK..60_000);
            let spread = [0.01f32, 5.0, 20.0, 400.0][case as usize % 4];
            let mut logits: Vec<f32> = (0..len).map(|_| -spread * gen.random::<f32>()).collect();
            // Masked stretches (whole blocks among them) and blocks far below the maximum.
            for _ in 0..3 {
                let at = gen.random_range(0..len);
                let n = gen.random_range(1..2000).min(len - at);
                let value = if gen.random_bool(0.5) {
                    f32::NEG_INFINITY
                } else {
                    -95.0 - gen.random::<f32>()
                };
                logits[at..at + n].iter_mut().for_each(|x| *x = value);
            }
            logits[gen.random_range(0..len)] = 1.0;
            let s = scale([0.5, 1.0, 2.0][case as usize % 3]);
            let view = View::plain(&logits);
            let seed = gen.next_u64();
            let (mut a, mut b) = (
                ChaCha8Rng::seed_from_u64(seed),
                ChaCha8Rng::seed_from_u64(seed),
            );
            let got = draw_mode(&mut work, Mode::Gumbel { scale: s }, &view, &mut a).unwrap();
            let expected = every_sum(&view, s, &mut b).unwrap();
            assert_eq!(got as usize, expected, "case {case}");
            assert_eq!(a.next_u64(), b.next_u64(), "case {case}: same words");
        }
    }

    /// `TopK`'s draw as a plain reading of its definition: every unmasked logit sorted into rank
    /// order, the first `k` kept, their weights summed in that order, then the walk.
    fn ranked_top_k(logits: &[f32], k: usize, scale: f32, rng: &mut ChaCha8Rng) -> Option<usize> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut ranked: Vec<Candidate> = logits
            .iter()
            .zip(0u32..)
            .filter(|(&x, _)| x > f32::NEG_INFINITY)
            .map(|(&x, i)| (x, i))
            .collect();
        ranked.sort_by(by_rank);
        ranked.truncate(k);
        let weighed: Vec<Candidate> = ranked
            .iter()
            .map(|&(x, i)| (weight(x, max, scale), i))
            .collect();
        let total: f64 = weighed.iter().map(|&(w, _)| f64::from(w)).sum();
        walk(weighed.iter().copied(), draw::unit(rng) * total)
    }

    #[test]
    fn top_k_draws_what_the_ranked_walk_draws() {
        let mut gen = ChaCha8Rng::seed_from_u64(5);
        let mut work = Workspace::default();
        let (mut exact, mut sorted) = (0, 0);
        for case in 0..800usize {
            let len = [60usize, 700, 2048, 2048, 5000, 32_000][case % 6];
            let spread = [0.01f32, 4.0, 12.0, 40.0, 300.0][case / 6 % 5];
            let mut logits: Vec<f32> = (0..len).map(|_| -spread * gen.random::<f32>()).collect();
            if case % 3 == 0 {
                // Ties: a coarse grid of values.
                logits
                    .iter_mut()
                    .for_each(|x| *x = (*x * 4.0).round() / 4.0);
            }
            if case % 4 == 1 {
                for x in logits.iter_mut().step_by(7) {
                    *x = f32::NEG_INFINITY;
                }
            }
            if case % 5 == 2 {
                // Sorted order defeats the sample, for the whole histogram's floor.
                logits.sort_by(|a, b| b.partial_cmp(a).unwrap());
            }
            let k = [1usize, 2, 25, 50, 250, len / 2, len - 1][case % 7].max(1);
            let s = scale([0.8, 1.0, 0.3, 2.5][case % 4]);
            let seed = gen.next_u64();
            let (mut a, mut b) = (
                ChaCha8Rng::seed_from_u64(seed),
                ChaCha8Rng::seed_from_u64(seed),
            );
            let view = View::plain(&logits);
            let got = top_k(&mut work, &view, k, s, &mut a).unwrap();
            let expected = ranked_top_k(&logits, k, s, &mut b);
            assert_eq!(got, expected, "case {case}: len {len} k {k}");
            assert_eq!(a.next_u64(), b.next_u64(), "case {case}: same words");
            // Which path ran.
            let max = top_keys(&mut work, &view, k).unwrap();
            let (_, lightest) = key_weights(&work.keys, &mut work.candidates, max, s);
            if exact_sums(lightest, work.keys.len()) {
                exact += 1;
            } else {
                sorted += 1;
            }
        }
        assert!(
            exact > 200 && sorted > 100,
            "{exact} exact, {sorted} sorted"
        );
    }

    #[test]
    fn octaves_are_the_capped_integer_part_at_every_boundary() {
        // The integer part by a float-to-integer conversion, capped after it.
        let reference = |x: f32, max: f32, scale: f32| (((max - x) * scale) as u32).min(31);
        let mut gen = ChaCha8Rng::seed_from_u64(31);
        let mut checked = 0;
        for case in 0..2000 {
            let max = [0.0f32, 3.5, -17.25, 1e4, -1e-3][case % 5];
            let s = scale([0.8f64, 1.0, 0.05, 7.0, 1e-6][case / 5 % 5]);
            // Logits whose distance to the maximum is a whole number of octaves, one ulp either
            // side, random ones, the maximum itself and far below it.
            let n = gen.random_range(0..40) as f32;
            let at = max - n / s;
            let mut xs = vec![at, at.next_up(), at.next_down(), max, max - 1e30, -f32::MAX];
            xs.push(max - gen.random::<f32>() * 40.0 / s);
            for x in xs.into_iter().filter(|&x| x <= max && x.is_finite()) {
                assert_eq!(
                    octave(x, max, s),
                    reference(x, max, s),
                    "case {case}: x {x} max {max} scale {s}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn the_octave_walk_ends_where_the_walk_ends_at_every_boundary() {
        let mut gen = ChaCha8Rng::seed_from_u64(8);
        for case in 0..60 {
            let len = gen.random_range(1..400);
            let logits: Vec<f32> = (0..len)
                .map(|_| (-9.0 * gen.random::<f32>() * 8.0).round() / 8.0)
                .collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s = scale(0.7);
            let keys: Vec<u64> = logits
                .iter()
                .zip(0u32..)
                .map(|(&x, i)| select::key(x, i))
                .collect();
            let mut weighed = Vec::new();
            let (total, lightest) = key_weights(&keys, &mut weighed, max, s);
            assert!(exact_sums(lightest, len), "case {case}");
            let mut ranked: Vec<Candidate> =
                logits.iter().zip(0u32..).map(|(&x, i)| (x, i)).collect();
            ranked.sort_by(by_rank);
            let ranked: Vec<Candidate> = ranked
                .iter()
                .map(|&(x, i)| (weight(x, max, s), i))
                .collect();
            // Every running sum (where the walk switches tokens), a little either side of it,
            // the total and beyond.
            let mut targets = vec![0.0, total, total * 2.0];
            let mut acc = 0.0f64;
            for &(w, _) in &ranked {
                acc += f64::from(w);
                targets.extend([acc, acc * (1.0 - 1e-15), acc * (1.0 + 1e-15)]);
            }
            assert_eq!(acc, total, "case {case}: the sums are exact");
            for target in targets {
                let mut shuffled = keys.clone();
                let (got, expected) = (
                    octave_walk(&mut shuffled, &weighed, max, s, target),
                    walk(ranked.iter().copied(), target),
                );
                assert_eq!(got, expected, "case {case}: target {target}");
            }
        }
    }

    #[test]
    fn exact_sums_holds_exactly_where_f64_holds_every_sum() {
        // 2^-22: multiples of 2^-45, sums up to 2^8 need 53 bits.
        let w = 2f32.powi(-22);
        assert!(exact_sums(w, 256));
        assert!(!exact_sums(w, 257));
        assert!(exact_sums(w * 1.5, 256) && !exact_sums(w * 1.5, 257));
        assert!(!exact_sums(w.next_down(), 256) && exact_sums(w.next_down(), 128));
        assert!(exact_sums(1.0, 1 << 30) && !exact_sums(1.0, (1 << 30) + 1));
        assert!(!exact_sums(0.0, 1) && !exact_sums(f32::MIN_POSITIVE / 2.0, 1));
        assert!(!exact_sums(f32::NAN, 1) && !exact_sums(f32::MIN_POSITIVE, 1));
        // At the bound, the order of a sum does not matter: 255 weights of 1 - 2^-23 and one of
        // 2^-22, all multiples of 2^-45, their total below 2^8.
        let mut parts = vec![1.0f32 - 2f32.powi(-23); 255];
        parts.push(w);
        let forward: f64 = parts.iter().map(|&x| f64::from(x)).sum();
        let backward: f64 = parts.iter().rev().map(|&x| f64::from(x)).sum();
        assert_eq!(forward, backward);
        assert_eq!(forward, 255.0 * (1.0 - 2f64.powi(-23)) + 2f64.powi(-22));
    }
}
