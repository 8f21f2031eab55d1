//! Helpers for the `Chain` tests: an independent reference for the distribution of every stage
//! under every convention, written from each library's definition (f64, full sorts, no fusion),
//! and generators of logits, histories and configurations.
//!
//! The reference reports when one of its decisions is within rounding distance of a threshold
//! (a cumulative mass within 1e-6 of `p`, a logit within 2e-5 of a floor, ...): the chain's f32
//! arithmetic may then legitimately decide the other way, so such cases are skipped, never
//! compared with a loosened tolerance.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use kyutai_sampling::{ChainConfig, Convention};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Distance to a mass threshold (top-p, typical, candle's top-p) under which a case is skipped.
pub const NEAR_MASS: f64 = 1e-6;
/// Distance in logit space (min-p floor, top-nσ floor, mirostat's surprise bound).
pub const NEAR_LOGIT: f64 = 2e-5;
/// Relative distance of a probability to a probability threshold (epsilon, eta, XTC).
pub const NEAR_REL: f64 = 1e-5;
/// The comparison tolerance of probabilities.
pub const TOL: f64 = 1e-5;

/// A decision was within rounding distance of its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Near;

/// What the reference needs besides the configuration: whether XTC's coin fires (it fires when
/// the uniform drawn is below `xtc_probability`) and mirostat's current `μ` (`None`: `2τ`).
#[derive(Debug, Clone, Copy, Default)]
pub struct State {
    pub xtc_fires: bool,
    pub mu: Option<f64>,
}

impl State {
    /// XTC fires (right for `xtc_probability` 1.0, or to compute one side of the mixture).
    pub fn fires() -> Self {
        Self {
            xtc_fires: true,
            mu: None,
        }
    }
    /// XTC's coin does not fire.
    pub fn holds() -> Self {
        Self {
            xtc_fires: false,
            mu: None,
        }
    }
}

/// The logits being filtered, in f64 (`-inf` masks), with a flag raised by near decisions.
struct Work {
    l: Vec<f64>,
    near: bool,
    min_keep: usize,
}

fn live(l: &[f64]) -> Vec<usize> {
    (0..l.len()).filter(|&i| l[i] > f64::NEG_INFINITY).collect()
}

/// Unmasked indices by decreasing logit, lowest index first among equal logits.
fn ranked(l: &[f64]) -> Vec<usize> {
    let mut order = live(l);
    order.sort_by(|&a, &b| l[b].partial_cmp(&l[a]).unwrap().then(a.cmp(&b)));
    order
}

