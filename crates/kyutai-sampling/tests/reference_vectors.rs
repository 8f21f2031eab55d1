//! Conformance with the libraries' own test vectors.
//!
//! `fixtures/reference/hf_vectors.json` is transcribed from transformers'
//! `tests/generation/test_logits_process.py`, `fixtures/reference/llamacpp_vectors.json` from
//! llama.cpp's `tests/test-sampling.cpp` (schema: `fixtures/reference/README.md`). Each vector
//! is run through [`Chain::probabilities`](kyutai_sampling::Chain::probabilities) with the [`ChainConfig`] of that processor alone, in
//! the library's convention:
//!
//! * HF: the kept set must match exactly (an entry equal to the processor's `filter_value` is
//!   removed, every other entry kept) and the probabilities must equal the softmax of the
//!   expected scores over the kept entries, to [`HF_TOL`].
//! * llama.cpp: `expected_probs_by_id` to the vector's `atol` (renormalised first when
//!   `dist_applied_after` is false); ids missing from it must have probability 0.
//!
//! Each family of processors is one test that runs all its vectors and reports every failing
//! vector together (processor, parameters, row, input, expected, got). Processors this crate
//! does not build are skipped with a reason ([`hf_skip_reason`], [`llamacpp_skip_reason`]);
//! [`every_vector_is_run_or_skipped_with_a_reason`] checks that no vector falls through.
//!
//! Two vectors are judged specially, each saying so on stderr:
//! * the top-p row marked `boundary_sensitive` (mass `0.5 + 0.3` against `top_p = 0.8`, equal to
//!   within f32 rounding) also passes as the nucleus of `top_p ± 1e-6` ([`boundary_alternative`]);
//! * a llama.cpp `min_p` above 1, outside the range [`ChainConfig`] documents, must be rejected
//!   by `build` with an error naming `min_p`, and is then skipped ([`out_of_range`]); should the
//!   chain accept it, the vector runs.

use kyutai_sampling::{ChainConfig, Convention, SamplingError};
use serde_json::Value;

const HF_JSON: &str = include_str!("fixtures/reference/hf_vectors.json");
const LLAMACPP_JSON: &str = include_str!("fixtures/reference/llamacpp_vectors.json");

/// Tolerance on the probabilities of the HF vectors (the chain computes in f64 from the same f32
/// scores, so the difference is rounding only).
const HF_TOL: f64 = 1e-5;

/// Expected probabilities below this may underflow to 0 in the f32 output: such an entry counts
/// as kept whatever its output.
const UNDERFLOW: f64 = 1e-30;

fn hf_vectors() -> Vec<Value> {
    serde_json::from_str(HF_JSON).expect("hf_vectors.json parses")
}

fn llamacpp_vectors() -> Vec<Value> {
    serde_json::from_str(LLAMACPP_JSON).expect("llamacpp_vectors.json parses")
}

/// What running one vector gave.
enum Outcome {
    Pass,
    Skip(String),
    Fail(String),
}

// ---------------------------------------------------------------------------------------------
// Reading the JSON.

/// A number, or one of the strings `"-inf"`, `"inf"`, `"nan"`.
fn number(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not an f64")),
        Value::String(s) => match s.as_str() {
            "-inf" => Ok(f64::NEG_INFINITY),
            "inf" => Ok(f64::INFINITY),
            "nan" => Ok(f64::NAN),
            other => Err(format!("{other:?} is not a number")),
        },
        other => Err(format!("{other} is not a number")),
    }
}

fn f32_row(v: &Value) -> Result<Vec<f32>, String> {
    v.as_array()
        .ok_or_else(|| format!("{v} is not a row"))?
        .iter()
        .map(|x| number(x).map(|x| x as f32))
        .collect()
}

fn f64_row(v: &Value) -> Result<Vec<f64>, String> {
    v.as_array()
        .ok_or_else(|| format!("{v} is not a row"))?
        .iter()
        .map(number)
        .collect()
}

