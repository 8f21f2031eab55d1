//! Which compiled form of the dense passes runs: chosen once per process from the CPU's features.
//!
//! Every form runs the same code with the same operation order (the kernels are generic code
//! inlined into a function compiled for the features), so every form gives bit-identical
//! weights, sums and tokens: only the width of the vectors changes. Rust never fuses a
//! multiplication and an addition into an FMA on its own, and the kernels' lanes fix the order of
//! every sum. The one exception is the maximum pass, which uses more lanes in wider forms: a
//! maximum does not depend on the order it is taken in (a zero maximum is reported as `+0.0`).
//!
//! `KYUTAI_SAMPLING_SIMD=portable` (or `avx2`) caps the form chosen at the start of the process.

use std::sync::atomic::{AtomicU8, Ordering};

/// A compiled form of the dense passes, from the narrowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// Baseline code for the target (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// AVX2 and FMA (x86-64).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F, BW and VL, with AVX2 and FMA (x86-64).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Level {
    /// Every form, narrowest first.
    const ALL: &'static [Level] = &[
        Level::Portable,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2,
        #[cfg(target_arch = "x86_64")]
        Level::Avx512,
    ];

    fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => "avx512",
        }
    }

    fn code(self) -> u8 {
        match self {
            Level::Portable => 1,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => 2,
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => 3,
        }
    }

    fn from_code(code: u8) -> Level {
        Self::ALL
            .iter()
            .copied()
            .find(|l| l.code() == code)
            .unwrap_or(Level::Portable)
    }

    /// Whether this CPU runs the form.
    fn supported(self) -> bool {
        match self {
            Level::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                Level::Avx2.supported()
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
            }
        }
    }
}

const UNSET: u8 = 0;
static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

/// The widest form this CPU runs, capped by `KYUTAI_SAMPLING_SIMD` when it names a form.
fn detect() -> Level {
    let cap = std::env::var("KYUTAI_SAMPLING_SIMD")
        .ok()
        .and_then(|name| Level::ALL.iter().copied().find(|l| l.name() == name));
    Level::ALL
        .iter()
        .copied()
        .filter(|&l| cap.is_none_or(|cap| l <= cap) && l.supported())
        .max()
        .unwrap_or(Level::Portable)
}

/// The form in use.
#[inline]
pub(crate) fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        UNSET => {
            let level = detect();
            LEVEL.store(level.code(), Ordering::Relaxed);
            level
        }
        code => Level::from_code(code),
    }
}

/// The names of the forms this CPU runs, narrowest first.
pub(crate) fn available() -> Vec<&'static str> {
    Level::ALL
        .iter()
        .filter(|l| l.supported())
        .map(|l| l.name())
        .collect()
}

/// Switches to the form named `name` from now on; `false` (and no change) when this CPU does not
/// run it or no form has that name.
pub(crate) fn force(name: &str) -> bool {
    match Level::ALL.iter().find(|l| l.name() == name) {
        Some(&level) if level.supported() => {
            LEVEL.store(level.code(), Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// Forces the portable form (`true`) or the one chosen at start-up (`false`) from now on.
pub(crate) fn force_portable(portable: bool) {
    let level = if portable { Level::Portable } else { detect() };
    LEVEL.store(level.code(), Ordering::Relaxed);
}

/// The name of the form in use.
pub(crate) fn level_name() -> &'static str {
    level().name()
}

/// Work that runs in the form in use ([`run`]): its `run`, marked `#[inline(always)]`, is
/// compiled into one function per form, with that form's features enabled.
pub(crate) trait Kernel {
    /// What the work returns.
    type Output;

    /// Does the work (mark it `#[inline(always)]`, so that each form compiles its own copy).
    fn run(self) -> Self::Output;
}

/// Runs `kernel` in the form in use (inlined, so that the choice costs a load and a branch at
/// the caller).
#[inline(always)]
pub(crate) fn run<K: Kernel>(kernel: K) -> K::Output {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            // SAFETY: `level` returns `Avx2` only when the CPU has AVX2 and FMA (detected at run
            // time), which is all `run_avx2` requires.
            unsafe { run_avx2(kernel) }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            // SAFETY: `level` returns `Avx512` only when the CPU has AVX-512 F, BW and VL, AVX2
            // and FMA (detected at run time), which is all `run_avx512` requires.
            unsafe { run_avx512(kernel) }
        }
        Level::Portable => kernel.run(),
    }
}

/// [`run`] compiled with AVX2 and FMA enabled (the same code: Rust never fuses a multiply and an
/// add on its own, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

/// [`run`] compiled with AVX-512 F, BW and VL, AVX2 and FMA enabled (the same code, the same
/// bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}
