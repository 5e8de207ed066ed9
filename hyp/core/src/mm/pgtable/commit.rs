//! Phase two of an update: the descriptor writes by the rules every write
//! follows ([`Writer`]: break-before-make, TLBIs naming the tree and IPA,
//! the uniformity hint), and a commit to one tree ([`Commit`]): splits from
//! the update's table pages, merges of tables that become uniform, and the
//! invalidations owed until its end ([`Due`]). [`SetVisitor`] drives it
//! over a range.

use super::fit::{already, blockable};
use super::hint::{note_write, recycled, scan_uniform, CHAINED_ALL};
#[cfg(doc)]
use super::Stage2;
use super::{free_subtree, give_back, Stats};
use crate::mm::env::{MmEnv, S2Id};
use crate::mm::memcache::Memcache;
use crate::mm::prot::Leaf;
use crate::mm::pte;
use crate::mm::walker::{Entry, Visitor, Walk};
use crate::mm::{is_aligned, level_size, Error, ENTRIES};

/// The descriptor writes of one commit to one tree, by the rules every
/// write follows, whether the range commit ([`SetVisitor`]) or the
/// in-place commit of one entry ([`Stage2::commit_in_place`]) makes it.
pub(super) struct Writer<'a> {
    /// `None` for a bookkeeping tree.
    pub(super) s2: Option<&'a S2Id>,
    pub(super) stats: &'a mut Stats,
    /// Writes at this level keep no uniformity hint: the root's (never
    /// merged), or the level of the one entry a one-entry commit writes
    /// (it sets the hint itself, once, as phase one computed it).
    pub(super) unhinted: u8,
}

impl Writer<'_> {
    #[inline(always)]
    fn write<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
        if e.level != self.unhinted {
            note_write(env, e.ptep, e.level, val);
        }
        self.put(env, e, val);
    }

    /// Writes `val` at `e` without touching the hint.
    #[inline(always)]
    fn put<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
        if let Some(s2) = self.s2 {
            // SAFETY: e.ptep comes from a walk of this tree, inside its
            // tables, which the caller of commit holds; it translates
            // e.base at e.level.
            unsafe { env.write_pte(s2, e.ptep, e.base, e.level, val) };
        } else {
            // A bookkeeping tree: no hardware walks it, so no barrier and no
            // break-before-make are needed.
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(e.ptep, val) };
        }
        self.stats.pte_writes += 1;
    }

    #[inline(always)]
    fn tlbi_ipa<E: MmEnv>(&mut self, env: &mut E, e: &Entry) {
        if let Some(s2) = self.s2 {
            env.tlbi_ipa(s2, e.base, e.level);
            self.stats.tlbis += 1;
        }
    }

    #[inline(always)]
    fn tlbi_vmid<E: MmEnv>(&mut self, env: &mut E) {
        if let Some(s2) = self.s2 {
            env.tlbi_vmid(s2);
            self.stats.tlbis += 1;
        }
    }

    /// Replaces a leaf by `val`: break-before-make if the old one is valid,
    /// unless only the software bits change (one write, no TLBI: see
    /// [`pte::sw_bits_only`]); no TLBI for invalid → valid (no TLB holds an
    /// invalid entry).
    #[inline(always)]
    pub(super) fn replace_leaf<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
        if pte::sw_bits_only(e.pte, val) {
            self.write(env, e, val);
        } else if pte::is_valid(e.pte) {
            if pte::is_valid(val) {
                self.write(env, e, 0);
                self.tlbi_ipa(env, e);
                self.write(env, e, val);
            } else {
                self.write(env, e, val);
                self.tlbi_ipa(env, e);
            }
        } else {
            self.write(env, e, val);
        }
    }
}

/// Phase two: writes the range, splitting and merging as needed.
pub(super) struct SetVisitor<'a> {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) new: Leaf,
    /// The level of the last table entry `table_post` left a table (not
    /// merged), or [`NONE_KEPT`]: the next `table_post` one level up is
    /// that entry's parent (the walk is depth first), whose table then
    /// holds a table descriptor and cannot be uniform.
    pub(super) kept: u8,
    pub(super) c: Commit<'a>,
}

