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
const VTIMER_PPI: u32 = 27;

/// Records the host's redistributor region (QEMU `virt`: one 128 KiB frame
/// per CPU, in MPIDR Aff0 order).
pub fn set_redistributors(base: Option<u64>) {
    GICR.store(base.unwrap_or(0), Ordering::Relaxed);
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
    // only) and its own CPU interface and virtual timer: the CPU interface
    // signals the timer's PPI (group 1, any priority), which ends a WFI
    // even with IRQs masked at PSTATE. The timer is off again on return.
    unsafe {
        core::ptr::write_volatile((gicr + cpu * GICR_STRIDE + SGI_ISENABLER0) as *mut u32, 1 << VTIMER_PPI);
        core::arch::asm!(
            "mrs {t}, s3_0_c12_c12_5",   // ICC_SRE_EL1
            "orr {t}, {t}, #1",
            "msr s3_0_c12_c12_5, {t}",
            "isb",
            "msr s3_0_c4_c6_0, {pmr}",   // ICC_PMR_EL1
            "msr s3_0_c12_c12_7, {one}", // ICC_IGRPEN1_EL1
            "msr cntv_cval_el0, {end}",
            "msr cntv_ctl_el0, {one}",
            "isb",
            "wfi",
            "msr cntv_ctl_el0, xzr",
            "isb",
            t = out(reg) _,
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            end = in(reg) end,
            options(nostack)
        );
    }
}
