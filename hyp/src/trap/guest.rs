//! A running guest's exceptions: its synchronous traps (hypercalls, stage-2
//! faults, trapped system registers and instructions, WFI/WFE, the first
//! FP/SIMD and PAuth use), its interrupts and SErrors. Each is answered in
//! the hyp (the guest goes on) or becomes an exit to the host with a reason
//! (`vm::switch::exit_to_host`).

use alloc::sync::Arc;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use tock_registers::interfaces::Readable;

use hyp_abi::esr::{Esr, EC_DABT_LOW, EC_FP, EC_HVC64, EC_IABT_LOW, EC_PAC, EC_SMC64, EC_SYS64, EC_WFX};
use hyp_abi::host::exit;
use hyp_abi::trace::Resolution;
use hyp_core::emul::exception::{fault_kind, FaultKind, SysRegAccess};
use hyp_core::emul::sys_regs::{self, Action};
use hyp_core::emul::vgic::{State as Irqs, MAX_LRS, VTIMER_INTID};
use hyp_core::mm::prot::Leaf;
use hyp_core::vm::demand;

use crate::arch::aarch64::context::{self, feat};
use crate::arch::aarch64::el1;
use crate::arch::aarch64::frame::{fault_ipa, CallRegs, Next, TrapFrame};
use crate::arch::aarch64::{hyptimer, idregs, inject, vgic_sr};
use crate::hyp_env::HypEnv;
use crate::hypercall::guest::{self, Outcome};
use crate::percpu::{this_cpu, Running};
use crate::tracebuf::point;
use crate::vm::switch::{exit_to_host, refresh_live};
use crate::vm::{on_cpu, Pending, Vm, VmLock, GUEST_RAM_BASE};

fn isb() {
    barrier::isb(barrier::SY);
}

pub fn handle_guest_sync(frame: &mut TrapFrame, _handle: u16, idx: usize) -> Next {
    // Taken out of the per-CPU slot (no reference count traffic) and put
    // back if the guest goes on; an exit leaves the slot empty.
    let vm_arc = on_cpu(this_cpu()).take().expect("a guest runs on this CPU");
    let esr = Esr(ESR_EL2.get());
    let outcome = match esr.ec() {
        EC_HVC64 => guest::handle(frame, &vm_arc, idx),
        EC_SMC64 => {
            frame.elr = hyp_core::emul::exception::pc_advance(frame.elr, 4);
            guest::handle(frame, &vm_arc, idx)
        }
        EC_DABT_LOW | EC_IABT_LOW => {
            // One lock for the decision and, if it is an exit, the exit.
            let mut vm = vm_arc.lock();
            match stage2_fault(frame, esr, &vm, idx) {
                Outcome::Exit { reason, ref details, pending, stop } => {
                    return leave(frame, &mut vm, idx, reason, details, pending, stop)
                }
                outcome => outcome,
            }
        }
        EC_SYS64 => sysreg_trap(frame, esr, &vm_arc, idx),
        EC_WFX => wait(frame, &vm_arc, idx, esr),
        EC_FP => guest_fp_trap(frame, &vm_arc, idx),
        EC_PAC => guest_pauth_trap(frame, &vm_arc, idx),
        // SVE and SME (CPTR_EL2.TZ/TSM), and anything else that traps.
        _ => {
            log::debug!("guest: trap {} at {:#x}: undefined instruction injected", esr, frame.elr);
            inject::inject_undef(frame);
            Outcome::Resume
        }
    };
    if let Outcome::Exit { reason, ref details, pending, stop } = outcome {
        leave(frame, &mut vm_arc.lock(), idx, reason, details, pending, stop)
    } else {
        *on_cpu(this_cpu()) = Some(vm_arc);
        Next::RESUME
    }
}

/// A guest trap's [`Outcome::Exit`]: what the next VCPU_RUN finishes
/// recorded, and the exit to the host.
#[inline(always)]
fn leave(
    frame: &TrapFrame,
    vm: &mut Vm,
    idx: usize,
    reason: u64,
    details: &[u64; 5],
    pending: Pending,
    stop: bool,
) -> Next {
    vm.vcpus[idx].pending = pending;
    vm.vcpus[idx].stopped |= stop;
    exit_to_host(frame, vm, idx, reason, details)
}

/// A guest's HVC64 from the short entry (vectors.S: x0-x18 and x30 saved,
/// the rest of the guest's registers live in the CPU): 1 once answered by
/// `guest::answer` (the memory calls among them), 0 with nothing done for
/// a call that needs the full frame (an exit: a MEM_UNSHARE of a page the
/// host pins, PSCI power calls, host services; or the checker or the
/// hypercall trace watching).
pub fn guest_call_short(x: &mut CallRegs) -> u64 {
    if crate::hypercall::host::watched() {
        return 0;
    }
    // Borrowed in place: `answer` reaches nothing of this CPU's state.
    let cpu = this_cpu();
    match (cpu.running, on_cpu(cpu).as_ref()) {
        (Running::Guest(_, vcpu), Some(vm)) => guest::answer(x, vm, vcpu) as u64,
        _ => 0,
    }
}

