//! The few GICv3 distributor and redistributor registers the hyp itself
//! needs: its preemption timer (the EL2 physical timer, PPI 10 = INTID 26)
//! and the virtual interface's maintenance interrupt (PPI 9 = INTID 25)
//! must be able to interrupt a guest, whatever the host did with the GIC;
//! the virtual timer's PPI (INTID 27, the host's and every guest's) is
//! enabled while a guest runs only when its interrupt can be injected, and
//! the host's setting comes back at every exit. Everything else of the GIC
//! belongs to the host.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

/// INTID of the EL2 physical timer (PPI 10) on QEMU virt and in the Arm
/// Base System Architecture.
pub const HYP_TIMER_INTID: u32 = 26;
/// INTID of the GICv3 maintenance interrupt (PPI 9) on QEMU virt and in the BSA.
pub const MAINTENANCE_INTID: u32 = 25;
/// INTID of the EL1 virtual timer (PPI 11).
pub const VTIMER_INTID: u32 = 27;

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
        (0x100 => isenabler0: ReadWrite<u32>),
        (0x104 => _reserved2a),
        (0x180 => icenabler0: WriteOnly<u32>),
        (0x184 => _reserved2),
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
            // The hyp's two PPIs and the virtual timer's: non-secure group 1
            // (what a host GIC driver sets too); the hyp's at the highest
            // priority, enabled.
            let hyp = (1u32 << HYP_TIMER_INTID) | (1 << MAINTENANCE_INTID);
            let bits = hyp | (1 << VTIMER_INTID);
            s.igroupr0.set(s.igroupr0.get() | bits);
            s.igrpmodr0.set(s.igrpmodr0.get() & !bits);
            s.ipriorityr[HYP_TIMER_INTID as usize].set(0);
            s.ipriorityr[MAINTENANCE_INTID as usize].set(0);
            s.isenabler0.set(hyp);
            return Some(sgi);
        }
        if typer & TYPER_LAST != 0 {
            break;
        }
        rd += 2 * FRAME;
    }
    None
}

/// Enables the hyp timer's and the maintenance PPIs again (the host's GIC
/// driver may have disabled every PPI when it initialised its CPU), and
/// returns whether the host had the virtual timer's PPI enabled.
///
/// # Safety
/// `sgi` came from [`init_redist`] on this CPU.
pub unsafe fn enable_hyp_ppis(sgi: u64) -> bool {
    // SAFETY: per the function contract.
    let s = unsafe { &*(sgi as *const SgiFrame) };
    let host = s.isenabler0.get() & (1 << VTIMER_INTID) != 0;
    s.isenabler0.set((1 << HYP_TIMER_INTID) | (1 << MAINTENANCE_INTID));
    host
}

/// Enables or disables the virtual timer's PPI on this CPU.
///
/// # Safety
/// `sgi` came from [`init_redist`] on this CPU.
pub unsafe fn set_vtimer_ppi(sgi: u64, on: bool) {
    // SAFETY: per the function contract.
    let s = unsafe { &*(sgi as *const SgiFrame) };
    if on {
        s.isenabler0.set(1 << VTIMER_INTID);
    } else {
        s.icenabler0.set(1 << VTIMER_INTID);
    }
}
