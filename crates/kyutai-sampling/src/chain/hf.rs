//! Reading a HF `generation_config.json` into a [`ChainConfig`] with transformers' semantics.
//!
//! Fields read (with transformers' defaults when absent): `do_sample` (false), `temperature`
//! (1.0), `top_k` (50, applied only when sampling; `null` or 0 is off), `top_p` (1.0), `min_p`
//! (off), `typical_p` (1.0), `epsilon_cutoff` (0.0), `eta_cutoff` (0.0), `repetition_penalty`
//! (1.0, over the whole history), `no_repeat_ngram_size` (0), `bad_words_ids`, `sequence_bias`
//! (a list of `[[ids...], bias]` pairs, or an object from comma-joined ids to biases),
//! `suppress_tokens`, `min_length` (0), `eos_token_id` (an integer or a list).
//!
//! Fields that do not change the next-token distribution are ignored: lengths and stopping
//! (`max_length`, `max_new_tokens`, `min_new_tokens`, `stop_strings`, `max_time`, `early_stopping`),
//! special ids (`bos_token_id`, `pad_token_id`, `decoder_start_token_id`), output and cache
//! switches (`output_scores`, `return_dict_in_generate`, `use_cache`, `cache_implementation`, ...),
//! and metadata (`transformers_version`, `_from_model_config`).
//!
//! Fields that would change the distribution in a way a chain cannot honour are rejected, naming
//! the field: beam search (`num_beams > 1`, `num_beam_groups > 1`, `diversity_penalty`,
//! `length_penalty` with beams, `constraints`, `force_words_ids`), `penalty_alpha` (contrastive
//! search), `guidance_scale` (classifier-free guidance needs two forward passes), watermarking,
//! `forced_bos_token_id` / `forced_eos_token_id`, `begin_suppress_tokens`,
//! `exponential_decay_length_penalty`, `encoder_repetition_penalty`,
//! `encoder_no_repeat_ngram_size`, `renormalize_logits` (when true), `top_h`, `remove_invalid_values`
//! (when true), `num_return_sequences > 1`, `prompt_lookup_num_tokens` / `assistant_*` (speculative
//! decoding), and any unknown field that is not null.

use serde_json::{Map, Value};

use super::{ChainConfig, Convention};
use crate::SamplingError;

/// Fields ignored because they do not affect the next-token distribution.
const IGNORED: &[&str] = &[
    "_from_model_config",
    "transformers_version",
    "max_length",
    "max_new_tokens",
    "min_new_tokens",
    "early_stopping",
    "max_time",
    "stop_strings",
    "bos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "use_cache",
    "cache_implementation",
    "cache_config",
    "return_legacy_cache",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "is_assistant",
    "low_memory",
    "token_healing",
    "compile_config",
    "disable_compile",
    "generation_kwargs",
    "trust_remote_code",
    "base_model_name_or_path",
];

fn bad(field: &str, reason: impl Into<String>) -> SamplingError {
    SamplingError::config(field, reason)
}

/// A number whose `f32` form keeps its meaning (the rule of `ChainConfig`'s own JSON).
fn as_f32(field: &str, v: &Value) -> Result<f32, SamplingError> {
    let x = v
        .as_f64()
        .ok_or_else(|| bad(field, format!("expected a number, got {v}")))?;
    super::serde_f32::fit(x).map_err(|reason| bad(field, reason))
}

fn as_usize(field: &str, v: &Value) -> Result<usize, SamplingError> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| bad(field, format!("expected a non-negative integer, got {v}")))
}

fn as_id(field: &str, v: &Value) -> Result<u32, SamplingError> {
    v.as_u64()
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(|| bad(field, format!("expected a token id (u32), got {v}")))
}

fn as_ids(field: &str, v: &Value) -> Result<Vec<u32>, SamplingError> {
    match v {
        Value::Array(items) => items.iter().map(|x| as_id(field, x)).collect(),
        other => Ok(vec![as_id(field, other)?]),
    }
}

fn as_id_lists(field: &str, v: &Value) -> Result<Vec<Vec<u32>>, SamplingError> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|x| match x {
                Value::Array(_) => as_ids(field, x),
                _ => Err(bad(field, "expected a list of token-id lists")),
            })
            .collect(),
        _ => Err(bad(field, "expected a list of token-id lists")),
    }
}

fn as_sequence_bias(v: &Value) -> Result<Vec<(Vec<u32>, f32)>, SamplingError> {
    const F: &str = "sequence_bias";
    match v {
        Value::Array(items) => items
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([ids, bias]) => Ok((as_ids(F, ids)?, as_f32(F, bias)?)),
                _ => Err(bad(F, "expected [[ids...], bias] pairs")),
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(key, bias)| {
                let ids = key
                    .trim_matches(|c| c == '(' || c == ')' || c == '[' || c == ']')
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        s.trim()
                            .parse::<u32>()
                            .map_err(|_| bad(F, format!("key {key:?} is not a list of token ids")))
                    })
                    .collect::<Result<Vec<u32>, _>>()?;
                Ok((ids, as_f32(F, bias)?))
            })
            .collect(),
        _ => Err(bad(F, "expected a list of [[ids...], bias] pairs")),
    }
}

/// Rejects `field` unless its value is one that leaves the distribution alone.
fn reject_unless(
    field: &str,
    v: &Value,
    neutral: impl Fn(&Value) -> bool,
    why: &str,
) -> Result<(), SamplingError> {
    if v.is_null() || neutral(v) {
        Ok(())
    } else {
        Err(bad(field, format!("{v} is not supported: {why}")))
    }
}

