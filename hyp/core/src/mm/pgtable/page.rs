//! The one-page forms of an update, from a page's leaf found by one
//! descent from the root (no visitor, [`Stage2::page_path`]): the entry
//! rewritten in place when that is all the update does (no table page
//! changes: [`Stage2::prepare_in_place`], [`Stage2::commit_in_place`]),
//! else the update counted and committed from the leaf
//! ([`Stage2::commit_page`]: the splits down to the page and the merges up
//! from it that the range commit would make). One descent either way; the
//! range commit decides nothing differently.

use super::commit::Writer;
use super::fit::already;
use super::hint::{hint_after, table_of, CHAINED_ALL};
use super::Found;
#[cfg(test)]
use super::{page_counts, ENTRY_COMMITS};
use super::{Counted, InPlace, Mapping, PagePath, Stage2, Update};
use crate::mm::env::MmEnv;
use crate::mm::prot::Leaf;
use crate::mm::pte;
use crate::mm::walker::{leaf_entry, leaf_path, next_valid, Entry, Path};
use crate::mm::{is_aligned, level_size, ENTRIES, PAGE_SIZE};

impl Stage2 {
    /// The leaf entry translating the page at `ipa` and the way to it from
    /// the root (one descent, no visitor), for an update of that page alone
    /// ([`Stage2::count_page`]); `None` if `ipa` is not a page of the tree.
    #[inline(always)]
    pub fn page_path<E: MmEnv>(&self, env: &E, ipa: u64) -> Option<PagePath> {
        if !is_aligned(ipa, PAGE_SIZE) || ipa >= self.ipa_limit() {
            return None;
        }
        let (path, pte, level) = leaf_path(env, &self.geo, ipa);
        let (ptep, gen) = (path.ptep(level), self.gen);
        Some(PagePath { ptep, gen, found: self.found(path), pte, base: ipa & !(level_size(level) - 1), level })
    }

    /// [`Stage2::page_leaf`] of a page entry only: `None` unless the leaf
    /// translating `ipa` is a page (level 3), whose base and level are
    /// then the constants they are (the page, 3).
    #[inline(always)]
    pub fn page_entry<E: MmEnv>(&self, env: &E, ipa: u64) -> Option<PagePath> {
        if !is_aligned(ipa, PAGE_SIZE) || ipa >= self.ipa_limit() {
            return None;
        }
        let (ptep, pte, level) = leaf_entry(env, &self.geo, ipa);
        if level != 3 {
            return None;
        }
        Some(PagePath { ptep, gen: self.gen, found: Found(Path::new()), pte, base: ipa, level: 3 })
    }

    /// Are the leaves translating the `n` pages from `ipa` page entries
    /// (level 3) holding `first + i * PAGE_SIZE` for page `i` (a run of
    /// one leaf's pages, `first` the first one's descriptor: a valid page
    /// descriptor, whose output address the offset moves)? One descent
    /// per table page of the run, its entries then read in a row.
    #[inline]
    pub fn page_entries_are<E: MmEnv>(&self, env: &E, ipa: u64, n: u64, first: u64) -> bool {
        let mut ptep: *mut u64 = core::ptr::null_mut();
        for i in 0..n {
            let a = ipa + i * PAGE_SIZE;
            if i == 0 || a & (level_size(2) - 1) == 0 {
                match self.page_entry(env, a) {
                    Some(p) => ptep = p.ptep,
                    None => return false,
                }
            } else {
                // SAFETY: the entry after the previous page's in the same
                // level-3 table page (`a` is not the first page its table
                // translates), which holds ENTRIES descriptors.
                ptep = unsafe { ptep.add(1) };
            }
            // SAFETY: a descriptor of a table page of this tree.
            if unsafe { core::ptr::read_volatile(ptep) } != first + i * PAGE_SIZE {
                return false;
            }
        }
        true
    }