/// The guest's first FP/SIMD access of this run (CPTR_EL2.TFP): the host's
/// registers out, the vCPU's in, FP/SIMD untrapped until the exit; the
/// instruction runs again. (Once they are in, FP/SIMD does not trap to
/// EL2: anything reported as such then is refused, not retried forever.)
fn guest_fp_trap(frame: &mut TrapFrame, vm_arc: &Arc<VmLock>, idx: usize) -> Outcome {
    let cpu = this_cpu();
    if cpu.guest_fp {
        inject::inject_undef(frame);
        return Outcome::Resume;
    }
    el1::untrap_guest_fp();
    isb();
    cpu.host.fp.save();
    vm_arc.lock().vcpus[idx].ctx.fp.restore();
    cpu.guest_fp = true;
    Outcome::Resume
}

/// The vCPU's first use of pointer authentication (an instruction, or a
/// key register: HCR_EL2.API/APK): the host's keys out, the vCPU's in,
/// untrapped; from now on its keys are switched at every entry and exit.
/// The instruction runs again. (With its keys in, PAuth does not trap:
/// anything reported as such then is refused.)
fn guest_pauth_trap(frame: &mut TrapFrame, vm_arc: &Arc<VmLock>, idx: usize) -> Outcome {
    let cpu = this_cpu();
    if cpu.guest_lazy & feat::PAUTH != 0 || context::features() & feat::PAUTH == 0 {
        inject::inject_undef(frame);
        return Outcome::Resume;
    }
    cpu.host.save_pauth();
    {
        let mut vm = vm_arc.lock();
        let ctx = &mut vm.vcpus[idx].ctx;
        ctx.restore_pauth();
        ctx.used |= feat::PAUTH;
    }
    el1::untrap_guest_pauth();
    isb();
    cpu.guest_lazy |= feat::PAUTH;
    Outcome::Resume
}

/// A trapped system-register access or system instruction: answered here
/// as `hyp_core::emul::sys_regs` decides (docs/isolation.md).
fn sysreg_trap(frame: &mut TrapFrame, esr: Esr, vm_arc: &Arc<VmLock>, idx: usize) -> Outcome {
    let a = SysRegAccess::from_iss(esr.iss());
    let value = match sys_regs::decide(&a) {
        Action::Sgi if !a.read => {
            let v = if a.rt == 31 { 0 } else { frame.x[a.rt as usize] };
            frame.elr = hyp_core::emul::exception::pc_advance(frame.elr, 4);
            return sgi(vm_arc, idx, v);
        }
        Action::Sgi => {
            inject::inject_undef(frame);
            return Outcome::Resume;
        }
        Action::Undef => {
            log::debug!("guest: {:?} at {:#x}: undefined instruction injected", a.enc(), frame.elr);
            inject::inject_undef(frame);
            return Outcome::Resume;
        }
        Action::PauthKey => return guest_pauth_trap(frame, vm_arc, idx),
        Action::Nop | Action::RazWi => 0,
        Action::Id { crm, op2 } => sys_regs::sanitize_id(crm, op2, idregs::read(crm, op2), el1::bench_pmu()),
    };
    if a.read && a.rt != 31 {
        frame.x[a.rt as usize] = value;
    }
    frame.elr = hyp_core::emul::exception::pc_advance(frame.elr, 4);
    Outcome::Resume
}

/// ICC_SGI1R_EL1 written: the SGI is made pending on each target vCPU
/// (in the hyp: the host never sees guest interrupt state it did not
/// assert). One on the sender itself goes into its list registers now; if
/// others got one, the sender exits (`SGI`) so the host runs them.
fn sgi(vm_arc: &Arc<VmLock>, me: usize, v: u64) -> Outcome {
    let mut vm = vm_arc.lock();
    let handle = vm.handle;
    let (targets, intid) = sys_regs::sgi_targets(v, me, vm.vcpus.len());
    for (i, vcpu) in vm.vcpus.iter_mut().enumerate() {
        if targets & (1 << i) != 0 {
            // INTIDs 0..15 are always valid.
            let _ = vcpu.irq.pulse(intid);
        }
    }
    if targets & (1 << me) != 0 {
        refresh_live(this_cpu(), &mut vm.vcpus[me], handle, me);
    }
    let others = targets & !(1 << me);
    if others == 0 {
        return Outcome::Resume;
    }
    Outcome::Exit { reason: exit::SGI, details: [others, intid, 0, 0, 0], pending: Pending::None, stop: false }
}

