//! Choosing one token: [`sample_logits`], the only place where this crate asks a [`Sampler`]
//! for a token, and the model's sampling entry points built on it
//! ([`LmModel::sample_from_logits`], [`LmModel::depformer_sample`],
//! [`LmModel::depformer_sample_cfg`]), which live here, with the generation layer, rather than
//! in the model.

use candle_core::{DType, Tensor};
use kyutai_sampling::{RepetitionPenalty, Sampler, SamplingError};

use crate::error::check_tokens;
use crate::model::guidance::check_float;
use crate::{Error, LmModel, Result};

/// Samples one token from `logits` through `sampler`.
///
/// `logits` hold one row: shape `[V]`, `[1, V]`, `[1, 1, V]`, ... (every dimension but the last
/// of size 1), any float dtype and device. The sampler receives them as a 1-D f32 tensor of
/// length `V`, with `history`; the token it returns is checked to be `< V`.
///
/// # Errors
///
/// [`Error::InvalidInput`] for logits with several rows or an integer dtype,
/// [`Error::Sampling`] for what the sampler reports (NaN logits, ...), and
/// [`Error::TokenOutOfRange`] when the sampler returns a token outside the logits.
pub fn sample_logits(logits: &Tensor, sampler: &mut dyn Sampler, history: &[u32]) -> Result<u32> {
    let logits = single_row(logits)?;
    let vocab = logits.dim(0)?;
    let token = sampler.sample(&logits, history)?;
    check_tokens(&[token], "the sampler's output", vocab)?;
    Ok(token)
}

/// `logits` as a 1-D f32 tensor, when they hold a single row.
pub(crate) fn single_row(logits: &Tensor) -> Result<Tensor> {
    let dims = logits.dims();
    let Some((&vocab, leading)) = dims.split_last() else {
        return Err(Error::input("logits", "must have at least one dimension"));
    };
    if leading.iter().any(|&d| d != 1) {
        return Err(Error::input(
            "logits",
            format!("must hold a single row of logits (every dimension but the last of size 1), got {dims:?}"),
        ));
    }
    check_float(logits)?;
    Ok(logits.reshape(vocab)?.to_dtype(DType::F32)?)
}

/// Moshi's text choice with its optional repetition penalty and pad bias, through `sampler`.
///
/// `logits` is one row of text logits (1-D f32, any device), read into host memory once. The
/// penalty is [`RepetitionPenalty`]'s windowed rule over `penalised_history` (the caller's text
/// history with the special tokens left out, so a special token is never penalised); the bias
/// is then added to the pad token's logit, passed to the sampler as one sparse edit through
/// [`Sampler::sample_edited`] (decorators merge it with their own edits). The sampler itself
/// sees `history`, the full text history. Without a penalty (or a penalty of 1) and without a
/// bias, the logits go to the sampler as they are.
///
/// # Errors
///
/// [`Error::Sampling`] for what the sampler reports, [`Error::TokenOutOfRange`] when it returns
/// a token outside the logits.
pub(crate) fn sample_text(
    logits: &Tensor,
    sampler: &mut dyn Sampler,
    history: &[u32],
    penalty: Option<TextPenalty<'_>>,
    pad_bias: Option<(u32, f32)>,
) -> Result<u32> {
    let penalty = penalty.filter(|p| p.penalty != 1.0);
    if penalty.is_none() && pad_bias.is_none() {
        return sample_logits(logits, sampler, history);
    }
    let values = single_row(logits)?.to_vec1::<f32>()?;
    let vocab = values.len();
    let edits: Vec<(u32, f32)> = pad_bias
        .and_then(|(pad, bias)| Some((pad, values.get(pad as usize)? + bias)))
        .into_iter()
        .collect();
    let mut sampler = WithHistory { sampler, history };
    let token = match penalty {
        Some(p) => RepetitionPenalty::new(&mut sampler, p.penalty, p.context_size)?
            .sample_edited(&values, &edits, p.history)?,
        None => sampler.sample_edited(&values, &edits, history)?,
    };
    check_tokens(&[token], "the sampler's output", vocab)?;
    Ok(token)
}

/// A text repetition penalty for [`sample_text`]: `penalty` over the distinct tokens among the
/// last `context_size` entries of `history`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextPenalty<'a> {
    pub(crate) penalty: f32,
    pub(crate) context_size: usize,
    pub(crate) history: &'a [u32],
}

/// A sampler that always sees `history`, whatever history its caller passes: the penalty
/// decorator looks at the filtered history, the sampler under it at the full one.
struct WithHistory<'a> {
    sampler: &'a mut dyn Sampler,
    history: &'a [u32],
}

