//! The EL2 [`MmEnv`]: table pages from the hyp's page pool, descriptor
//! writes visible to the walker, and stage-2 TLB maintenance.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

use hyp::mm::env::{MmEnv, Vmid};

use crate::mem;

/// Zero-sized: the pool and the TLB are global.
pub struct HypEnv;

/// Software counters over all stage-2s (benchmarks): descriptor writes,
/// TLB invalidations, table pages allocated and freed.
pub static PTE_WRITES: AtomicU64 = AtomicU64::new(0);
pub static TLBIS: AtomicU64 = AtomicU64::new(0);
pub static TABLES_ALLOCATED: AtomicU64 = AtomicU64::new(0);
pub static TABLES_FREED: AtomicU64 = AtomicU64::new(0);

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn with_vmid<F: FnOnce()>(vmid: Vmid, f: F) {
    // TLBI by IPA and VMALLS12E1 act on the VMID in VTTBR_EL2: switch to the
    // target VMID for the duration of the invalidation.
    let saved = VTTBR_EL2.get();
    let want = (saved & !(0xffff << 48)) | ((vmid as u64) << 48);
    if want != saved {
        VTTBR_EL2.set(want);
        barrier::isb(barrier::SY);
    }
    f();
    if want != saved {
        VTTBR_EL2.set(saved);
        barrier::isb(barrier::SY);
    }
}

impl MmEnv for HypEnv {
    fn alloc_table(&mut self) -> Option<u64> {
        bump(&TABLES_ALLOCATED);
        mem::alloc_pages(1)
    }
    fn free_table(&mut self, pa: u64) {
        bump(&TABLES_FREED);
        mem::free_pages(pa, 1)
    }
    fn alloc_root(&mut self, pages: usize) -> Option<u64> {
        mem::alloc_pages(pages)
    }
    fn free_root(&mut self, pa: u64, pages: usize) {
        mem::free_pages(pa, pages)
    }
    fn table_ptr(&self, pa: u64) -> *mut u64 {
        // The hyp's stage-1 is an identity map.
        pa as *mut u64
    }
    unsafe fn write_pte(&mut self, ptep: *mut u64, val: u64) {
        // SAFETY: ptep is a descriptor in a table page owned by a stage-2 the
        // caller holds the lock of.
        unsafe { core::ptr::write_volatile(ptep, val) };
        barrier::dsb(barrier::ISHST);
        bump(&PTE_WRITES);
    }
    fn tlbi_ipa(&mut self, vmid: Vmid, ipa: u64, _level: u8) {
        bump(&TLBIS);
        with_vmid(vmid, || {
            // SAFETY: TLB maintenance only; the operand is IPA[55:12].
            unsafe {
                core::arch::asm!(
                    "dsb ishst",
                    "tlbi ipas2e1is, {0}",
                    "dsb ish",
                    "tlbi vmalle1is",
                    "dsb ish",
                    "isb",
                    in(reg) ipa >> 12,
                )
            };
        });
    }
    fn tlbi_vmid(&mut self, vmid: Vmid) {
        bump(&TLBIS);
        with_vmid(vmid, || {
            // SAFETY: TLB maintenance only.
            unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb") };
        });
    }
    fn on_split(&mut self, who: u16, ipa: u64, level: u8) {
        crate::tracebuf::point::table(hyp::trace::Kind::Split, who, ipa, level);
    }
    fn on_merge(&mut self, who: u16, ipa: u64, level: u8) {
        crate::tracebuf::point::table(hyp::trace::Kind::Merge, who, ipa, level);
    }
    fn scrub(&mut self, pa: u64, size: u64) {
        // DC ZVA zeroes a whole block per instruction (DCZID_EL0.BS words);
        // DC CVAC then cleans it to the point of coherency, so a
        // non-cacheable observer (the next owner with its MMU off) sees zeroes.
        let dczid = crate::read_sysreg!("dczid_el0");
        let block = 4u64 << (dczid & 0xf);
        let zva = dczid & (1 << 4) == 0 && block <= 4096;
        let mut a = pa;
        while a < pa + size {
            if zva {
                // SAFETY: the caller has unmapped [pa, pa + size) from every
                // lower EL; the identity map covers it as normal memory and
                // `a` is block-aligned (pa and size are page multiples).
                unsafe { core::arch::asm!("dc zva, {0}", "dc cvac, {0}", in(reg) a) };
            } else {
                // SAFETY: as above; zeroing one block by plain stores.
                unsafe { core::ptr::write_bytes(a as *mut u8, 0, block as usize) };
                // SAFETY: cache maintenance by VA on mapped normal memory.
                unsafe { core::arch::asm!("dc cvac, {}", in(reg) a) };
            }
            a += block;
        }
        barrier::dsb(barrier::ISH);
    }
}
