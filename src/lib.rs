//! Examples and benchmarks for the `kyutai-sampling` workspace. This package is not published:
//! the crates live under `crates/`.

pub mod candle_llm;
pub mod fuzzing;
pub mod generate;

/// Parses `argv` into `A`; on failure writes clap's message (to `err` for errors, to `out` for
/// `--help` and `--version`) and returns the exit code (2 for errors, 0 otherwise).
fn parse_args<A, I, T>(
    argv: I,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> Result<A, u8>
where
    A: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    A::try_parse_from(argv).map_err(|e| {
        let code = if e.use_stderr() { 2 } else { 0 };
        let target: &mut dyn std::io::Write = if e.use_stderr() { err } else { out };
        let _ = write!(target, "{}", e.render());
        code
    })
}
