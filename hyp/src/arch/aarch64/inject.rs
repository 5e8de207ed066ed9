//! Injecting synchronous exceptions into the EL1 context that trapped.
//! The current EL1 registers must belong to that context (they do: they
//! are switched with it).

use hyp::esr::{Esr, EC_DABT_CUR, EC_DABT_LOW, EC_IABT_CUR, EC_IABT_LOW};

use super::trap::TrapFrame;

/// SPSR.M values.
const M_EL0T: u64 = 0b0000;
const M_EL1T: u64 = 0b0100;
/// Vector offsets from VBAR_EL1.
const VEC_CUR_SP0: u64 = 0x000;
const VEC_CUR_SPX: u64 = 0x200;
const VEC_LOWER_A64: u64 = 0x400;
/// Fault status: synchronous external abort.
const FSC_SEA: u64 = 0x10;
const IL: u64 = 1 << 25;
const WNR: u64 = 1 << 6;

fn enter_el1_vector(frame: &mut TrapFrame, esr_el1: u64, far: u64) {
    let m = frame.spsr & 0xf;
    let off = match m {
        M_EL0T => VEC_LOWER_A64,
        M_EL1T => VEC_CUR_SP0,
        _ => VEC_CUR_SPX,
    };
    crate::write_sysreg!("esr_el1", esr_el1);
    crate::write_sysreg!("far_el1", far);
    crate::write_sysreg!("elr_el1", frame.elr);
    crate::write_sysreg!("spsr_el1", frame.spsr);
    frame.elr = crate::read_sysreg!("vbar_el1") + off;
    frame.spsr = crate::boot::SPSR_EL1H_DAIF_MASKED;
}

/// An external abort for the access described by `esr` (a lower-EL
/// instruction or data abort) at `far`.
pub fn inject_abort(frame: &mut TrapFrame, esr: Esr, far: u64) {
    let from_el0 = frame.spsr & 0xf == M_EL0T;
    let ec = match (esr.ec() == EC_IABT_LOW, from_el0) {
        (true, true) => EC_IABT_LOW,
        (true, false) => EC_IABT_CUR,
        (false, true) => EC_DABT_LOW,
        (false, false) => EC_DABT_CUR,
    } as u64;
    let wnr = if esr.is_data_abort() { esr.0 & WNR } else { 0 };
    let (who, vcpu) = match crate::percpu::this_cpu().running {
        crate::percpu::Running::Host => (0, 0),
        crate::percpu::Running::Guest(h, v) => (h, v),
    };
    crate::tracebuf::point::inject(who, vcpu, esr.0, far, frame.elr);
    enter_el1_vector(frame, (ec << 26) | IL | wnr | FSC_SEA, far);
}

/// An undefined-instruction exception at the trapping instruction.
pub fn inject_undef(frame: &mut TrapFrame) {
    enter_el1_vector(frame, IL, 0);
}