fn id(v: &Value) -> Result<u32, String> {
    v.as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(|| format!("{v} is not a token id"))
}

fn ids(v: &Value) -> Result<Vec<u32>, String> {
    v.as_array()
        .ok_or_else(|| format!("{v} is not a list of ids"))?
        .iter()
        .map(id)
        .collect()
}

/// `7` or `[7, 8]`.
fn one_or_many_ids(v: &Value) -> Result<Vec<u32>, String> {
    if v.is_array() {
        ids(v)
    } else {
        Ok(vec![id(v)?])
    }
}

fn usize_of(v: &Value) -> Result<usize, String> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| format!("{v} is not a non-negative integer"))
}

/// The vector's parameters, each read at most once: [`Params::finish`] fails on any left over,
/// so that no parameter of a vector is silently ignored.
struct Params(serde_json::Map<String, Value>);

impl Params {
    fn of(vector: &Value) -> Self {
        Self(vector["params"].as_object().cloned().unwrap_or_default())
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    fn f32(&mut self, name: &str) -> Result<f32, String> {
        let v = self
            .take(name)
            .ok_or_else(|| format!("missing parameter {name}"))?;
        number(&v).map(|x| x as f32)
    }

    fn usize(&mut self, name: &str) -> Result<usize, String> {
        let v = self
            .take(name)
            .ok_or_else(|| format!("missing parameter {name}"))?;
        usize_of(&v)
    }

    fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            let names: Vec<&String> = self.0.keys().collect();
            Err(format!("parameters not mapped to the config: {names:?}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison and reports.

/// Softmax of `scores` over the entries where `kept` holds, 0 elsewhere, in f64.
fn softmax_kept(scores: &[f64], kept: &[bool]) -> Vec<f64> {
    let max = scores
        .iter()
        .zip(kept)
        .filter(|&(_, &k)| k)
        .fold(f64::NEG_INFINITY, |m, (&x, _)| m.max(x));
    let weights: Vec<f64> = scores
        .iter()
        .zip(kept)
        .map(|(&x, &k)| if k { (x - max).exp() } else { 0.0 })
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

/// Every mismatch between `got` and `want` (probabilities): a token in `removed` with a
/// probability, a kept token with an expected probability of at least [`UNDERFLOW`] and none in
/// `got`, a probability off by more than `tol`.
fn mismatches(got: &[f32], want: &[f64], removed: &[bool], tol: f64) -> Vec<String> {
    if got.len() != want.len() {
        return vec![format!(
            "{} probabilities for {} tokens",
            got.len(),
            want.len()
        )];
    }
    let mut out = Vec::new();
    for (i, ((&g, &w), &r)) in got.iter().zip(want).zip(removed).enumerate() {
        let g64 = f64::from(g);
        if r && g != 0.0 {
            out.push(format!("token {i} should be removed, has p = {g:e}"));
        } else if !r && w >= UNDERFLOW && g == 0.0 {
            out.push(format!(
                "token {i} should be kept (p = {w:.7}), was removed"
            ));
        } else if (g64 - w).abs() > tol {
            out.push(format!(
                "token {i}: p = {g:.7}, expected {w:.7} (off by {:e})",
                (g64 - w).abs()
            ));
        }
    }
    out
}

fn fmt_probs(p: impl IntoIterator<Item = f64>) -> String {
    let items: Vec<String> = p.into_iter().map(|x| format!("{x:.6}")).collect();
    format!("[{}]", items.join(", "))
}

/// Runs every vector of `vectors` for which `select` holds and panics with the report of every
/// failure. Returns (passed, skipped) for the caller's own checks.
fn run_family(
    family: &str,
    vectors: &[Value],
    select: impl Fn(&Value) -> bool,
    run: impl Fn(&Value) -> Outcome,
) -> (usize, usize) {
    let mut passed = 0;
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    for (index, vector) in vectors.iter().enumerate().filter(|(_, v)| select(v)) {
        match run(vector) {
            Outcome::Pass => passed += 1,
            Outcome::Skip(reason) => skipped.push(format!("#{index}: {reason}")),
            Outcome::Fail(report) => failed.push(format!("vector #{index} {report}")),
        }
    }
    assert!(
        passed + skipped.len() + failed.len() > 0,
        "{family}: no vector selected"
    );
    for skip in &skipped {
        eprintln!("{family}: skipped {skip}");
    }
    assert!(
        failed.is_empty(),
        "{family}: {} of {} vectors failed ({passed} passed, {} skipped):\n\n{}",
        failed.len(),
        passed + skipped.len() + failed.len(),
        skipped.len(),
        failed.join("\n\n")
    );
    (passed, skipped.len())
}

// ---------------------------------------------------------------------------------------------
// transformers.

/// Why a HF vector is not run, if it is not.
fn hf_skip_reason(vector: &Value) -> Option<String> {
    let processor = vector["processor"].as_str().unwrap_or_default();
    let reason = match processor {
        "TopHLogitsWarper" => "TopH (arXiv 2509.02510) is not a stage of the chain",
        "InfNanRemoveLogitsProcessor" => {
            "InfNan removal is not a stage: the chain rejects NaN and +inf logits as errors"
        }
        "BarkEosPrioritizerLogitsProcessor" => "Bark's EOS prioritiser is model-specific",
        "DiaClassifierFreeGuidanceLogitsProcessor" => {
            "Dia's classifier-free guidance needs two batches of logits"
        }
        "RepetitionPenaltyLogitsProcessor"
            if vector["params"].get("prompt_ignore_length").is_some() =>
        {
            "repetition penalty's prompt_ignore_length is not a config field (pass only the \
             generated ids as history to reproduce it)"
        }
        _ => return None,
    };
    Some(format!("{processor}: {reason}"))
}

/// The chain of one HF processor alone, and its `filter_value`.
fn hf_config(vector: &Value) -> Result<(ChainConfig, f64), String> {
    let processor = vector["processor"].as_str().unwrap_or_default();
    let mut params = Params::of(vector);
    let filter_value = match params.take("filter_value") {
        Some(v) => number(&v)?,
        None => f64::NEG_INFINITY,
    };
    let mut config = ChainConfig {
        convention: Convention::HuggingFace,
        ..ChainConfig::default()
    };
    if let Some(v) = params.take("min_tokens_to_keep") {
        config.min_keep = usize_of(&v)?;
    }
    match processor {
        "RepetitionPenaltyLogitsProcessor" => {
            config.repetition_penalty = params.f32("penalty")?;
        }
        "TopKLogitsWarper" => config.top_k = params.usize("top_k")?,
        "TopPLogitsWarper" => config.top_p = params.f32("top_p")?,
        "MinPLogitsWarper" => config.min_p = params.f32("min_p")?,
        "TypicalLogitsWarper" => config.typical_p = params.f32("mass")?,
        "EpsilonLogitsWarper" => config.epsilon_cutoff = params.f32("epsilon")?,
        "EtaLogitsWarper" => config.eta_cutoff = params.f32("epsilon")?,
        "NoRepeatNGramLogitsProcessor" => {
            config.no_repeat_ngram_size = params.usize("ngram_size")?;
        }
        "NoBadWordsLogitsProcessor" => {
            let words = params
                .take("bad_words_ids")
                .ok_or("missing parameter bad_words_ids")?;
            config.bad_words_ids = words
                .as_array()
                .ok_or("bad_words_ids is not a list")?
                .iter()
                .map(ids)
                .collect::<Result<_, _>>()?;
            if let Some(eos) = params.take("eos_token_id") {
                config.eos_token_id = one_or_many_ids(&eos)?;
            }
        }
        "SequenceBiasLogitsProcessor" => {
            let bias = params
                .take("sequence_bias")
                .ok_or("missing parameter sequence_bias")?;
            config.sequence_bias = bias
                .as_array()
                .ok_or("sequence_bias is not a list")?
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([seq, b]) => Ok((ids(seq)?, number(b)? as f32)),
                    _ => Err(format!("{pair} is not [sequence, bias]")),
                })
                .collect::<Result<_, String>>()?;
        }
        "MinLengthLogitsProcessor" => {
            config.min_length = params.usize("min_length")?;
            let eos = params
                .take("eos_token_id")
                .ok_or("missing parameter eos_token_id")?;
            config.eos_token_id = one_or_many_ids(&eos)?;
            // `cur_len` is read by `hf_histories`.
            params.take("cur_len");
        }
        other => return Err(format!("no mapping for processor {other}")),
    }
    params.finish()?;
    Ok((config, filter_value))
}

/// The history of each row: `input_ids`' rows, `cur_len` tokens for the minimum length, or
/// none.
fn hf_histories(vector: &Value, rows: usize) -> Result<Vec<Vec<u32>>, String> {
    if let Some(input_ids) = vector["input_ids"].as_array() {
        let histories: Vec<Vec<u32>> = input_ids.iter().map(ids).collect::<Result<_, _>>()?;
        if histories.len() != rows {
            return Err(format!(
                "{} rows of input_ids for {rows} rows of scores",
                histories.len()
            ));
        }
        return Ok(histories);
    }
    let len = match vector["params"].get("cur_len") {
        Some(v) => usize_of(v)?,
        None => 0,
    };
    // Only the length matters to the minimum length; the ids are arbitrary in the test.
    Ok(vec![vec![1; len]; rows])
}

fn run_hf(vector: &Value) -> Outcome {
    if let Some(reason) = hf_skip_reason(vector) {
        return Outcome::Skip(reason);
    }
    let header = format!(
        "{} {}",
        vector["processor"].as_str().unwrap_or("?"),
        vector["params"]
    );
    match check_hf(vector) {
        Ok(()) => Outcome::Pass,
        Err(report) => Outcome::Fail(format!("{header}\n  {report}")),
    }
}

fn check_hf(vector: &Value) -> Result<(), String> {
    let (config, filter_value) = hf_config(vector)?;
    let rows = vector["scores"].as_array().ok_or("scores is not a list")?;
    let histories = hf_histories(vector, rows.len())?;
    let expected_rows = vector["expected"].as_array();
    let counts = vector
        .get("expected_nonzero_count")
        .and_then(Value::as_array);
    if expected_rows.is_none() && counts.is_none() {
        return Err("neither expected nor expected_nonzero_count".into());
    }
    let mut failures = Vec::new();
    for (row, (scores, history)) in rows.iter().zip(&histories).enumerate() {
        let scores = f32_row(scores)?;
        let mut chain = config
            .build()
            .map_err(|e| format!("config {config:?} does not build: {e}"))?;
        let got = match chain.probabilities(&scores, history) {
            Ok(got) => got,
            Err(e) => {
                failures.push(format!(
                    "row {row}: scores {scores:?}, history {history:?}: error {e}"
                ));
                continue;
            }
        };
        let got_str = fmt_probs(got.iter().map(|&p| f64::from(p)));
        if let Some(expected) = expected_rows.and_then(|r| r.get(row)) {
            let expected = f64_row(expected)?;
            // Removed entries hold the filter value; every other entry is kept.
            let kept: Vec<bool> = expected
                .iter()
                .map(|&x| x != filter_value && x > f64::NEG_INFINITY)
                .collect();
            let want = softmax_kept(&expected, &kept);
            let removed: Vec<bool> = kept.iter().map(|k| !k).collect();
            let problems = mismatches(&got, &want, &removed, HF_TOL);
            if !problems.is_empty() && boundary_alternative(vector, &config, &scores, &got) {
                eprintln!(
                    "{}: boundary-sensitive row {row} matched the other side of the boundary \
                     (expected p {}, got {got_str})",
                    vector["processor"].as_str().unwrap_or("?"),
                    fmt_probs(want.iter().copied())
                );
            } else if !problems.is_empty() {
                failures.push(format!(
                    "row {row}: scores {scores:?}, history {history:?}\n    expected scores \
                     {expected:?}\n    expected p {}\n    got p      {got_str}\n    {}",
                    fmt_probs(want),
                    problems.join("; ")
                ));
            }
        }
        if let Some(count) = counts.and_then(|c| c.get(row)) {
            let count = usize_of(count)?;
            let nonzero = got.iter().filter(|&&p| p > 0.0).count();
            let sum: f64 = got.iter().map(|&p| f64::from(p)).sum();
            if nonzero != count || (sum - 1.0).abs() > HF_TOL {
                failures.push(format!(
                    "row {row}: scores {scores:?}: expected {count} kept tokens, got {nonzero} \
                     (sum {sum}): {got_str}"
                ));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n  "))
    }
}

/// The probabilities of the nucleus of mass `p` of `scores` (ties in rank order to the lowest
/// id), at least `min_keep` tokens: the rule of `TopPLogitsWarper` in exact arithmetic.
fn reference_top_p(scores: &[f32], p: f64, min_keep: usize) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let all = softmax_kept(
        &scores.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
        &vec![true; scores.len()],
    );
    let mut kept = vec![false; scores.len()];
    let mut mass = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        if mass >= p && rank >= min_keep.max(1) {
            break;
        }
        kept[i] = true;
        mass += all[i];
    }
    let scores: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
    softmax_kept(&scores, &kept)
}

/// For a row marked `boundary_sensitive` (its mass sits on `top_p` to within f32 rounding, so
/// the kept set depends on the precision of the sums): whether `got` is the nucleus of `top_p`
/// nudged by 1e-6 to either side.
fn boundary_alternative(vector: &Value, config: &ChainConfig, scores: &[f32], got: &[f32]) -> bool {
    if vector["boundary_sensitive"] != Value::Bool(true)
        || vector["processor"] != "TopPLogitsWarper"
    {
        return false;
    }
    let p = f64::from(config.top_p);
    [p - 1e-6, p + 1e-6].into_iter().any(|p| {
        let want = reference_top_p(scores, p, config.min_keep);
        let removed: Vec<bool> = want.iter().map(|&w| w == 0.0).collect();
        mismatches(got, &want, &removed, HF_TOL).is_empty()
    })
}

fn hf_family(family: &str, processors: &[&str]) -> (usize, usize) {
    let vectors = hf_vectors();
    run_family(
        family,
        &vectors,
        |v| processors.contains(&v["processor"].as_str().unwrap_or_default()),
        run_hf,
    )
}

/// The HF families run by this file's tests, and the processors each one covers.
const HF_FAMILIES: &[(&str, &[&str])] = &[
    ("hf repetition", &["RepetitionPenaltyLogitsProcessor"]),
    ("hf top_k", &["TopKLogitsWarper"]),
    ("hf top_p", &["TopPLogitsWarper"]),
    ("hf min_p", &["MinPLogitsWarper"]),
    ("hf typical", &["TypicalLogitsWarper"]),
    (
        "hf epsilon/eta",
        &["EpsilonLogitsWarper", "EtaLogitsWarper"],
    ),
    ("hf no_repeat_ngram", &["NoRepeatNGramLogitsProcessor"]),
    ("hf bad_words", &["NoBadWordsLogitsProcessor"]),
    ("hf sequence_bias", &["SequenceBiasLogitsProcessor"]),
    ("hf min_length", &["MinLengthLogitsProcessor"]),
    (
        "hf not built",
        &[
            "TopHLogitsWarper",
            "InfNanRemoveLogitsProcessor",
            "BarkEosPrioritizerLogitsProcessor",
            "DiaClassifierFreeGuidanceLogitsProcessor",
        ],
    ),
];

fn hf_family_named(name: &str) -> (usize, usize) {
    let (family, processors) = HF_FAMILIES
        .iter()
        .find(|(f, _)| *f == name)
        .expect("a known family");
    hf_family(family, processors)
}

#[test]
fn hf_repetition_penalty() {
    let (_, skipped) = hf_family_named("hf repetition");
    assert_eq!(skipped, 2, "the two prompt_ignore_length vectors");
}

#[test]
fn hf_top_k() {
    hf_family_named("hf top_k");
}

#[test]
fn hf_top_p() {
    hf_family_named("hf top_p");
}

#[test]
fn hf_min_p() {
    hf_family_named("hf min_p");
}

#[test]
fn hf_typical() {
    hf_family_named("hf typical");
}

#[test]
fn hf_epsilon_and_eta() {
    hf_family_named("hf epsilon/eta");
}

#[test]
fn hf_no_repeat_ngram() {
    hf_family_named("hf no_repeat_ngram");
}

#[test]
fn hf_bad_words() {
    hf_family_named("hf bad_words");
}

#[test]
fn hf_sequence_bias() {
    hf_family_named("hf sequence_bias");
}

#[test]
fn hf_min_length() {
    hf_family_named("hf min_length");
}

#[test]
fn hf_processors_not_built_are_skipped() {
    let (passed, skipped) = hf_family_named("hf not built");
    assert_eq!(passed, 0);
    assert_eq!(skipped, 9, "TopH 4, InfNan 1, Bark 2, Dia 2");
}

// ---------------------------------------------------------------------------------------------
// llama.cpp.

/// Why a llama.cpp vector is not run, if it is not.
fn llamacpp_skip_reason(vector: &Value) -> Option<String> {
    let sampler = vector["sampler"].as_str().unwrap_or_default();
    if sampler == "dry" {
        let breakers = vector["params"]["seq_breakers"].as_array()?;
        if breakers.iter().any(|b| !b.is_array()) {
            return Some(format!(
                "dry: sequence breakers given as strings {breakers:?} need a tokenizer; the \
                 config takes token-id sequences"
            ));
        }
    }
    None
}

/// The llama.cpp-convention chain of one sampler alone (temperature 1 unless it is the
/// sampler).
fn llamacpp_config(vector: &Value) -> Result<ChainConfig, String> {
    let sampler = vector["sampler"].as_str().unwrap_or_default();
    let mut params = Params::of(vector);
    let mut config = ChainConfig {
        convention: Convention::LlamaCpp,
        temperature: 1.0,
        ..ChainConfig::default()
    };
    if let Some(v) = params.take("min_keep") {
        config.min_keep = usize_of(&v)?;
    }
    if let Some(v) = params.take("seed") {
        config.seed = v.as_u64().ok_or("seed is not an integer")?;
    }
    match sampler {
        "temp" => config.temperature = params.f32("t")?,
        "temp_ext" => {
            config.temperature = params.f32("t")?;
            config.dynatemp_range = params.f32("delta")?;
            config.dynatemp_exponent = params.f32("exponent")?;
        }
        // llama.cpp: k <= 0 is off, as 0 here.
        "top_k" => {
            let k = params.take("k").ok_or("missing parameter k")?;
            config.top_k = usize::try_from(k.as_i64().ok_or("k is not an integer")?.max(0))
                .map_err(|e| e.to_string())?;
        }
        "top_p" => config.top_p = params.f32("p")?,
        "min_p" => config.min_p = params.f32("p")?,
        "typical" => config.typical_p = params.f32("p")?,
        "xtc" => {
            config.xtc_probability = params.f32("probability")?;
            config.xtc_threshold = params.f32("threshold")?;
        }
        "penalties" => {
            config.repetition_penalty = params.f32("repeat")?;
            config.frequency_penalty = params.f32("freq")?;
            config.presence_penalty = params.f32("present")?;
            config.repeat_last_n = Some(params.usize("penalty_last_n")?);
        }
        "dry" => {
            config.dry_multiplier = params.f32("multiplier")?;
            config.dry_base = params.f32("base")?;
            config.dry_allowed_length = params.usize("allowed_length")?;
            config.dry_penalty_last_n = Some(params.usize("penalty_last_n")?);
            let breakers = params
                .take("seq_breakers")
                .ok_or("missing parameter seq_breakers")?;
            config.dry_sequence_breakers = breakers
                .as_array()
                .ok_or("seq_breakers is not a list")?
                .iter()
                .map(ids)
                .collect::<Result<_, _>>()?;
        }
        "top_n_sigma" => config.top_n_sigma = params.f32("n")?,
        other => return Err(format!("no mapping for sampler {other}")),
    }
    params.finish()?;
    Ok(config)
}

/// A vector whose parameter lies outside the range [`ChainConfig`] documents: `Some(Ok(reason))`
/// when the chain rejects it at build as documented, `Some(Err(report))` when it fails otherwise,
/// `None` (run the vector) when the parameter is in range or the chain accepts it.
fn out_of_range(vector: &Value) -> Option<Result<String, String>> {
    let p = vector["params"]["p"].as_f64()?;
    if vector["sampler"] != "min_p" || p <= 1.0 {
        return None;
    }
    let config = match llamacpp_config(vector) {
        Ok(config) => config,
        Err(e) => return Some(Err(e)),
    };
    match config.build() {
        Ok(_) => None,
        Err(SamplingError::InvalidConfig { field, .. }) if field == "min_p" => Some(Ok(format!(
            "min_p {p} > 1: ChainConfig's documented range is [0, 1] and build rejects it \
             (checked); llama.cpp accepts it and keeps only the most likely token"
        ))),
        Err(e) => Some(Err(format!("min_p {p}: unexpected error {e}"))),
    }
}

fn run_llamacpp(vector: &Value) -> Outcome {
    if let Some(reason) = llamacpp_skip_reason(vector) {
        return Outcome::Skip(reason);
    }
    match out_of_range(vector) {
        Some(Ok(reason)) => return Outcome::Skip(reason),
        Some(Err(report)) => return Outcome::Fail(report),
        None => {}
    }
    let header = format!(
        "{} {} (note: {})",
        vector["sampler"].as_str().unwrap_or("?"),
        vector["params"],
        vector["note"].as_str().unwrap_or_default()
    );
    match check_llamacpp(vector) {
        Ok(()) => Outcome::Pass,
        Err(report) => Outcome::Fail(format!("{header}\n  {report}")),
    }
}

fn check_llamacpp(vector: &Value) -> Result<(), String> {
    let config = llamacpp_config(vector)?;
    // test-sampling.cpp: `logits[i] = logf(probs[i])`, in f32.
    let probs = f32_row(&vector["input_probs"])?;
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let history = match vector.get("last_tokens") {
        Some(Value::Null) | None => Vec::new(),
        Some(v) => ids(v)?,
    };
    let atol = vector.get("atol").map_or(Ok(1e-5), number)?;
    let mut want = vec![0.0f64; logits.len()];
    // Ids missing from `expected_probs_by_id` were removed from the candidate array.
    let mut removed = vec![true; logits.len()];
    let by_id = vector["expected_probs_by_id"]
        .as_object()
        .ok_or("expected_probs_by_id is not an object")?;
    for (token, p) in by_id {
        let token: usize = token
            .parse()
            .map_err(|_| format!("{token:?} is not an id"))?;
        *want
            .get_mut(token)
            .ok_or_else(|| format!("id {token} outside the vocabulary"))? = number(p)?;
        removed[token] = false;
    }
    if vector["dist_applied_after"] == Value::Bool(false) {
        // The expected values are the survivors' original probabilities.
        let total: f64 = want.iter().sum();
        want.iter_mut().for_each(|p| *p /= total);
    }
    let mut chain = config
        .build()
        .map_err(|e| format!("config {config:?} does not build: {e}"))?;
    let got = chain
        .probabilities(&logits, &history)
        .map_err(|e| format!("logits {logits:?}, history {history:?}: error {e}"))?;
    let problems = mismatches(&got, &want, &removed, atol);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "input p {probs:?}, history {history:?}\n    expected p {}\n    got p      {}\n    {}",
            fmt_probs(want.iter().copied()),
            fmt_probs(got.iter().map(|&p| f64::from(p))),
            problems.join("; ")
        ))
    }
}

