//! `test=remote`: the guest obeys a test program of the host. It asks for
//! its next command with `HOST_NEXT` (giving the last one's result) and
//! does what it is told: share, unshare (timed), load, store, digest a
//! range, run a counter on vCPU 1, relinquish, power off. The checks are
//! the host program's (the Linux host's memory-file test).

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use hyp_abi::services::{remote as r, HOST_NEXT};

use crate::abi::{call, relinquish, share, unshare};

/// Where vCPU 1 counts, whether it should stop, and its last count.
static COUNT_AT: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicU64 = AtomicU64::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);

fn counter() -> (u64, u64) {
    let (v, f): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effects.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) v, out(reg) f) };
    (v, f)
}

/// The guest's load of the u64 at `ipa`.
fn load(ipa: u64) -> u64 {
    // SAFETY: an IPA of guest RAM the host program named; all of RAM is
    // identity-mapped.
    unsafe { read_volatile(ipa as *const u64) }
}

fn count(_: usize) -> ! {
    let at = COUNT_AT.load(SeqCst) as *mut u64;
    let mut n = 0;
    while STOP.load(SeqCst) == 0 {
        n += 1;
        // SAFETY: an IPA of guest RAM the host program named (identity-mapped).
        unsafe { write_volatile(at, n) };
        COUNT.store(n, SeqCst);
    }
    el1_rt::smp::cpu_off()
}

pub fn remote() {
    let mut res = [0u64; 3];
    loop {
        let c = call(HOST_NEXT, res);
        res = [0; 3];
        let (ipa, a2) = (c[1], c[2]);
        match c[0] {
            r::OFF => return,
            r::SHARE => res[0] = share(ipa) as u64,
            r::UNSHARE => {
                let (t0, f) = counter();
                res[0] = unshare(ipa) as u64;
                res[1] = counter().0 - t0;
                res[2] = f;
            }
            r::READ => res[1] = load(ipa),
            r::WRITE => {
                // SAFETY: an IPA of guest RAM the host program named; all
                // of RAM is identity-mapped.
                unsafe { write_volatile(ipa as *mut u64, a2) }
            }
            r::DIGEST => res[1] = r::fnv1a((0..a2).map(|k| (load((ipa + k) & !7) >> (((ipa + k) & 7) * 8)) as u8)),
            r::COUNTER => {
                COUNT_AT.store(ipa, SeqCst);
                STOP.store(0, SeqCst);
                res[0] = el1_rt::smp::start(1, 1, count) as u64;
            }
            r::STOP => {
                STOP.store(1, SeqCst);
                res[1] = COUNT.load(SeqCst);
            }
            r::RELINQUISH => res[0] = relinquish(ipa) as u64,
            _ => res[0] = r::UNKNOWN,
        }
    }
}
