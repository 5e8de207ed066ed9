//! The global ownership state: the host's stage-2 and ownership view
//! ([`HostMm`]) and the hyp's ([`HypMm`]), each behind its own lock, taken
//! in the order host → hyp → VM (a VM's own lock is in `vm`). Set up
//! once at boot ([`install`]) before anything can take them.
//!
//! The host's is a ticket lock (FIFO, `hyp_core::ticket`): every host and
//! guest memory call of every CPU takes it, and a test-and-set spin lock
//! lets whichever CPU wins the race take it again, so a guest calling
//! MEM_SHARE in a loop on one CPU could keep the host (or another guest)
//! on another CPU waiting without bound. With tickets a caller waits for
//! at most one critical section per other CPU (docs/isolation.md,
//! "Fairness"). The hyp's lock is only ever taken under the host's, so it
//! is never contended and stays a plain spin lock.

use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use hyp_core::ticket::{TicketGuard, TicketLock};
use spin::{Mutex, MutexGuard, Once};

use hyp_core::mm::mem_protect::{HostMm, HypMm};

/// A static of its own, its lock word at its address (not behind a
/// `Once`'s state): the lock's asm takes the address as it is, with no
/// add of an offset on each acquire and release.
static HOST: TicketLock<MaybeUninit<HostMm>> = TicketLock::new(MaybeUninit::uninit());
/// Has [`install`] written [`HOST`] (checked in debug builds)?
static HOST_SET: AtomicBool = AtomicBool::new(false);
static HYP: Once<Mutex<HypMm>> = Once::new();

/// Holds the host's stage-2 lock.
pub struct HostLocked(TicketGuard<'static, MaybeUninit<HostMm>>);

impl Deref for HostLocked {
    type Target = HostMm;
    #[inline(always)]
    fn deref(&self) -> &HostMm {
        // SAFETY: a HostLocked exists only after install wrote HOST (`host`).
        unsafe { self.0.assume_init_ref() }
    }
}

impl DerefMut for HostLocked {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut HostMm {
        // SAFETY: as in deref.
        unsafe { self.0.assume_init_mut() }
    }
}

/// Holds the hyp's bookkeeping lock (take after the host's).
pub type HypLocked = MutexGuard<'static, HypMm>;

/// Sets up both locks, once, at boot: the hyp's first, so that whoever
/// can take the host's ([`host`]) can take the hyp's.
///
/// # Safety
/// Called once, on the boot CPU, before anything calls [`host`] (which
/// reads the state written here without a check in release builds).
pub unsafe fn install(host: HostMm, hyp: HypMm) {
    HYP.call_once(|| Mutex::new(hyp));
    HOST.lock().write(host);
    HOST_SET.store(true, Ordering::Release);
}

/// Takes the host's stage-2 lock. Only after [`install`]: it runs on the
/// boot CPU before the first entry to a lower EL and before any other CPU
/// starts, and only hypercalls and traps from lower ELs take the lock.
pub fn host() -> HostLocked {
    debug_assert!(HOST_SET.load(Ordering::Acquire), "host stage-2 set up at boot");
    // The state the guard's Deref reads as initialised: `install` wrote it
    // at boot, before anything that calls this can run (its contract); a
    // per-call check cost every host and guest memory call ~4
    // instructions.
    HostLocked(HOST.lock())
}

/// Takes the hyp's bookkeeping lock, after the host's (the guard proves
/// it; [`install`] set both up).
pub fn hyp_lock(_host: &HostLocked) -> HypLocked {
    debug_assert!(HYP.is_completed(), "hyp tables set up at boot");
    // SAFETY: [`install`] completed HYP before HOST, and the caller holds
    // the HOST lock (so [`host`]'s condition held).
    unsafe { HYP.get_unchecked() }.lock()
}
