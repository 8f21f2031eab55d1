//! Candle's top-p cut after top-k, decided from bounds on the vocabulary's total weight when
//! they suffice, so that the pass computing every weight is skipped.
//!
//! # Rule
//! candle keeps the top `k` tokens in rank order while the mass kept so far is below `p`,
//! measured against the whole vocabulary: candidate `i` (from 0) is kept when `m_i < p · Z`,
//! where `m_i` is the sum of the weights of the candidates before it and `Z` the sum of every
//! weight. `Z` costs a pass that evaluates the exponential for every token.
//!
//! # Bounds
//! `Z` matters only through those comparisons, and bounds `L ≤ Z ≤ U` settle each one unless
//! `m_i` falls between `p · L` and `p · U`. From the `k` candidates and the maximum of every
//! group of [`GROUP`](super::GROUP) tokens (which the top-k search already has):
//!
//! * `L`: the candidates' weights, plus the weight of every group maximum below the k-th logit
//!   (such a maximum is a token outside the candidates, and each group has one);
//! * `U`: the candidates' weights, plus, for every group, [`GROUP`](super::GROUP) times the weight
//!   of the smaller of its maximum and the k-th logit (no token outside the candidates is above
//!   either).
//!
//! Both are widened by a relative margin of `2^-12`, far more than the rounding of the pass's sum
//! (f32 lanes of 32 terms per block: below `2^-19`) and the polynomial's departures from
//! monotonicity (below `2^-21`), and `U` by `2^-125` per token (weights below that are not
//! accurate). So a cut decided here is the cut the exact total gives, and every token, weight and
//! random word of the draw is unchanged; an undecided cut computes `Z` exactly.
//!
//! # Cost
//! One weight per group (a sixty-fourth of the pass) and a walk over the `k` candidates. The
//! bounds decide when the cut is far from the bounds' gap: when the `k` candidates hold clearly
//! less than `p` of the mass (the whole top `k` is kept), or when the cut falls where the mass
//! left outside the candidates is small next to the candidates'.

use super::weights::{group_split, TINY};

/// Relative widening of the bounds.
const MARGIN: f64 = 1.0 / 4096.0;

/// Bounds on `p · Z`, the limit of candle's cut: `(low, high)` with `low <= p · Z <= high`.
///
/// `top_mass` is the sum of the candidates' weights, `kth` the k-th candidate's logit, `groups`
/// the group maxima of the `len`-token view: each slot is its group's exact maximum, or a value
/// at least `kth` (an upper bound, which then only widens `U`).
pub(crate) fn limits(
    top_mass: f64,
    groups: &[f32],
    kth: f32,
    max: f32,
    scale: f32,
    len: usize,
    p: f64,
) -> (f64, f64) {
    let (below, above) = group_split(groups, kth, max, scale);
    let wk = f64::from(super::weight(kth, max, scale));
    let group = super::GROUP as f64;
    let lower = top_mass + below;
    let upper = top_mass + group * (below + above as f64 * wk);
    let low = p * lower * (1.0 - MARGIN);
    let high = p * (upper * (1.0 + MARGIN) + len as f64 * TINY) * (1.0 + MARGIN);
    (low, high)
}

/// How many of the candidates (their weights, in rank order) candle's rule keeps when the
/// limit `p · Z` is only known to lie in `[low, high]`: `None` if that does not decide it.
pub(crate) fn decide(weights: impl Iterator<Item = f32>, low: f64, high: f64) -> Option<usize> {
    let mut mass = 0.0f64;
    let mut kept = 0;
    for w in weights {
        if mass >= low {
            // At or past the limit for sure (stop here), or undecided.
            return (mass >= high).then_some(kept);
        }
        mass += f64::from(w);
        kept += 1;
    }
    // Every candidate's mass before it is below `low`, so below the limit: all are kept.
    Some(kept)
}

