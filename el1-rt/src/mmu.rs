//! An identity map for EL1 with 1 GiB blocks: device memory below 1 GiB
//! and at 256 GiB (QEMU virt's high PCIe ECAM, 0x40_1000_0000), normal
//! write-back memory elsewhere.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

#[repr(C, align(4096))]
struct Table([u64; 512]);
static mut L1: Table = Table([0; 512]);
/// The 1 GiB block of QEMU virt's high MMIO (ECAM), beyond any RAM the
/// xtask allows (255 GiB from 1 GiB).
const DEVICE_HIGH: usize = 256;

pub fn enable() {
    // SAFETY: runs once at start, MMU off, nothing else uses the table.
    let t = unsafe { &mut *core::ptr::addr_of_mut!(L1) };
    for (i, e) in t.0.iter_mut().enumerate() {
        let base = (i as u64) << 30;
        // Block, AttrIndx, SH inner (normal), AF, UXN|PXN for device.
        *e = if i == 0 || i == DEVICE_HIGH {
            base | 0b01 | (1 << 10) | (3 << 53)
        } else {
            base | 0b01 | (1 << 2) | (3 << 8) | (1 << 10)
        };
    }
    enable_this_cpu();
}

/// Turns the MMU on with the table [`enable`] built (secondary CPUs).
pub fn enable_this_cpu() {
    // SAFETY: the table is built and no longer written.
    let t = unsafe { &*core::ptr::addr_of!(L1) };
    MAIR_EL1.write(
        MAIR_EL1::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL1::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    TCR_EL1.write(
        TCR_EL1::T0SZ.val(25)
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::SH0::Inner
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::IPS::Bits_40,
    );
    TTBR0_EL1.set_baddr(t.0.as_ptr() as u64);
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    SCTLR_EL1.modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable);
    barrier::isb(barrier::SY);
}
