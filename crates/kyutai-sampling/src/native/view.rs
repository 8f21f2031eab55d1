//! [`View`]: the logits a pass reads, as a base slice plus a few replaced entries, visited in
//! fixed-size chunks.
//!
//! Every pass of the engine reads its logits through [`View::visit`], which hands a [`Visit`]or
//! the values in index order, [`LANES`] at a time. Chunks without a replaced entry are slices of
//! the base, read in place; a chunk holding one is copied to the stack first and patched. The
//! visitor therefore sees exactly the values (and the same chunk boundaries) it would see on a
//! patched copy of the whole vector, so an edited draw is bit for bit the draw on that copy,
//! while the extra work is O(number of edits).

/// Width of a chunk. Kernels keep one accumulator per lane so that the compiler turns each chunk
/// into a few SIMD instructions (portable code: SSE2 on x86-64, NEON on aarch64).
pub(crate) const LANES: usize = 16;

/// [`View::edited_in`] copies the logits when they number at most this many per edit: a copy
/// costs a fraction of a nanosecond per logit, patching a chunk tens of nanoseconds per pass.
const COPY_RATIO: usize = 256;

/// Makes `dst` a copy of `src`, chunk by chunk in vector registers (a [`View`] pass, so with the
/// engine's dispatch) rather than through `memcpy`: glibc's `rep movsb` copy is slow on some x86
/// machines when source and destination sit at the same offset within a page, which two
/// vocabulary-sized buffers of a page-multiple size do (8 µs for 8 KiB on the AMD EPYC machine of
/// the benchmarks, against 0.2 µs this way).
pub(crate) fn copy_into(dst: &mut Vec<f32>, src: &[f32]) {
    if dst.len() != src.len() {
        dst.clear();
        dst.resize(src.len(), 0.0);
    }
    View::plain(src).visit(&mut CopyOut { dst });
}

/// Writes what it is shown into `dst`, at the same indices.
struct CopyOut<'d> {
    dst: &'d mut [f32],
}

impl Visit for CopyOut<'_> {
    #[inline(always)]
    fn run(&mut self, start: usize, values: &[f32]) {
        let dst = self.dst.get_mut(start..).unwrap_or_default();
        let (to, _) = dst.as_chunks_mut::<LANES>();
        for (d, s) in to.iter_mut().zip(values.as_chunks::<LANES>().0) {
            *d = *s;
        }
    }

    fn tail(&mut self, start: usize, values: &[f32]) {
        let dst = self.dst.get_mut(start..).unwrap_or_default();
        for (d, &s) in dst.iter_mut().zip(values) {
            *d = s;
        }
    }
}

/// Whether `edits` edits of `len` logits are better read from a patched copy ([`patch_into`])
/// than patched chunk by chunk on every pass (see [`View::edited_in`]).
pub(crate) fn copies(len: usize, edits: usize) -> bool {
    edits > 0 && len <= edits.saturating_mul(COPY_RATIO)
}

/// Makes `copy` the logits `base` with `edits` (in any order; a later edit of a token wins)
/// applied: one vectorised copy, then one store per edit.
pub(crate) fn patch_into(copy: &mut Vec<f32>, base: &[f32], edits: &[(u32, f32)]) {
    copy_into(copy, base);
    for &(token, value) in edits {
        if let Some(slot) = copy.get_mut(token as usize) {
            *slot = value;
        }
    }
}

/// Receives the values of a [`View`] in index order.
pub(crate) trait Visit {
    /// A run of full chunks: `values.len()` is a multiple of [`LANES`], and so is `start`, the
    /// index of its first value. Kernels loop over it with their state in locals, which the
    /// compiler keeps in registers and vectorises.
    fn run(&mut self, start: usize, values: &[f32]);
    /// The final partial chunk (1 to `LANES - 1` values) starting at `start`.
    fn tail(&mut self, start: usize, values: &[f32]);
}

/// Logits as `base` with `edits` applied.
///
/// Invariant: the tokens of `edits` are strictly increasing and below `base.len()`
/// ([`normalise_edits`] establishes it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    base: &'a [f32],
    edits: &'a [(u32, f32)],
}

impl<'a> View<'a> {
    /// The values of `base`, unchanged.
    pub(crate) fn plain(base: &'a [f32]) -> Self {
        Self { base, edits: &[] }
    }