    /// [`Stage2::page_path`] without recording the way down: the leaf
    /// entry alone, for an update that rewrites it in place
    /// ([`Stage2::prepare_in_place`]) and nothing else.
    #[inline(always)]
    pub fn page_leaf<E: MmEnv>(&self, env: &E, ipa: u64) -> Option<PagePath> {
        if !is_aligned(ipa, PAGE_SIZE) || ipa >= self.ipa_limit() {
            return None;
        }
        let (ptep, pte, level) = leaf_entry(env, &self.geo, ipa);
        let found = Found(Path::new());
        Some(PagePath { ptep, gen: self.gen, found, pte, base: ipa & !(level_size(level) - 1), level })
    }

    /// Phase one of setting the page at `ipa`, whose leaf entry `p` found,
    /// to `new` (checked by the caller): the one-page form of
    /// [`Stage2::count_found`], without a visitor. The leaf needs a table
    /// page per level down to the page when it is a block that does not
    /// already hold `new` there; nothing else does. Its commit
    /// ([`Stage2::commit_page`]) writes what the range commit would: the
    /// splits down to the page, the page, the merges up from it.
    #[inline(always)]
    pub fn count_page(&self, p: &PagePath, ipa: u64, new: Leaf) -> Counted {
        debug_assert!(ipa >= p.base && ipa - p.base < level_size(p.level) && is_aligned(ipa, PAGE_SIZE));
        debug_assert!(p.found.0.by_descent(), "count_page of a leaf found without its path");
        let e = Entry { ptep: p.ptep, pte: p.pte, base: p.base, level: p.level };
        let pages = if p.level == 3 || already(&e, ipa, new, self.fwb) { 0 } else { 3 - p.level as usize };
        let own = self.own_for(pages);
        Counted { start: ipa, end: ipa + PAGE_SIZE, new, pages, found: p.found, own }
    }

    /// Phase two of [`Stage2::count_page`], the tree unchanged since: the
    /// range commit of one page without the walk. From the leaf phase one
    /// found: a block that does not already hold the page is split level
    /// by level down to it and the page written in its new table, which
    /// then differs from its neighbours (the range commit's merge check
    /// there finds nothing to merge, and none above it); otherwise the page
    /// entry is written (if it changes) and the tables on the path are
    /// merged bottom up while they become uniform, as the range commit's
    /// `table_post` does. Out of line: only splits and merges come here.
    #[inline(never)]
    pub(super) fn commit_page<E: MmEnv>(&mut self, env: &mut E, u: &mut Update, leaf: u8) {
        let (ipa, path, top) = (u.start, u.found.0, self.geo.start_level);
        let want = pte::encode_in(u.new, 3, self.fwb);
        let fwb = self.fwb;
        let mut level = leaf;
        let at = |ptep: *mut u64, level: u8| {
            // SAFETY: ptep is a descriptor of this tree on the way to ipa
            // (the path phase one recorded, the tree unchanged since, or an
            // entry of a table this commit installed).
            let pte = unsafe { core::ptr::read_volatile(ptep) };
            Entry { ptep, pte, base: ipa & !(level_size(level) - 1), level }
        };
        #[cfg(test)]
        page_counts(|n| n.0 += 1);
        let mut e = at(path.ptep(level), level);
        let mut c = self.commit_state(&mut u.cache);
        if level < 3 && !already(&e, ipa, u.new, fwb) {
            while level < 3 {
                let table = c.split(env, &e);
                let table = env.table_ptr(table);
                level += 1;
                let idx = ((ipa >> crate::mm::level_shift(level)) as usize) & (ENTRIES - 1);
                // SAFETY: idx < 512 entries of the table just installed.
                e = at(unsafe { table.add(idx) }, level);
                #[cfg(test)]
                page_counts(|n| n.1 += 1);
            }
            if want != e.pte {
                c.replace_leaf(env, &e, want);
            }
            // No merge, so no invalidation owed (`Commit::finish`).
            return;
        }
        if level == 3 && want != e.pte {
            c.replace_leaf(env, &e, want);
        }
        while level > top {
            level -= 1;
            if !c.try_merge(env, &at(path.ptep(level), level), ipa) {
                break;
            }
            #[cfg(test)]
            page_counts(|n| n.2 += 1);
        }
        c.finish(env);
    }
    /// The first valid leaf over `[start, end)` (`start < end`, inside the
    /// tree), found by raw descriptors ([`next_valid`]: no visitor, an
    /// invalid entry a load and a test): what a teardown looks for.
    pub fn next_mapped<E: MmEnv>(&self, env: &E, start: u64, end: u64) -> Option<Mapping> {
        debug_assert!(start < end && end <= self.ipa_limit());
        let (base, level, d) = next_valid(env, &self.geo, start, end)?;
        Some(Mapping { base, level, leaf: pte::decode(d) })
    }

