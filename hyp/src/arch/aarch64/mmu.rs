//! The hyp's own EL2 stage-1: a fixed identity map with 1 GiB blocks,
//! device memory below 1 GiB (QEMU `virt` puts its devices there), normal
//! write-back memory above. The hyp needs to reach its own memory, the DTB,
//! the host's images and every guest page it scrubs; which of them it may
//! touch is decided by the ownership tables, not by this map.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

#[repr(C, align(4096))]
struct Table([u64; 512]);

static mut L1: Table = Table([0; 512]);

const BLOCK: u64 = 0b01;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
const XN: u64 = 1 << 54;
/// TCR_EL2 bits 31 and 23 are RES1 (E2H = 0).
const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);
/// SCTLR_EL2 RES1 bits (E2H = 0): 4, 5, 11, 16, 18, 22, 23, 28, 29.
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;

/// Byte range covered by the device block.
pub const DEVICE_LIMIT: u64 = 1 << 30;

/// Builds the identity map (boot CPU, once) and turns the MMU and caches on.
pub fn enable() {
    // SAFETY: runs once on the boot CPU before anything else uses L1; the
    // MMU is off so nothing walks the table while it is written.
    let table = unsafe { &mut *core::ptr::addr_of_mut!(L1) };
    for (i, e) in table.0.iter_mut().enumerate() {
        let base = (i as u64) << 30;
        *e = if base < DEVICE_LIMIT {
            base | BLOCK | ATTR_DEVICE | AF | XN
        } else {
            base | BLOCK | ATTR_NORMAL | SH_INNER | AF
        };
    }
    enable_this_cpu();
}

/// Turns the MMU on with the (already built) identity map: secondary CPUs.
pub fn enable_this_cpu() {
    // SAFETY: the table is built and never written again.
    let table = unsafe { &*core::ptr::addr_of!(L1) };
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    TCR_EL2.write(
        TCR_EL2::T0SZ.val(25)
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::PS::Bits_40,
    );
    TCR_EL2.set(TCR_EL2.get() | TCR_EL2_RES1);
    TTBR0_EL2.set_baddr(table.0.as_ptr() as u64);
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating the EL2 TLB has no effect on memory.
    unsafe { core::arch::asm!("tlbi alle2", "dsb ish", "isb") };
    SCTLR_EL2.set(SCTLR_EL2_RES1);
    SCTLR_EL2.modify(SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable + SCTLR_EL2::SA::Enable);
    barrier::isb(barrier::SY);
}

/// Is `[pa, pa + len)` mapped as normal memory by [`enable`]?
pub fn is_normal(pa: u64, len: u64) -> bool {
    pa >= DEVICE_LIMIT && pa.checked_add(len).is_some_and(|e| e <= 1 << 39)
}
