//! The guests' hypercalls: SMCCC discovery, the pKVM memory calls
//! (MEM_SHARE / MEM_UNSHARE / MEM_RELINQUISH, HYP_MEMINFO) with Linux's
//! numbers, PSCI, and calls forwarded to the host.
//! Results: 0, NOT_SUPPORTED (-1) or INVALID_PARAMETER (-3) in x0.

use alloc::sync::Arc;

use hyp_abi::host::exit;
use hyp_abi::{arch, guest as abi, psci, smccc};
use hyp_core::mm::mem_protect::{host_guest, Ipa, Refused};
use hyp_core::mm::{Error, PAGE_SIZE};

use crate::arch::aarch64::context::Context;
use crate::arch::aarch64::frame::{CallRegs, TrapFrame};
use crate::arch::aarch64::idregs;
use crate::hyp_env::HypEnv;
use crate::owners;
use crate::tracebuf::point;
use crate::vm::{Pending, Vm, VmLock};
use hyp_abi::trace::op;

/// First and last function ID of the "host services" range: calls a guest
/// makes to the host's VMM, forwarded as HYPERCALL exits.
pub const HOST_SERVICE_FIRST: u32 = 0xc600_0200;
pub const HOST_SERVICE_LAST: u32 = 0xc600_02ff;

pub enum Outcome {
    /// Back into the guest.
    Resume,
    /// Back to the host with an exit reason.
    Exit { reason: u64, details: [u64; 5], pending: Pending, stop: bool },
}

fn ret(frame: &mut TrapFrame, v: i64) -> Outcome {
    frame.x[0] = v as u64;
    Outcome::Resume
}

pub fn handle(frame: &mut TrapFrame, vm: &Arc<VmLock>, vcpu: usize) -> Outcome {
    let (fid, x1) = (frame.x[0], frame.x[1]);
    let before = crate::checker::before_call();
    let out = call(frame, vm, vcpu);
    let refused =
        matches!(out, Outcome::Resume) && matches!(frame.x[0] as i64, smccc::NOT_SUPPORTED | smccc::INVALID_PARAMETER);
    crate::checker::after_call(before, fid, refused);
    if crate::tracebuf::on(hyp_abi::trace::Kind::Hypercall) {
        if let (Outcome::Resume, crate::percpu::Running::Guest(h, _)) = (&out, crate::percpu::this_cpu().running) {
            point::hypercall(h, vcpu, fid, x1, frame.x[0]);
        }
    }
    out
}

fn call(frame: &mut TrapFrame, vm: &Arc<VmLock>, vcpu: usize) -> Outcome {
    let fid = frame.x[0] as u32;
    if answer(frame.call_regs(), vm, vcpu) {
        return Outcome::Resume;
    }
    if matches!(fid, abi::MEM_SHARE | abi::MEM_UNSHARE | abi::MEM_RELINQUISH) {
        // Declined by `answer`: the VM's memcache is short, or (unshare)
        // the page is pinned; the call exits.
        let short = core::mem::take(&mut vm.lock().tables_short);
        if short != 0 {
            return topup_needed(frame, vm, vcpu, short as usize);
        }
        return unshare_pinned(frame, vm, vcpu);
    }
    let (x1, x2, x3) = (frame.x[1], frame.x[2], frame.x[3]);
    match fid {
        psci::CPU_ON => cpu_on(frame, vm, vcpu, x1, x2, x3),
        psci::CPU_OFF => {
            vm.lock().vcpus[vcpu].off = true;
            Outcome::Exit { reason: exit::CPU_OFF, details: [0; 5], pending: Pending::None, stop: false }
        }
        psci::SYSTEM_OFF => {
            Outcome::Exit { reason: exit::SYSTEM_OFF, details: [0; 5], pending: Pending::None, stop: true }
        }
        psci::SYSTEM_RESET => {
            Outcome::Exit { reason: exit::SYSTEM_RESET, details: [0; 5], pending: Pending::None, stop: true }
        }
        HOST_SERVICE_FIRST..=HOST_SERVICE_LAST => Outcome::Exit {
            reason: exit::HYPERCALL,
            details: [fid as u64, x1, x2, x3, frame.x[4]],
            pending: Pending::Hypercall,
            stop: false,
        },
        _ => ret(frame, smccc::NOT_SUPPORTED),
    }
}

