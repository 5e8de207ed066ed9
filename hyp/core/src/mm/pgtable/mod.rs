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
//!
//! This file holds the tree ([`Stage2`]: geometry, lookups, teardown) and
//! the types an update passes between its phases; `update.rs` the range
//! updates, `page.rs` their one-page and one-entry forms, `commit.rs` the
//! writes, splits and merges of a commit, `hint.rs` the tables' uniformity
//! hints, `found.rs` whether a recorded walk still leads to a range,
//! `fit.rs` whether a leaf entry already holds an update's leaf or may be
//! one, `own.rs` a tree's own table pages (a VM's memcache, the host's
//! reserve).
//!
//! Over 600 lines: the lookups the one-page transitions inline stay here
//! with the tree (moved to their own file, their code landed in another
//! unit and cost the donate row +187 instructions and vm_create +40).

mod commit;
mod fit;
mod found;
mod hint;
mod own;
mod page;
mod update;

use super::env::{MmEnv, S2Id, Vmid};
use super::memcache::Memcache;
use super::prot::Leaf;
use super::pte;
use super::walker::{walk, Entry, Geometry, Path, Visitor, Walk};
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
    /// Pages of the (concatenated) root: at most 16 (u32 keeps `Vm` in
    /// its allocation size class, with `short`).
    root_pages: u32,
    ipa_bits: u8,
    /// The tree as TLB maintenance names it ([`Stage2::s2_id`]: VMID, root,
    /// VTCR_EL2.T0SZ and SL0, walker), worked out once: every descriptor
    /// write takes it by reference. `None` for a bookkeeping tree that no
    /// hardware walks (no TLBI needed).
    id: Option<S2Id>,
    /// Non-root table pages in use.
    tables: u32,
    /// Whose tree this is, for trace records (0 host, VM handle, ...).
    who: u16,
    /// Its descriptors are in the FWB MemAttr encoding ([`Stage2::encode`]):
    /// a tree the CPUs walk while the boot chose FEAT_S2FWB ([`pte::fwb`]).
    /// Not the DMA view (the SMMU walks without HCR_EL2) nor a bookkeeping
    /// tree (no walker reads its MemAttr: the hyp's own).
    fwb: bool,
    /// The same choice as the MemAttr[3:0] of a Normal leaf
    /// ([`pte::normal_memattr`] of `fwb`; both set together, by `new` and
    /// `set_iommu` only): a property of the tree, so that a one-page
    /// transition works out its descriptors from the tree it already holds,
    /// a load and an OR ([`Stage2::encode`]).
    normal: u8,
    /// Tables that become all-invalid are not merged ([`Stage2::keep_invalid_tables`]).
    keep_invalid: bool,
    /// No valid page ever loses its mapping but by an update that unmaps
    /// it ([`Stage2::no_transient_faults`]).
    keep_valid: bool,
    /// Valid leaves are pages only (no valid block to split later).
    pages_only: bool,
    /// Commits so far: a [`Path`] recorded at one generation is valid
    /// while the tree is still at it.
    gen: u32,
    /// The tree's own table pages ([`Stage2::use_own_tables`]), or `None`:
    /// its tables come from the environment.
    own: Option<Memcache>,
    /// Table pages the last update refused for want of own pages lacked
    /// ([`Stage2::tables_short`]).
    short: core::cell::Cell<u32>,
    pub stats: Stats,
}

/// What one walk over a range found: the path to its leaf when the range
/// lies in one leaf, tagged with the tree's generation then. A later update
/// of the same range ([`Stage2::count_found`]) starts from the leaf instead
/// of the root while the tree has not changed since. Four words.
#[derive(Clone, Copy, Debug)]
pub struct Found(Path);

