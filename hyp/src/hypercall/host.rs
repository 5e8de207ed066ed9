//! The host's hypercalls (HVC from EL1, vendor-hyp range): ownership
//! transitions, VM lifecycle, pins, tracing. Every host call is dispatched
//! here, in one match; the work is done by the module that owns the state. Results follow the ABI in
//! hyp-abi: x0 = SMCCC status of the call itself, x1 = 0 or -errno, x2..
//! results.

use hyp::abi::{host as abi, smccc};
use hyp::mm::mem_protect::{self, HostMm, HypMm};
use hyp::mm::prot::{Leaf, PageState};
use hyp::mm::Error;
use hyp::trace::{op, RECORD_SIZE};

use crate::arch::aarch64::trap::TrapFrame;
use crate::arch::aarch64::window;
use crate::mmenv::HypEnv;
use crate::tracebuf::{self, point};
use crate::{mem, vm, Status};

/// What became of a host call.
enum Call {
    /// Handled, with this result for x1.
    Done(Result<(), Error>),
    /// No such function.
    Unknown,
    /// VCPU_RUN entered a guest: the frame is now the guest's.
    Switched,
}

pub fn handle(frame: &mut TrapFrame) {
    let fid = frame.x[0] as u32;
    let x1 = frame.x[1];
    let before = crate::checker::before_call();
    let refused = match dispatch(fid, frame) {
        Call::Done(r) => {
            frame.x[0] = smccc::SUCCESS as u64;
            frame.x[1] = super::errno(r);
            r.is_err()
        }
        Call::Unknown => {
            frame.x[0] = smccc::NOT_SUPPORTED as u64;
            true
        }
        Call::Switched => return,
    };
    crate::checker::after_call(before, fid as u64, refused);
    // Draining is not itself recorded: it would refill the ring it empties.
    if fid != abi::TRACE_DRAIN {
        point::hypercall(0, 0, fid as u64, x1, frame.x[1]);
    }
}

fn dispatch(fid: u32, frame: &mut TrapFrame) -> Call {
    let a = [frame.x[1], frame.x[2], frame.x[3], frame.x[4]];
    let mut env = HypEnv;
    let r: Result<(), Error> = match fid {
        abi::SHARE_HYP | abi::UNSHARE_HYP | abi::DONATE_HYP | abi::RECLAIM_HYP => {
            let mut host = mem::host();
            let mut hyp = mem::hyp_lock(&host);
            type Transition = fn(&mut HypEnv, &mut HostMm, &mut HypMm, u64, u64) -> Result<(), Error>;
            let (f, o): (Transition, u64) = match fid {
                abi::SHARE_HYP => (mem_protect::host_share_hyp, op::SHARE_HYP),
                abi::UNSHARE_HYP => (mem_protect::host_unshare_hyp, op::UNSHARE_HYP),
                abi::DONATE_HYP => (mem_protect::host_donate_hyp, op::DONATE_HYP),
                _ => (mem_protect::hyp_donate_host, op::RECLAIM_HYP),
            };
            let r = f(&mut env, &mut host, &mut hyp, a[0], a[1]);
            point::transition(0, 0, o, a[0], a[1], &r);
            r
        }
        abi::PIN => {
            let r = if a[1] > abi::PIN_EXCLUSIVE {
                Err(Error::Inval)
            } else {
                mem::host().pin(&mut env, a[0], a[1] == abi::PIN_EXCLUSIVE)
            };
            point::transition(0, 0, op::PIN, a[0], 4096, &r);
            r
        }
        abi::UNPIN => {
            let r = mem::host().unpin(a[0]);
            point::transition(0, 0, op::UNPIN, a[0], 4096, &r);
            r
        }
        abi::SHUTDOWN => {
            log::info!("host: shutdown requested, status {}", a[0]);
            crate::shutdown(if a[0] == 0 { Status::Ok } else { Status::HostFailed })
        }
        abi::DUMP_S2 => vm::dump_s2(a[0]),
        abi::TRACE_DRAIN => trace_drain(frame, a[0], a[1]),
        abi::NOP => Ok(()),
        abi::CHECK_INVARIANTS => {
            let (n, leaves) = crate::checker::check_now();
            frame.x[2] = n;
            frame.x[3] = leaves;
            frame.x[4] = crate::checker::counts().1;
            Ok(())
        }
        abi::STATS => {
            use crate::mmenv::*;
            use core::sync::atomic::Ordering::Relaxed;
            frame.x[2] = PTE_WRITES.load(Relaxed);
            frame.x[3] = TLBIS.load(Relaxed);
            frame.x[4] = TABLES_ALLOCATED.load(Relaxed);
            frame.x[5] = TABLES_FREED.load(Relaxed);
            Ok(())
        }
        abi::VCPU_RUN => match vm::run::vcpu_run(frame) {
            Ok(()) => return Call::Switched,
            Err(e) => Err(e),
        },
        abi::VM_CREATE => vm::host_vm_create(a[0]).map(|h| frame.x[2] = h),
        abi::VM_DESTROY => vm::host_vm_destroy(a[0]).map(|b| frame.x[2] = b),
        abi::VCPU_CREATE => vm::host_vcpu_create(a[0], a[1], a[2], a[3]).map(|i| frame.x[2] = i),
        abi::DONATE_GUEST => vm::host_donate_guest(a[0], a[1], a[2], a[3]),
        abi::VCPU_IRQ => vm::host_vcpu_irq(a[0], a[1], a[2], a[3], frame.x[5], frame.x[6]),
        abi::VM_STATS => vm::host_vm_stats(a[0], a[1]).map(|r| frame.x[2..5].copy_from_slice(&r)),
        abi::VM_DIGEST => vm::host_vm_digest(a[0]).map(|d| frame.x[2] = d),
        abi::PAGE_STATE => vm::host_page_state(a[0]).map(|r| frame.x[2..5].copy_from_slice(&r)),
        _ => return Call::Unknown,
    };
    Call::Done(r)
}

/// TRACE_DRAIN: x1 = PA of a buffer the host has shared with the hyp,
/// x2 = its size in bytes → x2 = records copied, x3 = records lost.
fn trace_drain(frame: &mut TrapFrame, pa: u64, size: u64) -> Result<(), Error> {
    let size = size.min(1 << 20) & !(RECORD_SIZE as u64 - 1);
    let mut env = HypEnv;
    let host = mem::host();
    let hyp = mem::hyp_lock(&host);
    // Only into pages the host shared with the hyp (hyp: shared-borrowed).
    let end = hyp.pgt.check_range(pa, size.max(4096).next_multiple_of(4096))?;
    hyp.pgt.for_each_leaf(&mut env, pa, end, |m, _, _| match m.leaf {
        Leaf::Mapped { state: PageState::SharedBorrowed, .. } => Ok(()),
        _ => Err(Error::Perm),
    })?;
    let (n, lost) = window::with_mapped(pa, size, |va| {
        // SAFETY: [pa, pa + size) is host memory shared with the hyp (checked
        // under the host and hyp locks, which stay held), mapped at `va` by
        // this CPU's window for this closure.
        let out = unsafe { core::slice::from_raw_parts_mut(va as *mut u8, size as usize) };
        tracebuf::drain(out)
    });
    frame.x[2] = n as u64;
    frame.x[3] = lost;
    Ok(())
}
