//! The bodies of the fuzz targets in `fuzz/`, kept here so that the regression inputs under
//! `tests/fuzz_regressions/` replay through exactly the same code in `cargo test`.
//!
//! Each function takes arbitrary bytes, drives one entry point with them and panics only when
//! the code under test breaks a promise: a panic inside the crates, a token outside the
//! vocabulary or of probability 0, probabilities that do not sum to 1, or an error that is
//! candle's rather than a typed one. Anything else (bytes that are not a configuration, a
//! configuration rejected with a typed error) is an ordinary, uninteresting input.

use kyutai_sampling::{ChainConfig, Sampler, SamplingError};

/// The logits and history encoded after a configuration: one byte giving the number of logits
/// (at most 255), that many little-endian f32 values, then little-endian u32 history ids.
fn logits_and_history(bytes: &[u8]) -> (Vec<f32>, Vec<u32>) {
    let (&count, rest) = bytes.split_first().unwrap_or((&0, &[]));
    let count = usize::from(count).min(rest.len() / 4);
    let (head, tail) = rest.split_at(count * 4);
    let word = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let logits = head
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(word(c)))
        .collect();
    let history = tail
        .chunks_exact(4)
        .take(64)
        .map(|c| u32::from_le_bytes(word(c)))
        .collect();
    (logits, history)
}

/// Splits `data` at its first NUL byte: the text before it, the bytes after it.
fn split_text(data: &[u8]) -> Option<(&str, &[u8])> {
    let at = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let text = std::str::from_utf8(&data[..at]).ok()?;
    Some((text, data.get(at + 1..).unwrap_or_default()))
}

fn assert_typed<T: std::fmt::Debug>(what: &str, r: &Result<T, SamplingError>) {
    if let Err(SamplingError::Candle(e)) = r {
        panic!("{what}: an opaque candle error for a CPU input: {e}");
    }
}

/// Whether the chain `config` edits logits (penalties, biases, bans): then the logits its
/// truncations compare are not the caller's.
fn edits_logits(c: &ChainConfig) -> bool {
    c.repetition_penalty != 1.0
        || c.frequency_penalty != 0.0
        || c.presence_penalty != 0.0
        || c.dry_multiplier > 0.0
        || c.no_repeat_ngram_size > 0
        || !c.bad_words_ids.is_empty()
        || !c.sequence_bias.is_empty()
        || !c.suppress_tokens.is_empty()
        || !c.logit_bias.is_empty()
        || c.min_length > 0
        || c.allowed_token_ids.is_some()
}

/// Whether token `t`, reported at probability 0 but drawn, is tied to f32 rounding with a token
/// the chain keeps. The draw may take a faster exact path than `probabilities`; the two rank
/// tokens whose probabilities agree to rounding differently (by weight or by logit), and which
/// of such near-ties survive a cut is unspecified. Without edits the caller's logits are the
/// ones compared; with edits, only a draw of a masked token is a certain failure.
fn near_tie(config: &ChainConfig, logits: &[f32], probs: &[f32], t: usize) -> bool {
    if edits_logits(config) {
        return logits[t] > f32::NEG_INFINITY;
    }
    let scale = if config.temperature > 0.0 {
        f64::from(config.temperature) + f64::from(config.dynatemp_range)
    } else {
        1.0
    };
    let x = f64::from(logits[t]);
    probs.iter().zip(logits).any(|(&p, &y)| {
        let gap = (x - f64::from(y)).abs();
        p > 0.0 && gap <= 1e-6 * scale.max(1e-30) * (1.0 + x.abs().max(f64::from(y).abs()))
    })
}