/// The llama.cpp families run by this file's tests, and the samplers each one covers.
const LLAMACPP_FAMILIES: &[(&str, &[&str])] = &[
    ("llama.cpp temp", &["temp", "temp_ext"]),
    ("llama.cpp top_k", &["top_k"]),
    ("llama.cpp top_p", &["top_p"]),
    ("llama.cpp min_p", &["min_p"]),
    ("llama.cpp xtc", &["xtc"]),
    ("llama.cpp typical", &["typical"]),
    ("llama.cpp penalties", &["penalties"]),
    ("llama.cpp dry", &["dry"]),
    ("llama.cpp top_n_sigma", &["top_n_sigma"]),
];

fn llamacpp_family_named(name: &str) -> (usize, usize) {
    let (family, samplers) = LLAMACPP_FAMILIES
        .iter()
        .find(|(f, _)| *f == name)
        .expect("a known family");
    let vectors = llamacpp_vectors();
    run_family(
        family,
        &vectors,
        |v| samplers.contains(&v["sampler"].as_str().unwrap_or_default()),
        run_llamacpp,
    )
}

#[test]
fn llamacpp_temperature() {
    llamacpp_family_named("llama.cpp temp");
}

#[test]
fn llamacpp_top_k() {
    llamacpp_family_named("llama.cpp top_k");
}