/// The first function ID of the vendor-hyp calls a guest makes (Linux's
/// KVM numbers: HYP_MEMINFO 2, MEM_SHARE 3, MEM_UNSHARE 4, MMIO_GUARD 7,
/// MEM_RELINQUISH 9).
const VENDOR_FIRST: u32 = 0xc600_0000;

/// Their number within that range.
const fn vendor(fid: u32) -> u32 {
    fid - VENDOR_FIRST
}

/// The calls answered without an exit, changing nothing of vCPU `vcpu`
/// but x0..x3: the memory calls (MEM_UNSHARE unless the page is pinned:
/// its UNSHARE_PENDING exit needs the full frame) and the calls
/// [`answer_args`] answers. True once answered; false, having done
/// nothing, for any other call. Both the full path (`call`, inside the
/// checker's and the trace's hooks) and the short guest-call entry
/// (`trap::guest::guest_call_short`, x0-x18 saved, taken only while neither
/// watches) use it. HYP_MEMINFO and the memory calls are matched on their
/// number in the vendor-hyp range, the others in `answer_args`.
#[inline(always)]
pub fn answer(x: &mut CallRegs, vm: &Arc<VmLock>, vcpu: usize) -> bool {
    const MEMINFO: u32 = vendor(abi::HYP_MEMINFO);
    const SHARE: u32 = vendor(abi::MEM_SHARE);
    const UNSHARE: u32 = vendor(abi::MEM_UNSHARE);
    const RELINQUISH: u32 = vendor(abi::MEM_RELINQUISH);
    match (x[0] as u32).wrapping_sub(VENDOR_FIRST) {
        MEMINFO => {
            x[0] = if x[1] != 0 || x[2] != 0 || x[3] != 0 { smccc::INVALID_PARAMETER as u64 } else { PAGE_SIZE };
            true
        }
        SHARE => mem_call::<{ abi::MEM_SHARE }>(x, vm, vcpu),
        UNSHARE => mem_call::<{ abi::MEM_UNSHARE }>(x, vm, vcpu),
        RELINQUISH => mem_call::<{ abi::MEM_RELINQUISH }>(x, vm, vcpu),
        _ => answer_args(x, vm),
    }
}

/// The calls answered from their arguments alone (discovery, MMIO_GUARD,
/// PSCI VERSION/FEATURES/AFFINITY_INFO); false, having done
/// nothing, for any other call.
#[inline(never)]
fn answer_args(x: &mut CallRegs, vm: &Arc<VmLock>) -> bool {
    let fid = x[0] as u32;
    let (x1, x2, x3) = (x[1], x[2], x[3]);
    let r = match fid {
        arch::SMCCC_VERSION => arch::VERSION_1_1 as i64,
        arch::SMCCC_ARCH_FEATURES => match x1 as u32 {
            arch::SMCCC_VERSION | arch::SMCCC_ARCH_FEATURES => 0,
            // Spectre workarounds: "not needed" where the CPU proves it,
            // NOT_SUPPORTED otherwise (the hyp implements none of them).
            f => idregs::workaround_answer(f).unwrap_or(smccc::NOT_SUPPORTED),
        },
        abi::CALL_UID => {
            for (i, w) in abi::KVM_UID.iter().enumerate() {
                x[i] = *w as u64;
            }
            return true;
        }
        abi::KVM_FEATURES => {
            x[1] = 0;
            x[2] = 0;
            x[3] = 0;
            abi::FEATURE_BITS as i64
        }
        abi::MMIO_GUARD if x2 != 0 || x3 != 0 => smccc::INVALID_PARAMETER,
        abi::MMIO_GUARD => match vm.lock().guards.guard(x1) {
            Ok(()) => smccc::SUCCESS,
            Err(_) => smccc::INVALID_PARAMETER,
        },
        psci::VERSION => psci::VERSION_1_1 as i64,
        psci::FEATURES => match x1 as u32 {
            // SMCCC v1.1 is there (SMCCC 1.1, 7.2): Linux asks this before
            // it calls SMCCC_VERSION, and without it uses no SMCCC 1.1
            // service at all (the KVM UID, hence the pKVM guest driver).
            arch::SMCCC_VERSION
            | psci::VERSION
            | psci::FEATURES
            | psci::SYSTEM_OFF
            | psci::SYSTEM_RESET
            | psci::CPU_ON
            | psci::CPU_OFF
            | psci::AFFINITY_INFO => 0,
            _ => psci::NOT_SUPPORTED,
        },
        psci::AFFINITY_INFO => affinity_info(vm, x1, x2),
        _ => return false,
    };
    x[0] = r as u64;
    true
}