pub(super) fn parse(json: &str) -> Result<ChainConfig, SamplingError> {
    let root: Value =
        serde_json::from_str(json).map_err(|e| SamplingError::ConfigSyntax(e.to_string()))?;
    let Value::Object(map) = root else {
        return Err(SamplingError::ConfigSyntax(
            "a generation config must be a JSON object".into(),
        ));
    };
    from_map(&map)
}

fn from_map(map: &Map<String, Value>) -> Result<ChainConfig, SamplingError> {
    let mut c = ChainConfig {
        convention: Convention::HuggingFace,
        do_sample: false,
        ..ChainConfig::default()
    };
    let mut top_k: Option<usize> = Some(50);
    let is_one = |v: &Value| v.as_f64() == Some(1.0);
    let is_false = |v: &Value| v.as_bool() == Some(false);
    let is_empty = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
    for (field, v) in map {
        let f = field.as_str();
        match f {
            "do_sample" => {
                c.do_sample = v
                    .as_bool()
                    .ok_or_else(|| bad(f, format!("expected true or false, got {v}")))?
            }
            "temperature" if !v.is_null() => c.temperature = as_f32(f, v)?,
            "top_k" => {
                top_k = if v.is_null() {
                    None
                } else {
                    Some(as_usize(f, v)?)
                }
            }
            "top_p" if !v.is_null() => c.top_p = as_f32(f, v)?,
            "min_p" if !v.is_null() => c.min_p = as_f32(f, v)?,
            "typical_p" if !v.is_null() => c.typical_p = as_f32(f, v)?,
            "epsilon_cutoff" if !v.is_null() => c.epsilon_cutoff = as_f32(f, v)?,
            "eta_cutoff" if !v.is_null() => c.eta_cutoff = as_f32(f, v)?,
            "repetition_penalty" if !v.is_null() => c.repetition_penalty = as_f32(f, v)?,
            "no_repeat_ngram_size" if !v.is_null() => c.no_repeat_ngram_size = as_usize(f, v)?,
            "bad_words_ids" if !v.is_null() => c.bad_words_ids = as_id_lists(f, v)?,
            "sequence_bias" if !v.is_null() => c.sequence_bias = as_sequence_bias(v)?,
            "suppress_tokens" if !v.is_null() => c.suppress_tokens = as_ids(f, v)?,
            "min_length" if !v.is_null() => c.min_length = as_usize(f, v)?,
            "eos_token_id" if !v.is_null() => c.eos_token_id = as_ids(f, v)?,
            "num_beams" | "num_beam_groups" | "num_return_sequences" => reject_unless(
                f,
                v,
                is_one,
                "the chain samples one sequence (beam search and several returned sequences are \
                 search strategies above the sampler)",
            )?,
            "diversity_penalty" => {
                reject_unless(f, v, |v| v.as_f64() == Some(0.0), "it needs beam groups")?
            }
            "length_penalty" => {} // only read by beam search, which is rejected above
            "penalty_alpha" => {
                reject_unless(f, v, |_| false, "contrastive search is not sampling")?
            }
            "guidance_scale" => reject_unless(
                f,
                v,
                is_one,
                "classifier-free guidance needs a second, unconditional forward pass",
            )?,
            "encoder_repetition_penalty" => {
                reject_unless(f, v, is_one, "it reads the encoder's input ids")?
            }
            "encoder_no_repeat_ngram_size" => reject_unless(
                f,
                v,
                |v| v.as_u64() == Some(0),
                "it reads the encoder's input ids",
            )?,
            "renormalize_logits" => {
                reject_unless(f, v, is_false, "renormalised logits are not modelled")?
            }
            "remove_invalid_values" => reject_unless(
                f,
                v,
                is_false,
                "NaN and +inf logits are errors here, never silently replaced",
            )?,
            "forced_bos_token_id" | "forced_eos_token_id" => {
                reject_unless(f, v, |_| false, "forced tokens depend on the position")?
            }
            "begin_suppress_tokens" => reject_unless(f, v, is_empty, "it depends on the position")?,
            "exponential_decay_length_penalty" => {
                reject_unless(f, v, |_| false, "it depends on the prompt length")?
            }
            "constraints" | "force_words_ids" => {
                reject_unless(f, v, is_empty, "constrained beam search")?
            }
            "watermarking_config" => {
                reject_unless(f, v, |_| false, "watermarking is not supported")?
            }
            "top_h" => reject_unless(f, v, |_| false, "top-H is not built")?,
            "prompt_lookup_num_tokens"
            | "assistant_early_exit"
            | "num_assistant_tokens"
            | "num_assistant_tokens_schedule"
            | "assistant_confidence_threshold"
            | "max_matching_ngram_size"
            | "assistant_lookbehind"
            | "target_lookbehind" => reject_unless(
                f,
                v,
                |_| false,
                "speculative decoding is configured outside the chain",
            )?,
            _ if IGNORED.contains(&f) || v.is_null() => {}
            _ => {
                return Err(bad(
                    f,
                    "unknown generation_config field that may change the distribution",
                ))
            }
        }
    }
    if c.do_sample {
        c.top_k = top_k.unwrap_or(0);
    } else {
        // Greedy: transformers applies no warper (temperature, top-k, top-p, ...).
        c.top_k = 0;
    }
    // Ranges are checked now, so that a bad file fails where it is read.
    super::plan::Plan::compile(&c)?;
    Ok(c)
}
