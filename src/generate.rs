//! The logic of `examples/generate.rs`: Moshi-style speech generation from the command line.
//!
//! [`main_with`] parses the arguments, builds or loads a model and a Mimi, builds one sampler
//! for the text stream and one for the audio codebooks, runs [`kyutai::BasicGenerator`] and
//! writes a WAV file. The example's `main` only calls it; the tests call it too.
//!
//! Without `--model-dir`, everything is built in: a small model with Moshi's layout and a small
//! Mimi, both with weights generated from a fixed seed, so the command runs on a fresh clone
//! with no download. **Their output is noise**: the demo shows the pipeline (the full-duplex
//! loop, the injected text and audio samplers, Mimi decoding, the WAV), not speech.
//!
//! Each stream's sampler comes from its flags through the `--engine` engine, unless `--min-p`
//! is given (both streams then get a [`Chain`](kyutai_sampling::Chain) in the HF convention,
//! built from the same flags plus min-p) or the stream has a [`ChainConfig`] JSON file
//! (`--text-config`, `--audio-config`), whose chain replaces that stream's flags.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use clap::Parser;
use kyutai::GenPrompt;
use kyutai::{
    BasicGenerator, LmConfig, LmModel, Mimi, MimiConfig, Samplers, MOSHI_AUDIO_TEMPERATURE,
    MOSHI_AUDIO_TOP_K, MOSHI_TEXT_TEMPERATURE, MOSHI_TEXT_TOP_K,
};
use kyutai_sampling::{
    BoxSampler, ChainConfig, Convention, Sampling, SamplingConfig, SamplingError,
};

/// The seed of the built-in demo weights (the model's and Mimi's), fixed so that every clone
/// generates the same demo.
pub const DEMO_WEIGHTS_SEED: u64 = 20_240_917;

/// The default sampling seed.
pub const DEFAULT_SEED: u64 = 42;

/// How many recent tokens a repetition penalty looks at.
pub const REPETITION_CONTEXT: usize = 64;

/// Runs below this many steps get no progress bar.
const PROGRESS_MIN_STEPS: usize = 20;

/// Generate speech (text + audio tokens, decoded to a WAV) with a Moshi-family model; every
/// token is chosen by an injected sampler.
///
/// Without --model-dir, a small built-in model with random weights is used: its output is
/// noise, it shows the pipeline.
#[derive(Debug, Clone, Parser)]
#[command(name = "generate", version)]
pub struct Args {
    /// A Kyutai Moshi checkpoint directory: `model.safetensors` (candle layout), optionally
    /// `config.json` (moshi's lm::Config JSON; Moshi 7B v0.1 when absent) and the Mimi file
    /// (`mimi.safetensors`, the `model.safetensors` of the kyutai/mimi repository). Without
    /// it, the built-in demo model is used.
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,

    /// The Mimi file (Hugging Face layout) when it is not `DIR/mimi.safetensors`.
    #[arg(long, value_name = "FILE", requires = "model_dir")]
    pub mimi: Option<PathBuf>,

    /// The dtype of a checkpoint's weights: f32, f16 or bf16 (the built-in model is f32).
    #[arg(long, default_value = "bf16", value_parser = parse_dtype)]
    pub dtype: DType,

    /// Steps to generate (80 ms of audio each).
    #[arg(long, default_value_t = 125)]
    pub steps: usize,

    /// Sampling seed: the text sampler uses it, the audio sampler seed + 1.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,

    /// Audio temperature (0: greedy).
    #[arg(long, default_value_t = MOSHI_AUDIO_TEMPERATURE, allow_negative_numbers = true)]
    pub temperature: f64,

    /// Audio top-k (0: no top-k).
    #[arg(long, default_value_t = MOSHI_AUDIO_TOP_K)]
    pub top_k: usize,

    /// Audio top-p, in (0, 1] (default: none).
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f64>,

    /// Audio repetition penalty over each codebook's last 64 tokens (default: none).
    #[arg(long, allow_negative_numbers = true)]
    pub repetition_penalty: Option<f32>,

    /// Text temperature (0: greedy).
    #[arg(long, default_value_t = MOSHI_TEXT_TEMPERATURE, allow_negative_numbers = true)]
    pub text_temperature: f64,

    /// Text top-k (0: no top-k).
    #[arg(long, default_value_t = MOSHI_TEXT_TOP_K)]
    pub text_top_k: usize,