/// Samples a built chain a few times on `logits` with `history` (growing with each token), and
/// checks every promise on the way.
fn drive(mut chain: kyutai_sampling::Chain, logits: &[f32], history: &[u32]) {
    let config = chain.config().clone();
    let mut history = history.to_vec();
    for _ in 0..3 {
        let mut twin = chain.clone();
        let probs = twin.probabilities(logits, &history);
        assert_typed("probabilities", &probs);
        let drawn = chain.sample_slice(logits, &history);
        assert_typed("sample_slice", &drawn);
        match (&probs, &drawn) {
            (Ok(p), Ok(token)) => {
                assert_eq!(p.len(), logits.len());
                let t = *token as usize;
                assert!(t < logits.len(), "token {t} of {} logits", logits.len());
                assert!(
                    p[t] > 0.0 || near_tie(&config, logits, p, t),
                    "token {t} has probability 0 in {p:?}"
                );
                let total: f64 = p.iter().map(|&x| f64::from(x)).sum();
                assert!((total - 1.0).abs() < 1e-3, "probabilities sum to {total}");
            }
            (Err(_), Err(_)) => {}
            _ => panic!("probabilities {probs:?} disagree with the draw {drawn:?}"),
        }
        let Ok(token) = drawn else { return };
        history.push(token);
    }
    let detailed = candle_core::Tensor::from_slice(logits, logits.len(), &candle_core::Device::Cpu)
        .map_err(SamplingError::from)
        .and_then(|t| chain.sample_detailed(&t, &history, 4));
    assert_typed("sample_detailed", &detailed);
}

/// Builds the chain of `config` and, when it builds, [`drive`]s it on the logits and history
/// encoded in `rest`.
fn build_and_drive(config: &ChainConfig, rest: &[u8]) {
    let built = config.build();
    assert_typed("build", &built);
    if let Ok(chain) = built {
        let (logits, history) = logits_and_history(rest);
        drive(chain, &logits, &history);
    }
}

/// `ChainConfig` JSON, NUL, then logits and history (see the module docs). Returns whether the
/// configuration parsed.
pub fn chain_config(data: &[u8]) -> bool {
    let Some((json, rest)) = split_text(data) else {
        return false;
    };
    let Ok(config) = serde_json::from_str::<ChainConfig>(json) else {
        return false;
    };
    // A configuration that round-trips through serde means the same thing.
    if let Ok(again) = serde_json::to_string(&config) {
        let back: ChainConfig = serde_json::from_str(&again).expect("a serialised config parses");
        assert_eq!(format!("{back:?}"), format!("{config:?}"));
    }
    build_and_drive(&config, rest);
    true
}

/// A HF `generation_config.json`, NUL, then logits and history. Returns whether the document
/// was accepted.
pub fn generation_config(data: &[u8]) -> bool {
    let Some((json, rest)) = split_text(data) else {
        return false;
    };
    let parsed = ChainConfig::from_generation_config(json);
    assert_typed("from_generation_config", &parsed);
    let Ok(config) = parsed else { return false };
    build_and_drive(&config, rest);
    true
}

/// A Moshi `LmConfig` JSON (moshi's `lm::Config`): parsing and validation must be total, and a
/// configuration they accept must have sizes that compute without overflow. Returns whether the
/// configuration is valid.
pub fn lm_config(data: &[u8]) -> bool {
    let Ok(json) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(config) = kyutai::LmConfig::from_json_str(json) else {
        return false;
    };
    let valid = config.validate().is_ok();
    if let Ok(sizes) = config.sizes() {
        let _ = format!("{sizes:?}");
        let _ = config.head_dim();
        let _ = config.gating_hidden_dim();
        let _ = config.generated_audio_codebooks();
        let _ = config.text_start_token();
        let _ = config.audio_pad_token();
    }
    if let Ok(json) = config.to_json_string() {
        let _ = kyutai::LmConfig::from_json_str(&json);
    }
    valid
}

/// The `generate` CLI's arguments, NUL-separated: parsing and the checks made before any model
/// is built must be total. Returns whether the command line was accepted.
pub fn cli_args(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    // Flags naming files are left out: this target fuzzes the parser and the checks, not the
    // file system (a path such as /dev/stdin would block).
    const FILE_FLAGS: [&str; 5] = [
        "--text-config",
        "--audio-config",
        "--model-dir",
        "--mimi",
        "--out",
    ];
    if text
        .split('\0')
        .any(|a| FILE_FLAGS.iter().any(|f| a.starts_with(f)))
    {
        return false;
    }
    let argv = std::iter::once("generate").chain(text.split('\0'));
    crate::generate::plan_argv(argv).is_ok()
}