/// How many of the candidates (their weights, in rank order) candle's rule keeps for the exact
/// limit `p · Z`.
pub(crate) fn cut(weights: impl Iterator<Item = f32>, limit: f64) -> usize {
    let mut mass = 0.0f64;
    let mut kept = 0;
    for w in weights {
        if mass >= limit {
            break;
        }
        mass += f64::from(w);
        kept += 1;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::{scale, weight, GROUP};
    use rand::{Rng, SeedableRng};

    /// The group maxima of `logits`, by a plain loop.
    fn maxima(logits: &[f32]) -> Vec<f32> {
        logits
            .chunks(GROUP)
            .map(|g| g.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            .collect()
    }

    /// The top `k` by (logit desc, index asc), by a full sort.
    fn top(logits: &[f32], k: usize) -> Vec<(f32, usize)> {
        let mut all: Vec<(f32, usize)> = logits.iter().copied().zip(0..).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.truncate(k);
        all
    }

    #[test]
    fn the_bounds_contain_the_exact_total() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..300 {
            let len = rng.random_range(1..5000);
            let spread = [0.1f32, 3.0, 30.0, 200.0][case % 4];
            let mut logits: Vec<f32> = (0..len)
                .map(|_| spread * rng.random::<f32>() - spread / 2.0)
                .collect();
            // Masked tokens, and ties at the top.
            for _ in 0..len / 10 {
                let i = rng.random_range(0..len);
                logits[i] = f32::NEG_INFINITY;
            }
            logits[0] = 1.0;
            logits[len - 1] = 1.0;
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s = scale([0.3, 1.0, 2.0][case % 3]);
            let k = rng.random_range(1..=len);
            let top = top(&logits, k);
            let kth = top.last().map_or(f32::NEG_INFINITY, |c| c.0);
            let top_mass: f64 = top.iter().map(|c| f64::from(weight(c.0, max, s))).sum();
            let exact: f64 = logits.iter().map(|&x| f64::from(weight(x, max, s))).sum();
            for groups in [maxima(&logits), vec![max; len.div_ceil(GROUP)]] {
                let (low, high) = limits(top_mass, &groups, kth, max, s, len, 0.7);
                assert!(low <= 0.7 * exact, "case {case}: {low} > {}", 0.7 * exact);
                assert!(high >= 0.7 * exact, "case {case}: {high} < {}", 0.7 * exact);
            }
        }
    }

    /// candle's rule with the exact total, written out: a full sort for the top `k`, the total
    /// by the dense pass, then the cut and the draw.
    fn reference(
        logits: &[f32],
        k: usize,
        p: f64,
        s: f32,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> usize {
        let view = crate::native::View::plain(logits);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut top: Vec<(f32, u32)> = top(logits, k)
            .into_iter()
            .map(|(x, i)| (weight(x, max, s), i as u32))
            .collect();
        top.sort_by(crate::native::by_rank);
        let p = f64::from(p as f32);
        let kept = cut(
            top.iter().map(|c| c.0),
            p * crate::native::total_weight(&view, max, s),
        );
        let mass = top
            .iter()
            .take(kept)
            .fold(0.0f64, |m, c| m + f64::from(c.0));
        let target = crate::native::draw::unit(rng) * mass;
        crate::native::walk(top.iter().take(kept).copied(), target).unwrap_or(usize::MAX)
    }

    #[test]
    fn top_k_then_top_p_draws_what_the_exact_total_draws() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let mut work = crate::native::Workspace::default();
        let (mut decided, mut undecided) = (0, 0);
        for case in 0..400u64 {
            let len = rng.random_range(500..20_000);
            // Zipf-like and flat-ish logits, at several temperatures.
            let a = [0.5f32, 1.1, 2.0, 4.0][case as usize % 4];
            let logits: Vec<f32> = (0..len)
                .map(|_| -a * (rng.random_range(1..len) as f32).ln())
                .collect();
            let k = rng.random_range(1..300);
            let p = [0.2, 0.5, 0.9, 0.95, 0.999][case as usize % 5];
            let s = scale([0.7, 1.0, 1.5][case as usize % 3]);
            // Whether the bounds alone decide this case.
            let view = crate::native::View::plain(&logits);
            let (top, max) = crate::native::top_candidates(&mut work, &view, k).unwrap();
            let kth = top.last().unwrap().0;
            let mut weights: Vec<f32> = top.iter().map(|c| weight(c.0, max, s)).collect();
            weights.sort_by(|a, b| b.total_cmp(a));
            let top_mass = weights.iter().map(|&w| f64::from(w)).sum();
            let groups = crate::native::group_maxima(&work, len);
            let (low, high) = limits(top_mass, groups, kth, max, s, len, f64::from(p as f32));
            match decide(weights.iter().copied(), low, high) {
                Some(_) => decided += 1,
                None => undecided += 1,
            }
            let mut a_rng = rand_chacha::ChaCha8Rng::seed_from_u64(case);
            let mut b_rng = a_rng.clone();
            let got = crate::native::top_k_top_p(&mut work, &view, k, p, s, &mut a_rng)
                .unwrap()
                .unwrap();
            assert_eq!(got, reference(&logits, k, p, s, &mut b_rng), "case {case}");
            assert_eq!(a_rng, b_rng, "case {case}: the same random words");
        }
        // Both paths ran.
        assert!(
            decided > 100 && undecided > 20,
            "{decided} decided, {undecided} not"
        );
    }

    #[test]
    fn a_decided_cut_is_the_exact_cut() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let mut decided = 0;
        for _ in 0..20_000 {
            let n = rng.random_range(1..60);
            let weights: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
            let limit = rng.random::<f64>() * weights.iter().map(|&w| f64::from(w)).sum::<f64>();
            let exact = cut(weights.iter().copied(), limit);
            let width = [0.0, 1e-6, 0.01, 0.3][rng.random_range(0..4)];
            let low = limit * (1.0 - width * rng.random::<f64>());
            let high = limit * (1.0 + width * rng.random::<f64>());
            if let Some(kept) = decide(weights.iter().copied(), low, high) {
                decided += 1;
                assert_eq!(kept, exact, "{weights:?} {low} {limit} {high}");
            }
        }
        // Exact bounds always decide; most narrow ones do.
        assert!(decided > 10_000, "{decided}");
        let weights = [0.5f32, 0.3, 0.2];
        assert_eq!(decide(weights.iter().copied(), 0.6, 0.6), Some(2));
        assert_eq!(decide(weights.iter().copied(), 0.6, 0.9), None);
        assert_eq!(decide(weights.iter().copied(), 2.0, 3.0), Some(3));
        assert_eq!(cut(weights.iter().copied(), 0.6), 2);
        assert_eq!(cut(weights.iter().copied(), 0.5), 1);
    }
}