    /// Text top-p, in (0, 1] (default: none).
    #[arg(long, allow_negative_numbers = true)]
    pub text_top_p: Option<f64>,

    /// Text repetition penalty over the last 64 text tokens (default: none).
    #[arg(long, allow_negative_numbers = true)]
    pub text_repetition_penalty: Option<f32>,

    /// The WAV file to write (24 kHz, mono, 16-bit).
    #[arg(long, default_value = "generated.wav", value_name = "FILE")]
    pub out: PathBuf,

    /// The sampling engine of both streams: `candle` (candle's `LogitsProcessor` behind the
    /// `Sampler` trait) or `native` (`NativeSampler`: the same distributions, faster, a portable
    /// random stream). The two draw different tokens for the same seed.
    #[arg(long, value_enum, default_value_t = Engine::Candle)]
    pub engine: Engine,

    /// Min-p of both streams, in [0, 1]: keep the tokens at least P times as likely as the most
    /// likely one. With it, the flag-based samplers are kyutai-sampling `Chain`s in the HF
    /// convention (temperature, then top-k, top-p, min-p), built from the temperature, top-k,
    /// top-p and repetition-penalty flags; `--engine` no longer applies to them.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub min_p: Option<f32>,

    /// A `ChainConfig` JSON file for the text stream (kyutai-sampling's chain as data, e.g.
    /// `{"convention": "llama.cpp", "temperature": 0.7, "top_k": 40, "min_p": 0.05}`): its
    /// chain replaces the text flags. Its `seed` defaults to --seed.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["text_temperature", "text_top_k", "text_top_p", "text_repetition_penalty"]
    )]
    pub text_config: Option<PathBuf>,

    /// A `ChainConfig` JSON file for the audio stream: its chain replaces the audio flags. Its
    /// `seed` defaults to --seed + 1.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["temperature", "top_k", "top_p", "repetition_penalty"]
    )]
    pub audio_config: Option<PathBuf>,
}

/// Which sampling engine builds the samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// `SamplingConfig::build`: candle's `LogitsProcessor` behind the `Sampler` trait.
    Candle,
    /// `SamplingConfig::build_native`: `NativeSampler`.
    Native,
}

fn parse_dtype(value: &str) -> Result<DType, String> {
    match value {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(format!("expected f32, f16 or bf16, got `{other}`")),
    }
}

