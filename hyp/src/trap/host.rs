//! Traps from the host: hypercalls (HVC), firmware calls (SMC, relayed
//! PSCI) and stage-2 faults (lazy identity map, emulated MMIO, or an abort
//! injected).

use aarch64_cpu::registers::*;
use log::debug;

use hyp_abi::esr::{Esr, EC_DABT_LOW, EC_HVC64, EC_IABT_LOW, EC_SMC64};
use hyp_core::emul::exception::{fault_kind, FaultKind};
use hyp_core::mm::mem_protect::{HostFault, Pa};

use crate::arch::aarch64::frame::{fault_ipa, Next, TrapFrame};
use crate::arch::aarch64::inject::{self, Live, ReturnState};
use crate::hyp_env::HypEnv;
use crate::tracebuf::{self, point};
use crate::{hypercall, owners};
use hyp_abi::trace::{Kind, Resolution};

/// A synchronous exception from the host on the full frame. Out of line:
/// `hyp_trap` (every full-frame host exception) keeps a small prologue;
/// inlined there, it cost the interrupt paths ~6 instructions a trap.
#[inline(never)]
pub fn handle_sync(frame: &mut TrapFrame) -> Next {
    let esr = Esr(ESR_EL2.get());
    match esr.ec() {
        EC_HVC64 => return hypercall::host::handle(frame),
        EC_SMC64 => {
            // A trapped SMC returns to the SMC itself: step over it.
            frame.elr = hyp_core::emul::exception::pc_advance(frame.elr, 4);
            hypercall::psci::handle_host_smc(frame);
        }
        EC_DABT_LOW | EC_IABT_LOW => {
            let (ipa, far) = fault_ipa();
            if crate::trap::host_gicr::covers(ipa) {
                crate::trap::host_gicr::emulate(frame, esr, ipa, far);
            } else {
                stage2_fault(frame, esr, ipa, far);
            }
        }
        _ => {
            debug!("host: unexpected trap {} at {:#x}: undefined instruction injected", esr, frame.elr);
            inject::inject_undef(frame);
        }
    }
    Next::RESUME
}

/// A host stage-2 abort from the short entry (vectors.S: x0-x18 and x30
/// saved, ELR_EL2 and SPSR_EL2 live): 1 once resolved or refused with its
/// abort injected; 0, having done nothing, for an access to a page the hyp
/// emulates (the GIC redistributors: their emulation reads or writes the
/// register the access names, any of x0-x30), which the entry then hands
/// to `hyp_trap` with the full frame.
#[inline(always)]
pub fn handle_abort_short() -> u64 {
    let esr = Esr(ESR_EL2.get());
    let (ipa, far) = fault_ipa();
    if crate::trap::host_gicr::covers(ipa) {
        return 0;
    }
    stage2_fault(&mut Live, esr, ipa, far);
    1
}

/// A host stage-2 fault, decided from its syndrome: only a translation
/// fault can be resolved (lazy identity map, or refused: abort); an
/// access-flag fault means a stale TLB entry (the hyp always sets AF) and is
/// retried; a permission fault (e.g. a fetch from a page mapped XN for the
/// host: a page a guest shared, a device) or any other fault is refused
/// with an abort, never retried. `ret` holds the host's PC and PSTATE (its
/// frame, or ELR_EL2/SPSR_EL2 on the short entry).
#[inline(always)]
fn stage2_fault(ret: &mut impl ReturnState, esr: Esr, ipa: u64, far: u64) {
    let r = match fault_kind(esr.fsc()) {
        FaultKind::Translation(_) => {
            owners::host().handle_fault(&mut HypEnv, Pa(ipa)).map_err(hyp_core::mm::Error::from)
        }
        FaultKind::AccessFlag(_) => Ok(HostFault::Spurious),
        FaultKind::Permission(_) | FaultKind::Other(_) => Err(hyp_core::mm::Error::Perm),
    };
    match r {
        Ok(HostFault::Mapped { level, .. }) => {
            if tracebuf::on(Kind::Fault) {
                point::fault(0, 0, esr.0, far, ipa, ret.get().0, Resolution::Mapped, level)
            }
        }
        Ok(HostFault::Spurious) => {
            if tracebuf::on(Kind::Fault) {
                point::fault(0, 0, esr.0, far, ipa, ret.get().0, Resolution::Spurious, 0)
            }
        }
        Err(e) => refuse(ret, esr, ipa, far, e),
    }
}

/// A host access refused: traced, logged, and an abort injected.
#[inline(never)]
fn refuse(ret: &mut impl ReturnState, esr: Esr, ipa: u64, far: u64, e: hyp_core::mm::Error) {
    let pc = ret.get().0;
    point::fault(0, 0, esr.0, far, ipa, pc, Resolution::AbortInjected, 0);
    let access = match (esr.is_data_abort(), esr.wnr()) {
        (false, _) => "fetch",
        (true, true) => "write",
        (true, false) => "read",
    };
    log::info!("host: {} at IPA {:#x} (PC {:#x}) refused ({}): abort injected", access, ipa, pc, e.name());
    point::inject(0, 0, esr.0, far, pc);
    inject::inject_abort(ret, esr, far);
}
