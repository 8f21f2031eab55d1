//! Which compiled form of the dense passes runs: chosen once per process from the CPU's features.
//!
//! Every form runs the same code with the same operation order (the kernels are generic code
//! inlined into a function compiled for the features), so every form gives bit-identical
//! weights, sums and tokens. `KYUTAI_SAMPLING_SIMD=portable` forces the baseline form.

use std::sync::atomic::{AtomicU8, Ordering};

/// A compiled form of the dense passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Baseline code for the target (SSE2 on x86-64).
    Portable,
    /// AVX2 and FMA (x86-64).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

const UNSET: u8 = 0;
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

fn encode(level: Level) -> u8 {
    match level {
        Level::Portable => 1,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => 2,
    }
}

fn decode(code: u8) -> Level {
    match code {
        #[cfg(target_arch = "x86_64")]
        2 => Level::Avx2,
        _ => Level::Portable,
    }
}

/// The best form this CPU runs, unless the environment asks for the portable one.
fn detect() -> Level {
    if std::env::var_os("KYUTAI_SAMPLING_SIMD").is_some_and(|v| v == "portable") {
        return Level::Portable;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return Level::Avx2;
    }
    Level::Portable
}

/// The form in use.
#[inline]
pub(crate) fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        UNSET => {
            let level = detect();
            LEVEL.store(encode(level), Ordering::Relaxed);
            level
        }
        code => decode(code),
    }
}

/// Forces the portable form (`true`) or the best detected one (`false`) from now on: the test
/// hook behind [`crate::__simd::force_portable`].
pub(crate) fn force_portable(portable: bool) {
    let level = if portable {
        Level::Portable
    } else {
        LEVEL.store(UNSET, Ordering::Relaxed);
        detect()
    };
    LEVEL.store(encode(level), Ordering::Relaxed);
}

/// The name of the form in use.
pub(crate) fn level_name() -> &'static str {
    match level() {
        Level::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => "avx2",
    }
}