/// The vCPU with this MPIDR: Aff0 = its index, everything else 0.
fn target(vm: &Vm, mpidr: u64) -> Option<usize> {
    let i = usize::try_from(mpidr).ok().filter(|_| mpidr & !0xff == 0)?;
    (i < vm.vcpus.len()).then_some(i)
}

/// PSCI CPU_ON: starts a powered-off vCPU of the same VM at `entry` with
/// x0 = `ctx`, from its reset state (the vCPUs exist from before the VM
/// first ran; a powered-off one is not running anywhere). The caller gets
/// SUCCESS and exits so the host learns it may run the new vCPU.
fn cpu_on(frame: &mut TrapFrame, vm: &Arc<VmLock>, me: usize, mpidr: u64, entry: u64, ctx: u64) -> Outcome {
    let mut vm = vm.lock();
    let Some(t) = target(&vm, mpidr) else {
        return ret(frame, psci::INVALID_PARAMETERS);
    };
    let v = &mut vm.vcpus[t];
    if v.stopped {
        return ret(frame, psci::DENIED);
    }
    // Still on, or still on its way off (its exit has not finished).
    if !v.off || v.running || t == me {
        return ret(frame, psci::ALREADY_ON);
    }
    v.ctx = Context::reset();
    v.ctx.gp.x[0] = ctx;
    v.ctx.gp.elr = entry;
    v.ctx.gp.spsr = crate::arch::aarch64::context::SPSR_EL1H_DAIF_MASKED;
    v.pending = Pending::None;
    v.off = false;
    frame.x[0] = smccc::SUCCESS as u64;
    Outcome::Exit { reason: exit::CPU_ON, details: [t as u64, 0, 0, 0, 0], pending: Pending::None, stop: false }
}

/// PSCI AFFINITY_INFO at level 0: ON until a vCPU has powered off and left
/// its CPU (or stopped for good).
fn affinity_info(vm: &Arc<VmLock>, mpidr: u64, level: u64) -> i64 {
    let vm = vm.lock();
    match (target(&vm, mpidr), level) {
        (Some(t), 0) => {
            let v = &vm.vcpus[t];
            let on = v.running || (!v.off && !v.stopped);
            if on {
                psci::AFF_ON
            } else {
                psci::AFF_OFF
            }
        }
        _ => psci::INVALID_PARAMETERS,
    }
}