    /// `base` with `edits` applied; `edits` must satisfy the type's invariant.
    pub(crate) fn edited(base: &'a [f32], edits: &'a [(u32, f32)]) -> Self {
        debug_assert!(is_normalised(edits, base.len()));
        Self { base, edits }
    }

    /// `base` with `edits` applied (as [`edited`](Self::edited)), read from a patched copy kept
    /// in `copy` when the edits fall in so many chunks that patching those chunks on every pass
    /// would cost more than copying the vector once (a 64-token repetition window over a
    /// 2048-code codebook touches most of its chunks). Either way the passes see the same values
    /// in the same chunks, so the results are the same bits.
    pub(crate) fn edited_in(
        base: &'a [f32],
        edits: &'a [(u32, f32)],
        copy: &'a mut Vec<f32>,
    ) -> Self {
        if edits.is_empty() || !copies(base.len(), edits.len()) {
            return Self::edited(base, edits);
        }
        debug_assert!(is_normalised(edits, base.len()));
        patch_into(copy, base, edits);
        Self::plain(copy)
    }

    /// Number of logits.
    pub(crate) fn len(&self) -> usize {
        self.base.len()
    }

    /// The value at `index` (edits applied), or `None` past the end.
    #[cfg(test)]
    pub(crate) fn get(&self, index: usize) -> Option<f32> {
        match self
            .edits
            .binary_search_by_key(&index, |&(token, _)| token as usize)
        {
            Ok(at) => self.edits.get(at).map(|&(_, value)| value),
            Err(_) => self.base.get(index).copied(),
        }
    }

    /// Hands every value to `visitor`, in index order: runs of whole chunks of [`LANES`] aligned
    /// on multiples of [`LANES`] (the unedited stretches of the base, read in place, and each
    /// chunk holding an edit, patched on the stack), then the partial chunk at the end if there
    /// is one.
    #[inline(always)]
    pub(crate) fn visit<V: Visit>(&self, visitor: &mut V) {
        self.visit_range(0, self.base.len(), visitor);
    }

    /// [`visit`](Self::visit) restricted to the indices `start..end`, where `start` is a multiple
    /// of [`LANES`] and `end` is one too or the length.
    #[inline(always)]
    pub(crate) fn visit_range<V: Visit>(&self, start: usize, end: usize, visitor: &mut V) {
        super::dispatch::run(VisitRange {
            view: self,
            start,
            end,
            visitor,
        });
    }

    /// [`visit_range`](Self::visit_range) compiled for the baseline target.
    #[inline(always)]
    fn visit_range_portable<V: Visit>(&self, start: usize, end: usize, visitor: &mut V) {
        let first = self
            .edits
            .partition_point(|&(token, _)| (token as usize) < start);
        let edits = self.edits.get(first..).unwrap_or_default();
        self.visit_span(start, end, edits, visitor);
    }

    /// Hands `visitor` the values of every group of `group` tokens whose entry in `maxima` (one
    /// per group, the last group possibly partial) is at least `floor` and above `-inf`, in index
    /// order, consecutive groups as one run: what [`visit_range`](Self::visit_range) over each
    /// such stretch would hand it, in one call (the edits are walked once). `group` is a
    /// multiple of [`LANES`].
    #[inline(always)]
    pub(crate) fn visit_groups<V: Visit>(
        &self,
        maxima: &[f32],
        group: usize,
        floor: f32,
        visitor: &mut V,
    ) {
        super::dispatch::run(VisitGroups {
            view: self,
            maxima,
            group,
            floor,
            visitor,
        });
    }

