//! The global ownership state: the host's stage-2 and ownership view
//! ([`HostMm`]) and the hyp's ([`HypMm`]), each behind its own lock, taken
//! in the order host → hyp → VM (a VM's own lock is in `vm`). Set up
//! once at boot ([`install`]) before anything can take them.

use spin::{Mutex, MutexGuard, Once};

use hyp_core::mm::mem_protect::{HostMm, HypMm};

static HOST: Once<Mutex<HostMm>> = Once::new();
static HYP: Once<Mutex<HypMm>> = Once::new();

/// Holds the host's stage-2 lock.
pub type HostLocked = MutexGuard<'static, HostMm>;
/// Holds the hyp's bookkeeping lock (take after the host's).
pub type HypLocked = MutexGuard<'static, HypMm>;

/// Sets up both locks, once, at boot: the hyp's first, so that whoever
/// can take the host's ([`host`]) can take the hyp's.
pub fn install(host: HostMm, hyp: HypMm) {
    HYP.call_once(|| Mutex::new(hyp));
    HOST.call_once(|| Mutex::new(host));
}

/// Takes the host's stage-2 lock. Only after [`install`]: it runs on the
/// boot CPU before the first entry to a lower EL and before any other CPU
/// starts, and only hypercalls and traps from lower ELs take the lock.
pub fn host() -> HostLocked {
    debug_assert!(HOST.is_completed(), "host stage-2 set up at boot");
    // SAFETY: installed at boot before anything that calls this can run
    // (above); the per-call completion check cost every host and guest
    // memory call ~4 instructions.
    unsafe { HOST.get_unchecked() }.lock()
}

/// Takes the hyp's bookkeeping lock, after the host's (the guard proves
/// it; [`install`] set both up).
pub fn hyp_lock(_host: &HostLocked) -> HypLocked {
    debug_assert!(HYP.is_completed(), "hyp tables set up at boot");
    // SAFETY: [`install`] completed HYP before HOST, and the caller holds
    // the HOST lock (so [`host`]'s condition held).
    unsafe { HYP.get_unchecked() }.lock()
}
