//! The `candle_llm` example's logic (`kyutai_examples::candle_llm`), run as the example runs
//! it: a tiny candle-transformers llama sampled by a `Chain` from a `generation_config.json`.

use std::path::PathBuf;

use kyutai_examples::candle_llm::{load_config, main_with, run, Args, EOS_TOKEN, TOP_N};
use kyutai_sampling::Convention;

struct Run {
    code: u8,
    out: String,
    err: String,
}

fn cli(args: &[&str]) -> Run {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("candle_llm").chain(args.iter().copied());
    let code = main_with(argv, &mut out, &mut err);
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn args(extra: &[&str]) -> Args {
    let argv = std::iter::once("candle_llm").chain(extra.iter().copied());
    <Args as clap::Parser>::parse_from(argv)
}

/// The `(token, logprob)` of every `step` line of a run's output.
fn steps(out: &str) -> Vec<(u32, f32)> {
    out.lines()
        .filter(|line| line.starts_with("step "))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                let i = words.iter().position(|w| *w == key).unwrap();
                words[i + 1]
            };
            (
                after("token").parse().unwrap(),
                after("logprob").parse().unwrap(),
            )
        })
        .collect()
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kyutai-candle-llm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_shipped_generation_config_is_read_with_transformers_semantics() {
    let (config, origin, limit) = load_config(&args(&["--seed", "9"])).unwrap();
    assert!(origin.contains("generation_config.json"), "{origin}");
    assert_eq!(config.convention, Convention::HuggingFace);
    assert!(config.do_sample);
    assert_eq!(config.temperature, 0.7);
    assert_eq!(config.top_k, 50);
    assert_eq!(config.top_p, 0.9);
    assert_eq!(config.repetition_penalty, 1.1);
    assert_eq!(config.eos_token_id, vec![EOS_TOKEN]);
    assert_eq!(config.seed, 9, "--seed sets the chain's seed");
    // max_length 256, minus the one-token prompt.
    assert_eq!(limit, Some(255));
    // The file on disk is the one built in.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/generation_config.json"
    );
    let (from_file, _, _) = load_config(&args(&["--seed", "9", "--config", path])).unwrap();
    assert_eq!(from_file, config);
}

#[test]
fn every_step_prints_a_token_and_a_finite_logprob_and_the_same_seed_replays() {
    let first = cli(&["--steps", "6", "--seed", "3"]);
    assert_eq!(first.code, 0, "{}", first.err);
    let printed = steps(&first.out);
    assert!(!printed.is_empty() && printed.len() <= 6, "{}", first.out);
    for &(token, logprob) in &printed {
        assert!((token as usize) < kyutai_examples::candle_llm::VOCAB_SIZE);
        assert!(logprob.is_finite() && logprob <= 0.0, "{logprob}");
    }
    assert!(first.out.contains("tokens/s"), "{}", first.out);
    assert!(first.out.contains("NOISE"), "{}", first.out);
    assert!(first.out.contains("chain:"), "{}", first.out);

    let again = cli(&["--steps", "6", "--seed", "3"]);
    assert_eq!(
        steps(&again.out),
        printed,
        "the same seed gives the same tokens"
    );

    // The summary agrees with the output and carries the top tokens.
    let summary = run(&args(&["--steps", "6", "--seed", "3"]), &mut Vec::new()).unwrap();
    let tokens: Vec<u32> = printed.iter().map(|&(t, _)| t).collect();
    assert_eq!(summary.tokens(), tokens);
    for step in &summary.steps {
        assert!(step.logprob.is_finite() && step.logprob <= 0.0);
        assert!(step.raw_logprob.is_finite() && step.raw_logprob <= 0.0);
        assert!(!step.top.is_empty() && step.top.len() <= TOP_N);
        for pair in step.top.windows(2) {
            assert!(pair[0].1 >= pair[1].1, "most likely first: {:?}", step.top);
        }
        // `top` holds raw log-probabilities: the token's own, when it is among them.
        if let Some(&(_, raw)) = step.top.iter().find(|(t, _)| *t == step.token) {
            assert!((raw - step.raw_logprob).abs() < 1e-5, "{step:?}");
        }
    }
    assert_eq!(summary.stopped_at_eos, tokens.last() == Some(&EOS_TOKEN));

    // Another seed draws another sequence (12 tokens from top-50 at temperature 0.7).
    let a = run(&args(&["--steps", "12", "--seed", "1"]), &mut Vec::new()).unwrap();
    let b = run(&args(&["--steps", "12", "--seed", "2"]), &mut Vec::new()).unwrap();
    assert_ne!(a.tokens(), b.tokens());
}

#[test]
fn greedy_configs_ignore_the_seed_and_bad_configs_are_errors() {
    let greedy = temp_path("greedy.json");
    std::fs::write(
        &greedy,
        r#"{ "do_sample": false, "eos_token_id": 2, "transformers_version": "4.46.2" }"#,
    )
    .unwrap();
    let path = greedy.to_str().unwrap();
    let a = run(
        &args(&["--steps", "5", "--config", path, "--seed", "1"]),
        &mut Vec::new(),
    );
    let b = run(
        &args(&["--steps", "5", "--config", path, "--seed", "2"]),
        &mut Vec::new(),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.tokens(), b.tokens());
    for step in &a.steps {
        assert_eq!(
            step.token, step.top[0].0,
            "greedy draws the most likely token"
        );
    }

    // A missing file is named.
    let missing = cli(&["--config", "/nonexistent/generation_config.json"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.err.contains("/nonexistent/generation_config.json"),
        "{}",
        missing.err
    );
    // A value out of range names the file and the field.
    let bad = temp_path("bad.json");
    std::fs::write(&bad, r#"{ "do_sample": true, "top_p": 1.5 }"#).unwrap();
    let result = cli(&["--config", bad.to_str().unwrap()]);
    assert_eq!(result.code, 1);
    assert!(result.err.contains("bad.json"), "{}", result.err);
    assert!(result.err.contains("top_p"), "{}", result.err);
    // Malformed JSON.
    std::fs::write(&bad, "{ \"top_k\": ").unwrap();
    let result = cli(&["--config", bad.to_str().unwrap()]);
    assert_eq!(result.code, 1);
    assert!(result.err.starts_with("error: "), "{}", result.err);
    // Settings.
    assert_eq!(cli(&["--steps", "0"]).code, 1);
    let result = cli(&["--steps", "600"]);
    assert_eq!(result.code, 1);
    assert!(result.err.contains("context"), "{}", result.err);
    let result = cli(&["--prompt", "5000"]);
    assert_eq!(result.code, 1);
    assert!(result.err.contains("vocabulary"), "{}", result.err);
    assert_eq!(cli(&["--steps", "x"]).code, 2);
    let help = cli(&["--help"]);
    assert_eq!(help.code, 0);
    for flag in ["--steps", "--config", "--seed", "--prompt"] {
        assert!(help.out.contains(flag), "{flag}");
    }
    std::fs::remove_file(&greedy).unwrap();
    std::fs::remove_file(&bad).unwrap();
}
