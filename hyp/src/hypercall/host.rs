//! The host's hypercalls (HVC from EL1, vendor-hyp range): ownership
//! transitions, VM lifecycle, pins, tracing. Every host call is dispatched
//! here, through one table indexed by the function number; the work is done
//! by the module that owns the state. Results follow the ABI in
//! hyp-abi: x0 = SMCCC status of the call itself, x1 = 0 or -errno, x2..
//! results.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use hyp_abi::trace::{op, Kind, RECORD_SIZE};
use hyp_abi::{host as abi, smccc};
use hyp_core::mm::mem_protect::host_hyp;
use hyp_core::mm::mem_protect::{HostMm, HypMm, Pa, Refused};
use hyp_core::mm::prot::{Leaf, PageState};
use hyp_core::mm::Error;

use crate::arch::aarch64::frame::{CallRegs, Next, TrapFrame};
use crate::arch::aarch64::window;
use crate::hyp_env::HypEnv;
use crate::tracebuf::{self, point};
use crate::{owners, vm, Status};

/// A host call from the short entry (vectors.S: x0-x18 saved, the host's
/// other registers live in the CPU): 1 once handled, its results in `x`;
/// 0, having done nothing, for a call that needs the full frame (VCPU_RUN
/// switches worlds): the entry then builds it and calls `handle`.
#[inline(always)]
pub fn handle_short(x: &mut CallRegs) -> u64 {
    if watched() {
        return watched_call(x);
    }
    // Nobody watches: one jump through the table, which also writes the
    // call's status.
    entry(x[0] as u32)(x)
}

/// Does anyone watch host calls (the invariant checker, the hypercall
/// trace)? Both are configured once, at boot: `configure_watch` folds them
/// into one flag, the only thing an unwatched call reads before its jump.
static WATCHED: AtomicBool = AtomicBool::new(false);

/// Called at boot once the checker and the trace are configured, before
/// the host runs.
pub fn configure_watch() {
    WATCHED.store(crate::checker::on() || tracebuf::on(Kind::Hypercall), Relaxed);
}

/// Host and guest calls: whether the checker or the hypercall trace
/// watches them (the short entries leave watched guest calls to the full
/// frame).
#[inline(always)]
pub fn watched() -> bool {
    WATCHED.load(Relaxed)
}

/// A host call with the checker's hooks and the trace point.
#[inline(never)]
fn watched_call(x: &mut CallRegs) -> u64 {
    let fid = x[0] as u32;
    if fid == abi::VCPU_RUN {
        return 0;
    }
    let (x1, before) = (x[1], crate::checker::before_call());
    entry(fid)(x);
    // Refused: NOT_SUPPORTED, or an errno in x1 (`status`).
    let refused = x[0] != smccc::SUCCESS as u64 || x[1] != 0;
    after(x, fid, x1, before, refused);
    1
}

/// A host call with the full frame: VCPU_RUN, or any call that did not
/// come through the short entry. Returns what the vectors restore: the
/// guest's frame if the VCPU_RUN entered it.
pub fn handle(frame: &mut TrapFrame) -> Next {
    if handle_short(frame.call_regs()) != 0 {
        return Next::RESUME;
    }
    vcpu_run(frame)
}

/// VCPU_RUN with the full frame: from [`handle`], or straight from the
/// short entry once [`handle_short`] left the call to the full frame (it
/// does so for VCPU_RUN only: the `full_frame` entry and `watched_call`).
pub fn vcpu_run(frame: &mut TrapFrame) -> Next {
    debug_assert_eq!(frame.x[0] as u32, abi::VCPU_RUN);
    let (x1, before) = (frame.x[1], crate::checker::before_call());
    let r = match vm::switch::vcpu_run(frame) {
        Ok(next) => return next,
        Err(e) => Some(Err(e)),
    };
    let x = frame.call_regs();
    let refused = status(x, r);
    after(x, abi::VCPU_RUN, x1, before, refused);
    Next::RESUME
}