/// What can go wrong, each with a message for the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A sampler setting is out of range.
    #[error("invalid {stream} sampling settings: {reason}")]
    Settings {
        /// `text` or `audio`.
        stream: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A stream's `ChainConfig` file could not be read.
    #[error("could not read the {stream} sampler config `{}`: {source}", path.display())]
    ConfigRead {
        /// `text` or `audio`.
        stream: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stream's `ChainConfig` file is malformed, names an unknown field, or holds a value out
    /// of range.
    #[error("invalid {stream} sampler config `{}`: {reason}", path.display())]
    ConfigFile {
        /// `text` or `audio`.
        stream: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The sampling crate rejected a configuration.
    #[error("invalid {stream} sampling settings: {source}")]
    Sampling {
        /// `text` or `audio`.
        stream: &'static str,
        /// The sampling crate's error.
        #[source]
        source: SamplingError,
    },
    /// Loading or running the model or Mimi failed.
    #[error("{context}: {source}")]
    Model {
        /// What was being done.
        context: String,
        /// The model's error.
        #[source]
        source: kyutai::Error,
    },
    /// Writing the WAV file failed.
    #[error("could not write `{}`: {source}", path.display())]
    Wav {
        /// The file.
        path: PathBuf,
        /// hound's error.
        #[source]
        source: hound::Error,
    },
    /// Writing to the terminal failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The arguments do not parse ([`plan_argv`] only; [`main_with`] prints clap's message and
    /// exits with 2 instead).
    #[error("{0}")]
    Usage(Box<clap::Error>),
}

fn model_error(context: impl Into<String>) -> impl FnOnce(kyutai::Error) -> CliError {
    let context = context.into();
    move |source| CliError::Model { context, source }
}

/// The sampling settings of one stream, as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// `text` or `audio`.
    pub stream: &'static str,
    /// Temperature; 0 is greedy.
    pub temperature: f64,
    /// Top-k; 0 is none.
    pub top_k: usize,
    /// Top-p.
    pub top_p: Option<f64>,
    /// Repetition penalty.
    pub repetition_penalty: Option<f32>,
    /// Min-p (`--min-p`, shared by both streams); when set, the sampler is a
    /// [`Chain`](kyutai_sampling::Chain) ([`chain_config`](Self::chain_config)).
    pub min_p: Option<f32>,
    /// Seed.
    pub seed: u64,
}

impl StreamSettings {
    /// The text stream's settings in `args`.
    pub fn text(args: &Args) -> Self {
        Self {
            stream: "text",
            temperature: args.text_temperature,
            top_k: args.text_top_k,
            top_p: args.text_top_p,
            repetition_penalty: args.text_repetition_penalty,
            min_p: args.min_p,
            seed: args.seed,
        }
    }

    /// The audio stream's settings in `args`.
    pub fn audio(args: &Args) -> Self {
        Self {
            stream: "audio",
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
            min_p: args.min_p,
            seed: args.seed.wrapping_add(1),
        }
    }

    /// The sampler configuration: greedy for temperature 0, else top-k and/or top-p at that
    /// temperature (plain temperature sampling with neither).
    ///
    /// # Errors
    ///
    /// [`CliError::Settings`] for a negative or non-finite temperature, a top-p outside
    /// `(0, 1]`, a min-p outside `[0, 1]` or a penalty that is not finite and positive (checked
    /// even when greedy makes them unused); [`CliError::Sampling`] for what the sampling crate
    /// rejects.
    pub fn config(&self) -> Result<SamplingConfig, CliError> {
        let bad = |reason: String| CliError::Settings {
            stream: self.stream,
            reason,
        };
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(bad(format!(
                "the temperature must be finite and >= 0, got {t}"
            )));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(bad(format!("top-p must be in (0, 1], got {p}")));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(format!("min-p must be in [0, 1], got {p}")));
            }
        }
        if let Some(r) = self.repetition_penalty {
            if !(r.is_finite() && r > 0.0) {
                return Err(bad(format!(
                    "the repetition penalty must be finite and > 0, got {r}"
                )));
            }
        }
        let sampling = match (t, self.top_k, self.top_p) {
            (0.0, _, _) => Sampling::ArgMax,
            (temperature, 0, None) => Sampling::All { temperature },
            (temperature, k, None) => Sampling::TopK { k, temperature },
            (temperature, 0, Some(p)) => Sampling::TopP { p, temperature },
            (temperature, k, Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
        };
        let config = SamplingConfig {
            sampling,
            repetition_penalty: self.repetition_penalty,
            repetition_context_size: REPETITION_CONTEXT,
            seed: self.seed,
        };
        config.validate().map_err(|source| CliError::Sampling {
            stream: self.stream,
            source,
        })?;
        Ok(config)
    }

    /// The [`Chain`](kyutai_sampling::Chain) of these settings, in the HF convention: greedy
    /// (`do_sample: false`) for temperature 0, else the temperature, top-k, top-p and min-p;
    /// the repetition penalty over the last [`REPETITION_CONTEXT`] tokens.
    ///
    /// # Errors
    ///
    /// Those of [`config`](Self::config), which validates the same settings.
    pub fn chain_config(&self) -> Result<ChainConfig, CliError> {
        self.config()?;
        let mut config = ChainConfig {
            convention: Convention::HuggingFace,
            seed: self.seed,
            ..ChainConfig::default()
        };
        if self.temperature == 0.0 {
            config.do_sample = false;
        } else {
            config.temperature = self.temperature as f32;
            config.top_k = self.top_k;
            config.top_p = self.top_p.map_or(1.0, |p| p as f32);
            config.min_p = self.min_p.unwrap_or(0.0);
        }
        if let Some(penalty) = self.repetition_penalty {
            config.repetition_penalty = penalty;
            config.repeat_last_n = Some(REPETITION_CONTEXT);
        }
        Ok(config)
    }

    /// The settings in words, for the run's header.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.temperature == 0.0 {
            parts.push("greedy".to_string());
        } else {
            if self.top_k > 0 {
                parts.push(format!("top-k {}", self.top_k));
            }
            if let Some(p) = self.top_p {
                parts.push(format!("top-p {p}"));
            }
            if let Some(p) = self.min_p {
                parts.push(format!("min-p {p}"));
            }
            parts.push(format!("temperature {}", self.temperature));
        }
        match self.repetition_penalty {
            Some(r) => parts.push(format!(
                "repetition penalty {r} over the last {REPETITION_CONTEXT} tokens"
            )),
            None => parts.push("no repetition penalty".into()),
        }
        if self.temperature != 0.0 {
            parts.push(format!("seed {}", self.seed));
        }
        parts.join(", ")
    }
}

