//! Whether the path a walk recorded ([`Found`]) still leads to a range: an
//! update of a range a lookup or a count just walked starts from its leaf
//! instead of the root while the tree is unchanged.

use super::{Found, Stage2};
use crate::mm::{level_shift, ENTRIES, PAGE_SIZE};

impl Found {
    /// Is the recorded path still the way to `[start, end)` in `s2`: the
    /// tree unchanged since, the path starting in its root and leading,
    /// level by level, to `start`, and `end` inside the same leaf?
    #[inline(always)]
    pub(super) fn usable(&self, s2: &Stage2, start: u64, end: u64) -> bool {
        let Some(leaf) = self.still_in(s2, start, end) else {
            return false;
        };
        let top = s2.geo.start_level;
        let slot = |l: u8, table: u64| (self.0.ptep(l) as u64).wrapping_sub(table) / 8;
        let index = |l: u8, entries: usize| (start >> level_shift(l)) & (entries as u64 - 1);
        let mut l = top + 1;
        while l <= leaf {
            if slot(l, self.0.ptep(l) as u64 & !(PAGE_SIZE - 1)) != index(l, ENTRIES) {
                return false;
            }
            l += 1;
        }
        true
    }

    /// The first checks of [`Found::usable`], all that a path recorded by
    /// a walk over `[start, end)` itself needs: one leaf holding the
    /// range, the tree unchanged since, and the path starting in this
    /// tree's root (every level below then leads to `start` by
    /// construction). The leaf's level if they hold.
    #[inline(always)]
    pub(super) fn still_in(&self, s2: &Stage2, start: u64, end: u64) -> Option<u8> {
        let leaf = self.0.single()?;
        if self.0.tag() != s2.gen || (start ^ (end - 1)) >> level_shift(leaf) != 0 {
            return None;
        }
        let top = s2.geo.start_level;
        let slot = (self.0.ptep(top) as u64).wrapping_sub(s2.geo.root) / 8;
        let index = (start >> level_shift(top)) & (s2.geo.root_entries as u64 - 1);
        (slot == index).then_some(leaf)
    }
}