/// x0 and x1 of a host call (`None`: no such function); true if refused.
#[inline(always)]
fn status(x: &mut CallRegs, r: Option<Result<(), Error>>) -> bool {
    match r {
        Some(r) => {
            x[0] = smccc::SUCCESS as u64;
            x[1] = super::errno(r);
            r.is_err()
        }
        None => {
            x[0] = smccc::NOT_SUPPORTED as u64;
            true
        }
    }
}

/// After a watched call: the checker's hook and the trace point.
fn after(x: &CallRegs, fid: u32, x1: u64, before: Option<crate::checker::Before>, refused: bool) {
    crate::checker::after_call(before, fid as u64, refused);
    // Draining is not itself recorded: it would refill the ring it empties.
    if fid != abi::TRACE_DRAIN {
        point::hypercall(0, 0, fid as u64, x1, x[1]);
    }
}

/// A host call's handler: arguments in x1.., extra results in x2...
type Handler = fn(&mut CallRegs) -> Result<(), Error>;

/// An entry of the jump table: the handler with its status written (x0,
/// x1); returns 1, or 0 for VCPU_RUN (see `handle_short`).
type Entry = extern "C" fn(&mut CallRegs) -> u64;

/// The host calls' function numbers run from 0x100 (VM_CREATE) to
/// 0x129 (DMA_EVENTS): one slot each, indexed by fid - VM_CREATE.
const FIRST: u32 = abi::VM_CREATE;
const SLOTS: usize = (abi::DMA_EVENTS - FIRST) as usize + 1;

const fn slot(fid: u32) -> usize {
    (fid - FIRST) as usize
}

/// A function number with no handler: NOT_SUPPORTED, nothing else.
extern "C" fn unknown(x: &mut CallRegs) -> u64 {
    status(x, None);
    1
}

/// VCPU_RUN: left to the full frame.
extern "C" fn full_frame(_: &mut CallRegs) -> u64 {
    0
}

/// The table entry of handler `$h`: the call and its status.
macro_rules! entry {
    ($h:expr) => {{
        extern "C" fn e(x: &mut CallRegs) -> u64 {
            let h: Handler = $h;
            let r = h(x);
            status(x, Some(r));
            1
        }
        e
    }};
}

/// The jump table of every host call.
const TABLE: [Entry; SLOTS] = {
    let mut t: [Entry; SLOTS] = [unknown; SLOTS];
    t[slot(abi::VM_CREATE)] = entry!(vm_create);
    t[slot(abi::VM_DESTROY)] = entry!(vm_destroy);
    t[slot(abi::VCPU_CREATE)] = entry!(vcpu_create);
    t[slot(abi::VCPU_RUN)] = full_frame;
    t[slot(abi::DONATE_GUEST)] = entry!(donate_guest);
    t[slot(abi::MEM_ON_DEMAND)] = entry!(mem_on_demand);
    t[slot(abi::SHARE_HYP)] = entry!(share_hyp);
    t[slot(abi::UNSHARE_HYP)] = entry!(unshare_hyp);
    t[slot(abi::PIN)] = entry!(pin);
    t[slot(abi::UNPIN)] = entry!(unpin);
    t[slot(abi::PIN_RANGE)] = entry!(pin_range);
    t[slot(abi::UNPIN_RANGE)] = entry!(unpin_range);
    t[slot(abi::VM_TOPUP)] = entry!(vm_topup);
    t[slot(abi::DONATE_HYP)] = entry!(donate_hyp);
    t[slot(abi::RECLAIM_HYP)] = entry!(reclaim_hyp);
    t[slot(abi::PAGE_STATE)] = entry!(page_state);
    t[slot(abi::VCPU_IRQ)] = entry!(vcpu_irq);
    t[slot(abi::DUMP_S2)] = entry!(dump_s2);
    t[slot(abi::SHUTDOWN)] = entry!(shutdown);
    t[slot(abi::VM_STATS)] = entry!(vm_stats);
    t[slot(abi::TRACE_DRAIN)] = entry!(trace_drain);
    t[slot(abi::NOP)] = entry!(nop);
    t[slot(abi::STATS)] = entry!(stats);
    t[slot(abi::CHECK_INVARIANTS)] = entry!(check_invariants);
    t[slot(abi::VM_DIGEST)] = entry!(vm_digest);
    t[slot(abi::VM_CALLS)] = entry!(vm_calls);
    t[slot(abi::DMA_EVENTS)] = entry!(dma_events);
    t
};