/// How one stream's sampler is made.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamSampler {
    /// From the flags, by the `--engine` engine.
    Flags(SamplingConfig),
    /// A [`Chain`](kyutai_sampling::Chain): from the flags with `--min-p` (`file: None`), or
    /// from the stream's config file.
    Chain {
        /// The chain (boxed: it is large).
        config: Box<ChainConfig>,
        /// The file it was read from.
        file: Option<PathBuf>,
    },
}

impl StreamSampler {
    /// The sampler of a stream: `file`'s chain when given, else the chain of
    /// [`StreamSettings::chain_config`] with `--min-p`, else the flags'
    /// [`StreamSettings::config`]. The flags are validated in every case; a file's chain is
    /// validated too (built once and dropped), so that every bad setting fails before the
    /// model is built.
    ///
    /// # Errors
    ///
    /// Those of [`StreamSettings::config`] and [`read_chain_config`].
    pub fn new(settings: &StreamSettings, file: Option<&Path>) -> Result<Self, CliError> {
        let flags = settings.config()?;
        if let Some(path) = file {
            let config = read_chain_config(settings.stream, path, settings.seed)?;
            return Ok(Self::Chain {
                config: Box::new(config),
                file: Some(path.to_path_buf()),
            });
        }
        if settings.min_p.is_some() {
            return Ok(Self::Chain {
                config: Box::new(settings.chain_config()?),
                file: None,
            });
        }
        Ok(Self::Flags(flags))
    }

    /// Builds the sampler; `engine` applies to [`Flags`](Self::Flags) only.
    ///
    /// # Errors
    ///
    /// [`CliError::Sampling`] (or [`CliError::ConfigFile`] naming the file) for what the
    /// sampling crate rejects.
    pub fn build(&self, stream: &'static str, engine: Engine) -> Result<BoxSampler, CliError> {
        match self {
            Self::Flags(config) => match engine {
                Engine::Candle => config.build(),
                Engine::Native => config.build_native(),
            }
            .map_err(|source| CliError::Sampling { stream, source }),
            Self::Chain { config, file } => match config.build() {
                Ok(chain) => Ok(Box::new(chain)),
                Err(source) => Err(match file {
                    Some(path) => CliError::ConfigFile {
                        stream,
                        path: path.clone(),
                        reason: source.to_string(),
                    },
                    None => CliError::Sampling { stream, source },
                }),
            },
        }
    }

    /// The sampler in words, for the run's header.
    pub fn describe(&self, settings: &StreamSettings) -> String {
        match self {
            Self::Chain {
                config,
                file: Some(path),
            } => format!("from `{}`: {}", path.display(), describe_chain(config)),
            Self::Flags(_) | Self::Chain { file: None, .. } => settings.describe(),
        }
    }

    /// The engine in words.
    pub fn engine(&self, engine: Engine) -> String {
        match self {
            Self::Flags(_) => match engine {
                Engine::Candle => "candle's LogitsProcessor (through the adapter)".into(),
                Engine::Native => "NativeSampler".into(),
            },
            Self::Chain { config, .. } => {
                format!("Chain ({} convention)", convention_name(config.convention))
            }
        }
    }
}

/// A [`Convention`] as spelled in a `ChainConfig` file (`hf`, `llama.cpp`, `candle`).
pub fn convention_name(convention: Convention) -> String {
    match serde_json::to_value(convention) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{convention:?}"),
    }
}

/// The fields of `config` that differ from [`ChainConfig::default`], as `name value` pairs
/// (`neutral` when none does).
pub fn describe_chain(config: &ChainConfig) -> String {
    let (Ok(serde_json::Value::Object(this)), Ok(serde_json::Value::Object(neutral))) = (
        serde_json::to_value(config),
        serde_json::to_value(ChainConfig::default()),
    ) else {
        return format!("{config:?}");
    };
    // Fields in alphabetical order, whatever order the JSON map keeps.
    let mut fields: Vec<(&String, &serde_json::Value)> = this
        .iter()
        .filter(|(name, value)| neutral.get(name.as_str()) != Some(value))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = fields
        .into_iter()
        .map(|(name, value)| format!("{name} {}", compact(value)))
        .collect();
    if parts.is_empty() {
        "neutral (plain sampling at temperature 1)".into()
    } else {
        parts.join(", ")
    }
}

