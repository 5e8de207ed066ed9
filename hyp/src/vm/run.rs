//! Running a vCPU: the world switch between the host and a guest, and the
//! decisions on every guest exit (handled in the hyp, or returned to the
//! host with a reason).
//!
//! The switch moves one [`Context`] out and another in: the trap frame, the
//! system-register table and FP/SIMD; then the EL2 controls of the kind of
//! context that runs (`el1.rs`). While a guest runs, the hyp's preemption
//! timer is armed and the physical GIC CPU interface is opened, so the host
//! always gets the CPU back.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use hyp_abi::esr::{Esr, EC_DABT_LOW, EC_FP, EC_HVC64, EC_IABT_LOW, EC_PAC, EC_SMC64, EC_SYS64, EC_WFX};
use hyp_abi::host::exit;
use hyp_core::emul::exception::{fault_kind, FaultKind, SysRegAccess};
use hyp_core::emul::sys_regs::{self, Action};
use hyp_core::mm::prot::Leaf;
use hyp_core::mm::Error;

use super::{get, Pending, Vcpu, Vm};
use crate::arch::aarch64::context::{self, feat, Kind};
use crate::arch::aarch64::el1;
use crate::arch::aarch64::sysreg::{ICC_IGRPEN1_EL1, ICC_PMR_EL1, PMCNTENCLR_EL0, PMCNTENSET_EL0, VMPIDR_EL2};
use crate::arch::aarch64::trap::{CallRegs, Next, TrapFrame};
use crate::arch::aarch64::{hyptimer, idregs, inject, vgic};
use crate::hypercall::guest::{self, Outcome};
use crate::mmenv::HypEnv;
use crate::percpu::{host_frame, this_cpu, PerCpu, Running};
use crate::tracebuf::point;
use hyp_abi::trace::Resolution;
use hyp_core::emul::vgic::{State as Irqs, MAX_LRS, VTIMER_INTID};

/// First IPA of guest RAM: below it is the emulated device window (MMIO
/// exits to the host), as on QEMU `virt`.
pub const GUEST_RAM_BASE: u64 = hyp_core::vm::mmio_guard::WINDOW_END;

fn isb() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The preemption deadline for a guest entered now: one time slice, or the
/// host's own virtual-timer deadline if that comes first (the host's
/// virtual timer is switched out while the guest runs; its physical timer
/// stays live and interrupts the guest by itself).
#[inline(always)]
fn deadline(cpu: &PerCpu) -> u64 {
    let slice = hyptimer::now() + hyptimer::slice_ticks();
    let ctl = cpu.host.get(context::R::CNTV_CTL_EL0);
    // ENABLE set, IMASK clear.
    if ctl & 0b11 == 0b01 {
        slice.min(cpu.host.get(context::R::CNTV_CVAL_EL0))
    } else {
        slice
    }
}

/// Opens the physical CPU interface for the guest's run: every interrupt
/// the host enabled in the GIC, the hyp timer and the maintenance
/// interrupt take the CPU back; the virtual timer's PPI as `vtimer_ppi`
/// says. The host's priority mask, group enable and PPI 27 setting are
/// restored at exit.
/// Stops the host's PMU counters while a guest runs (unless
/// `hyp.bench_pmu`), so the host cannot count the guest's events or pick the
/// moment it exits by a counter overflow; restored at exit.
#[inline(always)]
fn stop_host_pmu(cpu: &mut PerCpu) {
    if context::features() & feat::PMU != 0 && !el1::bench_pmu() {
        cpu.host_pmcnten = PMCNTENSET_EL0.get();
        PMCNTENCLR_EL0.set(u64::MAX);
    }
}

#[inline(always)]
fn restart_host_pmu(cpu: &PerCpu) {
    if context::features() & feat::PMU != 0 && !el1::bench_pmu() {
        PMCNTENSET_EL0.set(cpu.host_pmcnten);
    }
}

