//! The EL2 [`MmEnv`]: table pages from the hyp's page pool, descriptor
//! writes published to the table walkers, stage-2 TLB maintenance in the
//! translation regime of the tree it targets (`arch::aarch64::tlb`), cache
//! maintenance to the point of coherency, split/merge trace points, and the
//! software counters the bench and the checker read.

use core::sync::atomic::{AtomicU64, Ordering};

use hyp_core::mm::env::{MmEnv, S2Id};
use hyp_core::mm::PAGE_SIZE;

use crate::arch::aarch64::tlb;
use crate::dev::smmu;
use crate::pool;

/// Zero-sized: the pool and the TLB are global.
pub struct HypEnv;

/// Software counters over all stage-2s (benchmarks, the checker):
/// descriptor writes, TLB invalidations, table pages allocated and freed.
pub static PTE_WRITES: AtomicU64 = AtomicU64::new(0);
pub static TLBIS: AtomicU64 = AtomicU64::new(0);
pub static TABLES_ALLOCATED: AtomicU64 = AtomicU64::new(0);
pub static TABLES_FREED: AtomicU64 = AtomicU64::new(0);

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl MmEnv for HypEnv {
    fn alloc_table(&mut self) -> Option<u64> {
        bump(&TABLES_ALLOCATED);
        pool::alloc_pages(1)
    }
    fn alloc_table_for_fill(&mut self) -> Option<u64> {
        bump(&TABLES_ALLOCATED);
        pool::alloc_table_page()
    }
    fn free_table(&mut self, pa: u64) {
        bump(&TABLES_FREED);
        // A table page the core has detached and invalidated: kept for the
        // next split, or zeroed into the pool.
        pool::free_table_page(pa)
    }
    fn hyp_map(&mut self, pa: u64, size: u64) -> Result<(), hyp_core::mm::Error> {
        // Pages a host donates for a VM's tables: reached by PA, as the
        // pool's (their stage-1 tables from the pool).
        crate::arch::aarch64::hyp_map::map(&mut pool::PoolPages, pa, size).map_err(|e| match e {
            hyp_core::mm::stage1::MapError::NoMem => hyp_core::mm::Error::NoMem,
            _ => hyp_core::mm::Error::Inval,
        })
    }
    fn zero_page(&mut self, pa: u64) {
        // SAFETY: a page the host lost to the hyp (VM_TOPUP), mapped in the
        // hyp's stage-1 by hyp_map, referenced by nobody else yet.
        unsafe { tlb::zero(pa, PAGE_SIZE) };
    }
    fn hyp_unmap(&mut self, pa: u64, size: u64) {
        if let Err(e) = crate::arch::aarch64::hyp_map::unmap(&mut pool::PoolPages, pa, size) {
            // The core unmaps exactly what it mapped: a bug if not.
            log::error!("EL2 stage-1: unmapping {pa:#x}+{size:#x}: {e:?}");
        }
    }
    fn alloc_root(&mut self, pages: usize) -> Option<u64> {
        pool::alloc_pages(pages)
    }
    fn free_root(&mut self, pa: u64, pages: usize) {
        pool::free_pages(pa, pages)
    }
    fn table_ptr(&self, pa: u64) -> *mut u64 {
        // Table pages are pool pages, identity-mapped in the hyp's stage-1.
        pa as *mut u64
    }
    unsafe fn init_pte(&mut self, ptep: *mut u64, val: u64) {
        // SAFETY: ptep is a descriptor of a table page no walker can reach
        // yet (MmEnv::init_pte contract).
        unsafe { core::ptr::write_volatile(ptep, val) };
    }
    unsafe fn init_table(&mut self, table: *mut u64, first: u64, step: u64) {
        // SAFETY: a table page no walker can reach yet (MmEnv::init_table
        // contract); the publish barrier orders these plain stores.
        unsafe { hyp_core::mm::pte::fill(table, first, step) };
    }
    fn table_hint(&mut self, table: *mut u64) -> Option<&mut u16> {
        // SAFETY: the core asks for the hint of a table page of a tree
        // whose lock its caller holds, and keeps the reference only for
        // the call it is in.
        unsafe { pool::hint(table as u64) }
    }
    // Inline: a test of one flag on every split (only a DMA-view tree on a
    // non-coherent SMMU does more). Left to the codegen-unit partition, it
    // stopped being inlined into the core's split once the core's
    // pgtable became several modules (+43 EL2 instructions on a 1G
    // split).
    #[inline]
    fn table_filled(&mut self, s2: &S2Id, table: u64) {
        if s2.iommu && smmu::noncoherent() {
            // Zeroes and entries reach memory before a non-coherent SMMU
            // can walk the page.
            smmu::clean_poc(table, PAGE_SIZE);
        }
    }
    fn publish_barrier(&mut self) {
        tlb::publish_barrier();
    }
    // Inlined with the TLBI below: a one-entry commit then reads the tree's
    // VMID, root and geometry where it keeps them, rather than assembling
    // an S2Id in memory for a call.
    #[inline(always)]
    unsafe fn write_pte(&mut self, s2: &S2Id, ptep: *mut u64, _ipa: u64, _level: u8, val: u64) {
        // SAFETY: ptep is a descriptor in a table page owned by a stage-2 the
        // caller holds the lock of (MmEnv::write_pte contract).
        unsafe { tlb::write_pte(ptep, val) };
        if s2.iommu && smmu::noncoherent() {
            smmu::clean_poc(ptep as u64, 8);
        }
        bump(&PTE_WRITES);
    }
    #[inline(always)]
    fn tlbi_ipa(&mut self, s2: &S2Id, ipa: u64, _level: u8) {
        bump(&TLBIS);
        if s2.iommu {
            // The DMA view: the SMMU's TLB, completed (CMD_SYNC) here.
            smmu::tlbi_ipa(s2.vmid, ipa);
        } else {
            tlb::tlbi_ipa(s2, ipa);
        }
    }
    fn dma_batch(&mut self) {
        smmu::batch();
    }
    fn dma_sync(&mut self) {
        smmu::sync();
    }
    fn tlbi_vmid(&mut self, s2: &S2Id) {
        bump(&TLBIS);
        if s2.iommu {
            smmu::tlbi_vmid(s2.vmid);
        } else {
            tlb::tlbi_vmid(s2);
        }
    }
    fn on_split(&mut self, who: u16, ipa: u64, level: u8) {
        crate::tracebuf::point::table(hyp_abi::trace::Kind::Split, who, ipa, level);
    }
    fn on_merge(&mut self, who: u16, ipa: u64, level: u8) {
        crate::tracebuf::point::table(hyp_abi::trace::Kind::Merge, who, ipa, level);
    }
    fn scrub(&mut self, pa: u64, size: u64) {
        // SAFETY: the core unmapped [pa, pa + size) from the guest (with TLB
        // invalidation) and has not given it to the host yet.
        unsafe { tlb::zero_through_window(pa, size) };
    }
    fn dcache_clean_inval_poc(&mut self, pa: u64, size: u64) {
        tlb::dcache_clean_inval_poc(pa, size);
    }
    fn dma_noncoherent(&self) -> bool {
        smmu::noncoherent()
    }
    fn icache_inval_pou(&mut self, _pa: u64, _size: u64) {
        // The D-side is clean to PoC (so to PoU) and complete.
        tlb::icache_inval_all();
    }
}
