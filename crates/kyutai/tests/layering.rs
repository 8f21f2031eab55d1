//! The crate's layering rule, read from its sources: the model layer (`src/model/`) computes
//! logits and hidden states and never chooses a token, so no file of it names the sampling
//! crate or reaches into the generation layer; and its loader (`weights.rs`) does not depend on
//! the model it loads. Also: no source file is longer than 600 lines.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// What the model layer may not mention: the sampling crate (by crate name or package name),
/// the generation layer, or the sampler trait's modules.
const BANNED_IN_MODEL: [&str; 5] = [
    "kyutai_sampling",
    "kyutai-sampling",
    "crate::generate",
    "super::super::generate",
    "crate::Samplers",
];

/// The lines of `text` that break the model layer's rule, as `(line number, banned name)`.
fn model_violations(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for banned in BANNED_IN_MODEL {
            if line.contains(banned) {
                found.push((n + 1, banned));
            }
        }
    }
    found
}

/// The lines of `weights.rs` that depend on a module above it (the model, its initialisation).
fn loader_violations(text: &str) -> Vec<usize> {
    let above = ["lm::", "init::", "LmWeights", "LmModel", "depformer::"];
    text.lines()
        .enumerate()
        .filter(|(_, line)| above.iter().any(|name| line.contains(name)))
        .map(|(n, _)| n + 1)
        .collect()
}

#[test]
fn the_checkers_catch_what_they_are_for() {
    assert_eq!(
        model_violations("use candle_core::Tensor;\nuse kyutai_sampling::Sampler;\n"),
        vec![(2, "kyutai_sampling")]
    );
    assert_eq!(
        model_violations("use crate::generate::sample::sample_logits;"),
        vec![(1, "crate::generate")]
    );
    assert_eq!(
        model_violations("/// see [`x`](kyutai_sampling::Sampler)"),
        vec![(1, "kyutai_sampling")],
        "doc comments count: a doc example in the model names no sampler either"
    );
    assert!(model_violations("use super::weights::WeightSource;\nuse crate::Result;").is_empty());
    assert_eq!(
        loader_violations("use crate::Result;\nuse super::lm::LmWeights;"),
        vec![2]
    );
    assert!(loader_violations("use crate::{Error, Result};").is_empty());
}

#[test]
fn no_model_file_names_the_sampling_crate_or_the_generation_layer() {
    let files = rust_files(&src().join("model"));
    assert!(files.len() >= 13, "found only {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let found = model_violations(&text);
        assert!(
            found.is_empty(),
            "{}: the model layer names {found:?} (line, name): it must not choose tokens",
            file.display()
        );
    }
}

#[test]
fn the_loader_does_not_depend_on_the_model() {
    let text = std::fs::read_to_string(src().join("model").join("weights.rs")).unwrap();
    let found = loader_violations(&text);
    assert!(
        found.is_empty(),
        "model/weights.rs lines {found:?} reach up to the model: that is an import circle"
    );
}

#[test]
fn no_model_file_calls_a_sampler() {
    // The depformer picks tokens through a callback; the model's files never call a sampler.
    for file in rust_files(&src().join("model")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for banned in ["sample_logits", ".sample(", "Sampler"] {
            assert!(
                !text.contains(banned),
                "{}: `{banned}`: the model layer does not sample",
                file.display()
            );
        }
    }
}

#[test]
fn no_source_file_is_longer_than_600_lines() {
    for file in rust_files(&src()) {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 600, "{}: {lines} lines", file.display());
    }
}