#[inline(always)]
fn open_interrupts(cpu: &mut PerCpu, vtimer_ppi: bool) {
    if context::features() & feat::VGIC == 0 {
        return;
    }
    cpu.host_icc = [ICC_PMR_EL1.get(), ICC_IGRPEN1_EL1.get()];
    ICC_PMR_EL1.set(0xff);
    ICC_IGRPEN1_EL1.set(1);
    if cpu.gicr_sgi != 0 {
        // SAFETY: gicr_sgi is this CPU's SGI frame, found at boot.
        let host = unsafe { crate::dev::gicv3::enable_hyp_ppis(cpu.gicr_sgi) };
        cpu.vtimer_ppi = [host, host];
        set_vtimer_ppi(cpu, vtimer_ppi);
    }
}

/// Enables or disables the physical virtual-timer PPI for the running
/// guest; true if that changed it.
#[inline(always)]
fn set_vtimer_ppi(cpu: &mut PerCpu, on: bool) -> bool {
    if cpu.gicr_sgi == 0 || cpu.vtimer_ppi[1] == on {
        return false;
    }
    // SAFETY: gicr_sgi is this CPU's SGI frame, found at boot.
    unsafe { crate::dev::gicv3::set_vtimer_ppi(cpu.gicr_sgi, on) };
    cpu.vtimer_ppi[1] = on;
    true
}

#[inline(always)]
fn restore_interrupts(cpu: &mut PerCpu) {
    if context::features() & feat::VGIC == 0 {
        return;
    }
    vgic::set_hcr(0);
    let host = cpu.vtimer_ppi[0];
    set_vtimer_ppi(cpu, host);
    ICC_PMR_EL1.set(cpu.host_icc[0]);
    ICC_IGRPEN1_EL1.set(cpu.host_icc[1]);
}

/// While the guest runs: retires the list registers it deactivated, looks
/// at its virtual timer, fills free list registers and sets the physical
/// PPI 27 and ICH_HCR_EL2 to match. True if anything changed.
fn refresh_live(cpu: &mut PerCpu, vcpu: &mut Vcpu, handle: u16, idx: usize) -> bool {
    let n = context::nr_lrs();
    if n == 0 {
        return false;
    }
    let mut lrs = [0u64; MAX_LRS];
    vgic::read_lrs(&mut lrs[..n]);
    let before = lrs;
    vcpu.irq.retire(&mut lrs[..n]);
    vcpu.irq.set_vtimer(vgic::vtimer_live());
    let f = vcpu.irq.flush(&mut lrs[..n]);
    point::vgic(handle, idx, &f, &lrs[..n]);
    if lrs != before {
        vgic::write_lrs(&lrs[..n]);
        // Saved (and zeroed) at the exit from now on.
        cpu.guest_lazy |= feat::LRS;
    }
    vgic::set_hcr(vgic::hcr_guest(f.overflow > 0));
    let ppi = set_vtimer_ppi(cpu, vcpu.irq.vtimer_ppi_wanted(&lrs[..n]));
    lrs != before || ppi
}

