//! [`Chain`]: ordered sampling stages with each library's semantics, compiled into a plan for
//! one fused engine.
//!
//! Stages run in the [`Convention`]'s order, each seeing the renormalised result of the one
//! before it (llama.cpp's chain semantics), and a terminal selector draws. At
//! [`build`](ChainConfig::build) the configuration is validated and compiled:
//!
//! 1. every sparse edit (penalties, biases, bans, n-gram, DRY, minimum length) writes into one
//!    edit buffer, which the engine reads through its view of the caller's logits: no copy of
//!    the vocabulary, however many stack;
//! 2. when the whole chain is one of the native engine's strategies (temperature alone, top-k,
//!    top-p, candle's top-k-then-top-p, greedy), that strategy runs on the edited view;
//! 3. otherwise the first truncation is fused into the dense passes where its math allows
//!    (top-k by grouped maxima, min-p and top-nσ as logit floors computed after the maximum
//!    scan) and produces a candidate list, on which every later stage runs.

pub(crate) mod candidates;
mod config;
pub(crate) mod edits;
mod hf;
mod plan;
mod serde_f32;
mod verify;

pub use config::{ChainConfig, Convention};
pub use verify::{verify_draft, Verified};

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::constraint::{self, Constraint};
use crate::logits::with_logits;
use crate::native::{self, scale, Candidate, View, Workspace};
use crate::stage::{self, Select, Step};
use crate::{Sampler, SamplingError};
use candidates::{rank, Candidates};
use edits::{EditCx, Edits};
use plan::Plan;

/// A sampler built from a [`ChainConfig`]: edits, filters and a selector with one library's
/// exact semantics, fused into one engine.
///
/// # Distributions
///
/// [`probabilities`](Self::probabilities) returns the distribution the next draw uses, so what
/// the chain does can be inspected token by token; [`sample`](Sampler::sample) draws from
/// exactly it. Masked tokens (`-inf`, from the input or from a stage) are never candidates of a
/// later stage and never drawn.
///
/// # Reproducibility
///
/// The random stream is [`ChaCha8Rng`] seeded with `seed_from_u64(config.seed)`. The same
/// configuration, seed and sequence of calls give the same tokens on every platform;
/// [`reset`](Sampler::reset) restarts the stream and restores mirostat's `μ₀ = 2τ`. The streams
/// are pinned by this crate's tests: changing one is a breaking change.
///
/// # Cost
///
/// Zero heap allocations per call in steady state (buffers are kept from call to call; the
/// first call sizes them). See the README's tables for each stage's cost.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{ChainConfig, Sampler};
///
/// let mut chain = ChainConfig { top_k: 2, min_p: 0.1, seed: 7, ..ChainConfig::default() }.build()?;
/// let logits = [1.0f32, 3.0, 0.5, 2.0, f32::NEG_INFINITY];
/// let probs = chain.probabilities(&logits, &[])?;
/// assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// assert_eq!(probs[0], 0.0); // outside the top 2
/// let token = chain.sample(&Tensor::new(&logits, &Device::Cpu)?, &[])?;
/// assert!(token == 1 || token == 3);
/// let detailed = chain.sample_detailed(&Tensor::new(&logits, &Device::Cpu)?, &[], 2)?;
/// assert!(detailed.logprob <= 0.0 && detailed.top[0].0 == 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Chain {
    config: ChainConfig,
    plan: Plan,
    rng: ChaCha8Rng,
    /// Mirostat's surprise bound.
    mu: f32,
    /// The mask applied before every stage, when there is one.
    constraint: Option<Box<dyn Constraint>>,
    work: Work,
}

/// Buffers kept from call to call.
#[derive(Clone, Default)]
struct Work {
    edits: Edits,
    cands: Candidates,
    native: Workspace,
    /// Host copy of logits that cannot be read in place.
    host: Vec<f32>,
    /// Scratch of the typical-p stage.
    typical: Vec<(f64, f64, f32, u32)>,
    /// The histogram of typical-p's fused pass.
    bins: Vec<f64>,
    /// Scratch of `sample_detailed`'s recomputation.
    probs: Vec<f32>,
    /// The vocabulary size the configuration's ids were last checked against (0: none).
    checked_vocab: usize,
    /// The constraint's mask, `ceil(V / 32)` words.
    mask: Vec<u32>,
    /// The history extended by accepted draft tokens, in [`verify_draft`].
    draft_history: Vec<u32>,
    /// The residual distribution of a rejected draft token.
    residual: Vec<f64>,
    /// The patched copy of densely edited logits (see `native::copies` and `native::patch_into`).
    patched: Vec<f32>,
}

