//! The crate's rule: every token is chosen by an injected `Sampler`. No source file of the
//! library may reach for candle's `LogitsProcessor` or pick a token with an argmax of its own.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_token_is_chosen_outside_a_sampler() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "found only {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for banned in ["LogitsProcessor", "argmax", "gumbel_softmax"] {
                assert!(
                    !line.contains(banned),
                    "{}:{}: `{banned}` in library code: tokens must come from a Sampler\n{line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}
