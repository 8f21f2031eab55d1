//! Reading the moshi 0.6.4 parity fixtures: from the directory named by `KYUTAI_PARITY_DIR`
//! when it is set, else from the bundled copy in `tests/fixtures/moshi-0.6.4`. Every model
//! configuration comes from that directory's `tiny_config.json` and every expected value from
//! its `tiny_outputs.json`.

use std::path::PathBuf;

use candle_core::{DType, Device};
use kyutai::{LmConfig, LmModel};
use serde_json::Value;

/// The fixture directory's configurations and recorded outputs.
pub struct Fixtures {
    pub dir: PathBuf,
    pub config: Value,
    pub outputs: Value,
}

impl Fixtures {
    pub fn load() -> Self {
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

    /// The configuration stored under `key` (`multistream_lm`, `lowrank_lm`, `tts_lm`, `asr_lm`).
    pub fn lm_config(&self, key: &str) -> LmConfig {
        let value = self
            .config
            .get(key)
            .unwrap_or_else(|| panic!("tiny_config.json has no `{key}`"));
        LmConfig::from_json_str(&value.to_string())
            .unwrap_or_else(|e| panic!("config `{key}`: {e}"))
    }

    /// The model of configuration `key`, loaded in f32 from `file` of the fixture directory.
    pub fn model(&self, key: &str, file: &str) -> LmModel {
        LmModel::load(
            &self.lm_config(key),
            self.dir.join(file),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("loading {file}: {e}"))
    }

    /// The recorded value at a JSON pointer of `tiny_outputs.json`.
    pub fn out(&self, pointer: &str) -> &Value {
        self.outputs
            .pointer(pointer)
            .unwrap_or_else(|| panic!("tiny_outputs.json has no `{pointer}`"))
    }
}

pub fn u32_of(value: &Value) -> u32 {
    u32::try_from(value.as_u64().expect("an unsigned integer")).expect("a u32")
}

pub fn usize_of(value: &Value) -> usize {
    value.as_u64().expect("an unsigned integer") as usize
}

/// An array of token ids.
pub fn uints(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array of integers")
        .iter()
        .map(u32_of)
        .collect()
}

/// An array of numbers.
pub fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("an array of numbers")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect()
}