/// The table entry of a function number (`unknown` outside the range).
#[inline(always)]
fn entry(fid: u32) -> Entry {
    TABLE.get(fid.wrapping_sub(FIRST) as usize).copied().unwrap_or(unknown)
}

type Transition = fn(&mut HypEnv, &mut HostMm, &mut HypMm, Pa, u64) -> Result<(), Refused>;

/// A host <-> hyp transition of [x1, x1 + x2), traced as `o`.
fn host_hyp(x: &CallRegs, f: Transition, o: u64) -> Result<(), Error> {
    let mut host = owners::host();
    let mut hyp = owners::hyp_lock(&host);
    let r = f(&mut HypEnv, &mut host, &mut hyp, Pa(x[1]), x[2]);
    point::transition(0, 0, o, x[1], x[2], &r);
    r.map_err(|e| super::refused("host", x[0], e))
}

fn share_hyp(x: &mut CallRegs) -> Result<(), Error> {
    host_hyp(x, host_hyp::host_share_hyp, op::SHARE_HYP)
}

fn unshare_hyp(x: &mut CallRegs) -> Result<(), Error> {
    host_hyp(x, host_hyp::host_unshare_hyp, op::UNSHARE_HYP)
}

fn donate_hyp(x: &mut CallRegs) -> Result<(), Error> {
    host_hyp(x, host_hyp::host_donate_hyp, op::DONATE_HYP)
}

fn reclaim_hyp(x: &mut CallRegs) -> Result<(), Error> {
    host_hyp(x, host_hyp::hyp_donate_host, op::RECLAIM_HYP)
}

// PIN and UNPIN are the range calls of one page: the same checks and
// results, and the DMA view's one-entry writes where they apply.
fn pin(x: &mut CallRegs) -> Result<(), Error> {
    pin_pages(x[0], x[1], 1, x[2])
}

fn unpin(x: &mut CallRegs) -> Result<(), Error> {
    unpin_pages(x[0], x[1], 1)
}

fn pin_range(x: &mut CallRegs) -> Result<(), Error> {
    pin_pages(x[0], x[1], x[2], x[3])
}

fn unpin_range(x: &mut CallRegs) -> Result<(), Error> {
    unpin_pages(x[0], x[1], x[2])
}

/// Call `fid`: a pin on each of `n` pages from `pa`, traced as one PIN of
/// the range.
fn pin_pages(fid: u64, pa: u64, n: u64, flags: u64) -> Result<(), Error> {
    let r = if flags > abi::PIN_EXCLUSIVE {
        Err(Error::Inval)
    } else {
        owners::host()
            .pin_range(&mut HypEnv, Pa(pa), n, flags == abi::PIN_EXCLUSIVE)
            .map_err(|e| super::refused("host", fid, e))
    };
    point::transition(0, 0, op::PIN, pa, n.saturating_mul(4096), &r);
    r
}

/// Call `fid`: one pin dropped from each of `n` pages from `pa`, traced
/// as one UNPIN.
fn unpin_pages(fid: u64, pa: u64, n: u64) -> Result<(), Error> {
    let r = owners::host().unpin_range(&mut HypEnv, Pa(pa), n).map_err(|e| super::refused("host", fid, e));
    point::transition(0, 0, op::UNPIN, pa, n.saturating_mul(4096), &r);
    r
}

fn shutdown(x: &mut CallRegs) -> Result<(), Error> {
    log::info!("host: shutdown requested, status {}", x[1]);
    crate::shutdown(if x[1] == 0 { Status::Ok } else { Status::HostFailed })
}

fn dump_s2(x: &mut CallRegs) -> Result<(), Error> {
    vm::dump_s2(x[1])
}

fn nop(_: &mut CallRegs) -> Result<(), Error> {
    Ok(())
}

fn check_invariants(x: &mut CallRegs) -> Result<(), Error> {
    let (n, leaves) = crate::checker::check_now();
    x[2] = n;
    x[3] = leaves;
    x[4] = crate::checker::counts().1;
    Ok(())
}

