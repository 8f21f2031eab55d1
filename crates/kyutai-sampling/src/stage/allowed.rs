//! Allowed tokens: only the listed tokens can be sampled.
//!
//! # Definition
//! Every token outside the set is masked.
//!
//! # Parameters
//! `allowed_token_ids`: a non-empty list of ids in the vocabulary (checked at sampling).
//!
//! # Library rules
//! vLLM's `allowed_token_ids` (applied first there), transformers'
//! `PrefixConstrainedLogitsProcessor` with a fixed set. Not a sparse edit: the engine starts from
//! the allowed tokens as its candidate list instead of the vocabulary, so a small set costs
//! O(set) plus the validation pass.
//!
//! # Cost
//! O(set) after the dense validation pass.

use crate::chain::candidates::{cut_to_top, Candidates};
use crate::constraint;
use crate::native::GROUP;
use crate::SamplingError;

/// Starts `cands` from the allowed tokens (sorted, deduplicated ids) with their current values,
/// read through `value`; masked ones are left out.
pub(crate) fn start(cands: &mut Candidates, allowed: &[u32], value: impl Fn(u32) -> f32) {
    let items = cands.start(false);
    items.extend(
        allowed
            .iter()
            .map(|&t| (value(t), t))
            .filter(|&(x, _)| x > f32::NEG_INFINITY),
    );
    cands.unsorted();
}

/// Starts `cands` from the tokens set in a constraint's `mask` (intersected with the
/// configuration's `allowed` ids when there are some), with their current values read through
/// `value`; masked ones are left out.
///
/// When the chain's first stage is top-k (`top_k`: its `k` and tie rule), tokens that cannot be
/// among its survivors are dropped while gathering: the list is cut to its top `k` (plus ties
/// when they are kept) each time it reaches a few times `k`, and later tokens below the cut's
/// floor are skipped. The top-k stage that follows then sees the same survivors as on the full
/// list. Tokens arrive in increasing id, so with ties broken by lowest id a later token equal
/// to the floor ranks below every survivor. `groups` are the maxima of the last
/// [`scan_groups`](crate::native::scan_groups) of the logits' view: groups that cannot pass the
/// floor are not read.
pub(crate) fn start_masked(
    cands: &mut Candidates,
    mask: &[u32],
    vocab: usize,
    groups: &[f32],
    allowed: Option<&[u32]>,
    top_k: Option<(usize, bool)>,
    value: impl Fn(u32) -> f32,
) {
    let mut gather = Gather::new(cands.start(false), top_k);
    match allowed {
        Some(ids) => {
            for &t in ids {
                if constraint::is_set(mask, t) {
                    gather.offer(value(t), t);
                }
            }
        }
        None => {
            // Word by word. A word whose group maximum (over all the group's tokens, so a bound
            // on the allowed ones) cannot pass the floor is skipped.
            const WORDS: usize = GROUP / 32;
            for (w, &word) in mask.iter().enumerate() {
                if word == 0
                    || !gather.passes(groups.get(w / WORDS).copied().unwrap_or(f32::INFINITY))
                {
                    continue;
                }
                let base = w * 32;
                let mut bits = word;
                while bits != 0 {
                    let t = base + bits.trailing_zeros() as usize;
                    if t >= vocab {
                        break;
                    }
                    let t = t as u32;
                    gather.offer(value(t), t);
                    bits &= bits - 1;
                }
            }
        }
    }
    cands.unsorted();
}

/// [`start_masked`] on unedited logits with no `allowed` ids, fused with their validation: one
/// pass reads every logit once, checks it (NaN, `+inf`), and gathers the allowed tokens above
/// the top-k floor, 32 at a time (a word of the mask).
///
/// # Errors
///
/// [`SamplingError::NonFiniteLogit`] for the first NaN or `+inf` logit;
/// [`SamplingError::AllMasked`] when every logit is `-inf`.
pub(crate) fn start_masked_fused(
    cands: &mut Candidates,
    mask: &[u32],
    logits: &[f32],
    top_k: Option<(usize, bool)>,
) -> Result<(), SamplingError> {
    let mut gather = Gather::new(cands.start(false), top_k);
    let mut scan = Scan32::new();
    let mut words = mask.iter();
    let mut chunks = logits.chunks_exact(32);
    for (w, xs) in (&mut chunks).enumerate() {
        let word = words.next().copied().unwrap_or(0);
        let strict = !gather.ties || gather.floor == f32::NEG_INFINITY;
        let mut hits = word & scan.step(xs, gather.floor, strict);
        while hits != 0 {
            let t = w * 32 + hits.trailing_zeros() as usize;
            if let Some(&x) = logits.get(t) {
                gather.offer(x, t as u32);
            }
            hits &= hits - 1;
        }
    }
    let base = logits.len() - chunks.remainder().len();
    let word = mask.get(base / 32).copied().unwrap_or(0);
    let mut tail_max = f32::NEG_INFINITY;
    let mut tail_bad = false;
    for (j, &x) in chunks.remainder().iter().enumerate() {
        tail_bad |= x.is_nan();
        tail_max = if x > tail_max { x } else { tail_max };
        if word & (1 << j) != 0 {
            gather.offer(x, (base + j) as u32);
        }
    }
    let (max, bad) = scan.finish();
    let max = if tail_max > max { tail_max } else { max };
    if bad || tail_bad || max == f32::INFINITY {
        // The slow search names the first offending logit.
        crate::logits::validate_logits(logits)?;
    }
    if max == f32::NEG_INFINITY {
        return Err(SamplingError::AllMasked);
    }
    cands.unsorted();
    Ok(())
}

