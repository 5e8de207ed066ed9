//! Stage-2 page tables: geometry, lookups and range updates.
//!
//! An update of `[ipa, ipa + size)` to a new leaf runs in two phases:
//! [`Stage2::prepare`] checks the range and counts the table pages the update
//! needs (splits), allocating them up front; [`Stage2::commit`] then changes
//! the tables and cannot fail. Blocks are used wherever IPA, PA and range
//! allow; a block is split only when part of it changes, only as deep as
//! needed; a table whose 512 entries become uniform is merged back into a
//! block. Live valid entries are changed with break-before-make.
//!
//! Trees the hardware walks (those with a VMID) follow the rules a walker
//! on another CPU imposes: a new table is filled, then a barrier orders its
//! contents before the descriptor that installs it; every TLB invalidation
//! names the tree (root and VMID) and the IPA of the entry it covers; a table
//! page is freed only after an invalidation issued once it became
//! unreachable.

use super::env::{MmEnv, S2Id, Vmid};
use super::memcache::Memcache;
use super::prot::Leaf;
use super::pte;
use super::walker::{leaf_entry, leaf_path, walk, walk_path, Entry, Geometry, Path, Visitor, Walk};
use super::{is_aligned, level_size, Error, ENTRIES, PAGE_SIZE};

/// Software counters of one stage-2 (for tests and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Writes to live descriptors.
    pub pte_writes: u64,
    /// TLB invalidations issued (by IPA or by VMID).
    pub tlbis: u64,
    pub tables_allocated: u64,
    pub tables_freed: u64,
    pub splits: u64,
    pub merges: u64,
}

/// Where one leaf lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First IPA of the leaf entry.
    pub base: u64,
    pub level: u8,
    /// The leaf as seen at `base`.
    pub leaf: Leaf,
}

impl Mapping {
    pub fn size(&self) -> u64 {
        level_size(self.level)
    }
    /// The leaf as seen at `ipa` (inside this entry).
    pub fn at(&self, ipa: u64) -> Leaf {
        self.leaf.offset(ipa - self.base)
    }
}

/// A stage-2 translation table tree.
#[derive(Debug)]
pub struct Stage2 {
    geo: Geometry,
    root_pages: usize,
    ipa_bits: u8,
    /// VTCR_EL2.T0SZ and SL0 of the tree ([`Stage2::s2_id`]), worked out once.
    t0sz: u8,
    sl0: u8,
    /// `None` for a bookkeeping tree that no hardware walks (no TLBI needed).
    vmid: Option<Vmid>,
    /// Non-root table pages in use.
    tables: usize,
    /// Whose tree this is, for trace records (0 host, VM handle, ...).
    who: u16,
    /// Walked by the SMMU, not the CPUs ([`S2Id::iommu`]).
    iommu: bool,
    /// Tables that become all-invalid are not merged ([`Stage2::keep_invalid_tables`]).
    keep_invalid: bool,
    /// Commits so far: a [`Path`] recorded at one generation is valid
    /// while the tree is still at it.
    gen: u64,
    pub stats: Stats,
}

/// What one walk over a range found: the path to its leaf when the range
/// lies in one leaf, tagged with the tree's generation then. A later update
/// of the same range ([`Stage2::count_found`]) starts from the leaf instead
/// of the root while the tree has not changed since. Four words.
#[derive(Clone, Copy, Debug)]
pub struct Found(Path);

impl Found {
    /// Is the recorded path still the way to `[start, end)` in `s2`: the
    /// tree unchanged since, the path starting in its root and leading,
    /// level by level, to `start`, and `end` inside the same leaf?
    #[inline(always)]
    fn usable(&self, s2: &Stage2, start: u64, end: u64) -> bool {
        let Some(leaf) = self.still_in(s2, start, end) else {
            return false;
        };
        let top = s2.geo.start_level;
        let slot = |l: u8, table: u64| (self.0.ptep(l) as u64).wrapping_sub(table) / 8;
        let index = |l: u8, entries: usize| (start >> super::level_shift(l)) & (entries as u64 - 1);
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
    fn still_in(&self, s2: &Stage2, start: u64, end: u64) -> Option<u8> {
        let leaf = self.0.single()?;
        if self.0.tag() != s2.gen as u32 || (start ^ (end - 1)) >> super::level_shift(leaf) != 0 {
            return None;
        }
        let top = s2.geo.start_level;
        let slot = (self.0.ptep(top) as u64).wrapping_sub(s2.geo.root) / 8;
        let index = (start >> super::level_shift(top)) & (s2.geo.root_entries as u64 - 1);
        (slot == index).then_some(leaf)
    }
}

/// The leaf entry translating one page, as [`Stage2::entry`] found it: an
/// update that replaces exactly this entry can be written through it
/// ([`Stage2::prepare_entry`]) while the tree is unchanged.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    ptep: *mut u64,
    /// The descriptor when it was found.
    pub pte: u64,
    /// First IPA the entry translates.
    pub base: u64,
    pub level: u8,
    /// The tree's generation then.
    gen: u32,
}

