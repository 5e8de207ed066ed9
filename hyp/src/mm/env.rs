//! What the core needs from its surroundings: table pages, descriptor writes,
//! TLB maintenance and page scrubbing. The EL2 binary implements it with the
//! real allocator and `TLBI`; host tests implement it with recording fakes.

/// A VMID as programmed into VTTBR_EL2 (8 bits used).
pub type Vmid = u16;

pub trait MmEnv {
    /// One zeroed 4 KiB page for a table, by physical address.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Gives a table page back.
    fn free_table(&mut self, pa: u64);
    /// `pages` physically contiguous zeroed pages aligned to their total size
    /// (a concatenated stage-2 root).
    fn alloc_root(&mut self, pages: usize) -> Option<u64>;
    fn free_root(&mut self, pa: u64, pages: usize);
    /// Pointer through which the hyp reaches the table page at `pa`.
    fn table_ptr(&self, pa: u64) -> *mut u64;

    /// Writes one live descriptor. Implementations add the barrier that makes
    /// the write visible to the table walker.
    ///
    /// # Safety
    /// `ptep` points at a descriptor inside a table page of a stage-2 the
    /// caller holds (obtained through [`MmEnv::table_ptr`]).
    unsafe fn write_pte(&mut self, ptep: *mut u64, val: u64) {
        // SAFETY: `ptep` points into a table page owned by the caller's stage-2
        // (derived from `table_ptr`), and descriptors are naturally aligned u64s.
        unsafe { core::ptr::write_volatile(ptep, val) }
    }

    /// Invalidates TLB entries for `ipa` (a leaf at `level`) in `vmid`:
    /// DSB, TLBI IPAS2E1IS, DSB, TLBI VMALLE1IS, DSB, ISB on aarch64.
    fn tlbi_ipa(&mut self, vmid: Vmid, ipa: u64, level: u8);
    /// Invalidates all stage-1+2 entries of `vmid` (TLBI VMALLS12E1IS); used
    /// when a table descriptor is removed.
    fn tlbi_vmid(&mut self, vmid: Vmid);

    /// Zeroes (and cleans to the point of coherency) `size` bytes at `pa`.
    fn scrub(&mut self, pa: u64, size: u64);

    /// A block of stage-2 `who` at `ipa` (level `level`) was split (tracing).
    fn on_split(&mut self, _who: u16, _ipa: u64, _level: u8) {}
    /// A table of stage-2 `who` was merged into a block at `level` (tracing).
    fn on_merge(&mut self, _who: u16, _ipa: u64, _level: u8) {}
}