#[test]
fn llamacpp_top_p() {
    llamacpp_family_named("llama.cpp top_p");
}

#[test]
fn llamacpp_min_p() {
    llamacpp_family_named("llama.cpp min_p");
}

#[test]
fn llamacpp_xtc() {
    llamacpp_family_named("llama.cpp xtc");
}

#[test]
fn llamacpp_typical() {
    llamacpp_family_named("llama.cpp typical");
}

#[test]
fn llamacpp_penalties() {
    llamacpp_family_named("llama.cpp penalties");
}

#[test]
fn llamacpp_dry() {
    llamacpp_family_named("llama.cpp dry");
}

#[test]
fn llamacpp_top_n_sigma() {
    llamacpp_family_named("llama.cpp top_n_sigma");
}

// ---------------------------------------------------------------------------------------------
// Coverage.

/// Every vector of both files belongs to exactly one family above: none is left out unseen.
#[test]
fn every_vector_is_run_or_skipped_with_a_reason() {
    let hf = hf_vectors();
    assert_eq!(hf.len(), 34, "hf_vectors.json");
    for (index, vector) in hf.iter().enumerate() {
        let processor = vector["processor"].as_str().unwrap_or_default();
        let families = HF_FAMILIES
            .iter()
            .filter(|(_, ps)| ps.contains(&processor))
            .count();
        assert_eq!(
            families, 1,
            "HF vector #{index} ({processor}) in {families} families"
        );
    }
    let llamacpp = llamacpp_vectors();
    assert_eq!(llamacpp.len(), 41, "llamacpp_vectors.json");
    for (index, vector) in llamacpp.iter().enumerate() {
        let sampler = vector["sampler"].as_str().unwrap_or_default();
        let families = LLAMACPP_FAMILIES
            .iter()
            .filter(|(_, ss)| ss.contains(&sampler))
            .count();
        assert_eq!(
            families, 1,
            "llama.cpp vector #{index} ({sampler}) in {families} families"
        );
    }
}
