//! Moshi-style speech generation: text and audio tokens, each chosen by an injected sampler,
//! decoded by Mimi and written to a WAV file.
//!
//! Run with `cargo run --release --example generate` (a built-in demo model with random weights:
//! its output is noise; it needs no download), or pass `--model-dir DIR` for a real Kyutai
//! checkpoint. `--help` lists the sampling flags. The logic lives in
//! `kyutai_examples::generate`, where it is tested.

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = kyutai_examples::generate::main_with(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    ExitCode::from(code)
}