    /// [`visit_groups`](Self::visit_groups) compiled for the baseline target.
    #[inline(always)]
    fn visit_groups_portable<V: Visit>(
        &self,
        maxima: &[f32],
        group: usize,
        floor: f32,
        visitor: &mut V,
    ) {
        debug_assert!(group.is_multiple_of(LANES) && group > 0);
        let mut edits = self.edits;
        // The selected groups, 64 at a time as a bit mask, their runs visited as they end.
        let mut open: Option<usize> = None;
        for (w, word) in maxima.chunks(64).enumerate() {
            let mut selected = 0u64;
            for (bit, &m) in word.iter().enumerate() {
                selected |= u64::from(m >= floor && m > f32::NEG_INFINITY) << bit;
            }
            let mut at = 0u32;
            let width = word.len() as u32;
            while at < width {
                let rest = selected >> at;
                if open.is_some() {
                    // The run goes on through the set bits from `at`.
                    let ones = (!rest).trailing_zeros().min(width - at);
                    at += ones;
                    if at < width {
                        if let Some(first) = open.take() {
                            let end = (w * 64 + at as usize) * group;
                            edits = self.visit_from(first, end, edits, visitor);
                        }
                    }
                } else {
                    if rest == 0 {
                        break;
                    }
                    at += rest.trailing_zeros();
                    open = Some((w * 64 + at as usize) * group);
                }
            }
        }
        if let Some(first) = open {
            self.visit_from(first, self.base.len(), edits, visitor);
        }
    }

    /// [`visit_span`](Self::visit_span) of `start..end` with `edits` a suffix of the view's
    /// edits that holds every edit from `start` on; returns the edits from `end` on.
    #[inline(always)]
    fn visit_from<V: Visit>(
        &self,
        start: usize,
        end: usize,
        edits: &'a [(u32, f32)],
        visitor: &mut V,
    ) -> &'a [(u32, f32)] {
        let skip = edits.partition_point(|&(token, _)| (token as usize) < start);
        let edits = edits.get(skip..).unwrap_or_default();
        self.visit_span(start, end, edits, visitor)
    }

    /// Hands `visitor` the values of `start..end` (as [`visit_range`](Self::visit_range)), where
    /// `edits` are the view's edits from `start` on; returns those from `end` on.
    #[inline(always)]
    fn visit_span<V: Visit>(
        &self,
        start: usize,
        end: usize,
        mut edits: &'a [(u32, f32)],
        visitor: &mut V,
    ) -> &'a [(u32, f32)] {
        let base = self.base;
        let end = end.min(base.len());
        debug_assert!(
            start.is_multiple_of(LANES) && (end.is_multiple_of(LANES) || end == base.len())
        );
        if start >= end {
            return edits;
        }
        let full = end - end % LANES;
        let mut patch = [0.0f32; LANES];
        let mut pos = start;
        loop {
            // Start of the next chunk that holds an edit, or `full` when no full chunk does.
            let next = match edits.first() {
                Some(&(token, _)) if (token as usize) < full => token as usize / LANES * LANES,
                _ => full,
            };
            if let Some(run) = base.get(pos..next) {
                if !run.is_empty() {
                    visitor.run(pos, run);
                }
            }
            if next >= full {
                break;
            }
            if let Some(chunk) = base.get(next..next + LANES) {
                patch.copy_from_slice(chunk);
            }
            edits = apply(&mut patch, next, edits);
            visitor.run(next, &patch);
            pos = next + LANES;
        }
        let rest = base.get(full..end).unwrap_or_default();
        if rest.is_empty() {
            return edits;
        }
        if edits
            .first()
            .is_none_or(|&(token, _)| token as usize >= end)
        {
            visitor.tail(full, rest);
            edits
        } else {
            let patch = &mut patch[..rest.len()];
            patch.copy_from_slice(rest);
            let edits = apply(patch, full, edits);
            visitor.tail(full, patch);
            edits
        }
    }

    /// The lowest index whose value equals `target`, if any.
    ///
    /// Stops at the first hit: chunks of the base are compared whole, and a hit on an edited
    /// index is skipped (the edit's value is checked separately).
    pub(crate) fn position(&self, target: f32) -> Option<usize> {
        let in_edits = self
            .edits
            .iter()
            .find(|&&(_, value)| value == target)
            .map(|&(token, _)| token as usize);
        let limit = in_edits.unwrap_or(self.base.len());
        let base = self.base.get(..limit).unwrap_or(self.base);
        let is_edited = |index: usize| {
            self.edits
                .binary_search_by_key(&index, |&(token, _)| token as usize)
                .is_ok()
        };
        let mut chunks = base.chunks_exact(LANES);
        for (c, chunk) in (&mut chunks).enumerate() {
            let mut hit = [0u32; LANES];
            for (h, &x) in hit.iter_mut().zip(chunk) {
                *h = u32::from(x == target);
            }
            if hit.iter().any(|&h| h != 0) {
                let found = chunk
                    .iter()
                    .enumerate()
                    .map(|(lane, &x)| (c * LANES + lane, x))
                    .find(|&(index, x)| x == target && !is_edited(index));
                if let Some((index, _)) = found {
                    return Some(index);
                }
            }
        }
        let offset = base.len() - chunks.remainder().len();
        let found = chunks
            .remainder()
            .iter()
            .enumerate()
            .map(|(lane, &x)| (offset + lane, x))
            .find(|&(index, x)| x == target && !is_edited(index));
        found.map(|(index, _)| index).or(in_edits)
    }

    /// The first NaN or `+inf` value in index order, with its index.
    pub(crate) fn first_invalid(&self) -> Option<(usize, f32)> {
        let mut edits = self.edits.iter().peekable();
        for (index, &base) in self.base.iter().enumerate() {
            let value = match edits.peek() {
                Some(&&(token, value)) if token as usize == index => {
                    edits.next();
                    value
                }
                _ => base,
            };
            if value.is_nan() || value == f32::INFINITY {
                return Some((index, value));
            }
        }
        None
    }
}

