//! A recording [`MmEnv`] for host tests: table pages from the host heap
//! (their addresses serve as PAs), an optional allocation limit, and a log of
//! everything the core asked of the hardware. QEMU's TCG models no caches and
//! no speculative walks, so the rules real hardware imposes are checked here,
//! on the log ([`TestEnv::check_log`]):
//!
//! - break-before-make: no valid entry becomes a different valid one (but
//!   for a change of the software bits alone, which the walker ignores: see
//!   [`pte::sw_bits_only`]), and an entry made invalid is not made valid
//!   again before a TLB invalidation;
//! - every entry made invalid is invalidated before the operation ends, by a
//!   TLBI that names its tree (VMID and root) and its IPA and level (or the
//!   whole tree);
//! - a TLBI by IPA follows the write that made its entry invalid (the EL2
//!   invalidation relies on that write's barrier and has none of its own);
//! - a table is installed only after a barrier that follows its zeroing and
//!   every write into it; one from [`MmEnv::alloc_table_for_fill`] (handed
//!   out full of [`POISON`]) only once every entry was written since;
//! - a table page is freed only after a TLB invalidation of its tree that
//!   covers it, issued after it became unreachable (or, when its tree is
//!   destroyed, after the tree's last write), and a root only after a
//!   VMID-wide invalidation issued after the tree's last write;
//! - no transient DMA fault: in a tree the SMMU walks, an invalid entry is
//!   written over a valid one (leaf or table) only when every page under
//!   it is unmapped when the commit ends (a device does not retry a
//!   faulting transaction: no page it keeps may be unmapped in passing),
//!   and a valid block becomes a table only with [`TestEnv::smmu_bbml2`]
//!   set, in one write of a table of the block's own translations, then
//!   invalidated by IPA.
//!
//! Over 600 lines: the rules above are one job (the log and its checker);
//! split, each part would need the other's state.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::vec::Vec;

use super::env::{MmEnv, S2Id};
use super::walker::{leaf_entry, Geometry};
use super::{level_size, pte, ENTRIES, PAGE_SIZE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A zeroed table page from the allocator (the zeroing writes it).
    AllocTable {
        pa: u64,
    },
    FreeTable {
        pa: u64,
    },
    AllocRoot {
        pa: u64,
        pages: usize,
    },
    FreeRoot {
        pa: u64,
        pages: usize,
    },
    /// A descriptor written into a table page not installed yet.
    Init {
        ptep: u64,
        val: u64,
    },
    /// The publish barrier (DSB ISHST).
    Barrier,
    /// A new table page of `s2` announced as filled (cleaned to PoC for a
    /// non-coherent SMMU walking an IOMMU tree).
    TableFilled {
        s2: S2Id,
        table: u64,
    },
    /// A live descriptor of `s2` translating `ipa` at `level`.
    Write {
        s2: S2Id,
        ptep: u64,
        ipa: u64,
        level: u8,
        old: u64,
        new: u64,
    },
    TlbiIpa {
        s2: S2Id,
        ipa: u64,
        level: u8,
    },
    TlbiVmid {
        s2: S2Id,
    },
    Scrub {
        pa: u64,
        size: u64,
    },
    CleanInvalPoc {
        pa: u64,
        size: u64,
    },
    IcacheInval {
        pa: u64,
        size: u64,
    },
    /// The CMD_SYNC that completed a batch's SMMU invalidations.
    DmaSync,
}

/// An installed table page, as the checker follows it.
#[derive(Clone, Copy, Debug)]
struct Tab {
    s2: S2Id,
    /// IPA range its parent entry translates.
    base: u64,
    size: u64,
    /// The page holding its table descriptor.
    parent: u64,
    published: u64,
    /// When its descriptor was overwritten.
    detached: Option<u64>,
}

