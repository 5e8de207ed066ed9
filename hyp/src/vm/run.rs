//! Running a vCPU: the world switch between the host and a guest, and the
//! decisions on every guest exit (handled in the hyp, or returned to the
//! host with a reason).

use aarch64_cpu::registers::*;

use hyp::abi::host::exit;
use hyp::esr::{Esr, EC_DABT_LOW, EC_HVC64, EC_IABT_LOW, EC_SMC64};
use hyp::mm::prot::Leaf;
use hyp::mm::Error;

use super::{get, Pending, Vm};
use crate::arch::aarch64::el1::{self, El1Regs};
use crate::arch::aarch64::inject;
use crate::arch::aarch64::tlb::HypEnv;
use crate::arch::aarch64::trap::TrapFrame;
use crate::hypercall::guest::{self, Outcome};
use crate::percpu::{this_cpu, Running};
use crate::tracebuf::point;
use hyp::trace::Resolution;

/// First IPA of guest RAM: below it is the emulated device window (MMIO
/// exits to the host), as on QEMU `virt`.
pub const GUEST_RAM_BASE: u64 = 0x4000_0000;

fn isb() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// VCPU_RUN: x1 = handle, x2 = vCPU, x3/x4 = the host's reply to the last
/// exit. On success `frame` becomes the guest's and the caller erets into it.
pub fn vcpu_run(frame: &mut TrapFrame) -> Result<(), Error> {
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
    if vcpu.stopped {
        return Err(Error::Perm);
    }
    let cpu = this_cpu();
    // Host out.
    cpu.host_frame = *frame;
    cpu.host_el1 = El1Regs::save();
    cpu.host_fp.save();
    // Guest in.
    *frame = vcpu.frame;
    vcpu.el1.restore();
    vcpu.fp.restore();
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    HCR_EL2.set(el1::hcr_guest());
    isb();
    cpu.running = Running::Guest(handle, idx);
    // Finish what the last exit left open.
    match vcpu.pending {
        Pending::MmioRead { srt, size, sign, sf } => {
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
            frame.elr += 4;
        }
        Pending::MmioWrite => frame.elr += 4,
        Pending::Hypercall => frame.x[..4].copy_from_slice(&reply),
        Pending::Abort { esr, far } => inject::inject_abort(frame, Esr(esr), far),
        Pending::None => {}
    }
    vcpu.pending = Pending::None;
    vcpu.running = true;
    drop(vm);
    cpu.guest = Some(vm_arc);
    Ok(())
}

/// Saves the guest, restores the host, and returns `reason` and `details`
/// in the host's x2.. as the result of its VCPU_RUN.
fn exit_to_host(frame: &mut TrapFrame, vm: &mut Vm, idx: usize, reason: u64, details: [u64; 5]) {
    let cpu = this_cpu();
    let vcpu = &mut vm.vcpus[idx];
    vcpu.frame = *frame;
    vcpu.el1 = El1Regs::save();
    vcpu.fp.save();
    vcpu.running = false;
    *frame = cpu.host_frame;
    cpu.host_el1.restore();
    cpu.host_fp.restore();
    VTCR_EL2.set(cpu.host_vtcr);
    VTTBR_EL2.set(cpu.host_vttbr);
    HCR_EL2.set(el1::hcr_host());
    isb();
    frame.x[0] = 0;
    frame.x[1] = 0;
    frame.x[2] = reason;
    frame.x[3..8].copy_from_slice(&details);
    cpu.running = Running::Host;
    cpu.guest = None;
}

pub fn handle_guest_sync(frame: &mut TrapFrame, _handle: u16, idx: usize) {
    let vm_arc = this_cpu().guest.clone().expect("a guest runs on this CPU");
    let esr = Esr(ESR_EL2.get());
    let outcome = match esr.ec() {
        EC_HVC64 => guest::handle(frame, &vm_arc, idx),
        EC_SMC64 => {
            frame.elr += 4;
            guest::handle(frame, &vm_arc, idx)
        }
        EC_DABT_LOW | EC_IABT_LOW => stage2_fault(frame, esr, &vm_arc, idx),
        _ => {
            log::debug!("guest: unexpected trap {} at {:#x}: undefined instruction injected", esr, frame.elr);
            inject::inject_undef(frame);
            Outcome::Resume
        }
    };
    if let Outcome::Exit { reason, details, pending, stop } = outcome {
        let mut vm = vm_arc.lock();
        vm.vcpus[idx].pending = pending;
        vm.vcpus[idx].stopped |= stop;
        exit_to_host(frame, &mut vm, idx, reason, details);
    }
}

pub fn handle_guest_irq(frame: &mut TrapFrame, _handle: u16, idx: usize) {
    // A physical interrupt belongs to the host: let it run.
    let vm_arc = this_cpu().guest.clone().expect("a guest runs on this CPU");
    let mut vm = vm_arc.lock();
    exit_to_host(frame, &mut vm, idx, exit::IRQ, [0; 5]);
}

/// A guest stage-2 fault: MMIO in the device window (exit to the host), an
/// abort elsewhere (exit to the host, injected on the next run).
fn stage2_fault(frame: &mut TrapFrame, esr: Esr, vm_arc: &alloc::sync::Arc<spin::Mutex<Vm>>, idx: usize) -> Outcome {
    let (ipa, far) = crate::host::fault_ipa();
    let vm = vm_arc.lock();
    let who = vm.handle;
    if let Ok(m) = vm.mm.pgt.lookup(&mut HypEnv, ipa) {
        if matches!(m.leaf, Leaf::Mapped { .. }) {
            // Mapped meanwhile (or a stale TLB entry): retry.
            point::fault(who, idx, esr.0, far, ipa, frame.elr, Resolution::Spurious, m.level);
            return Outcome::Resume;
        }
    }
    drop(vm);
    if ipa < GUEST_RAM_BASE && esr.is_data_abort() && esr.isv() {
        point::fault(who, idx, esr.0, far, ipa, frame.elr, Resolution::MmioExit, 0);
        let srt = esr.srt();
        let size = esr.sas_bytes();
        let value = if srt == 31 { 0 } else { frame.x[srt as usize] };
        let value = if size == 8 { value } else { value & ((1u64 << (size as u32 * 8)) - 1) };
        let pending =
            if esr.wnr() { Pending::MmioWrite } else { Pending::MmioRead { srt, size, sign: esr.sse(), sf: esr.sf() } };
        return Outcome::Exit {
            reason: exit::MMIO,
            details: [ipa, size as u64, esr.wnr() as u64, value, 0],
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
