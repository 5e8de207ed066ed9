//! What the core needs from its surroundings: table pages, descriptor writes
//! and the barriers that publish them, TLB and cache maintenance, and page
//! scrubbing. The EL2 binary implements it with the real allocator, `DSB`,
//! `TLBI`, `DC` and `IC`; host tests implement it with a recording fake that
//! checks the order of everything it is asked to do.

/// A VMID as programmed into VTTBR_EL2 (8 bits used).
pub type Vmid = u16;

/// A stage-2 the hardware walks, as TLB maintenance must name it: the
/// translation regime is selected by VTTBR_EL2 (root and VMID) and walked
/// with the geometry in VTCR_EL2 (T0SZ, SL0). Invalidating a tree under any
/// other (root, VMID) pair would invalidate, and let the walker fetch, the
/// wrong thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S2Id {
    pub vmid: Vmid,
    /// PA of the (possibly concatenated) root table: VTTBR_EL2.BADDR.
    pub root: u64,
    /// VTCR_EL2.T0SZ of the tree.
    pub t0sz: u8,
    /// VTCR_EL2.SL0 of the tree (4 KiB granule encoding).
    pub sl0: u8,
    /// The tree is walked by the SMMU (the host's DMA view: STE.S2TTB,
    /// S2VMID, S2T0SZ, S2SL0), not by the CPUs: its TLB maintenance is
    /// CMD_TLBI_S2_IPA / CMD_TLBI_S12_VMALL + CMD_SYNC on the SMMU's
    /// command queue, completed before the call returns, and its VMID is
    /// the SMMU's (a namespace of its own).
    pub iommu: bool,
}

pub trait MmEnv {
    /// One zeroed 4 KiB page for a table, by physical address. The zeroing
    /// may still be in flight: [`MmEnv::publish_barrier`] orders it before
    /// the page is installed.
    fn alloc_table(&mut self) -> Option<u64>;
    /// A 4 KiB page for a table whose `ENTRIES` descriptors the caller
    /// writes, every one, with [`MmEnv::init_table`] (or
    /// [`MmEnv::init_pte`]) before it installs the table (a split block's
    /// children): its contents are unspecified, so an implementation may
    /// hand out a page [`MmEnv::free_table`] kept without zeroing it again.
    /// Its [`MmEnv::table_hint`] is then either 0 or, for a kept page, the
    /// hint the core left on it, with every entry but the first (free
    /// lists may link through it) as they were when it was freed.
    fn alloc_table_for_fill(&mut self) -> Option<u64> {
        self.alloc_table()
    }
    /// Gives a table page back. The caller has made it unreachable and, if
    /// a walker could ever reach it, invalidated the TLBs since (a walker
    /// may hold a table pointer until then). Implementations may keep it
    /// for [`MmEnv::alloc_table_for_fill`]; one that goes back to general
    /// use is zeroed first, so it never carries a descriptor out of the
    /// tables.
    fn free_table(&mut self, pa: u64);
    /// A table page of a tree with its own pages ([`Stage2::use_own_tables`]:
    /// a VM's memcache, the host's reserve) was taken from them for a split
    /// (tests check it as [`MmEnv::alloc_table_for_fill`]'s).
    ///
    /// [`Stage2::use_own_tables`]: super::pgtable::Stage2::use_own_tables
    #[inline(always)]
    fn table_taken(&mut self, _pa: u64) {}
    /// A table page of a tree with its own pages went back to them, on
    /// [`MmEnv::free_table`]'s terms (tests check it as its).
    #[inline(always)]
    fn table_kept(&mut self, _pa: u64) {}
    /// Makes `[pa, pa + size)`, pages the host is donating for a VM's
    /// tables, reachable through [`MmEnv::table_ptr`] (the EL2 binary maps
    /// them into its stage-1); `NoMem` if that needs memory there is not.
    /// Called before the host loses them (nothing is written to them
    /// until it has); on `Err` nothing stays mapped.
    fn hyp_map(&mut self, _pa: u64, _size: u64) -> Result<(), super::Error> {
        Ok(())
    }
    /// Zeroes the page at `pa`, a page the hyp holds and reaches through
    /// [`MmEnv::table_ptr`] (no walker's, nobody else's), before it goes
    /// onto a tree's own table pages.
    fn zero_page(&mut self, pa: u64) {
        // SAFETY: per the method's contract, a whole page only the caller
        // references, reachable at table_ptr(pa).
        unsafe { core::ptr::write_bytes(self.table_ptr(pa) as *mut u8, 0, super::PAGE_SIZE as usize) };
    }
    /// Undoes [`MmEnv::hyp_map`] (the hyp reaches the pages no more, every
    /// TLB entry of them invalidated) before they go back to the host.
    fn hyp_unmap(&mut self, _pa: u64, _size: u64) {}
    /// `pages` physically contiguous zeroed pages aligned to their total size
    /// (a concatenated stage-2 root).
    fn alloc_root(&mut self, pages: usize) -> Option<u64>;
    fn free_root(&mut self, pa: u64, pages: usize);
    /// Pointer through which the hyp reaches the table page at `pa`.
    fn table_ptr(&self, pa: u64) -> *mut u64;

    /// Writes one descriptor of a table page no walker can reach yet (a new
    /// table being filled before it is installed). No barrier: one
    /// [`MmEnv::publish_barrier`] orders all of them before the install.
    ///
    /// # Safety
    /// `ptep` points at a descriptor of a page the caller took from
    /// [`MmEnv::alloc_table`] and has not installed.
    unsafe fn init_pte(&mut self, ptep: *mut u64, val: u64);

