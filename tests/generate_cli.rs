//! The `generate` example's logic (`kyutai_examples::generate`), run as the example runs it:
//! arguments in, exit code, terminal output and WAV file out.

use std::path::PathBuf;

use kyutai_examples::generate::{main_with, plan_argv, Args, CliError, StreamSettings};
use kyutai_sampling::Sampling;

/// A fresh path in the temporary directory.
fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kyutai-generate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

struct Run {
    code: u8,
    out: String,
    err: String,
}

fn run(args: &[&str]) -> Run {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("generate").chain(args.iter().copied());
    let code = main_with(argv, &mut out, &mut err);
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

/// Runs the demo for `steps` steps into `name`, returns the run and the WAV's bytes.
fn demo(name: &str, extra: &[&str]) -> (Run, Vec<u8>) {
    let path = temp_path(name);
    let path_str = path.to_str().unwrap().to_string();
    let mut args = vec!["--steps", "24", "--out", &path_str];
    args.extend_from_slice(extra);
    let result = run(&args);
    assert_eq!(result.code, 0, "stderr: {}", result.err);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    (result, bytes)
}

#[test]
fn the_same_seed_gives_byte_identical_wavs_and_another_seed_does_not() {
    let (first, a) = demo("a.wav", &["--seed", "7"]);
    let (_, b) = demo("b.wav", &["--seed", "7"]);
    let (_, c) = demo("c.wav", &["--seed", "8"]);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // A WAV with 23 frames of 1920 samples (the first frame lags by the acoustic delay).
    let reader = hound::WavReader::new(std::io::Cursor::new(&a)).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 24_000, 16)
    );
    assert_eq!(reader.len(), 23 * 1920);
    let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
    assert!(samples.iter().any(|&s| s != 0), "not silent");

    // What the run says: the demo is noise, the settings, the tokens, the speed, the file.
    let out = &first.out;
    assert!(out.contains("NOISE"), "{out}");
    assert!(out.contains("text sampler:  top-k 25, temperature 0.8, no repetition penalty, seed 7"));
    assert!(
        out.contains("audio sampler: top-k 250, temperature 0.8, no repetition penalty, seed 8")
    );
    assert!(out.contains("text tokens (24): ["));
    assert!(out.contains("steps/s"));
    assert!(out.contains("23 audio frames"));
    assert!(out.contains("(24000 Hz, mono, 16-bit, 44160 samples)"));
    assert!(
        first.err.contains("24/24 steps"),
        "a progress bar: {}",
        first.err
    );
}

#[test]
fn greedy_decoding_ignores_the_seed_and_flags_reach_the_samplers() {
    let greedy = ["--temperature", "0", "--text-temperature", "0"];
    let (run1, a) = demo("g1.wav", &[&greedy[..], &["--seed", "1"]].concat());
    let (_, b) = demo("g2.wav", &[&greedy[..], &["--seed", "2"]].concat());
    assert_eq!(a, b, "greedy decoding draws no random numbers");
    assert!(run1
        .out
        .contains("text sampler:  greedy, no repetition penalty\n"));
    // The audio flags reach the audio sampler.
    let (x, wav_x) = demo("x.wav", &["--top-k", "5"]);
    let (y, wav_y) = demo("y.wav", &["--top-p", "0.5"]);
    assert_ne!(wav_x, wav_y);
    assert!(x.out.contains("audio sampler: top-k 5, temperature 0.8"));
    assert!(y
        .out
        .contains("audio sampler: top-k 250, top-p 0.5, temperature 0.8"));
    let tokens = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("text tokens"))
            .unwrap()
            .to_string()
    };
    // A text repetition penalty changes the text.
    let (z, _) = demo("z.wav", &["--text-repetition-penalty", "3"]);
    let (w, _) = demo("w.wav", &[]);
    assert_ne!(tokens(&z.out), tokens(&w.out));
    assert!(z
        .out
        .contains("repetition penalty 3 over the last 64 tokens"));
}