/// What the checker knows across calls (tables outlive one operation).
#[derive(Debug, Default)]
struct Walkers {
    seq: u64,
    /// Table pages handed out and not installed: written since the last
    /// barrier?
    fresh: BTreeMap<u64, bool>,
    tabs: BTreeMap<u64, Tab>,
    /// Entries made invalid and not invalidated yet: ptep → (tree, IPA, level).
    pending: BTreeMap<u64, (S2Id, u64, u8)>,
    /// Last VMID-wide invalidation per tree, last by-IPA one per (tree, IPA).
    vmid_tlbi: BTreeMap<S2Id, u64>,
    ipa_tlbi: BTreeMap<(S2Id, u64), u64>,
    /// Last live write per tree, by root.
    last_write: BTreeMap<u64, u64>,
    /// Fresh table pages announced filled, with their tree.
    filled: BTreeMap<u64, S2Id>,
}

pub struct TestEnv {
    /// Live allocations: pa → (pages, is a root).
    live: BTreeMap<u64, (usize, bool)>,
    /// Allocations still allowed (None: unlimited).
    pub budget: Option<usize>,
    pub log: Vec<Event>,
    pub record: bool,
    /// Keep the per-table uniformity hints ([`MmEnv::table_hint`]); off,
    /// the core scans tables instead.
    pub hints: bool,
    /// Boxed: a hint word keeps its address while its page lives
    /// ([`MmEnv::table_hint`]).
    hint: BTreeMap<u64, std::boxed::Box<u16>>,
    /// Calls of [`MmEnv::table_ptr`]: how many table pages the core
    /// entered from a descriptor (a walk from the root enters one per level).
    pub table_ptrs: core::cell::Cell<u64>,
    /// Pages from [`MmEnv::alloc_table_for_fill`] not installed yet: which
    /// of their entries were written since (one bit each).
    unfilled: BTreeMap<u64, [u64; ENTRIES / 64]>,
    /// Keep freed table pages (up to [`RECYCLE_MAX`], their hints and
    /// their entries but the first) and hand them out again, last freed
    /// first, from [`MmEnv::alloc_table_for_fill`], as the EL2 environment
    /// does. On by default.
    pub recycling: bool,
    recycle: Vec<u64>,
    w: Walkers,
    /// The SMMU has break-before-make level 2 (SMMU_IDR3.BBML = 2): a
    /// valid block of an SMMU tree may become a table of its own
    /// translations in one write. Off by default.
    pub smmu_bbml2: bool,
    /// Entries of SMMU trees made invalid over a valid one in the commit
    /// under way: (tree, IPA, level); every page under them must be
    /// unmapped when it ends ([`MmEnv::commit_done`]).
    broken: Vec<(S2Id, u64, u8)>,
    /// Devices read memory around the caches ([`MmEnv::dma_noncoherent`]).
    /// Off by default.
    pub dma_noncoherent: bool,
    /// An SMMU batch is open ([`MmEnv::dma_batch`]), and the SMMU
    /// invalidations since it opened.
    pub dma_batch_open: bool,
    pub dma_batched: u64,
    /// Completions waited for: one per SMMU invalidation outside a batch,
    /// one per [`MmEnv::dma_sync`] of a batch with invalidations.
    pub dma_syncs: u64,
    /// Host RAM a test backs with real memory (its PAs are addresses), so
    /// that pages the host donates for a VM's tables can be tables.
    pub backed: Option<(u64, u64)>,
    /// Ranges [`MmEnv::hyp_map`] made reachable, and how many more calls
    /// of it succeed (`None`: all).
    pub hyp_mapped: BTreeMap<u64, u64>,
    pub hyp_map_budget: Option<usize>,
}

/// Freed table pages [`TestEnv`] keeps at most.
pub const RECYCLE_MAX: usize = 32;