    /// Phase one of replacing the whole leaf entry `p` found by `new`
    /// (`pte::encode` of a leaf for `p.level`) in place: the one-entry
    /// form of [`Stage2::count_found`] over the entry's range, for an
    /// update that needs no table page. `None` when the write would make
    /// the entry's table page uniform (the range update then decides
    /// whether to merge it; a tree that keeps such tables, valid or invalid
    /// ones as `new` is, writes it in place) or the environment keeps no
    /// uniformity hint for it: the caller counts the update instead.
    /// Changes nothing.
    #[inline(always)]
    pub fn prepare_in_place<E: MmEnv>(&self, env: &mut E, p: &PagePath, new: u64) -> Option<InPlace> {
        debug_assert_eq!(p.gen, self.gen, "leaf of an older tree");
        let ptep = p.ptep;
        let hint = if p.level == self.geo.start_level {
            None
        } else {
            let h = env.table_hint(table_of(ptep))?;
            let n = hint_after(*h, ptep, p.level, new);
            // A table this tree keeps when it becomes uniform (the DMA
            // view: valid and invalid tables both kept) is written in
            // place; else the range update decides whether to merge.
            let kept = if pte::is_valid(new) { self.keep_valid } else { self.keep_invalid };
            if n == CHAINED_ALL && !kept {
                return None;
            }
            Some((h as *mut u16, n))
        };
        Some(InPlace { ptep, old: p.pte, new, base: p.base, level: p.level, gen: self.gen, hint })
    }

    /// Phase two of [`Stage2::prepare_in_place`]: writes the entry by the
    /// rules of every descriptor write ([`Writer::replace_leaf`]: break-
    /// before-make and a TLBI under this tree's `S2Id` where a TLB may
    /// hold the old entry). Cannot fail.
    #[inline(always)]
    pub fn commit_in_place<E: MmEnv>(&mut self, env: &mut E, u: InPlace) {
        debug_assert_eq!(u.gen, self.gen, "entry of an older tree");
        if u.new != u.old {
            if let Some((h, n)) = u.hint {
                // SAFETY: the hint word of the entry's table page, which is
                // still a table page of this tree (unchanged since phase
                // one: the generation); the word keeps its address while
                // it is (MmEnv::table_hint) and only this tree's lock
                // holder uses it.
                unsafe { *h = n };
            }
            let e = Entry { ptep: u.ptep, pte: u.old, base: u.base, level: u.level };
            // The same write either way; split so that the one-write case
            // (no TLBI: see `Writer::replace_leaf`) works out only what its
            // write needs of the tree's name, not what an invalidation does.
            #[allow(clippy::if_same_then_else)]
            if pte::sw_bits_only(u.old, u.new) || !pte::is_valid(u.old) {
                self.replace_in_place(env, &e, u.new);
            } else {
                self.replace_in_place(env, &e, u.new);
            }
        }
        self.gen = self.gen.wrapping_add(1);
        #[cfg(test)]
        ENTRY_COMMITS.with(|c| c.set(c.get() + 1));
    }

    /// [`Stage2::commit_in_place`]'s write of `val` at `e`, by the rules of
    /// every descriptor write ([`Writer::replace_leaf`]).
    #[inline(always)]
    fn replace_in_place<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
        Writer { s2: self.id.as_ref(), stats: &mut self.stats, unhinted: e.level }.replace_leaf(env, e, val);
        #[cfg(test)]
        if let Some(s2) = self.id {
            env.commit_done(&s2);
        }
    }
}