/// A sampled token and how likely it was.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    /// The token.
    pub token: u32,
    /// Natural log of the token's probability in the distribution it was drawn from (0 for a
    /// greedy choice, whose distribution is the point mass).
    pub logprob: f32,
    /// Natural log of the token's probability under `softmax(logits)` at temperature 1, before
    /// any stage.
    pub raw_logprob: f32,
    /// The `top_n` most likely tokens of that raw distribution with their raw logprobs,
    /// descending, ties by lowest id.
    pub top: Vec<(u32, f32)>,
}

/// What one run of the plan asks for.
enum Want<'a> {
    Draw,
    Probabilities(&'a mut Vec<f32>),
    /// Stop before a multinomial selector, leaving the final candidates in `work.cands`.
    Candidates,
}

/// A drawn token, with its probability when the run knows it.
struct Outcome {
    token: u32,
    prob: Option<f64>,
}

impl Chain {
    /// Validates `config` and compiles it.
    pub(crate) fn new(config: &ChainConfig) -> Result<Self, SamplingError> {
        let plan = Plan::compile(config)?;
        Ok(Self {
            config: config.clone(),
            plan,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            mu: 2.0 * config.mirostat_tau,
            constraint: None,
            work: Work::default(),
        })
    }

    /// This chain with `constraint` masking the logits before every stage: it then samples
    /// exactly `chain(mask(logits))` (see [`Constraint`] for why the mask comes first). A
    /// constraint given earlier is replaced. [`reset`](Sampler::reset) resets the constraint too.
    ///
    /// An empty allowed set, or one whose tokens are all masked already, is
    /// [`SamplingError::AllMasked`].
    pub fn with_constraint(mut self, constraint: impl Constraint + 'static) -> Self {
        self.constraint = Some(Box::new(constraint));
        self
    }

    /// The configuration this chain was built from.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The distribution the next draw on these logits and history uses: one probability per
    /// token, summing to 1, 0 for excluded tokens. It draws no random numbers except for stages
    /// that are random themselves (XTC's coin) and changes no state (mirostat's μ).
    ///
    /// It is computed along the chain's general path. A draw may take a faster exact path
    /// (the native engine's, for plain temperature/top-k/top-p/min-p chains), which ranks
    /// tokens by their f32 weights where the general path ranks them by logit: the two agree
    /// except on which of several tokens whose probabilities are equal to f32 rounding survive
    /// a cut (which is unspecified, as for exact ties).
    ///
    /// # Errors
    ///
    /// As [`sample`](Sampler::sample).
    pub fn probabilities(
        &mut self,
        logits: &[f32],
        history: &[u32],
    ) -> Result<Vec<f32>, SamplingError> {
        let mut out = Vec::with_capacity(logits.len());
        self.run(logits, &[], history, Want::Probabilities(&mut out))?;
        Ok(out)
    }

    /// Sample, and say how likely it was: the token [`sample`](Sampler::sample) would draw (same
    /// stream), its log-probability in the distribution it was drawn from, its raw
    /// log-probability, and the `top_n` most likely raw tokens.
    ///
    /// # Errors
    ///
    /// As [`sample`](Sampler::sample).
    pub fn sample_detailed(
        &mut self,
        logits: &Tensor,
        history: &[u32],
        top_n: usize,
    ) -> Result<Sampled, SamplingError> {
        let mut host = std::mem::take(&mut self.work.host);
        let result = with_logits(logits, &mut host, |values| {
            self.detailed(values, history, top_n)
        });
        self.work.host = host;
        result
    }