#[test]
fn bad_values_exit_non_zero_with_the_error_and_write_nothing() {
    let path = temp_path("bad.wav");
    let out = path.to_str().unwrap();
    for (flags, message) in [
        (
            vec!["--top-p", "1.5"],
            "invalid audio sampling settings: top-p must be in (0, 1], got 1.5",
        ),
        (
            vec!["--text-top-p", "0"],
            "invalid text sampling settings: top-p must be in (0, 1], got 0",
        ),
        (
            vec!["--temperature", "-1"],
            "the temperature must be finite and >= 0, got -1",
        ),
        (
            vec!["--text-temperature", "NaN"],
            "the temperature must be finite and >= 0, got NaN",
        ),
        (
            vec!["--repetition-penalty", "0"],
            "the repetition penalty must be finite and > 0, got 0",
        ),
        (vec!["--steps", "0"], "--steps must be at least 1"),
    ] {
        let mut args = flags.clone();
        args.extend(["--out", out]);
        let result = run(&args);
        assert_eq!(result.code, 1, "{flags:?}");
        assert!(
            result.err.starts_with("error: "),
            "{flags:?}: {}",
            result.err
        );
        assert!(result.err.contains(message), "{flags:?}: {}", result.err);
        assert!(!path.exists(), "{flags:?} wrote a file");
    }
    // Values that do not parse: clap's message, exit code 2.
    let result = run(&["--top-p", "abc", "--out", out]);
    assert_eq!(result.code, 2);
    assert!(result.err.contains("--top-p"), "{}", result.err);
    let result = run(&["--dtype", "f64"]);
    assert_eq!(result.code, 2);
    assert!(result.err.contains("expected f32, f16 or bf16"));
    // --help succeeds and lists the flags.
    let help = run(&["--help"]);
    assert_eq!(help.code, 0);
    for flag in [
        "--model-dir",
        "--steps",
        "--seed",
        "--temperature",
        "--top-k",
        "--top-p",
    ] {
        assert!(help.out.contains(flag), "{flag}");
    }
    assert!(help.out.contains("--text-repetition-penalty") && help.out.contains("--out"));
}

