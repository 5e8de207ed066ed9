//! Every exception taken to EL2 lands here (from the vectors) and goes to
//! the host's handler ([`host`], with [`host_gicr`] for the redistributor
//! pages the hyp emulates) or the running guest's ([`guest`]).

pub mod guest;
pub mod host;
pub mod host_gicr;

use aarch64_cpu::registers::*;
use tock_registers::interfaces::Readable;

use hyp_abi::esr::Esr;

use crate::arch::aarch64::frame::{CallRegs, Next, TrapFrame, KIND_NAMES};
use crate::console::Line;
use crate::percpu::{self, Running};

/// Vector kinds (vectors.S): lower EL, AArch64 and AArch32.
const SYNC_A64: u64 = 8;
const IRQ_A64: u64 = 9;
const FIQ_A64: u64 = 10;
const SERROR_A64: u64 = 11;
const SYNC_A32: u64 = 12;
const IRQ_A32: u64 = 13;
const FIQ_A32: u64 = 14;
const SERROR_A32: u64 = 15;

/// Every exception but the host's short host calls (vectors.S); returns
/// what the vectors restore.
#[no_mangle]
extern "C" fn hyp_trap(kind: u64, frame: &mut TrapFrame) -> Next {
    match kind {
        SYNC_A64 | SYNC_A32 => handle_sync(frame),
        IRQ_A64 | FIQ_A64 | IRQ_A32 | FIQ_A32 => handle_irq(frame),
        SERROR_A64 | SERROR_A32 => handle_serror(kind, frame),
        _ => fatal(kind, frame),
    }
}

/// The short entry of an HVC64 from the host (vectors.S: the host's vector
/// table): 1 if the call was handled, 0 if it needs the full frame (then
/// the entry calls `hyp_host_full_call`).
#[no_mangle]
extern "C" fn hyp_host_call(regs: &mut CallRegs) -> u64 {
    debug_assert_eq!(percpu::this_cpu().running, Running::Host);
    crate::hypercall::host::handle_short(regs)
}

/// The short entry of a stage-2 data or instruction abort from the host
/// (vectors.S: `__hyp_host_other`, x0-x18 and x30 saved, ELR_EL2 and
/// SPSR_EL2 live): 1 once resolved (or refused, the abort injected), 0,
/// having done nothing, if it needs the full frame (then the entry calls
/// `hyp_trap` with it).
#[no_mangle]
extern "C" fn hyp_host_abort(_regs: &mut CallRegs) -> u64 {
    debug_assert_eq!(percpu::this_cpu().running, Running::Host);
    host::handle_abort_short()
}

/// A host call that `hyp_host_call` left to the full frame (VCPU_RUN, the
/// only one it leaves), with that frame (vectors.S): straight to VCPU_RUN,
/// without `hyp_trap`'s and the host's syndrome dispatch (the short entry is
/// taken only for an HVC64 from the host) and without the host-call table
/// a second time.
#[no_mangle]
extern "C" fn hyp_host_full_call(frame: &mut TrapFrame) -> Next {
    debug_assert_eq!(percpu::this_cpu().running, Running::Host);
    crate::hypercall::host::vcpu_run(frame)
}

/// The short entry of a guest's HVC64 (vectors.S: the guest's vector
/// table): 1 if answered on the call registers, 0 if it needs the full
/// frame (then the entry calls `hyp_guest_sync`).
#[no_mangle]
extern "C" fn hyp_guest_call(regs: &mut CallRegs) -> u64 {
    guest::guest_call_short(regs)
}

/// A guest's synchronous exception (vectors.S: the guest's vector table),
/// straight to the guest's handler.
#[no_mangle]
extern "C" fn hyp_guest_sync(frame: &mut TrapFrame) -> Next {
    match percpu::this_cpu().running {
        Running::Guest(h, v) => guest::handle_guest_sync(frame, h, v),
        Running::Host => fatal(SYNC_A64, frame),
    }
}

fn handle_sync(frame: &mut TrapFrame) -> Next {
    match percpu::this_cpu().running {
        Running::Host => host::handle_sync(frame),
        Running::Guest(h, v) => guest::handle_guest_sync(frame, h, v),
    }
}

fn handle_irq(frame: &mut TrapFrame) -> Next {
    match percpu::this_cpu().running {
        // Host interrupts are routed to EL1; one reaching EL2 is spurious.
        Running::Host => Next::RESUME,
        Running::Guest(h, v) => guest::handle_guest_irq(frame, h, v),
    }
}

/// A physical SError from a lower EL. Only guests route SErrors to EL2
/// (HCR_EL2.AMO): one that arrives while a guest runs is that guest's; it
/// stops that vCPU, not the machine.
fn handle_serror(kind: u64, frame: &mut TrapFrame) -> Next {
    match percpu::this_cpu().running {
        Running::Guest(h, v) => guest::handle_guest_serror(frame, h, v),
        Running::Host => fatal(kind, frame),
    }
}

/// An exception the hyp cannot have caused legitimately: print everything
/// and stop the machine with a failure status.
fn fatal(kind: u64, frame: &TrapFrame) -> ! {
    let esr = Esr(ESR_EL2.get());
    let far = FAR_EL2.get();
    log::error!("unexpected exception: {}", KIND_NAMES[(kind & 15) as usize]);
    log::error!("  ESR_EL2 {:#018x}: {}", esr.0, esr);
    log::error!("  FAR_EL2 {:#018x}  ELR_EL2 {:#018x}  SPSR_EL2 {:#x}", far, frame.elr, frame.spsr);
    for (i, pair) in frame.x.chunks(4).enumerate() {
        let mut line = Line::new();
        for (j, v) in pair.iter().enumerate() {
            use core::fmt::Write;
            let _ = write!(line, "x{:<2} {:#018x}  ", i * 4 + j, v);
        }
        log::error!("  {}", line.as_str());
    }
    crate::shutdown(crate::Status::Fatal)
}