/// Length of the instruction that trapped: 4, or 2 for a 16-bit T32 one
/// (ESR_EL2.IL clear, only from AArch32 EL0).
fn insn_len(esr: Esr) -> u64 {
    if esr.il() {
        4
    } else {
        2
    }
}

/// A physical SError while a guest ran (HCR_EL2.AMO): the guest caused it.
/// That vCPU stops for good and the host hears why; the machine goes on.
pub fn handle_guest_serror(frame: &mut TrapFrame, handle: u16, idx: usize) -> Next {
    let vm_arc = on_cpu(this_cpu()).clone().expect("a guest runs on this CPU");
    let esr = ESR_EL2.get();
    log::info!("vm {} vcpu {}: SError (ESR {:#x}) at PC {:#x}: vCPU stopped", handle, idx, esr, frame.elr);
    let mut vm = vm_arc.lock();
    vm.vcpus[idx].stopped = true;
    vm.vcpus[idx].pending = Pending::None;
    let pc = frame.elr;
    exit_to_host(frame, &mut vm, idx, exit::GUEST_FATAL, &[esr, pc, 0, 0, 0])
}

/// A physical interrupt while a guest runs. The maintenance interrupt (the
/// guest deactivated a level-sensitive interrupt, or list registers came
/// free for waiting ones) and the virtual timer's PPI are the guest's:
/// handled here, and the guest goes on. Anything else, and the end of the
/// time slice, belongs to the host: let it run.
pub fn handle_guest_irq(frame: &mut TrapFrame, handle: u16, idx: usize) -> Next {
    let vm_arc = on_cpu(this_cpu()).take().expect("a guest runs on this CPU");
    let mut vm = vm_arc.lock();
    if !hyptimer::fired() && refresh_live(this_cpu(), &mut vm.vcpus[idx], handle, idx) {
        drop(vm);
        *on_cpu(this_cpu()) = Some(vm_arc);
        return Next::RESUME;
    }
    exit_to_host(frame, &mut vm, idx, exit::IRQ, &[0; 5])
}

/// WFI or WFE (HCR_EL2.TWI/TWE): if an interrupt is deliverable the
/// instruction completes at once; otherwise the vCPU gives the CPU back to
/// the host (exit `WFI` with its timer deadline), nothing spins here.
fn wait(frame: &mut TrapFrame, vm_arc: &Arc<VmLock>, idx: usize, esr: Esr) -> Outcome {
    // A T16 WFI/WFE from AArch32 EL0 is 2 bytes (ESR.IL clear).
    frame.elr = hyp_core::emul::exception::pc_advance(frame.elr, insn_len(esr));
    let wfe = esr.iss() & 1 != 0;
    let mut vm = vm_arc.lock();
    let handle = vm.handle;
    let vcpu = &mut vm.vcpus[idx];
    refresh_live(this_cpu(), vcpu, handle, idx);
    let n = context::nr_lrs();
    let mut lrs = [0u64; MAX_LRS];
    vgic_sr::read_lrs(&mut lrs[..n]);
    if n == 0 || Irqs::deliverable(&lrs[..n], vgic_sr::mask_live()) {
        return Outcome::Resume;
    }
    let ctl = CNTV_CTL_EL0.get();
    let deadline = if vcpu.irq.enabled(VTIMER_INTID) && ctl & 0b11 == 0b01 { CNTV_CVAL_EL0.get() } else { u64::MAX };
    Outcome::Exit { reason: exit::WFI, details: [deadline, wfe as u64, 0, 0, 0], pending: Pending::None, stop: false }
}

