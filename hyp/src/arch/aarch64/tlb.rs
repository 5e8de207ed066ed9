//! The EL2 [`MmEnv`]: table pages from the hyp's page pool, descriptor
//! writes published to the table walkers, stage-2 TLB maintenance run in the
//! translation regime of the tree it targets, and cache maintenance to the
//! point of coherency.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

use hyp::mm::env::{MmEnv, S2Id};
use hyp::mm::PAGE_SIZE;

use super::window;
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

// CTR_EL0 and DCZID_EL0 fields (`aarch64-cpu` describes neither register).
/// CTR_EL0.DminLine [19:16]: log2 of the smallest D-cache line, in words.
const CTR_DMINLINE_SHIFT: u64 = 16;
/// CTR_EL0.DIC: I-cache invalidation to PoU not needed for I/D coherence.
const CTR_DIC: u64 = 1 << 29;
/// DCZID_EL0.BS [3:0]: log2 of the DC ZVA block, in words.
const DCZID_BS_MASK: u64 = 0xf;
/// DCZID_EL0.DZP: DC ZVA prohibited.
const DCZID_DZP: u64 = 1 << 4;

/// The smallest data cache line of any cache the CPU has, in bytes: the
/// stride that makes a by-VA maintenance loop miss no line.
fn dcache_line() -> u64 {
    4 << ((crate::read_sysreg!("ctr_el0") >> CTR_DMINLINE_SHIFT) & 0xf)
}

/// VTCR_EL2 for a stage-2 of `t0sz`/`sl0` (4K granule, write-back walks,
/// inner shareable, PS from the CPU's PA range). Every tree, the host's and
/// the guests', is walked with the VTCR this gives for its geometry.
pub fn vtcr(t0sz: u64, sl0: u64) -> u64 {
    let parange = ID_AA64MMFR0_EL1.get() & 0xf;
    (VTCR_EL2::T0SZ.val(t0sz)
        + VTCR_EL2::SL0.val(sl0)
        + VTCR_EL2::IRGN0::NormalWBRAWA
        + VTCR_EL2::ORGN0::NormalWBRAWA
        + VTCR_EL2::SH0::Inner
        + VTCR_EL2::TG0::Granule4KB
        + VTCR_EL2::PS.val(parange.min(5))
        + VTCR_EL2::RES1::SET)
        .value
}

/// VTTBR_EL2 of a tree: its root and VMID.
pub fn vttbr(root: u64, vmid: u16) -> u64 {
    (VTTBR_EL2::BADDR.val(root >> 1) + VTTBR_EL2::VMID.val(vmid as u64)).value
}

/// Runs `f` (TLB maintenance) in the translation regime of `s2`: TLBI by
/// IPA, VMALLE1 and VMALLS12E1 act on the VMID in VTTBR_EL2, and while it
/// names that VMID the walker may fetch through the root and VTCR next to
/// it, so both are the tree's own (root | VMID, its VTCR). The current pair
/// is restored afterwards.
fn with_s2<F: FnOnce()>(s2: &S2Id, f: F) {
    let (want_vttbr, want_vtcr) = (vttbr(s2.root, s2.vmid), vtcr(s2.t0sz as u64, s2.sl0 as u64));
    let (saved_vttbr, saved_vtcr) = (VTTBR_EL2.get(), VTCR_EL2.get());
    let switch = (want_vttbr, want_vtcr) != (saved_vttbr, saved_vtcr);
    if switch {
        // Both take effect together at the ISB.
        VTCR_EL2.set(want_vtcr);
        VTTBR_EL2.set(want_vttbr);
        barrier::isb(barrier::SY);
    }
    f();
    if switch {
        VTCR_EL2.set(saved_vtcr);
        VTTBR_EL2.set(saved_vttbr);
        barrier::isb(barrier::SY);
    }
}

/// Zeroes `[pa, pa + size)` (page multiples, normal memory mapped at EL2
/// that only the hyp touches: the pool, or a window mapping): DC ZVA blocks
/// where allowed, else plain stores.
///
/// # Safety
/// The range is hyp memory or memory every lower EL has lost access to.
unsafe fn zero(pa: u64, size: u64) {
    let dczid = crate::read_sysreg!("dczid_el0");
    let block = 4u64 << (dczid & DCZID_BS_MASK);
    if dczid & DCZID_DZP == 0 && block <= PAGE_SIZE {
        let mut a = pa;
        while a < pa + size {
            // SAFETY: per the function contract; `a` is block-aligned (pa
            // and size are page multiples, block divides a page).
            unsafe { core::arch::asm!("dc zva, {0}", in(reg) a, options(nostack)) };
            a += block;
        }
    } else {
        // SAFETY: per the function contract.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, size as usize) };
    }
}

