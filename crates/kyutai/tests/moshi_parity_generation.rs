//! Parity of the generation state machines ([`kyutai::lm_generate`]) with Kyutai's `moshi`
//! 0.6.4, on outputs recorded with moshi itself (`multistream_greedy`,
//! `multistream_greedy_reppen`, `multistream_greedy_cfg` and `lm_generate_greedy` in
//! `tiny_outputs.json`; see `tests/fixtures/moshi-0.6.4/README.md`).
//!
//! The fixtures are read from the directory named by `KYUTAI_PARITY_DIR` when it is set, else
//! from the bundled copy. The model configurations come from that directory's
//! `tiny_config.json`; the state configurations (codebooks, delays, special tokens, penalty,
//! guidance), the inputs and every expected token from its `tiny_outputs.json`. Tokens must
//! agree exactly. Every token is chosen by the sampling crate's greedy sampler, behind the
//! `Sampler` trait: one for the text stream, one for the audio codebooks.

use std::path::PathBuf;

use candle_core::{DType, Device};
use kyutai::lm_generate::{
    LmGenerate, LmGenerateConfig, Multistream, MultistreamConfig, UNGENERATED,
};
use kyutai::{greedy_sampler, LmConfig, LmModel, Samplers};
use serde_json::Value;

struct Fixtures {
    dir: PathBuf,
    config: Value,
    outputs: Value,
}

impl Fixtures {
    fn load() -> Self {
        let dir = match std::env::var_os("KYUTAI_PARITY_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moshi-0.6.4"),
        };
        let read = |name: &str| -> Value {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
        };
        Self {
            config: read("tiny_config.json"),
            outputs: read("tiny_outputs.json"),
            dir,
        }
    }

    fn model(&self, key: &str, file: &str) -> LmModel {
        let value = self
            .config
            .get(key)
            .unwrap_or_else(|| panic!("tiny_config.json has no `{key}`"));
        let config = LmConfig::from_json_str(&value.to_string())
            .unwrap_or_else(|e| panic!("config `{key}`: {e}"));
        LmModel::load(&config, self.dir.join(file), DType::F32, &Device::Cpu)
            .unwrap_or_else(|e| panic!("loading {file}: {e}"))
    }

    fn out(&self, pointer: &str) -> &Value {
        self.outputs
            .pointer(pointer)
            .unwrap_or_else(|| panic!("tiny_outputs.json has no `{pointer}`"))
    }
}

fn usize_of(value: &Value) -> usize {
    value.as_u64().expect("an unsigned integer") as usize
}

fn u32_of(value: &Value) -> u32 {
    u32::try_from(value.as_u64().expect("an unsigned integer")).expect("a u32")
}

fn tokens(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(u32_of)
        .collect()
}

fn table(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(tokens)
        .collect()
}

/// `null` or an array of tokens, per step.
fn optional_rows(value: &Value) -> Vec<Option<Vec<u32>>> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| (!row.is_null()).then(|| tokens(row)))
        .collect()
}

/// Greedy text and greedy audio, as two samplers.
fn greedy() -> Samplers {
    Samplers::new(greedy_sampler(), greedy_sampler())
}

fn multistream_config(case: &Value) -> MultistreamConfig {
    let c = &case["config"];
    MultistreamConfig {
        generated_audio_codebooks: usize_of(&c["generated_audio_codebooks"]),
        input_audio_codebooks: usize_of(&c["input_audio_codebooks"]),
        audio_vocab_size: usize_of(&c["audio_vocab_size"]),
        acoustic_delay: usize_of(&c["acoustic_delay"]),
        text_pad_token: u32_of(&c["text_pad_token"]),
        text_eop_token: u32_of(&c["text_eop_token"]),
        text_start_token: u32_of(&c["text_start_token"]),
    }
}

/// Runs moshi's multistream case `name` and compares every recorded token.
fn check_multistream(name: &str) {
    let fixtures = Fixtures::load();
    let case = fixtures.out(&format!("/{name}"));
    let model = fixtures.model("multistream_lm", "tiny.safetensors");
    let config = multistream_config(case);
    assert_eq!(
        config.text_start_token,
        model.text_start_token(),
        "the fixture's start token is the model's"
    );
    let mut state = Multistream::new(model, greedy(), config).unwrap();
    if let Some(penalty) = case["repetition_penalty"].as_array() {
        let context = usize_of(&penalty[0]);
        let factor = penalty[1].as_f64().expect("a penalty") as f32;
        state = state.with_repetition_penalty(context, factor).unwrap();
    }
    if let Some(alpha) = case["cfg_alpha"].as_f64() {
        state = state.with_cfg(alpha).unwrap();
    }

    let user_audio = table(&case["user_audio_tokens"]);
    let expected_text = tokens(&case["text_tokens"]);
    let expected_last = optional_rows(&case["last_audio_tokens_per_step"]);
    assert_eq!(user_audio.len(), expected_text.len());
    let mut last_per_step = Vec::new();
    for (step, user) in user_audio.iter().enumerate() {
        // `step` feeds the previous text token back, the start token at step 0, as recorded.
        let text = state.step(user).unwrap();
        assert_eq!(
            text, expected_text[step],
            "{name}: text token of step {step}"
        );
        last_per_step.push(state.last_audio_tokens());
    }
    assert_eq!(
        state.text_tokens(),
        &expected_text[..],
        "{name}: text tokens"
    );
    assert_eq!(
        last_per_step, expected_last,
        "{name}: last_audio_tokens after each step"
    );
    let expected_table = table(&case["audio_tokens_table"]);
    assert!(
        expected_table.iter().flatten().any(|&t| t == UNGENERATED),
        "{name}: the recorded table marks ungenerated positions with u32::MAX"
    );
    assert_eq!(
        state.audio_tokens(),
        &expected_table[..],
        "{name}: audio table"
    );
}

#[test]
fn multistream_greedy() {
    check_multistream("multistream_greedy");
}

#[test]
fn multistream_greedy_reppen() {
    check_multistream("multistream_greedy_reppen");
}

#[test]
fn multistream_greedy_cfg() {
    check_multistream("multistream_greedy_cfg");
}

#[test]
fn lm_generate_greedy() {
    let fixtures = Fixtures::load();
    let case = fixtures.out("/lm_generate_greedy");
    let c = &case["config"];
    let config = LmGenerateConfig {
        audio_delays: c["audio_delays"]
            .as_array()
            .expect("delays")
            .iter()
            .map(usize_of)
            .collect(),
        audio_vocab_size: usize_of(&c["audio_vocab_size"]),
        text_pad_token: u32_of(&c["text_pad_token"]),
        text_eop_token: u32_of(&c["text_eop_token"]),
        text_start_token: u32_of(&c["text_start_token"]),
    };
    let model = fixtures.model("tts_lm", "tiny_tts.safetensors");
    let mut state = LmGenerate::new(model, greedy(), config).unwrap();
    let expected_text = tokens(&case["last_text_token_per_step"]);
    let expected_audio = optional_rows(&case["last_audio_tokens_per_step"]);
    assert_eq!(expected_text.len(), expected_audio.len());
    let mut text = Vec::new();
    let mut audio = Vec::new();
    for _ in 0..expected_text.len() {
        let token = state.step().unwrap();
        assert_eq!(token, state.last_text_token());
        text.push(token.expect("free steps sample a text token"));
        audio.push(state.last_audio_tokens().unwrap());
    }
    assert_eq!(text, expected_text, "lm_generate: text tokens");
    assert_eq!(audio, expected_audio, "lm_generate: last_audio_tokens");
}
