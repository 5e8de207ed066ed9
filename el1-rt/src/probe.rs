//! Deliberate accesses that may fault: an expected data abort is recorded
//! and the access skipped, as a kernel turns a bad access into SIGBUS; an
//! expected exception of any kind (UNDEF, a trapped system register) is
//! recorded and the instruction skipped; an expected instruction abort
//! returns to the caller of the branch that took it.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::trap::{Frame, Sync};

static EXPECT: AtomicBool = AtomicBool::new(false);
static GOT_FAR: AtomicU64 = AtomicU64::new(u64::MAX);
static GOT_ESR: AtomicU64 = AtomicU64::new(0);
/// Armed by [`try_insns`]: every synchronous exception is skipped.
static EXPECT_ANY: AtomicBool = AtomicBool::new(false);
static ANY_ESR: AtomicU64 = AtomicU64::new(0);
static ANY_COUNT: AtomicU64 = AtomicU64::new(0);
/// Armed by [`call_expect_abort`].
static EXPECT_FETCH: AtomicBool = AtomicBool::new(false);

/// Exception classes (ESR_ELx.EC).
pub const EC_UNKNOWN: u64 = 0x00;
const EC_IABT_CUR: u64 = 0x21;
const EC_DABT_CUR: u64 = 0x25;

fn hook(kind: u64, s: Sync, frame: &mut Frame) -> bool {
    let ec = (s.esr >> 26) & 0x3f;
    // Synchronous, current EL with SP_ELx.
    if kind != 4 {
        return false;
    }
    if ec == EC_DABT_CUR && EXPECT.swap(false, Ordering::SeqCst) {
        GOT_FAR.store(s.far, Ordering::SeqCst);
        GOT_ESR.store(s.esr, Ordering::SeqCst);
        frame.elr += 4;
        return true;
    }
    if ec == EC_IABT_CUR && EXPECT_FETCH.swap(false, Ordering::SeqCst) {
        GOT_FAR.store(s.far, Ordering::SeqCst);
        GOT_ESR.store(s.esr, Ordering::SeqCst);
        // Back to the instruction after the branch (its link register).
        frame.elr = frame.x[30];
        return true;
    }
    if EXPECT_ANY.load(Ordering::SeqCst) {
        if ANY_COUNT.fetch_add(1, Ordering::SeqCst) == 0 {
            ANY_ESR.store(s.esr, Ordering::SeqCst);
        }
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

/// Runs `f` (a few instructions, e.g. a system-register access) with every
/// synchronous exception skipped: Ok if none was taken, else Err(ESR of
/// the first). `f` must not rely on a skipped instruction's result.
pub fn try_insns(f: impl FnOnce()) -> Result<(), u64> {
    ANY_COUNT.store(0, Ordering::SeqCst);
    EXPECT_ANY.store(true, Ordering::SeqCst);
    f();
    EXPECT_ANY.store(false, Ordering::SeqCst);
    match ANY_COUNT.load(Ordering::SeqCst) {
        0 => Ok(()),
        _ => Err(ANY_ESR.load(Ordering::SeqCst)),
    }
}

/// Exception class of an ESR value.
pub fn ec(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

/// Branches to `addr` (which should hold a `ret`) expecting an instruction
/// abort; returns its (FAR, ESR), or None if the code there ran and returned.
pub fn call_expect_abort(addr: u64) -> Option<(u64, u64)> {
    GOT_FAR.store(u64::MAX, Ordering::SeqCst);
    EXPECT_FETCH.store(true, Ordering::SeqCst);
    // SAFETY: a deliberate branch; `addr` holds a `ret` or is not executable
    // for us, in which case the hook returns to the instruction after the
    // branch (x30). Everything the callee could clobber is declared.
    unsafe { core::arch::asm!("blr {0}", in(reg) addr, clobber_abi("C")) };
    let took = !EXPECT_FETCH.swap(false, Ordering::SeqCst);
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
