//! A guest's view of a GICv3 on QEMU `virt` (distributor at 0x0800_0000,
//! redistributors from 0x080A_0000, 128 KiB each; the CPU interface through
//! the ICC system registers): enough to enable, prioritise and route
//! interrupts, take them and send SGIs. Also the virtual timer.

use core::ptr::{read_volatile, write_volatile};

pub const GICD: u64 = 0x0800_0000;
pub const GICR: u64 = 0x080A_0000;
pub const GICR_STRIDE: u64 = 0x2_0000;
const SGI_FRAME: u64 = 0x1_0000;
/// The virtual timer's PPI.
pub const VTIMER: u32 = 27;
/// ICC_IAR1_EL1's answer when nothing is pending.
pub const SPURIOUS: u32 = 1023;

fn rd(a: u64) -> u32 {
    // SAFETY: a GIC register in the identity-mapped device window.
    unsafe { read_volatile(a as *const u32) }
}

fn wr(a: u64, v: u32) {
    // SAFETY: as rd.
    unsafe { write_volatile(a as *mut u32, v) }
}

fn wr8(a: u64, v: u8) {
    // SAFETY: as rd (IPRIORITYR is byte-accessible).
    unsafe { write_volatile(a as *mut u8, v) }
}

/// The distributor on: affinity routing, group 1.
pub fn init_dist() {
    wr(GICD, (1 << 4) | (1 << 1));
}

/// Wakes CPU `cpu`'s redistributor and opens its CPU interface: priority
/// mask 0xff, group 1 on.
pub fn init_cpu(cpu: usize) {
    let rd_base = GICR + cpu as u64 * GICR_STRIDE;
    wr(rd_base + 0x14, rd(rd_base + 0x14) & !(1 << 1));
    while rd(rd_base + 0x14) & (1 << 2) != 0 {}
    // SAFETY: the GIC CPU interface registers of this (virtual) CPU.
    unsafe {
        core::arch::asm!(
            "msr s3_0_c4_c6_0, {pmr}",   // ICC_PMR_EL1
            "msr s3_0_c12_c12_7, {one}", // ICC_IGRPEN1_EL1
            "isb",
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
        )
    };
}

/// Enables `intid` at `prio` (SGIs/PPIs on CPU `cpu`'s redistributor,
/// SPIs in the distributor routed to `cpu`).
pub fn enable(cpu: usize, intid: u32, prio: u8) {
    if intid < 32 {
        let sgi = GICR + cpu as u64 * GICR_STRIDE + SGI_FRAME;
        wr8(sgi + 0x400 + intid as u64, prio);
        wr(sgi + 0x100, 1 << intid);
    } else {
        wr8(GICD + 0x400 + intid as u64, prio);
        // SAFETY: GICD_IROUTER<n> is a 64-bit register.
        unsafe { write_volatile((GICD + 0x6000 + 8 * intid as u64) as *mut u64, cpu as u64) };
        wr(GICD + 0x100 + 4 * (intid as u64 / 32), 1 << (intid % 32));
    }
}

pub fn disable(cpu: usize, intid: u32) {
    if intid < 32 {
        wr(GICR + cpu as u64 * GICR_STRIDE + SGI_FRAME + 0x180, 1 << intid);
    } else {
        wr(GICD + 0x180 + 4 * (intid as u64 / 32), 1 << (intid % 32));
    }
}

/// Acknowledges the highest-priority pending interrupt (ICC_IAR1_EL1).
pub fn ack() -> u32 {
    let v: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt; the caller ends it.
    unsafe { core::arch::asm!("mrs {}, s3_0_c12_c12_0", out(reg) v) };
    v as u32
}

/// Ends (drops priority and deactivates) `intid` (ICC_EOIR1_EL1).
pub fn eoi(intid: u32) {
    // SAFETY: ends an interrupt this CPU acknowledged.
    unsafe { core::arch::asm!("msr s3_0_c12_c12_1, {}", "isb", in(reg) intid as u64) };
}

/// Sends SGI `intid` to the CPUs of `targets` (Aff0 bits; Aff1-3 = 0).
pub fn send_sgi(intid: u32, targets: u16) {
    let v = ((intid as u64 & 0xf) << 24) | targets as u64;
    // SAFETY: ICC_SGI1R_EL1 generates SGIs; it has no other effect.
    unsafe { core::arch::asm!("msr s3_0_c12_c11_5, {}", "isb", in(reg) v) };
}

/// Unmasks IRQs at this CPU (PSTATE.I).
pub fn irqs_on() {
    // SAFETY: the payload has installed its IRQ handler.
    unsafe { core::arch::asm!("msr daifclr, #2") };
}

pub fn irqs_off() {
    // SAFETY: masking IRQs has no other effect.
    unsafe { core::arch::asm!("msr daifset, #2") };
}

/// The virtual counter and its frequency.
pub fn counter() -> (u64, u64) {
    let (now, freq): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effect.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) now, out(reg) freq) };
    (now, freq)
}

/// Arms the virtual timer for counter value `cval` (enabled, unmasked).
pub fn timer_at(cval: u64) {
    // SAFETY: the virtual timer is this (virtual) CPU's.
    unsafe { core::arch::asm!("msr cntv_cval_el0, {}", "msr cntv_ctl_el0, {}", "isb", in(reg) cval, in(reg) 1u64) };
}

/// Masks the virtual timer's interrupt, keeping it enabled (what Linux's
/// handler does).
pub fn timer_mask() {
    // SAFETY: as timer_at.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, {}", "isb", in(reg) 3u64) };
}

pub fn timer_off() {
    // SAFETY: as timer_at.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb") };
}
