//! [`verify_draft`]: lossless verification of a speculative draft against the target model,
//! through a chain's processing.

use candle_core::{DType, Tensor};

use super::{Chain, Want};
use crate::logits::with_f32_slice;
use crate::native::unit;
use crate::stage::{select, Select};
use crate::SamplingError;

/// The outcome of [`verify_draft`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The accepted draft tokens, then one corrected or bonus token: `accepted + 1` tokens.
    pub tokens: Vec<u32>,
    /// How many draft tokens were accepted.
    pub accepted: usize,
}

/// Verifies `draft` (K tokens proposed by a draft model after `history`) against the target
/// model's logits at the K + 1 positions (`[K + 1, V]`), through `chain`'s processing.
/// `draft_probs`: the draft model's processed distributions (K rows of V), or None for a
/// deterministic drafter (n-gram, prompt lookup).
///
/// The emitted tokens are distributed exactly as sequential sampling from the chain would
/// draw them.
///
/// # The rule
///
/// Leviathan et al.'s speculative sampling. At draft position `i`, `p_i` is the chain's
/// processed target distribution ([`Chain::probabilities`]) after the history and the draft
/// tokens accepted so far (so penalties and other history-dependent stages see that prefix),
/// and `q_i` the drafter's distribution. Draft token `x` is accepted with probability
/// `min(1, p_i(x) / q_i(x))`; at the first rejection the emitted token is drawn from
/// `norm(max(p_i − q_i, 0))` and verification stops; when all `K` are accepted, a bonus token
/// is drawn from `p_{K+1}`. Each emitted token is then distributed exactly as if the target
/// had been sampled one position at a time. A deterministic drafter (n-gram, prompt lookup)
/// passes no `draft_probs`: `q_i` is the point mass on its token, so `x` is accepted with
/// probability `p_i(x)`, and a rejection draws from `p_i` without `x`.
///
/// # Random numbers
///
/// Acceptance tests and the draws come from the chain's own stream, so a seeded chain verifies
/// reproducibly. A greedy chain (`do_sample` false, or temperature 0 under llama.cpp's convention) draws none: it accepts a draft token exactly
/// when it is the chain's choice.
///
/// # Errors
///
/// Every row is validated, also those after a rejection. [`SamplingError::DraftMismatch`] when
/// `target_logits` does not have `K + 1` rows (`[K + 1, V]` or `[K + 1, 1, V]`), or
/// `draft_probs` does not have `K` rows of `V`;
/// [`SamplingError::TokenOutOfVocab`] for a draft token outside the vocabulary;
/// [`SamplingError::DraftProbability`] when a draft token's `q` is not positive and finite, or a
/// `q` value the residual reads is negative or NaN; [`SamplingError::InvalidConfig`] for a
/// mirostat chain (its `μ` makes each distribution depend on the previous draw's probability,
/// which verification cannot replay); and the chain's own errors for each row.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kyutai_sampling::{verify_draft, ChainConfig};
///
/// let mut chain = ChainConfig { do_sample: false, ..ChainConfig::default() }.build()?;
/// // The target's choices at the three positions are 1, 2, 0.
/// let target = Tensor::new(&[[0.0f32, 9.0, 0.0], [0.0, 0.0, 9.0], [9.0, 0.0, 0.0]], &Device::Cpu)?;
/// let verified = verify_draft(&mut chain, &target, &[], &[1, 0], None)?;
/// assert_eq!((verified.tokens, verified.accepted), (vec![1, 2], 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_draft(
    chain: &mut Chain,
    target_logits: &Tensor,
    history: &[u32],
    draft: &[u32],
    draft_probs: Option<&[Vec<f32>]>,
) -> Result<Verified, SamplingError> {
    let k = draft.len();
    let (rows, vocab) = match *target_logits.dims() {
        [r, v] | [r, 1, v] => (r, v),
        _ => {
            return Err(SamplingError::InvalidShape {
                shape: target_logits.dims().to_vec(),
            })
        }
    };
    if rows != k.saturating_add(1) {
        return Err(SamplingError::DraftMismatch {
            what: "target_logits",
            expected: k.saturating_add(1),
            got: rows,
        });
    }
    if vocab == 0 {
        return Err(SamplingError::EmptyLogits);
    }
    if let Some(q) = draft_probs {
        if q.len() != k {
            return Err(SamplingError::DraftMismatch {
                what: "draft_probs",
                expected: k,
                got: q.len(),
            });
        }
        if let Some(row) = q.iter().find(|row| row.len() != vocab) {
            return Err(SamplingError::DraftMismatch {
                what: "draft_probs row",
                expected: vocab,
                got: row.len(),
            });
        }
    }
    if let Some(&token) = draft.iter().find(|&&t| t as usize >= vocab) {
        return Err(SamplingError::TokenOutOfVocab {
            list: "draft",
            token,
            vocab,
        });
    }
    // Every draft token's own probability, before any row is processed.
    if let Some(q) = draft_probs {
        for (position, (&token, row)) in draft.iter().zip(q).enumerate() {
            let probability = row.get(token as usize).copied().unwrap_or(0.0);
            if !(probability > 0.0 && probability.is_finite()) {
                return Err(SamplingError::DraftProbability {
                    position,
                    token,
                    probability,
                });
            }
        }
    }
    if matches!(chain.plan.select, Select::Mirostat { .. }) {
        return Err(SamplingError::config(
            "mirostat",
            "draft verification needs distributions that do not depend on earlier draws; \
             mirostat's surprise bound does",
        ));
    }
    let dtype = target_logits.dtype();
    if !matches!(dtype, DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
        return Err(SamplingError::UnsupportedDType(dtype));
    }

    let mut host = std::mem::take(&mut chain.work.host);
    let mut hist = std::mem::take(&mut chain.work.draft_history);
    hist.clear();
    hist.extend_from_slice(history);
    let run = |values: &[f32]| verify_rows(chain, values, vocab, &mut hist, draft, draft_probs);
    let result = if dtype == DType::F32 {
        with_f32_slice(target_logits, &mut host, run)
    } else {
        with_f32_slice(&target_logits.to_dtype(DType::F32)?, &mut host, run)
    };
    chain.work.host = host;
    chain.work.draft_history = hist;
    result
}