/// The running maximum and NaN flag of a validation pass, and the above-floor bits of each
/// 32 logits it reads.
struct Scan32 {
    #[cfg(target_arch = "x86_64")]
    max: std::arch::x86_64::__m128,
    #[cfg(target_arch = "x86_64")]
    nan: std::arch::x86_64::__m128,
    #[cfg(not(target_arch = "x86_64"))]
    max: f32,
    #[cfg(not(target_arch = "x86_64"))]
    nan: bool,
}

#[cfg(target_arch = "x86_64")]
impl Scan32 {
    fn new() -> Self {
        use std::arch::x86_64::{_mm_set1_ps, _mm_setzero_ps};
        // SAFETY: SSE is part of the x86-64 baseline.
        unsafe {
            Self {
                max: _mm_set1_ps(f32::NEG_INFINITY),
                nan: _mm_setzero_ps(),
            }
        }
    }

    /// Folds `xs` (32 logits) into the maximum and NaN flag; bit `j` of the result is set when
    /// `xs[j] > floor` (`>=` when not `strict`).
    #[inline]
    fn step(&mut self, xs: &[f32], floor: f32, strict: bool) -> u32 {
        use std::arch::x86_64::{
            _mm_cmpge_ps, _mm_cmpgt_ps, _mm_cmpunord_ps, _mm_loadu_ps, _mm_max_ps, _mm_movemask_ps,
            _mm_or_ps, _mm_set1_ps,
        };
        let mut bits = 0u32;
        // SAFETY: SSE is part of the x86-64 baseline; each load reads four initialised f32s of
        // `lanes`, with no alignment requirement.
        unsafe {
            let f = _mm_set1_ps(floor);
            for (i, lanes) in xs.chunks_exact(4).take(8).enumerate() {
                let v = _mm_loadu_ps(lanes.as_ptr());
                self.max = _mm_max_ps(self.max, v);
                self.nan = _mm_or_ps(self.nan, _mm_cmpunord_ps(v, v));
                let m = if strict {
                    _mm_cmpgt_ps(v, f)
                } else {
                    _mm_cmpge_ps(v, f)
                };
                bits |= (_mm_movemask_ps(m) as u32) << (4 * i);
            }
        }
        bits
    }

    /// The maximum (meaningless when NaN was seen) and whether a NaN was seen.
    fn finish(&self) -> (f32, bool) {
        use std::arch::x86_64::{_mm_movemask_ps, _mm_storeu_ps};
        let mut lanes = [0.0f32; 4];
        // SAFETY: SSE is part of the x86-64 baseline; the store writes four f32s into `lanes`.
        let nan = unsafe {
            _mm_storeu_ps(lanes.as_mut_ptr(), self.max);
            _mm_movemask_ps(self.nan) != 0
        };
        let max = lanes
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        (max, nan)
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl Scan32 {
    fn new() -> Self {
        Self {
            max: f32::NEG_INFINITY,
            nan: false,
        }
    }

    #[inline]
    fn step(&mut self, xs: &[f32], floor: f32, strict: bool) -> u32 {
        xs.iter().take(32).enumerate().fold(0, |bits, (j, &x)| {
            self.nan |= x.is_nan();
            self.max = if x > self.max { x } else { self.max };
            bits | u32::from(if strict { x > floor } else { x >= floor }) << j
        })
    }

    fn finish(&self) -> (f32, bool) {
        (self.max, self.nan)
    }
}

/// The candidate list being gathered, cut to the top `k` whenever it reaches `limit`.
struct Gather<'a> {
    items: &'a mut Vec<(f32, u32)>,
    /// Tokens below (or, without ties, at) the floor cannot be among the top `k`.
    floor: f32,
    limit: usize,
    k: usize,
    ties: bool,
}

impl<'a> Gather<'a> {
    /// Gathering into `items` (emptied), cut to the top `k` when `top_k` is `Some((k, ties))`.
    fn new(items: &'a mut Vec<(f32, u32)>, top_k: Option<(usize, bool)>) -> Self {
        let (k, ties) = top_k.unwrap_or((0, false));
        Self {
            items,
            floor: f32::NEG_INFINITY,
            limit: if k > 0 {
                k.saturating_mul(4).max(64)
            } else {
                usize::MAX
            },
            k,
            ties,
        }
    }

    /// Whether a logit of `x` could still be among the survivors.
    #[inline]
    fn passes(&self, x: f32) -> bool {
        x > f32::NEG_INFINITY
            && if self.ties {
                x >= self.floor
            } else {
                x > self.floor
            }
    }

    #[inline]
    fn offer(&mut self, x: f32, t: u32) {
        if self.passes(x) {
            self.items.push((x, t));
            if self.items.len() >= self.limit {
                self.floor = cut_to_top(self.items, self.k, self.ties);
                // Many ties of the floor stay: room to grow, so cuts stay rare.
                self.limit = self.limit.max(self.items.len().saturating_mul(2));
            }
        }
    }
}
