//! The global invariant checker at run time (`hyp.check_invariants[=K]`):
//! the full check over every stage-2 after every K-th hypercall (host or
//! guest; K = 1 without a value), and after every refused call the cheap
//! proof that it changed nothing: no descriptor written, no TLB
//! invalidated, no table page kept (VM_DESTROY excepted: on EBUSY it keeps
//! what it reclaimed, as documented). A violation is a hyp bug: it stops the
//! system with a failure status.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use hyp_core::mm::mem_protect::GuestMm;

use crate::hyp_env::{self as counters, HypEnv};
use crate::owners;
use crate::vm::{self, VmLock, VmLocked};

/// Full check every K calls (0: off).
static EVERY: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static CHECKS_RUN: AtomicU64 = AtomicU64::new(0);
static REFUSALS_CHECKED: AtomicU64 = AtomicU64::new(0);
/// CPUs that entered the host: the refused-call check reads global
/// counters, so it only runs while one CPU is up.
pub static CPUS_UP: AtomicU32 = AtomicU32::new(1);

/// `hyp.check_invariants` (K = 1) or `hyp.check_invariants=K`.
pub fn enable(every: u64) {
    EVERY.store(every.max(1), Relaxed);
}

/// Whether the checker watches hypercalls (a host call skips both hooks
/// when it does not).
#[inline(always)]
pub fn on() -> bool {
    EVERY.load(Relaxed) != 0
}

/// Runs the global invariant checker over the host, the hyp and every VM
/// (locks: host, hyp, then each VM). Returns (checks run, leaves walked).
pub fn check_now() -> (u64, u64) {
    let host = owners::host();
    let hyp = owners::hyp_lock(&host);
    let arcs: Vec<Arc<VmLock>> = vm::all();
    let guards: Vec<VmLocked> = arcs.iter().map(|v| v.lock()).collect();
    let gs: Vec<&GuestMm> = guards.iter().map(|g| &g.mm).collect();
    match hyp_core::mm::invariants::check(&mut HypEnv, &host, &hyp, &gs) {
        Ok(s) => (CHECKS_RUN.fetch_add(1, Relaxed) + 1, s.leaves),
        Err(v) => {
            log::error!("INVARIANT VIOLATED: {} at {:#x}", v.what, v.addr);
            crate::shutdown(crate::Status::InvariantBroken)
        }
    }
}

/// (full checks run, refused calls proven to have changed nothing).
pub fn counts() -> (u64, u64) {
    (CHECKS_RUN.load(Relaxed), REFUSALS_CHECKED.load(Relaxed))
}

/// What the stage-2 counters were before a call.
#[derive(Clone, Copy)]
pub struct Before([u64; 3]);

fn counters() -> [u64; 3] {
    let alloc = counters::TABLES_ALLOCATED.load(Relaxed);
    let freed = counters::TABLES_FREED.load(Relaxed);
    [counters::PTE_WRITES.load(Relaxed), counters::TLBIS.load(Relaxed), alloc.wrapping_sub(freed)]
}

/// Before a hypercall: a snapshot if checking is on and one CPU is up.
#[inline]
pub fn before_call() -> Option<Before> {
    if EVERY.load(Relaxed) == 0 || CPUS_UP.load(Relaxed) != 1 {
        return None;
    }
    Some(Before(counters()))
}

/// After hypercall `fid` (`refused`: it returned an error).
#[inline]
pub fn after_call(before: Option<Before>, fid: u64, refused: bool) {
    let every = EVERY.load(Relaxed);
    if every == 0 {
        return;
    }
    // VM_DESTROY is the one call documented to keep its progress when it
    // fails (EBUSY: pages reclaimed so far stay reclaimed).
    if let (Some(b), true, false) = (before, refused, fid as u32 == hyp_abi::host::VM_DESTROY) {
        let now = counters();
        if now != b.0 {
            log::error!(
                "INVARIANT VIOLATED: refused call {:#x} changed stage-2 state (writes {} -> {}, TLBIs {} -> {}, tables held {} -> {})",
                fid, b.0[0], now[0], b.0[1], now[1], b.0[2], now[2]
            );
            crate::shutdown(crate::Status::InvariantBroken)
        }
        REFUSALS_CHECKED.fetch_add(1, Relaxed);
    }
    if CALLS.fetch_add(1, Relaxed) % every == every - 1 {
        check_now();
    }
}
