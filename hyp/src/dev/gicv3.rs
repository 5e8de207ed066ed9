//! The few GICv3 distributor and redistributor registers the hyp itself
//! needs: its preemption timer (the EL2 physical timer, PPI 10 = INTID 26)
//! must be able to interrupt a guest, whatever the host did with the GIC.
//! Everything else of the GIC belongs to the host.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

/// INTID of the EL2 physical timer (PPI 10) on QEMU virt and in the Arm
/// Base System Architecture.
pub const HYP_TIMER_INTID: u32 = 26;

register_bitfields! [u32,
    GICD_CTLR [
        /// Register write pending.
        RWP OFFSET(31) NUMBITS(1) [],
        /// Affinity routing (ARE_NS from the non-secure view).
        ARE OFFSET(4) NUMBITS(1) [],
        /// Group 1 (non-secure) interrupts enabled.
        ENABLE_GRP1 OFFSET(1) NUMBITS(1) []
    ],
    GICR_WAKER [
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) []
    ]
];

register_structs! {
    Dist {
        (0x000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x004 => @END),
    }
}

register_structs! {
    /// RD_base frame.
    RdFrame {
        (0x000 => _ctlr: ReadWrite<u32>),
        (0x004 => _iidr: ReadOnly<u32>),
        (0x008 => typer: ReadOnly<u64>),
        (0x010 => _statusr: ReadWrite<u32>),
        (0x014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x018 => @END),
    }
}

register_structs! {
    /// SGI_base frame (RD_base + 64 KiB).
    SgiFrame {
        (0x000 => _reserved0),
        (0x080 => igroupr0: ReadWrite<u32>),
        (0x084 => _reserved1),
        (0x100 => isenabler0: WriteOnly<u32>),
        (0x104 => _reserved2),
        (0x400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x420 => _reserved3),
        (0xd00 => igrpmodr0: ReadWrite<u32>),
        (0xd04 => @END),
    }
}

const FRAME: u64 = 0x1_0000;
/// GICR_TYPER.Last: the last redistributor of the region.
const TYPER_LAST: u64 = 1 << 4;

/// Sets the distributor up for non-secure group 1 with affinity routing if
/// the host has not yet (it will again itself: the same values).
///
/// # Safety
/// `base` is the GIC distributor, mapped as device memory at EL2.
pub unsafe fn init_dist(base: u64) {
    // SAFETY: per the function contract.
    let d = unsafe { &*(base as *const Dist) };
    if !d.ctlr.is_set(GICD_CTLR::ARE) {
        d.ctlr.write(GICD_CTLR::ARE::SET);
        while d.ctlr.is_set(GICD_CTLR::RWP) {}
    }
    if !d.ctlr.is_set(GICD_CTLR::ENABLE_GRP1) {
        d.ctlr.set(d.ctlr.get() | GICD_CTLR::ENABLE_GRP1::SET.value);
        while d.ctlr.is_set(GICD_CTLR::RWP) {}
    }
}

/// Finds this CPU's redistributor in `[base, base + size)` by its affinity
/// (GICR_TYPER[63:32] against MPIDR's Aff3..Aff0), wakes it, and configures
/// the hyp timer's PPI (group 1, highest priority, enabled). Returns the
/// SGI_base frame address, for [`enable_hyp_timer`].
///
/// # Safety
/// The region is the GIC's redistributor region, mapped as device memory at EL2.
pub unsafe fn init_redist(base: u64, size: u64, mpidr: u64) -> Option<u64> {
    let aff = (mpidr & 0xff_ffff) | ((mpidr >> 8) & 0xff00_0000);
    let mut rd = base;
    while rd + 2 * FRAME <= base + size {
        // SAFETY: rd is a redistributor frame inside the region (contract).
        let f = unsafe { &*(rd as *const RdFrame) };
        let typer = f.typer.get();
        if typer >> 32 == aff {
            f.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
            while f.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP) {}
            let sgi = rd + FRAME;
            // SAFETY: the SGI frame follows the RD frame.
            let s = unsafe { &*(sgi as *const SgiFrame) };
            let bit = 1u32 << HYP_TIMER_INTID;
            s.igroupr0.set(s.igroupr0.get() | bit);
            s.igrpmodr0.set(s.igrpmodr0.get() & !bit);
            s.ipriorityr[HYP_TIMER_INTID as usize].set(0);
            s.isenabler0.set(bit);
            return Some(sgi);
        }
        if typer & TYPER_LAST != 0 {
            break;
        }
        rd += 2 * FRAME;
    }
    None
}

/// Enables the hyp timer's PPI again (the host's GIC driver may have
/// disabled every PPI when it initialised its CPU). One register write.
///
/// # Safety
/// `sgi` came from [`init_redist`] on this CPU.
pub unsafe fn enable_hyp_timer(sgi: u64) {
    // SAFETY: per the function contract.
    let s = unsafe { &*(sgi as *const SgiFrame) };
    s.isenabler0.set(1 << HYP_TIMER_INTID);
}
