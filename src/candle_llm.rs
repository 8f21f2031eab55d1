//! The logic of `examples/candle_llm.rs`: a generation loop driving a candle-transformers model
//! with a [`Chain`] loaded from a Hugging Face `generation_config.json`.
//!
//! The model is a tiny llama ([`candle_transformers::models::llama`]: a vocabulary of
//! [`VOCAB_SIZE`], width 64, 2 layers, 4 heads) whose weights are drawn from a fixed seed, so
//! the command needs no download. **Its tokens are noise**: the example shows the loop (prompt,
//! KV cache, one forward pass and one [`Chain::sample_detailed`] per token, end-of-sequence
//! handling), not text.
//!
//! The chain comes from [`ChainConfig::from_generation_config`] (transformers' semantics and
//! defaults) and [`ChainConfig::build`]; every step prints the token drawn, its log-probability
//! under the chain's final distribution and under the model's raw softmax, and the model's five
//! most likely tokens (raw log-probabilities). [`main_with`] is what the example's `main` calls; the tests call it too.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use candle_transformers::models::llama::{Cache, Config, Llama, LlamaEosToks};
use clap::Parser;
use kyutai_sampling::{Chain, ChainConfig, SamplingError};

use crate::generate::describe_chain;

/// The generation config used without `--config`: `examples/generation_config.json`.
pub const SHIPPED_GENERATION_CONFIG: &str = include_str!("../examples/generation_config.json");

/// The seed of the tiny llama's weights, fixed so that every clone builds the same model.
pub const WEIGHTS_SEED: u64 = 20_250_101;

/// The default sampling seed.
pub const DEFAULT_SEED: u64 = 42;

/// The tiny llama's vocabulary size.
pub const VOCAB_SIZE: usize = 1024;

/// The tiny llama's beginning-of-sequence token (the default prompt).
pub const BOS_TOKEN: u32 = 1;

/// The tiny llama's end-of-sequence token.
pub const EOS_TOKEN: u32 = 2;

/// How many of the model's most likely tokens each step prints.
pub const TOP_N: usize = 5;

/// Generate tokens with a tiny llama (candle-transformers, random weights: its output is noise)
/// sampled by a kyutai-sampling `Chain` built from a Hugging Face `generation_config.json`.
#[derive(Debug, Clone, Parser)]
#[command(name = "candle_llm", version)]
pub struct Args {
    /// Tokens to generate (at most; generation stops early at an end-of-sequence token, and at
    /// the config's `max_new_tokens` / `max_length`).
    #[arg(long, default_value_t = 32)]
    pub steps: usize,

    /// A Hugging Face `generation_config.json` (default: the shipped
    /// `examples/generation_config.json`, built in).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Sampling seed (the chain's random stream).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,

    /// Prompt token ids, comma-separated (default: the beginning-of-sequence token, 1).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub prompt: Vec<u32>,
}

/// What can go wrong, each with a message for the user.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The generation config could not be read.
    #[error("could not read the generation config `{}`: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The generation config is malformed, or a field is out of range.
    #[error("invalid generation config `{origin}`: {source}")]
    Config {
        /// The file, or `built-in` for the shipped config.
        origin: String,
        /// The sampling crate's error.
        #[source]
        source: SamplingError,
    },
    /// A command-line setting is out of range.
    #[error("{0}")]
    Settings(String),
    /// Building or running the model failed.
    #[error("{context}: {source}")]
    Model {
        /// What was being done.
        context: &'static str,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// Sampling a token failed.
    #[error("sampling step {step} failed: {source}")]
    Sampling {
        /// The step (0-based).
        step: usize,
        /// The sampling crate's error.
        #[source]
        source: SamplingError,
    },
    /// Writing to the terminal failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn model_error(context: &'static str) -> impl FnOnce(candle_core::Error) -> LlmError {
    move |source| LlmError::Model { context, source }
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The token drawn.
    pub token: u32,
    /// Its log-probability under the chain's final distribution.
    pub logprob: f32,
    /// Its log-probability under the softmax of the model's raw logits.
    pub raw_logprob: f32,
    /// The model's most likely tokens with their raw log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The prompt.
    pub prompt: Vec<u32>,
    /// Every generated token, in order.
    pub steps: Vec<Step>,
    /// Whether generation stopped at an end-of-sequence token.
    pub stopped_at_eos: bool,
    /// Seconds spent in the loop (forward passes and sampling).
    pub seconds: f64,
}