/// VCPU_RUN: x1 = handle, x2 = vCPU, x3/x4 = the host's reply to the last
/// exit. On success the host's `frame` stays where it is (the top of the
/// EL2 stack) and the vectors enter the guest from its context's.
#[inline(never)]
pub fn vcpu_run(frame: &mut TrapFrame) -> Result<Next, Error> {
    let vm_arc = get(frame.x[1])?;
    let idx = frame.x[2] as usize;
    let reply = [frame.x[3], frame.x[4], frame.x[5], frame.x[6]];
    let mut vm = vm_arc.lock();
    if vm.dying {
        return Err(Error::Perm);
    }
    let (vttbr, vtcr, handle) = (vm.mm.pgt.root_pa() | ((vm.vmid as u64) << 48), vm.vtcr, vm.handle);
    let vcpu = vm.vcpus.get_mut(idx).ok_or(Error::NoEnt)?;
    if vcpu.running {
        return Err(Error::Busy);
    }
    if vcpu.stopped || vcpu.off {
        return Err(Error::Perm);
    }
    if context::serror_pending() {
        // The host's own SError, pending and masked: entering the guest
        // would take it at EL2 and blame the guest.
        return Err(Error::Busy);
    }
    if context::sme_live() {
        // The host called with SME streaming mode or ZA on: its state there
        // cannot be saved here; it must SMSTOP first.
        return Err(Error::Busy);
    }
    let cpu = this_cpu();
    // The VM runs: its vCPU set is closed (a refused call above leaves it open).
    vm.started = true;
    let vcpu = &mut vm.vcpus[idx];
    // Its virtual interrupts: the timer's condition now, then the list
    // registers (saved in its context) filled.
    let due = vgic::vtimer_due(
        vcpu.ctx.get(context::R::CNTV_CTL_EL0),
        vcpu.ctx.get(context::R::CNTV_CVAL_EL0),
        vgic::vcount(),
    );
    vcpu.irq.set_vtimer(due);
    // `ctx.used` without the list registers: every one of them is invalid
    // (see `Context::used`), no need to look.
    let may_hold = vcpu.ctx.used & feat::LRS != 0;
    let lrs = vcpu.ctx.lrs_mut();
    let flushed = vcpu.irq.flush_hinted(lrs, may_hold);
    point::vgic(handle, idx, &flushed, lrs);
    let live = if flushed.live { feat::LRS } else { 0 };
    let ppi = vcpu.irq.vtimer_ppi_wanted(if live != 0 { lrs } else { &[] });
    // Host out (its general registers stay in its frame, its FP/SIMD in
    // the CPU until the guest uses FP/SIMD: `guest_fp_trap`).
    // The lazily switched groups: the PAuth keys if the vCPU used them,
    // the list registers if one holds an interrupt (the CPU's are zero).
    vcpu.ctx.used = (vcpu.ctx.used & !feat::LRS) | live;
    let lazy = vcpu.ctx.used;
    cpu.host.save_cpu(Kind::Host, lazy);
    cpu.guest_lazy = lazy;
    cpu.guest_fp = false;
    cpu.host_disr = context::park_host_disr();
    // Guest in (its general registers are loaded by the vectors).
    vcpu.ctx.restore_cpu(Kind::Guest, lazy);
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    el1::enter_controls(Kind::Guest);
    if lazy & feat::PAUTH != 0 {
        el1::untrap_guest_pauth();
    }
    // The guest's MPIDR: Aff0 = vCPU index (bit 31 RES1).
    VMPIDR_EL2.set((1 << 31) | idx as u64);
    open_interrupts(cpu, ppi);
    stop_host_pmu(cpu);
    if context::nr_lrs() > 0 {
        vgic::set_hcr(vgic::hcr_guest(flushed.overflow > 0));
    }
    hyptimer::arm(deadline(cpu));
    isb();
    cpu.running = Running::Guest(handle, idx);
    // Finish what the last exit left open.
    let frame = &mut vcpu.ctx.gp;
    match vcpu.pending {
        Pending::MmioRead { srt, size, sign, sf, len } => {
            let bits = size as u32 * 8;
            let mut v = if bits == 64 { reply[0] } else { reply[0] & ((1u64 << bits) - 1) };
            if sign && bits < 64 && v & (1 << (bits - 1)) != 0 {
                v |= !((1u64 << bits) - 1);
            }
            if !sf {
                v &= 0xffff_ffff;
            }
            if srt != 31 {
                frame.x[srt as usize] = v;
            }
            frame.elr += len as u64;
        }
        Pending::MmioWrite { len } => frame.elr += len as u64,
        Pending::Hypercall => frame.x[..4].copy_from_slice(&reply),
        Pending::Abort { esr, far } => {
            point::inject(handle, idx, esr, far, frame.elr);
            inject::inject_abort(frame, Esr(esr), far)
        }
        Pending::None => {}
    }
    vcpu.pending = Pending::None;
    vcpu.running = true;
    // The vCPU's context stays where it is until it stops running: the
    // VM's vCPUs are fixed once it ran, and the `Arc` below keeps it.
    let next = Next::enter(&vcpu.ctx.gp);
    drop(vm);
    cpu.guest = Some(vm_arc);
    Ok(next)
}