/// A JSON value for the header: strings unquoted, floats as the `f32` they were serialised
/// from (`0.7`, not `0.699999988079071`).
fn compact(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let list = |items: Vec<String>| items.join(", ");
    match value {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .map_or_else(|| n.to_string(), |x| format!("{:?}", x as f32)),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", list(items.iter().map(compact).collect())),
        Value::Object(fields) => format!(
            "{{{}}}",
            list(
                fields
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", compact(v)))
                    .collect()
            )
        ),
        other => other.to_string(),
    }
}

/// Reads a stream's [`ChainConfig`] JSON file and validates it ([`ChainConfig::build`]); a
/// file without a `seed` gets `seed`, the stream's.
///
/// # Errors
///
/// [`CliError::ConfigRead`] naming the file when it cannot be read; [`CliError::ConfigFile`]
/// naming the file and the field for malformed JSON, an unknown field, a value of the wrong
/// type or one out of range.
pub fn read_chain_config(
    stream: &'static str,
    path: &Path,
    seed: u64,
) -> Result<ChainConfig, CliError> {
    let text = read_bounded(path).map_err(|source| CliError::ConfigRead {
        stream,
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| CliError::ConfigFile {
        stream,
        path: path.to_path_buf(),
        reason,
    };
    let (mut config, has_seed) = parse_chain_config(&text).map_err(bad)?;
    if !has_seed {
        config.seed = seed;
    }
    config.build().map_err(|e| bad(e.to_string()))?;
    Ok(config)
}

/// Parses a [`ChainConfig`] JSON object, and says whether it sets `seed`. An error names the
/// offending field: serde names unknown ones; for a value of the wrong type, each field is
/// parsed alone to find it (the message and its position in the file are serde's, from the
/// whole file).
fn parse_chain_config(text: &str) -> Result<(ChainConfig, bool), String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(fields) = value else {
        return Err("expected a JSON object of ChainConfig fields".into());
    };
    match serde_json::from_str::<ChainConfig>(text) {
        Ok(config) => Ok((config, fields.contains_key("seed"))),
        Err(whole) => {
            let message = whole.to_string();
            if message.starts_with("unknown field") {
                return Err(message);
            }
            for (name, value) in &fields {
                let alone = serde_json::json!({ name.as_str(): value }).to_string();
                if serde_json::from_str::<ChainConfig>(&alone).is_err() {
                    return Err(format!("field `{name}`: {message}"));
                }
            }
            Err(message)
        }
    }
}

/// The built-in demo model: Moshi 7B's layout (8 generated and 8 user audio codebooks of 2048
/// codes, delays 0/1, a depformer of 8 slices) shrunk to a text vocabulary of 4000 and a
/// temporal transformer of width 256 (4 layers, 4 heads, context 375 steps = 30 s); depformer
/// width 128 (2 layers). About 13 M parameters.
pub fn demo_lm_config() -> LmConfig {
    let mut config = LmConfig::moshi_7b_v0_1();
    let t = &mut config.transformer;
    (
        t.d_model,
        t.num_heads,
        t.num_layers,
        t.dim_feedforward,
        t.context,
    ) = (256, 4, 4, 1024, 375);
    if let Some(dep) = config.depformer.as_mut() {
        let t = &mut dep.transformer;
        (t.d_model, t.num_heads, t.num_layers, t.dim_feedforward) = (128, 4, 2, 512);
    }
    (config.text_in_vocab_size, config.text_out_vocab_size) = (4001, 4000);
    config
}

/// The built-in demo Mimi: Kyutai's layout (24 kHz, 12.5 Hz, 8 codebooks of 2048) with a tiny
/// network ([`Mimi::small_config`]).
pub fn demo_mimi_config() -> MimiConfig {
    Mimi::small_config(8)
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The text token of every step.
    pub text_tokens: Vec<u32>,
    /// Audio frames decoded.
    pub frames: usize,
    /// PCM samples written.
    pub samples: usize,
    /// The WAV file.
    pub out: PathBuf,
}

/// Parses `argv` (program name first), runs, reports on `out` and `err`, and returns the
/// process exit code: 0 on success, 1 when the run fails (the error is written to `err`), 2
/// for arguments that do not parse (with clap's message). Never panics on user input.
pub fn main_with<I, T>(argv: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = match crate::parse_args::<Args, _, _>(argv, out, err) {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(&args, out, err) {
        Ok(_) => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let _ = writeln!(err, "  caused by: {cause}");
                source = cause.source();
            }
            1
        }
    }
}

