//! Examples and benchmarks for the `kyutai-sampling` workspace. This package is not published:
//! the crates live under `crates/`.

pub mod candle_llm;
pub mod generate;