    fn detailed(
        &mut self,
        logits: &[f32],
        history: &[u32],
        top_n: usize,
    ) -> Result<Sampled, SamplingError> {
        let outcome = self.run(logits, &[], history, Want::Draw)?;
        let token = outcome.token;
        let prob = match outcome.prob {
            Some(p) => p,
            None => {
                // A native strategy drew the token; the general path gives its probability
                // (these plans draw no random numbers outside the draw itself).
                let mut probs = std::mem::take(&mut self.work.probs);
                let result = self.run(logits, &[], history, Want::Probabilities(&mut probs));
                let p = probs.get(token as usize).map_or(0.0, |&p| f64::from(p));
                self.work.probs = probs;
                result?;
                p
            }
        };
        // The raw distribution: softmax of the caller's logits at temperature 1.
        let view = View::plain(logits);
        let max = native::scan_groups(&mut self.work.native, &view)?;
        let log_total = native::total_weight(&view, max, scale(1.0)).ln();
        let raw = |x: f32| ((f64::from(x) - f64::from(max)) - log_total) as f32;
        let top = if top_n == 0 {
            Vec::new()
        } else if top_n < logits.len() {
            let (best, _) = native::top_candidates(&mut self.work.native, &view, top_n)?;
            let mut top: Vec<(u32, f32)> = best.iter().map(|&(x, t)| (t, raw(x))).collect();
            // Fewer unmasked tokens than asked for: masked ones follow, lowest ids first.
            let masked = logits
                .iter()
                .enumerate()
                .filter(|&(_, &x)| x == f32::NEG_INFINITY)
                .map(|(i, _)| (i as u32, f32::NEG_INFINITY));
            let missing = top_n.saturating_sub(top.len());
            top.extend(masked.take(missing));
            top
        } else {
            let mut all: Vec<Candidate> = logits
                .iter()
                .enumerate()
                .map(|(i, &x)| (x, i as u32))
                .collect();
            all.sort_unstable_by(rank);
            all.into_iter().map(|(x, t)| (t, raw(x))).collect()
        };
        Ok(Sampled {
            token,
            logprob: prob.ln() as f32,
            raw_logprob: logits
                .get(token as usize)
                .map_or(f32::NEG_INFINITY, |&x| raw(x)),
            top,
        })
    }