#[test]
fn a_checkpoint_directory_is_read_and_its_errors_are_reported() {
    // No such directory: the model file is named.
    let result = run(&["--model-dir", "/nonexistent/moshi"]);
    assert_eq!(result.code, 1);
    assert!(
        result.err.contains("/nonexistent/moshi/model.safetensors"),
        "{}",
        result.err
    );

    // A tiny checkpoint with its config.json: the model loads, then the missing Mimi file is
    // reported with a hint about the layouts.
    let dir = temp_path("checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = kyutai_examples::generate::demo_lm_config();
    (config.transformer.d_model, config.transformer.num_layers) = (32, 1);
    config.depformer.as_mut().unwrap().transformer.d_model = 16;
    std::fs::write(dir.join("config.json"), config.to_json_string().unwrap()).unwrap();
    let weights = kyutai::random_weights(
        &config,
        1,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
    let result = run(&["--model-dir", dir.to_str().unwrap(), "--dtype", "f32"]);
    assert_eq!(result.code, 1, "{}", result.out);
    assert!(result.out.contains("config.json, F32)"), "{}", result.out);
    assert!(result.err.contains("mimi.safetensors"), "{}", result.err);
    assert!(result.err.contains("native"), "{}", result.err);
    // A config.json that is not moshi's format is an error, not a silent preset.
    std::fs::write(dir.join("config.json"), "{\"delays\": [0, 1]}").unwrap();
    let result = run(&["--model-dir", dir.to_str().unwrap()]);
    assert_eq!(result.code, 1);
    assert!(result.err.contains("config.json"), "{}", result.err);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stream_settings_map_to_sampling_strategies() {
    let settings = |temperature: f64, top_k: usize, top_p: Option<f64>| StreamSettings {
        stream: "audio",
        temperature,
        top_k,
        top_p,
        repetition_penalty: None,
        min_p: None,
        seed: 3,
    };
    let sampling = |s: StreamSettings| s.config().unwrap().sampling;
    assert_eq!(sampling(settings(0.0, 25, Some(0.9))), Sampling::ArgMax);
    assert_eq!(
        sampling(settings(0.7, 0, None)),
        Sampling::All { temperature: 0.7 }
    );
    assert_eq!(
        sampling(settings(0.7, 9, None)),
        Sampling::TopK {
            k: 9,
            temperature: 0.7
        }
    );
    assert_eq!(
        sampling(settings(0.7, 0, Some(0.9))),
        Sampling::TopP {
            p: 0.9,
            temperature: 0.7
        }
    );
    assert_eq!(
        sampling(settings(0.7, 9, Some(0.9))),
        Sampling::TopKThenTopP {
            k: 9,
            p: 0.9,
            temperature: 0.7
        }
    );
    // The defaults are Moshi's, with distinct seeds for text and audio.
    let args = <Args as clap::Parser>::parse_from(["generate", "--seed", "10"]);
    let text = StreamSettings::text(&args).config().unwrap();
    let audio = StreamSettings::audio(&args).config().unwrap();
    assert_eq!(
        text.sampling,
        Sampling::TopK {
            k: 25,
            temperature: 0.8
        }
    );
    assert_eq!(
        audio.sampling,
        Sampling::TopK {
            k: 250,
            temperature: 0.8
        }
    );
    assert_eq!((text.seed, audio.seed), (10, 11));
    assert_eq!(args.out, PathBuf::from("generated.wav"));
}

#[test]
fn the_native_engine_is_reproducible_and_draws_its_own_stream() {
    let (native, a) = demo("native-a.wav", &["--seed", "7", "--engine", "native"]);
    assert!(
        native.out.contains("engine:        NativeSampler"),
        "{}",
        native.out
    );
    let (_, b) = demo("native-b.wav", &["--seed", "7", "--engine", "native"]);
    let (candle, c) = demo("candle.wav", &["--seed", "7"]);
    assert!(candle
        .out
        .contains("engine:        candle's LogitsProcessor"));
    assert_eq!(a, b, "the same seed gives the same WAV");
    assert_ne!(a, c, "the engines draw different streams for the same seed");
    // Greedy sampling draws no random numbers: both engines give the same bytes.
    let greedy = ["--temperature", "0", "--text-temperature", "0"];
    let (_, d) = demo(
        "greedy-native.wav",
        &[&greedy[..], &["--engine", "native"]].concat(),
    );
    let (_, e) = demo("greedy-candle.wav", &greedy);
    assert_eq!(d, e);
    assert_eq!(run(&["--engine", "gpu"]).code, 2);
}

/// Writes `json` to a fresh file named `name`.
fn config_file(name: &str, json: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn a_text_config_file_replaces_the_text_sampler_and_nothing_else() {
    // A greedy chain for the text stream draws what --text-temperature 0 draws: the same WAV.
    let greedy = config_file("greedy-text.json", r#"{ "do_sample": false }"#);
    let greedy_path = greedy.to_str().unwrap();
    let (from_file, a) = demo("text-config.wav", &["--text-config", greedy_path]);
    let (from_flags, b) = demo("text-flags.wav", &["--text-temperature", "0"]);
    assert_eq!(a, b, "only the text sampler changed");
    let line = |out: &str, prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {out}"))
            .to_string()
    };
    assert_eq!(
        line(&from_file.out, "audio sampler:"),
        line(&from_flags.out, "audio sampler:")
    );
    assert_eq!(
        line(&from_file.out, "text tokens"),
        line(&from_flags.out, "text tokens")
    );
    assert!(
        from_file.out.contains(&format!(
            "text sampler:  from `{greedy_path}`: do_sample false"
        )),
        "{}",
        from_file.out
    );
    assert!(
        from_file.out.contains(
            "engine:        text: Chain (hf convention); audio: candle's LogitsProcessor"
        ),
        "{}",
        from_file.out
    );

    // A sampling chain from a file: reproducible, and the file's seed (or --seed) drives it.
    let chain = config_file(
        "llama-text.json",
        r#"{ "convention": "llama.cpp", "temperature": 0.7, "top_k": 40, "min_p": 0.05 }"#,
    );
    let chain_path = chain.to_str().unwrap();
    let (x, wav_x) = demo("chain-x.wav", &["--text-config", chain_path]);
    let (_, wav_y) = demo("chain-y.wav", &["--text-config", chain_path]);
    assert_eq!(wav_x, wav_y);
    assert!(x.out.contains("convention llama.cpp"), "{}", x.out);
    assert!(
        x.out.contains("seed 42"),
        "the file has no seed: --seed's: {}",
        x.out
    );
    // An audio config file, too; the flags of a stream with a file conflict with it.
    let (audio, _) = demo("audio-config.wav", &["--audio-config", greedy_path]);
    assert!(
        audio.out.contains(&format!(
            "audio sampler: from `{greedy_path}`: do_sample false"
        )),
        "{}",
        audio.out
    );
    assert_eq!(
        run(&["--text-config", greedy_path, "--text-top-k", "5"]).code,
        2
    );
    assert_eq!(
        run(&["--audio-config", greedy_path, "--top-p", "0.5"]).code,
        2
    );
    std::fs::remove_file(&greedy).unwrap();
    std::fs::remove_file(&chain).unwrap();
}

#[test]
fn bad_config_files_name_the_file_and_the_field() {
    let wav = temp_path("bad-config.wav");
    let out = wav.to_str().unwrap();
    for (name, json, needles) in [
        (
            "unknown.json",
            r#"{ "temperature": 0.7, "top_kk": 4 }"#,
            &["unknown field `top_kk`"][..],
        ),
        (
            "range.json",
            r#"{ "top_p": 1.5 }"#,
            &["top_p", "invalid text sampler config"][..],
        ),
        ("type.json", r#"{ "top_k": -1 }"#, &["field `top_k`"][..]),
        ("malformed.json", r#"{ "top_k": 4"#, &["EOF"][..]),
        ("array.json", "[1, 2]", &["JSON object"][..]),
    ] {
        let path = config_file(name, json);
        let path_str = path.to_str().unwrap();
        let result = run(&["--text-config", path_str, "--out", out]);
        assert_eq!(result.code, 1, "{name}: {}", result.err);
        assert!(result.err.starts_with("error: "), "{name}: {}", result.err);
        assert!(result.err.contains(path_str), "{name}: {}", result.err);
        for needle in needles {
            assert!(result.err.contains(needle), "{name}: {}", result.err);
        }
        assert!(!wav.exists(), "{name} wrote a file");
        std::fs::remove_file(&path).unwrap();
    }
    // An out-of-range audio config is reported for the audio stream.
    let path = config_file("audio-range.json", r#"{ "temperature": -1 }"#);
    let result = run(&["--audio-config", path.to_str().unwrap(), "--out", out]);
    assert_eq!(result.code, 1);
    assert!(
        result.err.contains("invalid audio sampler config") && result.err.contains("temperature"),
        "{}",
        result.err
    );
    std::fs::remove_file(&path).unwrap();
    // A missing file is named.
    let result = run(&["--text-config", "/nonexistent/text.json", "--out", out]);
    assert_eq!(result.code, 1);
    assert!(
        result
            .err
            .contains("could not read the text sampler config `/nonexistent/text.json`"),
        "{}",
        result.err
    );
    assert!(!wav.exists());
}

#[test]
fn min_p_builds_chains_from_the_flags_and_is_range_checked() {
    let path = temp_path("bad-min-p.wav");
    let out = path.to_str().unwrap();
    for value in ["1.5", "-0.1", "NaN"] {
        let result = run(&["--min-p", value, "--out", out]);
        assert_eq!(result.code, 1, "{value}");
        assert!(
            result
                .err
                .contains(&format!("min-p must be in [0, 1], got {value}")),
            "{value}: {}",
            result.err
        );
        assert!(!path.exists());
    }
    // Greedy chains draw what the greedy engines draw.
    let greedy = ["--temperature", "0", "--text-temperature", "0"];
    let (_, a) = demo(
        "min-p-greedy.wav",
        &[&greedy[..], &["--min-p", "0.1"]].concat(),
    );
    let (_, b) = demo("flags-greedy.wav", &greedy);
    assert_eq!(a, b);
    // Sampling chains: min-p in the header, reproducible for a seed.
    let (x, wav_x) = demo("min-p-x.wav", &["--min-p", "0.05", "--seed", "5"]);
    let (_, wav_y) = demo("min-p-y.wav", &["--min-p", "0.05", "--seed", "5"]);
    assert_eq!(wav_x, wav_y);
    assert!(
        x.out
            .contains("text sampler:  top-k 25, min-p 0.05, temperature 0.8"),
        "{}",
        x.out
    );
    assert!(
        x.out.contains("engine:        Chain (hf convention)\n"),
        "{}",
        x.out
    );
    // Both streams from files leave --min-p nothing to apply to.
    let file = config_file("both.json", "{}");
    let file = file.to_str().unwrap();
    let result = run(&[
        "--min-p",
        "0.1",
        "--text-config",
        file,
        "--audio-config",
        file,
    ]);
    assert_eq!(result.code, 1);
    assert!(result.err.contains("--min-p"), "{}", result.err);
    std::fs::remove_file(file).unwrap();
    // The settings map to an HF chain.
    let settings = StreamSettings {
        stream: "text",
        temperature: 0.7,
        top_k: 9,
        top_p: Some(0.9),
        repetition_penalty: Some(1.2),
        min_p: Some(0.05),
        seed: 3,
    };
    let chain = settings.chain_config().unwrap();
    assert_eq!(chain.convention, kyutai_sampling::Convention::HuggingFace);
    assert_eq!(
        (chain.temperature, chain.top_k, chain.top_p, chain.min_p),
        (0.7, 9, 0.9, 0.05)
    );
    assert_eq!(
        (chain.repetition_penalty, chain.repeat_last_n),
        (1.2, Some(64))
    );
    assert!(chain.do_sample);
    assert_eq!(chain.seed, 3);
}

#[test]
fn hostile_arguments_fail_before_any_model_is_built() {
    let too_many = (kyutai::MAX_GENERATE_STEPS + 1).to_string();
    for (flags, message) in [
        (vec!["--temperature", "1e-300"], "audio sampling settings"),
        (
            vec!["--text-temperature", "1e-300"],
            "text sampling settings",
        ),
        (vec!["--steps", "10000000000"], "--steps must be at most"),
        (
            vec!["--steps", too_many.as_str()],
            "--steps must be at most",
        ),
    ] {
        let result = run(&flags);
        assert_eq!(result.code, 1, "{flags:?}: {}", result.err);
        assert!(result.err.contains(message), "{flags:?}: {}", result.err);
        // The header comes after the plan: no model was built or loaded.
        assert!(!result.out.contains("model:"), "{flags:?}: {}", result.out);
        let argv = std::iter::once("generate").chain(flags.iter().copied());
        assert!(plan_argv(argv).is_err(), "{flags:?}");
    }
    let max = kyutai::MAX_GENERATE_STEPS.to_string();
    let plan = plan_argv(["generate", "--steps", max.as_str()]).unwrap();
    assert_eq!(plan.steps, kyutai::MAX_GENERATE_STEPS);
}

#[test]
fn an_overflowing_config_json_is_a_clean_error() {
    let dir = temp_path("overflowing-checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let config = kyutai_examples::generate::demo_lm_config();
    let mut json: serde_json::Value =
        serde_json::from_str(&config.to_json_string().unwrap()).unwrap();
    for (field, value) in [("d_model", 1u64 << 62), ("dim_feedforward", (1 << 63) + 3)] {
        let mut edited = json.clone();
        edited["transformer"][field] = value.into();
        std::fs::write(dir.join("config.json"), edited.to_string()).unwrap();
        let result = run(&["--model-dir", dir.to_str().unwrap()]);
        assert_eq!(result.code, 1, "{field}: {}", result.err);
        assert!(
            result.err.contains("invalid model config"),
            "{}",
            result.err
        );
        assert!(result.err.contains(field), "{}", result.err);
        assert!(!result.out.contains("model:"), "{}", result.out);
    }
    json["transformer"]["context"] = 1_000_000_000_000u64.into();
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let result = plan_argv(["generate", "--model-dir", dir.to_str().unwrap()]);
    assert!(matches!(result, Err(CliError::Model { .. })), "{result:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_argv_checks_a_command_line_without_running_it() {
    let plan = plan_argv(["generate", "--seed", "3"]).unwrap();
    assert_eq!(plan.steps, 125);
    assert_eq!(plan.model_config.1, "built-in demo");
    assert!(matches!(
        plan_argv(["generate", "--help"]),
        Err(CliError::Usage(_))
    ));
    // Odd command lines are errors or plans, never panics.
    let odd: [&[&str]; 8] = [
        &["--steps", "-1"],
        &["--top-p", "NaN"],
        &["--min-p", "inf", "--top-k", "18446744073709551615"],
        &["--repetition-penalty", "1e-45"],
        &["--text-config", "/dev/null"],
        &["--audio-config", "/"],
        &["--seed", "18446744073709551615", "--steps", "1"],
        &["--dtype", "", "--engine", "native"],
    ];
    for flags in odd {
        let argv = std::iter::once("generate").chain(flags.iter().copied());
        let _ = plan_argv(argv);
    }
}