impl Sampler for WithHistory<'_> {
    fn sample(&mut self, logits: &Tensor, _: &[u32]) -> std::result::Result<u32, SamplingError> {
        self.sampler.sample(logits, self.history)
    }

    fn reset(&mut self) {
        self.sampler.reset();
    }

    fn sample_slice(
        &mut self,
        logits: &[f32],
        _: &[u32],
    ) -> std::result::Result<u32, SamplingError> {
        self.sampler.sample_slice(logits, self.history)
    }

    fn sample_edited(
        &mut self,
        logits: &[f32],
        edits: &[(u32, f32)],
        _: &[u32],
    ) -> std::result::Result<u32, SamplingError> {
        self.sampler.sample_edited(logits, edits, self.history)
    }
}

impl LmModel {
    /// Turns one row of logits into a token through `sampler`, given the stream's `history`:
    /// the one place where this model's text tokens are chosen (the depformer uses the same
    /// path). See [`sample_logits`](crate::sample_logits) for the accepted shapes.
    ///
    /// ```
    /// use candle_core::{DType, Device};
    /// use kyutai::{LmConfig, LmModel};
    /// use kyutai_sampling::SamplingConfig;
    ///
    /// // A small model with the layout of Moshi (random weights: its output is noise).
    /// let mut config = LmConfig::moshi_7b_v0_1();
    /// (config.transformer.d_model, config.transformer.num_heads, config.transformer.num_layers) = (32, 2, 1);
    /// let depformer = config.depformer.as_mut().unwrap();
    /// (depformer.transformer.d_model, depformer.transformer.num_heads, depformer.transformer.num_layers) = (16, 2, 1);
    /// (config.text_in_vocab_size, config.text_out_vocab_size, config.audio_vocab_size) = (101, 100, 33);
    /// let mut model = LmModel::random(&config, 42, DType::F32, &Device::Cpu)?;
    ///
    /// let mut text_sampler = SamplingConfig::greedy().build()?;
    /// let mut audio_sampler = SamplingConfig::greedy().build()?;
    /// let pads = [model.audio_pad_token()];
    /// let audio = vec![Some(&pads[..]); model.in_audio_codebooks()];
    /// let (logits, hidden) = model.forward_tokens(Some(&[model.text_start_token()]), &audio)?;
    /// let text = model.sample_from_logits(&logits, text_sampler.as_mut(), &[])?;
    /// let mut histories = vec![Vec::new(); model.generated_audio_codebooks()];
    /// let audio_tokens = model.depformer_sample(&hidden, Some(text), &[], audio_sampler.as_mut(), &mut histories)?;
    /// assert_eq!(audio_tokens.len(), 8);
    /// assert!(audio_tokens.iter().all(|&t| t < model.audio_pad_token()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`sample_logits`](crate::sample_logits).
    pub fn sample_from_logits(
        &self,
        logits: &Tensor,
        sampler: &mut dyn Sampler,
        history: &[u32],
    ) -> Result<u32> {
        sample_logits(logits, sampler, history)
    }

    /// Runs the depformer on `hidden` (the `[1, 1, d_model]` output of [`forward`](LmModel::forward)
    /// for one step) and samples one token per generated codebook, in order, through `sampler`.
    ///
    /// Slice 0 reads `text_token` (the step's text token; `None` adds no embedding); slice
    /// `k > 0` reads the token of codebook `k - 1`, or `forced_audio_tokens[k - 1]` when that is
    /// set (moshi forces pads before the acoustic delay). `forced_audio_tokens` may be shorter
    /// than the number of codebooks. Codebook `k`'s logits reach the sampler as a 1-D f32
    /// tensor of `audio_vocab_size - 1` entries with history `histories[k]`, to which the
    /// sampled token is then appended. Returns the sampled tokens (not the forced ones).
    ///
    /// # Errors
    ///
    /// [`Error::NoDepformer`]; [`Error::InvalidInput`] for a `hidden` that is not one row of
    /// one step, `histories` of the wrong length or too many forced tokens;
    /// [`Error::TokenOutOfRange`] for a text or forced token outside its embedding; the
    /// sampler's errors.
    pub fn depformer_sample(
        &mut self,
        hidden: &Tensor,
        text_token: Option<u32>,
        forced_audio_tokens: &[Option<u32>],
        sampler: &mut dyn Sampler,
        histories: &mut [Vec<u32>],
    ) -> Result<Vec<u32>> {
        self.depformer_sample_guided(
            hidden,
            None,
            text_token,
            forced_audio_tokens,
            sampler,
            histories,
        )
    }