/// What one commit to one tree changes, by the rules every commit
/// follows, whether it walks a range ([`SetVisitor`]) or goes from one
/// page's leaf ([`Stage2::commit_page`]): descriptor writes ([`Writer`]),
/// splits from the update's table pages, merges, and the invalidations
/// owed until its end ([`Due`]).
pub(super) struct Commit<'a> {
    /// `None` for a bookkeeping tree.
    pub(super) s2: Option<S2Id>,
    pub(super) who: u16,
    pub(super) cache: &'a mut Memcache,
    /// The tree's own table pages, where its freed ones go back
    /// ([`Stage2::use_own_tables`]); `None`: to the environment.
    pub(super) own: &'a mut Option<Memcache>,
    pub(super) stats: &'a mut Stats,
    pub(super) tables: &'a mut u32,
    /// Tables whose entries all become invalid stay ([`Stage2::keep_invalid_tables`]).
    pub(super) keep_invalid: bool,
    /// No valid page is unmapped in passing ([`Stage2::no_transient_faults`]):
    /// valid tables stay, valid blocks split live (BBML2).
    pub(super) keep_valid: bool,
    /// Valid leaves are pages only.
    pub(super) pages_only: bool,
    /// The tree's MemAttr encoding ([`Stage2::fwb`]).
    pub(super) fwb: bool,
    /// The root's level: its entries live in the root, never merged, so
    /// they need no uniformity hint.
    pub(super) root_level: u8,
    /// Invalidations owed and deferred ([`SetVisitor::finish`]).
    pub(super) due: Due,
}

/// [`SetVisitor::kept`]: no table entry kept by the last `table_post`.
pub(super) const NONE_KEPT: u8 = u8::MAX;

/// Table pages a deferred VMID-wide invalidation frees at most; one more
/// issues it at once.
const DUE_FREES: usize = 4;

/// The VMID-wide TLB invalidation a commit owes after replacing a table
/// by an invalid block, and the table pages waiting for it. Nothing in the
/// commit waits on it (no entry becomes valid there: no break-before-make
/// needs it), so one before the commit returns is enough, and one covers
/// every table detached before it (Arm ARM, TLBI VMALLS12E1IS: all
/// stage-1 and stage-2 entries and walk-cache entries of the VMID): tables
/// merging into invalid blocks on the way up (a 4K table, then the 2M
/// table above it) share one invalidation.
pub(super) struct Due {
    /// Tables detached, to free once it is issued: while there are any,
    /// a VMID-wide invalidation is owed.
    nfrees: usize,
    /// `frees[..nfrees]` (not initialized beyond: one store to set up).
    frees: [core::mem::MaybeUninit<u64>; DUE_FREES],
}

impl Due {
    #[inline(always)]
    pub(super) const fn new() -> Self {
        Due { nfrees: 0, frees: [core::mem::MaybeUninit::uninit(); DUE_FREES] }
    }
}

impl SetVisitor<'_> {
    #[inline]
    fn covers(&self, e: &Entry) -> bool {
        e.base >= self.start && e.end() <= self.end
    }
}