/// Everything a run needs that can be checked without building or loading a model: the
/// settings of both streams, their samplers (built), the step count and the model's
/// configuration. [`plan`] makes it; [`run`] makes one first, so that every bad argument fails
/// before any model is built.
#[derive(Debug)]
pub struct Plan {
    /// The text stream's flag settings.
    pub text: StreamSettings,
    /// The audio stream's flag settings.
    pub audio: StreamSettings,
    /// How the text sampler was made.
    pub text_sampler: StreamSampler,
    /// How the audio sampler was made.
    pub audio_sampler: StreamSampler,
    /// The samplers, built.
    pub samplers: Samplers,
    /// Steps to generate, in `1..=`[`kyutai::MAX_GENERATE_STEPS`].
    pub steps: usize,
    /// The model's configuration (validated: [`LmConfig::validate`]) and where it comes from:
    /// `DIR/config.json`, the Moshi 7B preset for a directory without one, or the demo's.
    pub model_config: (LmConfig, String),
}

/// Validates `args` without building or loading any model: the sampling flags and config
/// files (each stream's sampler is built), `--steps`, and the model's configuration
/// (`DIR/config.json` is read and validated when `--model-dir` has one). Reads only the files
/// the arguments name (at most [`MAX_CONFIG_FILE_BYTES`] each); writes nothing. Never panics.
///
/// # Errors
///
/// [`CliError::Settings`], [`CliError::Sampling`], [`CliError::ConfigRead`] and
/// [`CliError::ConfigFile`] for the samplers and `--steps`; [`CliError::Model`] for a
/// `config.json` that does not parse or describes a model out of the crate's bounds.
pub fn plan(args: &Args) -> Result<Plan, CliError> {
    let text = StreamSettings::text(args);
    let audio = StreamSettings::audio(args);
    if args.min_p.is_some() && args.text_config.is_some() && args.audio_config.is_some() {
        return Err(CliError::Settings {
            stream: "run",
            reason: "--min-p applies to the flag-based samplers, but both streams have a \
                     config file (set min_p in the files)"
                .into(),
        });
    }
    let text_sampler = StreamSampler::new(&text, args.text_config.as_deref())?;
    let audio_sampler = StreamSampler::new(&audio, args.audio_config.as_deref())?;
    let samplers = Samplers::new(
        text_sampler.build("text", args.engine)?,
        audio_sampler.build("audio", args.engine)?,
    );
    if args.steps == 0 {
        return Err(CliError::Settings {
            stream: "run",
            reason: "--steps must be at least 1".into(),
        });
    }
    if args.steps > kyutai::MAX_GENERATE_STEPS {
        return Err(CliError::Settings {
            stream: "run",
            reason: format!(
                "--steps must be at most {} (about 21 minutes of audio), got {}",
                kyutai::MAX_GENERATE_STEPS,
                args.steps
            ),
        });
    }
    let model_config = match &args.model_dir {
        None => {
            let config = demo_lm_config();
            config
                .validate()
                .map_err(model_error("the built-in demo configuration"))?;
            (config, "built-in demo".to_string())
        }
        Some(dir) => checkpoint_config(dir)?,
    };
    Ok(Plan {
        text,
        audio,
        text_sampler,
        audio_sampler,
        samplers,
        steps: args.steps,
        model_config,
    })
}

/// Parses `argv` (program name first) and [`plan`]s the run, without building or running any
/// model: the pure entry point for checking a command line (and for fuzzing it). Never panics.
///
/// # Errors
///
/// [`CliError::Usage`] for arguments that do not parse (and for `--help` and `--version`,
/// whose text is clap's message), then those of [`plan`].
pub fn plan_argv<I, T>(argv: I) -> Result<Plan, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::try_parse_from(argv).map_err(|e| CliError::Usage(Box::new(e)))?;
    plan(&args)
}