/// A guest stage-2 fault, decided from its syndrome: a translation fault
/// is MMIO in the device window (exit to the host), memory not donated
/// yet in the range the host declared with MEM_ON_DEMAND (exit
/// `MEM_FAULT`, the access retried on the next run) or an abort elsewhere
/// (exit to the host, injected on the next run); a permission or other
/// fault is refused with an abort injected now; an access-flag fault (the
/// hyp always sets AF) or a translation fault on what is mapped by now (a
/// stale TLB entry) is retried.
#[inline(always)]
fn stage2_fault(frame: &mut TrapFrame, esr: Esr, vm: &Vm, idx: usize) -> Outcome {
    let (ipa, far) = fault_ipa();
    let who = vm.handle;
    let kind = fault_kind(esr.fsc());
    // In the MMIO window nothing is mapped unless the host donated there
    // (`Vm::low_mapped`): no walk needed to know.
    let mapped = if ipa < GUEST_RAM_BASE && !vm.low_mapped {
        None
    } else {
        vm.mm.pgt.lookup(&mut HypEnv, ipa).ok().filter(|m| matches!(m.leaf, Leaf::Mapped { .. }))
    };
    let guarded = vm.guards.allows(ipa);
    match (kind, mapped) {
        (FaultKind::Translation(_) | FaultKind::AccessFlag(_), Some(m)) => {
            point::fault(who, idx, esr.0, far, ipa, frame.elr, Resolution::Spurious, m.level);
            return Outcome::Resume;
        }
        (FaultKind::Permission(_) | FaultKind::Other(_), _) => {
            point::fault(who, idx, esr.0, far, ipa, frame.elr, Resolution::AbortInjected, 0);
            point::inject(who, idx, esr.0, far, frame.elr);
            inject::inject_abort(frame, esr, far);
            return Outcome::Resume;
        }
        _ => {}
    }
    if ipa < GUEST_RAM_BASE && !guarded {
        // Enrolled in MMIO_GUARD and not a granule it guarded: the guest
        // did not ask for a device here.
        point::fault(who, idx, esr.0, far, ipa, frame.elr, Resolution::AbortInjected, 0);
        point::inject(who, idx, esr.0, far, frame.elr);
        inject::inject_abort(frame, esr, far);
        return Outcome::Resume;
    }
    if ipa < GUEST_RAM_BASE && esr.is_data_abort() && esr.isv() {
        point::fault(who, idx, esr.0, far, ipa, frame.elr, Resolution::MmioExit, 0);
        let srt = esr.srt();
        let size = esr.sas_bytes();
        let write = esr.wnr();
        let len = insn_len(esr) as u8;
        // Only a write carries a register value: a read must not show the
        // host what the destination register held before.
        let value = if !write || srt == 31 { 0 } else { frame.x[srt as usize] };
        let value = if size == 8 { value } else { value & ((1u64 << (size as u32 * 8)) - 1) };
        let pending = if write {
            Pending::MmioWrite { len }
        } else {
            Pending::MmioRead { srt, size, sign: esr.sse(), sf: esr.sf(), len }
        };
        return Outcome::Exit {
            reason: exit::MMIO,
            details: [ipa, size as u64, write as u64, value, 0],
            pending,
            stop: false,
        };
    }
    no_memory(frame, esr, vm, idx, ipa, far, matches!(kind, FaultKind::Translation(_)))
}

/// A fault on an IPA with no memory outside the MMIO window: memory on
/// demand ([`mem_fault`]) or the guest abort exit. Out of line, so the
/// MMIO exit that shares [`stage2_fault`] keeps its registers (inlined,
/// it cost the MMIO round trip +7 instructions).
#[cold]
#[inline(never)]
fn no_memory(frame: &TrapFrame, esr: Esr, vm: &Vm, idx: usize, ipa: u64, far: u64, translation: bool) -> Outcome {
    if translation && ipa >= GUEST_RAM_BASE {
        if let Some(exit) = mem_fault(frame, esr, vm, idx, ipa, far) {
            return exit;
        }
    }
    point::fault(vm.handle, idx, esr.0, far, ipa, frame.elr, Resolution::GuestAbortExit, 0);
    Outcome::Exit {
        reason: exit::GUEST_ABORT,
        details: [ipa, esr.0, frame.elr, 0, 0],
        pending: Pending::Abort { esr: esr.0, far },
        stop: false,
    }
}

/// A translation fault on an IPA with no memory yet, in the guest's
/// on-demand memory (None elsewhere): the host donates and runs the vCPU
/// again, which re-executes the access (nothing injected). Out of line: the MMIO exit shares
/// `stage2_fault`, and this walks the stage-2 again for the suggestion (a
/// memory fault costs an exit and a donation, thousands of instructions).
#[cold]
#[inline(never)]
fn mem_fault(frame: &TrapFrame, esr: Esr, vm: &Vm, idx: usize, ipa: u64, far: u64) -> Option<Outcome> {
    let range = crate::vm::demand(vm);
    if !range.contains(ipa) {
        return None;
    }
    let page = (ipa & !(demand::PAGE - 1), demand::PAGE);
    let (at, len) = match vm.mm.pgt.lookup(&mut HypEnv, ipa) {
        Ok(m) if !m.leaf.is_valid() => range.hint(ipa, m.base, m.size()),
        _ => page,
    };
    point::fault(vm.handle, idx, esr.0, far, ipa, frame.elr, Resolution::MemFaultExit, 0);
    Some(Outcome::Exit {
        reason: exit::MEM_FAULT,
        details: [ipa, at, len, esr.0, 0],
        pending: Pending::None,
        stop: false,
    })
}