/// Saves the guest (from its trap `frame`), restores the host, and returns
/// `reason` and `details` in the host's x2.. as the result of its VCPU_RUN.
#[inline(never)]
fn exit_to_host(frame: &TrapFrame, vm: &mut Vm, idx: usize, reason: u64, details: &[u64; 5]) -> Next {
    let cpu = this_cpu();
    let preempted = hyptimer::disarm();
    let vcpu = &mut vm.vcpus[idx];
    // An SError the guest caused but that is still in flight is the guest's:
    // it stops the vCPU, it is not handed to the host.
    let (reason, details) = match context::take_deferred_serror() {
        Some(disr) => {
            log::info!(
                "vm {} vcpu {}: deferred SError (DISR {:#x}) at PC {:#x}: vCPU stopped",
                vm.handle,
                idx,
                disr,
                frame.elr
            );
            vcpu.stopped = true;
            vcpu.pending = Pending::None;
            (exit::GUEST_FATAL, [disr, frame.elr, 0, 0, 0])
        }
        None => (reason, *details),
    };
    context::unpark_host_disr(cpu.host_disr);
    vcpu.ctx.gp.copy_from(frame);
    // The host's controls (no ISB needed before the moves below: the EL1
    // registers are not trapped at EL2, and FP/SIMD is moved only when the
    // guest's run untrapped it already; the ISB at the end synchronizes).
    el1::enter_controls(Kind::Host);
    if cpu.guest_fp {
        vcpu.ctx.fp.save();
        cpu.host.fp.restore();
        cpu.guest_fp = false;
    }
    vcpu.ctx.save_cpu(Kind::Guest, cpu.guest_lazy);
    if cpu.guest_lazy & feat::LRS != 0 {
        // What the guest deactivated frees its list register now (if there
        // is such a list register: the CPU still has the guest's).
        if vgic::eoi_pending() {
            vcpu.irq.retire(vcpu.ctx.lrs_mut());
        }
        // The next entry may skip loading list registers that hold
        // nothing: they must be zero in the CPU then, not this run's.
        context::zero_cpu_lrs();
        // Written during the run (`refresh_live`): they may hold something.
        vcpu.ctx.used |= feat::LRS;
    }
    vcpu.running = false;
    cpu.host.restore_cpu(Kind::Host, cpu.guest_lazy);
    restore_interrupts(cpu);
    restart_host_pmu(cpu);
    VTCR_EL2.set(cpu.host_vtcr);
    VTTBR_EL2.set(cpu.host_vttbr);
    VMPIDR_EL2.set(MPIDR_EL1.get());
    isb();
    let frame = host_frame(cpu);
    frame.x[0] = 0;
    frame.x[1] = 0;
    frame.x[2] = reason;
    // Element by element: a slice copy becomes a call to memcpy.
    let [d0, d1, d2, d3, d4] = details;
    (frame.x[3], frame.x[4], frame.x[5], frame.x[6], frame.x[7]) = (d0, d1, d2, d3, d4);
    if reason == exit::IRQ {
        frame.x[3] = preempted as u64;
    }
    cpu.running = Running::Host;
    cpu.guest = None;
    Next::HOST
}

