//! Deliberate accesses that may abort: an expected data abort is recorded
//! and the access skipped, as a kernel turns a bad access into SIGBUS.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::trap::{Frame, Sync};

static EXPECT: AtomicBool = AtomicBool::new(false);
static GOT_FAR: AtomicU64 = AtomicU64::new(u64::MAX);
static GOT_ESR: AtomicU64 = AtomicU64::new(0);

fn hook(kind: u64, s: Sync, frame: &mut Frame) -> bool {
    let ec = (s.esr >> 26) & 0x3f;
    // Synchronous, current EL with SP_ELx; data abort taken at EL1.
    if kind == 4 && ec == 0x25 && EXPECT.swap(false, Ordering::SeqCst) {
        GOT_FAR.store(s.far, Ordering::SeqCst);
        GOT_ESR.store(s.esr, Ordering::SeqCst);
        frame.elr += 4;
        return true;
    }
    false
}

/// Installs the abort hook (once, at start).
pub fn install() {
    crate::trap::set_hook(hook);
}

/// Runs `f` (one load or store) expecting a data abort; returns the
/// (FAR, ESR) delivered, or None if the access went through.
pub fn expect_abort(f: impl FnOnce()) -> Option<(u64, u64)> {
    GOT_FAR.store(u64::MAX, Ordering::SeqCst);
    EXPECT.store(true, Ordering::SeqCst);
    f();
    let took = !EXPECT.swap(false, Ordering::SeqCst);
    took.then(|| (GOT_FAR.load(Ordering::SeqCst), GOT_ESR.load(Ordering::SeqCst)))
}

/// One 8-byte load the compiler cannot remove or split.
pub fn read64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: a deliberate load; if the address is not ours an abort is
    // delivered, which the hook turns into a skipped instruction.
    unsafe { core::arch::asm!("mov {0}, #0", "ldr {0}, [{1}]", out(reg) v, in(reg) addr) };
    v
}

/// One 8-byte store.
pub fn write64(addr: u64, v: u64) {
    // SAFETY: as for read64.
    unsafe { core::arch::asm!("str {0}, [{1}]", in(reg) v, in(reg) addr) };
}