    /// One run of the plan on `logits` with the caller's `external` edits (sorted or not, later
    /// entries win) applied first.
    fn run(
        &mut self,
        logits: &[f32],
        external: &[(u32, f32)],
        history: &[u32],
        want: Want<'_>,
    ) -> Result<Outcome, SamplingError> {
        let vocab = logits.len();
        if vocab == 0 {
            return Err(SamplingError::EmptyLogits);
        }
        if vocab - 1 > u32::MAX as usize {
            return Err(SamplingError::InvalidShape { shape: vec![vocab] });
        }
        if self.work.checked_vocab != vocab {
            self.plan.check_vocab(vocab)?;
            self.work.checked_vocab = vocab;
        }
        let Work {
            edits,
            cands,
            native: nw,
            typical,
            bins,
            mask,
            patched,
            ..
        } = &mut self.work;
        let plan = &mut self.plan;
        let rng = &mut self.rng;

        // 1. Edits, into the one buffer.
        edits.reset(vocab);
        {
            let mut cx = EditCx::new(logits, edits);
            for &(token, value) in external {
                cx.set(token, value);
            }
            let external_count = cx.len();
            for edit in &mut plan.edits {
                edit.apply(history, &mut cx);
            }
            cx.check_edited_inputs(external_count)?;
        }
        // Many edits are applied to a copy (in the order they were made: no sort needed), a few
        // are read in place, sorted by token.
        let pending = edits.entries();
        let (base, entries): (&[f32], &[(u32, f32)]) = if pending.is_empty() {
            (logits, &[])
        } else if native::copies(vocab, pending.len()) {
            native::patch_into(patched, logits, pending);
            (patched.as_slice(), &[])
        } else {
            (logits, edits.sorted())
        };
        let view = View::edited(base, entries);

        // The constraint's mask, before any stage.
        let masked = match &mut self.constraint {
            Some(c) => {
                mask.clear();
                mask.resize(constraint::mask_words(vocab), 0);
                c.allowed(history, mask)?;
                true
            }
            None => false,
        };

        // 2. A native strategy, when the plan is one.
        let drawing = matches!(want, Want::Draw);
        if drawing && plan.allowed.is_none() && !masked {
            if let Some(mode) = plan.fast {
                let token = native::draw_mode(nw, mode, &view, rng)?;
                let prob = matches!(mode, native::Mode::ArgMax).then_some(1.0);
                return Ok(Outcome { token, prob });
            }
        }

        // 3. The candidate list, with the first truncation fused into the dense passes.
        let steps = &plan.steps;
        let (lead, first) = match steps.first() {
            Some(&Step::Temperature(t)) if t > 0.0 => (Some(t), 1),
            _ => (None, 0),
        };
        let inv_t = lead.map_or(1.0, |t| 1.0 / f64::from(t));
        let mut next = first;
        let mut mirostat_done = false;
        // (ln Z, H) of the whole distribution when typical-p runs first on a partial list.
        let mut typical_whole: Option<(f64, f64)> = None;
        if masked {
            let top_k = match steps.get(first) {
                Some(&Step::TopK { k, ties }) => Some((k, ties)),
                _ => None,
            };
            let allowed = plan.allowed.as_deref();
            if entries.is_empty() && allowed.is_none() {
                // One pass validates every logit and gathers the allowed ones.
                stage::allowed::start_masked_fused(cands, mask, base, top_k)?;
            } else {
                // Every input is validated (the fused scan is the fastest validating pass of
                // an edited view), then only the allowed tokens are read.
                native::scan_groups(nw, &view)?;
                let value = |t| value_at(base, entries, t);
                let groups = native::group_maxima(nw, vocab);
                stage::allowed::start_masked(cands, mask, vocab, groups, allowed, top_k, value);
            }
        } else if let Some(allowed) = &plan.allowed {
            native::scan_groups(nw, &view)?;
            stage::allowed::start(cands, allowed, |t| value_at(base, entries, t));
        } else {
            match steps.get(first).copied() {
                Some(Step::TopK { k, ties }) if k < vocab => {
                    // The search keeps the ties of the k-th itself when they fit; otherwise a
                    // second pass collects every logit at or above the k-th.
                    let (top, _, tied) = native::top_candidates_ties(nw, &view, k, ties)?;
                    let kth = top.last().map_or(f32::NEG_INFINITY, |c| c.0);
                    if ties && !tied {
                        let out = cands.start(false);
                        native::collect_groups(nw, &view, kth, out);
                    } else {
                        cands.start(true).extend_from_slice(top);
                    }
                    next = first + 1;
                }
                Some(Step::CandleTopKTopP { k, p }) if k < vocab => {
                    let s = scale(1.0 / inv_t);
                    // `top` is in rank order by logit, which is rank order by weight.
                    let kept = native::candle_cut(nw, &view, k, f64::from(p), s)?;
                    cands.start(true).extend_from_slice(kept);
                    next = first + 1;
                }
                Some(Step::MinP(p)) => {
                    let max = native::scan_groups(nw, &view)?;
                    let floor = stage::min_p::floor(max, p, inv_t);
                    native::collect_groups(nw, &view, floor, cands.start(false));
                    if cands.len() < plan.min_keep {
                        let (top, _) = native::top_candidates(nw, &view, plan.min_keep)?;
                        cands.start(true).extend_from_slice(top);
                    }
                    next = first + 1;
                }
                Some(Step::TopNSigma(n)) => {
                    let max = native::scan_groups(nw, &view)?;
                    let mut moments = native::Moments::new(max);
                    view.visit(&mut moments);
                    let (count, sum, sum_sq) = moments.finish();
                    let floor = stage::top_n_sigma::floor_from_moments(max, n, count, sum, sum_sq);
                    native::collect_groups(nw, &view, floor, cands.start(false));
                    next = first + 1;
                }
                Some(Step::Typical { p, .. }) => {
                    // The typical set is an interval of y = (ℓ − max) / T around E[y] (the score
                    // is |y − E[y]|). One pass gives the moments of y and a histogram of the
                    // mass by y; the narrowest interval of whole bins around E[y] holding mass
                    // p bounds the set's radius, and only tokens within it (plus a bin of
                    // slack for rounding) are collected.
                    let max = native::scan_groups(nw, &view)?;
                    bins.resize(TYPICAL_BINS, 0.0);
                    let mut moments = native::WeightedMoments::new(
                        max,
                        scale(1.0 / inv_t),
                        inv_t as f32,
                        bins.as_mut_slice(),
                    );
                    view.visit(&mut moments);
                    let (z, sum_y, _) = moments.finish();
                    let mean = sum_y / z;
                    let radius =
                        typical_radius(bins.as_slice(), -mean, f64::from(p) * z * (1.0 + 1e-4));
                    let floor = (f64::from(max) + (mean - radius) / inv_t) as f32;
                    let floor = if radius.is_finite() {
                        floor
                    } else {
                        f32::NEG_INFINITY
                    };
                    native::collect_groups(nw, &view, floor, cands.start(false));
                    // The first `min_keep` tokens by score must lie inside the radius too.
                    let inner = radius - f64::from(native::HIST_WIDTH);
                    let inside = cands
                        .items
                        .iter()
                        .filter(|&&(x, _)| {
                            ((f64::from(x) - f64::from(max)) * inv_t - mean).abs() <= inner
                        })
                        .count();
                    if inside < plan.min_keep {
                        native::collect_groups(nw, &view, f32::NEG_INFINITY, cands.start(false));
                    }
                    typical_whole = Some((z.ln(), z.ln() - mean));
                }
                None if matches!(plan.select, Select::Mirostat { version: 2, .. }) => {
                    // Mirostat v2's bound p >= 2^-μ is a logit floor once the total is known:
                    // ℓ >= max + (ln Z − μ ln 2) · T.
                    let max = native::scan_groups(nw, &view)?;
                    let total = native::total_weight(&view, max, scale(1.0 / inv_t));
                    let bound = total.ln() - f64::from(self.mu) * std::f64::consts::LN_2;
                    let floor = (f64::from(max) + bound / inv_t) as f32;
                    native::collect_groups(nw, &view, floor, cands.start(false));
                    if cands.len() == 0 {
                        let (top, _) = native::top_candidates(nw, &view, 1)?;
                        cands.start(true).extend_from_slice(top);
                    }
                    mirostat_done = true;
                }
                _ => {
                    native::scan_groups(nw, &view)?;
                    native::collect_groups(nw, &view, f32::NEG_INFINITY, cands.start(false));
                }
            }
        }
        if cands.len() == 0 {
            return Err(SamplingError::AllMasked);
        }
        if let Some(t) = lead {
            stage::temperature::apply(cands, t);
        }

        // 4. The remaining stages on the candidates.
        let min_keep = plan.min_keep;
        for &step in steps.get(next..).unwrap_or_default() {
            match step {
                Step::Temperature(t) => stage::temperature::apply(cands, t),
                Step::DynamicTemperature { t, delta, exponent } => {
                    stage::dynatemp::apply(cands, t, delta, exponent)
                }
                Step::TopK { k, ties } => stage::top_k::apply(cands, k, ties),
                Step::CandleTopKTopP { k, p } => stage::top_p::apply_candle(cands, k, p),
                Step::TopP(p) => stage::top_p::apply(cands, p, min_keep),
                Step::MinP(p) => stage::min_p::apply(cands, p, min_keep),
                Step::Typical { p, hf } => match typical_whole.take() {
                    Some((log_z, entropy)) => stage::typical::apply_partial(
                        cands, p, min_keep, hf, typical, log_z, entropy,
                    ),
                    None => stage::typical::apply(cands, p, min_keep, hf, typical),
                },
                Step::Epsilon(e) => stage::epsilon::apply(cands, e, min_keep),
                Step::Eta(e) => stage::eta::apply(cands, e, min_keep),
                Step::TopNSigma(n) => stage::top_n_sigma::apply(cands, n),
                Step::Xtc {
                    probability,
                    threshold,
                } => stage::xtc::apply(cands, probability, threshold, min_keep, rng),
            }
        }

        // 5. The selector.
        let (index, prob) = match plan.select {
            Select::Greedy => (stage::select::greedy(cands), 1.0),
            Select::Multinomial => {
                if matches!(want, Want::Candidates) {
                    return Ok(Outcome {
                        token: 0,
                        prob: None,
                    });
                }
                if let Want::Probabilities(out) = want {
                    write_probs(out, vocab, cands);
                    return Ok(Outcome {
                        token: 0,
                        prob: None,
                    });
                }
                stage::select::multinomial(cands, rng)
            }
            Select::Mirostat { version, tau, eta } => {
                if version == 1 {
                    stage::mirostat::truncate_v1(cands, self.mu, vocab);
                } else if !mirostat_done {
                    stage::mirostat::truncate_v2(cands, self.mu);
                }
                if let Want::Probabilities(out) = want {
                    write_probs(out, vocab, cands);
                    return Ok(Outcome {
                        token: 0,
                        prob: None,
                    });
                }
                let (index, p) = stage::select::multinomial(cands, rng);
                self.mu = stage::mirostat::update(self.mu, tau, eta, p);
                (index, p)
            }
        };
        let token = index
            .and_then(|i| cands.items.get(i))
            .map(|c| c.1)
            .ok_or(SamplingError::AllMasked)?;
        if let Want::Probabilities(out) = want {
            out.clear();
            out.resize(vocab, 0.0);
            if let Some(slot) = out.get_mut(token as usize) {
                *slot = 1.0;
            }
        }
        Ok(Outcome {
            token,
            prob: Some(prob),
        })
    }
}