/// Writes the edits that fall in `patch` (which holds the values from index `start` on) and
/// returns the edits after it.
fn apply<'e>(patch: &mut [f32], start: usize, mut edits: &'e [(u32, f32)]) -> &'e [(u32, f32)] {
    while let Some((&(token, value), rest)) = edits.split_first() {
        match (token as usize)
            .checked_sub(start)
            .and_then(|at| patch.get_mut(at))
        {
            Some(slot) => *slot = value,
            None => break,
        }
        edits = rest;
    }
    edits
}

/// Whether `edits` already satisfies [`View`]'s invariant for `len` logits.
pub(crate) fn is_normalised(edits: &[(u32, f32)], len: usize) -> bool {
    edits.windows(2).all(|pair| pair[0].0 < pair[1].0)
        && edits
            .last()
            .is_none_or(|&(token, _)| (token as usize) < len)
}

/// Reusable storage for [`normalise_edits`].
#[derive(Debug, Clone, Default)]
pub(crate) struct EditBuffer {
    /// `(token, position in the input, value)`, sorted by token then position.
    keyed: Vec<(u32, u32, f32)>,
    /// The normalised edits.
    out: Vec<(u32, f32)>,
    /// The patched copy of [`View::edited_in`].
    pub(crate) copy: Vec<f32>,
}

/// Brings `edits` into [`View`]'s form, with the meaning the trait's default gives them: tokens at
/// or beyond `len` are dropped and, should a token appear twice, the later edit wins.
///
/// Already normalised edits, such as those of `RepetitionPenalty`, are returned as they are;
/// others are rewritten into `buffer`, whose capacity is kept for the next call.
pub(crate) fn normalise_edits<'a>(
    edits: &'a [(u32, f32)],
    len: usize,
    buffer: &'a mut EditBuffer,
) -> &'a [(u32, f32)] {
    if is_normalised(edits, len) {
        return edits;
    }
    let EditBuffer { keyed, out, .. } = buffer;
    keyed.clear();
    keyed.extend(
        edits
            .iter()
            .zip(0u32..)
            .filter(|((token, _), _)| (*token as usize) < len)
            .map(|(&(token, value), position)| (token, position, value)),
    );
    // Keys are distinct, so the unstable sort is deterministic (and does not allocate).
    keyed.sort_unstable_by_key(|&(token, position, _)| (token, position));
    out.clear();
    for &(token, _, value) in keyed.iter() {
        match out.last_mut() {
            Some(last) if last.0 == token => last.1 = value,
            _ => out.push((token, value)),
        }
    }
    out
}

/// [`View::visit_range`] as a [`Kernel`](super::dispatch::Kernel): compiled once per form, with
/// the visitor's `run` and `tail` inlined into it, so that each form runs the same code in its
/// own vectors (the same bits: Rust never fuses a multiply and an add on its own).
struct VisitRange<'a, 'v, V> {
    view: &'a View<'v>,
    start: usize,
    end: usize,
    visitor: &'a mut V,
}

impl<V: Visit> super::dispatch::Kernel for VisitRange<'_, '_, V> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        self.view
            .visit_range_portable(self.start, self.end, self.visitor)
    }
}