/// The verification proper, on the host copy of the `K + 1` rows.
fn verify_rows(
    chain: &mut Chain,
    values: &[f32],
    vocab: usize,
    hist: &mut Vec<u32>,
    draft: &[u32],
    draft_probs: Option<&[Vec<f32>]>,
) -> Result<Verified, SamplingError> {
    let mut rows = values.chunks_exact(vocab);
    // The rows after position i.
    let rest = |i: usize| {
        values
            .get((i + 1).saturating_mul(vocab)..)
            .unwrap_or_default()
            .chunks_exact(vocab)
    };
    let mut tokens = Vec::with_capacity(draft.len() + 1);
    let greedy = matches!(chain.plan.select, Select::Greedy);
    for (i, (&x, row)) in draft.iter().zip(&mut rows).enumerate() {
        let q_row = draft_probs.and_then(|q| q.get(i)).map(Vec::as_slice);
        // q(y): the drafter's probability of `y` (the point mass on `x` without `draft_probs`).
        let q = |y: u32| match q_row {
            Some(q) => q.get(y as usize).copied().unwrap_or(0.0),
            None => f32::from(u8::from(y == x)),
        };
        let q_x = q(x);
        if !(q_x > 0.0 && q_x.is_finite()) {
            return Err(SamplingError::DraftProbability {
                position: i,
                token: x,
                probability: q_x,
            });
        }
        if greedy {
            // p is the point mass on the chain's choice g: x is accepted exactly when x = g,
            // and otherwise norm(max(p − q, 0)) is the point mass on g.
            let g = chain.run(row, &[], hist, Want::Draw)?.token;
            if g != x {
                tokens.push(g);
                check_rest(rest(i))?;
                return Ok(Verified {
                    tokens,
                    accepted: i,
                });
            }
        } else {
            chain.run(row, &[], hist, Want::Candidates)?;
            let u = unit(&mut chain.rng);
            let (items, probs) = chain.work.cands.with_probs();
            let p_x = items
                .iter()
                .position(|c| c.1 == x)
                .and_then(|j| probs.get(j).copied())
                .unwrap_or(0.0);
            // Accept with probability min(1, p/q).
            if u * f64::from(q_x) >= p_x {
                // The residual norm(max(p − q, 0)) is 0 outside the candidates, where p is.
                let scratch = &mut chain.work.residual;
                scratch.clear();
                for (&(_, y), &p) in items.iter().zip(probs) {
                    let q_y = q(y);
                    if q_y.is_nan() || q_y < 0.0 {
                        return Err(SamplingError::DraftProbability {
                            position: i,
                            token: y,
                            probability: q_y,
                        });
                    }
                    scratch.push((p - f64::from(q_y)).max(0.0));
                }
                let u = unit(&mut chain.rng);
                // Rounding can leave no positive residual when p and q nearly agree; p is the
                // residual's limit there.
                let index = if scratch.iter().any(|&r| r > 0.0) {
                    select::draw(scratch, u)
                } else {
                    select::draw(probs, u)
                };
                let token = index
                    .and_then(|j| items.get(j))
                    .map(|c| c.1)
                    .ok_or(SamplingError::AllMasked)?;
                tokens.push(token);
                check_rest(rest(i))?;
                return Ok(Verified {
                    tokens,
                    accepted: i,
                });
            }
        }
        tokens.push(x);
        hist.push(x);
    }
    // Every draft token accepted: the bonus token from the last row.
    let last = rows.next().ok_or(SamplingError::DraftMismatch {
        what: "target_logits",
        expected: draft.len() + 1,
        got: draft.len(),
    })?;
    let bonus = chain.run(last, &[], hist, Want::Draw)?.token;
    tokens.push(bonus);
    Ok(Verified {
        tokens,
        accepted: draft.len(),
    })
}

/// Validates the rows a rejection left unread: bad logits anywhere in the target's output are
/// an error, not only where verification happened to look.
fn check_rest<'a>(rows: impl Iterator<Item = &'a [f32]>) -> Result<(), SamplingError> {
    for row in rows {
        match crate::logits::validate_logits(row) {
            Ok(()) | Err(SamplingError::AllMasked) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