/// Phase one of an update of one whole leaf entry ([`Stage2::prepare_entry`]):
/// what [`Stage2::commit_entry`] writes, and the uniformity hint the
/// entry's table page has afterwards.
#[must_use = "commit a prepared entry update"]
#[derive(Debug)]
pub struct EntryUpdate {
    slot: Slot,
    new: u64,
    /// The hint word of the entry's table page and its value after the
    /// write; `None`: no hint to keep (an entry of the root).
    hint: Option<(*mut u16, u16)>,
}

#[cfg(test)]
std::thread_local! {
    /// Tests: one-entry commits so far on this thread.
    pub static ENTRY_COMMITS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

#[cfg(test)]
std::thread_local! {
    /// Tests: page-form commits ([`Stage2::commit_page`]) so far on this
    /// thread, and the splits and merges they made.
    pub static PAGE_COMMITS: core::cell::Cell<(u64, u64, u64)> = const { core::cell::Cell::new((0, 0, 0)) };
}

#[cfg(test)]
fn page_counts(f: impl FnOnce(&mut (u64, u64, u64))) {
    PAGE_COMMITS.with(|c| {
        let mut n = c.get();
        f(&mut n);
        c.set(n);
    });
}

/// The leaf entry translating one page and the way to it from the root,
/// as [`Stage2::page_path`] found it: an update of that page alone starts
/// there ([`Stage2::count_page`]) while the tree is unchanged.
#[derive(Clone, Copy, Debug)]
pub struct PagePath {
    found: Found,
    /// The leaf's descriptor when it was found.
    pub pte: u64,
    /// First IPA the leaf entry translates.
    pub base: u64,
    pub level: u8,
}

/// Phase-one result of an update: the checked range and its table pages.
#[must_use = "commit or cancel an update"]
#[derive(Debug)]
pub struct Update {
    start: u64,
    end: u64,
    new: Leaf,
    cache: Memcache,
    /// The path its phase-one walk took (commit starts at the leaf when
    /// the range lies in one and the tree is unchanged). A path one page's
    /// descent recorded ([`Stage2::count_page`]) is committed from the
    /// leaf without the walk ([`Stage2::commit_page`]).
    found: Found,
}

/// An update checked and counted by its phase-one walk, before its table
/// pages are allocated ([`Counted::reserve`]): holds nothing, so a caller
/// preparing several trees checks them all before it allocates for any.
#[must_use = "reserve the counted pages"]
#[derive(Debug)]
pub struct Counted {
    start: u64,
    end: u64,
    new: Leaf,
    pages: usize,
    found: Found,
}

impl Counted {
    /// Allocates the table pages the update needs: the end of phase one.
    #[inline(always)]
    pub fn reserve<E: MmEnv>(self, env: &mut E) -> Result<Update, Error> {
        let mut cache = Memcache::new();
        if !cache.topup(env, self.pages) {
            return Err(Error::NoMem);
        }
        Ok(Update { start: self.start, end: self.end, new: self.new, cache, found: self.found })
    }
}

impl Update {
    /// Gives back the preallocated pages without changing anything.
    pub fn cancel<E: MmEnv>(mut self, env: &mut E) {
        self.cache.drain(env);
    }
    /// Table pages this update will take.
    pub fn pages(&self) -> usize {
        self.cache.len()
    }
}

/// Start level and number of concatenated root tables for an IPA width with
/// the 4 KiB granule (at most 16 concatenated tables, as VTCR_EL2 allows).
pub const fn geometry_for(ipa_bits: u8) -> Option<(u8, usize)> {
    if ipa_bits < 32 || ipa_bits > 48 {
        return None;
    }
    let start_level = if ipa_bits > 43 {
        0
    } else if ipa_bits > 34 {
        1
    } else {
        2
    };
    let root_entries = 1usize << (ipa_bits as u32 - super::level_shift(start_level));
    let pages = if root_entries > ENTRIES { root_entries / ENTRIES } else { 1 };
    Some((start_level, pages))
}

impl Stage2 {
    /// An empty tree: every IPA invalid with no owner recorded.
    pub fn new<E: MmEnv>(env: &mut E, ipa_bits: u8, vmid: Option<Vmid>) -> Result<Self, Error> {
        let (start_level, root_pages) = geometry_for(ipa_bits).ok_or(Error::Inval)?;
        let root = env.alloc_root(root_pages).ok_or(Error::NoMem)?;
        if vmid.is_some() {
            // The root's zeroing must be visible before VTTBR can name it.
            env.publish_barrier();
        }
        let root_entries = 1usize << (ipa_bits as u32 - super::level_shift(start_level));
        Ok(Stage2 {
            geo: Geometry { root, start_level, root_entries },
            root_pages,
            ipa_bits,
            t0sz: 64 - ipa_bits,
            sl0: match start_level {
                0 => 2,
                1 => 1,
                _ => 0,
            },
            vmid,
            tables: 0,
            who: 0,
            iommu: false,
            keep_invalid: false,
            gen: 0,
            stats: Stats::default(),
        })
    }

    /// Marks the tree as one the SMMU walks (its TLB maintenance goes to the
    /// SMMU); set before anything is mapped.
    pub fn set_iommu(&mut self) {
        self.iommu = true;
    }
    pub fn is_iommu(&self) -> bool {
        self.iommu
    }

    /// A table whose entries all become invalid is kept rather than merged
    /// into one invalid block (valid uniform tables still merge). For the
    /// DMA view: a pin and unpin inside a guest's block would otherwise
    /// split and merge two levels every time (two table pages allocated
    /// and freed, a VMID-wide SMMU invalidation). Its tables then stay
    /// while the region is not the host's, at most what the guest's own
    /// stage-2 needs there.
    pub fn keep_invalid_tables(&mut self) {
        self.keep_invalid = true;
    }
    pub fn keeps_invalid_tables(&self) -> bool {
        self.keep_invalid
    }

    /// Names the tree's owner in trace records.
    pub fn set_who(&mut self, who: u16) {
        self.who = who;
    }

    pub fn root_pa(&self) -> u64 {
        self.geo.root
    }
    pub fn start_level(&self) -> u8 {
        self.geo.start_level
    }
    pub fn root_pages(&self) -> usize {
        self.root_pages
    }
    pub fn ipa_bits(&self) -> u8 {
        self.ipa_bits
    }
    pub fn vmid(&self) -> Option<Vmid> {
        self.vmid
    }
    /// The tree as TLB maintenance names it; `None` for a bookkeeping tree.
    #[inline]
    pub fn s2_id(&self) -> Option<S2Id> {
        self.vmid.map(|vmid| S2Id { vmid, root: self.geo.root, t0sz: self.t0sz, sl0: self.sl0, iommu: self.iommu })
    }
    /// One past the highest IPA.
    pub fn ipa_limit(&self) -> u64 {
        1 << self.ipa_bits
    }
    /// Non-root table pages in use.
    pub fn table_pages(&self) -> usize {
        self.tables
    }
    /// VTCR_EL2.T0SZ for this tree.
    pub fn t0sz(&self) -> u64 {
        self.t0sz as u64
    }
    /// VTCR_EL2.SL0 for this tree (4 KiB granule encoding).
    pub fn sl0(&self) -> u64 {
        self.sl0 as u64
    }

    /// Checks that `[ipa, ipa + size)` is a non-empty page-aligned range
    /// inside this tree; returns its end.
    pub fn check_range(&self, ipa: u64, size: u64) -> Result<u64, Error> {
        if size == 0 || !is_aligned(ipa, PAGE_SIZE) || !is_aligned(size, PAGE_SIZE) {
            return Err(Error::Inval);
        }
        let end = ipa.checked_add(size).ok_or(Error::Inval)?;
        if end > self.ipa_limit() {
            return Err(Error::Inval);
        }
        Ok(end)
    }

    /// The leaf entry translating `ipa`.
    pub fn lookup<E: MmEnv>(&self, env: &mut E, ipa: u64) -> Result<Mapping, Error> {
        self.lookup_found(env, ipa).map(|(m, _)| m)
    }

    /// `lookup`, also returning where the walk went (an update inside the
    /// leaf can start there: [`Stage2::count_found`]).
    #[inline]
    pub fn lookup_found<E: MmEnv>(&self, env: &mut E, ipa: u64) -> Result<(Mapping, Found), Error> {
        let page = ipa & !(PAGE_SIZE - 1);
        self.check_range(page, PAGE_SIZE)?;
        let mut m = None;
        let found = self.for_each_leaf_found(env, page, page + PAGE_SIZE, |l, _, _| {
            m = Some(l);
            Ok(())
        })?;
        // A walk over one in-range page always visits exactly one leaf.
        m.map(|m| (m, found)).ok_or(Error::Inval)
    }

    /// Calls `f(mapping, from, to)` for every leaf over `[start, end)`, with
    /// the part `[from, to)` of the leaf that lies in the range; stops at the
    /// first error `f` returns.
    pub fn for_each_leaf<E: MmEnv, F>(&self, env: &mut E, start: u64, end: u64, f: F) -> Result<(), Error>
    where
        F: FnMut(Mapping, u64, u64) -> Result<(), Error>,
    {
        self.for_each_leaf_found(env, start, end, f).map(|_| ())
    }

    /// `for_each_leaf`, also returning where the walk went: a later update
    /// of the same range can start there ([`Stage2::count_found`]).
    #[inline]
    pub fn for_each_leaf_found<E: MmEnv, F>(&self, env: &mut E, start: u64, end: u64, f: F) -> Result<Found, Error>
    where
        F: FnMut(Mapping, u64, u64) -> Result<(), Error>,
    {
        let mut v = LeafVisitor { f, start, end, path: Path::new() };
        walk(env, &self.geo, start, end, &mut v)?;
        Ok(self.found(v.path))
    }

    fn found(&self, path: Path) -> Found {
        Found(path.with_tag(self.gen as u32))
    }

    /// Phase one of setting `[ipa, ipa + size)` to `new` (a valid `new`
    /// gives the PA for `ipa`; following pages follow it). Allocates every
    /// table page the update will need; changes nothing.
    pub fn prepare<E: MmEnv>(&self, env: &mut E, ipa: u64, size: u64, new: Leaf) -> Result<Update, Error> {
        self.prepare_checked(env, ipa, size, new, None::<fn(Leaf) -> bool>)
    }

    /// The walk of `prepare_checked` without the allocation: checks and
    /// counts; [`Counted::reserve`] allocates.
    #[inline]
    pub fn count_checked<E: MmEnv, F: FnMut(Leaf) -> bool>(
        &self,
        env: &mut E,
        ipa: u64,
        size: u64,
        new: Leaf,
        ok: Option<F>,
    ) -> Result<Counted, Error> {
        self.count_from(env, None, ipa, size, new, ok)
    }

    /// `prepare`, in the same walk checking every page of the range with
    /// `ok` (the leaf at each leaf entry's first page in the range, as
    /// `for_each_leaf` sees it): `Err(Perm)` and nothing allocated if one
    /// fails. One walk for the check and the count.
    #[inline]
    pub fn prepare_checked<E: MmEnv, F: FnMut(Leaf) -> bool>(
        &self,
        env: &mut E,
        ipa: u64,
        size: u64,
        new: Leaf,
        ok: Option<F>,
    ) -> Result<Update, Error> {
        self.count_from(env, None, ipa, size, new, ok)?.reserve(env)
    }

    /// `prepare` of a range an earlier walk of this tree found
    /// ([`Stage2::for_each_leaf_found`]): when it lies in one leaf and the
    /// tree has not changed since, the count starts at that leaf rather
    /// than at the root (the same visitor either way).
    #[inline]
    pub fn count_found<E: MmEnv>(
        &self,
        env: &mut E,
        found: &Found,
        ipa: u64,
        size: u64,
        new: Leaf,
    ) -> Result<Counted, Error> {
        self.count_from(env, Some(found), ipa, size, new, None::<fn(Leaf) -> bool>)
    }

    #[inline(always)]
    fn count_from<E: MmEnv, F: FnMut(Leaf) -> bool>(
        &self,
        env: &mut E,
        from: Option<&Found>,
        ipa: u64,
        size: u64,
        new: Leaf,
        ok: Option<F>,
    ) -> Result<Counted, Error> {
        let end = self.check_range(ipa, size)?;
        if let Leaf::Mapped { pa, .. } = new {
            if !is_aligned(pa, PAGE_SIZE) || pa.checked_add(size).is_none_or(|e| e > pte::OA_MASK + PAGE_SIZE) {
                return Err(Error::Inval);
            }
        }
        let mut counter = CountVisitor { start: ipa, end, new, pages: 0, ok, path: Path::new() };
        match from {
            Some(f) if f.usable(self, ipa, end) => {
                counter.path = f.0.restart();
                walk_path(env, &f.0, ipa, end, &mut counter)?
            }
            _ => walk(env, &self.geo, ipa, end, &mut counter)?,
        }
        Ok(Counted { start: ipa, end, new, pages: counter.pages, found: self.found(counter.path) })
    }

    /// Phase two: applies a prepared update. Cannot fail.
    pub fn commit<E: MmEnv>(&mut self, env: &mut E, mut u: Update) {
        // `u.found` is the path phase one's own walk of the range recorded
        // (Counted is made only by count_from and count_page): with the
        // tree unchanged it still leads to the range level by level.
        let leaf = u.found.still_in(self, u.start, u.end);
        let from_leaf = leaf.is_some();
        debug_assert_eq!(from_leaf, u.found.usable(self, u.start, u.end));
        if let (Some(leaf), true) = (leaf, u.found.0.by_descent()) {
            debug_assert_eq!(u.end - u.start, PAGE_SIZE);
            self.commit_page(env, &mut u, leaf);
        } else {
            let geo = self.geo;
            let c = self.commit_state(&mut u.cache);
            let mut v = SetVisitor { start: u.start, end: u.end, new: u.new, kept: NONE_KEPT, c };
            // With the tree as phase one left it, a range inside one leaf is
            // written from that leaf up (the same visitor as the full walk).
            let r = if from_leaf {
                walk_path(env, &u.found.0, u.start, u.end, &mut v)
            } else {
                walk(env, &geo, u.start, u.end, &mut v)
            };
            v.c.finish(env);
            debug_assert!(r.is_ok(), "commit: {r:?}");
        }
        self.gen = self.gen.wrapping_add(1);
        debug_assert!(u.cache.is_empty(), "commit: {} pages left", u.cache.len());
        u.cache.drain(env);
    }
    /// The state of one commit to this tree, taking its table pages from
    /// `cache`.
    #[inline(always)]
    fn commit_state<'a>(&'a mut self, cache: &'a mut Memcache) -> Commit<'a> {
        Commit {
            s2: self.s2_id(),
            who: self.who,
            cache,
            stats: &mut self.stats,
            tables: &mut self.tables,
            keep_invalid: self.keep_invalid,
            root_level: self.geo.start_level,
            due: Due::new(),
        }
    }

    /// The leaf entry translating the page at `ipa` and the way to it from
    /// the root (one descent, no visitor), for an update of that page alone
    /// ([`Stage2::count_page`]); `None` if `ipa` is not a page of the tree.
    #[inline(always)]
    pub fn page_path<E: MmEnv>(&self, env: &E, ipa: u64) -> Option<PagePath> {
        if !is_aligned(ipa, PAGE_SIZE) || ipa >= self.ipa_limit() {
            return None;
        }
        let (path, pte, level) = leaf_path(env, &self.geo, ipa);
        Some(PagePath { found: self.found(path), pte, base: ipa & !(level_size(level) - 1), level })
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
        let e = Entry { ptep: p.found.0.ptep(p.level), pte: p.pte, base: p.base, level: p.level };
        let pages = if p.level == 3 || already(&e, ipa, new) { 0 } else { 3 - p.level as usize };
        Counted { start: ipa, end: ipa + PAGE_SIZE, new, pages, found: p.found }
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
    fn commit_page<E: MmEnv>(&mut self, env: &mut E, u: &mut Update, leaf: u8) {
        let (ipa, path, top) = (u.start, u.found.0, self.geo.start_level);
        let want = pte::encode(u.new, 3);
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
        if level < 3 && !already(&e, ipa, u.new) {
            while level < 3 {
                let table = c.split(env, &e);
                let table = env.table_ptr(table);
                level += 1;
                let idx = ((ipa >> super::level_shift(level)) as usize) & (ENTRIES - 1);
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

    /// The leaf entry translating the page at `ipa`, from the root down with
    /// no visitor; `None` if `ipa` is not a page of the tree (unaligned or
    /// outside it: [`Stage2::check_range`] refuses it).
    #[inline(always)]
    pub fn entry<E: MmEnv>(&self, env: &E, ipa: u64) -> Option<Slot> {
        if !is_aligned(ipa, PAGE_SIZE) || ipa >= self.ipa_limit() {
            return None;
        }
        let (ptep, pte, level) = leaf_entry(env, &self.geo, ipa);
        let base = ipa & !(level_size(level) - 1);
        Some(Slot { ptep, pte, base, level, gen: self.gen as u32 })
    }

    /// [`Stage2::entry`] for a page entry only: `None` unless the leaf
    /// translating `ipa` is a page (level 3). The slot's base and level are
    /// then the constants they are (the page, 3), which a one-page commit
    /// uses without working them out from the level.
    #[inline(always)]
    pub fn page_entry<E: MmEnv>(&self, env: &E, ipa: u64) -> Option<Slot> {
        let s = self.entry(env, ipa)?;
        (s.level == 3).then_some(Slot { base: ipa, level: 3, ..s })
    }

    /// Phase one of replacing the whole leaf entry `s` by `new`
    /// (`pte::encode` of a leaf for `s.level`): the one-entry form of
    /// [`Stage2::prepare`] over `[s.base, s.base + level size)`, for an
    /// update that needs no table page. `None` when the write would make
    /// the entry's table page uniform (the range path then decides whether
    /// to merge it) or the environment keeps no uniformity hint for it: the
    /// caller takes the range path. Changes nothing.
    #[inline(always)]
    pub fn prepare_entry<E: MmEnv>(&self, env: &mut E, s: &Slot, new: u64) -> Option<EntryUpdate> {
        debug_assert_eq!(s.gen, self.gen as u32, "slot of an older tree");
        let hint = if s.level == self.geo.start_level {
            None
        } else {
            let h = env.table_hint(table_of(s.ptep))?;
            let n = hint_after(*h, s.ptep, s.level, new);
            if n == CHAINED_ALL {
                return None;
            }
            Some((h as *mut u16, n))
        };
        Some(EntryUpdate { slot: *s, new, hint })
    }

    /// Phase two of [`Stage2::prepare_entry`]: writes the entry by the
    /// rules of every descriptor write ([`Writer::replace_leaf`]: break-
    /// before-make and a TLBI under this tree's [`S2Id`] where a TLB may
    /// hold the old entry). Cannot fail.
    #[inline(always)]
    pub fn commit_entry<E: MmEnv>(&mut self, env: &mut E, u: EntryUpdate) {
        let s = u.slot;
        debug_assert_eq!(s.gen, self.gen as u32, "slot of an older tree");
        if u.new != s.pte {
            if let Some((h, n)) = u.hint {
                // SAFETY: the hint word of the entry's table page, which is
                // still a table page of this tree (unchanged since phase
                // one: the generation); the word keeps its address while
                // it is (MmEnv::table_hint) and only this tree's lock
                // holder uses it.
                unsafe { *h = n };
            }
            let e = Entry { ptep: s.ptep, pte: s.pte, base: s.base, level: s.level };
            let s2 = self.s2_id();
            Writer { s2: s2.as_ref(), stats: &mut self.stats, unhinted: s.level }.replace_leaf(env, &e, u.new);
        }
        self.gen = self.gen.wrapping_add(1);
        #[cfg(test)]
        ENTRY_COMMITS.with(|c| c.set(c.get() + 1));
    }

    /// Prepare and commit in one step (single-table updates).
    pub fn set<E: MmEnv>(&mut self, env: &mut E, ipa: u64, size: u64, new: Leaf) -> Result<(), Error> {
        let u = self.prepare(env, ipa, size, new)?;
        self.commit(env, u);
        Ok(())
    }

    /// The descriptor translating `ipa` (tests corrupt it on purpose).
    #[cfg(test)]
    pub fn leaf_ptep<E: MmEnv>(&self, env: &mut E, ipa: u64) -> *mut u64 {
        struct V(*mut u64);
        impl<E: MmEnv> Visitor<E> for V {
            fn leaf(&mut self, _: &mut E, e: &Entry) -> Result<(), Error> {
                self.0 = e.ptep;
                Ok(())
            }
        }
        let mut v = V(core::ptr::null_mut());
        let page = ipa & !(PAGE_SIZE - 1);
        walk(env, &self.geo, page, page + PAGE_SIZE, &mut v).expect("in range");
        v.0
    }

    /// Frees every table page, root included. The caller guarantees that no
    /// CPU runs on this tree any more; for a tree the hardware walks, one
    /// VMID-wide invalidation first removes every TLB and walk-cache entry
    /// of it, so no walker holds a table page that is freed and the VMID can
    /// be given to another tree.
    pub fn destroy<E: MmEnv>(self, env: &mut E) {
        if let Some(s2) = self.s2_id() {
            env.tlbi_vmid(&s2);
        }
        let base = env.table_ptr(self.geo.root);
        for i in 0..self.geo.root_entries {
            // SAFETY: i < root_entries, inside the (concatenated) root.
            let d = unsafe { core::ptr::read_volatile(base.add(i)) };
            if pte::is_table(d, self.geo.start_level) {
                free_subtree(env, pte::table_pa(d), self.geo.start_level + 1);
            }
        }
        env.free_root(self.geo.root, self.root_pages);
    }

    /// Visits every table page reachable from the root (root pages excluded)
    /// with its level; for invariant checks.
    pub fn for_each_table<E: MmEnv, F: FnMut(u64, u8)>(&self, env: &mut E, mut f: F) {
        fn rec<E: MmEnv, F: FnMut(u64, u8)>(env: &mut E, table: u64, level: u8, entries: usize, f: &mut F) {
            let base = env.table_ptr(table);
            for i in 0..entries {
                // SAFETY: i < entries of this table.
                let d = unsafe { core::ptr::read_volatile(base.add(i)) };
                if pte::is_table(d, level) {
                    f(pte::table_pa(d), level + 1);
                    rec(env, pte::table_pa(d), level + 1, ENTRIES, f);
                }
            }
        }
        rec(env, self.geo.root, self.geo.start_level, self.geo.root_entries, &mut f);
    }
}

/// Frees a detached subtree (no longer reachable by any walker, and
/// invalidated since).
fn free_subtree<E: MmEnv>(env: &mut E, table: u64, level: u8) -> u64 {
    let mut n = 1;
    if level < 3 {
        let base = env.table_ptr(table);
        for i in 0..ENTRIES {
            // SAFETY: i < 512 entries of this table page.
            let d = unsafe { core::ptr::read_volatile(base.add(i)) };
            if pte::is_table(d, level) {
                n += free_subtree(env, pte::table_pa(d), level + 1);
            }
        }
    }
    env.free_table(table);
    n
}

/// The uniformity hint's value for a table whose entries all continue the
/// one before ([`MmEnv::table_hint`]).
const CHAINED_ALL: u16 = ENTRIES as u16 - 1;

/// The entry that continues `a` in a table whose entries translate `size`
/// bytes each (`level`'s): the next PA with everything else equal (valid),
/// or the same annotation (invalid); `None` for a table descriptor, which
/// nothing continues. `b` continues `a` ("chained") when it is this.
#[inline(always)]
fn successor(a: u64, level: u8, size: u64) -> Option<u64> {
    let step = if pte::is_valid(a) { size } else { 0 };
    (!pte::is_table(a, level)).then_some(a.wrapping_add(step))
}

/// Keeps the uniformity hint of the table page holding `ptep` (an entry at
/// `level`) in step with a write of `new` there: the number of its entries
/// that continue the one before (chained: [`successor`]) changes only in the pairs
/// this entry is part of. Not kept for the root (never merged).
#[inline(always)]
fn note_write<E: MmEnv>(env: &mut E, ptep: *mut u64, level: u8, new: u64) {
    if let Some(h) = env.table_hint(table_of(ptep)) {
        *h = hint_after(*h, ptep, level, new);
    }
}

/// The table page holding the descriptor at `ptep`.
#[inline(always)]
fn table_of(ptep: *mut u64) -> *mut u64 {
    (ptep as usize & !(PAGE_SIZE as usize - 1)) as *mut u64
}

/// The uniformity hint `n` of the table page holding `ptep` (an entry at
/// `level`, not written yet) once `new` is written there.
#[inline(always)]
fn hint_after(mut n: u16, ptep: *mut u64, level: u8, new: u64) -> u16 {
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
unsafe fn recycled<E: MmEnv>(env: &mut E, p: *mut u64, first: u64, step: u64) -> bool {
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
fn scan_uniform(p: *mut u64, c0: u64, csize: u64, touched: usize) -> bool {
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

/// True when `leaf` may be written as one entry at `level`.
#[inline]
fn blockable(leaf: Leaf, level: u8) -> bool {
    match leaf {
        Leaf::Invalid(_) => true,
        Leaf::Mapped { pa, .. } => level >= 1 && is_aligned(pa, level_size(level)),
    }
}

/// Does the existing leaf `e` already hold `new` (given at `start`) over
/// the part of it inside the range? Compared as raw descriptors: every
/// descriptor the engine writes is `pte::encode` of its leaf.
#[inline]
fn already(e: &Entry, start: u64, new: Leaf) -> bool {
    let at_base = match new {
        Leaf::Invalid(_) => new,
        Leaf::Mapped { pa, attrs, state } => {
            if e.base >= start {
                new.offset(e.base - start)
            } else {
                match pa.checked_sub(start - e.base) {
                    Some(pa) => Leaf::Mapped { pa, attrs, state },
                    None => return false,
                }
            }
        }
    };
    pte::encode(at_base, e.level) == e.pte
}

struct LeafVisitor<F> {
    f: F,
    start: u64,
    end: u64,
    path: Path,
}

impl<E: MmEnv, F: FnMut(Mapping, u64, u64) -> Result<(), Error>> Visitor<E> for LeafVisitor<F> {
    fn table_pre(&mut self, _env: &mut E, e: &Entry) -> Result<Walk, Error> {
        self.path.table(e);
        Ok(Walk::Continue)
    }
    fn leaf(&mut self, _env: &mut E, e: &Entry) -> Result<(), Error> {
        self.path.leaf(e);
        let m = Mapping { base: e.base, level: e.level, leaf: pte::decode(e.pte) };
        (self.f)(m, e.base.max(self.start), e.end().min(self.end))
    }
}

/// Phase one: counts the table pages an update needs, checking every leaf
/// with `ok` if given.
struct CountVisitor<F> {
    start: u64,
    end: u64,
    new: Leaf,
    pages: usize,
    ok: Option<F>,
    path: Path,
}

impl<F> CountVisitor<F> {
    #[inline]
    fn covers(&self, base: u64, level: u8) -> bool {
        base >= self.start && base + level_size(level) <= self.end
    }

    /// Pages needed to split a uniform block at (`base`, `level`) so that the
    /// range can be written into it.
    fn split_cost(&self, base: u64, level: u8) -> usize {
        let child = level + 1;
        if child == 3 {
            return 1;
        }
        let csize = level_size(child);
        let mut n = 1;
        let mut a = base.max(self.start) & !(csize - 1);
        let stop = (base + level_size(level)).min(self.end);
        while a < stop {
            if !(self.covers(a, child) && blockable(self.new.offset(a - self.start), child)) {
                n += self.split_cost(a, child);
            }
            a += csize;
        }
        n
    }
}

impl<E: MmEnv, F: FnMut(Leaf) -> bool> Visitor<E> for CountVisitor<F> {
    fn leaf(&mut self, _env: &mut E, e: &Entry) -> Result<(), Error> {
        self.path.leaf(e);
        if let Some(ok) = &mut self.ok {
            let from = e.base.max(self.start);
            if !ok(pte::decode(e.pte).offset(from - e.base)) {
                return Err(Error::Perm);
            }
        }
        // Written in place, or already there: no table page either way.
        if self.covers(e.base, e.level) && blockable(self.new.offset(e.base - self.start), e.level) {
            return Ok(());
        }
        if already(e, self.start, self.new) {
            return Ok(());
        }
        self.pages += self.split_cost(e.base, e.level);
        Ok(())
    }

    fn table_pre(&mut self, _env: &mut E, e: &Entry) -> Result<Walk, Error> {
        self.path.table(e);
        // A check visits every leaf; below a table the new leaf replaces
        // whole, every leaf is covered and blockable (costs nothing).
        if self.ok.is_none() && self.covers(e.base, e.level) && blockable(self.new.offset(e.base - self.start), e.level)
        {
            Ok(Walk::Skip)
        } else {
            Ok(Walk::Continue)
        }
    }
}

/// The descriptor writes of one commit to one tree, by the rules every
/// write follows, whether the range commit ([`SetVisitor`]) or the
/// one-entry commit ([`Stage2::commit_entry`]) makes it.
struct Writer<'a> {
    /// `None` for a bookkeeping tree.
    s2: Option<&'a S2Id>,
    stats: &'a mut Stats,
    /// Writes at this level keep no uniformity hint: the root's (never
    /// merged), or the level of the one entry a one-entry commit writes
    /// (it sets the hint itself, once, as phase one computed it).
    unhinted: u8,
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
    fn replace_leaf<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
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
struct SetVisitor<'a> {
    start: u64,
    end: u64,
    new: Leaf,
    /// The level of the last table entry `table_post` left a table (not
    /// merged), or [`NONE_KEPT`]: the next `table_post` one level up is
    /// that entry's parent (the walk is depth first), whose table then
    /// holds a table descriptor and cannot be uniform.
    kept: u8,
    c: Commit<'a>,
}

/// What one commit to one tree changes, by the rules every commit
/// follows, whether it walks a range ([`SetVisitor`]) or goes from one
/// page's leaf ([`Stage2::commit_page`]): descriptor writes ([`Writer`]),
/// splits from the update's table pages, merges, and the invalidations
/// owed until its end ([`Due`]).
struct Commit<'a> {
    /// `None` for a bookkeeping tree.
    s2: Option<S2Id>,
    who: u16,
    cache: &'a mut Memcache,
    stats: &'a mut Stats,
    tables: &'a mut usize,
    /// Tables whose entries all become invalid stay ([`Stage2::keep_invalid_tables`]).
    keep_invalid: bool,
    /// The root's level: its entries live in the root, never merged, so
    /// they need no uniformity hint.
    root_level: u8,
    /// Invalidations owed and deferred ([`SetVisitor::finish`]).
    due: Due,
}

/// [`SetVisitor::kept`]: no table entry kept by the last `table_post`.
const NONE_KEPT: u8 = u8::MAX;

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
struct Due {
    /// Tables detached, to free once it is issued: while there are any,
    /// a VMID-wide invalidation is owed.
    nfrees: usize,
    /// `frees[..nfrees]` (not initialized beyond: one store to set up).
    frees: [core::mem::MaybeUninit<u64>; DUE_FREES],
}

impl Due {
    #[inline(always)]
    const fn new() -> Self {
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
    fn finish<E: MmEnv>(&mut self, env: &mut E) {
        if self.due.nfrees != 0 {
            self.tlbi_vmid(env);
        }
    }

    /// Gives back a table page merged away, unreachable and invalidated.
    fn free_merged<E: MmEnv>(&mut self, env: &mut E, table: u64) {
        env.free_table(table);
        self.stats.tables_freed += 1;
        *self.tables -= 1;
    }

    fn replace_leaf<E: MmEnv>(&mut self, env: &mut E, e: &Entry, val: u64) {
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
    fn split<E: MmEnv>(&mut self, env: &mut E, e: &Entry) -> u64 {
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
        if pte::is_valid(e.pte) {
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
    fn try_merge<E: MmEnv>(&mut self, env: &mut E, e: &Entry, start: u64) -> bool {
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
            if blockable(want, e.level) {
                // Encoded once: equal to the entry is `already`.
                let d = pte::encode(want, e.level);
                if d != e.pte {
                    self.c.replace_leaf(env, e, d);
                }
                return Ok(());
            }
        }
        if already(e, self.start, self.new) {
            return Ok(());
        }
        self.c.split(env, e);
        Ok(())
    }

    fn table_pre(&mut self, env: &mut E, e: &Entry) -> Result<Walk, Error> {
        if self.covers(e) {
            let want = self.new.offset(e.base - self.start);
            if blockable(want, e.level) {
                let old = self.c.replace_table(env, e, pte::encode(want, e.level));
                let n = free_subtree(env, old, e.level + 1) as usize;
                self.c.stats.tables_freed += n as u64;
                *self.c.tables -= n;
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
