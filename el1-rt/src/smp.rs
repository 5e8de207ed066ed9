//! Secondary CPUs for EL1 payloads: start one with PSCI CPU_ON at
//! `_secondary_start`; it gets a 16 KiB stack, the same identity map and
//! vectors, and runs the function given to [`start`].

use core::sync::atomic::{AtomicUsize, Ordering};

use hyp_abi::psci;

pub const MAX_CPUS: usize = 8;
const STACK: usize = 16 * 1024;

#[no_mangle]
#[used]
static mut SECONDARY_STACKS: [[u8; STACK]; MAX_CPUS] = [[0; STACK]; MAX_CPUS];

static ENTRY: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    fn _secondary_start();
}

#[no_mangle]
extern "C" fn el1_rt_secondary(idx: u64) -> ! {
    crate::mmu::enable_this_cpu();
    let f = ENTRY.load(Ordering::SeqCst);
    if f != 0 {
        // SAFETY: only `start` stores here, from a `fn(usize) -> !`.
        let f: fn(usize) -> ! = unsafe { core::mem::transmute(f) };
        f(idx as usize)
    }
    cpu_off()
}

/// Starts CPU `mpidr` (index `idx`) running `f(idx)`; returns the PSCI result.
pub fn start(mpidr: u64, idx: usize, f: fn(usize) -> !) -> i64 {
    ENTRY.store(f as usize, Ordering::SeqCst);
    let entry = _secondary_start as *const () as u64;
    crate::smccc::psci_call(psci::CPU_ON, [mpidr, entry, idx as u64]) as i64
}

/// Powers the calling CPU off.
pub fn cpu_off() -> ! {
    crate::smccc::psci_call(psci::CPU_OFF, [0; 3]);
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// This CPU's index (MPIDR Aff0).
pub fn cpu_index() -> usize {
    let m: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, mpidr_el1", out(reg) m) };
    (m & 0xff) as usize
}