pub fn handle_guest_sync(frame: &mut TrapFrame, _handle: u16, idx: usize) -> Next {
    // Taken out of the per-CPU slot (no reference count traffic) and put
    // back if the guest goes on; an exit leaves the slot empty.
    let vm_arc = this_cpu().guest.take().expect("a guest runs on this CPU");
    let esr = Esr(ESR_EL2.get());
    let outcome = match esr.ec() {
        EC_HVC64 => guest::handle(frame, &vm_arc, idx),
        EC_SMC64 => {
            frame.elr += 4;
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
        this_cpu().guest = Some(vm_arc);
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
    match (cpu.running, cpu.guest.as_ref()) {
        (Running::Guest(_, vcpu), Some(vm)) => guest::answer(x, vm, vcpu) as u64,
        _ => 0,
    }
}

/// The guest's first FP/SIMD access of this run (CPTR_EL2.TFP): the host's
/// registers out, the vCPU's in, FP/SIMD untrapped until the exit; the
/// instruction runs again. (Once they are in, FP/SIMD does not trap to
/// EL2: anything reported as such then is refused, not retried forever.)
fn guest_fp_trap(frame: &mut TrapFrame, vm_arc: &alloc::sync::Arc<spin::Mutex<Vm>>, idx: usize) -> Outcome {
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
fn guest_pauth_trap(frame: &mut TrapFrame, vm_arc: &alloc::sync::Arc<spin::Mutex<Vm>>, idx: usize) -> Outcome {
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
fn sysreg_trap(frame: &mut TrapFrame, esr: Esr, vm_arc: &alloc::sync::Arc<spin::Mutex<Vm>>, idx: usize) -> Outcome {
    let a = SysRegAccess::from_iss(esr.iss());
    let value = match sys_regs::decide(&a) {
        Action::Sgi if !a.read => {
            let v = if a.rt == 31 { 0 } else { frame.x[a.rt as usize] };
            frame.elr += 4;
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
    frame.elr += 4;
    Outcome::Resume
}

/// ICC_SGI1R_EL1 written: the SGI is made pending on each target vCPU
/// (in the hyp: the host never sees guest interrupt state it did not
/// assert). One on the sender itself goes into its list registers now; if
/// others got one, the sender exits (`SGI`) so the host runs them.
fn sgi(vm_arc: &alloc::sync::Arc<spin::Mutex<Vm>>, me: usize, v: u64) -> Outcome {
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
    let vm_arc = this_cpu().guest.clone().expect("a guest runs on this CPU");
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
    let vm_arc = this_cpu().guest.take().expect("a guest runs on this CPU");
    let mut vm = vm_arc.lock();
    if !hyptimer::fired() && refresh_live(this_cpu(), &mut vm.vcpus[idx], handle, idx) {
        drop(vm);
        this_cpu().guest = Some(vm_arc);
        return Next::RESUME;
    }
    exit_to_host(frame, &mut vm, idx, exit::IRQ, &[0; 5])
}

/// WFI or WFE (HCR_EL2.TWI/TWE): if an interrupt is deliverable the
/// instruction completes at once; otherwise the vCPU gives the CPU back to
/// the host (exit `WFI` with its timer deadline), nothing spins here.
fn wait(frame: &mut TrapFrame, vm_arc: &alloc::sync::Arc<spin::Mutex<Vm>>, idx: usize, esr: Esr) -> Outcome {
    // A T16 WFI/WFE from AArch32 EL0 is 2 bytes (ESR.IL clear).
    frame.elr += insn_len(esr);
    let wfe = esr.iss() & 1 != 0;
    let mut vm = vm_arc.lock();
    let handle = vm.handle;
    let vcpu = &mut vm.vcpus[idx];
    refresh_live(this_cpu(), vcpu, handle, idx);
    let n = context::nr_lrs();
    let mut lrs = [0u64; MAX_LRS];
    vgic::read_lrs(&mut lrs[..n]);
    if n == 0 || Irqs::deliverable(&lrs[..n], vgic::mask_live()) {
        return Outcome::Resume;
    }
    let ctl = CNTV_CTL_EL0.get();
    let deadline = if vcpu.irq.enabled(VTIMER_INTID) && ctl & 0b11 == 0b01 { CNTV_CVAL_EL0.get() } else { u64::MAX };
    Outcome::Exit { reason: exit::WFI, details: [deadline, wfe as u64, 0, 0, 0], pending: Pending::None, stop: false }
}

/// A guest stage-2 fault, decided from its syndrome: a translation fault
/// is MMIO in the device window (exit to the host) or an abort elsewhere
/// (exit to the host, injected on the next run); a permission or other
/// fault is refused with an abort injected now; an access-flag fault (the
/// hyp always sets AF) or a translation fault on what is mapped by now (a
/// stale TLB entry) is retried.
#[inline(always)]
fn stage2_fault(frame: &mut TrapFrame, esr: Esr, vm: &Vm, idx: usize) -> Outcome {
    let (ipa, far) = crate::arch::aarch64::trap::fault_ipa();
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
    point::fault(who, idx, esr.0, far, ipa, frame.elr, Resolution::GuestAbortExit, 0);
    Outcome::Exit {
        reason: exit::GUEST_ABORT,
        details: [ipa, esr.0, frame.elr, 0, 0],
        pending: Pending::Abort { esr: esr.0, far },
        stop: false,
    }
}