impl Summary {
    /// The generated tokens.
    pub fn tokens(&self) -> Vec<u32> {
        self.steps.iter().map(|s| s.token).collect()
    }
}

/// The tiny llama's configuration: vocabulary [`VOCAB_SIZE`], width 64 (4 heads of 16, 2 of
/// them key/value heads), feed-forward 176, 2 layers, context 512.
pub fn tiny_llama_config() -> Config {
    Config {
        hidden_size: 64,
        intermediate_size: 176,
        vocab_size: VOCAB_SIZE,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        use_flash_attn: false,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        bos_token_id: Some(BOS_TOKEN),
        eos_token_id: Some(LlamaEosToks::Single(EOS_TOKEN)),
        rope_scaling: None,
        max_position_embeddings: 512,
        tie_word_embeddings: false,
    }
}

/// Builds the tiny llama with weights drawn from `seed` ([`SeededWeights`]).
///
/// # Errors
///
/// candle's, if a weight cannot be created on `device`.
pub fn tiny_llama(config: &Config, seed: u64, device: &Device) -> candle_core::Result<Llama> {
    let vb = VarBuilder::from_backend(Box::new(SeededWeights { seed }), DType::F32, device.clone());
    Llama::load(vb, config)
}

/// A [`VarBuilder`] backend that creates every tensor it is asked for from a seed, following
/// the layer's initialisation hint (constants stay constants: norms start at 1; normal,
/// uniform and Kaiming hints draw from a splitmix64 stream seeded by the seed and the tensor's
/// name). The same seed gives the same model on every machine.
#[derive(Debug, Clone, Copy)]
pub struct SeededWeights {
    /// The seed.
    pub seed: u64,
}