impl Commit<'_> {
    /// The descriptor writes of this commit ([`Writer`]).
    #[inline(always)]
    fn writer(&mut self) -> Writer<'_> {
        Writer { s2: self.s2.as_ref(), stats: self.stats, unhinted: self.root_level }
    }

    /// Out of line: inlined, its hint update and barrier burdened every
    /// caller's registers (the leaf callback above all).
    #[inline(never)]
    fn write<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
        self.writer().write(env, e, val);
    }

    /// Break-before-make of the valid entry `e` to `val` (a split, a merge
    /// into a valid block): invalid, the invalidation (`tlbi`), then `val`.
    /// The hint is kept in step once, for `val`: nothing reads it between.
    #[inline]
    fn break_make<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64, tlbi: fn(&mut Self, &mut E, &Entry)) {
        if e.level != self.root_level {
            note_write(env, e.ptep, e.level, val);
        }
        self.writer().put(env, e, 0);
        tlbi(self, env, e);
        self.writer().put(env, e, val);
    }

    fn tlbi_ipa<E: MmEnv>(&mut self, env: &mut E, e: &Entry) {
        self.writer().tlbi_ipa(env, e);
    }

    /// A VMID-wide invalidation now: it covers every invalidation owed,
    /// and the tables detached before it may be freed.
    fn tlbi_vmid<E: MmEnv>(&mut self, env: &mut E) {
        self.writer().tlbi_vmid(env);
        for i in 0..core::mem::take(&mut self.due.nfrees) {
            // SAFETY: frees[..nfrees] were written by merge.
            let table = unsafe { self.due.frees[i].assume_init() };
            self.free_merged(env, table);
        }
    }

    /// Issues what the commit still owes: then every table it detached is
    /// invalidated and freed.
    pub(super) fn finish<E: MmEnv>(&mut self, env: &mut E) {
        if self.due.nfrees != 0 {
            self.tlbi_vmid(env);
        }
    }

    /// Gives back a table page merged away, unreachable and invalidated.
    fn free_merged<E: MmEnv>(&mut self, env: &mut E, table: u64) {
        give_back(env, self.own, table);
        self.stats.tables_freed += 1;
        *self.tables -= 1;
    }

    pub(super) fn replace_leaf<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
        self.writer().replace_leaf(env, e, val);
    }

    /// Replaces a table descriptor by the leaf `val`; returns the old table,
    /// unreachable and invalidated (VMID-wide: a walker may have cached the
    /// table pointer for any IPA below it), so it may be freed.
    fn replace_table<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) -> u64 {
        if pte::is_valid(val) {
            self.write(env, e, 0);
            self.tlbi_vmid(env);
            self.write(env, e, val);
        } else {
            self.write(env, e, val);
            self.tlbi_vmid(env);
        }
        pte::table_pa(e.pte)
    }

    /// Splits the leaf `e` into a table of 512 copies one level down. Out
    /// of line: the leaf callback's common path (a leaf written in place)
    /// does not carry its registers.
    /// Returns the new table.
    #[inline(never)]
    pub(super) fn split<E: MmEnv>(&mut self, env: &mut E, e: &Entry) -> u64 {
        let table = self.cache.pop(env).expect("phase one counted every split");
        let child = e.level + 1;
        let csize = level_size(child);
        let p = env.table_ptr(table);
        let step = if pte::is_valid(e.pte) { csize } else { 0 };
        let first = pte::child_of(e.pte, child, 0);
        // SAFETY: `table` is a page from the cache that no walker can reach
        // yet, its contents unspecified but for what `recycled` relies on.
        unsafe {
            if recycled(env, p, first, step) {
                env.init_pte(p, first);
            } else {
                env.init_table(p, first, step);
            }
        }
        if let Some(s2) = &self.s2 {
            // The zeroing and the 512 entries before the table descriptor.
            env.table_filled(s2, table);
            env.publish_barrier();
        }
        self.stats.splits += 1;
        self.stats.tables_allocated += 1;
        env.on_split(self.who, e.base, e.level);
        *self.tables += 1;
        if pte::is_valid(e.pte) && self.keep_valid {
            // A tree with no transient faults has valid blocks only where
            // the walker has BBML2 (`Stage2::no_transient_faults`): the
            // filled table, with the block's own translations, replaces it
            // in one write; the invalidation after it drops the block's
            // TLB entry (a walker using either translates the same).
            debug_assert!(!self.pages_only, "a valid block in a tree of pages");
            self.write(env, e, pte::make_table(table));
            self.tlbi_ipa(env, e);
        } else if pte::is_valid(e.pte) {
            self.break_make(env, e, pte::make_table(table), Self::tlbi_ipa);
        } else {
            self.write(env, e, pte::make_table(table));
        }
        table
    }

    /// Replaces the table under `e` by one block when its 512 entries are
    /// uniform (and physically contiguous, for valid ones); true if it did.
    /// `start`: the first IPA the update wrote (without a hint, the scan
    /// looks at the entry holding it first).
    pub(super) fn try_merge<E: MmEnv>(&mut self, env: &mut E, e: &Entry, start: u64) -> bool {
        if e.level == 0 || !pte::is_table(e.pte, e.level) {
            return false;
        }
        let table = pte::table_pa(e.pte);
        let child = e.level + 1;
        let csize = level_size(child);
        let p = env.table_ptr(table);
        // SAFETY: p points at a live table page of 512 descriptors.
        let c0 = unsafe { core::ptr::read_volatile(p) };
        if pte::is_table(c0, child) {
            return false;
        }
        let valid = pte::is_valid(c0);
        if valid && !is_aligned(pte::table_pa(c0), level_size(e.level)) {
            return false;
        }
        if !valid && self.keep_invalid {
            return false;
        }
        if valid && self.keep_valid {
            // Merging needs break-before-make: every page under the table
            // would be unmapped for a moment.
            return false;
        }
        // Entry i must be c0 advanced by i * step (valid entries map
        // consecutive PAs; invalid ones carry the same annotation): every
        // entry continues the one before. The hint counts those that do.
        let touched = (((start.max(e.base) - e.base) / csize) as usize).min(ENTRIES - 1);
        let uniform = match env.table_hint(p) {
            Some(h) => {
                let u = *h == CHAINED_ALL;
                debug_assert_eq!(u, scan_uniform(p, c0, csize, touched), "hint of table {table:#x}");
                u
            }
            None => scan_uniform(p, c0, csize, touched),
        };
        if !uniform {
            return false;
        }
        self.merge(env, e, table, c0);
        true
    }

    /// Replaces the table `table` under `e`, whose 512 entries continue
    /// `c0`, by one block. Out of line: the checks before it run on every
    /// `table_post`, the merge itself rarely (its registers would burden
    /// them all).
    #[inline(never)]
    fn merge<E: MmEnv>(&mut self, env: &mut E, e: &Entry, table: u64, c0: u64) {
        let valid = pte::is_valid(c0);
        self.stats.merges += 1;
        env.on_merge(self.who, e.base, e.level);
        if valid {
            // Table → valid block: break-before-make (a change of block
            // size: Arm ARM, "Using break-before-make when updating translation
            // table entries"), the invalidation between the two
            // writes VMID-wide: a TLB may hold an entry for any page the
            // table mapped and a walk cache the table's address for any
            // IPA under it. It also covers all that was owed; the page is
            // free after it.
            self.break_make(env, e, c0 & !pte::TABLE_OR_PAGE, |v, env, _| v.tlbi_vmid(env));
            self.free_merged(env, table);
        } else {
            // Table → invalid block: nothing waits on the invalidation
            // (no entry becomes valid here), so it is owed ([`Due`]: one
            // VMID-wide invalidation for this and every merge after it in
            // the commit), and the page waits for it to be freed.
            self.write(env, e, c0);
            if self.s2.is_none() {
                self.free_merged(env, table);
                return;
            }
            if self.due.nfrees == DUE_FREES {
                // Covers this table's detachment too.
                self.tlbi_vmid(env);
                self.free_merged(env, table);
            } else {
                self.due.frees[self.due.nfrees] = core::mem::MaybeUninit::new(table);
                self.due.nfrees += 1;
            }
        }
    }
}