/// One run: [`plan`]s it (so that every bad argument fails before a model is built), builds or
/// loads the model and Mimi, generates `args.steps` steps and writes the WAV.
///
/// # Errors
///
/// See [`CliError`].
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Summary, CliError> {
    let Plan {
        text,
        audio,
        text_sampler,
        audio_sampler,
        samplers,
        steps,
        model_config: (config, config_source),
    } = plan(args)?;

    let device = Device::Cpu;
    writeln!(
        out,
        "kyutai generate: Moshi-style full-duplex generation; every text and audio token comes \
         from an injected sampler"
    )?;
    let (model, mimi) = match &args.model_dir {
        None => demo_models(&config, &device, out)?,
        Some(dir) => checkpoint_models(
            dir,
            (&config, &config_source),
            args.mimi.as_deref(),
            args.dtype,
            &device,
            out,
        )?,
    };
    let generated = model.generated_audio_codebooks();
    writeln!(out, "text sampler:  {}", text_sampler.describe(&text))?;
    writeln!(
        out,
        "audio sampler: {} (one sampler for the {generated} codebooks, each with its own history)",
        audio_sampler.describe(&audio)
    )?;
    let (text_engine, audio_engine) = (
        text_sampler.engine(args.engine),
        audio_sampler.engine(args.engine),
    );
    if text_engine == audio_engine {
        writeln!(out, "engine:        {text_engine}")?;
    } else {
        writeln!(
            out,
            "engine:        text: {text_engine}; audio: {audio_engine}"
        )?;
    }
    writeln!(out, "user stream:   silence")?;

    let mut generator = BasicGenerator::new(model, mimi, &device, samplers)
        .map_err(model_error("the model and Mimi do not fit"))?;
    let mut progress = Progress::new(steps, err);
    let start = Instant::now();
    let output = generator
        .generate_with_progress(&GenPrompt::default(), steps, &mut |done, _| {
            progress.update(done)
        })
        .map_err(model_error("generation failed"))?;
    let elapsed = start.elapsed().as_secs_f64();
    progress.finish();

    writeln!(
        out,
        "text tokens ({}): {}",
        output.text_tokens.len(),
        list(&output.text_tokens, 200)
    )?;
    let seconds = output.pcm.len() as f64 / f64::from(output.sample_rate);
    writeln!(
        out,
        "{steps} steps in {elapsed:.2} s: {:.1} steps/s ({:.2}x real time); {} audio frames, \
         {seconds:.2} s of audio",
        steps as f64 / elapsed.max(1e-9),
        (steps as f64 * 0.08) / elapsed.max(1e-9),
        output.audio_codes.len(),
    )?;
    write_wav(&args.out, &output.pcm, output.sample_rate)?;
    writeln!(
        out,
        "wrote {} ({} Hz, mono, 16-bit, {} samples)",
        args.out.display(),
        output.sample_rate,
        output.pcm.len()
    )?;
    Ok(Summary {
        text_tokens: output.text_tokens,
        frames: output.audio_codes.len(),
        samples: output.pcm.len(),
        out: args.out.clone(),
    })
}

fn demo_models(
    config: &LmConfig,
    device: &Device,
    out: &mut dyn Write,
) -> Result<(LmModel, Mimi), CliError> {
    let model = LmModel::random(config, DEMO_WEIGHTS_SEED, DType::F32, device)
        .map_err(model_error("building the demo model"))?;
    let mimi = Mimi::random(demo_mimi_config(), DEMO_WEIGHTS_SEED, device)
        .map_err(model_error("building the demo Mimi"))?;
    let t = &config.transformer;
    writeln!(
        out,
        "model: built-in demo, Moshi's layout shrunk ({} generated + {} user audio codebooks, \
         text vocabulary {}, width {}, {} layers), random weights from seed {DEMO_WEIGHTS_SEED}",
        model.generated_audio_codebooks(),
        model.in_audio_codebooks() - model.generated_audio_codebooks(),
        model.text_out_vocab_size(),
        t.d_model,
        t.num_layers,
    )?;
    writeln!(
        out,
        "mimi:  built-in demo, a small Mimi with random weights ({} codebooks of {} codes, \
         {} Hz, {} frames/s)",
        mimi.num_codebooks(),
        mimi.cardinality(),
        mimi.sample_rate(),
        mimi.frame_rate()
    )?;
    writeln!(
        out,
        "NOTE:  the demo's weights are random, so its text tokens and audio are NOISE. It shows \
         the pipeline (the full-duplex loop, text and audio sampled by separate injected \
         samplers, Mimi decoding, the WAV), not speech; pass --model-dir for a real model."
    )?;
    Ok((model, mimi))
}

