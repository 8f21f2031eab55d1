//! Helpers shared by the edit stages' unit tests.

use crate::chain::edits::{EditCx, Edits};

/// splitmix64: a tiny deterministic generator for random test inputs.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The logits after `edit` runs on them: every token's value read back through the context.
pub(crate) fn edited(logits: &[f32], edit: impl FnOnce(&mut EditCx<'_>)) -> Vec<f32> {
    let mut edits = Edits::default();
    edits.reset(logits.len());
    let mut cx = EditCx::new(logits, &mut edits);
    edit(&mut cx);
    (0..logits.len() as u32).map(|t| cx.get(t)).collect()
}