    /// [`depformer_sample`](Self::depformer_sample) with classifier-free guidance: `hidden` holds
    /// two rows (`[2, 1, d_model]`, the conditioned stream first), both rows run through every
    /// slice, and each codebook is sampled from `cfg_alpha * cond - (cfg_alpha - 1) * uncond`
    /// (moshi's `depformer_sample_cfg`). Both rows read the same text and audio tokens.
    ///
    /// # Errors
    ///
    /// As `depformer_sample`, and [`Error::InvalidInput`] for a non-finite `cfg_alpha`.
    pub fn depformer_sample_cfg(
        &mut self,
        hidden: &Tensor,
        cfg_alpha: f64,
        text_token: Option<u32>,
        forced_audio_tokens: &[Option<u32>],
        sampler: &mut dyn Sampler,
        histories: &mut [Vec<u32>],
    ) -> Result<Vec<u32>> {
        self.depformer_sample_guided(
            hidden,
            Some(cfg_alpha),
            text_token,
            forced_audio_tokens,
            sampler,
            histories,
        )
    }

    fn depformer_sample_guided(
        &mut self,
        hidden: &Tensor,
        cfg_alpha: Option<f64>,
        text_token: Option<u32>,
        forced_audio_tokens: &[Option<u32>],
        sampler: &mut dyn Sampler,
        histories: &mut [Vec<u32>],
    ) -> Result<Vec<u32>> {
        let codebooks = self.generated_audio_codebooks();
        if codebooks == 0 {
            return Err(Error::NoDepformer);
        }
        if histories.len() != codebooks {
            return Err(Error::input(
                "histories",
                format!(
                    "must hold one history per generated codebook ({codebooks}), got {}",
                    histories.len()
                ),
            ));
        }
        self.depformer_step_with(
            hidden,
            text_token,
            forced_audio_tokens,
            cfg_alpha,
            |k, logits| {
                let history = histories.get_mut(k).ok_or_else(|| {
                    Error::input("histories", format!("has no entry for codebook {k}"))
                })?;
                let token = sample_logits(logits, sampler, history)?;
                history.push(token);
                Ok(token)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use kyutai_sampling::SamplingConfig;

    /// What a sampler was given.
    #[derive(Debug, PartialEq)]
    struct Call {
        dims: Vec<usize>,
        dtype: DType,
        values: Vec<f32>,
        history: Vec<u32>,
    }

    /// Records what it is given and returns a fixed token.
    struct Recorder {
        token: u32,
        seen: Vec<Call>,
    }

    impl Sampler for Recorder {
        fn sample(
            &mut self,
            logits: &Tensor,
            history: &[u32],
        ) -> std::result::Result<u32, SamplingError> {
            self.seen.push(Call {
                dims: logits.dims().to_vec(),
                dtype: logits.dtype(),
                values: logits.to_vec1::<f32>()?,
                history: history.to_vec(),
            });
            Ok(self.token)
        }
    }

    #[test]
    fn the_sampler_gets_one_dimensional_f32_logits_and_the_history() {
        let logits = Tensor::new(&[[[1.0f32, 3.0, 2.0]]], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let mut recorder = Recorder {
            token: 2,
            seen: vec![],
        };
        assert_eq!(sample_logits(&logits, &mut recorder, &[7, 8]).unwrap(), 2);
        assert_eq!(
            recorder.seen,
            vec![Call {
                dims: vec![3],
                dtype: DType::F32,
                values: vec![1.0, 3.0, 2.0],
                history: vec![7, 8]
            }]
        );
    }

    #[test]
    fn greedy_sampling_through_the_trait_takes_the_largest_logit() {
        let mut greedy = SamplingConfig::greedy().build().unwrap();
        let logits = Tensor::new(&[[0.5f32, -1.0, 4.0, 3.9]], &Device::Cpu).unwrap();
        assert_eq!(sample_logits(&logits, greedy.as_mut(), &[]).unwrap(), 2);
    }

    #[test]
    fn a_sampler_returning_a_token_outside_the_logits_is_an_error() {
        let logits = Tensor::new(&[0.0f32, 1.0], &Device::Cpu).unwrap();
        let mut recorder = Recorder {
            token: 2,
            seen: vec![],
        };
        assert!(matches!(
            sample_logits(&logits, &mut recorder, &[]),
            Err(Error::TokenOutOfRange {
                token: 2,
                vocab_size: 2,
                ..
            })
        ));
    }

    #[test]
    fn several_rows_or_integer_logits_are_errors() {
        let mut recorder = Recorder {
            token: 0,
            seen: vec![],
        };
        let rows = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&rows, &mut recorder, &[]),
            Err(Error::InvalidInput { .. })
        ));
        let ints = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&ints, &mut recorder, &[]),
            Err(Error::InvalidInput { .. })
        ));
        let scalar = Tensor::new(1.0f32, &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&scalar, &mut recorder, &[]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(recorder.seen.is_empty());
    }

    #[test]
    fn sampler_errors_are_reported() {
        let mut greedy = SamplingConfig::greedy().build().unwrap();
        let nan = Tensor::new(&[0.0f32, f32::NAN], &Device::Cpu).unwrap();
        assert!(matches!(
            sample_logits(&nan, greedy.as_mut(), &[]),
            Err(Error::Sampling(_))
        ));
    }

    fn recorder() -> Recorder {
        Recorder {
            token: 1,
            seen: vec![],
        }
    }

    /// Moshi's rule, written out: the distinct tokens among the last `context` entries of
    /// `window`, each divided by `penalty` (multiplied when negative).
    fn penalised(logits: &[f32], window: &[u32], context: usize, penalty: f32) -> Vec<f32> {
        let mut out = logits.to_vec();
        let mut last: Vec<u32> = window.iter().rev().take(context).copied().collect();
        last.sort_unstable();
        last.dedup();
        for t in last {
            if let Some(x) = out.get_mut(t as usize) {
                *x = if *x >= 0.0 {
                    *x / penalty
                } else {
                    *x * penalty
                };
            }
        }
        out
    }

    #[test]
    fn the_text_penalty_and_pad_bias_edit_the_logits_the_sampler_sees() {
        let values = [2.0f32, -1.0, 0.5, 3.0, 1.5, -0.25, 0.0, 4.0];
        let logits = Tensor::new(&values[..], &Device::Cpu).unwrap();
        let full = [1u32, 3, 2, 2, 0, 5, 7, 4, 3, 9, 1, 6];
        // The caller's history without the specials 3 (pad), 0 and 7.
        let kept: Vec<u32> = full
            .iter()
            .copied()
            .filter(|t| ![3, 0, 7].contains(t))
            .collect();
        for context in [0usize, 1, 3, 5, 12] {
            let mut rec = recorder();
            let penalty = TextPenalty {
                penalty: 1.7,
                context_size: context,
                history: &kept,
            };
            let token = sample_text(&logits, &mut rec, &full, Some(penalty), Some((3, 0.75)));
            assert_eq!(token.unwrap(), 1);
            let mut want = penalised(&values, &kept, context, 1.7);
            want[3] += 0.75; // the bias, on a pad that is never penalised
            assert_eq!(rec.seen.len(), 1);
            assert_eq!(rec.seen[0].values, want, "context {context}");
            assert_eq!(
                rec.seen[0].history,
                full.to_vec(),
                "the sampler sees the full history"
            );
        }
        // Repeated tokens count towards the window: context 2 over [.., 5, 5] is {5}.
        let mut rec = recorder();
        let five = TextPenalty {
            penalty: 2.0,
            context_size: 2,
            history: &[1, 5, 5],
        };
        sample_text(&logits, &mut rec, &[], Some(five), None).unwrap();
        assert_eq!(rec.seen[0].values, penalised(&values, &[5], 1, 2.0));
    }

    #[test]
    fn without_penalty_or_bias_the_logits_reach_the_sampler_untouched() {
        let logits = Tensor::new(&[[0.5f32, -2.0, 1.0]], &Device::Cpu).unwrap();
        let one = TextPenalty {
            penalty: 1.0,
            context_size: 8,
            history: &[0, 1, 2],
        };
        for penalty in [None, Some(one)] {
            let mut rec = recorder();
            sample_text(&logits, &mut rec, &[2, 2], penalty, None).unwrap();
            assert_eq!(rec.seen[0].values, vec![0.5, -2.0, 1.0]);
            assert_eq!(rec.seen[0].history, vec![2, 2]);
        }
        // A bias on a token beyond the logits changes nothing.
        let mut rec = recorder();
        sample_text(&logits, &mut rec, &[], None, Some((9, 5.0))).unwrap();
        assert_eq!(rec.seen[0].values, vec![0.5, -2.0, 1.0]);
        // The sampler's token is checked against the logits.
        let mut rec = Recorder {
            token: 3,
            seen: vec![],
        };
        assert!(matches!(
            sample_text(&logits, &mut rec, &[], None, Some((0, 1.0))),
            Err(Error::TokenOutOfRange { token: 3, .. })
        ));
    }
}