/// The configuration of the checkpoint in `dir`: `DIR/config.json`, validated, or the Moshi
/// 7B preset when there is none.
fn checkpoint_config(dir: &Path) -> Result<(LmConfig, String), CliError> {
    let config_file = dir.join("config.json");
    if !config_file.exists() {
        return Ok((
            LmConfig::moshi_7b_v0_1(),
            "preset Moshi 7B v0.1 (no config.json)".to_string(),
        ));
    }
    let context = format!(
        "reading `{}` (moshi's lm::Config JSON)",
        config_file.display()
    );
    let json = read_bounded(&config_file).map_err(|source| CliError::Model {
        context: context.clone(),
        source: kyutai::Error::Io {
            path: config_file.clone(),
            source,
        },
    })?;
    let config = LmConfig::from_json_str(&json).map_err(model_error(context))?;
    Ok((config, config_file.display().to_string()))
}

/// The largest configuration file (`config.json`, a sampler's `ChainConfig`) the command
/// reads: 1 MiB. Larger files (or endless ones, such as `/dev/zero`) are an error.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Reads a UTF-8 text file of at most [`MAX_CONFIG_FILE_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than {MAX_CONFIG_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn checkpoint_models(
    dir: &Path,
    (config, config_source): (&LmConfig, &str),
    mimi_file: Option<&Path>,
    dtype: DType,
    device: &Device,
    out: &mut dyn Write,
) -> Result<(LmModel, Mimi), CliError> {
    let weights = dir.join("model.safetensors");
    writeln!(
        out,
        "model: {} ({config_source}, {dtype:?})",
        weights.display()
    )?;
    let model = LmModel::load(config, &weights, dtype, device)
        .map_err(model_error(format!("loading `{}`", weights.display())))?;
    let mimi_path = mimi_file.map_or_else(|| dir.join("mimi.safetensors"), Path::to_path_buf);
    writeln!(out, "mimi:  {}", mimi_path.display())?;
    let mimi = Mimi::load(&mimi_path, model.generated_audio_codebooks(), device).map_err(
        model_error(format!(
            "loading `{}` (Mimi in the Hugging Face layout of kyutai/mimi's model.safetensors; \
             the tokenizer-*.safetensors files of the LM repositories are in Kyutai's native \
             layout and need converting first)",
            mimi_path.display()
        )),
    )?;
    Ok((model, mimi))
}

/// `tokens` as `[a, b, ...]`, at most `max` of them.
fn list(tokens: &[u32], max: usize) -> String {
    let shown: Vec<String> = tokens.iter().take(max).map(u32::to_string).collect();
    let more = tokens.len().saturating_sub(max);
    if more > 0 {
        format!("[{}, ... ({more} more)]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// Writes `pcm` (clamped to [-1, 1]) as a mono 16-bit WAV.
///
/// # Errors
///
/// [`CliError::Wav`] when the file cannot be written.
pub fn write_wav(path: &Path, pcm: &[f32], sample_rate: u32) -> Result<(), CliError> {
    let wav_error = |source| CliError::Wav {
        path: path.to_path_buf(),
        source,
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(wav_error)?;
    for &x in pcm {
        let sample = (x.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16;
        writer.write_sample(sample).map_err(wav_error)?;
    }
    writer.finalize().map_err(wav_error)
}

/// A one-line progress bar on stderr, for runs of [`PROGRESS_MIN_STEPS`] steps or more.
struct Progress<'a> {
    total: usize,
    shown: usize,
    err: Option<&'a mut dyn Write>,
    start: Instant,
}

impl<'a> Progress<'a> {
    fn new(total: usize, err: &'a mut dyn Write) -> Self {
        Self {
            total,
            shown: usize::MAX,
            err: (total >= PROGRESS_MIN_STEPS).then_some(err),
            start: Instant::now(),
        }
    }

    fn update(&mut self, done: usize) {
        let Some(err) = self.err.as_mut() else {
            return;
        };
        const WIDTH: usize = 30;
        let filled = done * WIDTH / self.total.max(1);
        // Redraw when the bar grows, and at the end.
        if filled == self.shown && done != self.total {
            return;
        }
        self.shown = filled;
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let _ = write!(
            err,
            "\r[{}{}] {done}/{} steps, {rate:.0} steps/s",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            self.total
        );
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if let Some(err) = self.err.as_mut() {
            let _ = writeln!(err);
        }
    }
}
