//! Injecting synchronous exceptions into the EL1 context that trapped, as
//! the hardware would take them to EL1 (Arm ARM D1.3 "Exception entry").
//! The current EL1 registers must belong to that context (they do: they
//! are switched with it). Tracing is the caller's.
//!
//! The context's PC and PSTATE are where its entry left them
//! ([`ReturnState`]): in its trap frame, or still in ELR_EL2/SPSR_EL2 for
//! the short host-abort entry (vectors.S), which saves neither.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use hyp_abi::esr::{Esr, EC_DABT_CUR, EC_DABT_LOW, EC_IABT_CUR, EC_IABT_LOW};

use super::frame::TrapFrame;

use hyp_core::emul::exception::{entry_pstate, vector_offset, M_AARCH32, M_EL0T, M_MASK};

/// Fault status: synchronous external abort.
const FSC_SEA: u64 = 0x10;
const IL: u64 = 1 << 25;
const WNR: u64 = 1 << 6;

/// Where the PC and PSTATE the trapped context returns to are kept.
pub trait ReturnState {
    /// (PC, PSTATE) it returns to.
    fn get(&self) -> (u64, u64);
    /// Makes it return to `pc` with `pstate`.
    fn set(&mut self, pc: u64, pstate: u64);
}

impl ReturnState for TrapFrame {
    #[inline(always)]
    fn get(&self) -> (u64, u64) {
        (self.elr, self.spsr)
    }

    #[inline(always)]
    fn set(&mut self, pc: u64, pstate: u64) {
        self.elr = pc;
        self.spsr = pstate;
    }
}

/// ELR_EL2 and SPSR_EL2 themselves: a short entry saved neither, and EL2
/// runs with every exception masked, so they hold the trapped context's
/// until the entry's ERET.
pub struct Live;

impl ReturnState for Live {
    #[inline(always)]
    fn get(&self) -> (u64, u64) {
        (ELR_EL2.get(), SPSR_EL2.get())
    }

    #[inline(always)]
    fn set(&mut self, pc: u64, pstate: u64) {
        ELR_EL2.set(pc);
        SPSR_EL2.set(pstate);
    }
}

fn enter_el1_vector(ret: &mut impl ReturnState, esr_el1: u64, far: u64) {
    let sctlr = SCTLR_EL1.get();
    let (pc, pstate) = ret.get();
    ESR_EL1.set(esr_el1);
    FAR_EL1.set(far);
    ELR_EL1.set(pc);
    SPSR_EL1.set(pstate);
    ret.set(VBAR_EL1.get() + vector_offset(pstate), entry_pstate(pstate, sctlr));
}

fn from_lower(spsr: u64) -> bool {
    spsr & M_AARCH32 != 0 || spsr & M_MASK == M_EL0T
}

/// An external abort for the access described by `esr` (a lower-EL
/// instruction or data abort) at `far`.
pub fn inject_abort(ret: &mut impl ReturnState, esr: Esr, far: u64) {
    let lower = from_lower(ret.get().1);
    let ec = match (esr.ec() == EC_IABT_LOW, lower) {
        (true, true) => EC_IABT_LOW,
        (true, false) => EC_IABT_CUR,
        (false, true) => EC_DABT_LOW,
        (false, false) => EC_DABT_CUR,
    } as u64;
    let wnr = if esr.is_data_abort() { esr.0 & WNR } else { 0 };
    enter_el1_vector(ret, (ec << 26) | IL | wnr | FSC_SEA, far);
}

/// An undefined-instruction exception at the trapping instruction.
pub fn inject_undef(frame: &mut TrapFrame) {
    enter_el1_vector(frame, IL, 0);
}