    /// Fills a table page no walker can reach yet (as [`MmEnv::init_pte`])
    /// with `ENTRIES` descriptors `first + i * step`: a split block's
    /// children.
    ///
    /// # Safety
    /// `table` points at a page the caller took from
    /// [`MmEnv::alloc_table`] and has not installed.
    unsafe fn init_table(&mut self, table: *mut u64, first: u64, step: u64) {
        for i in 0..super::ENTRIES {
            // SAFETY: per the function contract; i < ENTRIES.
            unsafe { self.init_pte(table.add(i), first + i as u64 * step) };
        }
    }

    /// A 16-bit word the core keeps for the table page at `table` (the
    /// uniformity hint of `pgtable`: how many of its entries continue the
    /// one before), or `None` if the environment keeps none (the core then
    /// scans the table when it needs to know). Only the core reads and
    /// writes it, under the lock of the tree the page belongs to. The word
    /// keeps its address while the page is a table page: the core may keep
    /// a pointer to it from phase one of an update to its commit.
    fn table_hint(&mut self, _table: *mut u64) -> Option<&mut u16> {
        None
    }

    /// Orders every earlier write to table pages (the allocator's zeroing,
    /// [`MmEnv::init_pte`]) before every later descriptor write, for the
    /// table walkers of all CPUs: `DSB ISHST` on aarch64. Called between
    /// filling a new table (or root) and making it reachable.
    fn publish_barrier(&mut self);

    /// A new table page of tree `s2` is filled (zeroed by the allocator,
    /// entries written with [`MmEnv::init_pte`]) and is about to be
    /// published. A walker that does not snoop the caches (a non-coherent
    /// SMMU walking the DMA view) needs the page cleaned to the point of
    /// coherency here; CPUs need nothing.
    fn table_filled(&mut self, _s2: &S2Id, _table: u64) {}

    /// Writes one live descriptor of tree `s2`: the entry at `level`
    /// translating `[ipa, ipa + level size)`. Implementations add the
    /// barrier that makes the write visible to the table walker.
    ///
    /// # Safety
    /// `ptep` points at that descriptor, inside a table page of a stage-2 the
    /// caller holds (obtained through [`MmEnv::table_ptr`]).
    unsafe fn write_pte(&mut self, s2: &S2Id, ptep: *mut u64, ipa: u64, level: u8, val: u64);

    /// Invalidates TLB entries of tree `s2` for `ipa` (a leaf at `level`):
    /// with VTTBR/VTCR of `s2` loaded, TLBI IPAS2E1IS, DSB, TLBI
    /// VMALLE1IS, DSB, ISB on aarch64. The core calls it only right after
    /// [`MmEnv::write_pte`] of that entry, whose barrier made the write
    /// visible to the walkers: the invalidation needs none before it.
    fn tlbi_ipa(&mut self, s2: &S2Id, ipa: u64, level: u8);
    /// Starts a batch of invalidations of SMMU trees: until
    /// [`MmEnv::dma_sync`], `tlbi_ipa` / `tlbi_vmid` of a tree with
    /// [`S2Id::iommu`] may queue the invalidation without waiting for it.
    /// The caller holds the lock that keeps everyone from relying on the
    /// pages being unreachable until the sync, and syncs before it returns.
    fn dma_batch(&mut self) {}
    /// Completes every SMMU invalidation queued since [`MmEnv::dma_batch`]
    /// (CMD_SYNC, waited for) and ends the batch.
    fn dma_sync(&mut self) {}
    /// Invalidates all stage-1+2 entries of tree `s2` (TLBI VMALLS12E1IS with
    /// its VTTBR/VTCR loaded); used when a table descriptor is removed and
    /// when the tree is destroyed (before its VMID can be reused).
    fn tlbi_vmid(&mut self, s2: &S2Id);

    /// Zeroes `size` bytes at `pa` (the caller then cleans them to the point
    /// of coherency with [`MmEnv::dcache_clean_inval_poc`] where an observer
    /// may read memory around the caches: `mm::cmo`).
    fn scrub(&mut self, pa: u64, size: u64);
    /// Do devices reach memory around the CPUs' caches (a non-coherent
    /// SMMU: SMMU_IDR0.COHACC clear)? Then pages the host's devices may
    /// read are cleaned to the point of coherency even under FWB.
    fn dma_noncoherent(&self) -> bool {
        false
    }
    /// Cleans and invalidates the data cache for `[pa, pa + size)` to the
    /// point of coherency (DC CIVAC per line, then DSB ISH), so an observer
    /// with its caches off (a guest before it turns its MMU on, the host
    /// after a reclaim) sees what was last written, and no stale line
    /// survives in the caches.
    fn dcache_clean_inval_poc(&mut self, pa: u64, size: u64);
    /// Invalidates the instruction caches for `[pa, pa + size)` to the point
    /// of unification, for a new executable mapping; the data cache has been
    /// cleaned first. Implementations may invalidate more (aarch64: IC
    /// IALLUIS, DSB ISH, ISB).
    fn icache_inval_pou(&mut self, pa: u64, size: u64);

    /// A block of stage-2 `who` at `ipa` (level `level`) was split (tracing).
    fn on_split(&mut self, _who: u16, _ipa: u64, _level: u8) {}
    /// A table of stage-2 `who` was merged into a block at `level` (tracing).
    fn on_merge(&mut self, _who: u16, _ipa: u64, _level: u8) {}
    /// A commit to the tree `s2` ended: its update is complete (the test
    /// environment checks the DMA view's no-transient-fault rule here).
    #[inline(always)]
    fn commit_done(&mut self, _s2: &S2Id) {}
}