/// What a page from [`MmEnv::alloc_table_for_fill`] holds in every entry
/// until it is written: a table descriptor to nowhere, so an entry a split
/// failed to write would also be caught by any walk through it.
pub const POISON: u64 = 0x0000_dead_beef_0003;

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        TestEnv {
            live: BTreeMap::new(),
            budget: None,
            log: Vec::new(),
            record: true,
            hints: true,
            hint: BTreeMap::new(),
            table_ptrs: core::cell::Cell::new(0),
            unfilled: BTreeMap::new(),
            recycling: true,
            recycle: Vec::new(),
            w: Walkers::default(),
            smmu_bbml2: false,
            broken: Vec::new(),
            dma_noncoherent: false,
            dma_batch_open: false,
            dma_batched: 0,
            dma_syncs: 0,
            backed: None,
            hyp_mapped: BTreeMap::new(),
            hyp_map_budget: None,
        }
    }
    /// Non-root table pages alive.
    pub fn tables_live(&self) -> usize {
        self.live.values().filter(|(_, root)| !root).count()
    }
    fn take(&mut self) -> bool {
        match &mut self.budget {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }
    fn push(&mut self, ev: Event) {
        if self.record {
            self.log.push(ev);
        }
    }
    fn alloc(&mut self, pages: usize, root: bool) -> Option<u64> {
        if !self.take() {
            return None;
        }
        let layout = Layout::from_size_align(pages * 4096, pages * 4096).unwrap();
        // SAFETY: layout has non-zero size.
        let p = unsafe { alloc_zeroed(layout) } as u64;
        assert!(p != 0 && p & pte::OA_MASK == p);
        self.live.insert(p, (pages, root));
        Some(p)
    }
    fn free(&mut self, pa: u64, pages: usize, root: bool) {
        assert_eq!(self.live.remove(&pa), Some((pages, root)), "double or bad free of {pa:#x}");
        self.hint.remove(&pa);
        let layout = Layout::from_size_align(pages * 4096, pages * 4096).unwrap();
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(pa as *mut u8, layout) };
    }

    /// Checks the log against the rules in the module comment, then clears
    /// it. Call it between operations (an operation ends with nothing
    /// pending); the state of installed tables carries over to the next call.
    pub fn check_log(&mut self) {
        let log = core::mem::take(&mut self.log);
        let w = &mut self.w;
        let mut stray = None;
        for ev in log {
            w.seq += 1;
            let now = w.seq;
            match ev {
                Event::AllocTable { pa } => {
                    assert!(!w.tabs.contains_key(&pa), "allocator handed out installed table {pa:#x}");
                    w.fresh.insert(pa, true);
                }
                Event::FreeTable { pa } => {
                    w.fresh.remove(&pa);
                    if let Some(t) = w.tabs.remove(&pa) {
                        let since = w.unreachable_since(&t);
                        assert!(
                            w.covered(&t, since),
                            "table {pa:#x} (vmid {}, ipa {:#x}) freed with no TLB invalidation covering it since it became unreachable",
                            t.s2.vmid,
                            t.base
                        );
                    }
                }
                Event::AllocRoot { .. } => {}
                Event::FreeRoot { pa, .. } => {
                    if let Some(last) = w.last_write.remove(&pa) {
                        let flushed = w.vmid_tlbi.iter().any(|(s2, &t)| s2.root == pa && t > last);
                        assert!(flushed, "root {pa:#x} freed with no VMID-wide invalidation since its last write");
                    }
                    assert!(w.tabs.values().all(|t| t.s2.root != pa), "root {pa:#x} freed before its tables");
                }
                Event::Init { ptep, .. } => {
                    let page = ptep & !(PAGE_SIZE - 1);
                    assert!(!w.tabs.contains_key(&page), "init write into installed table {page:#x}");
                    match w.fresh.get_mut(&page) {
                        Some(dirty) => *dirty = true,
                        None => panic!("init write into {page:#x}, not a fresh table page"),
                    }
                }
                Event::Barrier => w.fresh.values_mut().for_each(|d| *d = false),
                Event::TableFilled { s2, table } => {
                    assert!(w.fresh.contains_key(&table), "{table:#x} announced filled: not a fresh table page");
                    w.filled.insert(table, s2);
                }
                Event::Write { s2, ptep, ipa, level, old, new } => {
                    w.last_write.insert(s2.root, now);
                    // A live split (BBML2): checked in write_pte to hold
                    // the block's translations; invalidated by IPA later.
                    let live_split =
                        s2.iommu && self.smmu_bbml2 && !pte::is_table(old, level) && pte::is_table(new, level);
                    if pte::is_valid(old)
                        && pte::is_valid(new)
                        && old != new
                        && !pte::sw_bits_only(old, new)
                        && !live_split
                    {
                        panic!("valid→valid at {ptep:#x}: {old:#x} → {new:#x}");
                    }
                    if pte::is_valid(new) && w.pending.contains_key(&ptep) {
                        panic!("entry {ptep:#x} made valid before TLBI");
                    }
                    if live_split && pte::is_valid(old) {
                        // The block's TLB entries: invalidated by IPA next.
                        w.pending.insert(ptep, (s2, ipa, level));
                    }
                    if pte::is_valid(old) && !pte::is_valid(new) {
                        w.pending.insert(ptep, (s2, ipa, level));
                    }
                    if pte::is_table(old, level) && old != new {
                        let t = pte::table_pa(old);
                        match w.tabs.get_mut(&t) {
                            Some(tab) => tab.detached = Some(now),
                            None => panic!("table descriptor to unknown table {t:#x} removed"),
                        }
                    }
                    if pte::is_table(new, level) && old != new {
                        let t = pte::table_pa(new);
                        // A table installed in a tree the SMMU walks was
                        // announced filled first, naming that tree (the EL2
                        // env cleans it to PoC there for a non-coherent SMMU).
                        let filled = w.filled.remove(&t);
                        if s2.iommu {
                            assert_eq!(filled, Some(s2), "table {t:#x} installed in an SMMU tree without table_filled");
                        }
                        match w.fresh.remove(&t) {
                            Some(false) => {
                                let tab = Tab {
                                    s2,
                                    base: ipa,
                                    size: level_size(level),
                                    parent: ptep & !(PAGE_SIZE - 1),
                                    published: now,
                                    detached: None,
                                };
                                w.tabs.insert(t, tab);
                            }
                            Some(true) => panic!(
                                "table {t:#x} installed at ipa {ipa:#x} before its contents were ordered (no barrier between its writes and the install)"
                            ),
                            None => panic!("installed {t:#x}, not a fresh table page"),
                        }
                    }
                }
                Event::TlbiIpa { s2, ipa, level } => {
                    // Only after the write that made the entry invalid:
                    // the EL2 TLBI relies on write_pte's barrier.
                    if !w.pending.values().any(|p| *p == (s2, ipa, level)) {
                        stray.get_or_insert((s2, ipa, level));
                    }
                    w.pending.retain(|_, p| *p != (s2, ipa, level));
                    w.ipa_tlbi.insert((s2, ipa), now);
                }
                Event::TlbiVmid { s2 } => {
                    w.pending.retain(|_, p| p.0 != s2);
                    w.vmid_tlbi.insert(s2, now);
                }
                Event::Scrub { .. } | Event::CleanInvalPoc { .. } | Event::IcacheInval { .. } | Event::DmaSync => {}
            }
        }
        if let Some((ptep, (s2, ipa, level))) = w.pending.pop_first() {
            panic!(
                "entry {ptep:#x} (vmid {}, root {:#x}, ipa {ipa:#x}, level {level}) made invalid with no TLBI naming its tree and IPA",
                s2.vmid, s2.root
            );
        }
        if let Some((s2, ipa, level)) = stray {
            panic!(
                "TLBI by IPA {ipa:#x} (vmid {}, root {:#x}, level {level}) with no write making that entry invalid before it",
                s2.vmid, s2.root
            );
        }
    }
}

