//! The uniformity hint of a table page (`MmEnv::table_hint`): how many of
//! its entries continue the one before, kept in step with every write so
//! that a merge check is one comparison; the check of a recycled page a
//! split can keep; the full scan for an environment that keeps no hints.

use crate::mm::env::MmEnv;
use crate::mm::pte;
use crate::mm::{level_size, ENTRIES, PAGE_SIZE};

/// The uniformity hint's value for a table whose entries all continue the
/// one before ([`MmEnv::table_hint`]).
pub(super) const CHAINED_ALL: u16 = ENTRIES as u16 - 1;

/// The entry that continues `a` in a table whose entries translate `size`
/// bytes each (`level`'s): the next PA with everything else equal (valid),
/// or the same annotation (invalid); `None` for a table descriptor, which
/// nothing continues. `b` continues `a` ("chained") when it is this.
#[inline(always)]
pub(super) fn successor(a: u64, level: u8, size: u64) -> Option<u64> {
    let step = if pte::is_valid(a) { size } else { 0 };
    (!pte::is_table(a, level)).then_some(a.wrapping_add(step))
}

/// Keeps the uniformity hint of the table page holding `ptep` (an entry at
/// `level`) in step with a write of `new` there: the number of its entries
/// that continue the one before (chained: [`successor`]) changes only in the pairs
/// this entry is part of. Not kept for the root (never merged).
#[inline(always)]
pub(super) fn note_write<E: MmEnv>(env: &mut E, ptep: *mut u64, level: u8, new: u64) {
    if let Some(h) = env.table_hint(table_of(ptep)) {
        *h = hint_after(*h, ptep, level, new);
    }
}

/// The table page holding the descriptor at `ptep`.
#[inline(always)]
pub(super) fn table_of(ptep: *mut u64) -> *mut u64 {
    (ptep as usize & !(PAGE_SIZE as usize - 1)) as *mut u64
}

/// The uniformity hint `n` of the table page holding `ptep` (an entry at
/// `level`, not written yet) once `new` is written there.
#[inline(always)]
pub(super) fn hint_after(mut n: u16, ptep: *mut u64, level: u8, new: u64) -> u16 {
    let page = table_of(ptep);
    let i = (ptep as usize & (PAGE_SIZE as usize - 1)) / core::mem::size_of::<u64>();
    // SAFETY: i and its neighbours (checked against the page's bounds) are
    // descriptors of the live table page holding ptep.
    let at = |j: usize| unsafe { core::ptr::read_volatile(page.add(j)) };
    let old = at(i);
    // The level's size and each neighbour's successor worked out once.
    let size = level_size(level);
    if i > 0 {
        let after_prev = successor(at(i - 1), level, size);
        n = n.wrapping_add((after_prev == Some(new)) as u16).wrapping_sub((after_prev == Some(old)) as u16);
    }
    if i < ENTRIES - 1 {
        let next = Some(at(i + 1));
        n = n
            .wrapping_add((successor(new, level, size) == next) as u16)
            .wrapping_sub((successor(old, level, size) == next) as u16);
    }
    n
}

/// Does the table page `p`, taken for a split whose children are `first +
/// i * step`, already hold them in entries 1..511? True for a page a merge
/// gave back ([`MmEnv::alloc_table_for_fill`] may hand out a page
/// [`MmEnv::free_table`] kept, its hint and all its entries but the first,
/// which lists of free pages use as a link, as the core left them) when the
/// merged block is the one split again: the hint says every entry continued
/// the one before, and entries 1 and 2 are the children wanted. Entry 2
/// pins the step the chain had (the size of the level the table was at:
/// entry 2 - entry 1), entry 1 then every entry from 1 on. Any other page
/// (a hint of 0, as a page from the pool has) is filled.
///
/// Sets the page's hint for what the split writes: a block's children
/// continue one another.
///
/// # Safety
/// `p` is a table page the caller took from its cache and has not
/// installed.
#[inline(always)]
pub(super) unsafe fn recycled<E: MmEnv>(env: &mut E, p: *mut u64, first: u64, step: u64) -> bool {
    let Some(h) = env.table_hint(p) else {
        return false;
    };
    let kept = *h == CHAINED_ALL;
    *h = CHAINED_ALL;
    // SAFETY: entries 1 and 2 of the page (per the function contract).
    kept && unsafe {
        core::ptr::read(p.add(1)) == first.wrapping_add(step)
            && core::ptr::read(p.add(2)) == first.wrapping_add(2 * step)
    }
}

/// Do the 512 entries of the table at `p` all continue the one before,
/// starting from `c0`? Checks the last entry and the one the update touched
/// first, then the rest up to the first mismatch.
pub(super) fn scan_uniform(p: *mut u64, c0: u64, csize: u64, touched: usize) -> bool {
    let step = if pte::is_valid(c0) { csize } else { 0 };
    // SAFETY: (all reads below) i < 512 entries of a live table page.
    let at = |i: usize| unsafe { core::ptr::read_volatile(p.add(i)) };
    if at(ENTRIES - 1) != c0 + (ENTRIES as u64 - 1) * step || at(touched) != c0 + touched as u64 * step {
        return false;
    }
    let mut want = c0;
    for i in 1..ENTRIES {
        want += step;
        if at(i) != want {
            return false;
        }
    }
    true
}