/// Softmax over the unmasked entries (0 for masked ones).
pub fn softmax(l: &[f64]) -> Vec<f64> {
    let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = l
        .iter()
        .map(|&x| {
            if x > f64::NEG_INFINITY {
                (x - max).exp()
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|&x| x / total).collect()
}

fn entropy(p: &[f64]) -> f64 {
    p.iter().filter(|&&q| q > 0.0).map(|&q| -q * q.ln()).sum()
}

impl Work {
    fn keep_only(&mut self, keep: &BTreeSet<usize>) {
        for (i, x) in self.l.iter_mut().enumerate() {
            if !keep.contains(&i) {
                *x = f64::NEG_INFINITY;
            }
        }
    }

    fn argmax_only(&mut self) {
        let best = ranked(&self.l)[0];
        self.keep_only(&[best].into_iter().collect());
    }

    /// `ℓ / T`; `T <= 0` keeps the most likely token only (llama.cpp).
    fn temperature(&mut self, t: f64) {
        if t <= 0.0 {
            self.argmax_only();
        } else {
            for x in &mut self.l {
                *x /= t;
            }
        }
    }

    /// llama.cpp's `temp_ext`.
    fn dynatemp(&mut self, t: f64, delta: f64, exponent: f64) {
        let n = live(&self.l).len();
        if n <= 1 {
            return;
        }
        let h = entropy(&softmax(&self.l));
        let norm = (h / (n as f64).ln()).clamp(0.0, 1.0);
        let min_t = (t - delta).max(0.0);
        let max_t = t + delta;
        self.temperature(min_t + (max_t - min_t) * norm.powf(exponent));
    }

    /// transformers: `k' = max(k, min_keep)`, remove `ℓ < ` the k'-th largest value.
    fn top_k_hf(&mut self, k: usize) {
        let k = k.max(self.min_keep);
        let order = ranked(&self.l);
        if k >= order.len() {
            return;
        }
        let kth = self.l[order[k - 1]];
        for x in &mut self.l {
            if *x < kth {
                *x = f64::NEG_INFINITY;
            }
        }
    }

    /// llama.cpp / candle: exactly `k` (lowest ids among ties), no `min_keep`.
    fn top_k_exact(&mut self, k: usize) {
        let order = ranked(&self.l);
        self.keep_only(&order.into_iter().take(k).collect());
    }

    /// Keep a token when the mass ranked strictly before it is below `p`, and the first
    /// `min_keep`.
    fn top_p(&mut self, p: f64) {
        if p >= 1.0 {
            return;
        }
        let probs = softmax(&self.l);
        let order = ranked(&self.l);
        let mut before = 0.0;
        let mut keep = BTreeSet::new();
        for (pos, &i) in order.iter().enumerate() {
            if (before - p).abs() < NEAR_MASS {
                self.near = true;
            }
            if before < p || pos < self.min_keep {
                keep.insert(i);
            }
            before += probs[i];
        }
        self.keep_only(&keep);
    }

    /// Keep `p_i >= min_p · p_max`, and the first `min_keep`.
    fn min_p(&mut self, min_p: f64) {
        if min_p <= 0.0 {
            return;
        }
        let order = ranked(&self.l);
        if order.len() <= 1 {
            return;
        }
        let probs = softmax(&self.l);
        let p_max = probs[order[0]];
        let mut keep = BTreeSet::new();
        for (pos, &i) in order.iter().enumerate() {
            let margin = (self.l[i] - self.l[order[0]]) - min_p.ln();
            if margin.abs() < NEAR_LOGIT {
                self.near = true;
            }
            if probs[i] >= min_p * p_max || pos < self.min_keep {
                keep.insert(i);
            }
        }
        self.keep_only(&keep);
    }

    /// Scores `|−ln p − H|` ascending (lowest id first among equal scores), with the
    /// probabilities.
    fn typical_order(&mut self) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
        let probs = softmax(&self.l);
        let h = entropy(&probs);
        let score: Vec<f64> = probs
            .iter()
            .map(|&q| {
                if q > 0.0 {
                    (-q.ln() - h).abs()
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        let mut order = live(&self.l);
        order.sort_by(|&a, &b| score[a].partial_cmp(&score[b]).unwrap().then(a.cmp(&b)));
        (order, probs, score)
    }

    /// Flags scores so close (but not equal) that rounding could swap them where the order
    /// decides the kept set: around the mass cut at position `last` and the `min_keep` boundary.
    fn typical_near_swap(&mut self, order: &[usize], score: &[f64], last: usize) {
        let mk = self.min_keep.min(order.len()) - 1;
        let lo = last.min(mk).saturating_sub(1);
        let hi = (last.max(mk) + 1).min(order.len() - 1);
        for i in lo..hi {
            let d = (score[order[i]] - score[order[i + 1]]).abs();
            if d > 0.0 && d < NEAR_LOGIT {
                self.near = true;
            }
        }
    }

    /// transformers' `TypicalLogitsWarper`: `last_ind` = number of cumulative masses `< p`
    /// (clamped to the last), remove scores `>` the score at `last_ind`, then un-remove the first
    /// `min_keep`.
    fn typical_hf(&mut self, p: f64) {
        if p >= 1.0 || live(&self.l).len() <= 1 {
            return;
        }
        let (order, probs, score) = self.typical_order();
        let mut cum = 0.0;
        let mut below = 0;
        for &i in &order {
            cum += probs[i];
            if (cum - p).abs() < NEAR_MASS {
                self.near = true;
            }
            if cum < p {
                below += 1;
            }
        }
        let last = below.min(order.len() - 1);
        self.typical_near_swap(&order, &score, last);
        let bound = score[order[last]];
        let keep: BTreeSet<usize> = order
            .iter()
            .enumerate()
            .filter(|&(pos, &i)| score[i] <= bound || pos < self.min_keep)
            .map(|(_, &i)| i)
            .collect();
        self.keep_only(&keep);
    }

    /// llama.cpp's `typical`: the prefix up to the first cumulative mass `> p` (at least
    /// `min_keep`), exactly.
    fn typical_llama(&mut self, p: f64) {
        if p >= 1.0 || live(&self.l).len() <= 1 {
            return;
        }
        let (order, probs, score) = self.typical_order();
        let mut cum = 0.0;
        let mut last = order.len();
        for (pos, &i) in order.iter().enumerate() {
            cum += probs[i];
            if (cum - p).abs() < NEAR_MASS {
                self.near = true;
            }
            if cum > p && pos + 1 >= self.min_keep {
                last = pos + 1;
                break;
            }
        }
        self.typical_near_swap(&order, &score, last - 1);
        let keep = order.into_iter().take(last).collect();
        self.keep_only(&keep);
    }

    /// transformers' epsilon rule: remove `p < cutoff` unless the logit reaches the
    /// `min_keep`-th largest.
    fn cutoff(&mut self, cutoff: f64) {
        let order = ranked(&self.l);
        let probs = softmax(&self.l);
        let kth = self.l[order[self.min_keep.min(order.len()) - 1]];
        let mut keep = BTreeSet::new();
        for &i in &order {
            if (probs[i] / cutoff - 1.0).abs() < NEAR_REL {
                self.near = true;
            }
            if probs[i] >= cutoff || self.l[i] >= kth {
                keep.insert(i);
            }
        }
        self.keep_only(&keep);
    }

    fn epsilon(&mut self, eps: f64) {
        if eps > 0.0 {
            self.cutoff(eps);
        }
    }

    fn eta(&mut self, eta: f64) {
        if eta > 0.0 {
            let h = entropy(&softmax(&self.l));
            self.cutoff(eta.min(eta.sqrt() * (-h).exp()));
        }
    }

    /// Keep `ℓ >= max − n·σ`, σ the population standard deviation of the unmasked logits.
    fn top_n_sigma(&mut self, n: f64) {
        let idx = live(&self.l);
        if n <= 0.0 || idx.len() <= 1 {
            return;
        }
        let count = idx.len() as f64;
        let mean = idx.iter().map(|&i| self.l[i]).sum::<f64>() / count;
        let var = idx.iter().map(|&i| (self.l[i] - mean).powi(2)).sum::<f64>() / count;
        let max = idx
            .iter()
            .map(|&i| self.l[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let floor = max - n * var.sqrt();
        let mut keep = BTreeSet::new();
        for &i in &idx {
            let d = self.l[i] - floor;
            // A zero σ puts every maximum exactly on the floor, which both sides compute exactly.
            if d.abs() < NEAR_LOGIT * (1.0 + self.l[i].abs()) && var > 0.0 {
                self.near = true;
            }
            if self.l[i] >= floor {
                keep.insert(i);
            }
        }
        self.keep_only(&keep);
    }

    /// llama.cpp's XTC once the coin fired: among the tokens with `p >= threshold` remove all
    /// but the least likely (the last in rank order), unless that leaves fewer than `min_keep`.
    fn xtc(&mut self, threshold: f64) {
        let order = ranked(&self.l);
        if order.len() < 2 {
            return;
        }
        let probs = softmax(&self.l);
        for &i in &order {
            if (probs[i] / threshold - 1.0).abs() < NEAR_REL {
                self.near = true;
            }
        }
        let above = order.iter().take_while(|&&i| probs[i] >= threshold).count();
        let remove = above.saturating_sub(1);
        if remove > 0 && order.len() - remove >= self.min_keep {
            self.keep_only(&order[remove..].iter().copied().collect());
        }
    }

    /// candle's top-k then top-p: the `k` best, then the prefix whose preceding mass, measured
    /// against the whole vocabulary, is below `p`; top-p alone when `k` covers the vocabulary.
    fn candle_top_k_top_p(&mut self, k: usize, p: f64) {
        if k >= self.l.len() {
            self.top_p(p);
            return;
        }
        let probs = softmax(&self.l);
        let order = ranked(&self.l);
        let mut before = 0.0;
        let mut keep = BTreeSet::new();
        for &i in order.iter().take(k) {
            if (before - p).abs() < NEAR_MASS {
                self.near = true;
            }
            if before < p {
                keep.insert(i);
            }
            before += probs[i];
        }
        self.keep_only(&keep);
    }

    /// Mirostat v2's truncation: the rank prefix whose surprise `−log₂ p` is at most `μ`
    /// (at least one token).
    fn mirostat_v2(&mut self, mu: f64) {
        let order = ranked(&self.l);
        let probs = softmax(&self.l);
        let mut keep = BTreeSet::new();
        for &i in &order {
            let s = -probs[i].log2();
            if (s - mu).abs() < NEAR_LOGIT {
                self.near = true;
            }
            if probs[i] > 0.0 && s <= mu {
                keep.insert(i);
            } else {
                break;
            }
        }
        if keep.is_empty() {
            keep.insert(order[0]);
        }
        self.keep_only(&keep);
    }

    /// Mirostat v1's truncation: top `k` from the Zipf estimate over the top 100.
    fn mirostat_v1(&mut self, mu: f64, vocab: usize) {
        let order = ranked(&self.l);
        let probs = softmax(&self.l);
        let p: Vec<f64> = order.iter().map(|&i| probs[i]).collect();
        let (mut tb, mut tt) = (0.0, 0.0);
        for i in 0..99.min(p.len().saturating_sub(1)) {
            let t = ((i + 2) as f64 / (i + 1) as f64).ln();
            tb += t * (p[i] / p[i + 1]).ln();
            tt += t * t;
        }
        let s = tb / tt;
        let e = s - 1.0;
        let k = ((e * 2f64.powf(mu)) / (1.0 - (vocab as f64).powf(-e))).powf(1.0 / s);
        let k = if k.is_finite() {
            let frac = k - k.floor();
            if !(1e-4..=1.0 - 1e-4).contains(&frac) && k >= 0.5 {
                self.near = true;
            }
            (k as usize).max(1)
        } else {
            order.len()
        };
        self.top_k_exact(k);
    }
}

/// The edited logits, in f32 as the chain's edit buffer holds them: the convention's order of
/// logit bias, repetition, frequency and presence, minimum length and suppression, then the
/// allowed set.
pub fn edited(c: &ChainConfig, logits: &[f32], history: &[u32]) -> Vec<f32> {
    let n = logits.len();
    let mut x = logits.to_vec();
    let window: &[u32] = match c.repeat_last_n {
        None => history,
        Some(w) => &history[history.len().saturating_sub(w)..],
    };
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for &t in window {
        if (t as usize) < n {
            *counts.entry(t).or_default() += 1;
        }
    }
    let bias = |x: &mut Vec<f32>| {
        for (&t, &b) in &c.logit_bias {
            let t = t as usize;
            if b <= -1e30 {
                x[t] = f32::NEG_INFINITY;
            } else if x[t] > f32::NEG_INFINITY {
                x[t] += b;
            }
        }
    };
    let repetition = |x: &mut Vec<f32>| {
        if c.repetition_penalty != 1.0 {
            for &t in counts.keys() {
                let v = &mut x[t as usize];
                if *v > 0.0 {
                    *v /= c.repetition_penalty;
                } else {
                    *v *= c.repetition_penalty;
                }
            }
        }
    };
    let frequency = |x: &mut Vec<f32>| {
        if c.frequency_penalty != 0.0 || c.presence_penalty != 0.0 {
            for (&t, &k) in &counts {
                let v = &mut x[t as usize];
                if *v > f32::NEG_INFINITY {
                    *v -= k as f32 * c.frequency_penalty + c.presence_penalty;
                }
            }
        }
    };
    match c.convention {
        Convention::HuggingFace | Convention::LlamaCpp => {
            bias(&mut x);
            repetition(&mut x);
            frequency(&mut x);
        }
        Convention::Candle => {
            repetition(&mut x);
            bias(&mut x);
            frequency(&mut x);
        }
    }
    if c.min_length > 0 && history.len() < c.min_length {
        for &t in &c.eos_token_id {
            x[t as usize] = f32::NEG_INFINITY;
        }
    }
    for &t in &c.suppress_tokens {
        x[t as usize] = f32::NEG_INFINITY;
    }
    if let Some(allowed) = &c.allowed_token_ids {
        let set: BTreeSet<u32> = allowed.iter().copied().collect();
        for (i, v) in x.iter_mut().enumerate() {
            if !set.contains(&(i as u32)) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    x
}

/// The distribution a chain built from `c` draws its next token from (one probability per
/// token, summing to 1), or [`Near`] when a decision is within rounding distance of its
/// threshold. Covers every stage except DRY, no-repeat-n-gram, bad words and sequence bias.
pub fn reference(
    c: &ChainConfig,
    logits: &[f32],
    history: &[u32],
    state: State,
) -> Result<Vec<f64>, Near> {
    let x = edited(c, logits, history);
    let mut w = Work {
        l: x.iter().map(|&v| f64::from(v)).collect(),
        near: false,
        min_keep: c.min_keep.max(1),
    };
    assert!(
        w.l.iter().any(|&v| v > f64::NEG_INFINITY),
        "reference: every token is masked"
    );
    let temperature = |w: &mut Work| {
        if c.dynatemp_range > 0.0 {
            w.dynatemp(
                f64::from(c.temperature),
                f64::from(c.dynatemp_range),
                f64::from(c.dynatemp_exponent),
            );
        } else if c.temperature != 1.0 {
            w.temperature(f64::from(c.temperature));
        }
    };
    let xtc_on = c.xtc_probability > 0.0 && c.xtc_threshold <= 0.5 && state.xtc_fires;
    let xtc = |w: &mut Work| {
        if xtc_on {
            w.xtc(f64::from(c.xtc_threshold));
        }
    };
    let top_p = f64::from(c.top_p);
    let typical = f64::from(c.typical_p);
    let min_p = f64::from(c.min_p);
    let eps = f64::from(c.epsilon_cutoff);
    let eta = f64::from(c.eta_cutoff);
    let sigma = f64::from(c.top_n_sigma);
    if !c.do_sample {
        w.argmax_only();
    } else if c.mirostat > 0 {
        temperature(&mut w);
        let mu = state.mu.unwrap_or(2.0 * f64::from(c.mirostat_tau));
        if c.mirostat == 1 {
            w.mirostat_v1(mu, logits.len());
        } else {
            w.mirostat_v2(mu);
        }
    } else {
        match c.convention {
            Convention::HuggingFace => {
                temperature(&mut w);
                if c.top_k > 0 {
                    w.top_k_hf(c.top_k);
                }
                w.top_p(top_p);
                w.min_p(min_p);
                w.typical_hf(typical);
                w.epsilon(eps);
                w.eta(eta);
                w.top_n_sigma(sigma);
                xtc(&mut w);
            }
            Convention::LlamaCpp => {
                w.top_n_sigma(sigma);
                if c.top_k > 0 {
                    w.top_k_exact(c.top_k);
                }
                w.typical_llama(typical);
                w.top_p(top_p);
                w.min_p(min_p);
                xtc(&mut w);
                w.epsilon(eps);
                w.eta(eta);
                temperature(&mut w);
            }
            Convention::Candle => {
                temperature(&mut w);
                match (c.top_k > 0, c.top_p < 1.0) {
                    (true, true) => w.candle_top_k_top_p(c.top_k, top_p),
                    (true, false) => w.top_k_exact(c.top_k),
                    (false, true) => w.top_p(top_p),
                    (false, false) => {}
                }
                w.min_p(min_p);
                w.typical_hf(typical);
                w.epsilon(eps);
                w.eta(eta);
                w.top_n_sigma(sigma);
                xtc(&mut w);
            }
        }
    }
    if w.near {
        return Err(Near);
    }
    Ok(softmax(&w.l))
}

/// The distribution candle's `LogitsProcessor` samples from, after candle's repetition penalty
/// over the last `context` tokens of `history` (written from candle's source: softmax at the
/// temperature, `select_nth` top-k, cumulative top-p over the sorted probabilities, and top-k then
/// top-p with the top-k probabilities left un-renormalised). Ties go to the lowest id.
pub fn candle_reference(
    sampling: &kyutai_sampling::Sampling,
    penalty: Option<(f32, usize)>,
    logits: &[f32],
    history: &[u32],
) -> Vec<f64> {
    use kyutai_sampling::Sampling;
    let mut x = logits.to_vec();
    if let Some((penalty, context)) = penalty {
        let window = &history[history.len().saturating_sub(context)..];
        let mut seen = BTreeSet::new();
        for &t in window {
            if seen.insert(t) {
                if let Some(v) = x.get_mut(t as usize) {
                    if *v >= 0.0 {
                        *v /= penalty;
                    } else {
                        *v *= penalty;
                    }
                }
            }
        }
    }
    let n = x.len();
    let l: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let order = ranked(&l);
    let point = |i: usize| {
        let mut p = vec![0.0; n];
        p[i] = 1.0;
        p
    };
    let t = match *sampling {
        Sampling::ArgMax => return point(order[0]),
        Sampling::All { temperature }
        | Sampling::GumbelSoftmax { temperature }
        | Sampling::TopK { temperature, .. }
        | Sampling::TopP { temperature, .. }
        | Sampling::TopKThenTopP { temperature, .. } => temperature,
    };
    let prs = softmax(&l.iter().map(|&v| v / t).collect::<Vec<_>>());
    // Sample from `weights` (renormalised, as `WeightedIndex` does).
    let normalise = |w: Vec<f64>| {
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect::<Vec<f64>>()
    };
    let nucleus = |cands: &[usize], p: f64| {
        // candle's `sample_topp`: sorted by probability, zero every token once the running sum
        // of the earlier ones reaches `p`.
        let mut w = vec![0.0; n];
        let mut cum = 0.0;
        for &i in cands {
            if cum < p {
                w[i] = prs[i];
                cum += prs[i];
            }
        }
        w
    };
    match *sampling {
        Sampling::All { .. } | Sampling::GumbelSoftmax { .. } => prs,
        Sampling::TopK { k, .. } if k >= n => prs,
        Sampling::TopK { k, .. } => {
            let mut w = vec![0.0; n];
            for &i in order.iter().take(k) {
                w[i] = prs[i];
            }
            normalise(w)
        }
        Sampling::TopP { p, .. } => normalise(nucleus(&order, f64::from(p as f32))),
        Sampling::TopKThenTopP { k, p, .. } if k >= n => {
            normalise(nucleus(&order, f64::from(p as f32)))
        }
        Sampling::TopKThenTopP { k, p, .. } => {
            let top: Vec<usize> = order.iter().copied().take(k).collect();
            let sum_p: f64 = top.iter().map(|&i| prs[i]).sum();
            let p = f64::from(p as f32);
            if p >= sum_p {
                let mut w = vec![0.0; n];
                for &i in &top {
                    w[i] = prs[i];
                }
                normalise(w)
            } else {
                normalise(nucleus(&top, p))
            }
        }
        Sampling::ArgMax => unreachable!(),
    }
}

/// Asserts that `got` (the chain's probabilities) matches `want` to [`TOL`], with the same
/// support (up to f32 underflow of probabilities below 1e-35).
pub fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let sum: f64 = got.iter().map(|&p| f64::from(p)).sum();
    assert!(
        (sum - 1.0).abs() < 1e-5,
        "{what}: probabilities sum to {sum}"
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= TOL,
            "{what}: token {i}: chain {g}, reference {w}\nchain     {got:?}\nreference {want:?}"
        );
        // The chain's probabilities are f32: a kept token below ~1e-38 may round to 0.
        assert!(
            if w == 0.0 { g == 0.0 } else { g > 0.0 || w < 1e-35 },
            "{what}: token {i} kept by one side only: chain {g}, reference {w}\nchain     {got:?}\nreference {want:?}"
        );
    }
}

/// Kinds of logits the generators produce.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Uniform in `[-s, s]`.
    Spread,
    /// Half-integers in `[-4, 4]`: many exact ties.
    Grid,
    /// One or two dominant logits over a flat tail.
    Peaked,
}

/// Random logits of `len` tokens: a random [`Shape`], and with some probability a fraction of
/// them masked (`-inf`), always leaving at least one unmasked.
pub fn random_logits(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    let shape = match rng.random_range(0..3) {
        0 => Shape::Spread,
        1 => Shape::Grid,
        _ => Shape::Peaked,
    };
    let spread: f32 = rng.random_range(0.5..12.0);
    let mut x: Vec<f32> = (0..len)
        .map(|_| match shape {
            Shape::Spread => rng.random_range(-spread..spread),
            Shape::Grid => rng.random_range(-8i32..=8) as f32 / 2.0,
            Shape::Peaked => rng.random_range(-1.0f32..1.0),
        })
        .collect();
    if let Shape::Peaked = shape {
        for _ in 0..rng.random_range(1..=2) {
            let i = rng.random_range(0..len);
            x[i] += rng.random_range(3.0f32..9.0);
        }
    }
    if len > 1 && rng.random_bool(0.3) {
        let masked = rng.random_range(1..len);
        for _ in 0..masked {
            let i = rng.random_range(0..len);
            x[i] = f32::NEG_INFINITY;
        }
        if x.iter().all(|&v| v == f32::NEG_INFINITY) {
            x[rng.random_range(0..len)] = 0.5;
        }
    }
    x
}

/// A vocabulary size: mostly small (1 and 2 included), sometimes a few hundred, rarely a few
/// thousand (several groups of the engine's fused passes).
pub fn random_len(rng: &mut ChaCha8Rng) -> usize {
    match rng.random_range(0..20) {
        0 => 1,
        1 => 2,
        2..=13 => rng.random_range(3..=40),
        14..=18 => rng.random_range(41..=300),
        _ => rng.random_range(1000..=3000),
    }
}

/// A history of up to 30 tokens, a few of them outside the vocabulary.
pub fn random_history(rng: &mut ChaCha8Rng, len: usize) -> Vec<u32> {
    let n = rng.random_range(0..=30);
    (0..n)
        .map(|_| rng.random_range(0..(len as u32 + 3)))
        .collect()
}

/// Runs `cases` random cases: `make` gives a configuration for the logits (it may return `None`
/// to skip an inapplicable draw), the chain's probabilities are compared with the reference.
/// Returns `(compared, skipped near a threshold)` and checks that at most a quarter was skipped.
pub fn check_random(
    name: &str,
    seed: u64,
    cases: usize,
    mut make: impl FnMut(&mut ChaCha8Rng, &[f32], &[u32]) -> Option<ChainConfig>,
) -> (usize, usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut compared, mut skipped) = (0, 0);
    for case in 0..cases {
        let len = random_len(&mut rng);
        let logits = random_logits(&mut rng, len);
        let history = random_history(&mut rng, len);
        let Some(config) = make(&mut rng, &logits, &history) else {
            continue;
        };
        let mut chain = config
            .build()
            .unwrap_or_else(|e| panic!("{name} case {case}: {config:?} does not build: {e}"));
        let got = chain.probabilities(&logits, &history).unwrap_or_else(|e| {
            panic!("{name} case {case}: {e}\nconfig {config:?}\nlogits {logits:?}")
        });
        let state = State {
            xtc_fires: config.xtc_probability >= 1.0,
            mu: None,
        };
        match reference(&config, &logits, &history, state) {
            Ok(want) => {
                let what = format!(
                    "{name} case {case}\nconfig {config:?}\nlogits {logits:?}\nhistory {history:?}"
                );
                assert_close(&got, &want, &what);
                compared += 1;
            }
            Err(Near) => skipped += 1,
        }
    }
    assert!(
        skipped * 4 <= compared + skipped,
        "{name}: {skipped} of {} cases skipped near a threshold",
        compared + skipped
    );
    assert!(compared > 0, "{name}: nothing compared");
    (compared, skipped)
}

/// One to `max_count` ids below `len`, in random order, possibly repeated.
pub fn random_ids(rng: &mut ChaCha8Rng, len: usize, max_count: usize) -> Vec<u32> {
    let n = rng.random_range(1..=max_count);
    (0..n).map(|_| rng.random_range(0..len as u32)).collect()
}

/// `ln softmax(x)` in f64.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = x
        .iter()
        .map(|&v| (f64::from(v) - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    x.iter().map(|&v| f64::from(v) - lse).collect()
}
