//! Helpers for the `NativeSampler` tests: an independent reference for the filtered
//! distributions, a chi-square goodness-of-fit test with a properly computed critical value, and
//! logits generators.
#![allow(dead_code)]

use kyutai_sampling::{Sampler, Sampling};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Significance level of every goodness-of-fit test.
pub const ALPHA: f64 = 1e-6;

/// The distribution candle's `LogitsProcessor` samples `sampling` from, computed independently of
/// the engine: a full sort, a softmax and cumulative sums, all in f64.
///
/// Top-k ranks by decreasing logit, top-p by decreasing probability; the lowest index comes
/// first among equals (the documented tie rules). Probabilities that are distinct in f64 but
/// round to the same f32 would rank differently in the engine: the tests avoid them. `p` is
/// rounded to f32, as candle does.
pub fn reference(logits: &[f32], sampling: &Sampling) -> Vec<f64> {
    let n = logits.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
    let temperature = match *sampling {
        Sampling::ArgMax => {
            let mut probs = vec![0.0; n];
            probs[order[0]] = 1.0;
            return probs;
        }
        Sampling::All { temperature }
        | Sampling::GumbelSoftmax { temperature }
        | Sampling::TopK { temperature, .. }
        | Sampling::TopP { temperature, .. }
        | Sampling::TopKThenTopP { temperature, .. } => temperature,
    };
    let max = f64::from(logits[order[0]]);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&x| ((f64::from(x) - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    // Keep the prefix of `candidates`, in rank order by probability, whose preceding mass is
    // below `p * total`.
    let nucleus = |candidates: &[usize], p: f64| -> Vec<usize> {
        let mut ranked = candidates.to_vec();
        ranked.sort_by(|&a, &b| weights[b].partial_cmp(&weights[a]).unwrap().then(a.cmp(&b)));
        let limit = f64::from(p as f32) * total;
        let mut kept = Vec::new();
        let mut before = 0.0;
        for i in ranked {
            if before >= limit {
                break;
            }
            kept.push(i);
            before += weights[i];
        }
        kept
    };
    let kept: Vec<usize> = match *sampling {
        Sampling::All { .. } | Sampling::GumbelSoftmax { .. } => order.clone(),
        Sampling::TopK { k, .. } => order.iter().copied().take(k).collect(),
        Sampling::TopP { p, .. } if p >= 1.0 => order.clone(),
        Sampling::TopP { p, .. } => nucleus(&order, p),
        Sampling::TopKThenTopP { k, p, .. } if k >= n => {
            if p >= 1.0 {
                order.clone()
            } else {
                nucleus(&order, p)
            }
        }
        Sampling::TopKThenTopP { k, p, .. } => nucleus(&order[..k], p),
        Sampling::ArgMax => unreachable!(),
    };
    let mass: f64 = kept.iter().map(|&i| weights[i]).sum();
    let mut probs = vec![0.0; n];
    for i in kept {
        probs[i] = weights[i] / mass;
    }
    probs
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, 9 terms; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised upper incomplete gamma function `Q(a, x)`: a power series for `x < a + 1`,
/// Lentz's continued fraction otherwise (Numerical Recipes' split).
fn upper_gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefactor = -x + a * x.ln() - ln_gamma(a);
    if x < a + 1.0 {
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut n = a;
        for _ in 0..10_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        1.0 - sum * log_prefactor.exp()
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        log_prefactor.exp() * h
    }
}

/// The value a chi-square variable with `df` degrees of freedom exceeds with probability `alpha`
/// (bisection on the survival function `Q(df/2, x/2)`).
pub fn chi_square_critical(df: usize, alpha: f64) -> f64 {
    let a = df as f64 / 2.0;
    let (mut lo, mut hi) = (0.0f64, 10.0 * df as f64 + 200.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if upper_gamma_q(a, mid / 2.0) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Checks that `counts` (draws per token) fit `probs` at level [`ALPHA`], and that no token of
/// probability 0 was drawn. Tokens expected fewer than 5 times are pooled into one bin (merged
/// into the smallest other bin if the pool itself is expected fewer than 5 times).
pub fn assert_fits(counts: &[u64], probs: &[f64], what: &str) {
    assert_eq!(counts.len(), probs.len());
    let draws: u64 = counts.iter().sum();
    for (i, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        assert!(
            p > 0.0 || c == 0,
            "{what}: token {i} has probability 0 but was drawn {c} times"
        );
    }
    let n = draws as f64;
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (observed, expected)
    let mut pool = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        if p == 0.0 {
            continue;
        }
        if p * n >= 5.0 {
            bins.push((c as f64, p * n));
        } else {
            pool.0 += c as f64;
            pool.1 += p * n;
        }
    }
    if pool.1 >= 5.0 {
        bins.push(pool);
    } else if pool.1 > 0.0 || pool.0 > 0.0 {
        if let Some(smallest) = bins
            .iter_mut()
            .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap())
        {
            smallest.0 += pool.0;
            smallest.1 += pool.1;
        } else {
            bins.push(pool);
        }
    }
    if bins.len() < 2 {
        // A single bin: the zero-probability check above is the whole test.
        return;
    }
    let stat: f64 = bins.iter().map(|&(o, e)| (o - e) * (o - e) / e).sum();
    let df = bins.len() - 1;
    let critical = chi_square_critical(df, ALPHA);
    assert!(
        stat < critical,
        "{what}: chi-square {stat:.2} >= critical {critical:.2} (df {df}, alpha {ALPHA:e}, {draws} draws)"
    );
}

/// Draws `n` tokens from `logits` through the host-slice entry point and counts them.
pub fn counts(sampler: &mut dyn Sampler, logits: &[f32], n: usize) -> Vec<u64> {
    let mut counts = vec![0u64; logits.len()];
    for _ in 0..n {
        counts[sampler.sample_slice(logits, &[]).unwrap() as usize] += 1;
    }
    counts
}

/// `len` logits spread over `[-spread, 0]` in a random order, pairwise at least
/// `spread / (4 len)` apart (so no two are tied or nearly tied).
pub fn spread_logits(seed: u64, len: usize, spread: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values: Vec<f32> = (0..len)
        .map(|i| -spread * (i as f32 + 0.25 + 0.5 * rng.random::<f32>()) / len as f32)
        .collect();
    // Fisher-Yates with the same generator.
    for i in (1..len).rev() {
        let j = rng.random_range(0..=i);
        values.swap(i, j);
    }
    values
}

/// Every variant, with parameters that make each filter cut somewhere in the middle of a
/// `spread_logits(.., 120, 8.0)` vocabulary.
pub fn variants() -> Vec<Sampling> {
    vec![
        Sampling::All { temperature: 0.9 },
        Sampling::TopK {
            k: 20,
            temperature: 1.1,
        },
        Sampling::TopP {
            p: 0.8,
            temperature: 0.7,
        },
        Sampling::TopKThenTopP {
            k: 30,
            p: 0.6,
            temperature: 1.3,
        },
        Sampling::GumbelSoftmax { temperature: 1.0 },
    ]
}

/// `sampling` with its temperature replaced by `t` (`ArgMax` has none).
pub fn with_temperature(sampling: &Sampling, t: f64) -> Sampling {
    match *sampling {
        Sampling::ArgMax => Sampling::ArgMax,
        Sampling::All { .. } => Sampling::All { temperature: t },
        Sampling::GumbelSoftmax { .. } => Sampling::GumbelSoftmax { temperature: t },
        Sampling::TopK { k, .. } => Sampling::TopK { k, temperature: t },
        Sampling::TopP { p, .. } => Sampling::TopP { p, temperature: t },
        Sampling::TopKThenTopP { k, p, .. } => Sampling::TopKThenTopP {
            k,
            p,
            temperature: t,
        },
    }
}