/// The system counter, in nanoseconds, as the hyp hands over to the host
/// (STATS x7; boot writes it): under `-icount shift=0` the instructions
/// run since reset, i.e. the boot's (QEMU's few-instruction boot stub
/// included).
pub static BOOT_NS: AtomicU64 = AtomicU64::new(0);

fn stats(x: &mut CallRegs) -> Result<(), Error> {
    use crate::hyp_env::*;
    use core::sync::atomic::Ordering::Relaxed;
    x[2] = PTE_WRITES.load(Relaxed);
    x[3] = TLBIS.load(Relaxed);
    x[4] = TABLES_ALLOCATED.load(Relaxed);
    x[5] = TABLES_FREED.load(Relaxed);
    x[6] = crate::pool::usage().0 as u64;
    x[7] = BOOT_NS.load(Relaxed);
    Ok(())
}

fn vm_create(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vm_create(x[1]).map(|h| x[2] = h)
}

fn vm_destroy(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vm_destroy(x[1]).map(|r| x[2..4].copy_from_slice(&r))
}

fn vcpu_create(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vcpu_create(x[1], x[2], x[3], x[4]).map(|i| x[2] = i)
}

fn vm_topup(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vm_topup(x[1], x[2], x[3])
}

fn donate_guest(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_donate_guest(x[1], x[2], x[3], x[4])
}

fn mem_on_demand(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_mem_on_demand(x[1], x[2], x[3])
}

fn vcpu_irq(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vcpu_irq(x[1], x[2], x[3], x[4], x[5], x[6]).map(|r| x[2..4].copy_from_slice(&r))
}

fn vm_stats(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vm_stats(x[1], x[2]).map(|r| x[2..5].copy_from_slice(&r))
}

fn vm_digest(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vm_digest(x[1]).map(|d| x[2] = d)
}

fn vm_calls(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_vm_calls(x[1]).map(|r| x[2..6].copy_from_slice(&r))
}

fn page_state(x: &mut CallRegs) -> Result<(), Error> {
    if x[2] == 1 {
        return page_state_dma(x);
    }
    vm::host_page_state(x[1]).map(|r| x[2..6].copy_from_slice(&r))
}

/// PAGE_STATE with x2 = 1: x6 too. Out of line: the VMMs' per-page calls
/// (x2 = 0) keep the plain call's tail.
#[inline(never)]
fn page_state_dma(x: &mut CallRegs) -> Result<(), Error> {
    vm::host_page_state(x[1]).map(|r| x[2..6].copy_from_slice(&r))?;
    x[6] = vm::host_dma_maps(x[1])? as u64;
    Ok(())
}

/// DMA_EVENTS: the SMMU's event queue drained into the trace → x2 = events
/// now, x3 = since boot, x4..x6 = the last one (stream, address, id | read << 8),
/// x7 = event queue overflows since boot.
fn dma_events(x: &mut CallRegs) -> Result<(), Error> {
    use crate::dev::smmu;
    if !smmu::present() {
        return Err(Error::NoEnt);
    }
    x[2] = smmu::drain_events(point::dma);
    x[3] = smmu::EVENTS.load(core::sync::atomic::Ordering::Relaxed);
    let (s, a, k) =
        smmu::last_event().map(|e| (e.stream as u64, e.addr, e.id as u64 | (e.read as u64) << 8)).unwrap_or_default();
    (x[4], x[5], x[6]) = (s, a, k);
    x[7] = smmu::OVERFLOWS.load(core::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// TRACE_DRAIN: x1 = PA of a buffer the host has shared with the hyp,
/// x2 = its size in bytes → x2 = records copied, x3 = records lost.
fn trace_drain(x: &mut CallRegs) -> Result<(), Error> {
    // SMMU events become trace records first.
    crate::dev::smmu::drain_events(point::dma);
    let (pa, size) = (x[1], x[2]);
    let size = size.min(1 << 20) & !(RECORD_SIZE as u64 - 1);
    let mut env = HypEnv;
    let host = owners::host();
    let hyp = owners::hyp_lock(&host);
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
    x[2] = n as u64;
    x[3] = lost;
    Ok(())
}