impl TestEnv {
    /// The first page of `[start, end)` the tree `s2` maps now.
    fn first_mapped(&self, s2: &S2Id, start: u64, end: u64) -> Option<u64> {
        let start_level = match s2.sl0 {
            2 => 0,
            1 => 1,
            _ => 2,
        };
        let root_entries = 1usize << (64 - s2.t0sz as u32 - super::level_shift(start_level));
        let geo = Geometry { root: s2.root, start_level, root_entries: root_entries as u32 };
        // Not a walk of the core's: leaves its count of entered tables alone.
        let entered = self.table_ptrs.get();
        let mut a = start;
        let mut found = None;
        while a < end {
            let (_, d, level) = leaf_entry(self, &geo, a);
            if pte::is_valid(d) {
                found = Some(a);
                break;
            }
            a = (a & !(level_size(level) - 1)) + level_size(level);
        }
        self.table_ptrs.set(entered);
        found
    }
}

impl Walkers {
    /// Since when no walker can reach the table `t`: when it or the nearest
    /// ancestor was detached; for a table still reachable (its tree being
    /// destroyed), the tree's last write.
    fn unreachable_since(&self, t: &Tab) -> u64 {
        let mut cur = *t;
        for _ in 0..8 {
            if let Some(d) = cur.detached {
                return d;
            }
            match self.tabs.get(&cur.parent) {
                Some(p) => cur = *p,
                None => break,
            }
        }
        t.published.max(self.last_write.get(&t.s2.root).copied().unwrap_or(0))
    }