/// MEM_SHARE / MEM_UNSHARE / MEM_RELINQUISH (`FID`) of the page at x1 (x2
/// and x3 must be 0), the result in x0; true once answered. False, with
/// nothing changed, traced or counted, for a MEM_UNSHARE of a page the
/// host pins and for a call that needs more table pages than the VM's
/// memcache holds (`Vm::tables_short` says how many): their exits
/// (UNSHARE_PENDING, [`unshare_pinned`]; TOPUP, [`topup_needed`]) need
/// the full frame. One instance per call: the function number is
/// folded into each.
#[inline(never)]
fn mem_call<const FID: u32>(x: &mut CallRegs, vm: &Arc<VmLock>, vcpu: usize) -> bool {
    let ipa = x[1];
    if x[2] != 0 || x[3] != 0 {
        x[0] = smccc::INVALID_PARAMETER as u64;
        return true;
    }
    let mut env = HypEnv;
    let mut host = owners::host();
    let mut vm = vm.lock();
    let r = match FID {
        abi::MEM_SHARE => host_guest::guest_share_host(&mut env, &mut host, &mut vm.mm, Ipa(ipa), PAGE_SIZE),
        abi::MEM_UNSHARE => host_guest::guest_unshare_host(&mut env, &mut host, &mut vm.mm, Ipa(ipa), PAGE_SIZE),
        _ => host_guest::guest_relinquish(&mut env, &mut host, &mut vm.mm, Ipa(ipa), PAGE_SIZE),
    };
    if let Err(e) = r {
        if e.error() == Error::NoMem && e.side() == hyp_core::mm::mem_protect::Side::Guest {
            // The guest's own tables: paid by its memcache, which the host
            // tops up (the call runs again then), never by anyone else.
            vm.tables_short = vm.mm.pgt.tables_short().clamp(1, u16::MAX as usize) as u16;
            return false;
        }
    }
    // A refusal says what and where: logged out of line, then only its
    // errno goes on (the ABI's answer).
    let r = r.map_err(|e| refused(vm.handle, FID, e));
    if FID == abi::MEM_UNSHARE && r == Err(Error::Busy) {
        // Pinned by the host: neither fail nor convert.
        return false;
    }
    let o = match FID {
        abi::MEM_SHARE => op::GUEST_SHARE,
        abi::MEM_UNSHARE => op::GUEST_UNSHARE,
        _ => op::RELINQUISH,
    };
    point::transition(vm.handle, vcpu, o, ipa, PAGE_SIZE, &r);
    match r {
        Ok(_) => {
            match FID {
                abi::MEM_SHARE => vm.shares += 1,
                abi::MEM_UNSHARE => vm.unshares += 1,
                _ => {}
            }
            x[0] = smccc::SUCCESS as u64;
        }
        Err(_) => x[0] = smccc::INVALID_PARAMETER as u64,
    }
    true
}

/// A guest memory call `fid` of VM `handle` refused: logged whole (what
/// and where), its error returned. A pinned page's MEM_UNSHARE is not a
/// refusal (the UNSHARE_PENDING exit follows): not logged.
#[cold]
#[inline(never)]
fn refused(handle: u16, fid: u32, e: Refused) -> Error {
    if !(fid == abi::MEM_UNSHARE && e.error() == Error::Busy) {
        log::debug!("guest {handle}: {fid:#x} refused: {e}");
    }
    e.error()
}

/// A memory call that [`mem_call`] declined on the full frame for want of
/// `short` table pages in the VM's memcache: the TOPUP exit, with the
/// guest's registers unchanged and its PC rewound to the call, which it
/// re-issues when the host runs it again (after VM_TOPUP).
#[inline(never)]
fn topup_needed(frame: &mut TrapFrame, vm: &Arc<VmLock>, vcpu: usize, short: usize) -> Outcome {
    log::debug!("guest {}: vCPU {vcpu}: {:#x} needs {short} table pages", vm.lock().handle, frame.x[0]);
    frame.elr = hyp_core::emul::exception::pc_back(frame.elr, 4);
    Outcome::Exit { reason: exit::TOPUP, details: [short as u64, 0, 0, 0, 0], pending: Pending::None, stop: false }
}

/// A MEM_UNSHARE that [`mem_call`] declined on the full frame (the host
/// pins the page): the UNSHARE_PENDING exit, with the guest's registers
/// unchanged and its PC rewound to the call, which it re-issues once the
/// host dropped its pins.
#[inline(never)]
fn unshare_pinned(frame: &mut TrapFrame, vm_arc: &Arc<VmLock>, vcpu: usize) -> Outcome {
    let ipa = frame.x[1];
    let vm = vm_arc.lock();
    point::unshare_pending(vm.handle, vcpu, ipa);
    let pa = match vm.mm.pgt.lookup(&mut HypEnv, ipa).map(|m| m.at(ipa & !(PAGE_SIZE - 1))) {
        Ok(hyp_core::mm::prot::Leaf::Mapped { pa, .. }) => pa,
        _ => 0,
    };
    frame.elr = hyp_core::emul::exception::pc_back(frame.elr, 4);
    Outcome::Exit { reason: exit::UNSHARE_PENDING, details: [ipa, pa, 0, 0, 0], pending: Pending::None, stop: false }
}
