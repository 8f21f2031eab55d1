//! Fuzz target: `kyutai_examples::fuzzing::generation_config` (its docs say what the bytes mean).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kyutai_examples::fuzzing::generation_config(data);
});