    /// Was `t`'s tree invalidated, whole or at an IPA under `t`, after `since`?
    fn covered(&self, t: &Tab, since: u64) -> bool {
        self.vmid_tlbi.get(&t.s2).is_some_and(|&s| s > since)
            || self.ipa_tlbi.range((t.s2, t.base)..(t.s2, t.base + t.size)).any(|(_, &s)| s > since)
    }
}

impl MmEnv for TestEnv {
    fn alloc_table(&mut self) -> Option<u64> {
        let pa = self.alloc(1, false)?;
        self.push(Event::AllocTable { pa });
        Some(pa)
    }
    fn alloc_table_for_fill(&mut self) -> Option<u64> {
        let pa = match self.recycle.pop() {
            Some(pa) => {
                if !self.take() {
                    self.recycle.push(pa);
                    return None;
                }
                self.live.insert(pa, (1, false));
                // Entries 1.. are as the page's last life as a table left
                // them (its hint says what they hold); entry 0 is garbage.
                let mut bits = [!0; ENTRIES / 64];
                bits[0] &= !1;
                self.unfilled.insert(pa, bits);
                pa
            }
            None => {
                let pa = self.alloc(1, false)?;
                for i in 0..ENTRIES {
                    // SAFETY: pa is a live test page of ENTRIES descriptors.
                    unsafe { core::ptr::write((pa as *mut u64).add(i), POISON) };
                }
                self.unfilled.insert(pa, [0; ENTRIES / 64]);
                pa
            }
        };
        self.push(Event::AllocTable { pa });
        Some(pa)
    }
    fn free_table(&mut self, pa: u64) {
        self.unfilled.remove(&pa);
        self.push(Event::FreeTable { pa });
        if self.recycling && self.recycle.len() < RECYCLE_MAX {
            assert_eq!(self.live.remove(&pa), Some((1, false)), "double or bad free of {pa:#x}");
            // Kept with its hint; its first word becomes a list link.
            // SAFETY: a test page this env allocated and nobody uses now.
            unsafe { core::ptr::write(pa as *mut u64, POISON) };
            self.recycle.push(pa);
            return;
        }
        self.free(pa, 1, false)
    }
    fn table_taken(&mut self, pa: u64) {
        // Entries 1.. as the page's last life as a table left them (its
        // hint says what they hold), or anything (a page fresh from the
        // host, its hint reset): the split checks the hint.
        let mut bits = [!0; ENTRIES / 64];
        bits[0] &= !1;
        self.unfilled.insert(pa, bits);
        self.push(Event::AllocTable { pa });
    }
    fn table_kept(&mut self, pa: u64) {
        self.unfilled.remove(&pa);
        self.push(Event::FreeTable { pa });
    }
    fn hyp_map(&mut self, pa: u64, size: u64) -> Result<(), super::Error> {
        if let Some(n) = self.hyp_map_budget.as_mut() {
            if *n == 0 {
                return Err(super::Error::NoMem);
            }
            *n -= 1;
        }
        let (base, len) = self.backed.expect("hyp_map of memory the test does not back");
        assert!(pa >= base && pa + size <= base + len, "hyp_map of {pa:#x} outside the backed RAM");
        assert!(self.hyp_mapped.insert(pa, size).is_none(), "{pa:#x} mapped twice");
        Ok(())
    }
    fn hyp_unmap(&mut self, pa: u64, size: u64) {
        // Returned in runs that may join what separate calls mapped.
        let mut at = pa;
        while at < pa + size {
            let n = self.hyp_mapped.remove(&at).unwrap_or_else(|| panic!("hyp_unmap of {at:#x}: not mapped"));
            at += n;
        }
        assert_eq!(at, pa + size, "hyp_unmap of part of a mapping");
    }
    fn alloc_root(&mut self, pages: usize) -> Option<u64> {
        let pa = self.alloc(pages, true)?;
        self.push(Event::AllocRoot { pa, pages });
        Some(pa)
    }
    fn free_root(&mut self, pa: u64, pages: usize) {
        self.push(Event::FreeRoot { pa, pages });
        self.free(pa, pages, true)
    }
    fn table_ptr(&self, pa: u64) -> *mut u64 {
        self.table_ptrs.set(self.table_ptrs.get() + 1);
        pa as *mut u64
    }
    unsafe fn init_pte(&mut self, ptep: *mut u64, val: u64) {
        let (page, i) = (ptep as u64 & !(PAGE_SIZE - 1), (ptep as u64 & (PAGE_SIZE - 1)) as usize / 8);
        if let Some(bits) = self.unfilled.get_mut(&page) {
            bits[i / 64] |= 1 << (i % 64);
        }
        self.push(Event::Init { ptep: ptep as u64, val });
        // SAFETY: ptep points into a live test table page.
        unsafe { core::ptr::write(ptep, val) };
    }
    fn publish_barrier(&mut self) {
        self.push(Event::Barrier);
    }
    fn table_hint(&mut self, table: *mut u64) -> Option<&mut u16> {
        if !self.hints {
            return None;
        }
        let pa = table as u64;
        let live = self.live.range(..=pa).next_back().is_some_and(|(&a, &(n, _))| pa < a + n as u64 * PAGE_SIZE);
        let reachable = self.hyp_mapped.range(..=pa).next_back().is_some_and(|(&a, &n)| pa < a + n);
        assert!(live || reachable, "hint of {pa:#x}: not a live page");
        Some(&mut **self.hint.entry(table as u64).or_insert_with(|| std::boxed::Box::new(0)))
    }
    fn table_filled(&mut self, s2: &S2Id, table: u64) {
        self.push(Event::TableFilled { s2: *s2, table });
    }
    unsafe fn write_pte(&mut self, s2: &S2Id, ptep: *mut u64, ipa: u64, level: u8, val: u64) {
        // SAFETY: ptep points into a live test table page.
        let old = unsafe { core::ptr::read(ptep) };
        if pte::is_table(val, level) && old != val {
            let t = pte::table_pa(val);
            if let Some(bits) = self.unfilled.remove(&t) {
                let missing = bits.iter().map(|b| b.count_zeros()).sum::<u32>();
                assert!(
                    missing == 0,
                    "table {t:#x} installed with {missing} entries never written since alloc_table_for_fill"
                );
                // Such a page holds a block's children: each entry the one
                // before plus the child size (valid) or the same (invalid).
                // SAFETY: t is a live test page of ENTRIES descriptors.
                let at = |i: usize| unsafe { core::ptr::read((t as *const u64).add(i)) };
                let step = if pte::is_valid(at(0)) { level_size(level + 1) } else { 0 };
                for i in 1..ENTRIES {
                    assert_eq!(
                        at(i),
                        at(0).wrapping_add(i as u64 * step),
                        "table {t:#x} installed at level {level} with entry {i} not the block's child"
                    );
                }
            }
        }
        if s2.iommu && pte::is_valid(old) && !pte::is_table(old, level) && pte::is_table(val, level) {
            // A live split: the table holds exactly the block's translations.
            let t = pte::table_pa(val);
            let step = level_size(level + 1);
            for i in 0..ENTRIES {
                // SAFETY: t is a live test page of ENTRIES descriptors.
                let c = unsafe { core::ptr::read((t as *const u64).add(i)) };
                assert_eq!(
                    c,
                    pte::child_of(old, level + 1, i as u64 * step),
                    "block at ipa {ipa:#x} split live into table {t:#x} with entry {i} not its own translation"
                );
            }
        }
        if s2.iommu && pte::is_valid(old) && !pte::is_valid(val) {
            self.broken.push((*s2, ipa, level));
        }
        assert!(
            s2.iommu || !pte::is_valid(val) || self.dma_batched == 0,
            "a CPU's tree maps ipa {ipa:#x} while SMMU invalidations wait for their CMD_SYNC"
        );
        self.push(Event::Write { s2: *s2, ptep: ptep as u64, ipa, level, old, new: val });
        // SAFETY: as above.
        unsafe { core::ptr::write(ptep, val) };
    }
    fn commit_done(&mut self, s2: &S2Id) {
        let mut broken = core::mem::take(&mut self.broken);
        for &(t, ipa, level) in broken.iter().filter(|b| b.0 == *s2) {
            if let Some(a) = self.first_mapped(&t, ipa, ipa + level_size(level)) {
                panic!(
                    "SMMU tree (vmid {}): entry at ipa {ipa:#x} level {level} made invalid while page {a:#x} under it stays mapped (a transient DMA fault)",
                    t.vmid
                );
            }
        }
        broken.retain(|b| b.0 != *s2);
        self.broken = broken;
    }
    fn tlbi_ipa(&mut self, s2: &S2Id, ipa: u64, level: u8) {
        self.smmu_tlbi(s2);
        self.push(Event::TlbiIpa { s2: *s2, ipa, level });
    }
    fn tlbi_vmid(&mut self, s2: &S2Id) {
        self.smmu_tlbi(s2);
        self.push(Event::TlbiVmid { s2: *s2 });
    }
    fn dma_batch(&mut self) {
        assert!(!self.dma_batch_open, "nested SMMU batch");
        self.dma_batch_open = true;
    }
    fn dma_sync(&mut self) {
        assert!(self.dma_batch_open, "SMMU sync without a batch");
        if self.dma_batched != 0 {
            self.dma_syncs += 1;
            self.push(Event::DmaSync);
        }
        self.dma_batch_open = false;
        self.dma_batched = 0;
    }
    fn scrub(&mut self, pa: u64, size: u64) {
        self.push(Event::Scrub { pa, size });
    }
    fn dcache_clean_inval_poc(&mut self, pa: u64, size: u64) {
        self.push(Event::CleanInvalPoc { pa, size });
    }
    fn dma_noncoherent(&self) -> bool {
        self.dma_noncoherent
    }
    fn icache_inval_pou(&mut self, pa: u64, size: u64) {
        self.push(Event::IcacheInval { pa, size });
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for pa in core::mem::take(&mut self.recycle) {
            self.hint.remove(&pa);
            let layout = Layout::from_size_align(4096, 4096).unwrap();
            // SAFETY: a kept table page, allocated by alloc with this layout.
            unsafe { dealloc(pa as *mut u8, layout) };
        }
    }
}

impl TestEnv {
    /// Counts an SMMU invalidation: waited for at once, or in the batch.
    fn smmu_tlbi(&mut self, s2: &S2Id) {
        if !s2.iommu {
            return;
        }
        if self.dma_batch_open {
            self.dma_batched += 1;
        } else {
            self.dma_syncs += 1;
        }
    }
    /// Table pages kept for reuse, last freed last.
    pub fn recycled(&self) -> &[u64] {
        &self.recycle
    }
    /// The uniformity hint kept for the table page at `pa`.
    pub fn hint_of(&self, pa: u64) -> Option<u16> {
        self.hint.get(&pa).map(|h| **h)
    }
    /// Every page handed out has come back.
    pub fn assert_no_leaks(&self) {
        assert!(self.live.is_empty(), "leaked pages: {:?}", self.live);
    }
}
