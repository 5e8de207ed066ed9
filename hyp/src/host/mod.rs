//! Traps from the host: hypercalls (HVC), firmware calls (SMC, relayed
//! PSCI) and stage-2 faults (lazy identity map, emulated MMIO, or an abort
//! injected).

use aarch64_cpu::registers::*;
use log::debug;

use hyp::esr::{Esr, EC_DABT_LOW, EC_HVC64, EC_IABT_LOW, EC_SMC64};
use hyp::exception::{fault_kind, FaultKind};
use hyp::mm::mem_protect::HostFault;

use crate::arch::aarch64::inject;
use crate::arch::aarch64::trap::{fault_ipa, Next, TrapFrame};
use crate::mmenv::HypEnv;
use crate::tracebuf::point;
use crate::{hypercall, mem};
use hyp::trace::Resolution;

pub fn handle_sync(frame: &mut TrapFrame) -> Next {
    let esr = Esr(ESR_EL2.get());
    match esr.ec() {
        EC_HVC64 => return hypercall::host::handle(frame),
        EC_SMC64 => {
            // A trapped SMC returns to the SMC itself: step over it.
            frame.elr += 4;
            hypercall::psci::handle_host_smc(frame);
        }
        EC_DABT_LOW | EC_IABT_LOW => stage2_fault(frame, esr),
        _ => {
            debug!("host: unexpected trap {} at {:#x}: undefined instruction injected", esr, frame.elr);
            inject::inject_undef(frame);
        }
    }
    Next::RESUME
}

/// A host stage-2 fault, decided from its syndrome: only a translation
/// fault can be resolved (lazy identity map, or refused: abort); an
/// access-flag fault means a stale TLB entry (the hyp always sets AF) and is
/// retried; a permission fault (e.g. a fetch from a page mapped XN for the
/// host: a page a guest shared, a device) or any other fault is refused
/// with an abort, never retried.
fn stage2_fault(frame: &mut TrapFrame, esr: Esr) {
    let (ipa, far) = fault_ipa();
    if crate::dev::gicr::covers(ipa) {
        return crate::dev::gicr::emulate(frame, esr, ipa, far);
    }
    let r = match fault_kind(esr.fsc()) {
        FaultKind::Translation(_) => mem::host().handle_fault(&mut HypEnv, ipa),
        FaultKind::AccessFlag(_) => Ok(HostFault::Spurious),
        FaultKind::Permission(_) | FaultKind::Other(_) => Err(hyp::mm::Error::Perm),
    };
    let (res, level) = match r {
        Ok(HostFault::Mapped { level, .. }) => (Resolution::Mapped, level),
        Ok(HostFault::Spurious) => (Resolution::Spurious, 0),
        Err(_) => (Resolution::AbortInjected, 0),
    };
    point::fault(0, 0, esr.0, far, ipa, frame.elr, res, level);
    match r {
        Ok(HostFault::Mapped { level, base, device }) => {
            debug!(
                "host fault {:#x}: mapped {} at level {} base {:#x}",
                ipa,
                if device { "device" } else { "ram" },
                level,
                base
            );
        }
        Ok(HostFault::Spurious) => {}
        Err(e) => {
            let access = match (esr.is_data_abort(), esr.wnr()) {
                (false, _) => "fetch",
                (true, true) => "write",
                (true, false) => "read",
            };
            log::info!(
                "host: {} at IPA {:#x} (PC {:#x}) refused ({}): abort injected",
                access,
                ipa,
                frame.elr,
                e.name()
            );
            point::inject(0, 0, esr.0, far, frame.elr);
            inject::inject_abort(frame, esr, far);
        }
    }
}