/// Bins of typical-p's histogram of `-y` (the last one open-ended): 88 nats at
/// [`native::HIST_WIDTH`], past which weights are 0 in f32.
const TYPICAL_BINS: usize = 720;

/// An upper bound on the radius of the typical set: the smallest `R` (plus a bin of slack for
/// rounding) such that the bins lying wholly within `[m − R, m + R]` (in `-y`, `m = −E[y]`) hold
/// `target` mass. Infinite when no radius within the histogram does.
fn typical_radius(bins: &[f64], m: f64, target: f64) -> f64 {
    let h = f64::from(native::HIST_WIDTH);
    // The last bin is open-ended, so never wholly inside.
    let last = bins.len().saturating_sub(1);
    let mut mass = 0.0f64;
    // Counted bins: lo..hi.
    let (mut lo, mut hi) = (0usize, 0usize);
    for k in 1..=2 * bins.len() {
        let r = k as f64 * h;
        let new_lo = ((m - r) / h).ceil().max(0.0) as usize;
        let new_hi = (((m + r) / h).floor().max(0.0) as usize).min(last);
        if new_lo < new_hi {
            if lo >= hi {
                mass = bins[new_lo..new_hi].iter().sum();
            } else {
                mass += bins[new_lo..lo.max(new_lo)].iter().sum::<f64>();
                mass += bins[hi.min(new_hi)..new_hi].iter().sum::<f64>();
            }
            (lo, hi) = (new_lo, new_hi);
        }
        // Some mass strictly inside (so at least one token), and at least `target`.
        if mass > 0.0 && mass >= target {
            return r + h;
        }
    }
    f64::INFINITY
}