/// [`View::visit_groups`] as a [`Kernel`](super::dispatch::Kernel) (see [`VisitRange`]).
struct VisitGroups<'a, 'v, V> {
    view: &'a View<'v>,
    maxima: &'a [f32],
    group: usize,
    floor: f32,
    visitor: &'a mut V,
}

impl<V: Visit> super::dispatch::Kernel for VisitGroups<'_, '_, V> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        self.view
            .visit_groups_portable(self.maxima, self.group, self.floor, self.visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is shown, chunk by chunk.
    #[derive(Default)]
    struct Record {
        values: Vec<f32>,
        starts: Vec<usize>,
        tails: usize,
    }

    impl Visit for Record {
        fn run(&mut self, start: usize, values: &[f32]) {
            assert_eq!(start, self.values.len());
            assert!(!values.is_empty() && values.len().is_multiple_of(LANES));
            self.starts.push(start);
            self.values.extend_from_slice(values);
        }
        fn tail(&mut self, start: usize, values: &[f32]) {
            assert_eq!(start, self.values.len());
            assert!(!values.is_empty() && values.len() < LANES);
            self.tails += 1;
            self.values.extend_from_slice(values);
        }
    }

    fn patched(base: &[f32], edits: &[(u32, f32)]) -> Vec<f32> {
        let mut copy = base.to_vec();
        for &(t, v) in edits {
            copy[t as usize] = v;
        }
        copy
    }

    #[test]
    fn visits_every_value_once_with_edits_applied() {
        for len in [1, 5, 15, 16, 17, 31, 32, 33, 100, 160] {
            let base: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let edit_sets: Vec<Vec<(u32, f32)>> = vec![
                vec![],
                vec![(0, -1.0)],
                vec![((len - 1) as u32, -2.0)],
                (0..len as u32)
                    .step_by(3)
                    .map(|t| (t, -(t as f32)))
                    .collect(),
                (0..len as u32).map(|t| (t, 0.5)).collect(),
            ];
            for edits in edit_sets {
                let mut record = Record::default();
                View::edited(&base, &edits).visit(&mut record);
                assert_eq!(
                    record.values,
                    patched(&base, &edits),
                    "len {len} edits {edits:?}"
                );
                assert_eq!(record.tails, usize::from(len % LANES != 0));
                assert!(record.starts.iter().all(|s| s % LANES == 0));
                for i in 0..len {
                    assert_eq!(View::edited(&base, &edits).get(i), Some(record.values[i]));
                }
                assert_eq!(View::edited(&base, &edits).get(len), None);
            }
        }
    }

    #[test]
    fn copy_into_copies_every_length() {
        let mut dst = Vec::new();
        for len in [0usize, 1, 15, 16, 17, 2048, 2049, 100, 3] {
            let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            copy_into(&mut dst, &src);
            assert_eq!(dst, src);
        }
    }

    #[test]
    fn a_patched_copy_is_visited_like_the_edited_view() {
        let mut copy = Vec::new();
        for len in [17usize, 300, 2048, 5000] {
            let base: Vec<f32> = (0..len).map(|i| i as f32).collect();
            // Dense edits (copied) and sparse ones (patched chunk by chunk).
            for step in [1usize, 7, 300, 1000] {
                let edits: Vec<(u32, f32)> = (0..len as u32)
                    .step_by(step)
                    .map(|t| (t, -(t as f32)))
                    .collect();
                let copied = !edits.is_empty() && len <= edits.len() * COPY_RATIO;
                let mut record = Record::default();
                View::edited_in(&base, &edits, &mut copy).visit(&mut record);
                assert_eq!(
                    record.values,
                    patched(&base, &edits),
                    "len {len} step {step}"
                );
                assert_eq!(record.tails, usize::from(len % LANES != 0));
                if copied {
                    assert_eq!(copy, patched(&base, &edits), "len {len} step {step}");
                }
            }
        }
        // The copy is only made when it pays.
        let base = vec![0.0f32; 100_000];
        copy.clear();
        let view = View::edited_in(&base, &[(5, 1.0)], &mut copy);
        assert_eq!(view.edits.len(), 1);
        assert!(copy.is_empty());
    }

    #[test]
    fn visit_groups_hands_over_exactly_the_selected_groups() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let group = 64;
        for case in 0..300 {
            let len = [1usize, 64, 100, 4096, 4100, 9000, 20_000][case % 7];
            let base: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let count = len.div_ceil(group);
            // Selections with long runs (across 64-group words too) and isolated groups.
            let run = [1usize, 3, 70, 200][case % 4];
            let mut maxima = vec![0.0f32; count];
            let mut on = rng.random_bool(0.5);
            for (g, m) in maxima.iter_mut().enumerate() {
                if g % run == 0 && rng.random_bool(0.6) {
                    on = !on;
                }
                *m = match (on, rng.random_range(0..8)) {
                    (true, 0) => 1.0, // exactly the floor
                    (true, _) => 2.0,
                    (false, 0) => f32::NEG_INFINITY,
                    (false, _) => 0.5,
                };
            }
            let floor = if case % 9 == 0 {
                f32::NEG_INFINITY
            } else {
                1.0
            };
            let edits: Vec<(u32, f32)> = (0..len as u32)
                .step_by([len + 1, 7, 100][case % 3])
                .map(|t| (t, -(t as f32)))
                .collect();
            let view = View::edited(&base, &edits);
            let whole = patched(&base, &edits);
            let mut expected = Vec::new();
            for (g, &m) in maxima.iter().enumerate() {
                if m >= floor && m > f32::NEG_INFINITY {
                    let end = ((g + 1) * group).min(len);
                    expected.extend((g * group..end).map(|i| (i, whole[i])));
                }
            }
            let mut seen = Seen::default();
            view.visit_groups(&maxima, group, floor, &mut seen);
            assert_eq!(seen.values, expected, "case {case}");
        }
    }

    /// Records each value it is shown with its index, checking the chunk rules.
    #[derive(Default)]
    struct Seen {
        values: Vec<(usize, f32)>,
    }

    impl Visit for Seen {
        fn run(&mut self, start: usize, values: &[f32]) {
            assert!(start.is_multiple_of(LANES) && values.len().is_multiple_of(LANES));
            self.values
                .extend(values.iter().enumerate().map(|(i, &x)| (start + i, x)));
        }
        fn tail(&mut self, start: usize, values: &[f32]) {
            assert!(start.is_multiple_of(LANES) && values.len() < LANES);
            self.values
                .extend(values.iter().enumerate().map(|(i, &x)| (start + i, x)));
        }
    }

    #[test]
    fn ranges_see_the_same_values() {
        let base: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let edits = [(3, -3.0), (16, -16.0), (40, -40.0), (98, -98.0)];
        let view = View::edited(&base, &edits);
        let whole = patched(&base, &edits);
        for (start, end) in [(0, 16), (16, 48), (32, 100), (96, 100), (48, 64), (64, 64)] {
            let mut record = Record {
                values: vec![0.0; start],
                ..Record::default()
            };
            view.visit_range(start, end, &mut record);
            assert_eq!(
                &record.values[start..],
                &whole[start..end],
                "{start}..{end}"
            );
        }
    }

    #[test]
    fn first_invalid_sees_edits() {
        let base = [0.0, f32::NAN, 1.0, 2.0];
        assert_eq!(View::plain(&base).first_invalid().map(|(i, _)| i), Some(1));
        let fixed = [(1, 0.5)];
        assert_eq!(View::edited(&base, &fixed).first_invalid(), None);
        let broken = [(1, 0.5), (3, f32::INFINITY)];
        assert_eq!(
            View::edited(&base, &broken).first_invalid(),
            Some((3, f32::INFINITY))
        );
    }

    #[test]
    fn normalisation_matches_sequential_application() {
        let mut buffer = EditBuffer::default();
        let sorted = [(1, 1.0), (4, 2.0)];
        let out = normalise_edits(&sorted, 5, &mut buffer);
        assert_eq!(out, &sorted);
        assert!(
            buffer.out.is_empty(),
            "already normalised edits are used in place"
        );

        let messy = [(4, 2.0), (9, 7.0), (1, 1.0), (4, 3.0), (0, 5.0), (1, 6.0)];
        let out = normalise_edits(&messy, 5, &mut buffer).to_vec();
        assert_eq!(out, vec![(0, 5.0), (1, 6.0), (4, 3.0)]);
        let base = [0.0f32; 5];
        let mut expected = base.to_vec();
        for &(t, v) in &messy {
            if let Some(slot) = expected.get_mut(t as usize) {
                *slot = v;
            }
        }
        assert_eq!(patched(&base, &out), expected);
    }
}