impl SimpleBackend for SeededWeights {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hint: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let n = shape.elem_count();
        let mut rng = SplitMix64(self.seed ^ fnv1a(name));
        let values: Vec<f32> = match hint {
            Init::Const(value) => vec![value as f32; n],
            Init::Uniform { lo, up } => (0..n).map(|_| rng.uniform(lo, up) as f32).collect(),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * rng.normal()) as f32)
                .collect(),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(&shape) as f64).sqrt();
                match dist {
                    candle_nn::init::NormalOrUniform::Normal => {
                        (0..n).map(|_| (std * rng.normal()) as f32).collect()
                    }
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect()
                    }
                }
            }
        };
        Tensor::from_vec(values, shape, device)?.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::Msg(format!(
            "seeded weights need a shape to create `{name}`"
        )))
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// FNV-1a of `name`, to give every tensor its own stream.
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64: a small, portable generator, good enough for random weights.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, up: f64) -> f64 {
        lo + (up - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // in (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The generation config of `args` (the file, or the shipped one), with `args.seed`, and the
/// step limit it sets (`max_new_tokens`, else `max_length` minus the prompt), if any.
///
/// # Errors
///
/// [`LlmError::ReadConfig`] naming the file; [`LlmError::Config`] for what
/// [`ChainConfig::from_generation_config`] rejects.
pub fn load_config(args: &Args) -> Result<(ChainConfig, String, Option<usize>), LlmError> {
    let (json, origin) = match &args.config {
        None => (
            SHIPPED_GENERATION_CONFIG.to_string(),
            "examples/generation_config.json (built in)".to_string(),
        ),
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| LlmError::ReadConfig {
                path: path.clone(),
                source,
            })?,
            path.display().to_string(),
        ),
    };
    let mut config =
        ChainConfig::from_generation_config(&json).map_err(|source| LlmError::Config {
            origin: origin.clone(),
            source,
        })?;
    config.seed = args.seed;
    // The length limits do not change the distribution, so the chain ignores them; the loop
    // honours them. The JSON is valid here (from_generation_config parsed it).
    let value: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    let limit = field("max_new_tokens")
        .or_else(|| field("max_length").map(|n| n.saturating_sub(args.prompt.len())));
    Ok((config, origin, limit))
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
    match run(&args, out) {
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

/// One run: loads the chain (first, so that a bad config fails fast), builds the model, and
/// generates up to `args.steps` tokens after the prompt, printing each.
///
/// # Errors
///
/// See [`LlmError`].
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Summary, LlmError> {
    let (config, origin, limit) = load_config(args)?;
    let mut chain: Chain = config.build().map_err(|source| LlmError::Config {
        origin: origin.clone(),
        source,
    })?;
    let llama_config = tiny_llama_config();
    let context = llama_config.max_position_embeddings;
    if args.steps == 0 {
        return Err(LlmError::Settings("--steps must be at least 1".into()));
    }
    if args.prompt.is_empty() {
        return Err(LlmError::Settings(
            "--prompt needs at least one token".into(),
        ));
    }
    if let Some(&token) = args.prompt.iter().find(|&&t| t as usize >= VOCAB_SIZE) {
        return Err(LlmError::Settings(format!(
            "--prompt: token {token} is outside the vocabulary of {VOCAB_SIZE} tokens"
        )));
    }
    if args.prompt.len() + args.steps > context {
        return Err(LlmError::Settings(format!(
            "--steps {}: the prompt ({} tokens) and the steps must fit the model's context of \
             {context} positions",
            args.steps,
            args.prompt.len()
        )));
    }
    let steps = limit.map_or(args.steps, |limit| args.steps.min(limit));

    let device = Device::Cpu;
    let model = tiny_llama(&llama_config, WEIGHTS_SEED, &device)
        .map_err(model_error("building the model"))?;
    let mut cache = Cache::new(true, DType::F32, &llama_config, &device)
        .map_err(model_error("building the KV cache"))?;
    writeln!(
        out,
        "candle_llm: a candle-transformers llama sampled by a kyutai-sampling Chain"
    )?;
    writeln!(
        out,
        "model:   tiny llama (vocabulary {}, width {}, {} layers, {} heads), random weights from \
         seed {WEIGHTS_SEED}: its tokens are NOISE",
        llama_config.vocab_size,
        llama_config.hidden_size,
        llama_config.num_hidden_layers,
        llama_config.num_attention_heads
    )?;
    writeln!(out, "config:  {origin}")?;
    writeln!(out, "chain:   {}", describe_chain(&config))?;
    if steps < args.steps {
        writeln!(
            out,
            "note:    the config's length limit caps generation at {steps} tokens"
        )?;
    }
    writeln!(out, "prompt:  {:?}", args.prompt)?;

    let mut history = args.prompt.clone();
    let mut generated = Vec::with_capacity(steps);
    let mut stopped_at_eos = false;
    let start = Instant::now();
    for step in 0..steps {
        // The first pass reads the whole prompt; later ones only the last token (KV cache).
        let (input, index_pos) = if step == 0 {
            (&history[..], 0)
        } else {
            (&history[history.len() - 1..], history.len() - 1)
        };
        let input = Tensor::new(input, &device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(model_error("building the input"))?;
        let logits = model
            .forward(&input, index_pos, &mut cache)
            .map_err(model_error("the forward pass failed"))?;
        let sampled = chain
            .sample_detailed(&logits, &history, TOP_N)
            .map_err(|source| LlmError::Sampling { step, source })?;
        let top: Vec<String> = sampled
            .top
            .iter()
            .map(|(token, logprob)| format!("{token}:{logprob:.3}"))
            .collect();
        writeln!(
            out,
            "step {step:>3}  token {:>5}  logprob {:>8.4}  raw {:>8.4}  raw top {}",
            sampled.token,
            sampled.logprob,
            sampled.raw_logprob,
            top.join(" ")
        )?;
        history.push(sampled.token);
        generated.push(Step {
            token: sampled.token,
            logprob: sampled.logprob,
            raw_logprob: sampled.raw_logprob,
            top: sampled.top.clone(),
        });
        if config.eos_token_id.contains(&sampled.token) {
            stopped_at_eos = true;
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = generated.len();
    if stopped_at_eos {
        writeln!(out, "end of sequence after {n} tokens")?;
    }
    let tokens: Vec<String> = generated.iter().map(|s| s.token.to_string()).collect();
    writeln!(out, "tokens ({n}): [{}]", tokens.join(", "))?;
    writeln!(
        out,
        "{n} tokens in {seconds:.3} s: {:.1} tokens/s",
        n as f64 / seconds.max(1e-9)
    )?;
    Ok(Summary {
        prompt: args.prompt.clone(),
        steps: generated,
        stopped_at_eos,
        seconds,
    })
}
