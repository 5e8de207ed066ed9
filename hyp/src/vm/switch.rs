//! The world switch between the host and a guest: VCPU_RUN enters a vCPU
//! ([`vcpu_run`]), [`exit_to_host`] leaves it (the guest's traps and what
//! they decide are `trap/guest.rs`).
//!
//! The switch moves one [`Context`] out and another in: the trap frame, the
//! system-register table and FP/SIMD; then the EL2 controls of the kind of
//! context that runs (`el1.rs`). While a guest runs, the hyp's preemption
//! timer is armed and the physical GIC CPU interface is opened, so the host
//! always gets the CPU back.

use aarch64_cpu::registers::*;
use tock_registers::interfaces::{Readable, Writeable};

use hyp_abi::esr::Esr;
use hyp_abi::host::exit;
use hyp_core::emul::vgic::MAX_LRS;
use hyp_core::mm::Error;

use super::{get, Pending, Vcpu, Vm};
use crate::arch::aarch64::context::{self, feat, Kind};
use crate::arch::aarch64::el1;
use crate::arch::aarch64::frame::{Next, TrapFrame};
use crate::arch::aarch64::sysreg::{
    ICC_IGRPEN1_EL1, ICC_PMR_EL1, PMCNTENCLR_EL0, PMCNTENSET_EL0, TRFCR_EL1, VMPIDR_EL2,
};
use crate::arch::aarch64::{hyptimer, inject, vgic_sr};
use crate::percpu::{host_frame, this_cpu, PerCpu, Running};
use crate::tracebuf::point;

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

/// Before a guest runs: the host's TRFCR_EL1 set aside and cleared, so
/// that nothing the guest runs at EL1 or EL0 is traced into a buffer of the
/// host's (a trace unit and TRBE are the host's; the guest cannot change
/// the filter: MDCR_EL2.TTRF). Returns the host's value (0 without
/// FEAT_TRF). When it was set, the trace of what ran before is drained
/// (ISB, TSB CSYNC) before the guest can run.
#[inline(always)]
fn park_host_trfcr() -> u64 {
    if context::features() & feat::TRF == 0 {
        return 0;
    }
    let v = TRFCR_EL1.get();
    if v != 0 {
        TRFCR_EL1.set(0);
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        // SAFETY: TSB CSYNC (HINT #18) only synchronizes the trace unit.
        unsafe { core::arch::asm!("hint #18", options(nostack)) };
    }
    v
}

/// At the exit: the host's TRFCR_EL1 back (the guest could not change the
/// 0 it ran with: its accesses trap).
#[inline(always)]
fn unpark_host_trfcr(v: u64) {
    if context::features() & feat::TRF == 0 {
        return;
    }
    debug_assert_eq!(TRFCR_EL1.get(), 0, "a guest ran with a trace filter");
    if v != 0 {
        TRFCR_EL1.set(v);
    }
}

/// Opens the physical CPU interface for the guest's run: every interrupt
/// the host enabled in the GIC, the hyp timer and the maintenance
/// interrupt take the CPU back; the virtual timer's PPI as `vtimer_ppi`
/// says. The host's priority mask, group enable and PPI 27 setting are
/// restored at exit.
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
    vgic_sr::set_hcr(0);
    let host = cpu.vtimer_ppi[0];
    set_vtimer_ppi(cpu, host);
    ICC_PMR_EL1.set(cpu.host_icc[0]);
    ICC_IGRPEN1_EL1.set(cpu.host_icc[1]);
}

/// While the guest runs: retires the list registers it deactivated, looks
/// at its virtual timer, fills free list registers and sets the physical
/// PPI 27 and ICH_HCR_EL2 to match. True if anything changed.
pub fn refresh_live(cpu: &mut PerCpu, vcpu: &mut Vcpu, handle: u16, idx: usize) -> bool {
    let n = context::nr_lrs();
    if n == 0 {
        return false;
    }
    let mut lrs = [0u64; MAX_LRS];
    vgic_sr::read_lrs(&mut lrs[..n]);
    let before = lrs;
    vcpu.irq.retire(&mut lrs[..n]);
    vcpu.irq.set_vtimer(vgic_sr::vtimer_live());
    let f = vcpu.irq.flush(&mut lrs[..n]);
    point::vgic(handle, idx, &f, &lrs[..n]);
    if lrs != before {
        vgic_sr::write_lrs(&lrs[..n]);
        // Saved (and zeroed) at the exit from now on.
        cpu.guest_lazy |= feat::LRS;
    }
    vgic_sr::set_hcr(vgic_sr::hcr_guest(f.overflow > 0));
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
    let due = vgic_sr::vtimer_due(
        vcpu.ctx.get(context::R::CNTV_CTL_EL0),
        vcpu.ctx.get(context::R::CNTV_CVAL_EL0),
        vgic_sr::vcount(),
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
    cpu.host_trfcr = park_host_trfcr();
    // Guest in (its general registers are loaded by the vectors). Its EL1
    // registers first, its stage 2 (VMID) after them: a speculative walk of
    // the EL1&0 regime (an AT the CPU runs ahead, the errata KVM works
    // around) never combines the guest's VMID with the host's stage-1
    // registers (docs/isolation.md, "Order of the switch"; the xtask test
    // `switch_order` checks this order in this file).
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
        vgic_sr::set_hcr(vgic_sr::hcr_guest(flushed.overflow > 0));
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
            frame.elr = hyp_core::emul::exception::pc_advance(frame.elr, len as u64);
        }
        Pending::MmioWrite { len } => frame.elr = hyp_core::emul::exception::pc_advance(frame.elr, len as u64),
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
    *super::on_cpu(cpu) = Some(vm_arc);
    Ok(next)
}

/// Saves the guest (from its trap `frame`), restores the host, and returns
/// `reason` and `details` in the host's x2.. as the result of its VCPU_RUN.
#[inline(never)]
pub fn exit_to_host(frame: &TrapFrame, vm: &mut Vm, idx: usize, reason: u64, details: &[u64; 5]) -> Next {
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
        if vgic_sr::eoi_pending() {
            vcpu.irq.retire(vcpu.ctx.lrs_mut());
        }
        // The next entry may skip loading list registers that hold
        // nothing: they must be zero in the CPU then, not this run's.
        context::zero_cpu_lrs();
        // Written during the run (`refresh_live`): they may hold something.
        vcpu.ctx.used |= feat::LRS;
    }
    vcpu.running = false;
    // The host's stage 2 (VMID) before its EL1 registers: the mirror of
    // the entry, so no speculative walk combines the host's stage-1
    // registers with the guest's VMID (its TLB entries are the guest's).
    VTCR_EL2.set(cpu.host_vtcr);
    VTTBR_EL2.set(cpu.host_vttbr);
    cpu.host.restore_cpu(Kind::Host, cpu.guest_lazy);
    unpark_host_trfcr(cpu.host_trfcr);
    restore_interrupts(cpu);
    restart_host_pmu(cpu);
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
    *super::on_cpu(cpu) = None;
    Next::HOST
}
