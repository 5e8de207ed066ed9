//! Idling host CPUs: while it has no vCPU to run, a host CPU sleeps in WFI
//! until its own virtual timer (PPI 27) is due, instead of spinning (under
//! QEMU a sleeping CPU costs no host time; a spinning one takes it from the
//! CPUs with work). The timer's interrupt only ends the WFI: IRQs stay
//! masked at the shim's PSTATE and the timer is turned off after the wake,
//! which drops the level-sensitive line (nothing to acknowledge).

use core::sync::atomic::{AtomicU64, Ordering};

static GICR: AtomicU64 = AtomicU64::new(0);
const GICR_STRIDE: u64 = 0x2_0000;
const SGI_ISENABLER0: u64 = 0x1_0100;
const SGI_IGROUPR0: u64 = 0x1_0080;
const SGI_IGRPMODR0: u64 = 0x1_0d00;
const VTIMER_PPI: u32 = 27;

/// Records the host's redistributor region (QEMU `virt`: one 128 KiB frame
/// per CPU, in MPIDR Aff0 order).
pub fn set_redistributors(base: Option<u64>) {
    GICR.store(base.unwrap_or(0), Ordering::Relaxed);
}

/// The SGI one host CPU sends another to kick the vCPU running there out
/// of the guest (an interrupt was raised for it): the physical interrupt
/// makes the vCPU exit (or the hyp injects the new interrupt at once), as
/// KVM's vCPU kick does.
pub const KICK_SGI: u32 = 8;

/// Enables this CPU's kick SGI in its redistributor and opens its CPU
/// interface (priority mask 0xff, group 1); the shim's PSTATE keeps IRQs
/// masked, so the SGI only ends a WFI or, while a guest runs (IRQs are the
/// hyp's then), makes it exit.
pub fn enable_kick() {
    let gicr = GICR.load(Ordering::Relaxed);
    if gicr == 0 {
        return;
    }
    let cpu = el1_rt::smp::cpu_index() as u64;
    // SAFETY: this CPU's redistributor SGI frame (ISENABLER0 sets enables
    // only).
    unsafe {
        // Non-secure group 1 (IGROUPR0 set, IGRPMODR0 clear), as the hyp
        // sets its own PPIs: group 0 would be signalled as an FIQ.
        let frame = gicr + cpu * GICR_STRIDE;
        let group = (frame + SGI_IGROUPR0) as *mut u32;
        core::ptr::write_volatile(group, core::ptr::read_volatile(group) | 1 << KICK_SGI);
        let modr = (frame + SGI_IGRPMODR0) as *mut u32;
        core::ptr::write_volatile(modr, core::ptr::read_volatile(modr) & !(1 << KICK_SGI));
        core::ptr::write_volatile((frame + SGI_ISENABLER0) as *mut u32, 1 << KICK_SGI);
    }
    open_cpu_interface();
}

/// Opens this CPU's GIC CPU interface: system-register access, priority
/// mask 0xff, group 1 on. With IRQs masked at PSTATE an interrupt it
/// signals only ends a WFI (or, while a guest runs, takes the CPU to EL2).
fn open_cpu_interface() {
    // SAFETY: this CPU's own GIC CPU interface registers; no memory effects.
    unsafe {
        core::arch::asm!(
            "mrs {t}, s3_0_c12_c12_5",   // ICC_SRE_EL1
            "orr {t}, {t}, #1",
            "msr s3_0_c12_c12_5, {t}",
            "isb",
            "msr s3_0_c4_c6_0, {pmr}",   // ICC_PMR_EL1
            "msr s3_0_c12_c12_7, {one}", // ICC_IGRPEN1_EL1
            "isb",
            t = out(reg) _,
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            options(nostack)
        );
    }
}

/// Kicks the host CPUs of `targets` (Aff0 bits).
pub fn kick(targets: u16) {
    if targets != 0 && GICR.load(Ordering::Relaxed) != 0 {
        el1_rt::gic::send_sgi(KICK_SGI, targets);
    }
}

/// Acknowledges and ends every kick pending at this CPU (after an exit,
/// before the next run or nap, so a kick already served does not bring
/// the vCPU straight back out).
pub fn drain_kicks() {
    if GICR.load(Ordering::Relaxed) == 0 {
        return;
    }
    loop {
        let intid = el1_rt::gic::ack();
        if intid >= 1020 {
            return;
        }
        el1_rt::gic::eoi(intid);
    }
}

/// Sleeps until the virtual counter reaches `until` (or about `max_ticks`
/// from now, whichever is first); spins if the GIC is unknown.
pub fn nap(until: u64, max_ticks: u64) {
    let now = el1_rt::gic::counter().0;
    let end = until.min(now.saturating_add(max_ticks));
    let gicr = GICR.load(Ordering::Relaxed);
    if gicr == 0 {
        while el1_rt::gic::counter().0 < end {
            core::hint::spin_loop();
        }
        return;
    }
    let cpu = el1_rt::smp::cpu_index() as u64;
    // SAFETY: this CPU's redistributor SGI frame (ISENABLER0 sets enables
    // only).
    unsafe { core::ptr::write_volatile((gicr + cpu * GICR_STRIDE + SGI_ISENABLER0) as *mut u32, 1 << VTIMER_PPI) };
    open_cpu_interface();
    // SAFETY: this CPU's virtual timer: its PPI (group 1, any priority)
    // ends the WFI even with IRQs masked at PSTATE; the timer is off again
    // on return, which drops its level-sensitive line.
    unsafe {
        core::arch::asm!(
            "msr cntv_cval_el0, {end}",
            "msr cntv_ctl_el0, {one}",
            "isb",
            "wfi",
            "msr cntv_ctl_el0, xzr",
            "isb",
            one = in(reg) 1u64,
            end = in(reg) end,
            options(nostack)
        );
    }
}