impl<E: MmEnv> Visitor<E> for SetVisitor<'_> {
    fn leaf(&mut self, env: &mut E, e: &Entry) -> Result<(), Error> {
        if self.covers(e) {
            let want = self.new.offset(e.base - self.start);
            if blockable(want, e.level, self.c.pages_only) {
                // Encoded once: equal to the entry is `already`.
                let d = pte::encode_in(want, e.level, self.c.fwb);
                if d != e.pte {
                    self.c.replace_leaf(env, e, d);
                }
                return Ok(());
            }
        }
        if already(e, self.start, self.new, self.c.fwb) {
            return Ok(());
        }
        self.c.split(env, e);
        Ok(())
    }

    fn table_pre(&mut self, env: &mut E, e: &Entry) -> Result<Walk, Error> {
        if self.covers(e) {
            let want = self.new.offset(e.base - self.start);
            // A valid block over a table is break-before-make of every
            // page under it: a tree with no transient faults writes the
            // table's leaves instead.
            let live = self.c.keep_valid && want.is_valid();
            if !live && blockable(want, e.level, self.c.pages_only) {
                let old = self.c.replace_table(env, e, pte::encode_in(want, e.level, self.c.fwb));
                let n = free_subtree(env, self.c.own, old, e.level + 1) as usize;
                self.c.stats.tables_freed += n as u64;
                *self.c.tables -= n as u32;
                return Ok(Walk::Skip);
            }
        }
        Ok(Walk::Continue)
    }

    fn table_post(&mut self, env: &mut E, e: &Entry) -> Result<(), Error> {
        // A table that still holds a table descriptor (the child entry the
        // last table_post kept) is not uniform: no merge check needed.
        let merged = self.kept != e.level + 1 && self.c.try_merge(env, e, self.start);
        self.kept = if merged { NONE_KEPT } else { e.level };
        Ok(())
    }
}