/// TLB maintenance at boot, before the first entry to a lower EL: whatever
/// firmware or a previous boot left, for any VMID, stage 1 or 2, at EL2 or
/// EL1&0, is invalidated across the inner-shareable domain.
pub fn flush_all_at_boot() {
    // SAFETY: TLB maintenance only; no memory is accessed.
    unsafe { core::arch::asm!("dsb ishst", "tlbi alle2is", "tlbi alle1is", "dsb ish", "isb", options(nostack)) };
}

/// The same for one CPU coming up while others run (PSCI CPU_ON): only its
/// own TLBs can hold entries from before its reset.
pub fn flush_all_this_cpu() {
    // SAFETY: TLB maintenance only; no memory is accessed.
    unsafe { core::arch::asm!("dsb nshst", "tlbi alle2", "tlbi alle1", "dsb nsh", "isb", options(nostack)) };
}

impl MmEnv for HypEnv {
    fn alloc_table(&mut self) -> Option<u64> {
        bump(&TABLES_ALLOCATED);
        mem::alloc_pages(1)
    }
    fn free_table(&mut self, pa: u64) {
        bump(&TABLES_FREED);
        // SAFETY: a table page the core has detached and invalidated: hyp
        // memory nobody else references. Zeroed so it carries no descriptor
        // out of the tables.
        unsafe { zero(pa, PAGE_SIZE) };
        mem::free_pages(pa, 1)
    }
    fn alloc_root(&mut self, pages: usize) -> Option<u64> {
        mem::alloc_pages(pages)
    }
    fn free_root(&mut self, pa: u64, pages: usize) {
        mem::free_pages(pa, pages)
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
    fn publish_barrier(&mut self) {
        // Every earlier store (the allocator's zeroing, the new entries)
        // completes before the store that makes the table reachable.
        barrier::dsb(barrier::ISHST);
    }
    unsafe fn write_pte(&mut self, _s2: &S2Id, ptep: *mut u64, _ipa: u64, _level: u8, val: u64) {
        // SAFETY: ptep is a descriptor in a table page owned by a stage-2 the
        // caller holds the lock of.
        unsafe { core::ptr::write_volatile(ptep, val) };
        barrier::dsb(barrier::ISHST);
        bump(&PTE_WRITES);
    }
    fn tlbi_ipa(&mut self, s2: &S2Id, ipa: u64, _level: u8) {
        bump(&TLBIS);
        with_s2(s2, || {
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
                    options(nostack),
                )
            };
        });
    }
    fn tlbi_vmid(&mut self, s2: &S2Id) {
        bump(&TLBIS);
        with_s2(s2, || {
            // SAFETY: TLB maintenance only.
            unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
        });
    }
    fn on_split(&mut self, who: u16, ipa: u64, level: u8) {
        crate::tracebuf::point::table(hyp::trace::Kind::Split, who, ipa, level);
    }
    fn on_merge(&mut self, who: u16, ipa: u64, level: u8) {
        crate::tracebuf::point::table(hyp::trace::Kind::Merge, who, ipa, level);
    }
    fn scrub(&mut self, pa: u64, size: u64) {
        // The hyp maps no memory it does not own: each piece is reached
        // through this CPU's window while it is zeroed.
        window::for_each_chunk(pa, size, |va, len| {
            // SAFETY: the core unmapped [pa, pa + size) from the guest (with
            // TLB invalidation) and has not given it to the host yet; the
            // window maps this piece at `va` (page-aligned) as normal memory.
            unsafe { zero(va, len) };
        });
    }
    fn dcache_clean_inval_poc(&mut self, pa: u64, size: u64) {
        let line = dcache_line();
        // Through this CPU's window, as for scrub.
        window::for_each_chunk(pa, size, |va, len| {
            let mut a = va & !(line - 1);
            while a < va + len {
                // SAFETY: cache maintenance by VA on normal memory the window
                // maps (a line never crosses a page); it changes no data.
                unsafe { core::arch::asm!("dc civac, {0}", in(reg) a, options(nostack)) };
                a += line;
            }
        });
        barrier::dsb(barrier::ISH);
    }
    fn icache_inval_pou(&mut self, _pa: u64, _size: u64) {
        // The D-side is clean to PoC (so to PoU) and complete (DSB above).
        if crate::read_sysreg!("ctr_el0") & CTR_DIC == 0 {
            // SAFETY: instruction cache maintenance only.
            unsafe { core::arch::asm!("ic ialluis", options(nostack)) };
        }
        barrier::dsb(barrier::ISH);
        barrier::isb(barrier::SY);
    }
}
