//! The EL2 physical timer (CNTHP), the hyp's preemption timer: armed while
//! a guest runs, so a guest cannot keep a CPU from the host whatever its
//! PSTATE (its interrupt is a physical IRQ, taken to EL2 while a guest runs).

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use super::sysreg::CNTHP_CVAL_EL2;

/// A guest's time slice: 10 ms of the system counter.
#[inline(always)]
pub fn slice_ticks() -> u64 {
    CNTFRQ_EL0.get() / 100
}

#[inline(always)]
pub fn now() -> u64 {
    CNTPCT_EL0.get()
}

/// The system counter in nanoseconds since it started (at reset). Under
/// QEMU's `-icount shift=0` one nanosecond is one instruction.
pub fn now_ns() -> u64 {
    let f = CNTFRQ_EL0.get().max(1);
    (now() as u128 * 1_000_000_000 / f as u128) as u64
}

/// Fires at `deadline` (system counter).
#[inline(always)]
pub fn arm(deadline: u64) {
    CNTHP_CVAL_EL2.set(deadline);
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET);
}

/// Has the timer fired (the slice or the host's deadline is over)?
#[inline(always)]
pub fn fired() -> bool {
    CNTHP_CTL_EL2.is_set(CNTHP_CTL_EL2::ISTATUS)
}

/// Stops the timer (its interrupt line drops); true if it had fired.
#[inline(always)]
pub fn disarm() -> bool {
    let fired = CNTHP_CTL_EL2.is_set(CNTHP_CTL_EL2::ISTATUS);
    CNTHP_CTL_EL2.set(0);
    fired
}
