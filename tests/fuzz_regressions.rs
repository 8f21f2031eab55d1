//! Replays the inputs kept under `tests/fuzz_regressions/<target>/` (the ones that found a
//! defect, from the fuzzers in `fuzz/` or from the property tests) through the fuzz targets'
//! bodies, `kyutai_examples::fuzzing`, so that `cargo test` keeps them fixed.

use std::path::PathBuf;

fn replay(target: &str, body: fn(&[u8]) -> bool) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs under {}", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{} failed", input.display());
    }
}

#[test]
fn chain_config_inputs() {
    replay("chain_config", kyutai_examples::fuzzing::chain_config);
}

#[test]
fn generation_config_inputs() {
    replay(
        "generation_config",
        kyutai_examples::fuzzing::generation_config,
    );
}

#[test]
fn lm_config_inputs() {
    replay("lm_config", kyutai_examples::fuzzing::lm_config);
}

#[test]
fn cli_args_inputs() {
    replay("cli_args", kyutai_examples::fuzzing::cli_args);
}

/// The seed corpora of the fuzzers are valid inputs, accepted by the targets (so that a target
/// whose body rejects every input, and fuzzes nothing, is noticed).
#[test]
fn seed_corpora_are_accepted() {
    for (target, body) in [
        (
            "chain_config",
            kyutai_examples::fuzzing::chain_config as fn(&[u8]) -> bool,
        ),
        (
            "generation_config",
            kyutai_examples::fuzzing::generation_config,
        ),
        ("lm_config", kyutai_examples::fuzzing::lm_config),
        ("cli_args", kyutai_examples::fuzzing::cli_args),
    ] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let count = std::fs::read_dir(&dir).unwrap().count();
        assert!(count > 0, "{target}: empty seed corpus");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let accepted = body(&std::fs::read(&path).unwrap());
            // `--help` is a seed that the parser answers with its message, not a plan.
            let help = path.ends_with("help");
            assert!(accepted || help, "{} was rejected", path.display());
        }
    }
}
