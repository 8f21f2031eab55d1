//! A generation loop for a candle-transformers model, sampled by a kyutai-sampling `Chain`
//! loaded from a Hugging Face `generation_config.json`.
//!
//! Run with `cargo run --release --example candle_llm` (a tiny llama with random weights: its
//! tokens are noise; it needs no download), or pass `--config PATH` for another
//! `generation_config.json`, `--steps N`, `--seed S`. Each step prints the token drawn, its
//! log-probability under the chain and under the raw model, and the model's five most likely
//! tokens; the run ends with the speed in tokens per second. The logic lives in
//! `kyutai_examples::candle_llm`, where it is tested.

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = kyutai_examples::candle_llm::main_with(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    ExitCode::from(code)
}