/// Phase one of an update of one whole leaf entry written in place (no
/// table page changes, no merge: [`Stage2::prepare_in_place`]): the entry,
/// the descriptor to write, and the uniformity hint the entry's table page
/// has afterwards. [`Stage2::commit_in_place`] writes it.
#[must_use = "commit an in-place update"]
#[derive(Debug)]
pub struct InPlace {
    ptep: *mut u64,
    /// The descriptor when it was found.
    old: u64,
    new: u64,
    /// First IPA the entry translates, and its level.
    base: u64,
    level: u8,
    /// The tree's generation then.
    gen: u32,
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

/// The leaf entry translating one page, as one descent from the root found
/// it: that entry rewritten in place ([`Stage2::prepare_in_place`]); with
/// the way to it recorded ([`Stage2::page_path`], not
/// [`Stage2::page_leaf`]), an update of the page ([`Stage2::count_page`])
/// or of a range inside the leaf ([`Stage2::count_found`]) from there,
/// while the tree is unchanged.
#[derive(Clone, Copy, Debug)]
pub struct PagePath {
    /// The leaf's descriptor in its table.
    ptep: *mut u64,
    /// The tree's generation then.
    gen: u32,
    /// The way down (empty from [`Stage2::page_leaf`]).
    found: Found,
    /// The leaf's descriptor when it was found.
    pub pte: u64,
    /// First IPA the leaf entry translates.
    pub base: u64,
    pub level: u8,
}

impl PagePath {
    /// Where the descent went, for an update of a range inside the leaf
    /// ([`Stage2::count_found`]).
    pub fn found(&self) -> &Found {
        &self.found
    }
}

/// Phase-one result of an update: the checked range and its table pages.
#[must_use = "commit or cancel an update"]
#[derive(Debug)]
pub struct Update {
    start: u64,
    end: u64,
    new: Leaf,
    cache: Memcache,
    /// Pages its commit takes from the tree's own ([`Stage2::use_own_tables`]).
    take: usize,
    /// The path its phase-one walk took (commit starts at the leaf when
    /// the range lies in one and the tree is unchanged). A path one page's
    /// descent recorded ([`Stage2::count_page`]) is committed from the
    /// leaf without the walk ([`Stage2::commit_page`]).
    found: Found,
}

/// An update checked and counted by its phase-one walk or descent, before
/// its table pages are allocated ([`Counted::reserve`]): holds nothing, so
/// a caller preparing several trees checks them all before it allocates
/// for any.
#[must_use = "reserve the counted pages"]
#[derive(Debug)]
pub struct Counted {
    start: u64,
    end: u64,
    new: Leaf,
    pages: usize,
    found: Found,
    /// The tree takes its tables from its own pages: how many it has.
    own: Option<usize>,
}

impl Counted {
    /// Allocates the table pages the update needs: the end of phase one.
    /// A tree with its own pages ([`Stage2::use_own_tables`]) takes them
    /// from those at its commit; here they are only counted (`NoMem` if
    /// there are too few: [`Stage2::tables_short`] says how many).
    #[inline(always)]
    pub fn reserve<E: MmEnv>(self, env: &mut E) -> Result<Update, Error> {
        let mut cache = Memcache::new();
        let take = match self.own {
            Some(have) if self.pages > have => return Err(Error::NoMem),
            Some(_) => self.pages,
            None => {
                if !cache.topup(env, self.pages) {
                    return Err(Error::NoMem);
                }
                0
            }
        };
        Ok(Update { start: self.start, end: self.end, new: self.new, cache, take, found: self.found })
    }
}

impl Update {
    /// Gives back the preallocated pages without changing anything.
    pub fn cancel<E: MmEnv>(mut self, env: &mut E) {
        self.cache.drain(env);
    }
    /// Table pages this update will take.
    pub fn pages(&self) -> usize {
        self.cache.len() + self.take
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
    /// An empty tree: every IPA invalid with no owner recorded. (Inlined:
    /// out of line, VM_CREATE moved the tree by three memcpys, +480
    /// instructions.)
    #[inline(always)]
    pub fn new<E: MmEnv>(env: &mut E, ipa_bits: u8, vmid: Option<Vmid>) -> Result<Self, Error> {
        let (start_level, root_pages) = geometry_for(ipa_bits).ok_or(Error::Inval)?;
        let root = env.alloc_root(root_pages).ok_or(Error::NoMem)?;
        if vmid.is_some() {
            // The root's zeroing must be visible before VTTBR can name it.
            env.publish_barrier();
        }
        let root_entries = 1usize << (ipa_bits as u32 - super::level_shift(start_level));
        let id = vmid.map(|vmid| S2Id { vmid, root, t0sz: 64 - ipa_bits, sl0: sl0_for(start_level), iommu: false });
        Ok(Stage2 {
            geo: Geometry { root, start_level, root_entries: root_entries as u32 },
            root_pages: root_pages as u32,
            ipa_bits,
            id,
            tables: 0,
            who: 0,
            fwb: vmid.is_some() && pte::fwb(),
            normal: pte::normal_memattr(vmid.is_some() && pte::fwb()) as u8,
            keep_invalid: false,
            keep_valid: false,
            pages_only: false,
            gen: 0,
            own: None,
            short: core::cell::Cell::new(0),
            stats: Stats::default(),
        })
    }

    /// Marks the tree as one the SMMU walks (its TLB maintenance goes to the
    /// SMMU); set before anything is mapped.
    pub fn set_iommu(&mut self) {
        if let Some(id) = self.id.as_mut() {
            id.iommu = true;
        }
        self.fwb = false;
        self.normal = pte::normal_memattr(false) as u8;
    }

    pub fn is_iommu(&self) -> bool {
        self.id.is_some_and(|id| id.iommu)
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

    /// For a tree devices translate through (the DMA view): a device
    /// does not retry a transaction that faults, so no update may leave a
    /// window in which a page that stays mapped is not. Valid tables are
    /// never merged into a block and a table is never replaced by a valid
    /// block (break-before-make would unmap the pages under it); a valid
    /// block is split only with the walker's break-before-make level 2
    /// (`bbml2`: SMMU_IDR3.BBML = 2), by writing the filled table over the
    /// block and invalidating it after, with no invalid entry between.
    /// Without it no valid block is ever written: valid leaves are pages,
    /// so no split ever meets one. Set before anything is mapped.
    pub fn no_transient_faults(&mut self, bbml2: bool) {
        self.keep_valid = true;
        self.pages_only = !bbml2;
    }

    /// Are valid tables kept rather than merged ([`Stage2::no_transient_faults`])?
    pub fn keeps_valid_tables(&self) -> bool {
        self.keep_valid
    }

    /// Does every valid leaf stay a page ([`Stage2::no_transient_faults`]
    /// without BBML2)?
    pub fn pages_only(&self) -> bool {
        self.pages_only
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
        self.root_pages as usize
    }

    pub fn ipa_bits(&self) -> u8 {
        self.ipa_bits
    }

    pub fn vmid(&self) -> Option<Vmid> {
        self.id.map(|id| id.vmid)
    }

    /// The tree as TLB maintenance names it; `None` for a bookkeeping tree.
    #[inline]
    pub fn s2_id(&self) -> Option<S2Id> {
        self.id
    }

    /// The descriptor of `leaf` at `level` in this tree's MemAttr encoding
    /// (the boot's for a CPU's stage-2, the classic one for the others:
    /// [`pte::encode_with`]): what the engine writes for it.
    #[inline(always)]
    pub fn encode(&self, leaf: Leaf, level: u8) -> u64 {
        debug_assert_eq!(self.normal as u64, pte::normal_memattr(self.fwb));
        pte::encode_with(leaf, level, self.normal as u64)
    }

    /// One past the highest IPA.
    pub fn ipa_limit(&self) -> u64 {
        1 << self.ipa_bits
    }

    /// Non-root table pages in use.
    pub fn table_pages(&self) -> usize {
        self.tables as usize
    }

    /// VTCR_EL2.T0SZ for this tree.
    pub fn t0sz(&self) -> u64 {
        64 - self.ipa_bits as u64
    }

    /// VTCR_EL2.SL0 for this tree (4 KiB granule encoding).
    pub fn sl0(&self) -> u64 {
        sl0_for(self.geo.start_level) as u64
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

    fn found(&self, path: Path) -> Found {
        Found(path.with_tag(self.gen))
    }

    /// Frees every table page, root included. The caller guarantees that no
    /// CPU runs on this tree any more; for a tree the hardware walks, one
    /// VMID-wide invalidation first removes every TLB and walk-cache entry
    /// of it, so no walker holds a table page that is freed and the VMID can
    /// be given to another tree.
    pub fn destroy<E: MmEnv>(self, env: &mut E) {
        if let Some(mut own) = self.destroy_keeping_own(env) {
            own.drain(env);
        }
    }

    /// [`Stage2::destroy`] of a tree with its own table pages: every one of
    /// them (those it used as tables with them) comes back, unreachable and
    /// invalidated, to give back to whoever paid for them; the root goes
    /// back to the environment. `None` for a tree without.
    pub fn destroy_keeping_own<E: MmEnv>(mut self, env: &mut E) -> Option<Memcache> {
        if let Some(s2) = self.s2_id() {
            env.tlbi_vmid(&s2);
        }
        let base = env.table_ptr(self.geo.root);
        let n = self.geo.root_entries as usize;
        let mut i = 0;
        loop {
            // SAFETY: the (concatenated) root holds root_entries entries.
            i = unsafe { crate::mm::walker::next_valid_index(base, i, n) };
            if i == n {
                break;
            }
            // SAFETY: i < root_entries, inside the root.
            let d = unsafe { core::ptr::read_volatile(base.add(i)) };
            if pte::is_table(d, self.geo.start_level) {
                free_subtree(env, &mut self.own, pte::table_pa(d), self.geo.start_level + 1);
            }
            i += 1;
        }
        env.free_root(self.geo.root, self.root_pages as usize);
        self.own
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
        rec(env, self.geo.root, self.geo.start_level, self.geo.root_entries as usize, &mut f);
    }
}

/// VTCR_EL2.SL0 (4 KiB granule encoding) of a tree starting at `level`.
const fn sl0_for(start_level: u8) -> u8 {
    match start_level {
        0 => 2,
        1 => 1,
        _ => 0,
    }
}

/// Frees a detached subtree (no longer reachable by any walker, and
/// invalidated since).
fn free_subtree<E: MmEnv>(env: &mut E, own: &mut Option<Memcache>, table: u64, level: u8) -> u64 {
    let mut n = 1;
    if level < 3 {
        let base = env.table_ptr(table);
        let mut i = 0;
        loop {
            // SAFETY: a table page holds ENTRIES entries.
            i = unsafe { crate::mm::walker::next_valid_index(base, i, ENTRIES) };
            if i == ENTRIES {
                break;
            }
            // SAFETY: i < 512 entries of this table page.
            let d = unsafe { core::ptr::read_volatile(base.add(i)) };
            if pte::is_table(d, level) {
                n += free_subtree(env, own, pte::table_pa(d), level + 1);
            }
            i += 1;
        }
    }
    give_back(env, own, table);
    n
}

/// Gives back a table page a tree no longer reaches (and has invalidated
/// since): to the tree's own pages if it has them, else to the environment.
#[inline(always)]
fn give_back<E: MmEnv>(env: &mut E, own: &mut Option<Memcache>, table: u64) {
    match own {
        Some(o) => {
            env.table_kept(table);
            o.push(env, table);
        }
        None => env.free_table(table),
    }
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