/// The value of token `t` of `base` with the sorted `entries` applied.
fn value_at(base: &[f32], entries: &[(u32, f32)], t: u32) -> f32 {
    match entries.binary_search_by_key(&t, |&(token, _)| token) {
        Ok(i) => entries.get(i).map_or(f32::NEG_INFINITY, |e| e.1),
        Err(_) => base.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY),
    }
}

/// Writes the candidates' softmax into a vocabulary-sized `out`.
fn write_probs(out: &mut Vec<f32>, vocab: usize, cands: &mut Candidates) {
    out.clear();
    out.resize(vocab, 0.0);
    let (items, probs) = cands.with_probs();
    for (&(_, token), &p) in items.iter().zip(probs) {
        if let Some(slot) = out.get_mut(token as usize) {
            *slot = p as f32;
        }
    }
}

impl Sampler for Chain {
    fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32, SamplingError> {
        let mut host = std::mem::take(&mut self.work.host);
        let result = with_logits(logits, &mut host, |values| {
            self.run(values, &[], history, Want::Draw)
        });
        self.work.host = host;
        Ok(result?.token)
    }

    fn sample_slice(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, SamplingError> {
        Ok(self.run(logits, &[], history, Want::Draw)?.token)
    }

    /// The caller's edits are applied first, then the chain's own edit stages, all in the one
    /// edit buffer: no copy of the vocabulary.
    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        history: &[u32],
    ) -> Result<u32, SamplingError> {
        Ok(self.run(logits, edits, history, Want::Draw)?.token)
    }

    fn reset(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        self.mu = 2.0 * self.config.mirostat_tau;
        if let Some(c) = &mut self.constraint {
            c.reset();
        }
    }
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("config", &self.config)
            .field("mu", &self.mu)
            .field("constraint", &self.constraint.is_some())
            .finish_non_exhaustive()
    }
}
