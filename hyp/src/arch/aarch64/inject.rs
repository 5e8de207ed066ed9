//! Injecting synchronous exceptions into the EL1 context that trapped, as
//! the hardware would take them to EL1 (Arm ARM D1.3 "Exception entry").
//! The current EL1 registers must belong to that context (they do: they
//! are switched with it). Tracing is the caller's.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use hyp::esr::{Esr, EC_DABT_CUR, EC_DABT_LOW, EC_IABT_CUR, EC_IABT_LOW};

use super::trap::TrapFrame;

use hyp::exception::{entry_pstate, vector_offset, M_AARCH32, M_EL0T, M_MASK};

/// Fault status: synchronous external abort.
const FSC_SEA: u64 = 0x10;
const IL: u64 = 1 << 25;
const WNR: u64 = 1 << 6;

fn enter_el1_vector(frame: &mut TrapFrame, esr_el1: u64, far: u64) {
    let sctlr = SCTLR_EL1.get();
    ESR_EL1.set(esr_el1);
    FAR_EL1.set(far);
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    frame.elr = VBAR_EL1.get() + vector_offset(frame.spsr);
    frame.spsr = entry_pstate(frame.spsr, sctlr);
}

fn from_lower(spsr: u64) -> bool {
    spsr & M_AARCH32 != 0 || spsr & M_MASK == M_EL0T
}

/// An external abort for the access described by `esr` (a lower-EL
/// instruction or data abort) at `far`.
pub fn inject_abort(frame: &mut TrapFrame, esr: Esr, far: u64) {
    let lower = from_lower(frame.spsr);
    let ec = match (esr.ec() == EC_IABT_LOW, lower) {
        (true, true) => EC_IABT_LOW,
        (true, false) => EC_IABT_CUR,
        (false, true) => EC_DABT_LOW,
        (false, false) => EC_DABT_CUR,
    } as u64;
    let wnr = if esr.is_data_abort() { esr.0 & WNR } else { 0 };
    enter_el1_vector(frame, (ec << 26) | IL | wnr | FSC_SEA, far);
}

/// An undefined-instruction exception at the trapping instruction.
pub fn inject_undef(frame: &mut TrapFrame) {
    enter_el1_vector(frame, IL, 0);
}
